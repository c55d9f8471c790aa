"""ModelDeployment in RayService mode on the real apiserver, with KubeRay's RayService CRD (a
structural stand-in, tests/fixtures/rayservice-crd.yaml), a real MLflow server and the operator
in-process. The test acts as KubeRay by writing the RayService's status.

One story: the owned RayService is created with our application; Serving only once KubeRay says Ready
with our app RUNNING for our generation; a champion move rewrites only serveConfigV2 (same cluster)
and is served once KubeRay has observed it; DEPLOY_FAILED is reported by us; printer columns.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from tests.api.conftest import start_operator
from tuneloop.api import constants

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MODEL = "rs-model"


@pytest.fixture(scope="module")
def rayservice_crd(control_plane: Any) -> None:
    path = FIXTURES / "rayservice-crd.yaml"
    control_plane.kubectl("apply", "--server-side", "-f", str(path))
    control_plane.kubectl("wait", "--for=condition=Established", "--timeout=30s", "-f", str(path))


@pytest.fixture(scope="module")
def versions(mlflow_server: Any) -> list[str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_server.tracking_uri, registry_uri=mlflow_server.tracking_uri)
    client.create_registered_model(MODEL)
    return [str(client.create_model_version(MODEL, f"s3://models/rs/v{i}").version) for i in (1, 2)]


def set_alias(mlflow_server: Any, alias: str, version: str) -> None:
    from mlflow.tracking import MlflowClient

    MlflowClient(mlflow_server.tracking_uri, registry_uri=mlflow_server.tracking_uri).set_registered_model_alias(
        MODEL, alias, version)


class Objects:
    def __init__(self, api_client: Any, ns: str) -> None:
        self.api, self.ns = k8s.CustomObjectsApi(api_client), ns

    def md(self, name: str) -> dict[str, Any]:
        return self.api.get_namespaced_custom_object(constants.GROUP, constants.VERSION, self.ns,
                                                     constants.DEPLOYMENT_PLURAL, name)

    def rs(self, name: str) -> dict[str, Any] | None:
        try:
            return self.api.get_namespaced_custom_object("ray.io", "v1", self.ns, "rayservices", name)
        except k8s.ApiException as e:
            if e.status == 404:
                return None
            raise

    def as_kuberay(self, name: str, app_status: str, ready: str = "True", message: str = "") -> None:
        rs = self.rs(name)
        assert rs is not None
        self.api.patch_namespaced_custom_object_status("ray.io", "v1", self.ns, "rayservices", name, {"status": {
            "observedGeneration": rs["metadata"]["generation"],
            "conditions": [{"type": "Ready", "status": ready, "reason": "x", "message": message}],
            "activeServiceStatus": {"applicationStatuses": {f"{self.ns}.{name}": {"status": app_status,
                                                                                   "message": message}}}}})

    def wait(self, name: str, pred: Callable[[dict[str, Any]], Any], what: str, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            last = self.md(name)
            value = pred(last)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; last:\n{json.dumps(last, indent=1)[:3000]}")
            time.sleep(0.2)


def cond(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == type_), {})


def app_of(rs: dict[str, Any]) -> dict[str, Any]:
    (app,) = json.loads(rs["spec"]["serveConfigV2"])["applications"]
    return app


def user_config(rs: dict[str, Any]) -> Any:
    return {d["name"]: d for d in app_of(rs)["deployments"]}["Ingress"].get("user_config")


def test_rayservice_story(operator_env: Any, rayservice_crd: None, rayjob_crd: None, mlflow_server: Any,
                          versions: list[str], api_client: Any, namespace: str, control_plane: Any) -> None:
    v1, v2 = versions
    set_alias(mlflow_server, "champion", v1)
    objects = Objects(api_client, namespace)
    body = {"apiVersion": constants.API_VERSION, "kind": constants.DEPLOYMENT_KIND, "metadata": {"name": "inv"},
            "spec": {"model": {"name": MODEL, "alias": "champion", "trackingUri": mlflow_server.tracking_uri},
                     "serving": {"mode": "RayService", "replicas": 2, "resources": {"gpus": 1, "memory": "16Gi"}}}}
    with start_operator(namespace) as runner:
        md = objects.api.create_namespaced_custom_object(constants.GROUP, constants.VERSION, namespace,
                                                         constants.DEPLOYMENT_PLURAL, body)
        rs = objects.wait("inv", lambda _: objects.rs("inv"), "the RayService")
        assert rs["metadata"]["ownerReferences"][0]["uid"] == md["metadata"]["uid"]
        assert user_config(rs) == {"default_model_id": f"{MODEL}/{v1}"}
        workers = rs["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
        assert workers["replicas"] == 2
        assert workers["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
        st = objects.wait("inv", lambda o: o.get("status", {}).get("phase") == "Deploying" and o["status"], "Deploying")
        assert cond(objects.md("inv"), "RollingOut")["status"] == "True" and "servedVersion" not in st

        # (RUNNING while KubeRay's Ready is False, or for an older generation, is not Serving: unit tables.)
        objects.as_kuberay("inv", "RUNNING")
        st = objects.wait("inv", lambda o: o["status"].get("servedVersion") == v1 and o["status"], "serving v1")
        assert st["endpoint"] == f"http://inv-serve-svc.{namespace}.svc:8000/{namespace}/inv"
        assert cond(objects.md("inv"), "Ready")["reason"] == "Serving"

        # The alias moves: only serveConfigV2 changes; served once KubeRay has observed the new generation.
        cluster_before = rs["spec"]["rayClusterConfig"]
        set_alias(mlflow_server, "champion", v2)
        rs = objects.wait("inv", lambda _: (r := objects.rs("inv")) and user_config(r) == {
            "default_model_id": f"{MODEL}/{v2}"} and r, "serveConfigV2 with v2")
        assert rs["spec"]["rayClusterConfig"] == cluster_before
        assert app_of(rs)["args"]["default_model_id"] == f"{MODEL}/{v1}"  # args kept: no replica restart
        assert objects.md("inv")["status"]["servedVersion"] == v1
        objects.as_kuberay("inv", "RUNNING")
        st = objects.wait("inv", lambda o: o["status"].get("servedVersion") == v2 and o["status"], "serving v2")
        assert [(r["version"], r.get("previousVersion")) for r in st["rolloutHistory"]] == [(v1, None), (v2, v1)]

        objects.as_kuberay("inv", "DEPLOY_FAILED", message="replica constructor raised")
        objects.wait("inv", lambda o: cond(o, "Ready").get("reason") == "DeployFailed", "DeployFailed")
        md = objects.md("inv")
        assert md["status"]["phase"] == "Degraded" and "replica constructor raised" in cond(md, "Ready")["message"]

        printed = control_plane.kubectl("get", "mdep", "inv", "-n", namespace).stdout
        assert "Degraded" in printed and "champion" in printed and "inv-serve-svc" in printed, printed
    assert runner.exit_code == 0, runner.output
