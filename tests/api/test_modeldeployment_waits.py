"""ModelDeployment waits on the real apiserver with a real MLflow server and the operator in-process:
a Ray dashboard that does not answer is a temporary condition (RayUnavailable, status.waiting kept
across re-checks, a Warning) and never a crash loop; when the alias appears later, the wait moves on to Ray."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client as k8s

from tests.api.conftest import start_operator
from tuneloop.api import constants
from tuneloop.devenv.ports import free_port

MODEL = "wait-model"


def cond(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == type_), {})


def test_unreachable_ray_and_a_late_alias_are_waits(operator_env: Any, rayjob_crd: None, mlflow_server: Any,
                                                     api_client: Any, namespace: str) -> None:
    from mlflow.tracking import MlflowClient

    registry = MlflowClient(mlflow_server.tracking_uri, registry_uri=mlflow_server.tracking_uri)
    registry.create_registered_model(MODEL)
    version = str(registry.create_model_version(MODEL, "s3://models/wait/v1").version)
    api, core = k8s.CustomObjectsApi(api_client), k8s.CoreV1Api(api_client)
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    body = {"apiVersion": constants.API_VERSION, "kind": constants.DEPLOYMENT_KIND, "metadata": {"name": "w"},
            "spec": {"model": {"name": MODEL, "alias": "champion", "trackingUri": mlflow_server.tracking_uri},
                     "serving": {"address": closed}}}

    def md() -> dict[str, Any]:
        return api.get_namespaced_custom_object(constants.GROUP, constants.VERSION, namespace,
                                                constants.DEPLOYMENT_PLURAL, "w")

    def wait(pred: Callable[[dict[str, Any]], bool], what: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            last = md()
            if pred(last):
                return last
            assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{json.dumps(last, indent=1)[:3000]}"
            time.sleep(0.2)

    with start_operator(namespace) as runner:
        api.create_namespaced_custom_object(constants.GROUP, constants.VERSION, namespace,
                                            constants.DEPLOYMENT_PLURAL, body)
        obj = wait(lambda o: cond(o, "ModelResolved").get("reason") == "AliasNotFound", "AliasNotFound")
        assert f"versions: {version}" in cond(obj, "ModelResolved")["message"]
        assert obj["status"]["phase"] == "Pending" and obj["status"]["waiting"]["reason"] == "AliasNotFound"

        registry.set_registered_model_alias(MODEL, "champion", version)
        obj = wait(lambda o: cond(o, "Ready").get("reason") == "RayUnavailable", "RayUnavailable")
        assert cond(obj, "ModelResolved")["status"] == "True"
        assert obj["status"]["phase"] == "Pending" and obj["status"]["waiting"]["reason"] == "RayUnavailable"
        assert closed in cond(obj, "Ready")["message"]
        since = obj["status"]["waiting"]["since"]
        time.sleep(6)  # several backed-off re-checks (TUNELOOP_POLL_SECONDS 0.5, max 2)
        obj = md()
        assert obj["status"]["waiting"]["since"] == since and cond(obj, "Ready")["reason"] == "RayUnavailable"
        events = core.list_namespaced_event(namespace, field_selector="involvedObject.name=w").items
        warnings = [e.reason for e in events if e.type == "Warning"]
        assert "RayUnavailable" in warnings and "AliasNotFound" in warnings, warnings
    assert runner.exit_code == 0, runner.output
    assert "reconcile crashed" not in runner.output


def test_a_status_write_from_a_stale_read_writes_nothing(operator_env: Any, api_client: Any, namespace: str) -> None:
    """Two daemons (serving, monitoring) write a ModelDeployment's status: the serving one writes only
    if the object is still the version it read, so it never undoes the monitor's write."""
    import asyncio

    from tuneloop.operator.clients.kube import RealKube

    api = k8s.CustomObjectsApi(api_client)
    body = {"apiVersion": constants.API_VERSION, "kind": constants.DEPLOYMENT_KIND, "metadata": {"name": "cas"},
            "spec": {"model": {"name": MODEL, "version": "1"}}}
    created = api.create_namespaced_custom_object(constants.GROUP, constants.VERSION, namespace,
                                                  constants.DEPLOYMENT_PLURAL, body)
    stale = created["metadata"]["resourceVersion"]

    async def story() -> tuple[bool, bool, bool]:
        kube = RealKube.from_environment(2)
        try:
            first = await kube.write_modeldeployment_status_if(namespace, "cas", {"phase": "Pending"}, stale)
            # the monitor's write, from its own read
            await kube.write_modeldeployment_status(namespace, "cas", {"phase": "Pending", "consecutiveBreaches": 2})
            second = await kube.write_modeldeployment_status_if(namespace, "cas", {"phase": "Serving"}, stale)
            current = await kube.get_modeldeployment(namespace, "cas")
            assert current is not None
            third = await kube.write_modeldeployment_status_if(
                namespace, "cas", {**current["status"], "phase": "Serving"}, current["metadata"]["resourceVersion"])
            return first, second, third
        finally:
            kube.close()

    assert asyncio.run(story()) == (True, False, True)
    status = api.get_namespaced_custom_object(constants.GROUP, constants.VERSION, namespace,
                                              constants.DEPLOYMENT_PLURAL, "cas")["status"]
    assert status == {"phase": "Serving", "consecutiveBreaches": 2}
