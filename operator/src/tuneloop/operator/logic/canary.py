"""The canary decision: after each interval, step the candidate's share of traffic up, promote it, or roll
it back, from the figures the serving application counted for it.

`decide_canary(spec, weight, failed_checks, last_check_time, now, window) -> CanaryDecision` is pure.
Flagger's rules (https://docs.flagger.app/usage/deployment-strategies#canary-release):
- a check runs once per `intervalSeconds`; before that, nothing changes (`Wait`);
- a check passes when the candidate's error rate is at most `maxErrorRate` and, when set, its p95
  latency at most `maxP95LatencyMs`; a passed check adds `stepWeight` up to `maxWeight`, and a passed
  check at `maxWeight` promotes the candidate;
- failed checks add up (they are not reset by a passed one, as in Flagger); the `threshold`-th rolls
  back: the stable version takes all traffic again;
- a window with fewer than `minRequests` candidate requests concludes nothing (`Hold`, counted
  neither way), so a quiet hour never promotes nor rolls back an untested version;
- figures that cannot be read count as a failed check: the stats come from the same application that
  serves the stable path, and falling back to it is the safe side.

Where the figures come from: `GET /v1/stats` of the application (tuneloop.serving.traffic_stats), each
version's completions routed through the Ingress since the last check, on the application's clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from tuneloop.api.deployment import CanaryCheck, CanarySpec
from tuneloop.serving.traffic_stats import ModelFigures, model_figures

Action = Literal["Wait", "Hold", "Step", "Promote", "RollBack"]


@dataclass(frozen=True)
class CanaryWindow:
    """What the serving application counted since the last check."""

    now: float  # the application's clock when read: the next window's start
    candidate: ModelFigures
    stable: ModelFigures


@dataclass(frozen=True)
class CanaryDecision:
    action: Action
    weight: int  # the candidate's percentage from now on (100 promote, 0 roll back)
    failed_checks: int
    check: CanaryCheck | None  # None: no check was due
    next_check_seconds: float  # until the next check is due


def window_from(summary: dict[str, Any], candidate_id: str, stable_id: str) -> CanaryWindow | None:
    """The window from a `GET /v1/stats` answer; None when it has no clock (not this application's answer)."""
    now = summary.get("now")
    if not isinstance(now, int | float) or isinstance(now, bool):
        return None
    return CanaryWindow(float(now), model_figures(summary, candidate_id), model_figures(summary, stable_id))


def first_weight(spec: CanarySpec) -> int:
    return min(spec.step_weight, spec.max_weight)


def _fmt(value: float | None, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:.0f}{unit}" if unit else f"{value:.3f}"


def _describe(w: CanaryWindow) -> str:
    c, s = w.candidate, w.stable
    return (f"candidate {c.requests} requests, {c.errors} failed (error rate {_fmt(c.error_rate)}), p95 "
            f"{_fmt(c.p95_latency_ms, ' ms')}; stable {s.requests} requests, p95 {_fmt(s.p95_latency_ms, ' ms')}")


def decide_canary(spec: CanarySpec, weight: int, failed_checks: int, last_check_time: datetime, now: datetime,
                  window: CanaryWindow | None, read_error: str = "") -> CanaryDecision:
    elapsed = (now - last_check_time).total_seconds()
    if elapsed < spec.interval_seconds:
        return CanaryDecision("Wait", weight, failed_checks, None, spec.interval_seconds - elapsed)
    interval = float(spec.interval_seconds)
    check = CanaryCheck(time=now, weight=weight)
    if window is None:
        reason = f"the candidate's figures could not be read: {read_error or 'no answer'}"
    else:
        c = window.candidate
        check = check.model_copy(update={
            "requests": c.requests, "errors": c.errors, "error_rate": c.error_rate if c.requests else None,
            "p95_latency_ms": c.p95_latency_ms, "stable_requests": window.stable.requests,
            "stable_p95_latency_ms": window.stable.p95_latency_ms})
        figures = _describe(window)
        if c.requests < spec.min_requests:
            check.message = (f"too few candidate requests to judge ({c.requests} < minRequests {spec.min_requests}); "
                             f"weight held at {weight}%: {figures}")
            return CanaryDecision("Hold", weight, failed_checks, check, interval)
        breaches = []
        if c.error_rate > spec.max_error_rate:
            breaches.append(f"error rate {c.error_rate:.3f} > maxErrorRate {spec.max_error_rate:g}")
        if spec.max_p95_latency_ms is not None and (c.p95_latency_ms is None
                                                    or c.p95_latency_ms > spec.max_p95_latency_ms):
            breaches.append(f"p95 {_fmt(c.p95_latency_ms, ' ms')} > maxP95LatencyMs {spec.max_p95_latency_ms:g}")
        if not breaches:
            check.passed = True
            if weight >= spec.max_weight:
                check.message = f"check passed at maxWeight {weight}%, promoting: {figures}"
                return CanaryDecision("Promote", 100, failed_checks, check, interval)
            step = min(weight + spec.step_weight, spec.max_weight)
            check.message = f"check passed at {weight}%, weight now {step}%: {figures}"
            return CanaryDecision("Step", step, failed_checks, check, interval)
        reason = f"{'; '.join(breaches)} ({figures})"
    check.passed = False
    failed = failed_checks + 1
    if failed >= spec.threshold:
        check.message = f"check failed at {weight}% ({failed}/{spec.threshold}), rolling back: {reason}"
        return CanaryDecision("RollBack", 0, failed, check, interval)
    check.message = f"check failed at {weight}% ({failed}/{spec.threshold}), weight held: {reason}"
    return CanaryDecision("Hold", weight, failed, check, interval)
