"""A promotion made by this operator wakes the ModelDeployments following that model at once (they re-read
a served alias only every TUNELOOP_MAX_POLL_SECONDS otherwise, #11): the registry of followers, the
FineTune controller telling it after it set the alias, and the deployment controller registering its daemon."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from tests.unit.operator.fakes import FakeEvents
from tests.unit.operator.test_reconciler import World
from tuneloop.api import constants
from tuneloop.operator.handlers.alias_followers import AliasFollowers
from tuneloop.operator.handlers.deployment_reconciler import DeploymentReconciler
from tuneloop.operator.logic.deploying import ModelLookup
from tuneloop.operator.logic.plans import VersionInfo
from tuneloop.operator.settings import OperatorSettings

MLFLOW = "http://mlflow:5000"


def test_moved_wakes_the_followers_of_that_model_at_that_registry_only() -> None:
    followers, inv, inv_slash, other_model, other_registry = AliasFollowers(), *(asyncio.Event() for _ in range(4))
    followers.follow(MLFLOW, "inv", inv)
    followers.follow(MLFLOW + "/", "inv", inv_slash)
    followers.follow(MLFLOW, "other", other_model)
    followers.follow("http://elsewhere", "inv", other_registry)
    assert followers.moved(MLFLOW + "/", "inv") == 2
    assert inv.is_set() and inv_slash.is_set() and not other_model.is_set() and not other_registry.is_set()


def test_a_deployment_gone_from_memory_is_forgotten() -> None:
    followers = AliasFollowers()
    followers.follow(MLFLOW, "inv", asyncio.Event())
    gc.collect()
    assert followers.moved(MLFLOW, "inv") == 0


def test_a_promotion_wakes_the_deployments_following_the_model() -> None:
    w = World()
    followers, follows, unrelated = AliasFollowers(), asyncio.Event(), asyncio.Event()
    w.op.followers = followers
    registry = w.body["spec"]["registry"]
    followers.follow(registry["trackingUri"], registry["modelName"], follows)
    followers.follow(registry["trackingUri"], "another-model", unrelated)
    w.reconcile()
    w.job_succeeds()
    assert not follows.is_set()  # nothing moved yet
    w.reconcile()
    assert w.registry.aliases == {"champion": "1"} and w.status["phase"] == "Succeeded"
    assert follows.is_set() and not unrelated.is_set()


class Kube:
    def __init__(self, body: dict[str, Any]) -> None:
        self.body, self.rayservices = body, []

    async def get_modeldeployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.body

    async def write_modeldeployment_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.body["status"] = status

    async def write_modeldeployment_status_if(self, namespace: str, name: str, status: dict[str, Any],
                                              resource_version: str) -> bool:
        self.body["status"] = status
        return True

    async def get_rayservice(self, namespace: str, name: str) -> dict[str, Any] | None:
        return None

    async def apply_rayservice(self, body: dict[str, Any]) -> None:
        self.rayservices.append(body)


class Registry:
    async def lookup_model(self, tracking_uri: str, model: str, alias: str | None, version: str | None
                           ) -> ModelLookup:
        return ModelLookup(VersionInfo(model, "1", tags={constants.TAG_BASE_MODEL: "hf://m/x"}),
                           aliases={"champion": "1"})


def deployment(**model: Any) -> dict[str, Any]:
    return {"apiVersion": constants.API_VERSION, "kind": constants.DEPLOYMENT_KIND,
            "metadata": {"name": "md", "namespace": "ns", "uid": "u1", "generation": 1, "resourceVersion": "1"},
            "spec": {"model": {"name": "inv", "trackingUri": MLFLOW, **model},
                     "serving": {"mode": "RayService", "resources": {"gpus": 1}}}}


def test_a_deployment_following_an_alias_registers_its_wake_event_and_a_pinned_one_does_not() -> None:
    followers = AliasFollowers()
    for model, woken in (({"alias": "champion"}, 1), ({"version": "1"}, 0)):
        kube, wake = Kube(deployment(**model)), asyncio.Event()
        op = DeploymentReconciler(kube, None, Registry(), FakeEvents(), OperatorSettings(),  # type: ignore[arg-type]
                                  followers=followers)
        asyncio.run(op.reconcile("ns", "md", None, wake))
        assert kube.rayservices, "the look went through to the RayService"
        assert followers.moved(MLFLOW, "inv") == woken and wake.is_set() == bool(woken)
