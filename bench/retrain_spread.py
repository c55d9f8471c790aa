"""Benchmark: how much the demo's retrain recovers (Q2), and how that spreads over seeds, without the demo.

`make demo` retrains the champion on the invoices plus the drifted traffic a person labelled, and expects
the new version's field F1 on new drifted invoices (Q2) to reach Q1 + 0.9 (Q0 - Q1). One demo run takes ~10
minutes, so measuring how Q2 spreads that way is slow. This models the retrain in one process on the same
data and settings: the demo's dataset (400 invoices, 12 repeated rows), the first `--drifted` drifted
requests with three of four labelled (as `demo_loop.send` labels them) plus `--in-dist` labelled
in-distribution requests as the feedback, prepared by the job's own `datasets.prepare` (PII scrub, dedupe,
the frozen 15% split), then the demo FineTune's LoRA settings (read from
examples/demo/01-invoices-lora.yaml: rank 16, all projections, lr 3e-3, 6 epochs, batch 8 per rank) with
2-rank DDP emulated exactly (each rank's shard from `training.shard_indices`, gradients averaged). `--weight
W` repeats the feedback examples of the training split W times (the held-out split keeps each once). Each
trial reports Q2 on the demo's 40 recovery invoices, in-distribution F1 on 40 unseen invoices, and F1 on the
held-out split.

    .venv/bin/python bench/retrain_spread.py [--seeds 1 2 3] [--weight 1] [--drifted 140] [--in-dist 20]
        [--feedback FILE] [--out bench/results/retrain-spread.json]

`--feedback FILE` replays the window a demo run really retrained on: the operator's feedback file, which the
demo's summary names (retrain.feedbackUri, with how many examples came from each phase) and a failed run's
workdir keeps. The model is faithful: replaying two demo runs' files with the demo's seed 7 gave exactly what
their real two-process retrains scored and served — 115 examples (30 in-distribution, 85 drifted): held-out F1
0.9973, Q2 1.000; 122 (30, 92): held-out 0.984, Q2 0.900. Each trial lists its recovery misses (`q2_misses`:
invoice, answer, truth); that run's four were all in the "Rechnung" layout, the vendor name not copied and the
JSON broken, so each scored 0.

A window the size of the demo's (120 drifted requests, 90 labelled, plus 30 labelled in-distribution) retrained
with seeds 1-4 gave Q2 0.495 / 1.000 / 1.000 / 1.000: seed 1 under-fit (held-out F1 0.728, in-distribution 0.69),
which the gate would refuse. At `--lr 0.002` seed 1 was no better (Q2 0.458, held-out 0.694); at `--epochs 8` it
reached Q2 0.990, held-out 1.000. 173 drifted requests (160 examples): Q2 0.950-1.000 over seeds 1-4.
A real failure replays too: a demo test whose retrain the gate refused (106 examples, 30 in-distribution and
76 drifted; held-out F1 0.7863 against the re-scored champion's 0.8615) gave held-out 0.7863 here (Q2 0.6625),
and at `--epochs 8` held-out 1.000, Q2 0.975.

Measured on a 2-core machine (~2.5-3 min per trial, one torch thread): drifted 140 + in-dist 20, weight 1,
seeds 7/1/2/3/4: Q2 1.000 / 0.975 / 1.000 / 0.970 / 0.995; weight 2, seeds 1-4: 1.000 / 1.000 / 1.000 / 0.995,
but on seed 4 weight 2 cost in-distribution F1 (0.875, held-out 0.895, against 0.95 / 0.984 at weight 1).
The demo itself once reached only 0.875 with 125 examples (held-out F1 0.947), so that miss is not
explained by this data and these settings alone.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from tuneloop.api.finetune import DatasetSpec
from tuneloop.devenv import basemodel, demo, demo_loop, tinymodel
from tuneloop.jobs import datasets, evaluating, metrics, modeling, prompts, training

# The champion FineTune the demo retrains: its LoRA, training and dataset settings are read from it.
MANIFEST = demo.MANIFEST_DIR / "01-invoices-lora.yaml"


def feedback(drifted: int, in_dist: int) -> list[dict[str, str]]:
    """What `demo.close_the_loop` sends and labels: the drifted requests, three of four labelled, and the
    labelled in-distribution requests before them."""
    invoices, every = demo.loop_invoices(), demo_loop.LABEL_EVERY
    labelled = [r for i, r in enumerate(invoices["drifted"][:drifted]) if i % every != every - 1]
    return labelled + invoices["inDistribution"][:in_dist]


def trial(work: Path, model_dir: Path, spec: dict[str, Any], fb: list[dict[str, str]], weight: int, epochs: int,
          seed: int) -> dict[str, Any]:
    import torch

    lora, settings = spec["lora"], spec["training"]
    invoices = demo.write_dataset(work / "invoices.jsonl")
    data = DatasetSpec.model_validate({**spec["dataset"], "uri": f"file://{invoices}"})
    tinymodel.write_jsonl(work / "feedback.jsonl", fb)
    datasets.prepare(data, work / "prepared", [f"file://{work / 'feedback.jsonl'}"])
    options = modeling.ModelOptions(str(model_dir), "lora", lora["rank"], lora["alpha"], lora["dropout"],
                                    tuple(lora["targetModules"]), "fp32", seed)
    world, batch, max_len = spec["resources"]["workers"], settings["batchSize"], settings["maxSeqLength"]
    torch.manual_seed(seed)
    tokenizer = modeling.load_tokenizer(model_dir)
    model = modeling.load_trainable(options, torch.device("cpu"))
    train_examples = datasets.read_prepared(work / "prepared" / "train.jsonl")
    fed = {r["prompt"] for r in fb}
    train_examples += [e for e in train_examples if e.prompt in fed] * (weight - 1)
    train = training.encode_examples(tokenizer, train_examples, max_len, "instruction")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings["learningRate"],
                                  weight_decay=0.0)
    steps = math.ceil(math.ceil(len(train) / world) / batch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, training.lr_schedule(steps * epochs,
                                                                                  settings["warmupRatio"]))
    started = time.perf_counter()
    model.train()
    for epoch in range(epochs):
        shards = [training.shard_indices(len(train), world, rank, epoch, seed) for rank in range(world)]
        for step in range(steps):
            for shard in shards:  # DDP: each rank's mean loss, gradients averaged over the ranks
                indices = shard[step * batch: (step + 1) * batch]
                if indices:
                    tensors = training.collate([train[i] for i in indices], tokenizer.pad_token_id)
                    loss_sum, n = training._loss_sum(model, tensors, contextlib.nullcontext)
                    (loss_sum / max(n, 1) / world).backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
    train_seconds = time.perf_counter() - started
    model.eval()

    misses: list[dict[str, Any]] = []

    def f1(records: list[dict[str, str]], keep_misses: bool = False) -> float:
        answers = evaluating.generate(model, tokenizer, [prompts.render_prompt(r["prompt"]) for r in records],
                                      spec["evaluation"]["maxNewTokens"], torch.device("cpu"))
        scores = [metrics.field_f1(a, r["completion"]) or 0.0 for a, r in zip(answers, records, strict=True)]
        if keep_misses:  # what a recovery miss looks like: the invoice, the answer, the truth
            misses.extend({"f1": round(f, 3), "invoice": r["prompt"].split("\n", 1)[-1], "answer": a,
                           "truth": r["completion"]} for f, a, r in zip(scores, answers, records, strict=True) if f < 1)
        return round(sum(scores) / len(records), 4)

    held_out = [{"prompt": e.prompt, "completion": e.completion or ""}
                for e in datasets.read_prepared(work / "prepared" / "held_out.jsonl")]
    recovery = demo.loop_invoices()["recovery"]
    unseen = tinymodel.invoice_examples(demo.LOOP_REQUESTS, seed=demo.DATASET_SEED,
                                        start=demo.DATASET_ROWS + demo.BURST_REQUESTS + 100)
    return {"seed": seed, "train_rows": len(train), "train_seconds": round(train_seconds, 1),
            "q2": f1(recovery, keep_misses=True), "in_distribution_f1": f1(unseen), "held_out_f1": f1(held_out),
            "q2_misses": misses}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--weight", type=int, default=1, help="times each feedback example is in the training split")
    p.add_argument("--drifted", type=int, default=140, help="drifted requests sent (three of four labelled)")
    p.add_argument("--in-dist", type=int, default=20, help="labelled in-distribution requests in the window")
    p.add_argument("--feedback", type=Path, help="replay a demo run's feedback file (its summary's "
                   "retrain.feedbackUri, kept in the workdir of a failed run) instead of --drifted/--in-dist")
    p.add_argument("--epochs", type=int, help="default: the demo FineTune's")
    p.add_argument("--lr", type=float, help="learning rate; default: the demo FineTune's")
    p.add_argument("--out", type=Path, default=Path("bench/results/retrain-spread.json"))
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)  # like a Ray Train worker with num_cpus=1
    model_dir = basemodel.ensure_base_model()
    replayed = demo.read_feedback(f"file://{args.feedback.resolve()}") if args.feedback else None
    if args.feedback and replayed is None:
        p.error(f"--feedback {args.feedback}: not a readable JSONL file")
    fb = replayed if replayed is not None else feedback(args.drifted, args.in_dist)
    spec = yaml.safe_load(MANIFEST.read_text())["spec"]
    if args.lr:
        spec["training"]["learningRate"] = args.lr
    epochs = args.epochs or spec["training"]["epochs"]
    trials = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory(prefix="retrain-spread-") as d:
            trials.append(trial(Path(d), model_dir, spec, fb, args.weight, epochs, seed))
        print(json.dumps(trials[-1]), flush=True)
    q2 = [t["q2"] for t in trials]
    result = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
              "settings": {"weight": args.weight, "feedback_file": str(args.feedback) if args.feedback else None,
                           "drifted": None if args.feedback else args.drifted,
                           "in_dist": None if args.feedback else args.in_dist,
                           "feedback_examples": len(fb), "epochs": epochs,
                           "learning_rate": spec["training"]["learningRate"]},
              "trials": trials, "q2_min": min(q2), "q2_mean": round(sum(q2) / len(q2), 4)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("settings", "q2_min", "q2_mean")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
