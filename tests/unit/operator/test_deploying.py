"""decide_deployment as a table of named cases: resolution, when to send the config, when Ready is
earned, Serve's failure states, waits; and the serve config's match and merge rules."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tuneloop.api import conditions as c
from tuneloop.api import constants
from tuneloop.api.deployment import ModelDeploymentSpec, ModelDeploymentStatus, RolloutStatus
from tuneloop.operator.logic import deploying, serveconfig
from tuneloop.operator.logic.deploying import DeployObserved, DeployPolicy, ModelLookup, PutApp, ServeApp
from tuneloop.operator.logic.plans import VersionInfo

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NOW = T0 + timedelta(seconds=100)
POLICY = DeployPolicy(poll_seconds=10, max_poll_seconds=120, rollout_poll_seconds=2,
                      app=serveconfig.AppSettings("file:///srv/traffic"))
ADDRESS, MLFLOW = "http://127.0.0.1:8265", "http://127.0.0.1:5000"


def spec(**model: Any) -> ModelDeploymentSpec:
    ref = {"name": "inv", **(model or {"alias": "champion"})}
    return ModelDeploymentSpec.model_validate({"model": ref, "serving": {"resources": {"cpu": "1"}}})


BASE = serveconfig.BaseRef("file:///models/tiny")
BASE_TAGS = {constants.TAG_BASE_MODEL: BASE.uri}


def found(version: str, tags: dict[str, str] | None = None) -> ModelLookup:
    return ModelLookup(VersionInfo("inv", version, tags=BASE_TAGS if tags is None else tags), versions=("1", "2"),
                       aliases={"champion": version})


def config_for(version: str, first: str | None = None, s: ModelDeploymentSpec | None = None,
               base: serveconfig.BaseRef | None = BASE) -> dict[str, Any]:
    return serveconfig.build_app("ns", "md", s or spec(), MLFLOW, f"inv/{version}", first and f"inv/{first}",
                                 POLICY.app, base)


def app(status: str, version: str = "2", deployed_at: float | None = NOW.timestamp() + 1, first: str | None = None,
        message: str = "") -> ServeApp:
    return ServeApp(status, message, deployed_at, config_for(version, first), ready_replicas=1)


def status(served: str | None = None, rollout: str | None = None, applied: datetime | None = T0,
           first: str | None = None) -> ModelDeploymentStatus:
    st = ModelDeploymentStatus(served_version=served)
    if rollout is not None:
        st.rollout = RolloutStatus(version=rollout, model_id=f"inv/{rollout}", start_time=T0, applied_time=applied,
                                   config_hash=serveconfig.config_hash(config_for(rollout, first)))
    if served:
        st.phase = "Serving"
        st.conditions = c.set_condition([], c.READY, "True", c.REASON_SERVING, "", T0, 1)
    return st


def observed(lookup: ModelLookup | None = None, app_: ServeApp | None = None, st: ModelDeploymentStatus | None = None,
             s: ModelDeploymentSpec | None = None, address: str | None = ADDRESS, tracking: str | None = MLFLOW,
             warmup: deploying.Warmup | None = None) -> DeployObserved:
    return DeployObserved("ns", "md", 1, s or spec(), st or ModelDeploymentStatus(), NOW, address, tracking,
                          lookup, app_, "http://127.0.0.1:8000", warmup=warmup)


@dataclass
class Case:
    o: DeployObserved
    phase: str
    ready: tuple[str, str] | None  # (status, reason); None: not set
    put: bool = False
    requeue: float | None = None
    resolved: str | None = None  # ModelResolved reason
    served: str | None = None
    rolling_out: str | None = None  # RollingOut status
    events: tuple[str, ...] | None = None  # reasons of the Events posted; None: not checked
    message_has: tuple[str, ...] = field(default_factory=tuple)


CASES: dict[str, Case] = {
    "new: alias resolves, nothing on Serve → send": Case(
        observed(found("2")), "Deploying", ("False", "Deploying"), put=True, requeue=2, resolved="Resolved",
        rolling_out="True", events=("Deploying",)),
    "sent, Serve still DEPLOYING": Case(
        observed(found("2"), app("DEPLOYING"), status(rollout="2")), "Deploying", ("False", "Deploying"), requeue=2,
        rolling_out="True"),
    "RUNNING but deployed before our send: not ready": Case(
        observed(found("2"), app("RUNNING", deployed_at=T0.timestamp() - 5), status(rollout="2")), "Deploying",
        ("False", "Deploying"), requeue=2, rolling_out="True"),
    "RUNNING after our send with our config: Serving": Case(
        observed(found("2"), app("RUNNING"), status(rollout="2")), "Serving", ("True", "Serving"), requeue=10,
        served="2", rolling_out="False", events=("Serving", "RolloutComplete"),
        message_has=("http://127.0.0.1:8000/ns/md",)),
    "another version serving, candidate warmed up: send ours": Case(
        observed(found("2"), app("RUNNING", version="1"), status(served="1"), warmup=deploying.Warmup("inv/2", True)),
        "Serving", ("True", "Serving"), put=True, requeue=2, served="1", rolling_out="True"),
    "another version serving, candidate failed its warm-up: keep the old": Case(
        observed(found("2"), app("RUNNING", version="1"), status(served="1"),
                 warmup=deploying.Warmup("inv/2", False, "HTTP 400: adapter has no base model")),
        "Degraded", ("True", "Serving"), requeue=10, served="1", rolling_out="False",
        events=("Serving", "CandidateUnhealthy"), message_has=("HTTP 400: adapter has no base model",)),
    "another version serving, warm-up was of another id: no switch": Case(
        observed(found("2"), app("RUNNING", version="1"), status(served="1"), warmup=deploying.Warmup("inv/9", True)),
        "Degraded", ("True", "Serving"), requeue=10, served="1", rolling_out="False"),
    "another version on another base serving: send ours (a restart), no warm-up to wait for": Case(
        observed(found("2", {constants.TAG_BASE_MODEL: "file:///models/other"}), app("RUNNING", version="1"),
                 status(served="1")),
        "Serving", ("True", "Serving"), put=True, requeue=2, served="1", rolling_out="True"),
    "alias moved while serving: old keeps serving during the switch": Case(
        observed(found("3"), app("RUNNING", version="3", first="2", deployed_at=T0.timestamp()),
                 status(served="2", rollout="3", first="2", applied=NOW)),
        "Serving", ("True", "Serving"), requeue=2, served="2", rolling_out="True", events=()),
    "alias moved, switch confirmed": Case(
        observed(found("3"), app("RUNNING", version="3", first="2"), status(served="2", rollout="3", first="2")),
        "Serving", ("True", "Serving"), requeue=10, served="3", rolling_out="False", events=("RolloutComplete",)),
    "steady: matches, no rollout stored (after a restart)": Case(
        observed(found("2"), app("RUNNING", deployed_at=1.0), status(served="2")), "Serving", ("True", "Serving"),
        requeue=10, served="2", rolling_out="False"),
    "pinned version serving: slow re-check": Case(
        observed(found("2"), app("RUNNING", deployed_at=1.0), status(served="2"), s=spec(version="2")), "Serving",
        ("True", "Serving"), requeue=120, served="2"),
    "DEPLOY_FAILED, nothing served: Failed": Case(
        observed(found("2"), app("DEPLOY_FAILED", message="ImportError: no module x"), status(rollout="2")),
        "Failed", ("False", "DeployFailed"), requeue=10, rolling_out="False", events=("DeployFailed",),
        message_has=("ImportError: no module x",)),
    "DEPLOY_FAILED with a version served: Degraded": Case(
        observed(found("3"), app("DEPLOY_FAILED", version="3", first="2"), status(served="2", rollout="3", first="2")),
        "Degraded", ("False", "DeployFailed"), requeue=10, served="2", events=("DeployFailed",)),
    "UNHEALTHY: Degraded": Case(
        observed(found("2"), app("UNHEALTHY", deployed_at=1.0, message="replica health check failed"),
                 status(served="2")), "Degraded", ("False", "Unhealthy"), requeue=10, served="2",
        events=("Unhealthy",)),
    "our app vanished: send again, nothing served": Case(
        observed(found("2"), None, status(served="2")), "Deploying", ("False", "Deploying"), put=True, requeue=2),
    "our app DELETING: send again": Case(
        observed(found("2"), app("DELETING"), status()), "Deploying", ("False", "Deploying"), put=True, requeue=2),
    "alias missing: wait, name what exists": Case(
        observed(ModelLookup(None, versions=("1", "2"), aliases={"challenger": "2"})), "Pending",
        ("False", "AliasNotFound"), requeue=10, resolved="AliasNotFound", events=("AliasNotFound",),
        message_has=("'champion'", "challenger → 2", "versions: 1, 2")),
    "alias missing while serving: keeps serving, Degraded": Case(
        observed(ModelLookup(None, versions=("1",)), app("RUNNING", deployed_at=1.0), status(served="2")),
        "Degraded", ("True", "Serving"), requeue=10, resolved="AliasNotFound", served="2",
        events=("Serving", "AliasNotFound")),
    "model missing": Case(
        observed(ModelLookup(None, model_exists=False)), "Pending", ("False", "ModelNotFound"), requeue=10,
        resolved="ModelNotFound", message_has=("no registered model 'inv'",)),
    "pinned version missing": Case(
        observed(ModelLookup(None, versions=("1", "2")), s=spec(version="7")), "Pending",
        ("False", "VersionNotFound"), requeue=10, resolved="VersionNotFound", message_has=("no version 7",
                                                                                        "versions: 1, 2")),
    "no Ray address anywhere": Case(
        observed(found("2"), address=None), "Pending", ("False", "RayNotConfigured"), requeue=10,
        message_has=("TUNELOOP_SERVE_ADDRESS",)),
    "no tracking URI anywhere": Case(
        observed(None, tracking=None), "Pending", ("False", "RegistryNotConfigured"), requeue=10),
    "KServe runtime not implemented: terminal": Case(
        observed(found("2"), s=ModelDeploymentSpec.model_validate(
            {"model": {"name": "inv", "alias": "champion"}, "serving": {"runtime": "KServe"}})),
        "Failed", ("False", "NotImplemented"), requeue=None),
}


@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
def test_decide_deployment(case: Case) -> None:
    plan = deploying.decide_deployment(case.o, POLICY)
    st = plan.status
    assert st.phase == case.phase
    ready = c.get_condition(st.conditions, c.READY)
    assert ((ready.status, ready.reason) if ready else None) == case.ready
    assert bool(plan.actions) == case.put
    if case.put:
        (action,) = plan.actions
        assert isinstance(action, PutApp) and action.app_name == "ns.md" and action.address == ADDRESS
        assert st.rollout is not None
        assert st.rollout is not None and st.rollout.applied_time == NOW
        assert st.rollout.config_hash == serveconfig.config_hash(action.config)
    assert plan.requeue_seconds == case.requeue
    resolved = c.get_condition(st.conditions, c.MODEL_RESOLVED)
    if case.resolved is not None:
        assert resolved is not None and resolved.reason == case.resolved
    assert st.served_version == case.served
    rolling = c.get_condition(st.conditions, c.ROLLING_OUT)
    if case.rolling_out is not None:
        assert rolling is not None and rolling.status == case.rolling_out
    if case.events is not None:
        assert tuple(e.reason for e in plan.events) == case.events
    text = " ".join(cond.message for cond in st.conditions) + " ".join(e.message for e in plan.events)
    for piece in case.message_has:
        assert piece in text
    assert st.observed_generation == 1 and st.app_name == "ns.md"


def test_a_switch_keeps_args_and_changes_only_the_ingress_user_config() -> None:
    plan = deploying.decide_deployment(observed(found("3"), app("RUNNING", version="2"), status(served="2"),
                                                warmup=deploying.Warmup("inv/3", True)), POLICY)
    (action,) = plan.actions
    before, after = config_for("2"), action.config
    assert after["args"] == before["args"]  # args unchanged: no replica restart
    ingress = {d["name"]: d for d in after["deployments"]}["Ingress"]
    assert ingress["user_config"] == {"default_model_id": "inv/3"}
    assert {k: v for k, v in after.items() if k != "deployments"} == {k: v for k, v in before.items()
                                                                       if k != "deployments"}


def test_a_confirmed_switch_is_recorded_once() -> None:
    o = observed(found("3"), app("RUNNING", version="3", first="2"), status(served="2", rollout="3", first="2"))
    plan = deploying.decide_deployment(o, POLICY)
    (record,) = plan.status.rollout_history
    assert (record.version, record.previous_version, record.alias) == ("3", "2", "champion")
    again = deploying.decide_deployment(replace(o, status=plan.status), POLICY)
    assert len(again.status.rollout_history) == 1 and again.events == () and again.status == plan.status


def test_warmup_is_asked_only_to_protect_a_serving_version() -> None:
    assert deploying.needs_warmup(observed(found("2"), app("RUNNING", version="1"), status(served="1")))
    assert not deploying.needs_warmup(observed(found("2")))  # first deploy: nothing to protect
    assert not deploying.needs_warmup(observed(found("1"), app("RUNNING", version="1"), status(served="1")))
    assert not deploying.needs_warmup(observed(found("2"), app("DEPLOYING", version="1"), status(served="1")))
    # another base: new args restart the replicas, which could not load the candidate
    other = {constants.TAG_BASE_MODEL: "file:///models/other"}
    assert not deploying.needs_warmup(observed(found("2", other), app("RUNNING", version="1"), status(served="1")))
    # none recorded (registered by hand): taken to be on the replicas' base, so the warm-up must prove it
    assert deploying.needs_warmup(observed(found("2", {}), app("RUNNING", version="1"), status(served="1")))


def test_waits_back_off_and_warn_once_per_ceiling() -> None:
    o = observed(ModelLookup(None, model_exists=False))
    first = deploying.decide_deployment(o, POLICY)
    later = deploying.decide_deployment(replace(o, status=first.status, now=NOW + timedelta(seconds=40)), POLICY)
    assert first.requeue_seconds == 10 and later.requeue_seconds == 40
    assert [e.type for e in first.events] == ["Warning"] and later.events == ()


def test_unreachable_ray_keeps_what_is_served() -> None:
    plan = deploying.decide_unavailable(observed(found("2"), st=status(served="2")), POLICY,
                                        c.REASON_RAY_UNAVAILABLE, "ray unreachable")
    ready = c.get_condition(plan.status.conditions, c.READY)
    assert plan.status.phase == "Degraded" and ready is not None and ready.status == "True"
    assert plan.status.waiting is not None and plan.status.waiting.reason == "RayUnavailable"
    assert plan.requeue_seconds == 10 and plan.actions == ()
    resolved = c.get_condition(plan.status.conditions, c.MODEL_RESOLVED)
    assert resolved is not None and resolved.status == "True"  # MLflow answered before Ray failed


def test_unreachable_ray_clears_a_stale_model_not_found() -> None:
    stale = ModelDeploymentStatus(conditions=c.set_condition([], c.MODEL_RESOLVED, "False", "AliasNotFound", "", T0))
    plan = deploying.decide_unavailable(observed(found("2"), st=stale), POLICY, c.REASON_RAY_UNAVAILABLE, "down")
    resolved = c.get_condition(plan.status.conditions, c.MODEL_RESOLVED)
    assert resolved is not None and (resolved.status, resolved.reason) == ("True", "Resolved")


# --- the serve config ------------------------------------------------------------------------

MATCHES = {
    "equal": ({"a": 1, "d": [{"name": "x", "n": 1}]}, {"a": 1, "d": [{"name": "x", "n": 1}]}, True),
    "Serve added keys": ({"a": 1}, {"a": 1, "extra": {}}, True),
    "deployments in another order": ({"d": [{"name": "x"}, {"name": "y", "n": 2}]},
                                     {"d": [{"name": "y", "n": 2}, {"name": "x"}]}, True),
    "a value differs": ({"d": [{"name": "x", "u": {"m": "inv/2"}}]}, {"d": [{"name": "x", "u": {"m": "inv/3"}}]},
                        False),
    "a deployment missing": ({"d": [{"name": "x"}, {"name": "y"}]}, {"d": [{"name": "x"}]}, False),
    "an int for our float": ({"cpu": 1.0}, {"cpu": 1}, True),
    "nothing deployed": ({"a": 1}, None, False),
    "a finished canary's keys left in user_config": (
        {"d": [{"name": "Ingress", "user_config": {"default_model_id": "inv/2"}}]},
        {"d": [{"name": "Ingress", "user_config": {"default_model_id": "inv/2", "canary_model_id": "inv/3",
                                                   "canary_weight": 20}}]}, False),
}


@pytest.mark.parametrize(("wanted", "deployed", "expected"), MATCHES.values(), ids=list(MATCHES))
def test_matches(wanted: Any, deployed: Any, expected: bool) -> None:
    assert serveconfig.matches(wanted, deployed) is expected


def test_merge_keeps_every_other_application_and_replaces_ours() -> None:
    other, old, new = {"name": "b.other", "x": 1}, {"name": "a.md", "v": 1}, {"name": "a.md", "v": 2}
    merged = serveconfig.merge_applications({"b.other": other, "a.md": old, "c.imperative": None}, "a.md", new)
    assert merged == [other, new]
    assert serveconfig.merge_applications({"b.other": other, "a.md": old}, "a.md", None) == [other]


def test_cpu_quantities() -> None:
    assert [serveconfig.cpu_count(q) for q in (2, "1", "500m", "1.5")] == [2.0, 1.0, 0.5, 1.5]


# --- RayService mode -------------------------------------------------------------------------

RS_SPEC = ModelDeploymentSpec.model_validate({
    "model": {"name": "inv", "alias": "champion"},
    "serving": {"mode": "RayService", "replicas": 2, "resources": {"gpus": 1, "gpuType": "NVIDIA-L4", "cpu": "4",
                "memory": "16Gi", "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]}}})


def rs_observed(rs: dict[str, Any] | None, st: ModelDeploymentStatus | None = None, version: str = "2"
                ) -> DeployObserved:
    return DeployObserved("ns", "md", 1, RS_SPEC, st or ModelDeploymentStatus(), NOW, None, MLFLOW, found(version),
                          uid="uid-1", rayservice=rs)


def kuberay(manifest: dict[str, Any], app_status: str, ready: str = "True", observed_generation: int = 1,
            message: str = "") -> dict[str, Any]:
    """The RayService as KubeRay leaves it: generation 1, our spec, its status."""
    return {**manifest, "metadata": {**manifest["metadata"], "generation": 1},
            "status": {"observedGeneration": observed_generation,
                       "conditions": [{"type": "Ready", "status": ready}],
                       "activeServiceStatus": {"applicationStatuses": {"ns.md": {"status": app_status,
                                                                                 "message": message}}}}}


def test_rayservice_manifest() -> None:
    plan = deploying.decide_deployment(rs_observed(None), POLICY)
    (action,) = plan.actions
    assert isinstance(action, deploying.EnsureRayService) and plan.status.phase == "Deploying"
    rs = action.manifest
    assert (rs["apiVersion"], rs["kind"], rs["metadata"]["name"]) == ("ray.io/v1", "RayService", "md")
    assert rs["metadata"]["ownerReferences"] == [{"apiVersion": "tuneloop.io/v1alpha1", "kind": "ModelDeployment",
                                                  "name": "md", "uid": "uid-1", "controller": True,
                                                  "blockOwnerDeletion": True}]
    assert rs["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "tuneloop", "tuneloop.io/modeldeployment": "md"}
    (app,) = json.loads(rs["spec"]["serveConfigV2"])["applications"]
    assert app == serveconfig.build_app("ns", "md", RS_SPEC, MLFLOW, "inv/2", None, POLICY.app, BASE)
    (group,) = rs["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert (group["replicas"], group["minReplicas"], group["maxReplicas"]) == (2, 2, 2)
    pod = group["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"] == {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"}
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L4"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists"}]
    generator = {d["name"]: d for d in app["deployments"]}["Generator"]
    assert generator["ray_actor_options"] == {"num_cpus": 4.0, "num_gpus": 1}


def _manifest(version: str = "2") -> dict[str, Any]:
    (action,) = deploying.decide_deployment(rs_observed(None, version=version), POLICY).actions
    assert isinstance(action, deploying.EnsureRayService)
    return action.manifest


RS_CASES = {
    "Ready and RUNNING with our config: Serving": (kuberay(_manifest(), "RUNNING"), "Serving", "Serving", False),
    "RUNNING but KubeRay not Ready yet": (kuberay(_manifest(), "RUNNING", ready="False"), "Deploying", "Deploying",
                                          False),
    "KubeRay has not seen our write yet": (kuberay(_manifest(), "RUNNING", observed_generation=0), "Deploying",
                                           "Deploying", False),
    "DEPLOY_FAILED (KubeRay does not act on it)": (kuberay(_manifest(), "DEPLOY_FAILED", message="boom"), "Failed",
                                                   "DeployFailed", False),
    "UNHEALTHY": (kuberay(_manifest(), "UNHEALTHY"), "Failed", "Unhealthy", False),
    "an older serveConfigV2: write ours": (kuberay(_manifest("1"), "RUNNING"), "Deploying", "Deploying", True),
}


@pytest.mark.parametrize(("rs", "phase", "reason", "write"), RS_CASES.values(), ids=list(RS_CASES))
def test_rayservice_states(rs: dict[str, Any], phase: str, reason: str, write: bool) -> None:
    plan = deploying.decide_deployment(rs_observed(rs, st=status(rollout="2")), POLICY)
    ready = c.get_condition(plan.status.conditions, c.READY)
    assert (plan.status.phase, ready.reason if ready else None, bool(plan.actions)) == (phase, reason, write)
    if phase == "Serving":
        assert plan.status.endpoint == "http://md-serve-svc.ns.svc:8000/ns/md"


def test_rayservice_alias_move_keeps_args_and_the_cluster() -> None:
    old = _manifest("1")
    plan = deploying.decide_deployment(rs_observed(kuberay(old, "RUNNING"), st=status(served="1")), POLICY)
    (action,) = plan.actions
    assert isinstance(action, deploying.EnsureRayService)
    new = action.manifest
    assert new["spec"]["rayClusterConfig"] == old["spec"]["rayClusterConfig"]  # no new cluster
    (before,), (after,) = (json.loads(m["spec"]["serveConfigV2"])["applications"] for m in (old, new))
    assert after["args"] == before["args"] and after["args"]["default_model_id"] == "inv/1"
    assert {d["name"]: d for d in after["deployments"]}["Ingress"]["user_config"] == {"default_model_id": "inv/2"}


def test_the_endpoint_names_the_proxy_as_clients_reach_it() -> None:
    o = replace(observed(found("2"), app("RUNNING"), status(rollout="2")),
                public_endpoint_base="https://llm.example.com/")
    plan = deploying.decide_deployment(o, POLICY)
    assert plan.status.endpoint == "https://llm.example.com/ns/md"
    ready = c.get_condition(plan.status.conditions, c.READY)
    assert ready is not None and "https://llm.example.com/ns/md" in ready.message
    # without one, the address the operator reaches the proxy at
    assert deploying.decide_deployment(replace(o, public_endpoint_base=None), POLICY).status.endpoint == \
        "http://127.0.0.1:8000/ns/md"
