"""The job's own spec checks (the CRD's CEL rules repeated for a job started by hand) as a table:
which method, format and metric combinations run, and what a refused one is told."""

from __future__ import annotations

from typing import Any

import pytest

from tuneloop.api.finetune import FineTuneSpec
from tuneloop.jobs import train
from tuneloop.jobs.errors import ExitCode, JobError


def spec(method: str = "lora", fmt: str = "instruction", metrics: list[str] | None = None,
         promotion: str | None = None, gpus: int = 0) -> FineTuneSpec:
    evaluation: dict[str, Any] = {}
    if metrics is not None:
        evaluation = {"metrics": metrics, "promotion": {"metric": promotion or metrics[0]}}
    return FineTuneSpec.model_validate({
        "baseModel": {"uri": "file:///m"}, "method": method, "dataset": {"uri": "file:///d.jsonl", "format": fmt},
        "resources": {"gpus": gpus}, "evaluation": evaluation, "registry": {"modelName": "m"}})


@pytest.mark.parametrize("ok", [
    spec(),
    spec("dpo", "preference"),
    spec("dpo", "preference", ["preference_accuracy", "reward_margin", "exact_match"]),
    spec("lora", "text", ["perplexity", "loss"]),
    spec("full", "text", ["loss"]),
    spec("lora", "instruction", ["exact_match", "perplexity"], "perplexity"),
    spec("qlora", "chat", gpus=1),
], ids=["lora", "dpo", "dpo-preference-metrics", "text-lora", "text-full", "answer-perplexity", "qlora-gpu"])
def test_runnable_specs_pass(ok: FineTuneSpec) -> None:
    train.check_spec(ok)


@pytest.mark.parametrize(("bad", "code", "says"), [
    (spec("dpo", "instruction"), ExitCode.CONFIG_INVALID, "set it to preference"),
    (spec("lora", "preference"), ExitCode.CONFIG_INVALID, "only used by method dpo"),
    (spec("qlora", "text", ["perplexity"], gpus=1), ExitCode.CONFIG_INVALID, "lora or full"),
    (spec("lora", "text"), ExitCode.CONFIG_INVALID, "[perplexity, loss]"),
    (spec("lora", "instruction", ["exact_match", "preference_accuracy"]), ExitCode.CONFIG_INVALID, "need method dpo"),
    (spec("qlora", "instruction"), ExitCode.RESOURCES_UNAVAILABLE, "needs a CUDA GPU"),
], ids=["dpo-instruction", "preference-lora", "text-qlora", "text-default-metrics", "preference-metric-lora",
        "qlora-cpu"])
def test_refused_specs_name_the_fix(bad: FineTuneSpec, code: ExitCode, says: str) -> None:
    with pytest.raises(JobError) as e:
        train.check_spec(bad)
    assert e.value.code == code and says in e.value.message
