"""Scoring on the frozen held-out set: the task metrics (exact match, JSON validity and field-level F1
from `jobs.metrics`, the one implementation the monitors share; answer-token loss here), greedy
generation, and the two candidates scored the same way — the fine-tuned model, and the prompt baseline
(the base model with k few-shot examples from the training split in front of each question).

Per data kind: format text (continued pretraining) has no answers, so it is scored by the loss and
perplexity over every token of the held-out documents packed as in training, for the tuned model and for
the base as it is (the baseline: no shots). Preference pairs (method dpo) add preference_accuracy and
reward_margin from the DPO implicit reward, beta * (log pi - log ref), with the base (adapter disabled) as
the reference; the base is its own reference, so its reward is 0 for every answer and it scores 0.5 and
0.0 — chance — which the tuned adapter must beat. The usual answer metrics score the chosen answer.

Where it runs (`evaluate`): a CPU job scores in its driver process, which already holds torch and has
imported transformers and peft while training ran (`warm_up`) — a new Ray task would start a process,
import them again and wait for a worker slot, seconds of every job; a GPU job scores in a Ray task that
gets a GPU like the training workers' (the driver's node may have none).
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneloop.jobs import datasets, metrics, modeling, objectives, prompts

# Generation batches hold at most this many tokens (rows x (longest prompt + new tokens)) and rows, the
# prompts taken shortest first so a batch needs little padding and ends when its rows have answered. On the
# demo's held-out set (61 invoices, 96 new tokens, CPU, the same answers) the tuned model's took 2.9 s
# instead of 5.2 s in fixed batches of 8, the few-shot baseline's (prompts ~4x longer) 7.5 s instead of 8.2 s.
BATCH_TOKENS = 8192
MAX_BATCH_ROWS = 32


def length_batches(lengths: Sequence[int], extra: int, batch_tokens: int = BATCH_TOKENS,
                   max_rows: int = MAX_BATCH_ROWS) -> list[list[int]]:
    """Indices into `lengths` grouped shortest first, each group at most `max_rows` rows and (beyond its
    first row) at most `batch_tokens` of rows x (its longest + extra)."""
    batches: list[list[int]] = []
    current: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (lengths[i], i)):
        rows = len(current) + 1
        if current and (rows > max_rows or rows * (lengths[i] + extra) > batch_tokens):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def generate(model: Any, tokenizer: Any, prompt_texts: Sequence[str], max_new_tokens: int, device: Any,
             batch_tokens: int = BATCH_TOKENS) -> list[str]:
    """Greedy answers (cut at EOS or a new example header) for each prompt, in the prompts' order."""
    import torch

    encoded = [list(tokenizer(t)["input_ids"]) for t in prompt_texts]
    answers = [""] * len(encoded)
    for batch in length_batches([len(e) for e in encoded], max_new_tokens, batch_tokens):
        rows = [encoded[i] for i in batch]
        width = max(len(e) for e in rows)
        # Left padding: every row's answer then starts at the same position.
        ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(e)) + e for e in rows], device=device)
        mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in rows], device=device)
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        for i, row in zip(batch, out[:, width:], strict=True):
            answers[i] = prompts.cut_answer(tokenizer.decode(row, skip_special_tokens=True))
    return answers


def answer_loss(model: Any, tokenizer: Any, prompt_texts: Sequence[str], targets: Sequence[str], device: Any,
                max_length: int) -> float:
    """Mean cross-entropy over answer tokens (+EOS) given the prompt, teacher-forced. One example per
    forward pass: batching them (right-padded) measured no faster on CPU (4.3 s vs 4.7 s for the demo's
    three models), unlike generation, whose per-token steps batching amortises."""
    import torch

    total, count = 0.0, 0
    with torch.no_grad():
        for prompt_text, target in zip(prompt_texts, targets, strict=True):
            ids, labels = prompts.encode(tokenizer, prompt_text, prompts.render_target(target), max_length)
            ids_t = torch.tensor([ids], device=device)
            labels_t = torch.tensor([labels], device=device)
            logits = model(input_ids=ids_t).logits[:, :-1, :].float()
            shifted = labels_t[:, 1:]
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), shifted.reshape(-1),
                                                     ignore_index=-100, reduction="sum")
            total += float(loss)
            count += int((shifted != -100).sum())
    return total / count if count else math.nan


@dataclass(frozen=True)
class EvalRequest:
    """What to score (plain data: it crosses to a Ray task)."""

    base_model_dir: str
    trained_dir: str
    method: str
    train_path: str
    held_out_path: str
    metrics: tuple[str, ...]
    max_new_tokens: int
    max_examples: int | None
    baseline_enabled: bool
    baseline_shots: int
    max_seq_length: int
    predictions_path: str
    dataset_format: str = "instruction"
    dpo_beta: float = objectives.DEFAULT_DPO_BETA
    # The current champion's adapter (same base): scored on the same held-out set, for the gate (jobs.champion).
    champion_dir: str | None = None


@dataclass
class EvalOutcome:
    metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    examples: int
    champion_metrics: dict[str, float] | None = None


def _score_model(model: Any, tokenizer: Any, prompt_texts: list[str], references: list[str], request: EvalRequest,
                 device: Any) -> tuple[dict[str, float], list[str]]:
    predictions: list[str] = []
    scores: dict[str, float] = {}
    if set(request.metrics) & set(metrics.TEXT_METRICS):
        predictions = generate(model, tokenizer, prompt_texts, request.max_new_tokens, device)
        scores = metrics.score(predictions, references, request.metrics)
    if "loss" in request.metrics or "perplexity" in request.metrics:
        # Few-shot prompts are long; truncating them would cut the answer, so give the loss room.
        longest = max(len(tokenizer(t)["input_ids"]) for t in prompt_texts)
        loss = answer_loss(model, tokenizer, prompt_texts, references, device,
                           max(request.max_seq_length, longest + request.max_new_tokens + 1))
        if "loss" in request.metrics:
            scores["loss"] = loss
        if "perplexity" in request.metrics:
            scores["perplexity"] = math.exp(loss) if loss < 700 else math.inf
    return scores, predictions


def text_loss(model: Any, blocks: Sequence[Sequence[int]], device: Any) -> tuple[float, int]:
    """(summed loss, tokens scored) over every token of packed blocks, each predicted from the ones before."""
    import torch

    total, count = 0.0, 0
    with torch.no_grad():
        for block in blocks:
            if len(block) < 2:
                continue
            ids = torch.tensor([list(block)], device=device)
            logits = model(input_ids=ids).logits[:, :-1, :].float()
            total += float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)),
                                                             ids[:, 1:].reshape(-1), reduction="sum"))
            count += len(block) - 1
    return total, count


def _text_scores(model: Any, blocks: Sequence[Sequence[int]], wanted: Sequence[str], device: Any) -> dict[str, float]:
    total, count = text_loss(model, blocks, device)
    out = {"loss": total / count if count else math.nan, "perplexity": objectives.perplexity(total, count)}
    return {k: v for k, v in out.items() if k in wanted}


def evaluate_text(request: EvalRequest, held_out: list[datasets.Example], tokenizer: Any,
                  device: Any) -> EvalOutcome:
    """Continued pretraining: held-out documents packed into maxSeqLength blocks, as in training."""
    documents = [list(tokenizer(e.completion, add_special_tokens=False)["input_ids"]) for e in held_out]
    blocks = objectives.pack(documents, request.max_seq_length, int(tokenizer.eos_token_id))
    model = modeling.load_for_inference(request.base_model_dir, request.trained_dir, request.method, device)
    tuned = _text_scores(model, blocks, request.metrics, device)
    del model
    baseline: dict[str, float] = {}
    if request.baseline_enabled:
        base = modeling.load_for_inference(request.base_model_dir, None, request.method, device)
        baseline = _text_scores(base, blocks, request.metrics, device)
    return EvalOutcome(metrics=tuned, baseline_metrics=baseline, examples=len(held_out))


def preference_margins(model: Any, tokenizer: Any, held_out: Sequence[datasets.Example], beta: float,
                       max_length: int, device: Any) -> list[float]:
    """Per pair, the implicit reward of chosen minus that of rejected, beta * ((pc - rc) - (pr - rr)), the
    reference being `model` with its adapter disabled (the frozen base)."""
    import torch

    margins: list[float] = []
    with torch.no_grad():
        for e in held_out:
            prompt = prompts.render_prompt(e.prompt, e.system)
            logps = []
            for answer in (e.completion, e.rejected or ""):
                ids, labels = prompts.encode(tokenizer, prompt, prompts.render_target(answer), max_length)
                ids_t, labels_t = torch.tensor([ids], device=device), torch.tensor([labels], device=device)
                policy = objectives.sequence_logps(model(input_ids=ids_t).logits, labels_t)
                with model.disable_adapter():
                    reference = objectives.sequence_logps(model(input_ids=ids_t).logits, labels_t)
                logps.append((policy, reference))
            (pc, rc), (pr, rr) = logps
            _, chosen_reward, rejected_reward = objectives.dpo_loss(pc, pr, rc, rr, beta)
            margins.append(float(chosen_reward - rejected_reward))
    return margins


def evaluate_run(request: EvalRequest) -> EvalOutcome:
    """Score the trained model and (if enabled) the prompt baseline on the same held-out examples."""
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    held_out = datasets.read_prepared(Path(request.held_out_path))
    if request.max_examples is not None:
        held_out = held_out[: request.max_examples]
    references = [e.completion for e in held_out]
    tokenizer = modeling.load_tokenizer(request.base_model_dir)
    if request.dataset_format == "text":
        return evaluate_text(request, held_out, tokenizer, device)

    model = modeling.load_for_inference(request.base_model_dir, request.trained_dir, request.method, device)
    tuned_prompts = [prompts.render_prompt(e.prompt, e.system) for e in held_out]
    tuned, predictions = _score_model(model, tokenizer, tuned_prompts, references, request, device)
    preference = request.dataset_format == "preference"
    if preference:
        margins = preference_margins(model, tokenizer, held_out, request.dpo_beta, request.max_seq_length, device)
        tuned |= {k: v for k, v in objectives.preference_scores(margins).items() if k in request.metrics}
    del model

    baseline: dict[str, float] = {}
    baseline_predictions: list[str] = []
    if request.baseline_enabled:
        # The first k examples of the key-sorted training split: the same shots on every rerun.
        train = datasets.read_prepared(Path(request.train_path))
        shots = [(e.prompt, e.completion) for e in train[: request.baseline_shots]]
        base = modeling.load_for_inference(request.base_model_dir, None, request.method, device)
        few_shot = [prompts.render_few_shot(e.prompt, shots, e.system) for e in held_out]
        baseline, baseline_predictions = _score_model(base, tokenizer, few_shot, references, request, device)
        if preference:  # the base is its own reference: reward 0 for every answer (see the module doc)
            zero = objectives.preference_scores([0.0] * len(held_out))
            baseline |= {k: v for k, v in zero.items() if k in request.metrics}
        del base

    champion: dict[str, float] | None = None
    champion_predictions: list[str] = []
    if request.champion_dir is not None:
        held = modeling.load_for_inference(request.base_model_dir, request.champion_dir, "lora", device)
        champion, champion_predictions = _score_model(held, tokenizer, tuned_prompts, references, request, device)
        del held

    out = Path(request.predictions_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        for i, e in enumerate(held_out):
            row = {"prompt": e.prompt, "reference": e.completion}
            if predictions:
                row["prediction"] = predictions[i]
            if baseline_predictions:
                row["baseline_prediction"] = baseline_predictions[i]
            if champion_predictions:
                row["champion_prediction"] = champion_predictions[i]
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return EvalOutcome(metrics=tuned, baseline_metrics=baseline, examples=len(held_out), champion_metrics=champion)


def warm_up() -> threading.Thread:
    """Import what evaluation and model logging need in a background thread (the driver waits on Ray
    Train meanwhile), so they are loaded by the time training ends. Best effort: a failed import is
    raised again, with its message, where the module is really used."""

    def load() -> None:
        with contextlib.suppress(Exception):
            import mlflow.pyfunc  # noqa: F401
            import peft  # noqa: F401
            from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401

    thread = threading.Thread(target=load, name="tuneloop-warm-up", daemon=True)
    thread.start()
    return thread


def evaluate(request: EvalRequest, gpus: int) -> EvalOutcome:
    """Score in this process on CPU; in a Ray task with a GPU when training had GPUs (module docstring)."""
    if not gpus:
        return evaluate_run(request)
    return evaluate_on_ray(request, gpus)


def evaluate_on_ray(request: EvalRequest, gpus: int) -> EvalOutcome:
    """Run `evaluate_run` as a Ray task on a node like the training workers' (a GPU when they had one)."""
    import ray

    task = ray.remote(num_cpus=1, num_gpus=1 if gpus else 0, max_retries=0)(evaluate_run)
    return ray.get(task.remote(request))
