"""Two FineTunes of one registered model and the champion alias between them.

Racing gates: the alias ends on the better version whichever gate runs first, and no gate moves the
alias against a champion it did not compare with (the fake registry yields to the event loop on every
call, so the two reconciles interleave at each await, as they do against a real MLflow). The loser:
a FineTune whose version lost champion says so, and where it went, woken by the gate that moved it,
or by its slow periodic look when the move was made by hand."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.unit.operator.fakes import FakeEvents, FakeKube, FakeRay, FakeRegistry
from tuneloop.api import constants
from tuneloop.api.finetune import DatasetSummary
from tuneloop.api.results import JobResult
from tuneloop.operator.handlers.reconciler import Clients, FineTuneReconciler
from tuneloop.operator.logic.plans import VersionInfo
from tuneloop.operator.settings import OperatorSettings

NS = "ns"
H = "h" * 64
SCORES = {"weak": 0.8, "strong": 0.9}


class InterleavingRegistry(FakeRegistry):
    async def find_result(self, *args: Any) -> JobResult | None:
        await asyncio.sleep(0)
        return await super().find_result(*args)

    async def find_version(self, *args: Any) -> VersionInfo | None:
        await asyncio.sleep(0)
        return await super().find_version(*args)

    async def get_alias(self, *args: Any) -> VersionInfo | None:
        await asyncio.sleep(0)
        return await super().get_alias(*args)

    async def set_alias(self, *args: Any) -> None:
        await asyncio.sleep(0)
        await super().set_alias(*args)


def uid_of(name: str) -> str:
    return f"00000000-0000-0000-0000-00000000000{list(SCORES).index(name)}"


def setup() -> tuple[FakeKube, InterleavingRegistry, FineTuneReconciler]:
    kube, registry = FakeKube(), InterleavingRegistry()
    op = FineTuneReconciler(Clients(kube, FakeRay(), registry, FakeEvents()),
                            OperatorSettings(poll_seconds=1, storage_root="/nonexistent"),
                            clock=lambda: datetime(2026, 1, 1, tzinfo=UTC))
    for name in SCORES:
        kube.finetunes[(NS, name)] = {
            "apiVersion": constants.API_VERSION, "kind": "FineTune",
            "metadata": {"name": name, "namespace": NS, "uid": uid_of(name), "generation": 1, "annotations": {}},
            "spec": {"baseModel": {"uri": "hf://m/x"}, "dataset": {"uri": "s3://b/d.jsonl"},
                     "registry": {"modelName": "shared", "trackingUri": "http://mlflow"}},
        }
    return kube, registry, op


@pytest.mark.parametrize("first", list(SCORES))
def test_racing_gates_leave_the_better_version_champion(first: str) -> None:
    kube, registry, op = setup()
    for name, score in SCORES.items():
        asyncio.run(op.reconcile(NS, name))  # launched
        registry.results[(uid_of(name), 1, 1)] = JobResult(
            status="Succeeded", run_id=f"run-{name}", model_uri=f"runs:/run-{name}/model",
            metrics={"exact_match": score}, baseline_metrics={"exact_match": 0.5},
            dataset=DatasetSummary(hash=H, total_rows=10, train_rows=9, eval_rows=1))
    kube.set_rayjob_status(jobDeploymentStatus="Complete", jobStatus="SUCCEEDED")
    order = [first, *(n for n in SCORES if n != first)]

    async def race() -> None:
        await asyncio.gather(*(op.reconcile(NS, name) for name in order))

    asyncio.run(race())
    status = {name: kube.finetunes[(NS, name)]["status"] for name in SCORES}
    assert {s["phase"] for s in status.values()} == {"Succeeded"}
    strong = status["strong"]["model"]["version"]
    assert registry.aliases["champion"] == strong, (registry.aliases, status)
    assert status["strong"]["model"]["alias"] == "champion"
    # Each decision names the champion it was made against, and that is the one its alias moved from.
    for s in status.values():
        history = s["aliasHistory"][-1]
        assert history.get("previousVersion") == s["promotion"].get("championVersion") or history["alias"] != "champion"
    if first == "strong":  # the weak gate ran second and compared itself with the strong champion
        assert status["weak"]["model"]["alias"] == "challenger"
        assert status["weak"]["promotion"]["championVersion"] == strong


def succeed(kube: FakeKube, registry: FakeRegistry, op: FineTuneReconciler, name: str) -> dict[str, Any]:
    asyncio.run(op.reconcile(NS, name))
    registry.results[(uid_of(name), 1, 1)] = JobResult(
        status="Succeeded", run_id=f"run-{name}", model_uri=f"runs:/run-{name}/model",
        metrics={"exact_match": SCORES[name]}, baseline_metrics={"exact_match": 0.5},
        dataset=DatasetSummary(hash=H, total_rows=10, train_rows=9, eval_rows=1))
    for key, rayjob in kube.rayjobs.items():
        if key[1].startswith(name):
            rayjob["status"] = {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}
    asyncio.run(op.reconcile(NS, name))
    status: dict[str, Any] = kube.finetunes[(NS, name)]["status"]
    assert status["phase"] == "Succeeded", status
    return status


def test_the_previous_champion_says_it_lost_the_alias_and_where_it_went() -> None:
    kube, registry, op = setup()
    weak = succeed(kube, registry, op, "weak")
    assert weak["model"]["alias"] == "champion" and registry.aliases["champion"] == "1"
    strong = succeed(kube, registry, op, "strong")
    assert strong["model"]["alias"] == "champion" and registry.aliases["champion"] == "2"
    # The gate that moved the alias woke the previous holder...
    assert kube.finetunes[(NS, "weak")]["metadata"]["annotations"][constants.ANNOTATION_ALIAS_CHECK] == "shared/1->2"
    assert asyncio.run(op.reconcile(NS, "weak")) == 600
    weak = kube.finetunes[(NS, "weak")]["status"]
    assert weak["model"].get("alias") is None  # nothing else holds it: challenger is not set by a loss
    moved = weak["aliasHistory"][-1]
    assert (moved["alias"], moved["version"], moved["previousVersion"]) == ("champion", "2", "1")
    assert "FineTune ns/strong" in moved["reason"]
    ready = next(c for c in weak["conditions"] if c["type"] == "Ready")
    promoted = next(c for c in weak["conditions"] if c["type"] == "Promoted")
    assert (ready["status"], ready["reason"]) == ("True", "Superseded")
    assert (promoted["status"], promoted["reason"]) == ("False", "Superseded")
    assert ("Normal", "Superseded") in [e[:2] for e in op.clients.events.events]  # type: ignore[attr-defined]
    assert asyncio.run(op.reconcile(NS, "weak")) == 600 and len(kube.finetunes[(NS, "weak")]["status"][
        "aliasHistory"]) == 2  # said once

    # ...and a move made by hand in MLflow is seen by the slow periodic look of both.
    registry.aliases["champion"] = "1"
    asyncio.run(op.reconcile(NS, "weak"))
    asyncio.run(op.reconcile(NS, "strong"))
    assert kube.finetunes[(NS, "weak")]["status"]["model"]["alias"] == "champion"
    strong = kube.finetunes[(NS, "strong")]["status"]
    assert strong["model"].get("alias") != "champion" and strong["aliasHistory"][-1]["version"] == "1"


def test_an_unreachable_registry_leaves_a_succeeded_object_as_it_is() -> None:
    kube, registry, op = setup()
    before = succeed(kube, registry, op, "weak")
    registry.down = True
    assert asyncio.run(op.reconcile(NS, "weak")) == 600
    assert kube.finetunes[(NS, "weak")]["status"] == before
