"""Small helpers the API tests share: FineTune manifests, polling, acting as KubeRay and as the job."""

from __future__ import annotations

import copy
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from tuneloop.api import constants

T = TypeVar("T")
GROUP, VERSION, PLURAL = constants.GROUP, constants.VERSION, constants.FINETUNE_PLURAL


def wait_for(fn: Callable[[], T | None], timeout: float = 30, what: str = "condition", interval: float = 0.2) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except ApiException as e:
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def finetune(name: str, tracking_uri: str, model: str = "invoices", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": constants.API_VERSION,
        "kind": constants.FINETUNE_KIND,
        "metadata": {"name": name, "labels": {"app.kubernetes.io/instance": "argo-app"},
                     "annotations": {"argocd.argoproj.io/tracking-id": "app:tuneloop.io/FineTune:ns/x"}},
        "spec": {
            "baseModel": {"uri": "hf://tiny/llama", "revision": "abc123"},
            "dataset": {"uri": "s3://bucket/invoices.jsonl"},
            "registry": {"modelName": model, "trackingUri": tracking_uri},
            "resources": {"gpus": 1, "gpuType": "NVIDIA-A100-SXM4-80GB", "workers": 2,
                          "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
            "activeDeadlineSeconds": 600,
            "backoffLimit": 1,
        },
    }
    merged = copy.deepcopy(body)
    merged["spec"].update(spec)
    return merged


class Cluster:
    """The admin ApiClient with the calls the tests make."""

    def __init__(self, api_client: k8s.ApiClient, namespace: str) -> None:
        self.custom = k8s.CustomObjectsApi(api_client)
        self.core = k8s.CoreV1Api(api_client)
        self.ns = namespace

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.custom.create_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, body)

    def get(self, name: str) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name)

    def patch_spec(self, name: str, spec: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name, {"spec": spec})

    def annotate(self, name: str, annotations: dict[str, str]) -> None:
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name,
                                                   {"metadata": {"annotations": annotations}})

    def delete(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name)

    def exists(self, name: str) -> bool:
        try:
            self.get(name)
            return True
        except ApiException as e:
            if e.status == 404:
                return False
            raise

    def status(self, name: str) -> dict[str, Any]:
        return self.get(name).get("status") or {}

    def ready(self, name: str) -> dict[str, Any]:
        return next((c for c in self.status(name).get("conditions", []) if c["type"] == "Ready"), {})

    def rayjobs(self) -> list[dict[str, Any]]:
        return self.custom.list_namespaced_custom_object("ray.io", "v1", self.ns, "rayjobs")["items"]

    def rayjob(self, name: str) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object("ray.io", "v1", self.ns, "rayjobs", name)

    def set_rayjob_status(self, name: str, **status: Any) -> None:
        """Act as KubeRay: write the RayJob's status subresource."""
        self.custom.patch_namespaced_custom_object_status("ray.io", "v1", self.ns, "rayjobs", name,
                                                          {"status": status})

    def configmaps(self) -> list[k8s.V1ConfigMap]:
        return [c for c in self.core.list_namespaced_config_map(self.ns).items
                if (c.metadata.labels or {}).get(constants.LABEL_MANAGED_BY) == constants.MANAGED_BY_VALUE]

    def events(self, name: str) -> list[k8s.CoreV1Event]:
        return [e for e in self.core.list_namespaced_event(self.ns).items if e.involved_object.name == name]


def act_as_job(tracking_uri: str, experiment: str, tags: dict[str, str], metrics: dict[str, float],
               baseline: dict[str, float], dataset_hash: str = "d" * 64, status: str = "Succeeded",
               reason: str | None = None) -> str:
    """Write what tuneloop.jobs.train writes to MLflow: a run with our tags, a logged model and the
    result artifact. Returns the run id."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    run = client.create_run(exp_id, tags=tags)
    run_id = run.info.run_id
    for k, v in metrics.items():
        client.log_metric(run_id, k, v)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        model_dir.mkdir()
        (model_dir / "MLmodel").write_text(f"artifact_path: model\nflavors: {{}}\nrun_id: {run_id}\n")
        client.log_artifacts(run_id, str(model_dir), "model")
        result = {
            "schemaVersion": 1, "status": status, "reason": reason, "runId": run_id,
            "experimentId": exp_id, "modelUri": f"runs:/{run_id}/model", "metrics": metrics,
            "baselineMetrics": baseline,
            "dataset": {"hash": dataset_hash, "totalRows": 200, "trainRows": 180, "evalRows": 20},
            "durationSeconds": 12.5, "gpuSeconds": 25.0,
        }
        result_file = Path(tmp) / constants.RESULT_ARTIFACT
        result_file.write_text(json.dumps({k: v for k, v in result.items() if v is not None}))
        client.log_artifact(run_id, str(result_file))
    client.set_terminated(run_id)
    return run_id
