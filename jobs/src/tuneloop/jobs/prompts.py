"""How an example becomes text: the prompt template the model is trained and evaluated with, the
few-shot prompt of the prompt baseline, and where a generated answer ends.

Training, evaluation, the baseline and the served pyfunc model all go through `render_prompt`, so the
fine-tuned model is always asked in the format it learned, and the baseline sees the same format with
k solved examples in front.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

INSTRUCTION_HEADER = "### Instruction:\n"
RESPONSE_HEADER = "### Response:\n"
# A generated answer ends at the model's EOS or where it starts a new example on its own.
ANSWER_STOP = "\n###"
SHOT_SEPARATOR = "\n\n"


def chat_to_prompt(messages: Sequence[Mapping[str, str]]) -> str:
    """The conversation before the final assistant turn, one `role: content` line per message."""
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


def render_prompt(prompt: str, system: str | None = None) -> str:
    """The text the model continues; the answer follows it directly."""
    head = f"{system.strip()}\n\n" if system else ""
    return f"{head}{INSTRUCTION_HEADER}{prompt.strip()}\n\n{RESPONSE_HEADER}"


def render_target(completion: str) -> str:
    """The answer as trained (the tokenizer's EOS is appended at tokenisation)."""
    return completion.strip()


def render_few_shot(prompt: str, shots: Sequence[tuple[str, str]], system: str | None = None) -> str:
    """`shots` solved (prompt, completion) pairs, then the question; the system text goes first once."""
    parts = [render_prompt(p) + render_target(c) for p, c in shots]
    parts.append(render_prompt(prompt))
    head = f"{system.strip()}\n\n" if system else ""
    return head + SHOT_SEPARATOR.join(parts)


def cut_answer(generated: str) -> str:
    """The answer part of generated text: up to the first stop marker, trimmed."""
    end = generated.find(ANSWER_STOP)
    return (generated if end < 0 else generated[:end]).strip()


def encode(tokenizer: object, prompt_text: str, target_text: str, max_length: int) -> tuple[list[int], list[int]]:
    """Token ids of prompt + target + EOS and the labels (-100 on the prompt: only the answer is
    learned), truncated to `max_length`."""
    prompt_ids = list(tokenizer(prompt_text)["input_ids"])  # type: ignore[operator]
    target_ids = list(tokenizer(target_text, add_special_tokens=False)["input_ids"])  # type: ignore[operator]
    target_ids.append(int(tokenizer.eos_token_id))  # type: ignore[attr-defined]
    ids = (prompt_ids + target_ids)[:max_length]
    labels = ([-100] * len(prompt_ids) + target_ids)[:max_length]
    return ids, labels
