"""Kubernetes access for the controller: the FineTune, its status, and its children (ConfigMap, RayJob).

The FineTune controller's hot calls (read the FineTune, write its status, create its ConfigMap and
RayJob, post Events) are raw JSON over aiohttp on the event loop (`clients.apiserver`: a third of the
CPU of the official client per request). The rest use the official client, which is synchronous; its
calls run on a bounded thread pool of their own so they never starve kopf's executor. Responses are
always read in full: an unread `_preload_content=False` response keeps its connection out of the pool,
and every later call then pays a new TLS handshake (~40 ms here). Events are posted by `emit`, awaited:
the controller posts a transition's Event before the status write that records it (see
handlers.reconciler), which only holds if the Event is really created when the call returns (kopf's own
poster queues it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

import aiohttp
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from tuneloop.api import constants
from tuneloop.operator.clients.apiserver import ApiserverHttp
from tuneloop.operator.clients.errors import ClientError, Rejected, Unavailable

RAY_GROUP, RAY_VERSION, RAYJOB_PLURAL = "ray.io", "v1", "rayjobs"
T = TypeVar("T")


class Kube(Protocol):
    """What the FineTune controller needs from the apiserver."""

    async def get_finetune(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def write_finetune_status(self, namespace: str, name: str, status: dict[str, Any]) -> None: ...
    async def ensure_configmap(self, body: dict[str, Any]) -> None: ...
    async def ensure_rayjob(self, body: dict[str, Any]) -> None: ...
    async def get_rayservice(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def apply_rayservice(self, body: dict[str, Any]) -> None: ...
    async def get_rayjob(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def delete_rayjob(self, namespace: str, name: str) -> None: ...
    async def delete_children(self, namespace: str, label_selector: str, owner_uid: str) -> int: ...
    async def annotate_finetune(self, namespace: str, name: str, annotations: Mapping[str, str]) -> None: ...


class Events(Protocol):
    """Kubernetes Events about an object; `emit` returns once the Event exists (or was refused)."""

    async def emit(self, body: dict[str, Any], type_: str, reason: str, message: str) -> None: ...


log = logging.getLogger(__name__)
EVENT_COMPONENT = "tuneloop-operator"
MAX_EVENT_MESSAGE_CHARS = 1024


def build_event(body: dict[str, Any], type_: str, reason: str, message: str, now: datetime) -> dict[str, Any]:
    """A core/v1 Event about `body`, shaped like the ones kubectl describe lists."""
    meta = body.get("metadata") or {}
    stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if len(message) > MAX_EVENT_MESSAGE_CHARS:
        suffix = " …(truncated)"
        message = message[: MAX_EVENT_MESSAGE_CHARS - len(suffix)] + suffix
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": f"{meta.get('name', 'object')}.", "namespace": meta.get("namespace")},
        "involvedObject": {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"), "name": meta.get("name"),
                           "namespace": meta.get("namespace"), "uid": meta.get("uid")},
        "type": type_, "reason": reason, "message": message,
        "source": {"component": EVENT_COMPONENT}, "reportingComponent": EVENT_COMPONENT,
        "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
    }


class KubeEvents:
    """`Events` through the apiserver, awaited. A refused Event (RBAC, a namespace being deleted) is
    logged and dropped, as kopf does: it must not stop the object's reconciliation. An unreachable
    apiserver raises, so the status write that would record the transition is not made either."""

    def __init__(self, kube: RealKube) -> None:
        self._kube = kube

    async def emit(self, body: dict[str, Any], type_: str, reason: str, message: str) -> None:
        event = build_event(body, type_, reason, message, datetime.now(UTC))
        namespace = event["metadata"]["namespace"]
        try:
            await self._kube.create_event(event)
        except Rejected as e:
            log.warning("Event %s about %s/%s was refused: %s", reason, namespace,
                        event["involvedObject"]["name"], e)


def _object_path(group: str, version: str, plural: str, namespace: str, name: str = "") -> str:
    """The REST path of a namespaced custom object (of its collection when `name` is empty)."""
    path = f"/apis/{group}/{version}/namespaces/{quote(namespace)}/{plural}"
    return f"{path}/{quote(name)}" if name else path


def _finetune_path(namespace: str, name: str) -> str:
    return _object_path(constants.GROUP, constants.VERSION, constants.FINETUNE_PLURAL, namespace, name)


def _deployment_path(namespace: str, name: str) -> str:
    return _object_path(constants.GROUP, constants.VERSION, constants.DEPLOYMENT_PLURAL, namespace, name)


def _translate(e: Exception, what: str) -> ClientError:
    if isinstance(e, ApiException):
        text = (e.body or b"").decode(errors="replace") if isinstance(e.body, bytes) else str(e.body or e.reason)
        with contextlib.suppress(ValueError, AttributeError):
            text = json.loads(text).get("message", text)
        if e.status == 404 and "the server could not find the requested resource" in text:
            return Rejected(f"{what}: the kind is not installed ({text}); install KubeRay's CRDs", "kubernetes")
        if e.status in (429, 500, 502, 503, 504):
            return Unavailable(f"{what}: apiserver answered {e.status}: {text}", "kubernetes")
        return Rejected(f"{what}: apiserver answered {e.status}: {text}", "kubernetes")
    return Unavailable(f"{what}: {type(e).__name__}: {e}", "kubernetes")


class RealKube:
    """`Kube` over the official client, on its own thread pool."""

    def __init__(self, api_client: k8s.ApiClient, threads: int = 16) -> None:
        self._api = api_client
        self._custom = k8s.CustomObjectsApi(api_client)
        self._core = k8s.CoreV1Api(api_client)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tuneloop-kube")
        self._http = ApiserverHttp(api_client.configuration, threads)

    @classmethod
    def from_environment(cls, threads: int = 16) -> RealKube:
        """In-cluster credentials, else $KUBECONFIG / ~/.kube/config (like kopf's own login)."""
        configuration = k8s.Configuration()
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
        except k8s_config.ConfigException:
            # KUBECONFIG is read now, not when the kubernetes package was imported.
            k8s_config.load_kube_config(config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration)
        configuration.connection_pool_maxsize = threads
        return cls(k8s.ApiClient(configuration), threads)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._api.close()

    async def aclose(self) -> None:
        await self._http.close()
        self.close()

    async def _request(self, what: str, method: str, path: str, body: Any = None,
                       content_type: str = "application/json") -> Any:
        try:
            return await self._http.request(method, path, body, content_type)
        except (ApiException, aiohttp.ClientError, TimeoutError, OSError) as e:
            raise _translate(e, what) from e

    async def _request_or_none(self, what: str, path: str) -> Any:
        try:
            return await self._request(what, "GET", path)
        except Rejected as e:
            if isinstance(e.__cause__, ApiException) and e.__cause__.status == 404 and "not installed" not in str(e):
                return None
            raise

    async def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))
        except (ApiException, HTTPError, OSError) as e:
            raise _translate(e, what) from e

    async def _get_or_none(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return await self._call(what, fn, *args)
        except Rejected as e:
            if isinstance(e.__cause__, ApiException) and e.__cause__.status == 404 and "not installed" not in str(e):
                return None
            raise

    async def get_finetune(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._request_or_none(f"get FineTune {namespace}/{name}", _finetune_path(namespace, name))

    async def write_finetune_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        # JSON patch `add /status` replaces the whole status, so fields the decision dropped are gone.
        await self._request(f"write status of FineTune {namespace}/{name}", "PATCH",
                            _finetune_path(namespace, name) + "/status",
                            [{"op": "add", "path": "/status", "value": status}], "application/json-patch+json")

    async def create_event(self, event: dict[str, Any]) -> None:
        namespace = event["metadata"]["namespace"]
        await self._request(f"post Event {event.get('reason')} in {namespace}", "POST",
                            f"/api/v1/namespaces/{quote(namespace)}/events", event)

    async def get_modeldeployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._request_or_none(f"get ModelDeployment {namespace}/{name}",
                                           _deployment_path(namespace, name))

    async def write_modeldeployment_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        await self._request(f"write status of ModelDeployment {namespace}/{name}", "PATCH",
                            _deployment_path(namespace, name) + "/status",
                            [{"op": "add", "path": "/status", "value": status}], "application/json-patch+json")

    async def write_modeldeployment_status_if(self, namespace: str, name: str, status: dict[str, Any],
                                              resource_version: str) -> bool:
        """Replace the status only if the object is still `resource_version` (a JSON patch `test`): two
        daemons write a ModelDeployment's status (serving, monitoring), and a whole-status write from a
        stale read would undo the other's. False: it changed meanwhile, nothing was written."""
        ops = [{"op": "test", "path": "/metadata/resourceVersion", "value": resource_version},
               {"op": "add", "path": "/status", "value": status}]
        try:
            await self._request(f"write status of ModelDeployment {namespace}/{name}", "PATCH",
                                _deployment_path(namespace, name) + "/status", ops, "application/json-patch+json")
        except Rejected as e:
            # A failed `test` is a bare 422 "Invalid" (no cause named): tell it from a status the schema
            # refuses by whether the object moved on.
            if isinstance(e.__cause__, ApiException) and e.__cause__.status in (409, 422):
                current = await self.get_modeldeployment(namespace, name)
                if current is None or current["metadata"].get("resourceVersion") != resource_version:
                    return False
            raise
        return True

    async def annotate_finetune(self, namespace: str, name: str, annotations: Mapping[str, str]) -> None:
        """Set annotations in one merge patch (all or none); a FineTune that no longer exists is not an error."""
        try:
            await self._call(f"annotate FineTune {namespace}/{name}", self._custom.patch_namespaced_custom_object,
                             constants.GROUP, constants.VERSION, namespace, constants.FINETUNE_PLURAL, name,
                             {"metadata": {"annotations": dict(annotations)}})
        except Rejected as e:
            if not (isinstance(e.__cause__, ApiException) and e.__cause__.status == 404):
                raise

    async def _ensure(self, what: str, path: str, body: dict[str, Any]) -> None:
        try:
            await self._request(what, "POST", path, body)
        except Rejected as e:
            if isinstance(e.__cause__, ApiException) and e.__cause__.status == 409:
                return  # created before (by us: names are deterministic)
            raise

    async def ensure_configmap(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        await self._ensure(f"create ConfigMap {meta['namespace']}/{meta['name']}",
                           f"/api/v1/namespaces/{quote(meta['namespace'])}/configmaps", body)

    async def ensure_rayjob(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        await self._ensure(f"create RayJob {meta['namespace']}/{meta['name']}",
                           _object_path(RAY_GROUP, RAY_VERSION, RAYJOB_PLURAL, meta["namespace"]),
                           body)

    async def get_rayservice(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._request_or_none(
            f"get RayService {namespace}/{name}",
            _object_path(RAY_GROUP, RAY_VERSION, "rayservices", namespace, name))

    async def apply_rayservice(self, body: dict[str, Any]) -> None:
        """Create the RayService, or replace its whole spec (a JSON patch: no stale keys merged in)."""
        meta = body["metadata"]
        what = f"RayService {meta['namespace']}/{meta['name']}"
        try:
            await self._call(f"create {what}", self._custom.create_namespaced_custom_object,
                             RAY_GROUP, RAY_VERSION, meta["namespace"], "rayservices", body)
            return
        except Rejected as e:
            if not (isinstance(e.__cause__, ApiException) and e.__cause__.status == 409):
                raise
        await self._call(f"update the spec of {what}", self._custom.patch_namespaced_custom_object,
                         RAY_GROUP, RAY_VERSION, meta["namespace"], "rayservices", meta["name"],
                         [{"op": "replace", "path": "/spec", "value": body["spec"]}],
                         _content_type="application/json-patch+json")

    async def get_rayjob(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._request_or_none(
            f"get RayJob {namespace}/{name}",
            _object_path(RAY_GROUP, RAY_VERSION, RAYJOB_PLURAL, namespace, name))

    async def delete_rayjob(self, namespace: str, name: str) -> None:
        try:
            await self._call(f"delete RayJob {namespace}/{name}", self._custom.delete_namespaced_custom_object,
                             RAY_GROUP, RAY_VERSION, namespace, RAYJOB_PLURAL, name,
                             propagation_policy="Background")
        except Rejected as e:
            if not (isinstance(e.__cause__, ApiException) and e.__cause__.status == 404):
                raise

    async def delete_children(self, namespace: str, label_selector: str, owner_uid: str) -> int:
        """Delete the RayJobs and ConfigMaps we made for one FineTune (checked by ownerReference uid)."""
        def owned(meta: dict[str, Any]) -> bool:
            return any(ref.get("uid") == owner_uid for ref in meta.get("ownerReferences") or [])

        deleted = 0
        try:
            jobs: Any = await self._call(f"list RayJobs in {namespace}", self._custom.list_namespaced_custom_object,
                                    RAY_GROUP, RAY_VERSION, namespace, RAYJOB_PLURAL, label_selector=label_selector)
        except Rejected as e:
            if "not installed" not in str(e):
                raise
            jobs = {"items": []}
        for item in jobs.get("items", []):
            if owned(item["metadata"]):
                await self.delete_rayjob(namespace, item["metadata"]["name"])
                deleted += 1
        maps = await self._call(f"list ConfigMaps in {namespace}", self._core.list_namespaced_config_map,
                                namespace, label_selector=label_selector)
        for cm in maps.items:
            item = self._api.sanitize_for_serialization(cm)
            if owned(item["metadata"]):
                try:
                    await self._call(f"delete ConfigMap {namespace}/{item['metadata']['name']}",
                                     self._core.delete_namespaced_config_map, item["metadata"]["name"], namespace)
                    deleted += 1
                except Rejected as e:
                    if not (isinstance(e.__cause__, ApiException) and e.__cause__.status == 404):
                        raise
        return deleted
