"""Keys, dedupe, the hash split and the dataset hash: determinism and stability under appends/reorders."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tuneloop.api.finetune import DatasetSpec
from tuneloop.jobs import datasets, splitting


def ex(prompt: str, completion: str = "x") -> dict[str, str | None]:
    return {"prompt": prompt, "completion": completion, "system": None}


@pytest.mark.parametrize(("a", "b", "same_exact", "same_normalised"), [
    (ex("Hello world"), ex("Hello world"), True, True),
    (ex("Hello  world"), ex("hello world "), False, True),
    (ex("HELLO\tWORLD"), ex("hello world"), False, True),
    (ex("\ufb01le"), ex("file"), False, True),  # NFKC folds the "fi" ligature
    (ex("Hello world"), ex("Hello world", "y"), False, False),
    (ex("Hello world"), ex("Hello, world"), False, False),
], ids=["identical", "spacing+case", "tab+upper", "ligature", "other answer", "punctuation"])
def test_keys(a, b, same_exact: bool, same_normalised: bool) -> None:
    assert (splitting.exact_key(a) == splitting.exact_key(b)) is same_exact
    assert (splitting.normalised_key(a) == splitting.normalised_key(b)) is same_normalised


def test_dedupe_keeps_first_of_exact_and_normalised_duplicates() -> None:
    items = [ex("a"), ex("b"), ex("a"), ex("B "), ex("c")]
    kept, removed = splitting.dedupe(items, [splitting.exact_key, splitting.normalised_key])
    assert kept == [ex("a"), ex("b"), ex("c")]
    assert removed == 2


def test_split_is_deterministic_and_near_the_fraction() -> None:
    keys = [splitting.exact_key(ex(f"example {i}")) for i in range(2000)]
    first = [splitting.is_held_out(k, "seed", 0.2) for k in keys]
    assert first == [splitting.is_held_out(k, "seed", 0.2) for k in keys]
    assert 0.17 < sum(first) / len(first) < 0.23


def test_split_depends_on_seed() -> None:
    keys = [splitting.exact_key(ex(f"example {i}")) for i in range(200)]
    a = [splitting.is_held_out(k, "one", 0.3) for k in keys]
    b = [splitting.is_held_out(k, "two", 0.3) for k in keys]
    assert a != b


def test_appending_data_never_moves_an_example(tmp_path: Path) -> None:
    """The whole preparation run twice: on a file, then on that file with rows appended and the old
    rows shuffled. Every old example lands on the side it was on, and the held-out set only grows."""
    def prepared(rows: list[dict[str, str]], name: str) -> dict[str, set[str]]:
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        spec = DatasetSpec.model_validate({"uri": f"file://{path}", "evalFraction": 0.2, "splitSeed": "s"})
        out = datasets.prepare(spec, tmp_path / name)
        return {"train": {e.prompt for e in out.train}, "held_out": {e.prompt for e in out.held_out}}

    old_rows = [{"prompt": f"example {i}", "completion": "x"} for i in range(300)]
    new_rows = [{"prompt": f"appended {i}", "completion": "y"} for i in range(300)]
    shuffled = old_rows[:]
    random.Random(7).shuffle(shuffled)
    before = prepared(old_rows, "before")
    after = prepared(new_rows[:150] + shuffled + new_rows[150:], "after")
    assert before["train"] and before["held_out"]
    assert before["train"] <= after["train"] and before["held_out"] <= after["held_out"]
    assert after["held_out"] - before["held_out"], "appended examples reach the held-out set too"
    assert len(after["held_out"]) < len(after["train"])


def test_dataset_hash_is_order_independent_and_split_sensitive() -> None:
    train, held = ["k1", "k2", "k3"], ["k4"]
    h = splitting.dataset_hash(train, held)
    shuffled = train[:]
    random.Random(1).shuffle(shuffled)
    assert splitting.dataset_hash(shuffled, held) == h
    assert splitting.dataset_hash(["k1", "k2"], ["k3", "k4"]) != h  # same examples, other sides
    assert splitting.dataset_hash([*train, "k5"], held) != h
