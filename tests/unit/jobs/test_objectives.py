"""What each method optimises, as tables: the DPO loss against hand-computed values, summed answer
log-probs, packing into blocks, perplexity, preference scores; then the pieces on a tiny random Llama
(built from a config on CPU): the DPO reference is the base with the adapter disabled, a fresh adapter
scores chance, a few DPO steps move the margin, and text data is learned on every token."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import pytest
import torch

from tuneloop.jobs import datasets, objectives, training


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


# (policy chosen, policy rejected, ref chosen, ref rejected, beta) -> hand-computed loss, rewards
DPO_CASES = [
    # policy and reference agree: logits 0, loss log 2, no reward
    ((-5.0, -7.0, -5.0, -7.0, 0.1), (math.log(2), 0.0, 0.0)),
    # chosen up by 1 nat, rejected down by 1 nat, beta 0.5: rewards +0.5 / -0.5, logits 1
    ((-1.0, -3.0, -2.0, -2.0, 0.5), (-_log_sigmoid(1.0), 0.5, -0.5)),
    # the policy prefers rejected more than the reference does: loss above log 2
    ((-4.0, -1.0, -3.0, -3.0, 1.0), (-_log_sigmoid(-3.0), -1.0, 2.0)),
    # the absolute log-probs do not matter, only the ratios to the reference
    ((-101.0, -203.0, -102.0, -202.0, 2.0), (-_log_sigmoid(4.0), 2.0, -2.0)),
]


@pytest.mark.parametrize(("inputs", "expected"), DPO_CASES)
def test_dpo_loss_matches_the_hand_computed_value(inputs, expected) -> None:
    pc, pr, rc, rr, beta = inputs
    losses, chosen, rejected = objectives.dpo_loss(torch.tensor([pc]), torch.tensor([pr]), torch.tensor([rc]),
                                                   torch.tensor([rr]), beta)
    assert losses.item() == pytest.approx(expected[0], rel=1e-6)
    assert chosen.item() == pytest.approx(expected[1], abs=1e-6)
    assert rejected.item() == pytest.approx(expected[2], abs=1e-6)


def test_dpo_loss_gradient_raises_chosen_and_lowers_rejected() -> None:
    pc, pr = torch.tensor([-2.0], requires_grad=True), torch.tensor([-2.0], requires_grad=True)
    losses, _, _ = objectives.dpo_loss(pc, pr, torch.tensor([-2.0]), torch.tensor([-2.0]), 0.1)
    losses.sum().backward()
    # d/dpc = -beta * sigmoid(-0) = -0.05; d/dpr = +0.05
    assert pc.grad.item() == pytest.approx(-0.05) and pr.grad.item() == pytest.approx(0.05)


def test_sequence_logps_sums_labelled_tokens_only() -> None:
    # vocab 2; position t predicts token t+1. Row 0: labels on tokens 1 and 2 (prompt token 0 masked).
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0], [0.0, 0.0]]])  # p = .5/.5, .75/.25, .5/.5
    labels = torch.tensor([[-100, 1, 0]])
    # token 1 predicted from position 0: log .5; token 0 from position 1: log .75
    assert objectives.sequence_logps(logits, labels).item() == pytest.approx(math.log(0.5) + math.log(0.75))
    assert objectives.sequence_logps(logits, torch.tensor([[-100, -100, -100]])).item() == 0.0


@pytest.mark.parametrize(("documents", "block", "expected"), [
    ([[1, 2], [3]], 8, [[1, 2, 9, 3, 9]]),
    ([[1, 2], [3]], 2, [[1, 2], [9, 3], [9]]),  # a block may start mid-document; nothing is dropped
    ([[1, 2, 3, 4, 5]], 3, [[1, 2, 3], [4, 5, 9]]),
    ([[]], 4, [[9]]),
    ([], 4, []),
])
def test_pack(documents, block, expected) -> None:
    assert objectives.pack(documents, block, eos_id=9) == expected


def test_pack_refuses_blocks_with_nothing_to_predict() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        objectives.pack([[1, 2]], 1, eos_id=9)


@pytest.mark.parametrize(("loss_sum", "tokens", "expected"), [
    (0.0, 10, 1.0),
    (10 * math.log(4), 10, 4.0),  # mean loss log 4: as unsure as a uniform choice among 4
    (3.0, 2, math.exp(1.5)),
    (1e6, 1, math.inf),
])
def test_perplexity(loss_sum, tokens, expected) -> None:
    assert objectives.perplexity(loss_sum, tokens) == pytest.approx(expected)


def test_perplexity_of_nothing_is_nan() -> None:
    assert math.isnan(objectives.perplexity(0.0, 0))


@pytest.mark.parametrize(("margins", "accuracy", "margin"), [
    ([1.0, 2.0, -1.0, 0.5], 0.75, 0.625),
    ([0.0, 0.0], 0.5, 0.0),  # the reference itself: every reward 0, chance
    ([-0.1], 0.0, -0.1),
    ([0.0, 1.0], 0.75, 0.5),  # a tie counts half
])
def test_preference_scores(margins, accuracy, margin) -> None:
    scores = objectives.preference_scores(margins)
    assert scores == {"preference_accuracy": pytest.approx(accuracy), "reward_margin": pytest.approx(margin)}


# --- on a tiny Llama --------------------------------------------------------------------------------


def _lora(model_dir: Path, seed: int = 0):
    from tuneloop.jobs import modeling

    options = modeling.ModelOptions(model_dir=str(model_dir), method="dpo", lora_rank=4, lora_alpha=8,
                                    lora_dropout=0.0, lora_target_modules=("q_proj", "v_proj"), precision="fp32",
                                    seed=seed)
    return modeling.load_trainable(options, torch.device("cpu")), modeling.load_tokenizer(model_dir)


PAIRS = [datasets.Example(prompt=f"invoice {i}", completion=f'{{"total": "1{i}.00"}}', rejected=f"no idea {i}")
         for i in range(6)]


def test_dpo_reference_is_the_base_and_training_moves_the_margin(tiny: Path) -> None:
    from transformers import AutoModelForCausalLM

    model, tokenizer = _lora(tiny)
    pairs = training.encode_examples(tokenizer, PAIRS, 64, "preference")
    assert len(pairs) == 6 and all(len(p) == 2 for p in pairs)
    scorer = training.PairScorer(model, pairs, tokenizer.pad_token_id, torch.device("cpu"),
                                 contextlib.nullcontext, beta=0.5)
    indices = list(range(6))

    # The reference log-probs are the base model's own (the adapter disabled), not the policy's.
    base = AutoModelForCausalLM.from_pretrained(str(tiny), dtype=torch.float32).eval()
    base_scorer = training.PairScorer(None, pairs, tokenizer.pad_token_id, torch.device("cpu"),
                                      contextlib.nullcontext, beta=0.5)
    with torch.no_grad():
        base_chosen, base_rejected, _ = base_scorer._logps(base, indices)
    ref_chosen, ref_rejected = scorer.reference(indices)
    assert torch.allclose(ref_chosen, base_chosen, atol=1e-4) and torch.allclose(ref_rejected, base_rejected, atol=1e-4)

    # A fresh adapter (LoRA B = 0) is the reference: loss log 2 per pair, margin 0, accuracy 0.5.
    loss_sum, n, tokens, margins = scorer.loss(model, indices)
    assert n == 6 and tokens > 0
    assert loss_sum.item() / n == pytest.approx(math.log(2), abs=1e-5)
    assert objectives.preference_scores(margins)["preference_accuracy"] == 0.5

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.05)
    for _ in range(8):
        optimizer.zero_grad()
        loss_sum, n, _, _ = scorer.loss(model, indices)
        (loss_sum / n).backward()
        optimizer.step()
    loss_sum, n, _, margins = scorer.loss(model, indices)
    assert loss_sum.item() / n < math.log(2) - 0.1
    scores = objectives.preference_scores(margins)
    assert scores["preference_accuracy"] == 1.0 and scores["reward_margin"] > 0
    # The reference did not move with the policy.
    again_chosen, _ = scorer.reference(indices)
    assert torch.equal(again_chosen, ref_chosen)
    with torch.no_grad(), model.disable_adapter():
        fresh = training.PairScorer(model, pairs, tokenizer.pad_token_id, torch.device("cpu"),
                                    contextlib.nullcontext, beta=0.5)._logps(model, indices)[0]
    assert torch.allclose(fresh, ref_chosen, atol=1e-4)


def test_held_out_preference_margins_of_a_fresh_adapter_are_chance(tiny: Path) -> None:
    from tuneloop.jobs import evaluating

    model, tokenizer = _lora(tiny)
    margins = evaluating.preference_margins(model.eval(), tokenizer, PAIRS, 0.1, 64, torch.device("cpu"))
    assert len(margins) == 6 and all(abs(m) < 1e-5 for m in margins)


def test_text_blocks_learn_every_token(tiny: Path) -> None:
    from tuneloop.jobs import modeling

    tokenizer = modeling.load_tokenizer(tiny)
    docs = [datasets.Example(prompt="", completion=f"Invoice {i} from Acme totals {i}0.00 EUR.") for i in range(5)]
    items = training.encode_examples(tokenizer, docs, 16, "text")
    lengths = [len(tokenizer(d.completion, add_special_tokens=False)["input_ids"]) + 1 for d in docs]
    assert sum(len(ids) for ids, _ in items) == sum(lengths)  # every token, each document's EOS included
    assert all(len(ids) == 16 for ids, _ in items[:-1]) and 0 < len(items[-1][0]) <= 16
    assert all(ids == labels for ids, labels in items)  # no prompt masking: every token is a target
    batch = training.collate(items, tokenizer.pad_token_id)
    _, n = training._loss_sum(modeling.load_for_inference(tiny, None, "lora", torch.device("cpu")), batch,
                              contextlib.nullcontext)
    assert n == sum(len(ids) - 1 for ids, _ in items)
