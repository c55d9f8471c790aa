"""A real single-node Ray cluster on loopback: `ray start --head` with free ports, its own
`--temp-dir`, and the dashboard (the job API a KubeRay head serves on :8265).

Traps handled (shared/FACTS.md): `ray start` turns on token auth, which a JobSubmissionClient without
a token cannot pass, so the head and every client here run with `RAY_AUTH_MODE=disabled` (set in this
process too, before anything imports ray, and in `.env` for subprocesses); and `ray stop` leaves
`<temp-dir>/ray_current_cluster` behind, which makes the next `ray.init()` try to join the dead
cluster, so stopping removes it.

Ready means the runtime is up, not only the dashboard: the dashboard once answered while the node's
agent was crashing, and `ray start` exited 30 s later. `running()` always stops the head: its whole
process tree (`processes.stop_group`), never `ray stop`, which would stop every Ray on the machine.
Run it standalone with `python -m tuneloop.devenv.ray_head`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tuneloop.devenv import processes
from tuneloop.devenv.ports import free_port, wait_until

# Environment every process talking to this head needs; RAY_ADDRESS is added per head.
BASE_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "RAY_DISABLE_DOCKER_CPU_WARNING": "1"}
# What `ray start` (ray/_private/node.py, 2.60) says when the raylet did not register within 30 s,
# and what the raylet says when the dashboard agent missed its 15 s to write its port file.
NODE_STARTUP_TIMED_OUT = "The current node timed out during startup"
AGENT_PORT_FILE_TIMED_OUT = "Timed out waiting for file"


@dataclass
class RayHead:
    """A running Ray head node; use `start()`/`stop()` or the `running()` context."""

    workdir: Path
    num_cpus: int = 2
    gcs_port: int = 0
    dashboard_port: int = 0
    agent_port: int = 0
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        """Dashboard / job submission API (what `JobSubmissionClient` and `ray job submit` take)."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def gcs_address(self) -> str:
        """GCS address (what `ray.init(address=...)` and `RAY_ADDRESS` take for a driver)."""
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def temp_dir(self) -> Path:
        # Unix socket paths are limited to 107 bytes, so keep the Ray temp dir short.
        return self.workdir / "r"

    @property
    def env(self) -> dict[str, str]:
        """Environment for a driver subprocess that should join this cluster."""
        return {**BASE_ENV, "RAY_ADDRESS": self.gcs_address}

    @property
    def log_path(self) -> Path:
        return self.workdir / "ray-start.log"

    def _ray(self) -> str:
        candidate = Path(sys.executable).with_name("ray")
        return str(candidate) if candidate.exists() else "ray"

    def _runtime_ready(self) -> bool:
        """KubeRay's head readiness probe (the GCS through the dashboard, the raylet through the node's
        dashboard agent, which the raylet starts), plus the job API this project submits to."""

        def answers(url: str, body: bytes | None) -> bool:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return resp.status == 200 and (body is None or resp.read().strip() == body)

        return (
            answers(self.address + "/api/gcs_healthz", b"success")
            and answers(f"http://127.0.0.1:{self.agent_port}/api/local_raylet_healthz", b"success")
            and answers(self.address + "/api/jobs/", None)
        )

    def _start_log(self, offset: int) -> str:
        """What `ray start` wrote in this attempt (the log is appended to across attempts)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def _session_errors(self) -> dict[str, list[str]]:
        """The first lines of each non-empty *.err of the latest session: where a Ray process says why
        it died (the rest is a stack trace)."""
        found = {}
        for log in sorted(self.temp_dir.glob("session_latest/logs/*.err")):
            with contextlib.suppress(OSError):
                lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
                if lines:
                    found[log.name] = lines[:3]
        return found

    def _log_tail(self, offset: int) -> str:
        start_lines = [line for line in self._start_log(offset).splitlines() if line.strip()]
        lines = [f"--- {self.log_path.name}", *start_lines[-20:]]
        for name, head in self._session_errors().items():
            lines += [f"--- {name}", *head]
        return "\n".join(lines)

    def _lost_startup_race(self, offset: int) -> bool:
        raylet = " ".join(self._session_errors().get("raylet.err", []))
        return NODE_STARTUP_TIMED_OUT in self._start_log(offset) or AGENT_PORT_FILE_TIMED_OUT in raylet

    def start(self, timeout_seconds: float = 120, attempts: int = 3) -> RayHead:
        """Start the head and wait for its runtime. On a busy machine the dashboard agent can miss the
        raylet's fixed 15 s wait for its port file (not configurable in 2.60); the raylet aborts and
        `ray start` exits after its own fixed 30 s. Only that failure is tried again."""
        for attempt in range(1, attempts + 1):
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            try:
                return self._start_once(timeout_seconds, offset)
            except RuntimeError:
                if attempt == attempts or not self._lost_startup_race(offset):
                    raise
        raise AssertionError("unreachable")

    def _start_once(self, timeout_seconds: float, log_offset: int) -> RayHead:
        for key, value in BASE_ENV.items():
            os.environ.setdefault(key, value)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.gcs_port, self.dashboard_port, self.agent_port = free_port(), free_port(), free_port()
        ports = {name: free_port() for name in (
            "--ray-client-server-port", "--dashboard-agent-grpc-port", "--runtime-env-agent-port",
            "--metrics-export-port", "--node-manager-port", "--object-manager-port",
        )}
        ports["--dashboard-agent-listen-port"] = self.agent_port
        argv = [
            self._ray(), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(self.gcs_port),
            "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
            "--dashboard-port", str(self.dashboard_port), "--num-cpus", str(self.num_cpus), "--num-gpus", "0",
            "--temp-dir", str(self.temp_dir), "--disable-usage-stats", "--block",
        ]
        for flag, port in ports.items():
            argv += [flag, str(port)]
        # Not set, measured (2026-12-03, bench_train --submit 2): RAY_enable_worker_prestart=1 with
        # RAY_preload_python_modules=torch,transformers,peft,ray.train.torch. Every worker process
        # then imports them, the job supervisor and the Train controller included (and torch, imported
        # before Ray pins its threads, most likely runs the loop oversubscribed): model loading fell
        # from 8-9.5 s to 1-2 s, but submit -> first step rose from 36-43 s to 64 s and the 3-epoch
        # loop from 18-20 s to 85-89 s.
        env = {**os.environ, **BASE_ENV}
        env.pop("RAY_ADDRESS", None)
        # Job entrypoints say `python ...`: make that this interpreter, as a cluster image would.
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        # --block keeps `ray start` in the foreground as the session leader: its session holds the
        # GCS, raylet, agents and workers (each worker in a group of its own), and it stops them all
        # on SIGTERM, which is also what it gets when this process dies (processes.start_group).
        self.proc = processes.start_group(argv, self.log_path, env)

        def died() -> str | None:
            if self.proc is None or self.proc.poll() is None:
                return None
            return f"exit {self.proc.returncode}; last log lines:\n{self._log_tail(log_offset)}"

        try:
            wait_until(self._runtime_ready, timeout_seconds, "ray head (GCS, raylet, agent, job API)", died)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            # A graceful drain (~20 s) buys nothing: the tree kill catches raylet, GCS, agents, workers
            # and job drivers (those run in sessions of their own).
            processes.stop_group(proc, grace_seconds=3)
        # FACTS: a stale ray_current_cluster makes the next ray.init() join this dead cluster.
        marker = "ray_current_cluster"
        for stale in (self.temp_dir / marker, Path(tempfile.gettempdir()) / "ray" / marker):
            with contextlib.suppress(OSError):
                if stale.is_file() and self.gcs_address in stale.read_text():
                    stale.unlink()


@contextlib.contextmanager
def running(workdir: Path | None = None, num_cpus: int = 2) -> Iterator[RayHead]:
    """Start a Ray head, yield it, always stop it (and remove its files when the folder was ours)."""
    with processes.scratch_dir(workdir, "tl-ray-") as path:
        head = RayHead(workdir=path, num_cpus=num_cpus)
        try:
            head.start()
            yield head
        finally:
            head.stop()


def main() -> int:
    """Run until Ctrl-C, SIGTERM or SIGHUP. The folder is removed at exit unless TUNELOOP_RAY_DIR names one."""
    workdir = os.environ.get("TUNELOOP_RAY_DIR")
    num_cpus = int(os.environ.get("TUNELOOP_RAY_CPUS", "2"))
    started = time.monotonic()
    with (
        contextlib.suppress(KeyboardInterrupt),
        processes.exit_on_signals(),
        running(workdir=Path(workdir) if workdir else None, num_cpus=num_cpus) as head,
    ):
        print(f"ray head ready in {time.monotonic() - started:.1f}s", flush=True)
        print(f"export RAY_ADDRESS={head.gcs_address}   # job API: {head.address}", flush=True)
        print("export RAY_AUTH_MODE=disabled", flush=True)
        signal.pause()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
