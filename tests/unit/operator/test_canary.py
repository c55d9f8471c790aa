"""decide_canary as a table: when a check is due, what passes, stepping, promotion, the failure threshold,
too little traffic and unreadable figures; and reading a window from the app's /v1/stats answer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from tuneloop.api.deployment import CanarySpec
from tuneloop.operator.logic import canary
from tuneloop.operator.logic.canary import CanaryWindow
from tuneloop.serving.traffic_stats import ModelFigures

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SPEC = CanarySpec(interval_seconds=30, threshold=2, step_weight=20, max_weight=50, max_error_rate=0.05,
                  max_p95_latency_ms=500, min_requests=10)
STABLE = ModelFigures(100, 0, 80.0, 120.0)


def window(requests: int = 20, errors: int = 0, p95: float | None = 200.0) -> CanaryWindow:
    return CanaryWindow(1000.0, ModelFigures(requests, errors, p95 and p95 / 2, p95), STABLE)


@dataclass
class Case:
    weight: int
    failed: int
    elapsed: float
    window: CanaryWindow | None
    action: str
    new_weight: int
    new_failed: int
    passed: bool | None = None
    message_has: tuple[str, ...] = ()
    spec: CanarySpec | None = None  # SPEC


CASES = {
    "not due: nothing changes": Case(20, 0, 29.9, window(), "Wait", 20, 0),
    "due and within bounds: step up": Case(20, 0, 30, window(), "Step", 40, 0, True, ("weight now 40%",)),
    "a step never passes maxWeight": Case(40, 0, 31, window(), "Step", 50, 0, True),
    "passed at maxWeight: promote": Case(50, 1, 30, window(), "Promote", 100, 1, True, ("promoting",)),
    "error rate over the bound: failed, held": Case(
        20, 0, 30, window(errors=2), "Hold", 20, 1, False, ("error rate 0.100 > maxErrorRate 0.05", "1/2")),
    "error rate at the bound passes": Case(20, 0, 30, window(errors=1), "Step", 40, 0, True),
    "p95 over the bound: failed": Case(20, 0, 30, window(p95=800), "Hold", 20, 1, False, ("p95 800 ms > maxP95",)),
    "threshold-th failure: roll back": Case(
        40, 1, 30, window(p95=800), "RollBack", 0, 2, False, ("rolling back", "2/2", "stable 100 requests")),
    "failures add up across passed checks (Flagger)": Case(40, 1, 30, window(), "Step", 50, 1, True),
    "every candidate request failed: no p95, failed": Case(
        20, 0, 30, window(requests=12, errors=12, p95=None), "Hold", 20, 1, False, ("p95 n/a",)),
    "too few candidate requests: held, counted neither way": Case(
        20, 1, 30, window(requests=9), "Hold", 20, 1, None, ("9 < minRequests 10",)),
    "figures unreadable: a failed check": Case(
        20, 1, 30, None, "RollBack", 0, 2, False, ("could not be read: HTTP 503",)),
    "no latency bound: only errors count": Case(
        20, 0, 30, window(p95=90000), "Step", 40, 0, True, spec=SPEC.model_copy(update={"max_p95_latency_ms": None})),
}


@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
def test_decide_canary(case: Case) -> None:
    now = T0 + timedelta(seconds=case.elapsed)
    spec = case.spec or SPEC
    d = canary.decide_canary(spec, case.weight, case.failed, T0, now, case.window, "HTTP 503")
    assert (d.action, d.weight, d.failed_checks) == (case.action, case.new_weight, case.new_failed)
    if case.action == "Wait":
        assert d.check is None and d.next_check_seconds == pytest.approx(30 - case.elapsed)
        return
    assert d.check is not None and d.check.passed is case.passed and d.check.weight == case.weight
    assert d.check.time == now and d.next_check_seconds == spec.interval_seconds
    for piece in case.message_has:
        assert piece in d.check.message, d.check.message
    if case.window is not None:
        assert d.check.requests == case.window.candidate.requests
        assert d.check.p95_latency_ms == case.window.candidate.p95_latency_ms
        assert d.check.stable_requests == STABLE.requests


def test_first_weight_is_one_step_capped_by_max() -> None:
    assert canary.first_weight(SPEC) == 20
    assert canary.first_weight(SPEC.model_copy(update={"step_weight": 80, "max_weight": 50})) == 50


def test_window_from_a_stats_answer() -> None:
    summary = {"now": 12.5, "models": {"m/2": {"requests": 4, "errors": 1, "p50_latency_ms": 10,
                                               "p95_latency_ms": 30.5}}}
    w = canary.window_from(summary, "m/2", "m/1")
    assert w is not None and w.now == 12.5
    assert w.candidate == ModelFigures(4, 1, 10.0, 30.5) and w.candidate.error_rate == 0.25
    assert w.stable == ModelFigures(0, 0, None, None)
    assert canary.window_from({"models": {}}, "m/2", "m/1") is None
