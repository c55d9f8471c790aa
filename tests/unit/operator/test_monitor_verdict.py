"""decide_monitor_verdict as a table: drift over/under its threshold, quality breach and hysteresis on
recovery, the breach count, and windows that conclude nothing (no false alarm, no false recovery)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tuneloop.api import conditions as c
from tuneloop.api.deployment import MonitoringSpec
from tuneloop.operator.logic import monitor_verdict as mv

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
EARLIER = NOW - timedelta(hours=1)
SPEC = MonitoringSpec.model_validate({"minSamples": 100, "drift": {"shareThreshold": 0.5},
                                      "quality": {"metric": "exact_match", "minimum": 0.6, "recoveryMargin": 0.05,
                                                  "consecutiveBreaches": 3}})


def conds(drift: str | None = None, quality: str | None = None) -> list[c.Condition]:
    out: list[c.Condition] = []
    if drift:
        out = c.set_condition(out, c.DRIFT_DETECTED, drift, "X", "", EARLIER)  # type: ignore[arg-type]
    if quality:
        out = c.set_condition(out, c.QUALITY_DEGRADED, quality, "X", "", EARLIER)  # type: ignore[arg-type]
    return out


def w(drift_share: float | None = 0.2, quality: float | None = 0.9, samples: int = 500,
      insufficient: bool = False) -> mv.Window:
    return mv.Window(samples=samples, insufficient=insufficient, drift_share=drift_share, quality=quality)


# window, previous conditions, previous count -> DriftDetected, QualityDegraded, count, breach
CASES = {
    "healthy first check": (w(), conds(), 0, ("False", "False", 0, False)),
    "drift at the threshold is drift": (w(drift_share=0.5), conds(), 0, ("True", "False", 0, False)),
    "drift just under the threshold is not": (w(drift_share=0.49), conds("True"), 0, ("False", "False", 0, False)),
    "drift alone is not a breach": (w(drift_share=1.0), conds("True", "False"), 2, ("True", "False", 0, False)),
    "quality under the minimum breaches": (w(quality=0.59), conds("False", "False"), 0, ("False", "True", 1, True)),
    "breaches count up": (w(quality=0.2), conds("False", "True"), 2, ("False", "True", 3, True)),
    "quality at the minimum is fine when not degraded": (w(quality=0.6), conds("False", "False"), 0,
                                                         ("False", "False", 0, False)),
    "hysteresis: back at the minimum does not clear a breach": (w(quality=0.62), conds("False", "True"), 2,
                                                                ("False", "True", 3, True)),
    "hysteresis: minimum + margin clears it and resets the count": (w(quality=0.65), conds("False", "True"), 2,
                                                                     ("False", "False", 0, False)),
    "insufficient data keeps everything": (w(drift_share=None, quality=None, samples=12, insufficient=True),
                                           conds("True", "True"), 2, ("True", "True", 2, None)),
    "insufficient data on a new deployment is Unknown": (
        w(drift_share=None, quality=None, samples=12, insufficient=True), conds(), 0, ("Unknown", "Unknown", 0, None)),
    "unmeasured quality keeps the count and the condition": (w(quality=None), conds("False", "True"), 2,
                                                             ("False", "True", 2, None)),
    "unmeasured quality on a new deployment is Unknown": (w(quality=None), conds(), 0, ("False", "Unknown", 0, None)),
}


@pytest.mark.parametrize("case", CASES)
def test_decide_monitor_verdict(case: str) -> None:
    window, before, count, (drift, quality, new_count, breach) = CASES[case]
    v = mv.decide_monitor_verdict(window, SPEC, before, count, NOW, generation=4)
    got_drift = c.get_condition(v.conditions, c.DRIFT_DETECTED)
    got_quality = c.get_condition(v.conditions, c.QUALITY_DEGRADED)
    assert got_drift is not None and got_quality is not None
    assert (got_drift.status, got_quality.status, v.consecutive_breaches, v.breach) == (drift, quality, new_count,
                                                                                        breach)


def test_a_flip_is_reported_and_dated_a_steady_state_is_not() -> None:
    v = mv.decide_monitor_verdict(w(drift_share=0.8, quality=0.1), SPEC, conds("False", "False"), 0, NOW)
    assert set(v.flipped) == {c.DRIFT_DETECTED, c.QUALITY_DEGRADED}
    assert all(x.last_transition_time == NOW for x in v.conditions)
    again = mv.decide_monitor_verdict(w(drift_share=0.8, quality=0.1), SPEC, v.conditions, 1, NOW + timedelta(hours=1))
    assert again.flipped == () and all(x.last_transition_time == NOW for x in again.conditions)


def test_a_first_alarm_is_a_flip_a_first_all_clear_is_not() -> None:
    assert mv.decide_monitor_verdict(w(drift_share=0.8), SPEC, [], 0, NOW).flipped == (c.DRIFT_DETECTED,)
    assert mv.decide_monitor_verdict(w(), SPEC, [], 0, NOW).flipped == ()


def test_messages_name_the_figures() -> None:
    v = mv.decide_monitor_verdict(w(drift_share=0.6, quality=0.3), SPEC, [], 2, NOW)
    drift, quality = c.get_condition(v.conditions, c.DRIFT_DETECTED), c.get_condition(v.conditions, c.QUALITY_DEGRADED)
    assert drift is not None and "0.60 >= threshold 0.50" in drift.message and drift.reason == "DriftShareOverThreshold"
    assert quality is not None and "exact_match 0.300 < minimum 0.600" in quality.message
    assert "3 breach(es) in a row of 3" in quality.message and quality.observed_generation is None


def test_a_check_that_cannot_run_is_monitor_stale_and_changes_nothing_else() -> None:
    before = mv.decide_monitor_verdict(w(drift_share=0.8, quality=0.1), SPEC, [], 2, EARLIER)
    failed = mv.decide_monitor_failure(c.REASON_REGISTRY_UNAVAILABLE, "MLflow at http://mlflow:5000: connection "
                                       "refused", before.conditions, before.consecutive_breaches, NOW)
    stale = c.get_condition(failed.conditions, c.MONITOR_STALE)
    assert stale is not None and (stale.status, stale.reason) == ("True", "RegistryUnavailable")
    assert "connection refused" in stale.message and failed.flipped == (c.MONITOR_STALE,)
    assert failed.consecutive_breaches == 3 and (failed.drift, failed.breach) == (None, None)
    for type_ in (c.DRIFT_DETECTED, c.QUALITY_DEGRADED):
        assert c.get_condition(failed.conditions, type_) == c.get_condition(before.conditions, type_)
    # Failing again is no new flip; the next check that runs clears it, and that is one.
    again = mv.decide_monitor_failure(c.REASON_CHECK_FAILED, "boom", failed.conditions, 3, NOW + timedelta(hours=1))
    assert again.flipped == ()
    recovered = mv.decide_monitor_verdict(w(), SPEC, again.conditions, 3, NOW + timedelta(hours=2))
    stale = c.get_condition(recovered.conditions, c.MONITOR_STALE)
    assert stale is not None and (stale.status, stale.reason) == ("False", "CheckSucceeded")
    assert c.MONITOR_STALE in recovered.flipped


def test_an_insufficient_window_still_counts_as_a_check_that_ran() -> None:
    v = mv.decide_monitor_verdict(w(drift_share=None, quality=None, samples=3, insufficient=True), SPEC, [], 0, NOW)
    stale = c.get_condition(v.conditions, c.MONITOR_STALE)
    assert stale is not None and stale.status == "False"


def test_no_window_at_or_over_the_highest_breach_bar_breaches() -> None:
    """The bar the monitor writes feedback sets under: nothing at it breaches, whatever the conditions."""
    bar = mv.highest_breach_bar(SPEC.quality)
    assert bar == pytest.approx(0.65)
    for before in (conds(), conds(quality="False"), conds(quality="True")):
        assert mv.decide_monitor_verdict(w(quality=bar), SPEC, before, 2, NOW).breach is False
    assert mv.decide_monitor_verdict(w(quality=bar - 0.01), SPEC, conds(quality="True"), 2, NOW).breach is True
