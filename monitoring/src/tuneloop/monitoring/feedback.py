"""Labelled feedback as training examples for a retrain: the requests of a traffic window that a person
answered (the latest correction, else the label), PII-scrubbed with the training job's scrubber, deduplicated
among themselves and against the original dataset with the training job's keys (exact and normalised: case,
Unicode form and whitespace do not make a new example), and hashed so the retrain records exactly which
examples it added.

The traffic log is already scrubbed when written (with Presidio's recognizers where the pii extra is
installed), and the retrain's data preparation scrubs these examples again with the job's scrubber; this
second pass keeps the promise when the window came from elsewhere. It uses the regex engine unless
TUNELOOP_PII_ENGINE names one: the checks run in the operator's process, and Presidio brings spaCy, which
imports torch (~760 MB, and up to minutes on a busy node: building it in a thread there lagged an event
loop by up to 3 s). Examples carry `prompt` and `completion`, the training job's default
field names.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneloop.jobs import pii, splitting
from tuneloop.monitoring import checking, columns


@dataclass(frozen=True)
class FeedbackSet:
    """What a window's feedback adds to the original dataset."""

    examples: list[dict[str, str]]
    labelled: int  # requests in the window with an expected answer
    duplicates: int  # dropped: the same example twice in the feedback
    already_known: int  # dropped: the original dataset has it
    pii_redactions: dict[str, int] = field(default_factory=dict)
    hash: str = ""  # sha256 over the examples' sorted exact keys (order-independent)


_lock = threading.Lock()
_scrubber: pii.Scrubber | None = None


def scrubber() -> pii.Scrubber:
    """The feedback set's scrubber: TUNELOOP_PII_ENGINE's engine, else the regex one (see the module doc)."""
    global _scrubber
    with _lock:
        if _scrubber is None:
            _scrubber = pii.build_scrubber(os.environ.get(pii.ENGINE_ENV) or "regex")
        return _scrubber


def content_keys(example: Mapping[str, str | None]) -> tuple[str, str]:
    """The training job's (exact, normalised) keys of an example's content fields."""
    content = {k: example.get(k) for k in ("system", "prompt", "completion", "rejected")}
    return splitting.exact_key(content), splitting.normalised_key(content)


def build_feedback_set(window: Any, original: Iterable[Mapping[str, str | None]]) -> FeedbackSet:
    """The new examples the window's feedback gives, given the `original` dataset's examples (dicts with
    prompt, completion and optional system/rejected, as the prepared train and held-out files hold them)."""
    known = {k for example in original for k in content_keys(example)}
    counts: Counter[str] = Counter()
    candidates = []
    scrub = scrubber().scrub
    for prompt, answer in zip(window[columns.PROMPT].tolist(), checking.expected_answers(window), strict=True):
        if answer is None or not isinstance(prompt, str) or not prompt.strip():
            continue
        clean_prompt, found_prompt = scrub(prompt)
        clean_answer, found_answer = scrub(answer)
        counts.update(found_prompt)
        counts.update(found_answer)
        candidates.append({"prompt": clean_prompt, "completion": clean_answer})
    fresh = [e for e in candidates if not set(content_keys(e)) & known]
    kept, duplicates = splitting.dedupe(fresh, [lambda e: content_keys(e)[0], lambda e: content_keys(e)[1]])
    digest = hashlib.sha256("\n".join(sorted(content_keys(e)[0] for e in kept)).encode()).hexdigest()
    return FeedbackSet(examples=kept, labelled=len(candidates), duplicates=duplicates,
                       already_known=len(candidates) - len(fresh), pii_redactions=dict(sorted(counts.items())),
                       hash=digest)


def write_jsonl(feedback: FeedbackSet, path: Path) -> None:
    """The examples as a JSONL dataset file (one {"prompt", "completion"} object per line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for example in feedback.examples:
            f.write(json.dumps(example, ensure_ascii=False) + "\n")
