"""What each method optimises and how its held-out score is read, apart from the model plumbing:

- supervised (instruction, chat, completion): cross-entropy over the answer tokens (in `training`);
- continued pretraining (format text): every document tokenised with an EOS after it, the stream packed
  into `maxSeqLength` blocks, cross-entropy over every token; perplexity is exp(mean token loss);
- DPO (method dpo): the loss of Rafailov et al. 2023 (arXiv 2305.18290, eq. 7) on summed answer log-probs,
  with the frozen base — the LoRA model with its adapter disabled — as the reference.

Why not TRL's loss: it co-installs with our pins (trl 1.16 resolves with transformers 5.23 and peft 0.21),
but it is a method of `DPOTrainer` bound to its config and to the Hugging Face Trainer loop, not a
function, and the package drags in accelerate and datasets (multiprocess, dill, xxhash) for the four
lines below. Our loop is Ray Train's (DDP, checkpoints, resume), so the loss lives here, checked
against a hand-computed case in tests/unit/jobs/test_objectives.py.

The pure parts (packing, perplexity, preference scores) are standard library; torch is imported inside
the functions that need it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

DEFAULT_DPO_BETA = 0.1


def pack(documents: Sequence[Sequence[int]], block_size: int, eos_id: int) -> list[list[int]]:
    """Token ids of every document, each followed by EOS, concatenated and cut into `block_size` blocks
    (the last may be shorter; nothing is dropped). Attention runs across a document boundary inside a
    block, as in the usual `group_texts` packing; EOS marks where one ends."""
    if block_size < 2:
        raise ValueError(f"block_size must be at least 2, got {block_size}")
    stream: list[int] = []
    for ids in documents:
        stream.extend(ids)
        stream.append(eos_id)
    return [stream[i: i + block_size] for i in range(0, len(stream), block_size)]


def perplexity(loss_sum: float, tokens: int) -> float:
    """exp of the mean token loss (natural log); nan when no token was scored."""
    if tokens <= 0:
        return math.nan
    mean = loss_sum / tokens
    return math.exp(mean) if mean < 700 else math.inf  # exp overflows a float past ~709


def preference_scores(margins: Sequence[float]) -> dict[str, float]:
    """preference_accuracy — the share of pairs whose implicit reward prefers chosen, a tie counting
    half (the reference model itself has reward 0 for every answer, so it scores 0.5: chance) — and
    reward_margin, the mean chosen-minus-rejected reward."""
    if not margins:
        return {"preference_accuracy": math.nan, "reward_margin": math.nan}
    wins = sum(1.0 if m > 0 else 0.5 if m == 0 else 0.0 for m in margins)
    return {"preference_accuracy": wins / len(margins), "reward_margin": sum(margins) / len(margins)}


def sequence_logps(logits: Any, labels: Any) -> Any:
    """Per row: the sum of log p(token) over the labelled tokens (labels -100 are left out), predicting
    token t+1 from position t. Shapes: logits [B, T, V], labels [B, T] -> [B]."""
    import torch

    shifted_logits = logits[:, :-1, :].float()
    shifted_labels = labels[:, 1:]
    mask = shifted_labels != -100
    safe = torch.where(mask, shifted_labels, torch.zeros_like(shifted_labels))
    token_logps = torch.gather(torch.log_softmax(shifted_logits, dim=-1), 2, safe.unsqueeze(-1)).squeeze(-1)
    return (token_logps * mask).sum(dim=-1)


def dpo_loss(policy_chosen: Any, policy_rejected: Any, ref_chosen: Any, ref_rejected: Any,
             beta: float) -> tuple[Any, Any, Any]:
    """Per pair: the DPO loss -log sigmoid(beta * ((pc - rc) - (pr - rr))) and the implicit rewards
    beta * (p - r) of the chosen and rejected answers (detached). Inputs are summed log-probs [B]."""
    import torch.nn.functional as F

    chosen_rewards = beta * (policy_chosen - ref_chosen)
    rejected_rewards = beta * (policy_rejected - ref_rejected)
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards)
    return losses, chosen_rewards.detach(), rejected_rewards.detach()
