"""What the FineTune decision reads and what it returns: `Observed` + `Policy` in, `Plan` out.

Kept apart from `reconciling` (the state machine) so the clients and handlers that build and carry
these values do not depend on how the decision is made. Plain frozen dataclasses: no I/O, no SDKs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from tuneloop.api.finetune import FineTuneSpec, FineTuneStatus
from tuneloop.api.results import JobResult
from tuneloop.operator.logic.launching import Target
from tuneloop.operator.logic.observing import JobObservation
from tuneloop.operator.logic.waiting import Problem

# --- inputs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """Administrator settings the decision depends on."""

    poll_seconds: float = 10.0
    max_poll_seconds: float = 120.0  # backoff ceiling of waits, and of their Warning events
    storage_root: str = "/var/lib/tuneloop"
    default_active_deadline_seconds: int = 86400
    deadline_grace_seconds: float = 60.0
    result_grace_seconds: float = 300.0
    alias_recheck_seconds: float = 600.0
    gpu_prices: dict[str, float] = field(default_factory=lambda: {"default": 2.5})
    operator_version: str = "0.0.0"


@dataclass(frozen=True)
class VersionInfo:
    """A registered model version as MLflow reports it."""

    name: str
    version: str
    run_id: str | None = None
    source: str | None = None
    aliases: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ResultLookup:
    """The job's result document, if found, and where it was looked for."""

    result: JobResult | None
    where: str


@dataclass(frozen=True)
class Observed:
    """Everything the decision reads. The reconciler fills only what the phase needs."""

    namespace: str
    name: str
    uid: str
    generation: int
    spec: FineTuneSpec
    status: FineTuneStatus
    now: datetime
    retrain_request: str | None = None
    retrain_reason: str | None = None  # the tuneloop.io/retrain-reason annotation sent with the request
    retrain_data: str | None = None  # the tuneloop.io/retrain-data annotation: `<request id>: <uri>`
    recheck: bool = False  # first look since the operator started: re-check a spec verdict once
    problems: tuple[Problem, ...] = ()
    job: JobObservation | None = None
    failure: JobResult | None = None  # result document of a failed attempt, when one was written
    result: ResultLookup | None = None
    version: VersionInfo | None = None  # the version registered for (uid, run)
    champion: VersionInfo | None = None
    challenger: VersionInfo | None = None
    aliases_read: bool = False  # champion/challenger were read for a Succeeded object's re-check


# --- outputs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Launch:
    target: Target


@dataclass(frozen=True)
class StopJob:
    mode: str
    run: int
    attempt: int
    rayjob_name: str | None
    submission_id: str | None
    address: str | None


@dataclass(frozen=True)
class RegisterVersion:
    model_name: str
    source: str
    run_id: str | None
    tags: dict[str, str]
    description: str


@dataclass(frozen=True)
class SetAlias:
    model_name: str
    alias: str
    version: str


@dataclass(frozen=True)
class NudgeFineTune:
    """Wake another FineTune (annotation patch) so it re-reads its alias: its version lost `champion`."""

    namespace: str
    name: str
    value: str


Action = Launch | StopJob | RegisterVersion | SetAlias | NudgeFineTune


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class Plan:
    """What to do: actions first, then write `status` if it changed, then emit `events`."""

    status: FineTuneStatus
    actions: tuple[Action, ...] = ()
    events: tuple[Event, ...] = ()
    requeue_seconds: float | None = None  # None: nothing to poll, wait for a change
    again: bool = False  # observe and decide again at once (the next step is ready)
