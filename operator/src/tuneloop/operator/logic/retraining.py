"""Guarded retraining: should this ModelDeployment ask its FineTune for a new run now?

Guards, in the order they are checked (the first that holds names the skip):
1. retraining enabled, and `quality.consecutiveBreaches` breaches in a row (else no trigger at all);
2. no retrain in flight — neither one this deployment asked for, nor any run of the FineTune;
3. the cooldown since the last request has passed;
4. fewer than `maxPerDay` requests in the last 24 h;
5. the GPU-hours of the last 24 h's retrains are under `maxGpuHoursPerDay`;
6. the breaching window holds at least `minFeedbackExamples` labelled feedback examples — what the retrain adds
   to its data. How many a window holds when the streak completes depends on how fast traffic and labels
   arrive, not only on the checks: on a slow day three checks in a row can breach on a few dozen;
7. approval: `Auto`, or `Manual` and the deployment carries
   `tuneloop.io/approve-retrain=<request id>` for the pending request.
Approval comes last so nobody is asked to approve a request a guard would refuse anyway.

The outcome is a request (its id goes to the FineTune as the `tuneloop.io/retrain-request` annotation;
the FineTune's spec is never changed), a pending approval (a new request id to approve), or a skip with
a reason and a message a person can act on. Pure: records and now in, decision out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from tuneloop.api import constants
from tuneloop.api.deployment import RetrainingSpec, RetrainRecord, RetrainState
from tuneloop.api.finetune import AttemptRecord, PromotionStatus
from tuneloop.operator.logic import cost

DAY = timedelta(hours=24)
# Requests that count against cooldown, daily cap and budget: they were sent to the FineTune.
SENT_STATES = frozenset({"Requested", "Running", "Succeeded", "NotPromoted", "Failed"})

# Skip reasons (Event reason and status message prefix).
SKIP_DISABLED = "RetrainingDisabled"
SKIP_NOT_ENOUGH_BREACHES = "NotEnoughBreaches"
SKIP_IN_FLIGHT = "RetrainInFlight"
SKIP_COOLDOWN = "Cooldown"
SKIP_DAILY_LIMIT = "DailyLimitReached"
SKIP_BUDGET = "GpuBudgetSpent"
SKIP_AWAITING_FEEDBACK = "AwaitingFeedback"
AWAITING_APPROVAL = "AwaitingApproval"
REQUEST_REASON = "QualityBreach"

Action = Literal["request", "await_approval", "skip"]


@dataclass(frozen=True)
class RetrainInput:
    spec: RetrainingSpec
    breaches_required: int  # spec.monitoring.quality.consecutiveBreaches
    consecutive_breaches: int
    history: Sequence[RetrainRecord]
    in_flight: str | None  # status.retrainInFlight
    fine_tune_running: bool  # the FineTune has a run going (launched by this deployment or by Git)
    approval: str | None  # the deployment's tuneloop.io/approve-retrain annotation value
    trigger: str  # what breached, e.g. "exact_match 0.31 < 0.50 for 3 checks; drift share 0.60"
    feedback_examples: int = 0  # the breaching window's labelled feedback as new training examples
    namespace: str = "default"
    name: str = "<name>"


@dataclass(frozen=True)
class RetrainDecision:
    action: Action
    reason: str
    message: str
    request_id: str | None = None


def run_outcome(phase: str | None, promotion: PromotionStatus | None) -> RetrainState:
    """How a finished retrain run ended for the deployment: promoted (Succeeded), kept challenger by the gate
    (NotPromoted: the old champion keeps serving), or Failed."""
    if phase != "Succeeded":
        return "Failed"
    return "Succeeded" if promotion is None or promotion.promoted else "NotPromoted"


def run_gpu_hours(attempts: Sequence[AttemptRecord], run: int | None, gpus_per_worker: int, workers: int) -> float:
    """GPU-hours of one run's attempts (what spec.retraining.maxGpuHoursPerDay counts)."""
    if run is None:
        return 0.0
    return round(sum(cost.attempt_gpu_hours(a.start_time, a.end_time, gpus_per_worker, workers)
                     for a in attempts if a.run == run), 6)


def request_id(history: Sequence[RetrainRecord], now: datetime) -> str:
    """A new request's id: its number in this deployment's history and the time (unique, sortable)."""
    return f"retrain-{len(history) + 1}-{now.strftime('%Y%m%dT%H%M%SZ')}"


def decide_retrain(inp: RetrainInput, now: datetime) -> RetrainDecision:
    spec = inp.spec
    if not spec.enabled:
        return RetrainDecision("skip", SKIP_DISABLED, "spec.retraining.enabled is false")
    if inp.consecutive_breaches < inp.breaches_required:
        return RetrainDecision("skip", SKIP_NOT_ENOUGH_BREACHES,
                               f"{inp.consecutive_breaches} of {inp.breaches_required} breaches in a row")
    if inp.in_flight or inp.fine_tune_running:
        what = f"retrain {inp.in_flight}" if inp.in_flight else "a run of the FineTune"
        return RetrainDecision("skip", SKIP_IN_FLIGHT, f"{what} is in flight; one at a time")

    sent = sorted((r for r in inp.history if r.state in SENT_STATES), key=lambda r: r.requested_at)
    if sent:
        ready_at = sent[-1].requested_at + timedelta(seconds=spec.cooldown_seconds)
        if now < ready_at:
            return RetrainDecision("skip", SKIP_COOLDOWN,
                                   f"last retrain {sent[-1].id} at {sent[-1].requested_at.isoformat()}; cooldown "
                                   f"{spec.cooldown_seconds}s ends at {ready_at.isoformat()}")
    today = [r for r in sent if now - r.requested_at < DAY]
    if len(today) >= spec.max_per_day:
        return RetrainDecision("skip", SKIP_DAILY_LIMIT,
                               f"{len(today)} retrain(s) in the last 24 h; spec.retraining.maxPerDay is "
                               f"{spec.max_per_day}")
    if spec.max_gpu_hours_per_day is not None:
        used = sum(r.gpu_hours or 0.0 for r in today)
        if used >= spec.max_gpu_hours_per_day:
            return RetrainDecision("skip", SKIP_BUDGET,
                                   f"retrains used {used:.2f} GPU-hours in the last 24 h; "
                                   f"spec.retraining.maxGpuHoursPerDay is {spec.max_gpu_hours_per_day:g}")

    if inp.feedback_examples < spec.min_feedback_examples:
        return RetrainDecision("skip", SKIP_AWAITING_FEEDBACK,
                               f"the breaching window holds {inp.feedback_examples} labelled feedback examples for the "
                               f"retrain; spec.retraining.minFeedbackExamples is {spec.min_feedback_examples}")

    if spec.approval == "Manual":
        pending = next((r for r in reversed(inp.history) if r.state == "PendingApproval"), None)
        if pending is not None and inp.approval == pending.id:
            return RetrainDecision("request", REQUEST_REASON, f"approved: {inp.trigger}", pending.id)
        rid = pending.id if pending is not None else request_id(inp.history, now)
        return RetrainDecision(
            "await_approval", AWAITING_APPROVAL,
            f"{inp.trigger}; approve with: kubectl annotate mdep {inp.name} -n {inp.namespace} "
            f"{constants.ANNOTATION_APPROVE_RETRAIN}={rid} --overwrite", rid)
    return RetrainDecision("request", REQUEST_REASON, inp.trigger, request_id(inp.history, now))
