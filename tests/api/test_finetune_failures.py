"""Failure stories of the FineTune controller against the real kube-apiserver + etcd and a real MLflow
server: failed attempts and retries, deadlines, KubeRay's inconsistent states (kuberay #2314, #3553),
suspend, deletion, operator restarts at every step, an MLflow outage during registration and a spec
the schema cannot refuse.

The test acts as KubeRay (writes RayJob status), as the training job (writes the MLflow run and its
result artifact) and, for ExistingCluster mode, as the Ray job API (`RayJobApiStub`, a few lines of
HTTP: a real Ray head costs more start-up than this whole module may take on two cores). The operator
runs as a child process (`kopf run`), so a restart is a real SIGKILL. One operator serves every test
namespace of the module (`<prefix>-*`); the restart story has its own operator and namespace. MLflow
is the session's server: the outage story stops it and starts it again on its port and store.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from mlflow.tracking import MlflowClient

from tests.api.conftest import OPERATOR_ENV
from tests.api.kube import Cluster, act_as_job, finetune, wait_for
from tuneloop.api import constants
from tuneloop.operator.logic import naming

pytestmark = [pytest.mark.apiserver, pytest.mark.slow]

POLL = float(OPERATOR_ENV["TUNELOOP_POLL_SECONDS"])
INCONSISTENT_GRACE = float(OPERATOR_ENV["TUNELOOP_INCONSISTENT_GRACE_SECONDS"])
DEADLINE_GRACE = float(OPERATOR_ENV["TUNELOOP_DEADLINE_GRACE_SECONDS"])
DELETE_TIMEOUT = float(OPERATOR_ENV["TUNELOOP_DELETE_TIMEOUT_SECONDS"])


# --- the operator as a process that can be killed ------------------------------------------------


# Started with `python -c PRELOAD <namespace>`: imports everything the operator will import (mlflow is
# imported lazily on the first registry call), then waits for "go" on stdin before running kopf.
PRELOAD = """
import sys
import mlflow, mlflow.tracking
import tuneloop.operator.main
from kopf import cli
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

    def tail(self, contains: str = "", lines: int = 80) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join([line for line in text.splitlines() if contains in line][-lines:])


def operator_process_env(operator_env: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **operator_env, "PYTHONUNBUFFERED": "1"}


# --- Ray's job REST API, for ExistingCluster mode ------------------------------------------------


class RayJobApiStub:
    """POST /api/jobs/, GET /api/jobs/{id}, POST /api/jobs/{id}/stop, recording every request.
    `close()` closes the port, so the operator sees what it sees when a Ray head goes away."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        stub = self

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
                job = stub.jobs.get(self.path.rstrip("/").rsplit("/", 1)[-1])
                self._send(200, job) if job else self._send(404, {"detail": "job not found"})

            def do_POST(self) -> None:
                stub.requests.append(("POST", self.path))
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                parts = self.path.strip("/").split("/")
                if parts == ["api", "jobs"]:
                    sid = body["submission_id"]
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


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ns_prefix() -> str:
    return f"tlf{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def shared_operator(operator_env, rayjob_crd, ns_prefix, tmp_path_factory) -> Iterator[OperatorProcess]:
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    op = OperatorProcess(f"{ns_prefix}-*", operator_process_env(operator_env), log).start()
    yield op
    alive = op.proc is not None and op.proc.poll() is None
    op.stop()
    assert alive, f"the shared operator died during the module:\n{op.tail()}"


_counter = itertools.count()


def create_namespace(api_client: k8s.ApiClient, name: str) -> str:
    k8s.CoreV1Api(api_client).create_namespace({"metadata": {"name": name}})
    return name


@pytest.fixture
def cluster(shared_operator, api_client, ns_prefix) -> Iterator[Cluster]:
    ns = create_namespace(api_client, f"{ns_prefix}-{next(_counter)}")
    yield Cluster(api_client, ns)
    print(f"--- operator log for {ns} ---\n{shared_operator.tail(contains=ns)}")  # shown when the test failed


@pytest.fixture
def ray_api() -> Iterator[RayJobApiStub]:
    stub = RayJobApiStub()
    yield stub
    with contextlib.suppress(Exception):
        stub.close()


# --- helpers -------------------------------------------------------------------------------------


def wait_status(cluster: Cluster, name: str, pred: Callable[[dict[str, Any]], bool], what: str,
                timeout: float = 30.0) -> dict[str, Any]:
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


def holds(check: Callable[[], Any], seconds: float, what: str) -> None:
    """`check` stays true for `seconds` (a grace period: proving that something does NOT happen)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        assert value, f"{what} stopped holding: {value!r}"
        time.sleep(0.1)


def cond(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), {})


def phase(expected: str) -> Callable[[dict[str, Any]], bool]:
    return lambda st: st.get("phase") == expected


def launched(attempt: int) -> Callable[[dict[str, Any]], bool]:
    return lambda st: (st.get("run") or {}).get("attempt") == attempt and bool(
        st["run"].get("rayJobName") or st["run"].get("submissionId"))


def rayjob_names(cluster: Cluster, name: str | None = None) -> list[str]:
    return sorted(r["metadata"]["name"] for r in cluster.rayjobs()
                  if name is None or r["metadata"].get("labels", {}).get(constants.LABEL_FINETUNE) == name)


def warnings(cluster: Cluster, name: str) -> list[tuple[str, str]]:
    return [(e.reason, e.message) for e in cluster.events(name) if e.type == "Warning"]


def warning_reasons(cluster: Cluster, name: str) -> list[str]:
    return [reason for reason, _ in warnings(cluster, name)]


def wait_warning(cluster: Cluster, name: str, reason: str, timeout: float = 15) -> str:
    """The message of the Warning event `reason` (kopf posts events in the background)."""
    return wait_for(lambda: next((m for r, m in warnings(cluster, name) if r == reason), None), timeout,
                    f"Warning event {reason} about {cluster.ns}/{name}")


def versions(uri: str, model: str) -> list[Any]:
    return list(MlflowClient(uri).search_model_versions(f"name = '{model}'"))


def versions_of_run(uri: str, model: str, uid: str, run: int) -> list[Any]:
    return list(MlflowClient(uri).search_model_versions(
        f"name = '{model}' and tag.`{constants.TAG_FINETUNE_UID}` = '{uid}' "
        f"and tag.`{constants.TAG_RUN_NUMBER}` = '{run}'"))


def job_tags(ft: dict[str, Any], run: int = 1, attempt: int = 1) -> dict[str, str]:
    return {constants.TAG_FINETUNE_UID: ft["metadata"]["uid"], constants.TAG_RUN_NUMBER: str(run),
            constants.TAG_RUN_ATTEMPT: str(attempt)}


def experiment(ft: dict[str, Any]) -> str:
    return f"tuneloop/{ft['metadata']['namespace']}/{ft['metadata']['name']}"


def rj(ft: dict[str, Any], attempt: int, run: int = 1) -> str:
    """The deterministic RayJob name of an attempt."""
    return naming.rayjob_name(ft["metadata"]["name"], ft["metadata"]["uid"], run, attempt)


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def running(cluster: Cluster, name: str, job: str) -> dict[str, Any]:
    """Act as KubeRay: the cluster is up and the Ray job runs."""
    cluster.set_rayjob_status(job, jobStatus="RUNNING", jobDeploymentStatus="Running",
                              rayClusterName=f"{job}-raycluster", dashboardURL="http://dash:8265")
    return wait_status(cluster, name, phase("Running"), "Running")


# --- 1. app failure, retry, Failed ----------------------------------------------------------------


def test_app_failure_is_retried_up_to_backoff_limit_then_fails_with_rays_message(cluster, mlflow_server):
    uri, model = mlflow_server.tracking_uri, f"m-{cluster.ns}-app"
    ft = cluster.create(finetune("app", uri, model=model, backoffLimit=1))
    a1, a2, a3 = rj(ft, 1), rj(ft, 2), rj(ft, 3)
    wait_status(cluster, "app", launched(1), "attempt 1 launched")
    assert rayjob_names(cluster) == [a1]

    cluster.set_rayjob_status(a1, jobDeploymentStatus="Failed", jobStatus="FAILED", reason="AppFailed",
                              message="RuntimeError: CUDA out of memory (attempt one)")
    st = wait_status(cluster, "app", launched(2), "attempt 2 after attempt 1 failed")
    assert st["run"]["rayJobName"] == a2 and a2.endswith("-r1a2")
    assert cluster.rayjob(a2)["spec"]["jobId"] == naming.submission_id(ft["metadata"]["uid"], 1, 2)
    assert [(a["attempt"], a["outcome"]) for a in st["attempts"]] == [(1, "Failed")]
    assert "CUDA out of memory (attempt one)" in st["attempts"][0]["reason"]
    assert cond(st, "Ready")["reason"] == "Retrying", cond(st, "Ready")
    assert sorted([a1, a2]) == rayjob_names(cluster)

    cluster.set_rayjob_status(a2, jobDeploymentStatus="Failed", jobStatus="FAILED", reason="AppFailed",
                              message="ValueError: loss is NaN (attempt two)")
    st = wait_status(cluster, "app", phase("Failed"), "Failed after attempt 2")
    ready = cond(st, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "JobFailed")
    assert "loss is NaN (attempt two)" in ready["message"] and "backoffLimit 1" in ready["message"], ready
    assert cond(st, "Failed")["status"] == "True" and cond(st, "Succeeded")["status"] == "False"
    assert [(a["run"], a["attempt"], a["outcome"]) for a in st["attempts"]] == [(1, 1, "Failed"), (1, 2, "Failed")]
    assert (st["run"]["number"], st["run"]["attempt"]) == (1, 2)
    assert "model" not in st

    # backoffLimit reached: no third attempt, however long we look.
    holds(lambda: rayjob_names(cluster) == sorted([a1, a2]) and cluster.status("app")["phase"] == "Failed",
          4 * POLL, "no third RayJob, still Failed")
    assert a3 not in rayjob_names(cluster)
    assert "loss is NaN" in wait_warning(cluster, "app", "JobFailed")
    assert warning_reasons(cluster, "app").count("Retrying") == 1
    assert warning_reasons(cluster, "app").count("JobFailed") == 1
    assert versions(uri, model) == []


# --- 2. deadline -----------------------------------------------------------------------------------


def test_deadline_fails_the_attempt_and_deletes_the_rayjob(cluster, mlflow_server):
    uri = mlflow_server.tracking_uri
    ft = cluster.create(finetune("late", uri, model=f"m-{cluster.ns}", activeDeadlineSeconds=2, backoffLimit=1))
    a1 = rj(ft, 1)
    wait_status(cluster, "late", launched(1), "attempt 1 launched")
    assert cluster.rayjob(a1)["spec"]["activeDeadlineSeconds"] == 2  # KubeRay enforces it first
    running(cluster, "late", a1)

    # KubeRay "missed" the deadline: tuneloop fails the attempt after deadline + grace and stops it.
    st = wait_status(cluster, "late", phase("Failed"), "Failed by the deadline", timeout=20)
    ready = cond(st, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "DeadlineExceeded")
    assert "activeDeadlineSeconds (2s)" in ready["message"], ready
    [attempt] = st["attempts"]
    assert attempt["outcome"] == "DeadlineExceeded" and attempt["id"] == a1
    assert (ts(attempt["endTime"]) - ts(attempt["startTime"])).total_seconds() > 2 + DEADLINE_GRACE
    wait_for(lambda: rayjob_names(cluster, "late") == [] or None, 10, "the timed-out RayJob deleted")
    # A deadline is not retried (backoffLimit 1 notwithstanding).
    holds(lambda: rayjob_names(cluster, "late") == [] and cluster.status("late")["phase"] == "Failed",
          3 * POLL, "no new attempt after the deadline")
    assert "activeDeadlineSeconds" in wait_warning(cluster, "late", "DeadlineExceeded")

    # KubeRay enforcing the deadline itself (#2314: deployment Failed while the Ray job still runs).
    ft2 = cluster.create(finetune("late2", uri, model=f"m-{cluster.ns}", activeDeadlineSeconds=600))
    b1 = rj(ft2, 1)
    wait_status(cluster, "late2", launched(1), "attempt 1 launched")
    running(cluster, "late2", b1)
    cluster.set_rayjob_status(b1, jobDeploymentStatus="Failed", jobStatus="RUNNING", reason="DeadlineExceeded",
                              message="The RayJob has passed the activeDeadlineSeconds.")
    st = wait_status(cluster, "late2", phase("Failed"), "Failed by KubeRay's deadline")
    assert cond(st, "Ready")["reason"] == "DeadlineExceeded"
    assert "passed the activeDeadlineSeconds" in cond(st, "Ready")["message"]
    assert [a["outcome"] for a in st["attempts"]] == ["DeadlineExceeded"]
    wait_for(lambda: rayjob_names(cluster, "late2") == [] or None, 10, "KubeRay-timed-out RayJob deleted")


# --- 3. KubeRay's inconsistent states ----------------------------------------------------------------


def test_deployment_failed_while_job_running_fails_the_attempt_and_stops_it(cluster, mlflow_server):
    """kuberay #2314: jobDeploymentStatus Failed, jobStatus RUNNING. Must not hang in Running."""
    ft = cluster.create(finetune("incon-a", mlflow_server.tracking_uri, model=f"m-{cluster.ns}", backoffLimit=0))
    a1 = rj(ft, 1)
    wait_status(cluster, "incon-a", launched(1), "attempt 1 launched")
    running(cluster, "incon-a", a1)
    cluster.set_rayjob_status(a1, jobDeploymentStatus="Failed", jobStatus="RUNNING",
                              message="submitter K8s Job failed: BackoffLimitExceeded")
    st = wait_status(cluster, "incon-a", phase("Failed"), "Failed")
    assert cond(st, "Ready")["reason"] == "JobFailed"
    assert "BackoffLimitExceeded" in cond(st, "Ready")["message"]
    assert [(a["attempt"], a["outcome"]) for a in st["attempts"]] == [(1, "Failed")]
    # the Ray job may still hold GPUs: tuneloop deletes the RayJob (and with it the cluster)
    wait_for(lambda: rayjob_names(cluster) == [] or None, 10, "the RayJob of the half-failed attempt deleted")


def test_job_failed_while_deployment_stays_running_fails_after_the_grace(cluster, mlflow_server):
    """kuberay #3553: jobStatus FAILED, jobDeploymentStatus stays Running. KubeRay sets status.endTime only
    when the deployment finishes, so the Ray job's end is only in status.rayJobInfo.endTime."""
    ft = cluster.create(finetune("incon-b", mlflow_server.tracking_uri, model=f"m-{cluster.ns}", backoffLimit=0))
    a1 = rj(ft, 1)
    wait_status(cluster, "incon-b", launched(1), "attempt 1 launched")
    running(cluster, "incon-b", a1)
    ended = datetime.now(UTC).replace(microsecond=0)
    cluster.set_rayjob_status(a1, jobDeploymentStatus="Running", jobStatus="FAILED",
                              rayJobInfo={"endTime": ended.strftime("%Y-%m-%dT%H:%M:%SZ")},
                              message="Job entrypoint failed: exit 1")
    st = wait_status(cluster, "incon-b", phase("Failed"), "Failed after the inconsistency grace", timeout=20)
    ready = cond(st, "Ready")
    assert ready["reason"] == "JobFailed" and "kuberay #3553" in ready["message"], ready
    [attempt] = st["attempts"]
    assert attempt["outcome"] == "Failed" and "exit 1" in attempt["reason"]
    assert (ts(attempt["endTime"]) - ended).total_seconds() > INCONSISTENT_GRACE  # KubeRay got its grace
    wait_for(lambda: rayjob_names(cluster) == [] or None, 10, "the stuck RayJob deleted")


def test_complete_without_succeeded_job_is_not_success(cluster, mlflow_server):
    """Complete alone is not success, even with a success result document lying in MLflow."""
    uri, model = mlflow_server.tracking_uri, f"m-{cluster.ns}"
    ft = cluster.create(finetune("incon-c", uri, model=model, backoffLimit=0))
    a1 = rj(ft, 1)
    wait_status(cluster, "incon-c", launched(1), "attempt 1 launched")
    running(cluster, "incon-c", a1)
    act_as_job(uri, experiment(ft), job_tags(ft), {"exact_match": 0.9}, {"exact_match": 0.1})
    cluster.set_rayjob_status(a1, jobDeploymentStatus="Complete", jobStatus="STOPPED",
                              message="Job was intentionally stopped.")
    st = wait_status(cluster, "incon-c", phase("Failed"), "Failed")
    assert cond(st, "Ready")["reason"] == "JobFailed"
    assert "intentionally stopped" in cond(st, "Ready")["message"]
    assert [a["outcome"] for a in st["attempts"]] == ["Failed"]
    assert "model" not in st and cond(st, "Succeeded")["status"] == "False"
    holds(lambda: cluster.status("incon-c")["phase"] == "Failed", 2 * POLL, "still Failed, nothing registered")
    assert versions(uri, model) == []


# --- 4. suspend ------------------------------------------------------------------------------------


def test_suspend_stops_the_job_and_resume_launches_a_new_attempt_of_the_same_run(cluster, mlflow_server):
    ft = cluster.create(finetune("pause", mlflow_server.tracking_uri, model=f"m-{cluster.ns}", backoffLimit=1))
    a1, a2, a3 = rj(ft, 1), rj(ft, 2), rj(ft, 3)
    wait_status(cluster, "pause", launched(1), "attempt 1 launched")
    running(cluster, "pause", a1)

    cluster.patch_spec("pause", {"suspend": True})
    st = wait_status(cluster, "pause", phase("Suspended"), "Suspended")
    assert cond(st, "Suspended")["status"] == "True"
    assert (cond(st, "Ready")["status"], cond(st, "Ready")["reason"]) == ("False", "Suspended")
    assert [(a["attempt"], a["outcome"]) for a in st["attempts"]] == [(1, "Stopped")]
    assert st["run"]["number"] == 1
    wait_for(lambda: rayjob_names(cluster) == [] or None, 10, "the suspended attempt's RayJob deleted")
    holds(lambda: rayjob_names(cluster) == [] and cluster.status("pause")["phase"] == "Suspended",
          3 * POLL, "nothing launched while suspended")
    wait_for(lambda: "Suspended" in [e.reason for e in cluster.events("pause") if e.type == "Normal"], 15,
             "a Normal Suspended event")

    cluster.patch_spec("pause", {"suspend": False})
    st = wait_status(cluster, "pause", launched(2), "attempt 2 after resume")
    assert st["run"]["number"] == 1 and st["run"]["rayJobName"] == a2  # the same run: no new run number
    assert cond(st, "Suspended")["status"] == "False"
    assert rayjob_names(cluster) == [a2]

    # The Stopped attempt does not count: with backoffLimit 1 one failure is still retried.
    cluster.set_rayjob_status(a2, jobDeploymentStatus="Failed", jobStatus="FAILED", reason="AppFailed",
                              message="boom")
    st = wait_status(cluster, "pause", launched(3), "attempt 3 (the Stopped attempt is not a failure)")
    assert cond(st, "Ready")["reason"] == "Retrying"
    assert [a["outcome"] for a in st["attempts"]] == ["Stopped", "Failed"]
    assert st["run"]["number"] == 1 and rayjob_names(cluster) == sorted([a2, a3])


# --- 5. delete -------------------------------------------------------------------------------------


def test_delete_removes_rayjobs_and_configmap_then_the_object(cluster, mlflow_server):
    ft = cluster.create(finetune("gone", mlflow_server.tracking_uri, model=f"m-{cluster.ns}", backoffLimit=1))
    a1, a2 = rj(ft, 1), rj(ft, 2)
    wait_status(cluster, "gone", launched(1), "attempt 1 launched")
    cluster.set_rayjob_status(a1, jobDeploymentStatus="Failed", jobStatus="FAILED", message="first try failed")
    wait_status(cluster, "gone", launched(2), "attempt 2")
    running(cluster, "gone", a2)
    assert rayjob_names(cluster) == sorted([a1, a2]) and len(cluster.configmaps()) == 1
    assert constants.FINALIZER in cluster.get("gone")["metadata"]["finalizers"]

    cluster.delete("gone")
    # No garbage collector runs here: only the finalizer can have removed the children.
    wait_for(lambda: not cluster.exists("gone"), 20, "the FineTune to disappear")
    assert rayjob_names(cluster) == []
    assert cluster.configmaps() == []


def test_delete_with_ray_unreachable_gives_up_after_the_timeout_with_a_warning(cluster, mlflow_server, ray_api):
    ray = {"mode": "ExistingCluster", "address": ray_api.address}
    ft = cluster.create(finetune("orphan", mlflow_server.tracking_uri, model=f"m-{cluster.ns}", ray=ray))
    sid = naming.submission_id(ft["metadata"]["uid"], 1, 1)
    st = wait_status(cluster, "orphan", phase("Running"), "Running on the existing cluster")
    assert st["run"]["submissionId"] == sid and ray_api.submissions() == [sid]

    ray_api.close()  # the Ray head goes away: its port is closed
    st = wait_status(cluster, "orphan", lambda s: cond(s, "Ready").get("reason") == "RayUnavailable",
                     "RayUnavailable")
    assert st["phase"] == "Running"  # an outage is waited out, not a failure

    started = time.monotonic()
    cluster.delete("orphan")
    wait_for(lambda: not cluster.exists("orphan"), DELETE_TIMEOUT + 15, "the FineTune to disappear")
    took = time.monotonic() - started
    assert took >= DELETE_TIMEOUT * 0.9, f"gave up after {took:.1f}s, before trying for {DELETE_TIMEOUT}s"
    message = wait_warning(cluster, "orphan", "CleanupAbandoned")
    assert sid in message and ray_api.address in message, message


# --- 6. operator restarts ------------------------------------------------------------------------


def test_operator_killed_at_every_step_leaves_one_rayjob_and_one_version(
        api_client, operator_env, rayjob_crd, mlflow_server, ns_prefix, tmp_path):
    ns = create_namespace(api_client, f"{ns_prefix}r")
    cluster = Cluster(api_client, ns)
    uri, model = mlflow_server.tracking_uri, f"m-{ns}"
    op = OperatorProcess(ns, operator_process_env(operator_env), tmp_path / "operator.log", standby=True)
    try:
        ft = cluster.create(finetune("boot", uri, model=model, backoffLimit=1))  # while no operator runs
        uid, a1 = ft["metadata"]["uid"], rj(ft, 1)

        # killed right after taking the object (finalizer on), before or while launching
        op.start()
        wait_for(lambda: constants.FINALIZER in (cluster.get("boot")["metadata"].get("finalizers") or []),
                 60, "the operator's finalizer")
        op.kill()
        # killed as soon as the RayJob exists: the status may not name it yet
        op.start()
        wait_for(lambda: rayjob_names(cluster) or None, 60, "the RayJob", interval=0.05)
        op.kill()
        op.start()
        st = wait_status(cluster, "boot", launched(1), "attempt 1 recorded after restarts", timeout=60)
        assert st["run"]["rayJobName"] == a1 and rayjob_names(cluster) == [a1]

        # killed while Running; the job succeeds while no operator runs
        running(cluster, "boot", a1)
        op.kill()
        act_as_job(uri, experiment(ft), job_tags(ft), {"exact_match": 0.8}, {"exact_match": 0.3})
        cluster.set_rayjob_status(a1, jobStatus="SUCCEEDED", jobDeploymentStatus="Complete")

        # killed when registration starts, then as soon as the version exists (alias/status not yet)
        op.start()
        wait_status(cluster, "boot", lambda s: s.get("phase") in ("Registering", "Succeeded")
                    or bool(versions_of_run(uri, model, uid, 1)), "registration under way", timeout=60)
        op.kill()
        op.start()
        wait_for(lambda: versions_of_run(uri, model, uid, 1), 60, "the version registered", interval=0.05)
        op.kill()
        op.start()
        st = wait_status(cluster, "boot", phase("Succeeded"), "Succeeded after restarts", timeout=60)
        assert (st["run"]["number"], st["run"]["attempt"]) == (1, 1)
        assert [(a["attempt"], a["outcome"]) for a in st["attempts"]] == [(1, "Succeeded")]
        assert rayjob_names(cluster) == [a1]
        assert len(cluster.configmaps()) == 1
        [mv] = versions_of_run(uri, model, uid, 1)
        assert [v.version for v in versions(uri, model)] == ["1"] == [mv.version]
        assert st["model"]["version"] == "1" and st["model"]["alias"] == "champion"
        assert MlflowClient(uri).get_model_version_by_alias(model, "champion").version == "1"
    except BaseException:
        print(f"--- restarted operator's log ---\n{op.tail()}")
        raise
    finally:
        op.stop()


# --- 7. MLflow down during registration ------------------------------------------------------------


def test_registry_outage_during_registration_is_waited_out_then_registers_once(cluster, mlflow_server):
    uri, model = mlflow_server.tracking_uri, f"m-{cluster.ns}"
    ft = cluster.create(finetune("reg", uri, model=model, backoffLimit=0))
    a1 = rj(ft, 1)
    wait_status(cluster, "reg", launched(1), "attempt 1 launched")
    running(cluster, "reg", a1)
    act_as_job(uri, experiment(ft), job_tags(ft), {"exact_match": 0.8}, {"exact_match": 0.3})

    mlflow_server.stop()
    try:
        cluster.set_rayjob_status(a1, jobStatus="SUCCEEDED", jobDeploymentStatus="Complete")
        st = wait_status(cluster, "reg", lambda s: cond(s, "Ready").get("reason") == "RegistryUnavailable",
                         "RegistryUnavailable")
        assert st["phase"] == "Registering", st
        holds(lambda: (cluster.status("reg")["phase"], cond(cluster.status("reg"), "Ready")["reason"])
              == ("Registering", "RegistryUnavailable"), 4 * POLL, "waiting on MLflow, not Failed")
        assert "mlflow unreachable" in cond(cluster.status("reg"), "Ready")["message"]
        wait_warning(cluster, "reg", "RegistryUnavailable")
    finally:
        mlflow_server.start()  # same port, same backing store
    assert mlflow_server.tracking_uri == uri

    st = wait_status(cluster, "reg", phase("Succeeded"), "Succeeded after MLflow came back", timeout=60)
    assert st["model"]["version"] == "1" and cond(st, "Ready")["reason"] == "Promoted"
    assert [a["outcome"] for a in st["attempts"]] == ["Succeeded"]
    assert [v.version for v in versions_of_run(uri, model, ft["metadata"]["uid"], 1)] == ["1"]
    assert len(versions(uri, model)) == 1


# --- 8. a spec the schema cannot refuse --------------------------------------------------------------


def test_missing_file_dataset_is_reported_once_without_launching_until_fixed(cluster, mlflow_server, ray_api, tmp_path):
    missing = tmp_path / "nowhere" / "invoices.jsonl"
    ray = {"mode": "ExistingCluster", "address": ray_api.address}
    cluster.create(finetune("bad", mlflow_server.tracking_uri, model=f"m-{cluster.ns}", ray=ray,
                            dataset={"uri": f"file://{missing}"}))
    st = wait_status(cluster, "bad", lambda s: bool(cond(s, "Ready")), "a Ready condition")
    ready = cond(st, "Ready")
    assert ready["status"] == "False" and ready["reason"] in ("InvalidSpec", "DataInvalid"), ready
    assert "spec.dataset.uri" in ready["message"] and str(missing) in ready["message"], ready
    assert ready["observedGeneration"] == 1 and st["phase"] == "Failed"
    assert "run" not in st

    message = wait_warning(cluster, "bad", ready["reason"])
    assert "spec.dataset.uri" in message
    # several poll periods later: still one Warning, nothing sent to Ray (no retry storm)
    holds(lambda: warning_reasons(cluster, "bad") == [ready["reason"]] and ray_api.requests == [],
          6 * POLL, "one Warning event and no Ray request")

    data = tmp_path / "invoices.jsonl"
    data.write_text('{"prompt": "a", "completion": "b"}\n')
    cluster.patch_spec("bad", {"dataset": {"uri": f"file://{data}"}})
    st = wait_status(cluster, "bad", launched(1), "launched after the fix")
    ready = cond(st, "Ready")
    assert ready["reason"] not in ("InvalidSpec", "DataInvalid") and ready["observedGeneration"] == 2, ready
    assert st["run"]["number"] == 1 and st["run"]["generation"] == 2
    assert "Failed" not in {c["type"] for c in st.get("conditions", []) if c["status"] == "True"}
    wait_for(lambda: ray_api.submissions() or None, 10, "the submission to Ray")
    assert len(ray_api.submissions()) == 1
