"""The model side of a job: finding the base model (file://, pvc://, s3://, or the local Hugging Face
cache for hf:// — nothing is downloaded), loading it with its tokenizer, and making it trainable for
the spec's method: LoRA adapters (peft), full fine-tuning, or QLoRA (a 4-bit base through
bitsandbytes, CUDA only). Also loads a trained result back for evaluation and saves it.

Everything here runs where the weights are needed — in Ray Train workers and the evaluation task —
so the imports of torch, transformers and peft stay inside the functions.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneloop.jobs import datasets
from tuneloop.jobs.errors import ExitCode, JobError

# Full fine-tuning keeps fp32 weights, gradients and two Adam moments per parameter: ~16 bytes each.
FULL_MAX_PARAMS_ENV = "TUNELOOP_FULL_MAX_PARAMS"
DEFAULT_FULL_MAX_PARAMS = 3_000_000_000


@dataclass(frozen=True)
class ModelOptions:
    """What the workers need to build the trainable model (plain data: it crosses to Ray workers)."""

    model_dir: str
    method: str
    lora_rank: int
    lora_alpha: int
    lora_dropout: float
    lora_target_modules: tuple[str, ...]
    precision: str  # auto, bf16, fp16, fp32
    seed: int


def resolve_model_dir(uri: str, revision: str | None, cache_dir: Path) -> Path:
    """A local folder holding config.json and the tokenizer for the base model URI."""
    if uri.startswith("hf://"):
        repo = uri[len("hf://"):]
        try:
            from huggingface_hub import snapshot_download

            path = Path(snapshot_download(repo_id=repo, revision=revision, local_files_only=True))
        except Exception as e:
            raise JobError(ExitCode.MODEL_NOT_FOUND,
                           f"spec.baseModel.uri {uri}: not in the local Hugging Face cache "
                           f"(HF_HOME={os.environ.get('HF_HOME', '~/.cache/huggingface')}); the job downloads "
                           "nothing: pre-populate the cache in the image or a volume, or use pvc:// or s3://") from e
    elif uri.startswith("s3://"):
        path = _copy_s3_model(uri, cache_dir)
    else:
        local = datasets.local_path(uri)
        if local is None:
            raise JobError(ExitCode.CONFIG_INVALID, f"spec.baseModel.uri {uri}: unsupported scheme")
        path = local
    if not (path / "config.json").is_file():
        raise JobError(ExitCode.MODEL_NOT_FOUND,
                       f"spec.baseModel.uri {uri}: {path} holds no config.json; point it at a folder saved with "
                       "save_pretrained (model weights and tokenizer)")
    return path


def _copy_s3_model(uri: str, cache_dir: Path) -> Path:
    from pyarrow import fs

    target = cache_dir / "base-model"
    if (target / "config.json").is_file():
        return target
    location = datasets.resolve(uri)
    tmp = cache_dir / "base-model.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        fs.copy_files(location.path, str(tmp), source_filesystem=location.filesystem,
                      destination_filesystem=fs.LocalFileSystem())
    except Exception as e:
        raise JobError(ExitCode.MODEL_NOT_FOUND, f"spec.baseModel.uri {uri}: copying from S3 failed: {e}") from e
    tmp.rename(target)
    return target


def compute_dtype(precision: str, on_cuda: bool) -> Any:
    """The autocast dtype: bf16 on GPUs that support it when precision is auto."""
    import torch

    if not on_cuda or precision == "fp32":
        return torch.float32
    if precision == "fp16":
        return torch.float16
    if precision == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def load_tokenizer(model_dir: str | Path) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.eos_token_id is None:
        raise JobError(ExitCode.MODEL_NOT_FOUND, f"{model_dir}: the tokenizer has no EOS token; set eos_token")
    return tokenizer


def load_trainable(options: ModelOptions, device: Any) -> Any:
    """The model to train on `device`: base plus adapters (lora, qlora, dpo) or the whole model (full)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(options.seed)  # same adapter init on every rank (DDP also broadcasts rank 0's)
    on_cuda = getattr(device, "type", "cpu") == "cuda"
    if options.method == "qlora":
        return _load_qlora(options, device)
    dtype = compute_dtype(options.precision, on_cuda)
    # A frozen base can live in the compute dtype; fully trained weights stay fp32 (autocast does the rest).
    load_dtype = dtype if options.method in ("lora", "dpo") and dtype != torch.float16 else torch.float32
    model = AutoModelForCausalLM.from_pretrained(options.model_dir, dtype=load_dtype)
    if options.method == "full":
        n_params = sum(p.numel() for p in model.parameters())
        limit = int(os.environ.get(FULL_MAX_PARAMS_ENV, DEFAULT_FULL_MAX_PARAMS))
        if n_params > limit:
            raise JobError(ExitCode.CONFIG_INVALID,
                           f"spec.method full: the base model has {n_params:,} parameters, more than the "
                           f"{limit:,} allowed for full fine-tuning ({FULL_MAX_PARAMS_ENV}); use method lora")
        return model.to(device)
    return _add_lora(model, options).to(device)


def _add_lora(model: Any, options: ModelOptions) -> Any:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=options.lora_rank, lora_alpha=options.lora_alpha, lora_dropout=options.lora_dropout,
                        target_modules=list(options.lora_target_modules), task_type="CAUSAL_LM")
    try:
        return get_peft_model(model, config)
    except ValueError as e:
        raise JobError(ExitCode.CONFIG_INVALID,
                       f"spec.lora.targetModules {list(options.lora_target_modules)}: {e}") from e


def _load_qlora(options: ModelOptions, device: Any) -> Any:
    import torch

    if getattr(device, "type", "cpu") != "cuda" or not torch.cuda.is_available():
        raise JobError(ExitCode.RESOURCES_UNAVAILABLE,
                       "spec.method qlora loads the base model in 4-bit through bitsandbytes, which needs a CUDA "
                       "GPU, and this worker has none; set spec.resources.gpus >= 1 or use method lora")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as e:
        raise JobError(ExitCode.RESOURCES_UNAVAILABLE,
                       "spec.method qlora needs the bitsandbytes package in the worker image "
                       "(pip install 'tuneloop[gpu]')") from e
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    dtype = compute_dtype(options.precision, True)
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=dtype)
    model = AutoModelForCausalLM.from_pretrained(options.model_dir, quantization_config=quant,
                                                 device_map={"": device.index or 0}, dtype=dtype)
    model = prepare_model_for_kbit_training(model)
    return _add_lora(model, options)


def trainable_state(model: Any) -> dict[str, Any]:
    """The parameters that training changes (adapters, or everything for full), by name, on CPU."""
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: Any, state: dict[str, Any]) -> None:
    missing = set(state) - {n for n, _ in model.named_parameters()}
    if missing:
        raise JobError(ExitCode.TRAINING_FAILED,
                       f"checkpoint does not fit this model (e.g. {sorted(missing)[:3]}); the spec changed "
                       "since the checkpoint was written: start a new run (new --storage)")
    model.load_state_dict(state, strict=False)


def save_trained(model: Any, tokenizer: Any, directory: Path) -> None:
    """Write the adapter (or the full model) and the tokenizer: what MLflow logs and evaluation loads."""
    model.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))


def load_for_inference(base_dir: str | Path, trained_dir: str | Path | None, method: str, device: Any) -> Any:
    """The base model (trained_dir None) or the trained one, in eval mode on `device`."""
    import torch
    from transformers import AutoModelForCausalLM

    on_cuda = getattr(device, "type", "cpu") == "cuda"
    dtype = compute_dtype("auto", on_cuda) if on_cuda else torch.float32
    model: Any
    if trained_dir is not None and method == "full":
        model = AutoModelForCausalLM.from_pretrained(str(trained_dir), dtype=dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=dtype)
        if trained_dir is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(trained_dir))
    return model.to(device).eval()
