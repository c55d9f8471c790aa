"""What the API stories share: the operator as a child process that can be killed (`kopf run`, so a
restart is a real SIGKILL), a stand-in for Ray's job REST API (ExistingCluster mode), and polling
helpers that fail with the last status seen."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from kubernetes import client as k8s

from tests.api.kube import Cluster, act_as_job, wait_for
from tuneloop.api import constants
from tuneloop.operator.logic import naming

# --- the operator as a process that can be killed ------------------------------------------------


# Started with `python -c PRELOAD <namespace>`: imports everything the operator will import (mlflow is
# imported lazily on the first registry call), then waits for "go" on stdin before running kopf.
PRELOAD = """
import logging, sys
import mlflow, mlflow.tracking
import tuneloop.operator.main
from kopf import cli
# Each finished look is logged at DEBUG ("looked at ns/name: ..."): stories count looks, not seconds.
logging.getLogger("tuneloop.operator.handlers.reconciler").setLevel(logging.DEBUG)
if sys.stdin.readline().strip() == "go":
    sys.argv = ["kopf", "run", "-m", "tuneloop.operator.main", "--standalone", "--namespace", sys.argv[1]]
    cli.main()
"""


class OperatorProcess:
    """`kopf run -m tuneloop.operator.main` in a child process; `kill()` is SIGKILL, no clean-up runs.

    With `standby`, a second process has already done its imports (~10 s on two busy cores) and waits:
    `start()` after `kill()` releases it, so a restart is still a fresh process with no memory of the
    old one, only without the import time.
    """

    def __init__(self, namespace: str, env: dict[str, str], log_path: Path, standby: bool = False) -> None:
        self.namespace, self.env, self.log_path, self.keep_standby = namespace, env, log_path, standby
        self.proc: subprocess.Popen[bytes] | None = None
        self._standby: subprocess.Popen[bytes] | None = None

    def _spawn(self) -> subprocess.Popen[bytes]:
        with open(self.log_path, "ab") as log:
            return subprocess.Popen([sys.executable, "-c", PRELOAD, self.namespace], env=self.env,
                                    stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)

    def start(self) -> OperatorProcess:
        proc, self._standby = self._standby or self._spawn(), None
        assert proc.stdin is not None and proc.poll() is None, f"operator standby died:\n{self.tail()}"
        proc.stdin.write(b"go\n")
        proc.stdin.close()
        self.proc = proc
        if self.keep_standby:
            self._standby = self._spawn()
        return self

    def kill(self) -> None:
        proc, self.proc = self.proc, None
        assert proc is not None and proc.poll() is None, f"operator died on its own:\n{self.tail()}"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def stop(self) -> int | None:
        standby, self._standby = self._standby, None
        if standby is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(standby.pid, signal.SIGKILL)
            standby.wait(timeout=10)
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        return proc.returncode

    def looks(self, namespace: str, name: str) -> int:
        """How many looks at namespace/name every operator process of this log has finished."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text.count(f"looked at {namespace}/{name}:")

    def tail(self, contains: str = "", lines: int = 80) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join([line for line in text.splitlines() if contains in line][-lines:])


def operator_process_env(operator_env: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **operator_env, "PYTHONUNBUFFERED": "1"}


# --- Ray's job REST API, for ExistingCluster mode ------------------------------------------------


class RayJobApiStub:
    """POST /api/jobs/, GET /api/jobs/{id}, POST /api/jobs/{id}/stop, recording every request.
    `close()` closes the port, so the operator sees what it sees when a Ray head goes away; `down`
    answers every request with HTTP 503, as a head that is there but not ready.

    A submission is parsed with Ray's own request types (`JobSubmitRequest`, then `RuntimeEnv`), so a
    body the real head would refuse is refused here with HTTP 400 as the head answers it. What stays
    stubbed is what a real head cannot be put in on demand: not ready (503), gone (closed port), a job
    that stays RUNNING for as long as a story needs, and a result the test writes as the job.
    tests/e2e/test_finetune_existing_cluster.py runs the same client against a real head."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self.down = False
        stub = self
        from ray.dashboard.modules.job.common import JobSubmitRequest  # ~2 s: once, not on a request
        from ray.runtime_env import RuntimeEnv

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def _send(self, code: int, payload: Any) -> None:
                body = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                stub.requests.append(("GET", self.path))
                if stub.down:
                    return self._send(503, {"detail": "the Ray head is starting"})
                job = stub.jobs.get(self.path.rstrip("/").rsplit("/", 1)[-1])
                self._send(200, job) if job else self._send(404, {"detail": "job not found"})

            def do_POST(self) -> None:
                stub.requests.append(("POST", self.path))
                if stub.down:
                    return self._send(503, {"detail": "the Ray head is starting"})
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                parts = self.path.strip("/").split("/")
                if parts == ["api", "jobs"]:
                    try:  # as the head's parse_and_validate_request and its job agent do
                        request = JobSubmitRequest(**body)
                        RuntimeEnv(**(request.runtime_env or {}))
                    except (TypeError, ValueError) as e:
                        return self._send(400, {"detail": f"Failed to parse request: {e}"})
                    sid = request.submission_id
                    if not sid:
                        return self._send(400, {"detail": "tuneloop always names its submission"})
                    if sid in stub.jobs:
                        return self._send(400, {"detail": f"job {sid} already exists"})
                    stub.jobs[sid] = {"submission_id": sid, "status": "RUNNING", "message": "running", "body": body}
                    return self._send(200, {"submission_id": sid, "job_id": sid})
                if len(parts) == 4 and parts[3] == "stop" and parts[2] in stub.jobs:
                    stub.jobs[parts[2]]["status"] = "STOPPED"
                    return self._send(200, {"stopped": True})
                return self._send(404, {"detail": "not found"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def submissions(self) -> list[str]:
        return list(self.jobs)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def create_namespace(api_client: k8s.ApiClient, name: str) -> str:
    k8s.CoreV1Api(api_client).create_namespace({"metadata": {"name": name}})
    return name


# --- polling -------------------------------------------------------------------------------------


def wait_status(cluster: Cluster, name: str, pred: Callable[[dict[str, Any]], bool], what: str,
                timeout: float = 120.0) -> dict[str, Any]:
    """Poll the FineTune's status until `pred` holds; on timeout, fail with the last status seen."""
    deadline = time.monotonic() + timeout
    while True:
        last = cluster.status(name)
        if pred(last):
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} of {cluster.ns}/{name}; "
                                 f"last status:\n{json.dumps(last, indent=1)[:4000]}")
        time.sleep(0.1)


def holds_for_looks(op: OperatorProcess, cluster: Cluster, name: str, check: Callable[[], Any], looks: int,
                    what: str, timeout: float = 30) -> None:
    """`check` stays true while the operator looks at the object `looks` more times (proving that
    something does NOT happen, without betting on seconds). A terminal or suspended object is not
    polled, so each look is asked for: a new value of the alias-check annotation wakes the object's
    daemon, which reconciles it in full."""
    for i in range(looks):
        before = op.looks(cluster.ns, name)
        cluster.annotate(name, {constants.ANNOTATION_ALIAS_CHECK: f"probe-{time.monotonic_ns()}"})
        wait_for(lambda before=before: op.looks(cluster.ns, name) > before or None, timeout,  # type: ignore[misc]
                 f"look {i + 1} of {looks} at {cluster.ns}/{name}")
        value = check()
        assert value, f"{what} stopped holding after look {i + 1}: {value!r}"


def cond(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), {})


def phase(expected: str) -> Callable[[dict[str, Any]], bool]:
    return lambda st: st.get("phase") == expected


def launched(attempt: int) -> Callable[[dict[str, Any]], bool]:
    return lambda st: (st.get("run") or {}).get("attempt") == attempt and bool(
        st["run"].get("rayJobName") or st["run"].get("submissionId"))


def warnings(cluster: Cluster, name: str) -> list[tuple[str, str]]:
    return [(e.reason, e.message) for e in cluster.events(name) if e.type == "Warning"]


def warning_reasons(cluster: Cluster, name: str) -> list[str]:
    return [reason for reason, _ in warnings(cluster, name)]


def wait_warning(cluster: Cluster, name: str, reason: str, timeout: float = 15) -> str:
    """The message of the Warning event `reason` (kopf posts events in the background)."""
    return wait_for(lambda: next((m for r, m in warnings(cluster, name) if r == reason), None), timeout,
                    f"Warning event {reason} about {cluster.ns}/{name}")


def job_tags(ft: dict[str, Any], run: int = 1, attempt: int = 1) -> dict[str, str]:
    return {constants.TAG_FINETUNE_UID: ft["metadata"]["uid"], constants.TAG_RUN_NUMBER: str(run),
            constants.TAG_RUN_ATTEMPT: str(attempt)}


def experiment(ft: dict[str, Any]) -> str:
    return f"tuneloop/{ft['metadata']['namespace']}/{ft['metadata']['name']}"


def finish_run(cluster: Cluster, uri: str, ft: dict[str, Any], run: int) -> None:
    """Act as KubeRay and the training job: the run's attempt 1 runs and succeeds."""
    job = naming.rayjob_name(ft["metadata"]["name"], ft["metadata"]["uid"], run, 1)
    cluster.set_rayjob_status(job, jobStatus="RUNNING", jobDeploymentStatus="Running",
                              rayClusterName=f"{job}-raycluster", dashboardURL="http://dash:8265")
    act_as_job(uri, experiment(ft), job_tags(ft, run=run), {"exact_match": 0.8 + run / 100}, {"exact_match": 0.3})
    cluster.set_rayjob_status(job, jobStatus="SUCCEEDED", jobDeploymentStatus="Complete")
