"""Per-version figures of recent requests, kept in the Ingress's memory for canary checks.

The canary decision (the operator's `logic.canary`) needs each version's error rate and p95 latency
over the last check interval, from the real serving path. The traffic log cannot give them: it may be
off (`logRequests: false`), and its records land seconds later in batches. So the Ingress records one
small sample per completion it routed to a model (time, model id, ok, latency) in a bounded ring, and
`GET /v1/stats?since=<t>` summarises the samples after `t` by model id.

Times are the app's own clock: a summary carries its `now`, which the caller passes back as the next
`since`, so windows chain without comparing two machines' clocks. A replica restart empties the ring
(the window then starts at the restart). Warm-up requests are not recorded (loading the adapter is
not the version's latency). One Ingress replica holds all samples (the application runs one).

Stdlib only: the operator imports `model_figures` to read a summary.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

DEFAULT_CAPACITY = 20_000


@dataclass(frozen=True)
class Sample:
    time: float
    model_id: str
    ok: bool
    latency_ms: float


@dataclass(frozen=True)
class ModelFigures:
    """One model id's requests in a window: answered or failed, and latency of the answered ones."""

    requests: int
    errors: int
    p50_latency_ms: float | None
    p95_latency_ms: float | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in (0, 100]); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


class RecentRequests:
    """A bounded ring of samples (the oldest dropped first) and its summary by model id."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY, clock: Callable[[], float] = time.time) -> None:
        self._samples: deque[Sample] = deque(maxlen=capacity)
        self._clock = clock
        self.started = clock()

    def add(self, model_id: str, ok: bool, latency_ms: float) -> None:
        self._samples.append(Sample(self._clock(), model_id, ok, latency_ms))

    def summary(self, since: float | None = None) -> dict[str, Any]:
        """`{"now", "started", "since", "models": {id: {requests, errors, p50_latency_ms, p95_latency_ms}}}`
        over the samples after `since` (all kept samples when None)."""
        now = self._clock()
        by_model: dict[str, list[Sample]] = {}
        for s in self._samples:
            if since is None or s.time > since:
                by_model.setdefault(s.model_id, []).append(s)
        models = {}
        for model_id, samples in sorted(by_model.items()):
            answered = [s.latency_ms for s in samples if s.ok]
            models[model_id] = {"requests": len(samples), "errors": sum(1 for s in samples if not s.ok),
                                "p50_latency_ms": percentile(answered, 50), "p95_latency_ms": percentile(answered, 95)}
        return {"now": now, "started": self.started, "since": since, "models": models}


def model_figures(summary: dict[str, Any], model_id: str) -> ModelFigures:
    """One model id's figures from a summary (no requests when it is absent)."""
    entry = (summary.get("models") or {}).get(model_id) or {}

    def number(key: str) -> float | None:
        value = entry.get(key)
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    return ModelFigures(requests=int(entry.get("requests") or 0), errors=int(entry.get("errors") or 0),
                        p50_latency_ms=number("p50_latency_ms"), p95_latency_ms=number("p95_latency_ms"))
