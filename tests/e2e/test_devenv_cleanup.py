"""Nothing is left running: each local service started the way a new user would
(`python -m tuneloop.devenv.<service>`, here under the test as its supervisor) stops every process it
started when the parent gets SIGTERM, SIGINT (Ctrl-C) or SIGHUP, and (best effort, PR_SET_PDEATHSIG)
when the parent is killed with SIGKILL.

"Every process it started" is found three independent ways, none of them through
`tuneloop.devenv.processes`: an environment marker every descendant inherits (Ray's daemons included),
the parent links while everything runs, and the sessions those processes belong to (Ray's agents
rewrite their environment with setproctitle; its job drivers start sessions of their own). The Ray
case runs a job first, so workers and a job driver are part of what must go.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.processes import MARKER_VAR, Proc, family, read_proc, still_alive

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

READY_PREFIX = {
    "controlplane": "export KUBECONFIG=",
    "ray_head": "export RAY_ADDRESS=",
    "mlflow_server": "export MLFLOW_TRACKING_URI=",
}
WORKDIR_VAR = {
    "controlplane": "TUNELOOP_CONTROL_PLANE_DIR",
    "ray_head": "TUNELOOP_RAY_DIR",
    "mlflow_server": "TUNELOOP_MLFLOW_DIR",
}
START_TIMEOUT_SECONDS = 300  # two shared cores: a cold control plane or Ray head can take minutes
STOP_TIMEOUT_SECONDS = 60


@dataclass
class Started:
    proc: subprocess.Popen[str]
    marker: str
    ready_line: str
    output: list[str]
    sessions: set[int]
    seen: dict[tuple[int, int], Proc]

    def snapshot(self) -> dict[tuple[int, int], Proc]:
        self.seen.update(family(self.proc.pid, self.marker, self.sessions))
        return self.seen


@contextlib.contextmanager
def start_service(service: str, workdir: Path | None = None) -> Iterator[Started]:
    """`python -m tuneloop.devenv.<service>` until its ready line; afterwards everything that carries
    its marker is killed, so a failing test leaks nothing either. Without `workdir` the service makes
    and removes its own scratch folder."""
    marker = uuid.uuid4().hex
    env = {**os.environ, MARKER_VAR: marker, "PYTHONUNBUFFERED": "1"}
    for var in (*WORKDIR_VAR.values(), "RAY_ADDRESS"):
        env.pop(var, None)
    if workdir is not None:
        env[WORKDIR_VAR[service]] = str(workdir)
    # Its own session, as under a supervisor: a signal to pytest's group never reaches it by accident.
    proc = subprocess.Popen(
        [sys.executable, "-m", f"tuneloop.devenv.{service}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    output: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    started = Started(proc, marker, "", output, set(), {})
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not started.ready_line:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"{service} printed no ready line in {START_TIMEOUT_SECONDS}s:\n" + "\n".join(output))
            if line is None:
                pytest.fail(f"{service} exited ({proc.wait()}) before it was ready:\n" + "\n".join(output))
            output.append(line)
            if line.startswith(READY_PREFIX[service]):
                started.ready_line = line
        started.snapshot()
        yield started
    finally:
        leftovers = {**started.seen, **family(proc.pid, marker, started.sessions)}
        for p in leftovers.values():
            current = read_proc(p.pid)
            if current is not None and current.start_ticks == p.start_ticks:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(p.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)


def assert_nothing_survives(started: Started, what: str) -> None:
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    survivors = still_alive(started.seen, started.marker, started.sessions)
    while survivors and time.monotonic() < deadline:
        time.sleep(0.5)
        survivors = still_alive(started.seen, started.marker, started.sessions)
    listing = "\n".join(f"  {p.pid} {p.cmdline}" for p in survivors)
    assert not survivors, f"{what}: {len(survivors)} of {len(started.seen)} processes survive:\n{listing}"


def http_json(url: str, body: dict[str, object] | None = None) -> dict[str, object]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def run_ray_job(dashboard: str) -> None:
    """A job whose driver holds a task's worker and then sleeps: a worker and a job driver must go too."""
    entrypoint = (
        "python -c \"import ray, time; ray.init(); ray.get(ray.remote(lambda: 1).remote()); "
        "print('driver up', flush=True); time.sleep(600)\""
    )
    job_id = http_json(dashboard + "/api/jobs/", {"entrypoint": entrypoint})["submission_id"]
    deadline = time.monotonic() + 180
    logs = ""
    while time.monotonic() < deadline:
        logs = str(http_json(f"{dashboard}/api/jobs/{job_id}/logs").get("logs", ""))
        if "driver up" in logs:
            return
        time.sleep(1)
    pytest.fail(f"the Ray job's driver did not come up in 180s; its log:\n{logs}")


@pytest.mark.parametrize(
    ("service", "signum"),
    [
        pytest.param("controlplane", signal.SIGTERM, marks=pytest.mark.apiserver, id="controlplane-SIGTERM"),
        pytest.param("ray_head", signal.SIGTERM, id="ray_head-SIGTERM"),
        pytest.param("mlflow_server", signal.SIGTERM, id="mlflow_server-SIGTERM"),
        pytest.param("mlflow_server", signal.SIGINT, id="mlflow_server-SIGINT"),
        pytest.param("ray_head", signal.SIGHUP, id="ray_head-SIGHUP"),
    ],
)
def test_a_stop_signal_to_the_parent_stops_every_process_it_started(service: str, signum: int) -> None:
    with start_service(service) as started:
        if service == "ray_head":
            run_ray_job(started.ready_line.split("job API: ")[1].strip())
        elif service == "controlplane":
            kubeconfig = Path(started.ready_line.split("=", 1)[1].split()[0])
            assert kubeconfig.is_file()
        seen = started.snapshot()
        assert len(seen) >= 3, f"expected the parent and its service processes, found {list(seen.values())}"

        started.proc.send_signal(signum)
        returncode = started.proc.wait(timeout=STOP_TIMEOUT_SECONDS)

        assert_nothing_survives(started, f"{service} after {signal.Signals(signum).name}")
        assert returncode == 0, "\n".join(started.output)
        if service == "controlplane":
            assert not kubeconfig.parent.exists(), "the scratch folder outlived the control plane"


@pytest.mark.parametrize(
    "service",
    [
        pytest.param("controlplane", marks=pytest.mark.apiserver),
        "mlflow_server",
        "ray_head",
    ],
)
def test_a_parent_killed_outright_still_takes_its_services_down(service: str) -> None:
    """SIGKILL runs no Python: the services go because their leaders were started with a parent-death
    signal, and they stop their own children (mlflow forwards it to uvicorn, `ray start` stops its
    node). Nothing can remove the scratch folder then, so the test gives one (short: Ray's socket
    paths) and removes it itself."""
    workdir = Path(tempfile.mkdtemp(prefix="tl-kill-", dir="/tmp"))
    try:
        with start_service(service, workdir=workdir) as started:
            started.snapshot()
            started.proc.kill()
            started.proc.wait(timeout=10)
            assert_nothing_survives(started, f"{service} after SIGKILL of the parent")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
