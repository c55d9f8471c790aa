"""Condition setters: lastTransitionTime moves only when status flips; inputs are never mutated."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tuneloop.api import conditions as c

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


@pytest.mark.parametrize(
    ("name", "before", "status", "reason", "expect_time"),
    [
        ("new condition gets now", None, "False", c.REASON_PENDING, T1),
        ("same status keeps time, reason may change", "False", "False", c.REASON_TRAINING, T0),
        ("flip moves time", "False", "True", c.REASON_SUCCEEDED, T1),
        ("unknown to true moves time", "Unknown", "True", c.REASON_SUCCEEDED, T1),
    ],
)
def test_set_condition_transition_time(name, before, status, reason, expect_time):
    start = [] if before is None else c.set_condition([], c.READY, before, c.REASON_PENDING, "", T0)
    out = c.set_condition(start, c.READY, status, reason, "msg", T1, observed_generation=2)
    ready = c.get_condition(out, c.READY)
    assert ready is not None
    assert ready.last_transition_time == expect_time, name
    assert ready.reason == reason and ready.observed_generation == 2
    assert len(out) == 1


def test_set_condition_does_not_mutate_and_keeps_others():
    start = c.set_condition([], c.READY, "False", c.REASON_PENDING, "", T0)
    start = c.set_condition(start, c.SUSPENDED, "False", c.REASON_PENDING, "", T0)
    snapshot = [x.model_copy() for x in start]
    out = c.set_condition(start, c.READY, "True", c.REASON_SUCCEEDED, "", T1)
    assert start == snapshot
    assert [x.type for x in out] == [c.READY, c.SUSPENDED]
    assert c.remove_condition(out, c.READY)[0].type == c.SUSPENDED


def test_long_messages_are_truncated():
    out = c.set_condition([], c.READY, "False", c.REASON_JOB_FAILED, "x" * 5000, T0)
    assert len(out[0].message) == c.MAX_MESSAGE_CHARS
    assert out[0].message.endswith("(truncated)")


def test_condition_dumps_as_metav1_condition():
    out = c.set_condition([], c.READY, "True", c.REASON_SUCCEEDED, "done", T0, observed_generation=3)
    assert out[0].to_k8s() == {
        "type": "Ready",
        "status": "True",
        "reason": "Succeeded",
        "message": "done",
        "lastTransitionTime": "2026-11-22T10:00:00Z",
        "observedGeneration": 3,
    }
