"""A RayService-mode ModelDeployment's quiet look reads its RayService from the operator's watch instead of a
GET (#11: the GET was ~20% of an idle look); every other look, and a quiet look whose RayService the watch has
not seen, GETs it. The watch handler keeps the reconciler's view: a snapshot per event, gone on DELETED.
The real watch on a real apiserver is shown by tests/api/test_chart_rbac.py (listed and watched as the
chart's ServiceAccount) and tests/api/test_modeldeployment_rayservice.py (the story, KubeRay's status
changes followed)."""

from __future__ import annotations

import asyncio
import copy
from dataclasses import replace
from datetime import timedelta
from typing import Any

import kopf
import pytest

from tests.unit.operator.fakes import FakeEvents
from tuneloop.operator.handlers import deployment
from tuneloop.operator.handlers.deployment_reconciler import DeploymentReconciler
from tuneloop.operator.logic import deploying
from tuneloop.operator.logic.deploying import ModelLookup
from tuneloop.operator.logic.plans import VersionInfo
from tuneloop.operator.settings import OperatorSettings

NS, NAME = "ns", "md"
MD = {"apiVersion": "tuneloop.io/v1alpha1", "kind": "ModelDeployment",
      "metadata": {"namespace": NS, "name": NAME, "generation": 1, "uid": "u1", "resourceVersion": "1"},
      "spec": {"model": {"name": "m", "alias": "champion", "trackingUri": "http://mlflow"},
               "serving": {"mode": "RayService", "replicas": 1, "resources": {"cpu": "1"}}}}


class Kube:
    """The ModelDeployment and its RayService in memory; counts RayService GETs and applies."""

    def __init__(self) -> None:
        self.md = copy.deepcopy(MD)
        self.rayservice: dict[str, Any] | None = None
        self.gets = 0
        self.applies = 0

    async def get_modeldeployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.md)

    async def write_modeldeployment_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.md["status"] = status

    async def write_modeldeployment_status_if(self, namespace: str, name: str, status: dict[str, Any],
                                              resource_version: str) -> bool:
        self.md["status"] = status
        return True

    async def get_rayservice(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.gets += 1
        return copy.deepcopy(self.rayservice)

    async def apply_rayservice(self, body: dict[str, Any]) -> None:
        self.applies += 1
        self.rayservice = copy.deepcopy(body)


class Registry:
    def __init__(self, version: str = "1") -> None:
        self.version = version

    async def lookup_model(self, tracking_uri: str, model: str, alias: str | None, version: str | None
                           ) -> ModelLookup:
        return ModelLookup(VersionInfo(model, self.version, f"run{self.version}", f"s3://m/{self.version}",
                                       ("champion",)))


def world() -> tuple[DeploymentReconciler, Kube]:
    kube = Kube()
    reconciler = DeploymentReconciler(kube, None, Registry(), FakeEvents(),  # type: ignore[arg-type]
                                      OperatorSettings(poll_seconds=10, storage_root="/nonexistent"))
    asyncio.run(reconciler.reconcile(NS, NAME))  # the first look creates the RayService
    assert kube.applies == 1 and kube.rayservice is not None
    return reconciler, kube


def kuberay_running(kube: Kube) -> dict[str, Any]:
    """Our RayService as KubeRay reports it once our application runs: Ready, RUNNING, generation observed."""
    running = copy.deepcopy(kube.rayservice)
    assert running is not None
    running["metadata"]["generation"] = 1
    running["status"] = {"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "True"}],
                         "activeServiceStatus": {"applicationStatuses": {f"{NS}.{NAME}": {"status": "RUNNING"}}}}
    return running


@pytest.mark.parametrize(("case", "watched", "given_body", "gets", "applies"), [
    ("quiet look, the watch has it: no GET, and no re-apply of what it shows", True, True, 0, 0),
    ("quiet look, the watch has not seen it: GET", False, True, 1, 0),
    ("a look after a change: GET, whatever the watch holds", True, False, 1, 0),
])
def test_which_looks_read_the_rayservice_from_the_watch(case: str, watched: bool, given_body: bool, gets: int,
                                                        applies: int) -> None:
    reconciler, kube = world()
    kube.gets = kube.applies = 0
    if watched:
        reconciler.saw_rayservice(NS, NAME, copy.deepcopy(kube.rayservice))
    body = kube.md if given_body else None
    asyncio.run(reconciler.reconcile(NS, NAME, copy.deepcopy(body) if body else None))
    assert (kube.gets, kube.applies) == (gets, applies), case


def test_what_the_watch_shows_is_what_the_quiet_look_decides_on() -> None:
    """The watch's RayService, not the apiserver's, is the one looked at: the watch already shows KubeRay's
    Ready with our application RUNNING, so the look says Serving; the apiserver's copy (no status) would
    have kept it Deploying."""
    reconciler, kube = world()
    running = kuberay_running(kube)
    reconciler.saw_rayservice(NS, NAME, running)
    asyncio.run(reconciler.reconcile(NS, NAME))  # a GET: KubeRay has written nothing there
    assert kube.md["status"]["phase"] == "Deploying"
    asyncio.run(reconciler.reconcile(NS, NAME, copy.deepcopy(kube.md)))
    assert kube.md["status"]["phase"] == "Serving" and kube.md["status"]["servedVersion"] == "1"


def test_the_watch_handler_keeps_a_snapshot_and_forgets_a_deleted_rayservice() -> None:
    reconciler, kube = world()
    memo = kopf.Memo()
    memo.deployment_reconciler = reconciler
    raw = copy.deepcopy(kube.rayservice)
    assert raw is not None
    raw["metadata"]["managedFields"] = [{"manager": "kuberay"}]
    raw["status"] = {"conditions": [{"type": "Ready", "status": "True"}]}

    def event(type_: str) -> None:
        asyncio.run(deployment.watch_rayservice(type=type_, body=kopf.Body(raw), name=NAME,  # type: ignore[call-arg]
                                                namespace=NS, memo=memo))

    event("ADDED")
    seen = reconciler.watched_rayservices[(NS, NAME)]
    assert "managedFields" not in seen["metadata"] and seen["status"] == raw["status"]
    event("DELETED")
    assert (NS, NAME) not in reconciler.watched_rayservices


def test_the_watch_handler_before_start_up_finished_does_nothing() -> None:
    asyncio.run(deployment.watch_rayservice(type="ADDED", body=kopf.Body({"metadata": {}}), name=NAME,  # type: ignore[call-arg]
                                            namespace=NS, memo=kopf.Memo()))


# --- a quiet look that observes what the last steady look observed does not decide again ----------------

def serving_world(monkeypatch: pytest.MonkeyPatch) -> tuple[DeploymentReconciler, Kube, list[int]]:
    """A RayService-mode deployment Serving v1, its RayService on the watch; counts decide_deployment calls."""
    reconciler, kube = world()
    running = kuberay_running(kube)
    kube.rayservice = running  # the apiserver and the watch agree
    reconciler.saw_rayservice(NS, NAME, copy.deepcopy(running))
    asyncio.run(reconciler.reconcile(NS, NAME))
    assert kube.md["status"]["phase"] == "Serving"
    decided = [0]
    real = deploying.decide_deployment

    def counting(o: Any, p: Any) -> Any:
        decided[0] += 1
        return real(o, p)

    monkeypatch.setattr(deploying, "decide_deployment", counting)
    return reconciler, kube, decided


def quiet(reconciler: DeploymentReconciler, kube: Kube) -> float | None:
    return asyncio.run(reconciler.reconcile(NS, NAME, copy.deepcopy(kube.md)))


def test_a_quiet_look_that_sees_nothing_new_skips_deciding(monkeypatch: pytest.MonkeyPatch) -> None:
    reconciler, kube, decided = serving_world(monkeypatch)
    status = copy.deepcopy(kube.md["status"])
    assert quiet(reconciler, kube) == 10  # decides once more: the first steady look it can compare with
    assert [quiet(reconciler, kube) for _ in range(3)] == [10, 10, 10]
    assert decided == [1] and kube.md["status"] == status and kube.applies == 1


@pytest.mark.parametrize("change", ["the alias moved", "KubeRay reports a failure", "the status was written",
                                    "a look after a change"])
def test_anything_new_is_decided_on(monkeypatch: pytest.MonkeyPatch, change: str) -> None:
    reconciler, kube, decided = serving_world(monkeypatch)
    quiet(reconciler, kube)
    assert decided == [1]
    if change == "the alias moved":
        reconciler.registry = Registry(version="2")  # type: ignore[assignment]
        quiet(reconciler, kube)
        assert kube.applies == 2 and kube.md["status"]["rollout"]["version"] == "2"  # v2 written to the RayService
    elif change == "KubeRay reports a failure":
        rs = copy.deepcopy(reconciler.watched_rayservices[(NS, NAME)])
        rs["status"]["activeServiceStatus"]["applicationStatuses"][f"{NS}.{NAME}"] = {"status": "DEPLOY_FAILED",
                                                                                       "message": "boom"}
        reconciler.saw_rayservice(NS, NAME, rs)
        quiet(reconciler, kube)
        assert kube.md["status"]["phase"] == "Degraded"
    elif change == "the status was written":  # by the monitor daemon, say
        kube.md["status"]["monitorHistory"] = []
        kube.md["status"]["lastMonitor"] = {"time": "2026-11-23T12:00:00Z", "samples": 3}
        quiet(reconciler, kube)
    else:
        asyncio.run(reconciler.reconcile(NS, NAME))
    assert decided == [2], change


def test_skipping_is_safe_the_steady_plan_does_not_depend_on_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a skipped look would have decided, an hour later: nothing to do, the same status."""
    reconciler, kube, _ = serving_world(monkeypatch)
    quiet(reconciler, kube)
    steady, requeue = reconciler.steady[(NS, NAME)]
    later = replace(steady, now=steady.now + timedelta(hours=1))
    plan = deploying.decide_deployment(later, reconciler.policy)
    assert deploying.is_steady(later, plan) and plan.requeue_seconds == requeue
    assert plan.status.to_k8s() == steady.status.to_k8s()
