"""A real MLflow tracking server on loopback: `mlflow server` with a sqlite backend store and a local
artifact root served through the server (`--serve-artifacts`), so a client in another process (a Ray
worker, the training job, the operator) logs and loads models over HTTP only, like in a cluster.

`running()` yields an object with `.tracking_uri` and always stops the server (its whole process
group: gunicorn/uvicorn workers included). Telemetry is off. Run it standalone with
`python -m tuneloop.devenv.mlflow_server` (prints the URI, runs until interrupted).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tuneloop.devenv import processes
from tuneloop.devenv.ports import free_port, wait_until


@dataclass
class MlflowServer:
    """A running `mlflow server`; use `start()`/`stop()` or the `running()` context."""

    workdir: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def tracking_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "mlflow-server.log"

    def _died(self) -> str | None:
        if self.proc is None or self.proc.poll() is None:
            return None
        text = self.log_path.read_text(errors="replace")
        return f"exit {self.proc.returncode}; last log lines:\n" + "\n".join(text.splitlines()[-25:])

    def _healthy(self) -> bool:
        with urllib.request.urlopen(self.tracking_uri + "/health", timeout=2) as resp:
            return resp.status == 200

    def start(self, timeout_seconds: float = 120) -> MlflowServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        # A restart keeps the port (and the backing store in workdir): clients keep their tracking URI.
        self.port = self.port or free_port()
        mlflow_bin = Path(sys.executable).with_name("mlflow")
        argv = [
            str(mlflow_bin) if mlflow_bin.exists() else "mlflow", "server",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--backend-store-uri", f"sqlite:///{self.workdir / 'mlflow.db'}",
            "--serve-artifacts", "--artifacts-destination", str(self.workdir / "artifacts"),
            "--workers", "1",
        ]
        env = {
            **os.environ,
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "true",
            # The job runner (GenAI judges, trace rollups) is seven huey consumer processes and a folder
            # in /dev/shm that a killed server leaves behind; tuneloop uses none of it.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }
        self.proc = processes.start_group(argv, self.log_path, env)
        try:
            wait_until(self._healthy, timeout_seconds, "mlflow server", self._died)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            processes.stop_group(proc, grace_seconds=10)


@contextlib.contextmanager
def running(workdir: Path | None = None) -> Iterator[MlflowServer]:
    """Start a tracking server, yield it, always stop it (and remove its files when the folder was ours)."""
    with processes.scratch_dir(workdir, "tuneloop-mlflow-") as path:
        server = MlflowServer(workdir=path)
        try:
            server.start()
            yield server
        finally:
            server.stop()


def main() -> int:
    """Run until Ctrl-C, SIGTERM or SIGHUP. The folder is removed at exit unless TUNELOOP_MLFLOW_DIR names one."""
    workdir = os.environ.get("TUNELOOP_MLFLOW_DIR")
    started = time.monotonic()
    with (
        contextlib.suppress(KeyboardInterrupt),
        processes.exit_on_signals(),
        running(workdir=Path(workdir) if workdir else None) as server,
    ):
        print(f"mlflow server ready in {time.monotonic() - started:.1f}s", flush=True)
        print(f"export MLFLOW_TRACKING_URI={server.tracking_uri}", flush=True)
        signal.pause()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
