"""Benchmark: the training loop inside a Ray Train worker against a plain single-process PEFT loop.

Both sides train the same LoRA model on the same prepared examples, in the same batches (same seed,
same per-epoch shuffle, same collate), with the same number of torch threads (a Ray worker with
num_cpus=1 runs torch single-threaded, so the plain loop is pinned to one thread too). Tokens/s is
measured inside each loop only (model loading, checkpointing and reporting excluded); Ray's fixed
cost — ray.init, controller and worker start-up, per-epoch checkpoint + report — is reported apart.

    .venv/bin/python bench/bench_train.py [--out bench/results/train.json] [--epochs 3] [--examples 400]

`--submit N` times the whole job instead, as users meet it: a local Ray head and MLflow server are
started, and the real job (`python -m tuneloop.jobs.train`) is submitted N times through Ray's
JobSubmissionClient (the ExistingCluster path; the first job meets a fresh head, the rest a head that
already ran one). The job's stage marks (`jobs.timeline`) in its log give the timeline, submit → exit;
the plain loop on the job's own prepared data is the reference for the fixed overhead.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from tuneloop.api.finetune import DatasetSpec
from tuneloop.devenv import tinymodel
from tuneloop.jobs import datasets, modeling, training


def plain_loop(cfg: training.LoopConfig, threads: int) -> dict[str, float]:
    """The reference: a straightforward single-process PEFT loop, no Ray, no DDP."""
    import torch

    torch.set_num_threads(threads)
    device = torch.device("cpu")
    tokenizer = modeling.load_tokenizer(cfg.model.model_dir)
    model = modeling.load_trainable(cfg.model, device)
    train = training._encode_all(tokenizer, datasets.read_prepared(Path(cfg.train_path)), cfg.max_seq_length)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate)
    model.train()
    tokens, seconds, losses = 0, 0.0, []
    for epoch in range(cfg.epochs):
        indices = training.shard_indices(len(train), 1, 0, epoch, cfg.seed)
        started = time.perf_counter()
        total, n_total = 0.0, 0
        for i in range(0, len(indices), cfg.batch_size):
            batch = training.collate([train[j] for j in indices[i: i + cfg.batch_size]], tokenizer.pad_token_id)
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
            out.loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            tokens += int(batch["attention_mask"].sum())
            n = int((batch["labels"][:, 1:] != -100).sum())
            total += float(out.loss.detach()) * n
            n_total += n
        seconds += time.perf_counter() - started
        losses.append(total / n_total)
    return {"tokens": tokens, "loop_seconds": seconds, "tokens_per_second": tokens / seconds,
            "first_epoch_loss": losses[0], "last_epoch_loss": losses[-1],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def ray_loop(cfg: training.LoopConfig, workers: int, storage: Path) -> dict[str, float]:
    started = time.perf_counter()
    training.init_ray()
    init_seconds = time.perf_counter() - started
    fit_started = time.perf_counter()
    outcome = training.fit(cfg, workers, 0, storage)
    fit_seconds = time.perf_counter() - fit_started
    history = outcome.history
    tokens = sum(h["train_tokens"] for h in history)
    loop_seconds = sum(h["train_loop_seconds"] for h in history)
    return {"workers": workers, "tokens": tokens, "loop_seconds": loop_seconds,
            "tokens_per_second": tokens / loop_seconds, "ray_init_seconds": init_seconds,
            "fit_seconds": fit_seconds, "fixed_overhead_seconds": fit_seconds - loop_seconds,
            "first_epoch_loss": history[0]["train_loss"], "last_epoch_loss": history[-1]["train_loss"],
            "worker_peak_rss_mb": max(h["worker_peak_rss_mb"] for h in history)}


def job_spec(model_dir: Path, data: Path, epochs: int) -> dict:
    """The FineTune spec the submitted job trains: the same model, batches and loop as `plain_loop`."""
    return {
        "baseModel": {"uri": f"file://{model_dir}"}, "method": "lora",
        "lora": {"rank": 8, "alpha": 16, "dropout": 0.0, "targetModules": ["q_proj", "v_proj"]},
        "dataset": {"uri": f"file://{data}", "evalFraction": 0.05},
        "training": {"epochs": epochs, "learningRate": 1e-3, "batchSize": 8, "maxSeqLength": 160, "seed": 0},
        "resources": {"workers": 2},
        "evaluation": {"maxNewTokens": 40, "maxExamples": 10, "baseline": {"enabled": True, "shots": 2}},
        "registry": {"modelName": "bench-train"},
    }


def submit_job(address: str, spec: dict, storage: Path, tracking_uri: str, name: str) -> dict:
    """Submit the real job to the running head; its timeline from the job's stage marks."""
    import shlex

    from ray.job_submission import JobStatus, JobSubmissionClient

    from tuneloop.jobs import timeline

    argv = ["--spec", json.dumps(spec), "--storage", str(storage), "--result", str(storage / "result.json"),
            "--tracking-uri", tracking_uri, "--experiment", "bench/train", "--run-name", name]
    client = JobSubmissionClient(address)
    submitted = time.time()
    job_id = client.submit_job(entrypoint="python -m tuneloop.jobs.train " + shlex.join(argv))
    while not client.get_job_status(job_id).is_terminal():
        time.sleep(0.2)
    done = time.time()
    logs = client.get_job_logs(job_id)
    if client.get_job_status(job_id) != JobStatus.SUCCEEDED:
        raise RuntimeError(f"job {job_id} failed:\n{logs[-4000:]}")
    marks = {"submitted": submitted, **timeline.parse(logs)}
    result = json.loads((storage / "result.json").read_text())
    return {"job_id": job_id, "submit_to_terminal_seconds": round(done - submitted, 3),
            "stages": {k: round(v - submitted, 3) for k, v in sorted(marks.items(), key=lambda kv: kv[1])},
            "spans": [{"from": a, "to": b, "seconds": sec} for a, b, sec in timeline.spans(marks)],
            "train_metrics": result.get("trainMetrics"), "load_average_1m_after": os.getloadavg()[0]}


def submit_bench(args: argparse.Namespace) -> int:
    from tuneloop.devenv import mlflow_server, ray_head

    with tempfile.TemporaryDirectory(prefix="tuneloop-bench-") as tmp:
        root = Path(tmp)
        model_dir = tinymodel.build_model(root / "model", hidden_size=args.hidden, layers=args.layers)
        data = tinymodel.write_jsonl(root / "data.jsonl", tinymodel.invoice_examples(args.examples, seed=1))
        spec = job_spec(model_dir, data, args.epochs)
        ray_dir = Path(f"/tmp/tl-bt-{os.getpid()}")
        with mlflow_server.running(root / "mlflow") as mlflow_srv, ray_head.running(ray_dir, num_cpus=4) as head:
            load_before = os.getloadavg()
            jobs = [submit_job(head.address, spec, root / f"job-{i}", mlflow_srv.tracking_uri, f"job-{i}")
                    for i in range(args.submit)]
        prepared = root / "job-0" / "data"
        cfg = training.LoopConfig(
            model=modeling.ModelOptions(model_dir=str(model_dir), method="lora", lora_rank=8, lora_alpha=16,
                                        lora_dropout=0.0, lora_target_modules=("q_proj", "v_proj"),
                                        precision="fp32", seed=0),
            train_path=str(prepared / "train.jsonl"), held_out_path=str(prepared / "held_out.jsonl"),
            epochs=args.epochs, learning_rate=1e-3, batch_size=8, gradient_accumulation_steps=1, max_seq_length=160,
            warmup_ratio=0.0, weight_decay=0.0, seed=0)
        plain = plain_loop(cfg, threads=1)
    for job in jobs:
        stages = job["stages"]
        loop = stages["last_step"] - stages["first_step"]
        job["job_seconds"] = stages["exit"]
        job["loop_seconds"] = round(loop, 3)
        # Everything but the training loop: submission, start-up, checkpoints, evaluation, MLflow.
        job["fixed_overhead_seconds"] = round(stages["exit"] - loop, 3)
        job["startup_seconds"] = stages["first_step"]  # submit -> first optimizer step
        job["after_fit_seconds"] = round(stages["exit"] - stages["fit_done"], 3)
    result = {
        "benchmark": "train_job_submitted_timeline",
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
                    "load_average_before": load_before, "load_average_1m_after": os.getloadavg()[0]},
        "setup": {"model": f"tiny Llama hidden {args.hidden}, {args.layers} layers, LoRA r8 q/v",
                  "examples": args.examples, "epochs": args.epochs, "workers": 2, "batch_size": 8,
                  "evaluation": spec["evaluation"], "ray_head_cpus": 4,
                  "path": "JobSubmissionClient.submit_job to a running `ray start --head` (ExistingCluster)"},
        "plain": plain,
        "jobs": jobs,
        "goals": {"fixed_overhead_seconds_max": 10.0},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for i, job in enumerate(jobs):
        print(f"job {i}: submit->exit {job['job_seconds']:.1f}s, loop {job['loop_seconds']:.1f}s (plain "
              f"{plain['loop_seconds']:.1f}s), fixed overhead {job['fixed_overhead_seconds']:.1f}s, "
              f"start-up {job['startup_seconds']:.1f}s, after fit {job['after_fit_seconds']:.1f}s")
        for span in job["spans"]:
            print(f"    {span['from']:>16} -> {span['to']:<16} {span['seconds']:7.2f}s")
    print(f"-> {args.out}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "train.json")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--examples", type=int, default=400)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--two-workers", action="store_true", help="also time a 2-worker DDP fit")
    p.add_argument("--submit", type=int, default=0, metavar="N",
                   help="time the whole job submitted N times to a running Ray head (ExistingCluster path)")
    args = p.parse_args()
    if args.submit:
        return submit_bench(args)

    with tempfile.TemporaryDirectory(prefix="tuneloop-bench-") as tmp:
        root = Path(tmp)
        model_dir = tinymodel.build_model(root / "model", hidden_size=args.hidden, layers=args.layers)
        data = tinymodel.write_jsonl(root / "data.jsonl", tinymodel.invoice_examples(args.examples, seed=1))
        prepared = datasets.prepare(DatasetSpec.model_validate({"uri": f"file://{data}", "evalFraction": 0.05}),
                                    root / "prepared")
        cfg = training.LoopConfig(
            model=modeling.ModelOptions(model_dir=str(model_dir), method="lora", lora_rank=8, lora_alpha=16,
                                        lora_dropout=0.0, lora_target_modules=("q_proj", "v_proj"),
                                        precision="fp32", seed=0),
            train_path=str(prepared.train_path), held_out_path=str(prepared.held_out_path), epochs=args.epochs,
            learning_rate=1e-3, batch_size=8, gradient_accumulation_steps=1, max_seq_length=160,
            warmup_ratio=0.0, weight_decay=0.0, seed=0)

        ray_one = ray_loop(cfg, 1, root / "ray-1")
        ray_two = ray_loop(cfg, 2, root / "ray-2") if args.two_workers else None
        plain = plain_loop(cfg, threads=1)  # after Ray, so the driver's RSS below is the plain loop's own

    assert plain["tokens"] == ray_one["tokens"], (plain["tokens"], ray_one["tokens"])
    result = {
        "benchmark": "train_loop_ray_vs_plain",
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
                    "load_average_1m": os.getloadavg()[0]},
        "setup": {"model": f"tiny Llama hidden {args.hidden}, {args.layers} layers, LoRA r8 q/v",
                  "train_examples": len(prepared.train), "epochs": args.epochs, "batch_size": 8,
                  "torch_threads_per_process": 1, "device": "cpu"},
        "plain": plain,
        "ray_1_worker": ray_one,
        "ray_2_workers": ray_two,
        "in_loop_ratio_ray_over_plain": ray_one["tokens_per_second"] / plain["tokens_per_second"],
        "fixed_startup_seconds": ray_one["ray_init_seconds"] + ray_one["fixed_overhead_seconds"],
        "goals": {"in_loop_ratio_min": 0.9, "startup_seconds_max": 10.0},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("in_loop_ratio_ray_over_plain", "fixed_startup_seconds")}, indent=2))
    print(f"plain {plain['tokens_per_second']:.0f} tok/s, ray(1) {ray_one['tokens_per_second']:.0f} tok/s"
          + (f", ray(2) {ray_two['tokens_per_second']:.0f} tok/s" if ray_two else "") + f" -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
