"""The GPU runtime: a Ray Serve LLM application (vLLM engine, LoRA adapters) built from a ModelDeployment.

Pure: builds the ServeDeploySchema `applications[]` entry for `spec.serving.engine: VLLM`, the same
entry the ExistingCluster PUT sends and a RayService carries as serveConfigV2. Its `import_path` is
`ray.serve.llm:build_openai_app` and its `args` are `LLMServingArgs` (`llm_configs: [LLMConfig]`), field
names as in Ray 2.60's `ray.llm._internal.serve.core.configs.llm_config` (read from the installed
package: `LLMConfig.model_loading_config/engine_kwargs/lora_config/deployment_config/accelerator_type`,
`LoraConfig.dynamic_lora_loading_path/max_num_adapters_per_replica`). vLLM is not installed here, so the
entry is checked by shape, not by `LLMConfig` itself; it runs only where a GPU and vLLM are.

How versions are served: one base model per replica (`model_loading_config.model_id` = the registered
model name, which clients see), and each registered version is a LoRA adapter vLLM loads on its first
request from `<adapterStoreUri>/<model>--v<version>` (Ray's dynamic LoRA loading: the request's model
`<model>:<lora id>` names the folder after the colon; only s3/gs/abfss/azure stores are read). An alias
move therefore changes no config: the new version is a new model id in the requests. Publishing a
version's adapter under that prefix is not done by the operator yet.
"""

from __future__ import annotations

import re
from typing import Any

from tuneloop.api.deployment import ModelDeploymentSpec
from tuneloop.operator.logic import serveconfig

IMPORT_PATH = "ray.serve.llm:build_openai_app"
SERVER_PREFIX = "LLMServer:"  # the engine deployment's name: LLMServer:<model id> (ray.serve.llm's builder)
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def lora_id(model_name: str, version: str) -> str:
    """The adapter folder (and the part of the request's model id after the colon) for a version."""
    return f"{_SAFE.sub('_', model_name)}--v{version}"


def request_model(model_name: str, version: str) -> str:
    """The `model` a client sends to reach `version` (Ray Serve LLM: `<base model id>:<lora id>`)."""
    return f"{model_name}:{lora_id(model_name, version)}"


def model_source(base_uri: str) -> str | dict[str, str]:
    """A tuneloop base model URI as vLLM's `model_source`: a Hugging Face id, a local path, or a cloud
    mirror (`{"bucket_uri": ...}`) for an object-store prefix."""
    if base_uri.startswith("hf://"):
        return base_uri.removeprefix("hf://")
    if base_uri.startswith(("s3://", "gs://", "abfss://", "azure://")):
        return {"bucket_uri": base_uri.rstrip("/")}
    if base_uri.startswith("file://"):
        return base_uri.removeprefix("file://")
    if "://" in base_uri:
        raise ValueError(f"base model {base_uri!r}: vLLM loads a Hugging Face id, a local path or an s3://, gs://, "
                         "abfss:// or azure:// prefix; set spec.serving.vllm.baseModelSource")
    return base_uri


def build_llm_app(namespace: str, name: str, spec: ModelDeploymentSpec, base_uri: str | None) -> dict[str, Any]:
    """The application entry serving `spec.model.name`'s adapters on vLLM. `base_uri` is the served version's
    recorded base model, used when `spec.serving.vllm.baseModelSource` is unset."""
    serving, vllm = spec.serving, spec.serving.vllm
    if vllm is None:
        raise ValueError("spec.serving.engine VLLM needs spec.serving.vllm (adapterStoreUri)")
    if ":" in spec.model.name:
        raise ValueError(f"spec.model.name {spec.model.name!r}: Ray Serve LLM splits model ids at ':'; rename the "
                         "registered model")
    if serving.resources.gpus < 1:
        raise ValueError("spec.serving.engine VLLM needs spec.serving.resources.gpus >= 1")
    source = vllm.base_model_source or base_uri
    if not source:
        raise ValueError("the served version records no base model (tag tuneloop.base_model.uri); set "
                         "spec.serving.vllm.baseModelSource")
    engine_kwargs: dict[str, Any] = {
        "enable_lora": True, "max_lora_rank": vllm.max_lora_rank, "max_loras": vllm.max_adapters_per_replica,
        "tensor_parallel_size": serving.resources.gpus,
    }
    if vllm.max_model_len is not None:
        engine_kwargs["max_model_len"] = vllm.max_model_len
    if vllm.gpu_memory_utilization is not None:
        engine_kwargs["gpu_memory_utilization"] = vllm.gpu_memory_utilization
    llm_config: dict[str, Any] = {
        "model_loading_config": {"model_id": spec.model.name, "model_source": model_source(source)},
        "engine_kwargs": engine_kwargs,
        "lora_config": {"dynamic_lora_loading_path": vllm.adapter_store_uri.rstrip("/"),
                        "max_num_adapters_per_replica": vllm.max_adapters_per_replica},
        "deployment_config": {"num_replicas": serving.replicas},
        "runtime_env": serveconfig.RUNTIME_ENV,
    }
    if vllm.accelerator_type:
        llm_config["accelerator_type"] = vllm.accelerator_type
    return {
        "name": serveconfig.app_name(namespace, name),
        "route_prefix": serveconfig.route_prefix(namespace, name),
        "import_path": IMPORT_PATH,
        "args": {"llm_configs": [llm_config]},
    }
