"""The ModelDeployment daemon's looks: a quiet look (a whole poll interval passed, nothing woke it) reads the
object from kopf's watch-fed body; every other look (after a rollout step, a lost race, a change) passes
None, so the reconciler GETs the object (#11: the GET was ~30% of an idle Serving deployment's look)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf
import pytest

from tuneloop.operator.handlers import deployment

POLL = 0.02


class Flag:
    def __init__(self) -> None:
        self.set = False

    def __bool__(self) -> bool:
        return self.set


class ScriptedReconciler:
    """Returns the scripted delays in turn and records what each look was given; stops the daemon after."""

    def __init__(self, delays: list[float | None], stopped: Flag, memo: kopf.Memo, wake_after: set[int]) -> None:
        self.delays, self.stopped, self.memo, self.wake_after = delays, stopped, memo, wake_after
        self.looks: list[dict[str, Any] | None] = []
        self.settings = type("S", (), {"poll_seconds": POLL, "max_poll_seconds": 1.0})()

    async def reconcile(self, namespace: str, name: str, body: dict[str, Any] | None) -> float | None:
        self.looks.append(body)
        i = len(self.looks) - 1
        if i in self.wake_after:
            asyncio.get_running_loop().call_later(POLL / 4, self.memo.wake.set)
        if i + 1 >= len(self.delays):
            self.stopped.set = True
        return self.delays[i]


def run(delays: list[float | None], wake_after: set[int] = frozenset()) -> list[dict[str, Any] | None]:  # type: ignore[assignment]
    raw = {"metadata": {"name": "md", "namespace": "ns", "generation": 1, "resourceVersion": "7",
                        "managedFields": [{"manager": "kubectl"}]}, "status": {"phase": "Serving"}}
    body, memo, stopped = kopf.Body(raw), kopf.Memo(), Flag()
    memo.wake = asyncio.Event()
    memo.deployment_reconciler = reconciler = ScriptedReconciler(delays, stopped, memo, set(wake_after))
    asyncio.run(deployment.reconcile_daemon(stopped=stopped, name="md", namespace="ns", body=body,  # type: ignore[arg-type]
                                            memo=memo, logger=logging.getLogger("test")))
    return reconciler.looks


def kinds(looks: list[dict[str, Any] | None]) -> list[str]:
    return ["GET" if look is None else "body" for look in looks]


@pytest.mark.parametrize(("case", "delays", "wake_after", "expected"), [
    ("first look: the body kopf started with", [POLL], set(), ["body"]),
    ("Serving: quiet looks read the watch-fed body", [POLL, POLL, POLL], set(), ["body", "body", "body"]),
    ("a rollout step or a lost race: GET", [POLL / 2, POLL, POLL], set(), ["body", "GET", "body"]),
    ("woken by a change: GET", [POLL * 50, POLL, POLL], {0}, ["body", "GET", "body"]),
])
def test_which_looks_read_the_watch_fed_body(case: str, delays: list[float], wake_after: set[int],
                                            expected: list[str]) -> None:
    assert kinds(run(delays, wake_after)) == expected


def test_a_quiet_look_is_the_body_without_managed_fields() -> None:
    looks = run([POLL, POLL])
    quiet = looks[1]
    assert quiet is not None and "managedFields" not in quiet["metadata"]
    assert quiet["metadata"]["resourceVersion"] == "7" and quiet["status"] == {"phase": "Serving"}


@pytest.mark.parametrize(("delay", "woken", "quiet"), [
    (10.0, False, True),    # Serving: the alias re-check after a whole poll interval
    (120.0, False, True),   # a wait backed off past the poll interval
    (2.0, False, False),    # a rollout step
    (1.0, False, False),    # after a lost race
    (10.0, True, False),    # woken by a change
    (None, False, False),   # on change only
])
def test_next_look_is_quiet(delay: float | None, woken: bool, quiet: bool) -> None:
    from tuneloop.operator.logic.deploying import next_look_is_quiet

    assert next_look_is_quiet(delay, woken, 10.0) is quiet
