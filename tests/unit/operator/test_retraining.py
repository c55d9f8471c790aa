"""decide_retrain as a table: breaches in a row, in flight, cooldown, daily cap, GPU-hour budget, the
breaching window's feedback and Manual approval, each guard with the case just inside and just outside it."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from tuneloop.api.deployment import RetrainingSpec, RetrainRecord
from tuneloop.operator.logic import retraining as r

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)


def rec(id_: str, hours_ago: float, state: str = "Succeeded", gpu_hours: float | None = None) -> RetrainRecord:
    return RetrainRecord(id=id_, state=state, requested_at=NOW - hours_ago * H, gpu_hours=gpu_hours)


SPEC = RetrainingSpec(enabled=True, cooldown_seconds=6 * 3600, max_per_day=2, max_gpu_hours_per_day=4.0)
BASE = r.RetrainInput(spec=SPEC, breaches_required=3, consecutive_breaches=3, history=[], in_flight=None,
                      fine_tune_running=False, approval=None, trigger="exact_match 0.20 < 0.50", namespace="ml",
                      name="invoices")


def manual(**kw: object) -> r.RetrainInput:
    return replace(BASE, spec=SPEC.model_copy(update={"approval": "Manual"}), **kw)  # type: ignore[arg-type]


CASES = {
    "breaches reached, nothing in the way: request": (BASE, "request", r.REQUEST_REASON),
    "disabled": (replace(BASE, spec=SPEC.model_copy(update={"enabled": False})), "skip", r.SKIP_DISABLED),
    "one breach short": (replace(BASE, consecutive_breaches=2), "skip", r.SKIP_NOT_ENOUGH_BREACHES),
    "more breaches than needed still requests": (replace(BASE, consecutive_breaches=7), "request", r.REQUEST_REASON),
    "our retrain in flight": (replace(BASE, in_flight="retrain-1"), "skip", r.SKIP_IN_FLIGHT),
    "a Git-started run in flight": (replace(BASE, fine_tune_running=True), "skip", r.SKIP_IN_FLIGHT),
    "inside the cooldown": (replace(BASE, history=[rec("a", 5.9)]), "skip", r.SKIP_COOLDOWN),
    "just past the cooldown": (replace(BASE, history=[rec("a", 6.01)]), "request", r.REQUEST_REASON),
    "a failed retrain also starts the cooldown": (replace(BASE, history=[rec("a", 1, "Failed")]), "skip",
                                                  r.SKIP_COOLDOWN),
    "a rejected (never sent) request does not": (replace(BASE, history=[rec("a", 1, "Rejected")]), "request",
                                                 r.REQUEST_REASON),
    "daily cap reached": (replace(BASE, history=[rec("a", 20), rec("b", 7)]), "skip", r.SKIP_DAILY_LIMIT),
    "older than 24 h do not count": (replace(BASE, history=[rec("a", 25), rec("b", 7)]), "request",
                                     r.REQUEST_REASON),
    "maxPerDay 0 never retrains": (replace(BASE, spec=SPEC.model_copy(update={"max_per_day": 0})), "skip",
                                   r.SKIP_DAILY_LIMIT),
    "GPU budget spent": (replace(BASE, spec=SPEC.model_copy(update={"max_per_day": 5}),
                                 history=[rec("a", 20, gpu_hours=2.5), rec("b", 7, gpu_hours=1.5)]), "skip",
                         r.SKIP_BUDGET),
    "GPU budget nearly spent": (replace(BASE, spec=SPEC.model_copy(update={"max_per_day": 5}),
                                        history=[rec("a", 20, gpu_hours=2.5), rec("b", 7, gpu_hours=1.4)]),
                                "request", r.REQUEST_REASON),
    "yesterday's GPU-hours are not today's": (replace(BASE, history=[rec("a", 30, gpu_hours=100)]), "request",
                                              r.REQUEST_REASON),
    "no budget set": (replace(BASE, spec=SPEC.model_copy(update={"max_gpu_hours_per_day": None, "max_per_day": 5}),
                              history=[rec("a", 7, gpu_hours=100)]), "request", r.REQUEST_REASON),
    "too little feedback in the breaching window": (
        replace(BASE, spec=SPEC.model_copy(update={"min_feedback_examples": 100}), feedback_examples=99), "skip",
        r.SKIP_AWAITING_FEEDBACK),
    "just enough feedback": (replace(BASE, spec=SPEC.model_copy(update={"min_feedback_examples": 100}),
                                     feedback_examples=100), "request", r.REQUEST_REASON),
    "no minimum: a window without feedback still retrains": (replace(BASE, feedback_examples=0), "request",
                                                              r.REQUEST_REASON),
    "a retrain in flight is named before the feedback": (
        replace(BASE, spec=SPEC.model_copy(update={"min_feedback_examples": 100}), in_flight="retrain-1"), "skip",
        r.SKIP_IN_FLIGHT),
    "Manual: nobody is asked to approve a retrain without enough feedback": (
        replace(manual(feedback_examples=10), spec=SPEC.model_copy(update={"approval": "Manual",
                                                                          "min_feedback_examples": 100})),
        "skip", r.SKIP_AWAITING_FEEDBACK),
    "Manual, nothing pending: ask": (manual(), "await_approval", r.AWAITING_APPROVAL),
    "Manual, pending, not approved: keep asking": (manual(history=[rec("p1", 1, "PendingApproval")]),
                                                   "await_approval", r.AWAITING_APPROVAL),
    "Manual, an old id approved: keep asking": (manual(history=[rec("p1", 1, "PendingApproval")], approval="p0"),
                                                "await_approval", r.AWAITING_APPROVAL),
    "Manual, pending approved: request": (manual(history=[rec("p1", 1, "PendingApproval")], approval="p1"),
                                          "request", r.REQUEST_REASON),
    "Manual approval does not bypass the cooldown": (
        manual(history=[rec("a", 2), rec("p1", 1, "PendingApproval")], approval="p1"), "skip", r.SKIP_COOLDOWN),
    "Manual approval does not bypass in flight": (
        manual(history=[rec("p1", 1, "PendingApproval")], approval="p1", fine_tune_running=True), "skip",
        r.SKIP_IN_FLIGHT),
}


@pytest.mark.parametrize("case", CASES)
def test_decide_retrain(case: str) -> None:
    inp, action, reason = CASES[case]
    decision = r.decide_retrain(inp, NOW)
    assert (decision.action, decision.reason) == (action, reason), decision.message
    assert (decision.request_id is not None) == (action != "skip")


def test_an_approved_request_keeps_the_id_that_was_approved() -> None:
    decision = r.decide_retrain(manual(history=[rec("p1", 1, "PendingApproval")], approval="p1"), NOW)
    assert decision.request_id == "p1"


def test_awaiting_approval_gives_the_exact_annotate_line_and_a_stable_id() -> None:
    first = r.decide_retrain(manual(), NOW)
    assert "kubectl annotate mdep invoices -n ml tuneloop.io/approve-retrain=" + str(first.request_id) in first.message
    pending = [RetrainRecord(id=str(first.request_id), state="PendingApproval", requested_at=NOW)]
    later = r.decide_retrain(manual(history=pending), NOW + H)
    assert later.request_id == first.request_id


def test_skips_say_when_and_why() -> None:
    d = r.decide_retrain(replace(BASE, history=[rec("a", 2)]), NOW)
    assert (NOW + 4 * H).isoformat() in d.message
    d = r.decide_retrain(replace(BASE, spec=SPEC.model_copy(update={"max_per_day": 5}),
                                 history=[rec("a", 20, gpu_hours=4.0)]), NOW)
    assert "4.00 GPU-hours" in d.message and "maxGpuHoursPerDay is 4" in d.message
    d = r.decide_retrain(replace(BASE, spec=SPEC.model_copy(update={"min_feedback_examples": 120}),
                                 feedback_examples=75), NOW)
    assert "holds 75 labelled feedback examples" in d.message and "minFeedbackExamples is 120" in d.message


def test_request_ids_are_unique_per_request() -> None:
    a = r.decide_retrain(BASE, NOW).request_id
    b = r.decide_retrain(replace(BASE, history=[rec(str(a), 30)]), NOW + H).request_id
    assert a != b
