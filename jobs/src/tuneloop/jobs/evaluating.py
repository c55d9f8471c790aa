"""Scoring on the frozen held-out set: the task metrics (exact match, JSON validity and field-level F1
from `jobs.metrics`, the one implementation the monitors share; answer-token loss here), greedy
generation, and the two candidates scored the same way — the fine-tuned model, and the prompt baseline
(the base model with k few-shot examples from the training split in front of each question).

`evaluate_run` loads the models and runs where the job puts it (a Ray task with the workers' device kind).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneloop.jobs import datasets, metrics, modeling, prompts


def generate(model: Any, tokenizer: Any, prompt_texts: Sequence[str], max_new_tokens: int, device: Any,
             batch_size: int = 8) -> list[str]:
    """Greedy answers (cut at EOS or a new example header) for each prompt."""
    import torch

    answers: list[str] = []
    for i in range(0, len(prompt_texts), batch_size):
        encoded = [list(tokenizer(t)["input_ids"]) for t in prompt_texts[i: i + batch_size]]
        width = max(len(e) for e in encoded)
        # Left padding: every row's answer then starts at the same position.
        ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(e)) + e for e in encoded], device=device)
        mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded], device=device)
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        for row in out[:, width:]:
            answers.append(prompts.cut_answer(tokenizer.decode(row, skip_special_tokens=True)))
    return answers


def answer_loss(model: Any, tokenizer: Any, prompt_texts: Sequence[str], targets: Sequence[str], device: Any,
                max_length: int) -> float:
    """Mean cross-entropy over answer tokens (+EOS) given the prompt, teacher-forced."""
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


@dataclass
class EvalOutcome:
    metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    examples: int


def _score_model(model: Any, tokenizer: Any, prompt_texts: list[str], references: list[str], request: EvalRequest,
                 device: Any) -> tuple[dict[str, float], list[str]]:
    predictions = generate(model, tokenizer, prompt_texts, request.max_new_tokens, device)
    scores = metrics.score(predictions, references, request.metrics)
    if "loss" in request.metrics:
        # Few-shot prompts are long; truncating them would cut the answer, so give the loss room.
        longest = max(len(tokenizer(t)["input_ids"]) for t in prompt_texts)
        scores["loss"] = answer_loss(model, tokenizer, prompt_texts, references, device,
                                     max(request.max_seq_length, longest + request.max_new_tokens + 1))
    return scores, predictions


def evaluate_run(request: EvalRequest) -> EvalOutcome:
    """Score the trained model and (if enabled) the prompt baseline on the same held-out examples."""
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    held_out = datasets.read_prepared(Path(request.held_out_path))
    if request.max_examples is not None:
        held_out = held_out[: request.max_examples]
    references = [e.completion for e in held_out]
    tokenizer = modeling.load_tokenizer(request.base_model_dir)

    model = modeling.load_for_inference(request.base_model_dir, request.trained_dir, request.method, device)
    tuned_prompts = [prompts.render_prompt(e.prompt, e.system) for e in held_out]
    tuned, predictions = _score_model(model, tokenizer, tuned_prompts, references, request, device)
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

    out = Path(request.predictions_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        for i, e in enumerate(held_out):
            row = {"prompt": e.prompt, "reference": e.completion, "prediction": predictions[i]}
            if baseline_predictions:
                row["baseline_prediction"] = baseline_predictions[i]
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return EvalOutcome(metrics=tuned, baseline_metrics=baseline, examples=len(held_out))


def evaluate_on_ray(request: EvalRequest, gpus: int) -> EvalOutcome:
    """Run `evaluate_run` as a Ray task on a node like the training workers' (a GPU when they had one)."""
    import ray

    task = ray.remote(num_cpus=1, num_gpus=1 if gpus else 0, max_retries=0)(evaluate_run)
    return ray.get(task.remote(request))
