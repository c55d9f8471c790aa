"""The demo's closed-loop figures as tables: Q0/Q1/Q2 on the version that served each phase, and the promise
(the drift hurts by at least 0.2; the retrain wins back 90% of it) failing when it is not kept."""

from __future__ import annotations

import pytest

from tuneloop.devenv import demo_loop as loop
from tuneloop.devenv import tinymodel


def answers(version: str, *f1s: float | None, status: int = 200) -> list[loop.LoopAnswer]:
    return [loop.LoopAnswer(status, version if status == 200 else None, f1, labelled=True) for f1 in f1s]


def summary(q0: list[loop.LoopAnswer], q1: list[loop.LoopAnswer], q2: list[loop.LoopAnswer],
            before: str = "1", after: str = "3") -> dict:
    return loop.summarize_loop({"inDistribution": q0, "drifted": q1, "recovery": q2},
                               {"before": before, "after": after}, {}, {})


def test_quality_is_the_mean_f1_of_answered_requests_of_that_version() -> None:
    mixed = answers("1", 1.0, 0.5) + answers("3", 0.0) + answers("1", None, status=503)
    assert loop.quality(mixed, "1") == 0.75
    assert loop.quality(mixed) == 0.5
    assert loop.quality(answers("1", None, status=0)) is None
    assert loop.quality(answers("1", None)) == 0.0  # answered but unscorable counts as 0


CASES = {
    # (Q0 answers, Q1 answers, Q2 answers, versions) -> error substring (None: the promise holds)
    "recovered past the target": ([0.97], [0.5], [0.96], ("1", "3"), None),
    "exactly the target": ([1.0], [0.5], [0.95], ("1", "3"), None),
    "short of the target": ([1.0], [0.5], [0.9], ("1", "3"), "did not recover"),
    "drift did not hurt enough": ([0.9], [0.75], [0.9], ("1", "3"), "did not hurt enough"),
    "no new version": ([0.97], [0.5], [0.96], ("1", "1"), "did not replace"),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_check_loop(case: str) -> None:
    q0, q1, q2, (before, after), error = CASES[case]
    s = summary(answers(before, *q0), answers(before, *q1), answers(after, *q2), before, after)
    if error is None:
        loop.check_loop(s)
    else:
        with pytest.raises(ValueError, match=error):
            loop.check_loop(s)


def test_a_recovery_miss_names_the_feedback_to_replay() -> None:
    s = summary(answers("1", 1.0), answers("1", 0.5), answers("3", 0.9))
    s["retrain"] = {"feedbackUri": "file:///w/traffic/feedback-sets/d/ab.jsonl",
                    "feedbackMix": {"inDistribution": 20, "drifted": 105, "other": 0}}
    with pytest.raises(ValueError, match=r"did not recover.*'drifted': 105.*file:///w/traffic/feedback-sets/d/ab"
                                         r"\.jsonl.*retrain_spread\.py --feedback"):
        loop.check_loop(s)
    s["retrain"] = {}  # the file was not readable here: the miss is still reported
    with pytest.raises(ValueError, match=r"did not recover: Q2 0.9 < Q1 \+ 0.9\(Q0 - Q1\) = 0.9500$"):
        loop.check_loop(s)


MIX_CASES = {
    # feedback prompts -> mix
    "both phases": (["a1", "d1", "d2"], {"inDistribution": 1, "drifted": 2, "other": 0}),
    "a prompt no phase sent": (["d1", "scrubbed <EMAIL>"], {"inDistribution": 0, "drifted": 1, "other": 1}),
    "no feedback": ([], {"inDistribution": 0, "drifted": 0, "other": 0}),
}


@pytest.mark.parametrize("case", list(MIX_CASES), ids=list(MIX_CASES))
def test_feedback_mix(case: str) -> None:
    prompts, mix = MIX_CASES[case]
    phases = {"inDistribution": [{"prompt": "a1"}, {"prompt": "a2"}], "drifted": [{"prompt": "d1"}, {"prompt": "d2"}]}
    assert loop.feedback_mix([{"prompt": p, "completion": "{}"} for p in prompts], phases) == mix


def test_a_failed_request_breaks_the_promise() -> None:
    s = summary(answers("1", 0.97), answers("1", 0.5) + answers("1", None, status=502), answers("3", 0.96))
    assert s["failures"] == 1 and s["requests"] == {"inDistribution": 1, "drifted": 2, "recovery": 1}
    with pytest.raises(ValueError, match="1 requests of the loop failed"):
        loop.check_loop(s)


def test_q2_counts_only_the_new_versions_answers() -> None:
    s = summary(answers("1", 0.97), answers("1", 0.5), answers("1", 0.5) + answers("3", 1.0))
    assert s["q2"] == 1.0 and s["q2Target"] == pytest.approx(0.5 + 0.9 * 0.47)


def test_the_drifted_layout_is_new_and_keeps_the_values_verbatim() -> None:
    drifted = tinymodel.drifted_invoice_examples(20, seed=3)
    original = {r["prompt"].split("\n", 1)[1][:8] for r in tinymodel.invoice_examples(200, seed=3)}
    assert all(r["prompt"].split("\n", 1)[1][:8] not in original for r in drifted)
    import json
    for r in drifted:
        fields = json.loads(r["completion"])
        assert all(str(v) in r["prompt"] for v in fields.values())
    assert tinymodel.drifted_invoice_examples(5, seed=3) == drifted[:5]


MONITOR_LINES = {
    "no check yet": ({}, "monitor: no check yet"),
    "a quiet check": ({"lastMonitor": {"samples": 40, "driftShare": 0.2, "quality": 0.93}},
                      "monitor: 40 requests in the window, drift share 0.20, field_f1 0.930, breaches 0"),
    "a retrain asked": ({"lastMonitor": {"samples": 99}, "consecutiveBreaches": 3, "retrainInFlight": "retrain-1"},
                        "monitor: 99 requests in the window, drift share -, field_f1 -, breaches 3, "
                        "retrain retrain-1 requested"),
    "a retrain held for feedback": (
        {"lastMonitor": {"samples": 120, "driftShare": 0.4, "quality": 0.53, "feedback": {"examples": 75}},
         "consecutiveBreaches": 4, "conditions": [{"type": "Retraining", "status": "False",
                                                   "reason": "AwaitingFeedback"}]},
        "monitor: 120 requests in the window, drift share 0.40, field_f1 0.530, breaches 4, "
        "retrain waits for labelled feedback (75 examples in the window)"),
    "another skip is not named here": (
        {"lastMonitor": {"samples": 120}, "conditions": [{"type": "Retraining", "reason": "Cooldown"}]},
        "monitor: 120 requests in the window, drift share -, field_f1 -, breaches 0"),
}


@pytest.mark.parametrize("case", MONITOR_LINES)
def test_monitor_line(case: str) -> None:
    status, line = MONITOR_LINES[case]
    assert loop.monitor_line(status) == line
