"""The GPU runtime's application entry (Ray Serve LLM on vLLM with LoRA adapters), built from the spec:
field names as Ray 2.60's LLMConfig has them, what is refused, and how decide_deployment uses it. vLLM is
not installed here (GPU wheel), so LLMConfig itself cannot check the entry; it runs only on a GPU machine."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from tests.unit.operator.test_deploying import ADDRESS, MLFLOW, NOW, POLICY, found
from tuneloop.api import conditions as c
from tuneloop.api.deployment import ModelDeploymentSpec, ModelDeploymentStatus
from tuneloop.operator.logic import deploying, vllmconfig
from tuneloop.operator.logic.deploying import DeployObserved, PutApp, ServeApp

VLLM = {"adapterStoreUri": "s3://adapters/invoices/", "maxLoraRank": 8, "maxModelLen": 4096,
        "gpuMemoryUtilization": 0.85, "acceleratorType": "L4"}


def spec(vllm: dict[str, Any] | None = VLLM, gpus: int = 1, name: str = "inv", **serving: Any) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate({
        "model": {"name": name, "alias": "champion"},
        "serving": {"engine": "VLLM", "replicas": 2, "resources": {"gpus": gpus}, **({"vllm": vllm} if vllm else {}),
                    **serving}})


def test_the_llm_app_entry() -> None:
    app = vllmconfig.build_llm_app("ns", "md", spec(), "hf://Qwen/Qwen2.5-0.5B-Instruct")
    assert (app["name"], app["route_prefix"]) == ("ns.md", "/ns/md")
    assert app["import_path"] == "ray.serve.llm:build_openai_app"
    (llm,) = app["args"]["llm_configs"]
    assert llm["model_loading_config"] == {"model_id": "inv", "model_source": "Qwen/Qwen2.5-0.5B-Instruct"}
    assert llm["lora_config"] == {"dynamic_lora_loading_path": "s3://adapters/invoices",
                                  "max_num_adapters_per_replica": 16}
    assert llm["engine_kwargs"] == {"enable_lora": True, "max_lora_rank": 8, "max_loras": 16,
                                    "tensor_parallel_size": 1, "max_model_len": 4096, "gpu_memory_utilization": 0.85}
    assert llm["deployment_config"] == {"num_replicas": 2} and llm["accelerator_type"] == "L4"
    assert vllmconfig.request_model("inv", "3") == "inv:inv--v3"


@pytest.mark.parametrize(("base", "source"), [
    ("hf://org/model", "org/model"), ("s3://b/base/", {"bucket_uri": "s3://b/base"}),
    ("file:///models/tiny", "/models/tiny"), ("org/model", "org/model")])
def test_model_source(base: str, source: Any) -> None:
    assert vllmconfig.model_source(base) == source


@pytest.mark.parametrize(("s", "base", "named"), [
    (spec(), None, "baseModelSource"),
    (spec(), "pvc://models/base", "baseModelSource"),
    (spec(name="a:b"), "hf://o/m", "spec.model.name"),
    (spec(vllm={**VLLM, "baseModelSource": "org/other"}, gpus=0), "hf://o/m", "gpus"),
])
def test_refused(s: ModelDeploymentSpec, base: str | None, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        vllmconfig.build_llm_app("ns", "md", s, base)


def test_the_store_must_be_remote() -> None:
    with pytest.raises(ValidationError, match=r"adapter_store_uri|adapterStoreUri"):
        spec(vllm={"adapterStoreUri": "file:///tmp/adapters"})


def test_decide_deployment_serves_the_llm_app_and_an_alias_move_changes_no_config() -> None:
    s = spec(vllm={**VLLM, "baseModelSource": "org/base"})
    first = deploying.decide_deployment(DeployObserved("ns", "md", 1, s, ModelDeploymentStatus(), NOW, ADDRESS, MLFLOW,
                                                       found("2"), None, "http://127.0.0.1:8000"), POLICY)
    (action,) = first.actions
    assert isinstance(action, PutApp) and action.config == vllmconfig.build_llm_app("ns", "md", s, None)
    running = ServeApp("RUNNING", "", NOW.timestamp() + 1, action.config, ready_replicas=2)
    served = deploying.decide_deployment(DeployObserved("ns", "md", 1, s, first.status, NOW, ADDRESS, MLFLOW,
                                                        found("2"), running, "http://127.0.0.1:8000"), POLICY)
    assert served.status.served_version == "2" and served.actions == ()
    moved = deploying.decide_deployment(DeployObserved("ns", "md", 1, s, served.status, NOW, ADDRESS, MLFLOW,
                                                       found("3"), running, "http://127.0.0.1:8000"), POLICY)
    assert moved.actions == () and moved.status.served_version == "3"  # no warm-up, no canary, no PUT
    ready = c.get_condition(moved.status.conditions, c.READY)
    assert ready is not None and "request model inv:inv--v3" in ready.message
