"""Free loopback ports and readiness polling shared by the local services."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], bool], timeout_seconds: float, what: str, alive: Callable[[], str | None]) -> None:
    """Poll `check` until it is true; fail early with the log tail when the process died."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        died = alive()
        if died is not None:
            raise RuntimeError(f"{what} exited before it was ready:\n{died}")
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{what} was not ready after {timeout_seconds:.0f}s")
