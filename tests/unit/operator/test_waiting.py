"""The two kinds of "cannot start" as tables: which reasons are waited out, the verdict on a set of
problems, the backoff, and the Warning rate limit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tuneloop.api.common import WaitStatus
from tuneloop.jobs import errors as job_errors
from tuneloop.operator.logic import waiting
from tuneloop.operator.logic.waiting import Problem

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


KINDS = {
    # the world: fixed without touching the spec
    "DataNotFound": "world",
    "BaseModelNotFound": "world",
    "RegistryNotConfigured": "world",
    "SecretNotFound": "world",
    "RayUnavailable": "world",
    "RegistryUnavailable": "world",
    # the spec: terminal until metadata.generation changes
    "InvalidSpec": "spec",
    "DataInvalid": "spec",
    "JobFailed": "spec",
    "SomethingNew": "spec",  # unknown reasons never loop
}


@pytest.mark.parametrize(("reason", "kind"), KINDS.items(), ids=list(KINDS))
def test_classify(reason: str, kind: str) -> None:
    assert waiting.classify(reason) == kind


def problem(reason: str, field: str = "spec.x") -> Problem:
    return Problem(field, f"{reason} here", reason)


BLOCKERS = {
    "nothing": ([], None),
    "data not there yet": ([problem("DataNotFound", "spec.dataset.uri")], ("world", "DataNotFound")),
    "base model not there yet": ([problem("BaseModelNotFound")], ("world", "BaseModelNotFound")),
    "no registry configured": ([problem("RegistryNotConfigured")], ("world", "RegistryNotConfigured")),
    "model and data missing: the model is named": (
        [problem("BaseModelNotFound"), problem("DataNotFound")], ("world", "BaseModelNotFound")),
    "registry before paths": ([problem("DataNotFound"), problem("RegistryNotConfigured")],
                              ("world", "RegistryNotConfigured")),
    "contradiction": ([problem("InvalidSpec")], ("spec", "InvalidSpec")),
    "a spec problem makes it terminal": ([problem("DataNotFound"), problem("InvalidSpec")], ("spec", "InvalidSpec")),
}


@pytest.mark.parametrize("case", list(BLOCKERS), ids=list(BLOCKERS))
def test_decide_blocker(case: str) -> None:
    problems, expected = BLOCKERS[case]
    blocker = waiting.decide_blocker(problems)
    assert (blocker and (blocker.kind, blocker.reason)) == expected or (blocker is None and expected is None)
    if blocker is not None:  # the message lists every problem with its field
        assert all(f"{p.field}: {p.message}" in blocker.message for p in problems)


BACKOFF = {  # (waited, base, max) -> delay
    "first look: base": ((0, 1, 8), 1),
    "waited less than base": ((0.5, 1, 8), 1),
    "waited 3: wait 3 more": ((3, 1, 8), 3),
    "capped": ((100, 1, 8), 8),
}


@pytest.mark.parametrize("case", list(BACKOFF), ids=list(BACKOFF))
def test_backoff_seconds(case: str) -> None:
    args, expected = BACKOFF[case]
    assert waiting.backoff_seconds(*args) == expected


def test_checks_back_off_exponentially_up_to_the_ceiling() -> None:
    now, previous, delays = 0.0, None, []
    for _ in range(8):
        wait = waiting.decide_wait(previous, "DataNotFound", at(now), 1, 8)
        delays.append(wait.requeue_seconds)
        previous, now = wait.status, now + wait.requeue_seconds
    assert delays == [1, 1, 2, 4, 8, 8, 8, 8]


def wait_status(reason: str = "DataNotFound", since: float = 0, warned: float | None = 0) -> WaitStatus:
    return WaitStatus(reason=reason, since=at(since), last_warning_time=at(warned) if warned is not None else None)


WARNINGS = {  # (previous, reason, now) -> warn, with a ceiling of 10 s
    "first check": ((None, "DataNotFound", 0), True),
    "same reason, soon after": ((wait_status(), "DataNotFound", 9.9), False),
    "same reason, a ceiling later": ((wait_status(), "DataNotFound", 10), True),
    "reason changed": ((wait_status(), "BaseModelNotFound", 1), True),
    "never warned (older status)": ((wait_status(warned=None), "DataNotFound", 1), True),
}


@pytest.mark.parametrize("case", list(WARNINGS), ids=list(WARNINGS))
def test_decide_warning(case: str) -> None:
    (previous, reason, now), expected = WARNINGS[case]
    assert waiting.decide_warning(previous, reason, at(now), 10) is expected


def test_a_new_reason_restarts_the_wait() -> None:
    wait = waiting.decide_wait(wait_status(since=0, warned=50), "BaseModelNotFound", at(60), 1, 8)
    assert wait.status == WaitStatus(reason="BaseModelNotFound", since=at(60), last_warning_time=at(60))
    assert wait.warn and wait.requeue_seconds == 1
    same = waiting.decide_wait(wait.status, "BaseModelNotFound", at(63), 1, 8)
    assert same.status.since == at(60) and not same.warn and same.status.last_warning_time == at(60)


def test_permanent_job_reasons_are_the_jobs_own() -> None:
    """The operator's copy of the job's "no retry helps" list is the job's list (the job's names)."""
    from_job = {job_errors.REASONS[code] for code in job_errors.PERMANENT}
    assert from_job == waiting.PERMANENT_JOB_REASONS
    assert waiting.permanent_job_reason("ModelNotFound") == "BaseModelNotFound"
    assert waiting.permanent_job_reason("DataNotFound") == "DataNotFound"
    assert waiting.permanent_job_reason("TrainingFailed") is None and waiting.permanent_job_reason(None) is None
