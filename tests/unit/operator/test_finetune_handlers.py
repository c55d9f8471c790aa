"""The FineTune nudge runs only for watch events that change what wakes the daemon early (#11: every
new object's ~3 events used to go through kopf's handler invocation and an INFO log line each)."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
import pytest

from tuneloop.api import constants
from tuneloop.operator.handlers import finetune

RETRAIN, ALIAS = constants.ANNOTATION_RETRAIN_REQUEST, constants.ANNOTATION_ALIAS_CHECK


def body(generation: int = 1, **annotations: str) -> kopf.Body:
    return kopf.Body({"metadata": {"name": "ft", "generation": generation, "annotations": annotations}})


def memo(seen: Any = None) -> kopf.Memo:
    m = kopf.Memo()
    if seen is not None:
        m.seen = seen
    return m


SEEN = (1, "r1", "a1")


@pytest.mark.parametrize(("case", "event", "expected"), [
    ("nothing seen yet (the first event)", (body(), memo()), True),
    ("status write: same generation and annotations", (body(1, **{RETRAIN: "r1", ALIAS: "a1"}), memo(SEEN)), False),
    ("an unrelated annotation", (body(1, **{RETRAIN: "r1", ALIAS: "a1", "x": "y"}), memo(SEEN)), False),
    ("spec changed: new generation", (body(2, **{RETRAIN: "r1", ALIAS: "a1"}), memo(SEEN)), True),
    ("retrain requested", (body(1, **{RETRAIN: "r2", ALIAS: "a1"}), memo(SEEN)), True),
    ("retrain request removed", (body(1, **{ALIAS: "a1"}), memo(SEEN)), True),
    ("alias check asked", (body(1, **{RETRAIN: "r1", ALIAS: "a2"}), memo(SEEN)), True),
])
def test_changed(case: str, event: tuple[kopf.Body, kopf.Memo], expected: bool) -> None:
    b, m = event
    assert finetune.changed(body=b, memo=m) is expected, case


def test_the_nudge_is_registered_with_the_filter() -> None:
    handlers = [h for h in kopf.get_default_registry()._watching.get_all_handlers() if h.fn is finetune.nudge]
    assert [h.when for h in handlers] == [finetune.changed]


def test_the_nudge_wakes_the_daemon_and_remembers_the_key() -> None:
    m = memo(SEEN)
    asyncio.run(finetune.nudge(body=body(2, **{RETRAIN: "r1", ALIAS: "a1"}), memo=m))
    assert m.wake.is_set() and m.seen == (2, "r1", "a1")
    assert not finetune.changed(body=body(2, **{RETRAIN: "r1", ALIAS: "a1"}), memo=m)


def test_the_first_look_is_a_copy_without_managed_fields() -> None:
    raw = {"apiVersion": constants.API_VERSION, "kind": constants.FINETUNE_KIND,
           "metadata": {"name": "ft", "uid": "u", "generation": 3, "annotations": {RETRAIN: "r1"},
                        "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]},
           "spec": {"baseModel": {"uri": "hf://m"}}, "status": {"phase": "Pending"}}
    live = kopf.Body(raw)
    copied = finetune.snapshot(live)
    assert copied == {**raw, "metadata": {"name": "ft", "uid": "u", "generation": 3, "annotations": {RETRAIN: "r1"}}}
    raw["spec"]["baseModel"]["uri"] = "hf://changed"  # kopf's body changes later; the first look does not
    raw["metadata"]["annotations"][RETRAIN] = "r2"
    assert copied["spec"]["baseModel"]["uri"] == "hf://m" and copied["metadata"]["annotations"][RETRAIN] == "r1"
