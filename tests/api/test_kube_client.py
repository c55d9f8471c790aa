"""RealKube's hot calls (raw JSON over aiohttp, `clients.apiserver`) against the real apiserver: what
they return, that creates are idempotent, that a missing object reads as None, and that refusals and an
unreachable server become our Rejected / Unavailable with the cause the callers test (HTTP status)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from tuneloop.api import constants
from tuneloop.operator.clients.errors import Rejected, Unavailable
from tuneloop.operator.clients.kube import KubeEvents, RealKube


def real_kube(kubeconfig: Path, context: str = "admin", host: str | None = None) -> RealKube:
    configuration = k8s.Configuration()
    k8s_config.load_kube_config(config_file=str(kubeconfig), context=context, client_configuration=configuration)
    if host is not None:
        configuration.host = host
    return RealKube(k8s.ApiClient(configuration), threads=2)


def finetune(namespace: str, name: str) -> dict[str, Any]:
    return {"apiVersion": constants.API_VERSION, "kind": constants.FINETUNE_KIND,
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"baseModel": {"uri": "hf://tiny/llama"}, "dataset": {"uri": "s3://bucket/data.jsonl"},
                     "registry": {"modelName": "m", "trackingUri": "http://127.0.0.1:1"}}}


def test_hot_calls_read_write_and_create_once(kubeconfig: Path, api_client: Any, namespace: str,
                                              rayjob_crd: None) -> None:
    custom, core = k8s.CustomObjectsApi(api_client), k8s.CoreV1Api(api_client)
    custom.create_namespaced_custom_object(constants.GROUP, constants.VERSION, namespace, constants.FINETUNE_PLURAL,
                                           finetune(namespace, "ft"))
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "namespace": namespace},
          "data": {"k": "v"}}
    rayjob = {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": {"name": "rj", "namespace": namespace},
              "spec": {"entrypoint": "python -c 1"}}

    async def story() -> tuple[Any, ...]:
        kube = real_kube(kubeconfig)
        try:
            missing = (await kube.get_finetune(namespace, "nope"), await kube.get_rayjob(namespace, "nope"))
            for _ in range(2):  # the second create meets 409 and is no error
                await kube.ensure_configmap(cm)
                await kube.ensure_rayjob(rayjob)
            await kube.write_finetune_status(namespace, "ft", {"phase": "Pending"})
            got = await kube.get_finetune(namespace, "ft")
            job = await kube.get_rayjob(namespace, "rj")
            body = {"apiVersion": constants.API_VERSION, "kind": constants.FINETUNE_KIND, "metadata": got["metadata"]}
            await KubeEvents(kube).emit(body, "Normal", "Tested", "an event from the raw path")
            return missing, got, job
        finally:
            await kube.aclose()

    missing, got, job = asyncio.run(story())
    assert missing == (None, None)
    assert got["status"] == {"phase": "Pending"} and got["spec"]["registry"]["modelName"] == "m"
    assert job["spec"]["entrypoint"] == "python -c 1"
    assert core.read_namespaced_config_map("cm", namespace).data == {"k": "v"}
    events = core.list_namespaced_event(namespace).items
    assert [(e.reason, e.message, e.involved_object.name) for e in events] == [
        ("Tested", "an event from the raw path", "ft")]


def test_a_refusal_is_rejected_with_its_status(kubeconfig: Path, namespace: str) -> None:
    """The restricted user may not create ConfigMaps: Rejected, caused by the apiserver's 403."""
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "namespace": namespace}}

    async def story() -> Rejected:
        kube = real_kube(kubeconfig, context="restricted")
        try:
            with pytest.raises(Rejected) as caught:
                await kube.ensure_configmap(cm)
            return caught.value
        finally:
            await kube.aclose()

    error = asyncio.run(story())
    assert isinstance(error.__cause__, ApiException) and error.__cause__.status == 403
    assert f"create ConfigMap {namespace}/cm: apiserver answered 403" in str(error)
    assert "forbidden" in str(error)


def test_an_unreachable_apiserver_is_unavailable(kubeconfig: Path) -> None:
    async def story() -> Unavailable:
        kube = real_kube(kubeconfig, host="https://127.0.0.1:1")
        try:
            with pytest.raises(Unavailable) as caught:
                await kube.get_finetune("default", "ft")
            return caught.value
        finally:
            await kube.aclose()

    assert "get FineTune default/ft" in str(asyncio.run(story()))


def test_a_modeldeployment_look_reads_writes_and_loses_a_race_cleanly(kubeconfig: Path, api_client: Any,
                                                                      control_plane: Any, namespace: str) -> None:
    """The calls every look of a ModelDeployment makes: read it and its RayService (missing: None), write its
    status, and the conditional write that two daemons share (a stale resourceVersion: False, nothing written)."""
    crd = Path(__file__).resolve().parents[1] / "fixtures" / "rayservice-crd.yaml"
    control_plane.kubectl("apply", "--server-side", "-f", str(crd))
    control_plane.kubectl("wait", "--for=condition=Established", "--timeout=30s", "-f", str(crd))
    custom = k8s.CustomObjectsApi(api_client)
    custom.create_namespaced_custom_object(constants.GROUP, constants.VERSION, namespace, constants.DEPLOYMENT_PLURAL, {
        "apiVersion": constants.API_VERSION, "kind": "ModelDeployment", "metadata": {"name": "md"},
        "spec": {"model": {"name": "m", "alias": "champion"}}})
    custom.create_namespaced_custom_object("ray.io", "v1", namespace, "rayservices", {
        "apiVersion": "ray.io/v1", "kind": "RayService", "metadata": {"name": "rs"}, "spec": {}})

    async def story() -> tuple[Any, ...]:
        kube = real_kube(kubeconfig)
        try:
            missing = (await kube.get_modeldeployment(namespace, "nope"), await kube.get_rayservice(namespace, "nope"))
            rayservice = await kube.get_rayservice(namespace, "rs")
            first = await kube.get_modeldeployment(namespace, "md")
            await kube.write_modeldeployment_status(namespace, "md", {"phase": "Pending"})
            stale = await kube.write_modeldeployment_status_if(namespace, "md", {"phase": "Serving"},
                                                               first["metadata"]["resourceVersion"])
            fresh = await kube.get_modeldeployment(namespace, "md")
            won = await kube.write_modeldeployment_status_if(namespace, "md", {"phase": "Deploying"},
                                                             fresh["metadata"]["resourceVersion"])
            return missing, rayservice, fresh, stale, won, await kube.get_modeldeployment(namespace, "md")
        finally:
            await kube.aclose()

    missing, rayservice, fresh, stale, won, last = asyncio.run(story())
    assert missing == (None, None)
    assert rayservice["metadata"]["name"] == "rs"
    assert fresh["status"]["phase"] == "Pending" and fresh["spec"]["model"]["alias"] == "champion"
    assert (stale, won) == (False, True)
    assert last["status"]["phase"] == "Deploying"
