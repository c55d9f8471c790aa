"""Monitor checks off the event loop: a bounded pool of worker threads runs the check function the
operator setting TUNELOOP_MONITOR_CHECK names (`module:function`, by default the monitor library's
`tuneloop.monitoring.runner:run_check`).

A check reads Parquet and runs Evidently for seconds; on the event loop it would stall every other
object's reconciliation. With `max_checks` workers, at most that many checks run at once and the rest
queue: the event loop only awaits. The function is imported on the first check, so an operator
installed without the monitor extra starts, and each check reports the missing import as a failure.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

# Failure kinds a check function answers with (tuneloop.monitoring.runner's ERROR_*).
ERROR_REFERENCE = "reference"
ERROR_REGISTRY = "registry"
ERROR_TRAFFIC = "traffic"
ERROR_CHECK = "check"


@dataclass(frozen=True)
class CheckAnswer:
    """What one check said: figures, or `error` (a kind above) with a message."""

    samples: int = 0
    insufficient: bool = False
    drift_share: float | None = None
    drifted_columns: tuple[str, ...] = ()
    quality: float | None = None
    report_uri: str | None = None
    feedback: dict[str, Any] | None = None  # {uri, hash, examples, labelled}: the window's new examples
    error: str | None = None
    message: str = ""


class Monitor(Protocol):
    async def check(self, request: dict[str, Any]) -> CheckAnswer: ...


def load_function(path: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


class ThreadedMonitor:
    """Runs checks in at most `max_checks` threads; never raises (a failure is an answer)."""

    def __init__(self, function_path: str, max_checks: int) -> None:
        self.function_path = function_path
        self.max_checks = max_checks
        self._pool = ThreadPoolExecutor(max_workers=max_checks, thread_name_prefix="tuneloop-monitor")
        self._function: Callable[[dict[str, Any]], dict[str, Any]] | None = None

    def _run(self, request: dict[str, Any]) -> dict[str, Any]:
        if self._function is None:
            self._function = load_function(self.function_path)
        return self._function(request)

    async def check(self, request: dict[str, Any]) -> CheckAnswer:
        loop = asyncio.get_running_loop()
        try:
            raw = await loop.run_in_executor(self._pool, self._run, request)
        except ImportError as e:
            return CheckAnswer(error=ERROR_CHECK, message=(
                f"cannot import the check function {self.function_path} (TUNELOOP_MONITOR_CHECK): {e}; install "
                "tuneloop with the monitor extra where the operator runs"))
        except Exception as e:  # the check function must not take the operator down
            return CheckAnswer(error=ERROR_CHECK, message=f"{type(e).__name__}: {e}")
        return parse_answer(raw)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def parse_answer(raw: dict[str, Any]) -> CheckAnswer:
    if raw.get("error"):
        return CheckAnswer(error=str(raw["error"]), message=str(raw.get("message", "")))
    return CheckAnswer(
        samples=int(raw.get("samples") or 0), insufficient=bool(raw.get("insufficient")),
        drift_share=_float(raw.get("drift_share")), drifted_columns=tuple(raw.get("drifted_columns") or ()),
        quality=_float(raw.get("quality")), report_uri=raw.get("report_uri"),
        feedback=raw.get("feedback") if isinstance(raw.get("feedback"), dict) else None)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
