"""Benchmark (GPU machines): a 1B-class Llama built from a config, trained with LoRA, QLoRA and full
fine-tuning at bf16, in the job's Ray Train loop and in a plain single-process loop; tokens/s, peak GPU
memory and MFU (jobs.throughput: model FLOPs per token x tokens/s / the GPU's bf16 peak).

Nothing is downloaded: the weights are random (throughput does not depend on them), the tokenizer is
trained locally, the data is packed synthetic text (format text), so every step sees full
`--seq-len` blocks. Both sides run the same blocks in the same order, one GPU, the same batch size.

    make bench-train-gpu            # or: .venv/bin/python bench/bench_train_gpu.py --out bench/results/train-gpu.json
        [--methods lora,qlora,full] [--seq-len 2048] [--batch-size 4] [--steps 30] [--no-ray]

Needs CUDA (and bitsandbytes for qlora: `pip install 'tuneloop[gpu]'`); exits 2 with a message otherwise.
`--device cpu --tiny` runs the same code on a tiny shape in fp32 as a smoke test of the bench itself (its
figures mean nothing).
Goals from issue 12: LoRA MFU >= 0.35 on an H100, Ray/plain tokens/s >= 0.95.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from tuneloop.api.finetune import DatasetSpec
from tuneloop.devenv import tinymodel
from tuneloop.jobs import datasets, modeling, throughput, training

# Llama 3.2 1B's shape (tied embeddings), and a tiny one for the CPU smoke run.
SHAPE = throughput.LlamaShape(hidden=2048, layers=16, intermediate=8192, vocab=128256, heads=32, kv_heads=8)
TINY = throughput.LlamaShape(hidden=64, layers=2, intermediate=128, vocab=512, heads=4, kv_heads=2)
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LORA_RANK = 16


def build_model(directory: Path, shape: throughput.LlamaShape, device: str) -> Path:
    """Random weights in `shape` (bf16 on CUDA) and a locally trained tokenizer, saved like a hub model."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = tinymodel.build_tokenizer(directory, vocab_size=min(4096, shape.vocab))
    config = LlamaConfig(vocab_size=shape.vocab, hidden_size=shape.hidden, intermediate_size=shape.intermediate,
                         num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
                         num_key_value_heads=shape.kv_heads, max_position_embeddings=8192, tie_word_embeddings=True,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config)
    if device == "cuda":
        model = model.to(torch.bfloat16)
    model.save_pretrained(str(directory))
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return directory


def corpus(n: int) -> list[dict[str, str]]:
    return [{"text": f"{r['prompt']}\n{r['completion']}"} for r in tinymodel.invoice_examples(n, seed=11)]


def loop_config(model_dir: Path, prepared: datasets.Prepared, method: str, args: argparse.Namespace
                ) -> training.LoopConfig:
    return training.LoopConfig(
        model=modeling.ModelOptions(model_dir=str(model_dir), method=method, lora_rank=LORA_RANK,
                                    lora_alpha=2 * LORA_RANK, lora_dropout=0.0, lora_target_modules=TARGETS,
                                    precision=args.precision, seed=0),
        train_path=str(prepared.train_path), held_out_path=str(prepared.held_out_path), epochs=1,
        learning_rate=1e-5, batch_size=args.batch_size, gradient_accumulation_steps=1,
        max_seq_length=args.seq_len, warmup_ratio=0.0, weight_decay=0.0, seed=0, dataset_format="text")


def plain_loop(cfg: training.LoopConfig, steps: int, warmup_steps: int, device_name: str) -> dict[str, float]:
    """The reference: the job's model, blocks, collate and loss in one process, no Ray, no DDP."""
    import contextlib

    import torch

    device = torch.device(device_name)
    on_cuda = device.type == "cuda"
    if on_cuda:
        torch.cuda.reset_peak_memory_stats(device)
    else:
        torch.set_num_threads(1)  # as a Ray worker with num_cpus=1
    tokenizer = modeling.load_tokenizer(cfg.model.model_dir)
    model = modeling.load_trainable(cfg.model, device)
    blocks = training.encode_examples(tokenizer, datasets.read_prepared(Path(cfg.train_path)), cfg.max_seq_length,
                                      "text")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate)
    model.train()

    def autocast() -> Any:
        return torch.autocast("cuda", dtype=torch.bfloat16) if cfg.model.precision == "bf16" \
            else contextlib.nullcontext()

    tokens, started = 0, 0.0
    for step in range(warmup_steps + steps):
        if step == warmup_steps:
            if on_cuda:
                torch.cuda.synchronize()
            started, tokens = time.perf_counter(), 0
        i = (step * cfg.batch_size) % max(1, len(blocks) - cfg.batch_size)
        batch = {k: v.to(device) for k, v in
                 training.collate(blocks[i: i + cfg.batch_size], tokenizer.pad_token_id).items()}
        loss_sum, n = training._loss_sum(model, batch, autocast)
        (loss_sum / max(n, 1)).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += int(batch["attention_mask"].sum())
    if on_cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if on_cuda else 0.0
    del model, optimizer
    if on_cuda:
        torch.cuda.empty_cache()
    return {"tokens": tokens, "seconds": seconds, "tokens_per_second": tokens / seconds, "peak_gpu_mb": peak}


def ray_loop(cfg: training.LoopConfig, storage: Path, gpus: int) -> dict[str, float]:
    """The job's own loop on one Ray Train GPU worker: tokens/s measured inside the loop (checkpoint and
    report excluded), peak GPU memory as the worker saw it."""
    training.init_ray()
    outcome = training.fit(cfg, 1, gpus, storage)
    h = outcome.history[-1]
    return {"tokens": h["train_tokens"], "seconds": h["train_loop_seconds"],
            "tokens_per_second": h["train_tokens_per_second"], "peak_gpu_mb": h.get("worker_peak_gpu_mb", 0.0)}


def summarise(shape: throughput.LlamaShape, method: str, run: dict[str, float], seq_len: int,
              peak: float | None) -> dict[str, float]:
    adapter = 0 if method == "full" else throughput.lora_params(shape, LORA_RANK, TARGETS)
    per_token = throughput.train_flops_per_token(shape, seq_len, method, adapter)
    out = {**run, "flops_per_token": per_token}
    if peak:
        out["mfu"] = throughput.mfu(run["tokens_per_second"], per_token, peak)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "train-gpu.json")
    p.add_argument("--methods", default="lora,qlora,full")
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--steps", type=int, default=30, help="timed steps of the plain loop (after 3 warm-up steps)")
    p.add_argument("--no-ray", action="store_true", help="only the plain loop")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: a smoke run of the bench itself")
    p.add_argument("--tiny", action="store_true", help="a tiny model shape instead of the 1B one (smoke run)")
    args = p.parse_args()
    args.precision = "bf16" if args.device == "cuda" else "fp32"
    shape = TINY if args.tiny else SHAPE

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_train_gpu: no CUDA device here; run it on a GPU machine (make bench-train-gpu)", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    peak = throughput.peak_bf16_flops(name)
    methods = [m for m in args.methods.split(",") if m]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="tuneloop-bench-gpu-") as tmp:
        root = Path(tmp)
        model_dir = build_model(root / "model", shape, args.device)
        # Enough blocks for the Ray epoch to run about as many steps as the plain loop times.
        n_docs = max(200, (args.steps + 3) * args.batch_size * args.seq_len // 60)
        data = tinymodel.write_jsonl(root / "corpus.jsonl", corpus(n_docs))
        spec = DatasetSpec.model_validate({"uri": f"file://{data}", "format": "text", "evalFraction": 0.01,
                                           "piiScrub": False})
        prepared = datasets.prepare(spec, root / "prepared")
        for method in methods:
            cfg = loop_config(model_dir, prepared, method, args)
            entry: dict[str, Any] = {}
            try:
                plain = plain_loop(cfg, args.steps, 3, args.device)
                entry["plain"] = summarise(shape, method, plain, args.seq_len, peak)
                if not args.no_ray:
                    ray = ray_loop(cfg, root / f"ray-{method}", 1 if args.device == "cuda" else 0)
                    entry["ray"] = summarise(shape, method, ray, args.seq_len, peak)
                    entry["ray_over_plain"] = entry["ray"]["tokens_per_second"] / entry["plain"]["tokens_per_second"]
            except Exception as e:  # one method failing (e.g. no bitsandbytes) must not hide the others
                entry["error"] = f"{type(e).__name__}: {e}"[:500]
            results[method] = entry
            print(method, json.dumps(entry, indent=1), flush=True)

    report = {
        "benchmark": "train_gpu_1b",
        "machine": {"gpu": name, "peak_bf16_flops": peak, "python": sys.version.split()[0],
                    "platform": platform.platform(), "torch": torch.__version__},
        "setup": {"model": "Llama 1B shape (hidden 2048, 16 layers, 32/8 heads, ff 8192, vocab 128256), random "
                           "bf16 weights", "lora": {"rank": LORA_RANK, "targets": list(TARGETS)},
                  "shape": shape.__dict__, "seq_len": args.seq_len, "batch_size": args.batch_size,
                  "precision": args.precision, "device": args.device},
        "results": results,
        "goals": {"lora_mfu_min_h100": 0.35, "ray_over_plain_min": 0.95},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
