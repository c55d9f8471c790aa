"""Gather → decide → act for one ModelDeployment, behind our client interfaces (no kopf here).

`DeploymentReconciler.reconcile` reads the object, looks `spec.model` up in MLflow and our application
up in Ray Serve, asks `logic.deploying.decide_deployment` for a plan, sends the application config
when the plan says so (read-merge-write in `clients.serve`), posts the plan's Events, writes status
only if it changed, and returns when to look again. Ray or MLflow unreachable is a wait
(`decide_unavailable`), never an exception out of here. Deleting the object removes its application
from Serve, leaving every other application as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

from pydantic import ValidationError

from tuneloop.api import conditions as c
from tuneloop.api.deployment import ModelDeploymentSpec, ModelDeploymentStatus
from tuneloop.operator.clients.errors import ClientError, Unavailable
from tuneloop.operator.clients.kube import Events
from tuneloop.operator.clients.mlflow import ModelResolver
from tuneloop.operator.clients.serve import Serve
from tuneloop.operator.logic import canary, deploying, rayservice, serveconfig
from tuneloop.operator.logic.deploying import DeployObserved, DeployPlan, DeployPolicy, EnsureRayService
from tuneloop.operator.metrics import Metrics
from tuneloop.operator.settings import OperatorSettings

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(UTC)


class DeploymentKube(Protocol):
    async def get_modeldeployment(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def write_modeldeployment_status(self, namespace: str, name: str, status: dict[str, Any]) -> None: ...
    async def write_modeldeployment_status_if(self, namespace: str, name: str, status: dict[str, Any],
                                              resource_version: str) -> bool: ...
    async def get_rayservice(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def apply_rayservice(self, body: dict[str, Any]) -> None: ...


class DeploymentReconciler:
    """Level-based reconciliation of ModelDeployments; one instance serves every object."""

    def __init__(self, kube: DeploymentKube, serve: Serve, registry: ModelResolver, events: Events,
                 settings: OperatorSettings, metrics: Metrics | None = None,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.kube, self.serve, self.registry, self.events = kube, serve, registry, events
        self.settings = settings
        self.metrics = metrics or Metrics.disabled()
        self.clock = clock
        # Our RayServices as the operator's watch last saw them, by (namespace, name)
        # (handlers.deployment.watch_rayservice): what a look given the watch-fed object reads instead of a
        # GET. Empty while that watch is not running (no RayService CRD when the operator started).
        self.watched_rayservices: dict[tuple[str, str], dict[str, Any]] = {}
        # Per object, the observation of its last look when that look found it Serving at rest and left it so
        # (`deploying.is_steady`), and when to look again: a quiet look that observes the same skips deciding.
        self.steady: dict[tuple[str, str], tuple[DeployObserved, float | None]] = {}
        traffic_root = settings.serve_traffic_root or f"file://{settings.storage_root}/traffic"
        self.policy = DeployPolicy(
            poll_seconds=settings.poll_seconds, max_poll_seconds=settings.max_poll_seconds,
            rollout_poll_seconds=settings.serve_rollout_poll_seconds,
            app=serveconfig.AppSettings(traffic_root=traffic_root), ray_image=settings.ray_image,
            ray_head_cpu=settings.ray_head_cpu, ray_head_memory=settings.ray_head_memory)

    def address(self, spec: ModelDeploymentSpec) -> str | None:
        return spec.serving.address or self.settings.serve_address

    def tracking_uri(self, spec: ModelDeploymentSpec) -> str | None:
        return spec.model.tracking_uri or self.settings.mlflow_tracking_uri

    def saw_rayservice(self, namespace: str, name: str, body: dict[str, Any] | None) -> None:
        """The watch's latest view of one of our RayServices (None: deleted)."""
        if body is None:
            self.watched_rayservices.pop((namespace, name), None)
        else:
            self.watched_rayservices[(namespace, name)] = body

    async def reconcile(self, namespace: str, name: str, body: dict[str, Any] | None = None) -> float | None:
        """One look; returns seconds until the next (None: on change only). `body` is the object as the
        watch delivered it (a quiet look, #11): the look then reads its RayService from the watch too, when
        the watch has seen it. None: GET both, as after a rollout step, a lost race or a change."""
        watched = body is not None
        if body is None:
            body = await self.kube.get_modeldeployment(namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            self.steady.pop((namespace, name), None)
            return None
        meta = body["metadata"]
        status = ModelDeploymentStatus.model_validate(body.get("status") or {})
        try:
            spec = ModelDeploymentSpec.model_validate(body.get("spec") or {})
        except ValidationError as e:
            st = status.model_copy(deep=True)
            st.phase, st.observed_generation = "Failed", meta.get("generation", 0)
            st.conditions = c.set_condition(st.conditions, c.READY, "False", c.REASON_INVALID_SPEC,
                                            f"spec does not match this operator's model: {e}", self.clock(),
                                            st.observed_generation)
            await self._write(body, status, DeployPlan(st))
            return None  # (a lost race here is redone on the next change)
        o = DeployObserved(namespace=meta["namespace"], name=meta["name"], generation=meta.get("generation", 0),
                           spec=spec, status=status, now=self.clock(), address=self.address(spec),
                           tracking_uri=self.tracking_uri(spec), uid=meta.get("uid", ""),
                           public_endpoint_base=spec.serving.endpoint_base or self.settings.serve_endpoint_base)
        steady = self.steady.pop((namespace, name), None)
        try:
            o = await self.observe_model(o)  # kept when Ray then fails: ModelResolved stays true to MLflow
            o = await self.observe_serving(o, watched)
            if watched and steady is not None and deploying.repeats_steady_look(steady[0], o):
                self.steady[(namespace, name)] = steady
                log.debug("looked at %s/%s: Serving, unchanged, next look in %s", namespace, name, steady[1])
                return steady[1]
            plan = deploying.decide_deployment(o, self.policy)
            for action in plan.actions:
                if isinstance(action, EnsureRayService):
                    await self.kube.apply_rayservice(action.manifest)
                else:
                    await self.serve.apply_app(action.address, action.app_name, action.config)
        except ClientError as e:
            self.metrics.errors.labels(system=e.system).inc()
            reason = {"ray": c.REASON_RAY_UNAVAILABLE, "mlflow": c.REASON_REGISTRY_UNAVAILABLE}.get(e.system)
            if reason is None:
                raise
            kind = "unreachable" if isinstance(e, Unavailable) else "refused the request"
            plan = deploying.decide_unavailable(o, self.policy, reason,
                                                f"{e.system} {kind}; retrying with backoff: {e}")
        if not await self._write(body, status, plan):
            # The monitor daemon wrote meanwhile: decide again from a fresh read (our actions are idempotent).
            log.debug("status of %s/%s changed under us; looking again", namespace, name)
            return min(self.policy.rollout_poll_seconds, 1.0)
        log.debug("looked at %s/%s: %s, next look %s", namespace, name, plan.status.phase,
                  "on change" if plan.requeue_seconds is None else f"in {plan.requeue_seconds:g}s")
        if deploying.is_steady(o, plan):
            self.steady[(namespace, name)] = (o, plan.requeue_seconds)
        return plan.requeue_seconds

    async def observe_model(self, o: DeployObserved) -> DeployObserved:
        """What MLflow says about spec.model (nothing to look up without a registry or a runtime)."""
        on_kuberay = o.spec.serving.mode == "RayService"
        if not o.tracking_uri or not (o.address or on_kuberay) or o.spec.serving.runtime != "RayServe":
            return o
        ref = o.spec.model
        return replace(o, lookup=await self.registry.lookup_model(o.tracking_uri, ref.name, ref.alias, ref.version))

    async def observe_serving(self, o: DeployObserved, watched: bool = False) -> DeployObserved:
        """Our application on Ray Serve, or our RayService (from the watch when `watched` and it has seen
        it, else a GET); only once the model resolved."""
        if o.lookup is None or o.lookup.version is None:
            return o
        if o.spec.serving.mode == "RayService":
            rs_name = rayservice.rayservice_name(o.name)
            found = self.watched_rayservices.get((o.namespace, rs_name)) if watched else None
            if found is None:
                found = await self.kube.get_rayservice(o.namespace, rs_name)
            return replace(o, rayservice=found)
        assert o.address is not None
        state = await self.serve.get_state(o.address)
        app = state.apps.get(serveconfig.app_name(o.namespace, o.name))
        host = urlsplit(o.address).hostname or "127.0.0.1"
        if state.http_host not in (None, "0.0.0.0", "::", "127.0.0.1", "localhost"):
            host = str(state.http_host)
        port = state.http_port or self.settings.serve_http_port
        o = replace(o, app=app, endpoint_base=f"http://{host}:{port}")
        if deploying.needs_warmup(o):
            assert o.lookup is not None and o.lookup.version is not None and o.endpoint_base is not None
            model_id = serveconfig.model_id(o.spec.model.name, o.lookup.version.version)
            endpoint = o.endpoint_base + serveconfig.route_prefix(o.namespace, o.name)
            ok, message = await self.serve.warm_up(endpoint, model_id)
            o = replace(o, warmup=deploying.Warmup(model_id, ok, message))
        read, since = deploying.canary_read(o)
        if read and o.status.served_version:
            assert o.lookup is not None and o.lookup.version is not None and o.endpoint_base is not None
            endpoint = o.endpoint_base + serveconfig.route_prefix(o.namespace, o.name)
            summary, error = await self.serve.read_stats(endpoint, since)
            window = canary.window_from(summary, serveconfig.model_id(o.spec.model.name, o.lookup.version.version),
                                        serveconfig.model_id(o.spec.model.name, o.status.served_version)
                                        ) if summary is not None else None
            o = replace(o, canary_window=window, canary_read_error=error or ("" if window else "no clock in answer"))
        return o

    async def _write(self, body: dict[str, Any], before: ModelDeploymentStatus, plan: DeployPlan) -> bool:
        """Events first, then status: the status write commits the step (as for FineTunes). The write is
        conditional on the version read: False when another writer got there first (nothing written)."""
        for event in plan.events:
            await self.events.emit(body, event.type, event.reason, event.message)
        after = plan.status
        if after.to_k8s() == before.to_k8s():
            return True
        meta = body["metadata"]
        if not meta.get("resourceVersion"):
            await self.kube.write_modeldeployment_status(meta["namespace"], meta["name"], after.to_k8s())
            return True
        return await self.kube.write_modeldeployment_status_if(meta["namespace"], meta["name"], after.to_k8s(),
                                                               str(meta["resourceVersion"]))

    async def cleanup(self, body: dict[str, Any]) -> None:
        """Remove our application from Serve (every other application stays). Raises ClientError to be
        retried until the delete timeout; then gives up with a Warning so deletion never blocks forever."""
        meta = body["metadata"]
        try:
            spec: ModelDeploymentSpec | None = ModelDeploymentSpec.model_validate(body.get("spec") or {})
        except ValidationError:
            spec = None
        address = self.address(spec) if spec is not None else self.settings.serve_address
        if not address or (spec is not None and spec.serving.mode != "ExistingCluster"):
            return  # a RayService is owned by the ModelDeployment: the garbage collector deletes it
        name = serveconfig.app_name(meta["namespace"], meta["name"])
        try:
            await self.serve.apply_app(address, name, None)
        except ClientError as e:
            deleted_at = datetime.fromisoformat(str(meta.get("deletionTimestamp")).replace("Z", "+00:00"))
            waited = (self.clock() - deleted_at).total_seconds()
            if waited < self.settings.delete_timeout_seconds:
                raise
            await self.events.emit(body, "Warning", "CleanupAbandoned", c.truncate(
                f"gave up removing Serve application {name} from {address} after {waited:.0f}s: {e}. "
                f"Remove it by hand (PUT the config without it to {address}/api/serve/applications/)"))
