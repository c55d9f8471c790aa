"""Keys, deduplication, the train/held-out split and the dataset hash — all derived from each
example's content, never from its position, so they survive reordering, appends and reruns.

- `exact_key` hashes the canonical JSON of an example's fields; `normalised_key` does the same after
  Unicode NFKC, case folding and whitespace collapsing, so "Hello  World" and "hello world" collide.
- `is_held_out(key, seed, fraction)` maps sha256(seed, key) to [0, 1): an example is held out iff that
  number is below the fraction. Appending data cannot move an existing example between sets.
- `dataset_hash` is sha256 over the sorted (side, exact key) pairs: order-independent, and it changes
  when any example, or the side it lands on, changes.
Pure functions; tests/unit/jobs/test_splitting.py holds the tables.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TypeVar

T = TypeVar("T")
_SPACE = re.compile(r"\s+")
_UNIT = float(2**64)


def _canonical(fields: Mapping[str, str | None]) -> bytes:
    return json.dumps({k: v for k, v in fields.items() if v is not None}, sort_keys=True,
                      ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def normalise(text: str) -> str:
    """NFKC, case-folded, whitespace collapsed to single spaces and trimmed."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def exact_key(fields: Mapping[str, str | None]) -> str:
    """sha256 hex of the example's fields exactly as they are."""
    return hashlib.sha256(_canonical(fields)).hexdigest()


def normalised_key(fields: Mapping[str, str | None]) -> str:
    """sha256 hex of the example's fields after `normalise`."""
    return exact_key({k: None if v is None else normalise(v) for k, v in fields.items()})


def dedupe(items: Sequence[T], keys: Sequence[Callable[[T], str]]) -> tuple[list[T], int]:
    """Keep the first item of every group that shares any key; return the kept items and how many
    were dropped. With `keys=[exact, normalised]` this removes exact and normalised duplicates."""
    seen: list[set[str]] = [set() for _ in keys]
    kept: list[T] = []
    for item in items:
        item_keys = [key(item) for key in keys]
        if any(k in s for k, s in zip(item_keys, seen, strict=True)):
            continue
        for k, s in zip(item_keys, seen, strict=True):
            s.add(k)
        kept.append(item)
    return kept, len(items) - len(kept)


def split_point(key: str, seed: str) -> float:
    """A number in [0, 1) fixed by (seed, key) alone."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _UNIT


def is_held_out(key: str, seed: str, eval_fraction: float) -> bool:
    """Whether the example with this key belongs to the held-out set."""
    return split_point(key, seed) < eval_fraction


def dataset_hash(train_keys: Iterable[str], held_out_keys: Iterable[str]) -> str:
    """Order-independent sha256 of the prepared dataset, split included."""
    lines = sorted([f"train:{k}" for k in train_keys] + [f"eval:{k}" for k in held_out_keys])
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode())
        h.update(b"\n")
    return h.hexdigest()
