"""Two FineTunes of one registered model pass their gates at the same time: the champion alias ends
on the better version whichever gate runs first, and no gate moves the alias against a champion it
did not compare with. The fake registry yields to the event loop on every call, so the two
reconciles interleave at each await, as they do against a real MLflow."""

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
