"""Pure builders of the KubeRay `ray.io/v1` RayJob and the ConfigMap that carries the spec.

Attempts: tuneloop sets `backoffLimit: 0` and creates one RayJob per attempt (`<prefix>-r<run>a<n>`).
KubeRay's own retries would reuse one object and hide attempts from status; ours keep each attempt's
name, outcome and times in `status.attempts` and survive operator restarts. `activeDeadlineSeconds`
is always set (kuberay #2314 leaves jobs running otherwise), and the RayCluster is shut down when
the job finishes. Children carry our labels only and an ownerReference to the FineTune.

`spec.registry.trackingUriSecretRef`: the job's MLflow URI and credentials come from the Secret as
environment variables the kubelet fills (`valueFrom.secretKeyRef`) on the head, where the driver runs,
and on the workers, which log live epoch metrics. Neither the value nor the URI is written into the
RayJob, and the operator itself never reads the Secret (its ServiceAccount has no right to).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import yaml

from tuneloop.api import constants
from tuneloop.operator.logic import naming
from tuneloop.operator.logic.launching import JobPaths, Target, build_entrypoint

RAYJOB_API_VERSION = "ray.io/v1"
SPEC_KEY = "spec.json"
SPEC_MOUNT = "/etc/tuneloop"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
# Optional keys of the tracking Secret, passed as the variables of the same name that MLflow reads.
TRACKING_CREDENTIAL_KEYS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


@dataclass(frozen=True)
class RayJobDefaults:
    """Administrator defaults that shape every RayJob (from operator settings)."""

    image: str
    head_cpu: str
    head_memory: str
    ttl_seconds_after_finished: int
    default_active_deadline_seconds: int
    pod_storage_root: str
    python: str
    operator_version: str


def owner_reference(target: Target) -> dict[str, Any]:
    return {
        "apiVersion": constants.API_VERSION,
        "kind": constants.FINETUNE_KIND,
        "name": target.name,
        "uid": target.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def build_configmap(target: Target) -> dict[str, Any]:
    """The run's spec as JSON, mounted into the Ray head where the job's driver runs."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": naming.configmap_name(target.name, target.uid, target.run),
            "namespace": target.namespace,
            "labels": naming.child_labels(target.name, target.run),
            "ownerReferences": [owner_reference(target)],
        },
        "data": {SPEC_KEY: json.dumps(target.spec.to_k8s(), sort_keys=True, indent=1)},
    }


def _resources(cpu: Any, memory: Any, gpus: int = 0) -> dict[str, Any]:
    amounts: dict[str, Any] = {"cpu": str(cpu), "memory": str(memory)}
    if gpus:
        amounts[GPU_RESOURCE] = str(gpus)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def tracking_env(target: Target) -> list[dict[str, Any]]:
    """MLFLOW_TRACKING_URI (the referenced key) and the optional credential keys of the tracking Secret,
    as Secret-backed container variables; none without a trackingUriSecretRef."""
    ref = target.spec.registry.tracking_uri_secret_ref
    if ref is None:
        return []
    env: list[dict[str, Any]] = [{"name": "MLFLOW_TRACKING_URI",
                                  "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}]
    env += [{"name": key, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": key, "optional": True}}}
            for key in TRACKING_CREDENTIAL_KEYS if key != ref.key]
    return env


def build_rayjob(target: Target, tracking_uri: str, defaults: RayJobDefaults) -> dict[str, Any]:
    """The RayJob of one attempt. With a trackingUriSecretRef, `tracking_uri` (the operator's own) is not
    given to the job: it reads the Secret's."""
    spec = target.spec
    env = tracking_env(target)
    res = spec.resources
    image = spec.ray.image or defaults.image
    run_storage = naming.run_folder(defaults.pod_storage_root, target.namespace, target.name, target.uid, target.run)
    paths = JobPaths(
        spec=f"{SPEC_MOUNT}/{SPEC_KEY}",
        result=str(run_storage / f"attempt-{target.attempt}" / "result.json"),
        storage=str(run_storage),
    )
    spec_volume = {
        "name": "tuneloop-spec",
        "configMap": {"name": naming.configmap_name(target.name, target.uid, target.run)},
    }
    head_pod: dict[str, Any] = {
        "containers": [{
            "name": "ray-head",
            "image": image,
            "resources": _resources(defaults.head_cpu, defaults.head_memory),
            "volumeMounts": [{"name": "tuneloop-spec", "mountPath": SPEC_MOUNT, "readOnly": True}],
            **({"env": env} if env else {}),
        }],
        "volumes": [spec_volume],
    }
    node_selector = dict(res.node_selector)
    if res.gpu_type:
        node_selector[GPU_PRODUCT_LABEL] = res.gpu_type
    worker_pod: dict[str, Any] = {
        "containers": [{"name": "ray-worker", "image": image, "resources": _resources(res.cpu, res.memory, res.gpus),
                        **({"env": env} if env else {})}],
    }
    if node_selector:
        worker_pod["nodeSelector"] = node_selector
    if res.tolerations:
        worker_pod["tolerations"] = [t.to_k8s() for t in res.tolerations]
    if spec.ray.service_account_name:
        head_pod["serviceAccountName"] = spec.ray.service_account_name
        worker_pod["serviceAccountName"] = spec.ray.service_account_name
    worker_group: dict[str, Any] = {
        "groupName": "gpu-workers" if res.gpus else "workers",
        "replicas": res.workers,
        "minReplicas": res.workers,
        "maxReplicas": res.workers,
        "rayStartParams": {},
        "template": {"spec": worker_pod},
    }
    body: dict[str, Any] = {
        "entrypoint": build_entrypoint(target, paths, None if env else tracking_uri, defaults.python,
                                       defaults.operator_version),
        "jobId": naming.submission_id(target.uid, target.run, target.attempt),
        "submissionMode": "K8sJobMode",
        "shutdownAfterJobFinishes": True,
        "ttlSecondsAfterFinished": defaults.ttl_seconds_after_finished,
        "activeDeadlineSeconds": spec.active_deadline_seconds or defaults.default_active_deadline_seconds,
        "backoffLimit": 0,
        "rayClusterSpec": {
            "headGroupSpec": {"rayStartParams": {"dashboard-host": "0.0.0.0"}, "template": {"spec": head_pod}},
            "workerGroupSpecs": [worker_group],
        },
    }
    if spec.ray.runtime_env:
        body["runtimeEnvYAML"] = yaml.safe_dump(spec.ray.runtime_env, sort_keys=True)
    return {
        "apiVersion": RAYJOB_API_VERSION,
        "kind": "RayJob",
        "metadata": {
            "name": naming.rayjob_name(target.name, target.uid, target.run, target.attempt),
            "namespace": target.namespace,
            "labels": naming.child_labels(target.name, target.run),
            "ownerReferences": [owner_reference(target)],
        },
        "spec": body,
    }
