"""Gather → decide → act for one FineTune, behind our client interfaces (no kopf here).

`FineTuneReconciler.reconcile` reads the FineTune fresh from the apiserver (or takes the body the
caller just received, see `reconcile`), observes only what its
phase needs (the job, the result, the registry), asks `logic.reconciling.decide_finetune` for a plan,
runs the plan's idempotent actions, writes status only if it changed, and posts an Event per
transition. It loops while the plan says the next step is ready, and returns when to look again.
Ray or MLflow being unreachable, like a dataset path that does not exist yet, is not an error of the
FineTune: `logic.waiting` makes it a wait, the Ready condition says what is waited on and the next
look backs off exponentially up to TUNELOOP_MAX_POLL_SECONDS. The first look at each object after
start-up re-checks a past InvalidSpec verdict once (`Observed.recheck`): a verdict an older operator,
or this one with other settings, reached may no longer hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tuneloop.api import conditions as c
from tuneloop.api import constants
from tuneloop.api.finetune import FineTuneSpec, FineTuneStatus
from tuneloop.api.results import JobResult
from tuneloop.operator.clients.errors import ClientError, Unavailable
from tuneloop.operator.clients.kube import Events, Kube
from tuneloop.operator.clients.mlflow import Registry
from tuneloop.operator.clients.ray import RayJobs
from tuneloop.operator.logic import deleting, launching, naming, rayjob, reconciling
from tuneloop.operator.logic.observing import JobObservation, observe_rayjob, observe_submission
from tuneloop.operator.logic.plans import (
    Action,
    Event,
    Launch,
    NudgeFineTune,
    Observed,
    Plan,
    Policy,
    RegisterVersion,
    ResultLookup,
    SetAlias,
    StopJob,
)
from tuneloop.operator.logic.validation import ValidationContext, validate_spec
from tuneloop.operator.metrics import Metrics
from tuneloop.operator.settings import OperatorSettings

log = logging.getLogger(__name__)
MAX_STEPS = 8


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Clients:
    kube: Kube
    ray: RayJobs
    registry: Registry
    events: Events


def operator_version() -> str:
    try:
        from importlib.metadata import version

        return version("tuneloop")
    except Exception:
        return "0.0.0+unknown"


class FineTuneReconciler:
    """Level-based reconciliation of FineTunes; one instance serves every object."""

    def __init__(self, clients: Clients, settings: OperatorSettings, metrics: Metrics | None = None,
                 clock: Callable[[], datetime] = utcnow, path_exists: Callable[[str], bool] = os.path.exists) -> None:
        self.clients = clients
        self.settings = settings
        self.metrics = metrics or Metrics.disabled()
        self.clock = clock
        self.path_exists = path_exists
        self.version = operator_version()
        self.policy = Policy(
            poll_seconds=settings.poll_seconds,
            max_poll_seconds=settings.max_poll_seconds,
            storage_root=str(settings.storage_root),
            default_active_deadline_seconds=settings.default_active_deadline_seconds,
            deadline_grace_seconds=settings.deadline_grace_seconds,
            result_grace_seconds=settings.result_grace_seconds,
            alias_recheck_seconds=settings.alias_recheck_seconds,
            gpu_prices=dict(settings.gpu_prices_usd_per_hour),
            operator_version=self.version,
        )
        self.rayjob_defaults = rayjob.RayJobDefaults(
            image=settings.ray_image, head_cpu=settings.ray_head_cpu, head_memory=settings.ray_head_memory,
            ttl_seconds_after_finished=settings.rayjob_ttl_seconds,
            default_active_deadline_seconds=settings.default_active_deadline_seconds,
            pod_storage_root=settings.pod_storage_root, python=settings.job_python, operator_version=self.version,
        )
        self._seen: set[str] = set()  # uids looked at since start-up
        self._model_locks: dict[tuple[int, str, str], asyncio.Lock] = {}  # see _gate_lock

    # --- the loop ------------------------------------------------------------------------------

    async def reconcile(self, namespace: str, name: str, body: dict[str, Any] | None = None) -> float | None:
        """Reconcile until the plan waits; return seconds until the next look (None: on change only).

        `body`, if given, is used instead of a GET for the first step. Pass it only when it is as fresh
        as a GET for our purposes: it carries every status this process wrote for the object (the
        daemon's first look: nothing written yet). Later steps read the object afresh.
        """
        started = time.monotonic()
        try:
            for _ in range(MAX_STEPS):
                if body is None:
                    body = await self.clients.kube.get_finetune(namespace, name)
                if body is None or body["metadata"].get("deletionTimestamp"):
                    return None
                plan = await self._step(body)
                if not plan.again:
                    log.debug("looked at %s/%s: %s, next look %s", namespace, name, plan.status.phase,
                              "on change" if plan.requeue_seconds is None else f"in {plan.requeue_seconds:g}s")
                    return plan.requeue_seconds
                body = None
            return self.settings.poll_seconds
        finally:
            self.metrics.reconcile_seconds.observe(time.monotonic() - started)

    async def _step(self, body: dict[str, Any]) -> Plan:
        meta = body["metadata"]
        status = FineTuneStatus.model_validate(body.get("status") or {})
        try:
            spec = FineTuneSpec.model_validate(body.get("spec") or {})
        except ValidationError as e:
            after = reconciling.decide_unparseable(
                status, f"spec does not match this operator's model: {e}", self.clock(), meta.get("generation", 0))
            await self._write(body, status, after, reconciling.transition_events(status, after))
            return Plan(after)
        observed = Observed(
            namespace=meta["namespace"], name=meta["name"], uid=meta["uid"], generation=meta.get("generation", 0),
            spec=spec, status=status, now=self.clock(),
            retrain_request=(meta.get("annotations") or {}).get(constants.ANNOTATION_RETRAIN_REQUEST),
            retrain_reason=(meta.get("annotations") or {}).get(constants.ANNOTATION_RETRAIN_REASON),
            retrain_data=(meta.get("annotations") or {}).get(constants.ANNOTATION_RETRAIN_DATA),
            recheck=meta["uid"] not in self._seen,
        )
        try:
            async with self._gate_lock(observed):
                observed = await self.observe(observed)
                plan = reconciling.decide_finetune(observed, self.policy)
                for action in plan.actions:
                    await self.act(action, observed)
        except ClientError as e:
            self.metrics.errors.labels(system=e.system).inc()
            reason = {"ray": c.REASON_RAY_UNAVAILABLE, "mlflow": c.REASON_REGISTRY_UNAVAILABLE}.get(e.system)
            if reason is None:  # the apiserver itself: kopf's daemon logs and retries
                raise
            kind = "unreachable" if isinstance(e, Unavailable) else "refused the request"
            plan = reconciling.decide_unavailable(
                observed, self.policy, reason, f"{e.system} {kind}; retrying with backoff: {e}")
        await self._write(body, status, plan.status, plan.events)
        self._seen.add(observed.uid)
        self.metrics.set_phase(observed.uid, plan.status.phase)
        if plan.status.phase != status.phase:
            self._record_transition(plan.status)
        return plan

    def _gate_lock(self, o: Observed) -> contextlib.AbstractAsyncContextManager[object]:
        """Registering steps of FineTunes of one registered model run one at a time, so the champion a
        gate reads is still the champion when it moves the alias. Per process: one operator is active
        at a time (kopf peering); the re-decision in `logic.reconciling` covers moves made elsewhere."""
        if o.status.phase != "Registering":
            return contextlib.nullcontext()
        key = (id(asyncio.get_running_loop()), self.tracking_uri(o.spec), o.spec.registry.model_name)
        return self._model_locks.setdefault(key, asyncio.Lock())

    async def _write(self, body: dict[str, Any], before: FineTuneStatus, after: FineTuneStatus,
                     events: tuple[Event, ...]) -> None:
        """Post the step's Events, then write its status. The status write commits the step: killed
        before it, the next operator decides the same transition from the same status and posts its
        Event again (at least once); killed after it, the Event already exists (never lost)."""
        for event in events:
            await self.clients.events.emit(body, event.type, event.reason, event.message)
        written = after.to_k8s()
        if written != before.to_k8s():
            assert after.phase is not None, "every status written has a phase"
            meta = body["metadata"]
            await self.clients.kube.write_finetune_status(meta["namespace"], meta["name"], written)

    def _record_transition(self, after: FineTuneStatus) -> None:
        run = after.run
        if after.phase in reconciling.TERMINAL_PHASES and run and run.start_time and run.end_time:
            self.metrics.run_seconds.labels(outcome=after.phase).observe(
                (run.end_time - run.start_time).total_seconds())

    def forget(self, uid: str) -> None:
        self._seen.discard(uid)
        self.metrics.set_phase(uid, None)

    # --- observing -----------------------------------------------------------------------------

    def tracking_uri(self, spec: FineTuneSpec) -> str:
        return spec.registry.tracking_uri or self.settings.mlflow_tracking_uri or ""

    async def observe(self, o: Observed) -> Observed:
        """Fill what the current phase needs, and nothing more."""
        if reconciling.wanted_trigger(o) is not None:
            ctx = ValidationContext(self.settings.mlflow_tracking_uri, self.settings.check_file_uris,
                                    self.path_exists)
            return replace(o, problems=tuple(validate_spec(o.spec, ctx)))
        if reconciling.needs_job(o.status):
            job = await self.observe_job(o)
            failure = None
            if job.state == "Failed":
                try:
                    failure = (await self.find_result(o)).result
                except ClientError as e:  # the failure document only refines the reason
                    log.info("no failure result for %s/%s: %s", o.namespace, o.name, e)
            return replace(o, job=job, failure=failure)
        if o.status.phase == "Succeeded" and o.status.model is not None and o.status.run is not None:
            return await self.observe_aliases(o)
        if o.status.phase == "Registering" and o.status.run is not None:
            lookup = await self.find_result(o)
            o = replace(o, result=lookup)
            if lookup.result is None or lookup.result.status != "Succeeded":
                return o
            uri, model = self.tracking_uri(o.spec), o.spec.registry.model_name
            registry = self.clients.registry
            version = await registry.find_version(uri, model, o.uid, o.status.run.number)
            if version is None:
                return o
            # Read even when a decision is stored: the decision is remade if the champion moved since.
            champion = await registry.get_alias(uri, model, constants.ALIAS_CHAMPION)
            challenger = await registry.get_alias(uri, model, constants.ALIAS_CHALLENGER)
            return replace(o, version=version, champion=champion, challenger=challenger)
        return o

    async def observe_aliases(self, o: Observed) -> Observed:
        """Who holds champion and challenger now, for a Succeeded object's re-check. MLflow being down
        changes nothing here: the object keeps what it says and looks again later."""
        uri, model = self.tracking_uri(o.spec), o.spec.registry.model_name
        try:
            champion = await self.clients.registry.get_alias(uri, model, constants.ALIAS_CHAMPION)
            challenger = await self.clients.registry.get_alias(uri, model, constants.ALIAS_CHALLENGER)
        except ClientError as e:
            log.info("alias re-check of %s/%s skipped: %s", o.namespace, o.name, e)
            return o
        return replace(o, champion=champion, challenger=challenger, aliases_read=True)

    async def observe_job(self, o: Observed) -> JobObservation:
        run = o.status.run
        assert run is not None
        if run.mode == "ExistingCluster":
            address = o.spec.ray.address or ""
            info = await self.clients.ray.get_job(address, run.submission_id or "")
            return observe_submission(info, run.dashboard_url)
        obj = await self.clients.kube.get_rayjob(o.namespace, run.ray_job_name or "")
        return observe_rayjob(obj, o.now, self.settings.inconsistent_grace_seconds, run.inconsistent_since)

    async def find_result(self, o: Observed) -> ResultLookup:
        """The attempt's JobResult: the local file (ExistingCluster), else the MLflow run's artifact."""
        run = o.status.run
        assert run is not None
        places: list[str] = []
        if run.mode == "ExistingCluster":
            path = Path(str(naming.result_path(self.settings.storage_root, o.namespace, o.name, o.uid,
                                               run.number, run.attempt)))
            places.append(str(path))
            if path.is_file():
                try:
                    return ResultLookup(JobResult.model_validate(json.loads(path.read_text())), str(path))
                except (ValueError, OSError) as e:
                    log.warning("unreadable result %s: %s", path, e)
        experiment = naming.experiment_name(o.namespace, o.name, o.spec)
        places.append(f"MLflow experiment {experiment!r}, run tagged {constants.TAG_FINETUNE_UID}={o.uid} "
                      f"{constants.TAG_RUN_NUMBER}={run.number} {constants.TAG_RUN_ATTEMPT}={run.attempt}, "
                      f"artifact {constants.RESULT_ARTIFACT}")
        result = await self.clients.registry.find_result(self.tracking_uri(o.spec), experiment, o.uid,
                                                         run.number, run.attempt)
        return ResultLookup(result, "; ".join(places))

    # --- acting --------------------------------------------------------------------------------

    async def act(self, action: Action, o: Observed) -> None:
        uri = self.tracking_uri(o.spec)
        if isinstance(action, Launch):
            target = action.target
            if o.spec.ray.mode == "RayJob":
                # Both at once, one round trip: KubeRay takes seconds to reach the pods that mount the
                # ConfigMap, and a failed half is created by the next look (both creates are idempotent).
                results = await asyncio.gather(
                    self.clients.kube.ensure_configmap(rayjob.build_configmap(target)),
                    self.clients.kube.ensure_rayjob(rayjob.build_rayjob(target, uri, self.rayjob_defaults)),
                    return_exceptions=True)
                for result in results:
                    if isinstance(result, BaseException):
                        raise result
            else:
                body = launching.build_submission(target, str(self.settings.storage_root), uri,
                                                  self.settings.job_python, self.version)
                await self.clients.ray.submit_job(o.spec.ray.address or "", body)
            self.metrics.launches.labels(mode=o.spec.ray.mode).inc()
        elif isinstance(action, StopJob):
            await self.stop(o.namespace, action)
        elif isinstance(action, RegisterVersion):
            await self.clients.registry.register_version(uri, action.model_name, action.source, action.run_id,
                                                         action.tags, action.description)
        elif isinstance(action, SetAlias):
            await self.clients.registry.set_alias(uri, action.model_name, action.alias, action.version)
        elif isinstance(action, NudgeFineTune):
            await self.clients.kube.annotate_finetune(action.namespace, action.name,
                                                      {constants.ANNOTATION_ALIAS_CHECK: action.value})

    async def stop(self, namespace: str, action: StopJob) -> None:
        if action.mode == "ExistingCluster":
            if action.submission_id and action.address:
                await self.clients.ray.stop_job(action.address, action.submission_id)
        elif action.rayjob_name:
            # Deleting the RayJob deletes its RayCluster (owned), which stops the job.
            await self.clients.kube.delete_rayjob(namespace, action.rayjob_name)

    # --- deletion ------------------------------------------------------------------------------

    async def cleanup(self, body: dict[str, Any]) -> None:
        """Stop the jobs `logic.deleting` names (lost submissions included) and delete children. Raises
        ClientError to be retried until the deadline, after which it gives up with a Warning event so
        deletion never blocks forever."""
        meta = body["metadata"]
        status = FineTuneStatus.model_validate(body.get("status") or {})
        try:
            spec: FineTuneSpec | None = FineTuneSpec.model_validate(body.get("spec") or {})
        except ValidationError:
            spec = None
        stops = deleting.decide_cleanup(
            status, spec, meta["uid"], meta.get("generation", 0),
            (meta.get("annotations") or {}).get(constants.ANNOTATION_RETRAIN_REQUEST))
        selector = f"{constants.LABEL_FINETUNE}={naming.label_value(meta['name'])}"
        try:
            for stop in stops:
                await self.stop(meta["namespace"], stop)
            await self.clients.kube.delete_children(meta["namespace"], selector, meta["uid"])
        except ClientError as e:
            deleted_at = datetime.fromisoformat(str(meta.get("deletionTimestamp")).replace("Z", "+00:00"))
            waited = (self.clock() - deleted_at).total_seconds()
            if waited < self.settings.delete_timeout_seconds:
                raise
            ids = [s.submission_id for s in stops if s.mode == "ExistingCluster" and s.submission_id and s.address]
            what = f"submission(s) {', '.join(ids)} at {stops[0].address}" if ids else "children"
            await self.clients.events.emit(body, "Warning", "CleanupAbandoned", c.truncate(
                f"gave up stopping {what} after {waited:.0f}s: {e}. Stop it by hand (ray job stop --address "
                f"<address> <submission id>) and delete leftover RayJobs labelled {selector}"))
        self.forget(meta["uid"])
