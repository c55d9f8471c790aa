"""Process groups and scratch folders shared by the local services (control plane, MLflow, Ray head).

Each service runs as its own process group (`start_new_session=True`), so one `killpg` reaches the
workers it forked too; their state is thrown away, so a short SIGTERM grace is all they get.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


def stop_group(proc: subprocess.Popen[bytes], grace_seconds: float) -> None:
    """SIGTERM the process group, wait up to `grace_seconds`, then SIGKILL whatever of it is left."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_seconds)
    # Members may outlive a leader that exited on its own; the group id is the leader's pid.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


@contextlib.contextmanager
def scratch_dir(workdir: Path | None, prefix: str) -> Iterator[Path]:
    """`workdir` as given, or a fresh folder under /tmp (short: Ray's socket paths have a length limit)
    that is removed afterwards."""
    if workdir is not None:
        yield workdir
        return
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
