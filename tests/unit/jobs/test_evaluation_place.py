"""Where a job's evaluation runs: a CPU job scores in its own (driver) process, with no Ray task and no
Ray at all; the modules it needs can be imported ahead, in the background, while training runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tuneloop.jobs import evaluating


@pytest.fixture(scope="module")
def request_(tmp_path_factory: pytest.TempPathFactory) -> evaluating.EvalRequest:
    from tuneloop.devenv import tinymodel

    root = tmp_path_factory.mktemp("eval-place")
    model = tinymodel.build_model(root / "model", hidden_size=32, layers=2, heads=2)
    rows = [{"key": str(i), "prompt": f"Invoice {i}", "completion": json.dumps({"total": i})} for i in range(4)]
    for name in ("train.jsonl", "held_out.jsonl"):
        (root / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return evaluating.EvalRequest(
        base_model_dir=str(model), trained_dir=str(model), method="full", train_path=str(root / "train.jsonl"),
        held_out_path=str(root / "held_out.jsonl"), metrics=("exact_match", "field_f1", "loss"), max_new_tokens=4,
        max_examples=3, baseline_enabled=True, baseline_shots=1, max_seq_length=64,
        predictions_path=str(root / "evaluation" / "predictions.jsonl"))


def test_a_cpu_job_evaluates_in_its_own_process_without_ray(request_: evaluating.EvalRequest) -> None:
    outcome = evaluating.evaluate(request_, gpus=0)
    assert outcome.examples == 3
    assert set(outcome.metrics) == set(outcome.baseline_metrics) == {"exact_match", "field_f1", "loss"}
    assert outcome.metrics["loss"] > 0
    rows = Path(request_.predictions_path).read_text().splitlines()
    assert len(rows) == 3 and all("prediction" in json.loads(r) for r in rows)
    ray = sys.modules.get("ray")
    assert ray is None or not ray.is_initialized(), "a CPU job's evaluation must not start or join Ray"


def test_warm_up_imports_what_evaluation_and_model_logging_need() -> None:
    thread = evaluating.warm_up()
    thread.join(timeout=600)
    assert not thread.is_alive() and thread.daemon
    assert {"peft", "transformers", "mlflow.pyfunc"} <= set(sys.modules)
