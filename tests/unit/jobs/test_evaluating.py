"""Evaluation batches prompts by length for generation (jobs.evaluating.length_batches): the batching is a
table, and on a tiny Llama the batched answers equal generating for each prompt on its own, in the
prompts' order."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tuneloop.jobs import evaluating, modeling, prompts


@pytest.mark.parametrize(("lengths", "extra", "budget", "rows", "expected"), [
    ([], 0, 100, 4, []),
    ([5], 0, 1, 4, [[0]]),  # a prompt longer than the budget still gets a batch of its own
    ([3, 1, 2], 0, 100, 4, [[1, 2, 0]]),  # shortest first
    ([3, 1, 2], 0, 100, 2, [[1, 2], [0]]),  # at most `rows` rows
    ([10, 10, 10, 10], 0, 25, 8, [[0, 1], [2, 3]]),  # rows x longest <= budget
    ([10, 10, 10], 5, 30, 8, [[0, 1], [2]]),  # the new tokens count: 2 x 15 = 30
    ([2, 2, 2, 20], 0, 30, 8, [[0, 1, 2], [3]]),  # a long prompt does not pad the short ones
    ([4, 4, 4], 0, 12, 8, [[0, 1, 2]]),  # equal lengths keep their order
])
def test_length_batches(lengths, extra, budget, rows, expected) -> None:
    assert evaluating.length_batches(lengths, extra, budget, rows) == expected


# Prompts of very different lengths, so batches need padding, in an order that is not the length order.
QUESTIONS = ["invoice 7 from ACME GmbH, total 12.50 EUR, due 2026-01-31, ref " + "x" * 40, "invoice 1",
             "total 3.00", "vendor Globex, invoice 99, " * 3, "invoice 12 total 8.00 USD"]


def test_batched_generation_answers_each_prompt_as_alone(tiny: Path) -> None:
    model = modeling.load_for_inference(tiny, None, "lora", torch.device("cpu"))
    # Weights drawn at unit scale: a freshly initialised tiny Llama answers every prompt with newlines,
    # which would not show an answer landing on the wrong prompt; these answer each one differently.
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator))
    tokenizer = modeling.load_tokenizer(tiny)
    texts = [prompts.render_prompt(q) for q in QUESTIONS]
    alone = [evaluating.generate(model, tokenizer, [t], 12, torch.device("cpu"))[0] for t in texts]
    # A budget that splits the five prompts into batches of three and two, and one that takes them all.
    for budget in (2 * (max(len(tokenizer(t)["input_ids"]) for t in texts) + 12), 10_000):
        assert evaluating.generate(model, tokenizer, texts, 12, torch.device("cpu"), budget) == alone
    assert len(set(alone)) > 1  # different prompts, different answers: the order is really checked
