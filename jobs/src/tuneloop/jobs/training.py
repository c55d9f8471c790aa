"""Distributed training on Ray Train: a `TorchTrainer` whose workers (DDP ranks) run
`train_loop_per_worker` over the prepared training split, with gradient accumulation, bf16 autocast on
GPUs that support it, a warmup-then-linear learning-rate schedule, and a checkpoint per epoch.
What a step minimises depends on the data (`jobs.objectives`): the answer-token loss for instruction,
chat and completion data; the loss over every token of packed `maxSeqLength` blocks for format text
(continued pretraining); the DPO loss for preference pairs (method dpo), whose reference log-probs come
from the same model with its adapter disabled — computed once per pair and kept, since the base is frozen.

Resuming: the trainer's RunConfig name and storage path are fixed per run storage folder, so when a
killed job starts again Ray Train V2 finds its checkpoint snapshot there and `ray.train.get_checkpoint()`
hands the workers the latest checkpoint; they restore weights, optimizer, scheduler and the epoch
count and go on from the next epoch.

Metrics are reported once per epoch, never per step: each `ray.train.report` waits for the
controller's health-check tick (FACTS.md), and Train V2 keeps only reports that carry a checkpoint.
Rank 0 logs each epoch's metrics to the MLflow run as the epoch ends (live curves in the MLflow UI,
live progress in `make demo`), best effort. The per-epoch history also travels inside each checkpoint
(history.json), so after `fit()` the driver logs whatever epochs are still missing from the run —
including epochs run by an earlier, killed attempt, or lost to a tracking-server blip.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import resource
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tuneloop.jobs import datasets, modeling, objectives, prompts, timeline
from tuneloop.jobs.errors import ExitCode, JobError

RUN_NAME = "train"  # fixed: the storage folder is per run, and resume looks for this name in it
HISTORY_FILE = "history.json"
STATE_FILE = "state.pt"
MODEL_SUBDIR = "model"
# Ray Train's controller poll (default 2 s): a 2-worker poll costs little; a report waits for it.
HEALTH_CHECK_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
HEALTH_CHECK_INTERVAL_SECONDS = "0.5"
# `start_fit`: the workers get the model options at once and the rest of the loop config from this file,
# written by the driver when its data is prepared and its MLflow run open.
HANDOFF_KEY = "handoff_file"
HANDOFF_POLL_SECONDS = 0.05
HANDOFF_TIMEOUT_SECONDS = 3600.0
ABORT_WAIT_SECONDS = 5.0


@dataclass(frozen=True)
class LoopConfig:
    """Everything a worker needs; plain data so it crosses to the Ray workers as a dict."""

    model: modeling.ModelOptions
    train_path: str
    held_out_path: str
    epochs: int
    learning_rate: float
    batch_size: int
    gradient_accumulation_steps: int
    max_seq_length: int
    warmup_ratio: float
    weight_decay: float
    seed: int
    # The MLflow run rank 0 logs per-epoch metrics to as they happen (None: only after fit()).
    tracking_uri: str | None = None
    run_id: str | None = None
    dataset_format: str = "instruction"  # text: packed blocks, every token; preference: DPO pairs
    dpo_beta: float = objectives.DEFAULT_DPO_BETA

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoopConfig:
        return cls(**{**d, "model": _model_options(d["model"])})


def _model_options(d: dict[str, Any]) -> modeling.ModelOptions:
    return modeling.ModelOptions(**{**d, "lora_target_modules": tuple(d["lora_target_modules"])})


def await_handoff(path: Path, timeout_seconds: float = HANDOFF_TIMEOUT_SECONDS) -> LoopConfig:
    """The loop config the driver hands over once its data is ready (written whole: tmp + rename). The driver
    writes `{"abort": why}` instead when it fails first; its own error is the job's, this only ends the run."""
    deadline = time.monotonic() + timeout_seconds
    while not path.exists():
        if time.monotonic() > deadline:
            raise JobError(ExitCode.INTERNAL, f"the driver did not hand over the training config ({path}) "
                                              f"within {timeout_seconds:.0f}s")
        time.sleep(HANDOFF_POLL_SECONDS)
    d = json.loads(path.read_text())
    if "abort" in d:
        raise JobError(ExitCode.INTERNAL, f"the driver stopped before training: {d['abort']}")
    return LoopConfig.from_dict(d)


@dataclass
class TrainOutcome:
    """What `fit()` left: the final checkpoint (model/ holds the adapter or full model) and history."""

    checkpoint_dir: Path
    history: list[dict[str, float]]
    resumed_from: str | None
    resumed_at_epoch: int  # epochs already done when this attempt started (0: a fresh start)


def _encode_all(tokenizer: Any, examples: list[datasets.Example], max_len: int) -> list[tuple[list[int], list[int]]]:
    return [prompts.encode(tokenizer, prompts.render_prompt(e.prompt, e.system), prompts.render_target(e.completion),
                           max_len) for e in examples]


def encode_examples(tokenizer: Any, examples: list[datasets.Example], max_len: int, dataset_format: str) -> list[Any]:
    """What a step consumes: (ids, labels) per example; per packed block for format text (labels = ids:
    every token is learned); ((chosen ids, labels), (rejected ids, labels)) per pair for preference data."""
    if dataset_format == "text":
        documents = [list(tokenizer(e.completion, add_special_tokens=False)["input_ids"]) for e in examples]
        return [(block, block) for block in objectives.pack(documents, max_len, int(tokenizer.eos_token_id))]
    if dataset_format == "preference":
        out = []
        for e in examples:
            prompt = prompts.render_prompt(e.prompt, e.system)
            out.append((prompts.encode(tokenizer, prompt, prompts.render_target(e.completion), max_len),
                        prompts.encode(tokenizer, prompt, prompts.render_target(e.rejected or ""), max_len)))
        return out
    return _encode_all(tokenizer, examples, max_len)


def collate(batch: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, Any]:
    """Right-pad a batch; padding is masked out of attention and loss."""
    import torch

    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, (ids, labs) in enumerate(batch):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, : len(labs)] = torch.tensor(labs)
        mask[i, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def shard_indices(n: int, world: int, rank: int, epoch: int, seed: int) -> list[int]:
    """This rank's examples for the epoch: a seeded shuffle cut into equal shares (DDP needs every rank
    to run the same number of steps, so the share is padded by wrapping around)."""
    order = list(range(n))
    random.Random(seed * 100_003 + epoch).shuffle(order)
    per_rank = math.ceil(n / world)
    padded = (order * (1 + per_rank * world // max(n, 1)))[: per_rank * world]
    return padded[rank::world]


def lr_schedule(total_updates: int, warmup_ratio: float) -> Callable[[int], float]:
    """The learning rate's factor at each optimizer update: a linear warmup over `warmup_ratio` of the
    updates, then a linear decay to 0 at the last."""
    warmup = int(total_updates * warmup_ratio)

    def factor(update: int) -> float:
        if update < warmup:
            return (update + 1) / (warmup + 1)
        return max(0.0, (total_updates - update) / max(1, total_updates - warmup))

    return factor


def _sum_across_ranks(values: list[float], device: Any) -> list[float]:
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return [float(x) for x in t.tolist()]


def _max_across_ranks(value: float, device: Any) -> float:
    import torch
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def _loss_sum(model: Any, batch: dict[str, Any], autocast: Any) -> tuple[Any, int]:
    """Sum of token losses over answer tokens, and how many there were."""
    import torch

    labels = batch["labels"]
    with autocast():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    loss = torch.nn.functional.cross_entropy(shift_logits.reshape(-1, shift_logits.size(-1)),
                                             shift_labels.reshape(-1), ignore_index=-100, reduction="sum")
    return loss, int((shift_labels != -100).sum().item())


class PairScorer:
    """The DPO loss of a batch of preference pairs. The reference is the same LoRA model with its adapter
    disabled (the frozen base), so no second copy of the weights is loaded; its log-probs never change
    and are computed once per pair (`cache`, keyed by the pair's index in its split)."""

    def __init__(self, unwrapped: Any, pairs: list[Any], pad_id: int, device: Any, autocast: Any, beta: float):
        self.unwrapped, self.pairs, self.pad_id, self.device = unwrapped, pairs, pad_id, device
        self.autocast, self.beta = autocast, beta
        self.cache: dict[int, tuple[float, float]] = {}

    def _logps(self, model: Any, indices: list[int]) -> tuple[Any, Any, int]:
        rows = [self.pairs[i][0] for i in indices] + [self.pairs[i][1] for i in indices]
        batch = {k: v.to(self.device) for k, v in collate(rows, self.pad_id).items()}
        with self.autocast():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        logps = objectives.sequence_logps(logits, batch["labels"])
        return logps[: len(indices)], logps[len(indices):], int(batch["attention_mask"].sum())

    def reference(self, indices: list[int]) -> tuple[Any, Any]:
        import torch

        missing = [i for i in dict.fromkeys(indices) if i not in self.cache]
        if missing:
            with torch.no_grad(), self.unwrapped.disable_adapter():
                chosen, rejected, _ = self._logps(self.unwrapped, missing)
            for i, c, r in zip(missing, chosen.tolist(), rejected.tolist(), strict=True):
                self.cache[i] = (c, r)
        ref = torch.tensor([self.cache[i] for i in indices], dtype=torch.float32, device=self.device)
        return ref[:, 0], ref[:, 1]

    def loss(self, model: Any, indices: list[int]) -> tuple[Any, int, int, list[float]]:
        """(sum of the pairs' losses, pairs, tokens seen, chosen-minus-rejected reward per pair)."""
        ref_chosen, ref_rejected = self.reference(indices)
        chosen, rejected, tokens = self._logps(model, indices)
        losses, chosen_rewards, rejected_rewards = objectives.dpo_loss(chosen, rejected, ref_chosen, ref_rejected,
                                                                       self.beta)
        return losses.sum(), len(indices), tokens, (chosen_rewards - rejected_rewards).tolist()


def train_loop_per_worker(config_dict: dict[str, Any]) -> None:
    """One DDP rank: restore from the latest checkpoint if there is one, then train epoch by epoch."""
    import ray.train
    import ray.train.torch
    import torch

    handoff = config_dict.get(HANDOFF_KEY)
    options = _model_options(config_dict["model"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    if rank == 0:
        timeline.mark("workers_started")
    device = ray.train.torch.get_device()
    on_cuda = device.type == "cuda"
    dtype = modeling.compute_dtype(options.precision, on_cuda)
    scaler = torch.amp.GradScaler("cuda") if on_cuda and dtype == torch.float16 else None

    def autocast() -> Any:
        if dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=dtype)

    tokenizer = modeling.load_tokenizer(options.model_dir)
    model = modeling.load_trainable(options, device)
    # Started before the driver had the data (`start_fit`): the model is loaded meanwhile, the rest waits.
    cfg = await_handoff(Path(handoff)) if handoff else LoopConfig.from_dict(config_dict)
    train = encode_examples(tokenizer, datasets.read_prepared(Path(cfg.train_path)), cfg.max_seq_length,
                            cfg.dataset_format)
    held_out = encode_examples(tokenizer, datasets.read_prepared(Path(cfg.held_out_path)), cfg.max_seq_length,
                               cfg.dataset_format)
    dpo = cfg.dataset_format == "preference"

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(math.ceil(len(train) / world) / cfg.batch_size)
    updates_per_epoch = math.ceil(steps_per_epoch / cfg.gradient_accumulation_steps)
    total_updates = max(1, updates_per_epoch * cfg.epochs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule(total_updates, cfg.warmup_ratio))

    start_epoch, history, resumed_from, resumed_at = 0, [], None, 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            state = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=False)
            modeling.load_trainable_state(model, state["trainable"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            start_epoch, history = state["epoch"], state["history"]
            resumed_from, resumed_at = checkpoint.path, start_epoch

    ddp_model = ray.train.torch.prepare_model(model, move_to_device=False)
    unwrapped = ddp_model.module if hasattr(ddp_model, "module") else ddp_model
    if rank == 0:
        timeline.mark("model_loaded")
    if dpo:
        train_pairs = PairScorer(unwrapped, train, tokenizer.pad_token_id, device, autocast, cfg.dpo_beta)
        held_out_pairs = PairScorer(unwrapped, held_out, tokenizer.pad_token_id, device, autocast, cfg.dpo_beta)

    def step_loss(model: Any, items: list[Any], indices: list[int], scorer: Any) -> tuple[Any, int, int, list[float]]:
        """(loss sum, units it is averaged over — tokens, or pairs for DPO —, input tokens, reward margins)."""
        if dpo:
            return scorer.loss(model, indices)
        batch = {k: v.to(device) for k, v in collate([items[i] for i in indices], tokenizer.pad_token_id).items()}
        total, n = _loss_sum(model, batch, autocast)
        return total, n, int(batch["attention_mask"].sum()), []

    for epoch in range(start_epoch, cfg.epochs):
        ddp_model.train()
        indices = shard_indices(len(train), world, rank, epoch, cfg.seed)
        batches = [indices[i: i + cfg.batch_size] for i in range(0, len(indices), cfg.batch_size)]
        loss_total, target_tokens, input_tokens = 0.0, 0, 0
        started = time.perf_counter()
        for step, batch_idx in enumerate(batches):
            last_micro = (step + 1) % cfg.gradient_accumulation_steps == 0 or step == len(batches) - 1
            no_sync: Any = getattr(ddp_model, "no_sync", None)  # DDP only (world size > 1)
            sync = contextlib.nullcontext() if last_micro or no_sync is None else no_sync()
            with sync:
                loss_sum, n, seen, _ = step_loss(ddp_model, train, batch_idx, train_pairs if dpo else None)
                loss = loss_sum / max(n, 1) / cfg.gradient_accumulation_steps
                (scaler.scale(loss) if scaler else loss).backward()
            if last_micro:
                if scaler:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            loss_total += float(loss_sum.detach())
            target_tokens += n
            input_tokens += seen
            if rank == 0 and step == 0 and epoch == start_epoch:
                timeline.mark("first_step")
            if rank == 0 and step == len(batches) - 1 and epoch == cfg.epochs - 1:
                timeline.mark("last_step")
        if on_cuda:
            torch.cuda.synchronize()
        loop_seconds = time.perf_counter() - started

        eval_loss_total, eval_tokens, margins = 0.0, 0, []
        ddp_model.eval()
        with torch.no_grad():
            mine = list(range(rank, len(held_out), world))
            for i in range(0, len(mine), cfg.batch_size):
                s, n, _, m = step_loss(unwrapped, held_out, mine[i: i + cfg.batch_size],
                                       held_out_pairs if dpo else None)
                eval_loss_total += float(s)
                eval_tokens += n
                margins += m
        scores = objectives.preference_scores(margins) if margins else {"preference_accuracy": 0.0,
                                                                         "reward_margin": 0.0}
        sums = _sum_across_ranks([loss_total, target_tokens, input_tokens, eval_loss_total, eval_tokens,
                                  scores["preference_accuracy"] * len(margins), scores["reward_margin"] * len(margins),
                                  len(margins)], device)
        slowest = _max_across_ranks(loop_seconds, device)
        peak_rss_mb = _max_across_ranks(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, device)
        metrics = {
            "epoch": float(epoch + 1),
            "train_loss": sums[0] / max(sums[1], 1),
            "eval_loss": sums[3] / max(sums[4], 1),
            "train_tokens": sums[2],
            "train_loop_seconds": slowest,
            "train_tokens_per_second": sums[2] / max(slowest, 1e-9),
            "learning_rate": float(scheduler.get_last_lr()[0]),
            "worker_peak_rss_mb": peak_rss_mb,
        }
        if on_cuda:
            metrics["worker_peak_gpu_mb"] = _max_across_ranks(torch.cuda.max_memory_allocated(device) / 2**20, device)
        if dpo:
            metrics["eval_preference_accuracy"] = sums[5] / max(sums[7], 1)
            metrics["eval_reward_margin"] = sums[6] / max(sums[7], 1)
        history = [*history, metrics]
        if rank == 0:
            _log_epoch_live(cfg, epoch + 1, metrics)
        resume = {"resumed_from": resumed_from, "resumed_at_epoch": resumed_at}
        _report(rank, epoch + 1, metrics, history, resume, unwrapped, tokenizer, optimizer, scheduler)


def _log_epoch_live(cfg: LoopConfig, epoch: int, metrics: dict[str, float]) -> None:
    """Best effort: a tracking blip must not fail training (the driver fills gaps after fit())."""
    if not cfg.run_id:
        return
    try:
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        now = int(time.time() * 1000)
        MlflowClient(cfg.tracking_uri).log_batch(cfg.run_id, metrics=[
            Metric(k, float(v), now, epoch) for k, v in metrics.items() if k != "epoch"])
    except Exception as e:
        from tuneloop.jobs.tracking import redact

        print(redact(f"[tuneloop.train] live epoch metrics not logged: {type(e).__name__}: {e}"), flush=True)


def _report(rank: int, epoch: int, metrics: dict[str, float], history: list[dict[str, float]], resume: dict[str, Any],
            model: Any, tokenizer: Any, optimizer: Any, scheduler: Any) -> None:
    """Every rank reports; rank 0 attaches the checkpoint (DDP replicas hold the same weights)."""
    import ray.train
    import torch

    if rank != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    with tempfile.TemporaryDirectory(prefix="tuneloop-ckpt-") as d:
        modeling.save_trained(model, tokenizer, Path(d) / MODEL_SUBDIR)
        torch.save({"trainable": modeling.trainable_state(model), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "epoch": epoch, "history": history}, Path(d) / STATE_FILE)
        (Path(d) / HISTORY_FILE).write_text(json.dumps({**resume, "epochs": history}))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))


def init_ray() -> None:
    """Join the cluster when RAY_ADDRESS is set (Ray job submission sets it), else start a local Ray."""
    import os

    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address="auto", log_to_driver=True)
    else:
        ray.init()


def load_trainer() -> Any:
    """The trainer class; importing it loads ray.train.torch and torch (seconds on a busy node)."""
    from tuneloop.jobs.trainer import FixedSizeTorchTrainer

    return FixedSizeTorchTrainer


def fit(cfg: LoopConfig, workers: int, gpus_per_worker: int, storage_dir: Path) -> TrainOutcome:
    """Run the TorchTrainer to completion (resuming from storage_dir when a checkpoint is there)."""
    return _fit(cfg.to_dict(), workers, gpus_per_worker, storage_dir)


class EarlyFit:
    """A `fit()` started before its data is ready (`start_fit`), on a thread of the driver: Ray Train's
    controller and worker group start, and the workers import torch and load the base model, while the
    driver prepares the data and opens the MLflow run (seconds each; on a warm cluster most of a small
    job's start-up). `send` hands the workers the rest of their config; `abort` ends the run when the
    driver fails first; `result` waits for the outcome, raising as `fit` does."""

    def __init__(self, handoff: Path, thread_target: Any) -> None:
        import threading

        self.handoff = handoff
        self.started = time.monotonic()
        self._outcome: TrainOutcome | None = None
        self._error: BaseException | None = None

        def run() -> None:
            try:
                self._outcome = thread_target()
            except BaseException as e:  # handed to the driver's thread by result()
                self._error = e

        self._thread = threading.Thread(target=run, name="tuneloop-fit", daemon=True)
        self._thread.start()

    def _write(self, payload: dict[str, Any]) -> None:
        tmp = self.handoff.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload))
        tmp.replace(self.handoff)

    def send(self, cfg: LoopConfig) -> None:
        self._write(cfg.to_dict())

    def abort(self, why: str, wait_seconds: float = ABORT_WAIT_SECONDS) -> None:
        """Tell the workers the run is off, and give them a moment: a job's driver exits next, and Ray ends
        the actors it owns (the Train controller, hence its workers) when it does."""
        if not self.handoff.exists():
            self._write({"abort": why[:500]})
        self._thread.join(wait_seconds)

    def result(self) -> TrainOutcome:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._outcome is not None
        return self._outcome


def start_fit(model: modeling.ModelOptions, workers: int, gpus_per_worker: int, storage_dir: Path,
              handoff: Path) -> EarlyFit:
    """`fit()` started now, its data sent later through `handoff` (a file on storage every worker reads,
    as it reads the prepared data; one per driver, so a later attempt never reads an earlier one's)."""
    handoff.parent.mkdir(parents=True, exist_ok=True)
    config = {"model": asdict(model), HANDOFF_KEY: str(handoff)}
    return EarlyFit(handoff, lambda: _fit(config, workers, gpus_per_worker, storage_dir))


def _fit(train_loop_config: dict[str, Any], workers: int, gpus_per_worker: int, storage_dir: Path) -> TrainOutcome:
    import os

    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig

    # Each per-epoch report, and the end of the run, waits for the controller's next poll (FACTS.md);
    # Ray passes the variable on to the controller and the workers. A user's own value wins.
    os.environ.setdefault(HEALTH_CHECK_ENV, HEALTH_CHECK_INTERVAL_SECONDS)
    resources: dict[str, float] = {"CPU": 1}
    if gpus_per_worker:
        resources["GPU"] = gpus_per_worker
    trainer = load_trainer()(
        train_loop_per_worker,
        train_loop_config=train_loop_config,
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpus_per_worker > 0,
                                     resources_per_worker=resources),
        run_config=RunConfig(
            name=RUN_NAME, storage_path=str(storage_dir.resolve()),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            # A failed attempt is retried by the controller (a new job that resumes), not in here.
            failure_config=FailureConfig(max_failures=0),
        ),
    )
    try:
        result = trainer.fit()
    except Exception as e:
        cause = _job_error_in(e)
        if cause is not None:
            raise cause from e
        raise JobError(ExitCode.TRAINING_FAILED, f"Ray Train failed: {e}") from e
    if result.checkpoint is None:
        raise JobError(ExitCode.TRAINING_FAILED, "Ray Train finished without a checkpoint")
    with result.checkpoint.as_directory() as d:
        local = Path(d)
        meta = json.loads((local / HISTORY_FILE).read_text())
    return TrainOutcome(checkpoint_dir=Path(result.checkpoint.path), history=meta["epochs"],
                        resumed_from=meta["resumed_from"], resumed_at_epoch=int(meta["resumed_at_epoch"]))


def _job_error_in(error: BaseException) -> JobError | None:
    """A JobError raised inside a worker (e.g. LoRA target modules the model lacks) keeps its code:
    search the exception's causes and Ray Train's per-worker failures for one."""
    seen: set[int] = set()
    stack: list[BaseException] = [error]
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, JobError):
            return e
        stack += [x for x in (e.__cause__, e.__context__, getattr(e, "cause", None)) if isinstance(x, BaseException)]
        failures = getattr(e, "worker_failures", None)
        if isinstance(failures, dict):
            stack += [x for x in failures.values() if isinstance(x, BaseException)]
    return None
