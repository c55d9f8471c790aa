"""The KubeRay `ray.io/v1` RayService of a ModelDeployment (`spec.serving.mode: RayService`), and what
its status says about our application.

Pure. The RayService carries our one application as `serveConfigV2` (the same entry ExistingCluster
mode PUTs, `logic.serveconfig.build_app`) and its own cluster: a head that runs no replicas and one
worker group sized from `spec.serving` (replicas, CPU, memory, GPUs, GPU product, node selector,
tolerations). An alias move changes only serveConfigV2, which KubeRay applies to the running cluster
(no new cluster); a change of resources makes KubeRay start a pending cluster that takes over once
every application is RUNNING. Healthy means the RayService's `Ready` condition is True **and** our
application is RUNNING in `activeServiceStatus` with the serveConfigV2 we wrote; KubeRay does not act
on DEPLOY_FAILED/UNHEALTHY, so those are read from `applicationStatuses` here. The child carries our
labels only and an ownerReference to the ModelDeployment (deleted with it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tuneloop.api import constants
from tuneloop.api.deployment import ModelDeploymentSpec
from tuneloop.operator.logic import naming
from tuneloop.operator.logic.rayjob import GPU_PRODUCT_LABEL, _resources

if TYPE_CHECKING:
    from tuneloop.operator.logic.deploying import ServeApp

API_VERSION = "ray.io/v1"
KIND = "RayService"
SERVE_PORT = 8000


@dataclass(frozen=True)
class RayServiceDefaults:
    """Administrator defaults (operator settings): the image must hold tuneloop's serving package."""

    image: str
    head_cpu: str
    head_memory: str


def rayservice_name(name: str) -> str:
    return naming.label_value(name)


def endpoint_base(namespace: str, name: str) -> str:
    """KubeRay's serve Service (`<rayservice>-serve-svc`), reachable inside the cluster."""
    return f"http://{rayservice_name(name)}-serve-svc.{namespace}.svc:{SERVE_PORT}"


def build_rayservice(namespace: str, name: str, uid: str, spec: ModelDeploymentSpec, app: dict[str, Any],
                     defaults: RayServiceDefaults) -> dict[str, Any]:
    res = spec.serving.resources
    node_selector = dict(res.node_selector)
    if res.gpu_type:
        node_selector[GPU_PRODUCT_LABEL] = res.gpu_type
    worker_pod: dict[str, Any] = {
        "containers": [{"name": "ray-worker", "image": defaults.image,
                        "resources": _resources(res.cpu, res.memory, res.gpus)}],
    }
    if node_selector:
        worker_pod["nodeSelector"] = node_selector
    if res.tolerations:
        worker_pod["tolerations"] = [t.to_k8s() for t in res.tolerations]
    replicas = max(spec.serving.replicas, 1)  # a worker for the Ingress even when the Generator scales to 0
    head_pod = {"containers": [{"name": "ray-head", "image": defaults.image,
                                "resources": _resources(defaults.head_cpu, defaults.head_memory)}]}
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": rayservice_name(name),
            "namespace": namespace,
            "labels": {constants.LABEL_MANAGED_BY: constants.MANAGED_BY_VALUE,
                       constants.LABEL_DEPLOYMENT: naming.label_value(name)},
            "ownerReferences": [{"apiVersion": constants.API_VERSION, "kind": constants.DEPLOYMENT_KIND,
                                 "name": name, "uid": uid, "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": {
            # JSON is YAML: one serialisation, stable key order, so an unchanged config is an unchanged string.
            "serveConfigV2": json.dumps({"applications": [app]}, sort_keys=True),
            "upgradeStrategy": {"type": "NewCluster"},
            "rayClusterConfig": {
                "headGroupSpec": {"rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0"},
                                  "template": {"spec": head_pod}},
                "workerGroupSpecs": [{
                    "groupName": "gpu-serve" if res.gpus else "serve",
                    "replicas": replicas, "minReplicas": replicas, "maxReplicas": replicas,
                    "rayStartParams": {}, "template": {"spec": worker_pod},
                }],
            },
        },
    }


def deployed_app(obj: dict[str, Any] | None) -> dict[str, Any] | None:
    """The application entry in an existing RayService's serveConfigV2 (None: no RayService or unreadable)."""
    try:
        apps = json.loads(((obj or {}).get("spec") or {}).get("serveConfigV2") or "{}").get("applications") or []
    except (ValueError, AttributeError):
        return None
    return apps[0] if apps and isinstance(apps[0], dict) else None


def observe_rayservice(obj: dict[str, Any] | None, wanted: dict[str, Any], app_name: str) -> ServeApp | None:
    """Our application as the RayService reports it, in ExistingCluster's terms: RUNNING only when the
    RayService is Ready, the application is RUNNING in the active cluster and the serveConfigV2 KubeRay
    holds is the one we want. None: no RayService yet (create it)."""
    from tuneloop.operator.logic.deploying import ServeApp

    if obj is None:
        return None
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    ours = spec.get("serveConfigV2") == wanted["spec"]["serveConfigV2"] and (
        spec.get("rayClusterConfig") == wanted["spec"]["rayClusterConfig"])
    deployed = json.loads(wanted["spec"]["serveConfigV2"])["applications"][0] if ours else None
    ready: dict[str, Any] = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
    apps = ((status.get("activeServiceStatus") or {}).get("applicationStatuses") or {})
    app = apps.get(app_name) or {}
    app_status = str(app.get("status") or "NOT_STARTED")
    if app_status == "RUNNING" and ready.get("status") != "True":
        app_status = "DEPLOYING"  # the app runs but KubeRay has no serve endpoint yet
    message = str(app.get("message") or ready.get("message") or "")
    replicas = sum(int((d or {}).get("replicas", 0) or 0) for d in (app.get("serveDeploymentStatuses") or {}).values())
    # KubeRay has no deploy timestamp: "after our write" is the generation KubeRay observed.
    fresh = status.get("observedGeneration") == (obj.get("metadata") or {}).get("generation")
    return ServeApp(status=app_status, message=message, deployed_app_config=deployed, deployed_after_send=fresh,
                    ready_replicas=replicas or (1 if app_status == "RUNNING" else 0))
