"""From one monitor check to the ModelDeployment's conditions and breach count, with hysteresis.

- DriftDetected is True while the drift share is at or over `drift.shareThreshold`.
- QualityDegraded turns True when the quality metric falls under `quality.minimum` and clears only at
  `minimum + recoveryMargin` or over: a metric wobbling around the minimum does not flap the condition.
- A breach is a window whose quality is degraded (after hysteresis); `consecutiveBreaches` counts them in
  a row. A healthy measured window resets the count. Drift alone is not a breach: retraining adds the
  labelled feedback, so it is quality that a retrain can fix; drift is reported and alerted on.
- A window that concluded nothing (fewer requests than minSamples, or too little feedback for the
  metric) changes nothing: conditions keep their last conclusive status (Unknown when there was none),
  and the count neither grows nor resets — no false alarm, and no false recovery.
- MonitorStale is False after any check that ran, and True with the cause when one could not run (the
  reference or the traffic log unreadable, MLflow down, the check failing): the other conditions and the
  count keep what the last check that ran said.

Pure: the check's figures come in as plain numbers (`Window`), so this module needs neither the monitor
library nor Evidently.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from tuneloop.api import conditions as c
from tuneloop.api.deployment import MonitoringSpec, QualitySpec


@dataclass(frozen=True)
class Window:
    """What one check found (from tuneloop.monitoring's summary)."""

    samples: int
    insufficient: bool  # verdict InsufficientData
    drift_share: float | None
    quality: float | None  # the spec's metric; None when not measured


@dataclass(frozen=True)
class MonitorVerdict:
    conditions: list[c.Condition]
    consecutive_breaches: int
    drift: bool | None  # None: not concluded on this window
    breach: bool | None
    flipped: tuple[str, ...]  # condition types whose status changed, or that appeared True (each an Event)


def breach_bar(quality: QualitySpec, degraded: bool) -> float:
    """A window breaches below this: the minimum, or minimum + recoveryMargin while QualityDegraded is True."""
    return quality.minimum + quality.recovery_margin if degraded else quality.minimum


def highest_breach_bar(quality: QualitySpec) -> float:
    """No window at or over this can breach, so none can trigger a retrain (the monitor writes a window's
    feedback set only below it)."""
    return breach_bar(quality, degraded=True)


def decide_monitor_verdict(window: Window, spec: MonitoringSpec, conditions: list[c.Condition],
                           consecutive_breaches: int, now: datetime, generation: int | None = None) -> MonitorVerdict:
    out = list(conditions)
    before = _statuses(conditions)

    def keep_or_unknown(type_: str, reason: str, message: str) -> None:
        nonlocal out
        if c.get_condition(out, type_) is None:
            out = c.set_condition(out, type_, "Unknown", reason, message, now, generation)

    drift: bool | None = None
    breach: bool | None = None
    count = consecutive_breaches
    if window.insufficient:
        message = f"{window.samples} requests in the window, fewer than minSamples {spec.min_samples}"
        keep_or_unknown(c.DRIFT_DETECTED, c.REASON_INSUFFICIENT_DATA, message)
        keep_or_unknown(c.QUALITY_DEGRADED, c.REASON_INSUFFICIENT_DATA, message)
    else:
        threshold = spec.drift.share_threshold
        if window.drift_share is not None:
            drift = window.drift_share >= threshold
            out = c.set_condition(
                out, c.DRIFT_DETECTED, "True" if drift else "False",
                c.REASON_DRIFT_OVER_THRESHOLD if drift else c.REASON_NO_DRIFT,
                f"drift share {window.drift_share:.2f} {'>=' if drift else '<'} threshold {threshold:.2f} "
                f"on {window.samples} requests", now, generation)
        q = spec.quality
        if window.quality is None:
            keep_or_unknown(c.QUALITY_DEGRADED, c.REASON_QUALITY_NOT_MEASURED,
                            f"{q.metric} could not be measured on the window (too little feedback)")
        else:
            was_degraded = before[c.QUALITY_DEGRADED] == "True"
            bar = breach_bar(q, was_degraded)
            breach = window.quality < bar
            count = count + 1 if breach else 0
            if breach:
                why = (f"{q.metric} {window.quality:.3f} < minimum {q.minimum:.3f}" if window.quality < q.minimum else
                       f"{q.metric} {window.quality:.3f} has not recovered to minimum + margin {bar:.3f}")
            else:
                name = "minimum + margin" if was_degraded else "minimum"
                why = f"{q.metric} {window.quality:.3f} >= {name} {bar:.3f}"
            out = c.set_condition(
                out, c.QUALITY_DEGRADED, "True" if breach else "False",
                c.REASON_QUALITY_BELOW_MINIMUM if breach else c.REASON_QUALITY_OK,
                f"{why}; {count} breach(es) in a row of {q.consecutive_breaches} before retraining", now, generation)
    out = c.set_condition(out, c.MONITOR_STALE, "False", c.REASON_CHECK_SUCCEEDED,
                          f"last check at {now.isoformat()} on {window.samples} requests", now, generation)
    # A first appearance is a flip only when it raises the alarm.
    flipped = tuple(t for t, status in before.items() if (x := c.get_condition(out, t)) is not None
                    and x.status != status and (status is not None or x.status == "True"))
    return MonitorVerdict(conditions=out, consecutive_breaches=count, drift=drift, breach=breach, flipped=flipped)


def decide_monitor_failure(reason: str, message: str, conditions: list[c.Condition], consecutive_breaches: int,
                           now: datetime, generation: int | None = None) -> MonitorVerdict:
    """A check that could not run: MonitorStale True with `reason` (REASON_REFERENCE_UNAVAILABLE,
    REASON_TRAFFIC_LOG_UNAVAILABLE, REASON_REGISTRY_UNAVAILABLE or REASON_CHECK_FAILED); nothing else changes."""
    before = _statuses(conditions)
    out = c.set_condition(conditions, c.MONITOR_STALE, "True", reason, message, now, generation)
    flipped = (c.MONITOR_STALE,) if before[c.MONITOR_STALE] != "True" else ()
    return MonitorVerdict(conditions=out, consecutive_breaches=consecutive_breaches, drift=None, breach=None,
                          flipped=flipped)


def _statuses(conditions: list[c.Condition]) -> dict[str, str | None]:
    return {t: (x.status if (x := c.get_condition(conditions, t)) else None)
            for t in (c.DRIFT_DETECTED, c.QUALITY_DEGRADED, c.MONITOR_STALE)}
