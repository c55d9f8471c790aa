"""Two kinds of "cannot start", decided here for every kind: the spec's fault or the world's.

A problem of the spec itself (schema-valid but contradictory values, an unsupported combination, a
job error that no retry can fix) is terminal: reported once, nothing launched, until
`metadata.generation` changes. A problem of the world (a path that does not exist yet, an unset or
unreachable registry, a missing Secret, a Ray cluster that is not there) is a wait: the object says
what it waits on and is re-checked with exponential backoff, and the moment the world is fixed it
goes on without anyone touching the spec.

Nothing here knows a FineTune: problems come in as (field, message, reason), the wait is the shared
`api.common.WaitStatus`, so a ModelDeployment controller uses the same table.

Backoff is computed from how long the object has waited (`WaitStatus.since`), not from a counter:
waiting as long again as it has waited so far, clamped to [poll, max poll], re-checks at since + poll,
+2·poll, +4·poll, … — exponential, with no status write per check and nothing lost on a restart.
Warning events: one when the reason changes, then at most one per backoff ceiling.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from tuneloop.api import conditions as c
from tuneloop.api.common import WaitStatus

Kind = Literal["spec", "world"]

# Reasons that mean "the world is not ready yet": waited out. Every other reason that stops a start
# is the spec's fault and terminal. Order: the more fundamental first, when several apply at once.
WORLD_REASONS: tuple[str, ...] = (
    c.REASON_REGISTRY_NOT_CONFIGURED,
    c.REASON_SECRET_NOT_FOUND,
    c.REASON_BASE_MODEL_NOT_FOUND,
    c.REASON_DATA_NOT_FOUND,
    c.REASON_RAY_UNAVAILABLE,
    c.REASON_REGISTRY_UNAVAILABLE,
)

# Reasons of the training job's failure result (tuneloop.jobs.errors.PERMANENT) that no retry can fix:
# terminal for the run, reported under the job's own name. The job says ModelNotFound; the operator's
# name for that problem is BaseModelNotFound, so one problem has one name on the object.
PERMANENT_JOB_REASONS: frozenset[str] = frozenset({
    "UsageError", "ConfigInvalid", "MethodNotImplemented", "ResourcesUnavailable", "DataNotFound", "DataEmpty",
    "DataEncodingInvalid", "DataInvalid", "DataAllDuplicates", "EvalSetEmpty", "ModelNotFound",
})
JOB_REASON_NAMES: dict[str, str] = {"ModelNotFound": c.REASON_BASE_MODEL_NOT_FOUND}


@dataclass(frozen=True)
class Problem:
    """One thing that stops the object from starting."""

    field: str  # path as kubectl explain spells it, e.g. spec.dataset.uri
    message: str  # what is wrong and what to do
    reason: str = c.REASON_INVALID_SPEC


@dataclass(frozen=True)
class Blocker:
    """The verdict on a set of problems: its kind, the Ready reason and the message."""

    kind: Kind
    reason: str
    message: str


@dataclass(frozen=True)
class Wait:
    """The next state of a wait: what to store, whether to post a Warning, when to look again."""

    status: WaitStatus
    warn: bool
    requeue_seconds: float


def classify(reason: str) -> Kind:
    """`world` for a reason the world can fix by itself; `spec` for everything else."""
    return "world" if reason in WORLD_REASONS else "spec"


def permanent_job_reason(job_reason: str | None) -> str | None:
    """The object's reason for a job failure no retry can fix, or None when a retry may help."""
    if job_reason not in PERMANENT_JOB_REASONS:
        return None
    return JOB_REASON_NAMES.get(job_reason, job_reason)


def decide_blocker(problems: Sequence[Problem]) -> Blocker | None:
    """None when nothing stops a start. Any spec problem makes the whole verdict terminal (the user
    has to edit the spec anyway); the message lists every problem, world ones too, in field order."""
    if not problems:
        return None
    message = "; ".join(f"{p.field}: {p.message}" for p in problems)
    if any(classify(p.reason) == "spec" for p in problems):
        return Blocker("spec", c.REASON_INVALID_SPEC, message)
    reason = min((p.reason for p in problems), key=WORLD_REASONS.index)
    return Blocker("world", reason, message)


def backoff_seconds(waited_seconds: float, base_seconds: float, max_seconds: float) -> float:
    """Wait as long again as waited so far, at least `base`, at most `max`: exponential re-checks."""
    return min(max(waited_seconds, base_seconds), max_seconds)


def decide_warning(previous: WaitStatus | None, reason: str, now: datetime, ceiling_seconds: float) -> bool:
    """Post a Warning on a new reason, then at most once per `ceiling_seconds` while it lasts."""
    if previous is None or previous.reason != reason or previous.last_warning_time is None:
        return True
    return (now - previous.last_warning_time).total_seconds() >= ceiling_seconds


def decide_wait(previous: WaitStatus | None, reason: str, now: datetime, base_seconds: float,
                max_seconds: float) -> Wait:
    """The wait after a check that found `reason` still (or newly) in the way."""
    since = previous.since if previous is not None and previous.reason == reason else now
    warn = decide_warning(previous, reason, now, max_seconds)
    last_warning = now if warn else (previous.last_warning_time if previous is not None else None)
    waited = (now - since).total_seconds()
    return Wait(WaitStatus(reason=reason, since=since, last_warning_time=last_warning), warn,
                backoff_seconds(waited, base_seconds, max_seconds))
