"""The demo's decisions as tables: which stage a FineTune is in, stage wall times, the plain progress
line, the summary's facts, and the demo manifests (rendered, they must be valid FineTunes)."""

from __future__ import annotations

import pytest
import yaml

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
    assert set(rendered) == {demo.CHAMPION, demo.CHALLENGER}
    strong, weak = (FineTune.model_validate(rendered[n]) for n in (demo.CHAMPION, demo.CHALLENGER))
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
