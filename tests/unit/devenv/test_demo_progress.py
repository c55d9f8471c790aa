"""The demo's decisions as tables: which stage a FineTune is in, stage wall times, the plain progress
line, the summary's facts, the serving burst's figures and promise, and the demo manifests (rendered,
they must be valid FineTunes and a valid ModelDeployment)."""

from __future__ import annotations

import pytest
import yaml

from tuneloop.api.deployment import ModelDeployment
from tuneloop.api.finetune import FineTune
from tuneloop.devenv import demo
from tuneloop.devenv import demo_progress as dp


def obs(phase: str | None, stage: str | None = None, losses=(), **status) -> dp.Observation:
    return dp.Observation(name="ft", status={"phase": phase, **status}, epochs_total=4, run_stage=stage,
                          losses=losses)


@pytest.mark.parametrize(("case", "observation", "expected"), [
    ("no status yet", obs(None), "queued"),
    ("pending", obs("Pending"), "queued"),
    ("launching", obs("Launching"), "queued"),
    ("running, no MLflow run yet: the job is preparing data", obs("Running"), "data"),
    ("running, job says training", obs("Running", "training"), "training"),
    ("running, epochs logged but stage tag not seen", obs("Running", None, (1.2,)), "training"),
    ("running, evaluating", obs("Running", "evaluating", (1.2, 0.4)), "evaluation"),
    ("running, logging the model counts as evaluation's tail", obs("Running", "logging_model"), "evaluation"),
    ("job done, operator not yet registering", obs("Running", "succeeded"), "evaluation"),
    ("registering", obs("Registering", "succeeded"), "registration"),
    ("succeeded", obs("Succeeded", "succeeded"), "done"),
    ("failed", obs("Failed", "training"), "done"),
])
def test_stage_of(case, observation, expected):
    assert dp.stage_of(observation) == expected, case


def test_timeline_fills_skipped_stages_and_measures_each():
    t = dp.Timeline()
    t.see("queued", 0.0)
    t.see("training", 10.0)  # data preparation was never seen between two looks
    t.see("evaluation", 40.0)
    t.see("done", 55.0)
    assert t.seconds() == {"queued": 10.0, "data": 0.0, "training": 30.0, "evaluation": 15.0, "registration": 0.0}


def test_timeline_keeps_the_first_sighting():
    t = dp.Timeline()
    t.see("training", 5.0)
    t.see("training", 9.0)
    assert t.started["training"] == 5.0


def test_progress_line_names_phase_reason_run_and_epoch():
    o = obs("Running", "training", (1.5, 0.25), run={"number": 1, "attempt": 2},
            conditions=[{"type": "Ready", "status": "False", "reason": "Training"}])
    assert dp.progress_line(o) == ("ft: phase Running (Training) run 1 attempt 2 stage training "
                                   "epoch 2/4 train_loss 0.2500")


def test_losses_from_history_orders_by_epoch_and_takes_the_last_value_per_step():
    assert dp.losses_from_history([(2, 0.5), (1, 1.0), (2, 0.4)]) == [1.0, 0.4]


STATUS = {
    "phase": "Succeeded",
    "dataset": {"hash": "abc", "totalRows": 412, "trainRows": 340, "evalRows": 60, "duplicatesRemoved": 12,
                "piiRedactions": {"email": 50, "phone": 50}},
    "metrics": {"field_f1": 0.98, "exact_match": 0.9},
    "baselineMetrics": {"field_f1": 0.2, "exact_match": 0.0},
    "model": {"name": "m", "version": "1", "alias": "champion", "uri": "models:/m/1"},
    "promotion": {"promoted": True, "metric": "field_f1", "candidate": 0.98, "baseline": 0.2,
                  "message": "beats the baseline by 0.78"},
    "cost": {"gpuHours": 0.0, "estimatedUsd": 0.0},
}


def test_summarize_carries_every_fact_the_demo_prints():
    s = dp.summarize(STATUS)
    assert s["phase"] == "Succeeded"
    assert s["dataset"] == {"rows": 412, "duplicatesRemoved": 12, "piiRedactions": {"email": 50, "phone": 50},
                            "trainRows": 340, "heldOutRows": 60, "hash": "abc"}
    assert s["metrics"]["field_f1"] == 0.98 and s["baselineMetrics"]["field_f1"] == 0.2
    assert s["gate"]["promoted"] is True and s["gate"]["why"] == "beats the baseline by 0.78"
    assert s["model"]["version"] == "1" and s["model"]["alias"] == "champion"


def test_summarize_falls_back_to_the_promoted_condition_message():
    status = {**STATUS, "promotion": {"promoted": False, "metric": "field_f1"},
              "conditions": [{"type": "Promoted", "status": "False", "message": "missed by 0.5"}]}
    assert dp.summarize(status)["gate"]["why"] == "missed by 0.5"


def test_check_refuses_a_demo_whose_weaker_run_took_the_alias():
    good = dp.summarize(STATUS)
    bad = dp.summarize({**STATUS, "model": {**STATUS["model"], "version": "2"}})
    with pytest.raises(demo.DemoFailed, match="challenger"):
        demo.check({demo.CHAMPION: good, demo.CHALLENGER: bad})
    demo.check({demo.CHAMPION: good,
                demo.CHALLENGER: dp.summarize({**STATUS, "model": {**STATUS["model"], "alias": "challenger"}})})


def test_demo_manifests_render_into_valid_finetunes():
    rendered = demo.render_manifests({"BASE_MODEL_URI": "file:///models/base", "DATASET_URI": "file:///data/x.jsonl",
                                      "RAY_ADDRESS": "http://127.0.0.1:8265"})
    assert set(rendered) == {demo.CHAMPION, demo.CHALLENGER, demo.DEPLOYMENT}
    strong, weak = (FineTune.model_validate(rendered[n]) for n in (demo.CHAMPION, demo.CHALLENGER))
    md = ModelDeployment.model_validate(rendered[demo.DEPLOYMENT])
    # It serves what the first FineTune registers, as champion, on the demo's Ray head.
    assert (md.spec.model.name, md.spec.model.alias) == (strong.spec.registry.model_name, "champion")
    assert md.spec.serving.mode == "ExistingCluster" and md.spec.serving.address == "http://127.0.0.1:8265"
    assert md.spec.fine_tune_ref is not None and md.spec.fine_tune_ref.name == demo.CHAMPION
    assert all(rendered[n]["kind"] in demo.PLURALS for n in rendered)
    assert strong.spec.registry.model_name == weak.spec.registry.model_name
    assert strong.spec.evaluation.promotion.metric == "field_f1"
    # The weaker run is weaker by construction, not by luck.
    assert weak.spec.training.epochs < strong.spec.training.epochs and weak.spec.lora.rank < strong.spec.lora.rank
    assert "${" not in yaml.safe_dump(rendered)


def test_rich_view_shows_the_status_table_and_a_bar_per_stage():
    import io

    from rich.console import Console

    from tuneloop.devenv import demo_view

    out = io.StringIO()
    view = demo_view.RichView(Console(file=out, force_terminal=True, width=160))
    view.step("control plane ready")
    view.base_model(350, 350, 0.91)
    view.update([obs("Running", "training", (1.5, 0.25), run={"number": 1, "attempt": 1},
                     conditions=[{"type": "Ready", "status": "False", "reason": "Training"}])])
    view.close()
    text = out.getvalue()
    for expected in ("control plane ready", "Pre-training the base model", "PHASE", "READY REASON", "Running",
                     "Training", "ft · data preparation", "ft · training", "epoch 2/4 loss 0.2500",
                     "ft · evaluation", "ft · registration"):
        assert expected in text, expected


def test_plain_view_prints_a_line_only_when_something_changed(capsys):
    from tuneloop.devenv import demo_view

    view = demo_view.PlainView()
    o = obs("Running", "training", (1.5,), run={"number": 1, "attempt": 1})
    view.update([o])
    view.update([o])
    view.update([obs("Running", "training", (1.5, 0.5), run={"number": 1, "attempt": 1})])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "epoch 1/4" in lines[0] and "epoch 2/4" in lines[1]


@pytest.mark.parametrize(("values", "q", "expected"), [
    ([], 50, None),
    ([7.0], 95, 7.0),
    ([4.0, 1.0, 3.0, 2.0], 50, 2.0),  # nearest rank: ceil(4 * 0.5) = 2nd
    ([float(v) for v in range(1, 21)], 95, 19.0),  # ceil(20 * 0.95) = 19th
    ([float(v) for v in range(1, 21)], 50, 10.0),
    ([float(v) for v in range(1, 21)], 100, 20.0),
    ([5.0, 1.0], 0, 1.0),
])
def test_percentile_is_a_measured_value(values, q, expected):
    assert dp.percentile(values, q) == expected


SERVING = {"phase": "Serving", "servedVersion": "1", "endpoint": "http://127.0.0.1:8000/tuneloop-demo/x",
           "conditions": [{"type": "Ready", "status": "True", "reason": "Serving"}]}


@pytest.mark.parametrize(("case", "status", "version", "expected"), [
    ("serving the version", SERVING, "1", True),
    ("serving, any version", SERVING, None, True),
    ("serving another version", SERVING, "2", False),
    ("rolling out", {**SERVING, "rollout": {"version": "2"}}, "1", False),
    ("Ready False", {**SERVING, "conditions": [{"type": "Ready", "status": "False", "reason": "Deploying"}]}, "1",
     False),
    ("no endpoint yet", {**SERVING, "endpoint": None}, "1", False),
    ("no status", {}, None, False),
])
def test_serving_ready(case, status, version, expected):
    assert dp.serving_ready(status, version) is expected, case


def test_serving_line_names_phase_reason_and_versions():
    assert dp.serving_line("md", {**SERVING, "rollout": {"version": "2"}}) == (
        "md: phase Serving (Serving) serving version 1 rolling out version 2")
    assert dp.serving_line("md", {}) == "md: phase -"


def test_summarize_serving_counts_failures_and_measures_answered_requests_only():
    answers = [dp.Answer(200, float(ms), "1") for ms in range(10, 200, 10)]  # 19 answered: 10..190 ms
    answers.append(dp.Answer(0, 120_000.0, error="TimeoutError: timed out"))
    s = dp.summarize_serving("md", SERVING, answers)
    assert (s["requests"], s["answered"], s["failures"]) == (20, 19, 1)
    assert (s["p50Ms"], s["p95Ms"]) == (100.0, 190.0)  # the timeout is not a latency
    assert s["endpoint"] == SERVING["endpoint"] and s["servedVersion"] == "1" and s["answeredBy"] == ["1"]
    assert s["firstFailure"] == "HTTP 0: TimeoutError: timed out"


def test_summarize_serving_with_nothing_answered_has_no_latency():
    s = dp.summarize_serving("md", {}, [dp.Answer(503, 5.0, error="busy")])
    assert (s["answered"], s["failures"], s["p50Ms"], s["p95Ms"]) == (0, 1, None, None)


def serving_summary(**override):
    answers = [dp.Answer(200, 40.0 + i, "1") for i in range(20)]
    return {**dp.summarize_serving("md", SERVING, answers), **override}


@pytest.mark.parametrize(("case", "summary", "error"), [
    ("all answered by the champion", serving_summary(), None),
    ("serves another version", serving_summary(servedVersion="2"), "should serve champion version 1"),
    ("a request failed", serving_summary(failures=1, answered=19, firstFailure="HTTP 503: busy"), "1 of 20"),
    ("no request sent", serving_summary(requests=0, answered=0), "of 0 requests"),
    ("answered by another version", serving_summary(answeredBy=["1", "2"]), "answered by versions"),
])
def test_check_serving(case, summary, error):
    if error is None:
        demo.check_serving(summary, "1")
    else:
        with pytest.raises(demo.DemoFailed, match=error):
            demo.check_serving(summary, "1")


def test_burst_prompts_are_held_out_invoices():
    from tuneloop.devenv import tinymodel

    prompts = demo.burst_prompts()
    trained = {r["prompt"] for r in tinymodel.invoice_examples(demo.DATASET_ROWS, seed=demo.DATASET_SEED,
                                                               pii_every=demo.PII_EVERY)}
    assert len(prompts) == demo.BURST_REQUESTS == len(set(prompts))
    assert not set(prompts) & trained


def test_summary_shows_the_serving_figures(capsys):
    from tuneloop.devenv import demo_view

    summary = {**serving_summary(), "readySeconds": 42.0}
    demo_view.print_summary({}, {"namespace": "tuneloop-demo", "kubectl_mdep": "NAME  PHASE\nmd    Serving"},
                            plain=True, serving=summary)
    text = capsys.readouterr().out
    for expected in ("md: Serving", SERVING["endpoint"], "served version", "requests", "failures", "p50 latency",
                     "p95 latency", "49 ms", "58 ms", "ready 42s after apply", "kubectl get mdep", "md    Serving"):
        assert expected in text, expected
