"""Gather → decide → act for one ModelDeployment's monitor check and the retrain it may ask for (no kopf).

`MonitorReconciler.monitor` is called by the per-object monitor daemon (handlers/monitor.py). It reads
the object, waits for a reference (spec.monitoring.reference.uri, or the served version's held-out set),
runs the check in the monitor's worker pool (never on the event loop), turns the answer into conditions
and the breach count (`logic.monitor_verdict`), then settles the retrain in flight and asks
`logic.retraining.decide_retrain` whether to request a new one. A request is written to our status
first and then to the FineTune as the `tuneloop.io/retrain-request` annotation (its spec is never
touched): killed in between, the next look finds the request in status and annotates again — the same
id, so the FineTune controller starts one run for it, never two.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from pydantic import ValidationError

from tuneloop.api import conditions as c
from tuneloop.api import constants
from tuneloop.api.deployment import (
    FeedbackData,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    MonitorResult,
    RetrainRecord,
)
from tuneloop.api.finetune import FineTuneStatus, TrainingResources
from tuneloop.operator.clients import monitor as mon
from tuneloop.operator.clients.kube import Events
from tuneloop.operator.logic import retraining, serveconfig
from tuneloop.operator.logic.monitor_verdict import (
    MonitorVerdict,
    Window,
    decide_monitor_failure,
    decide_monitor_verdict,
    highest_breach_bar,
)
from tuneloop.operator.metrics import Metrics
from tuneloop.operator.settings import OperatorSettings

log = logging.getLogger(__name__)

HISTORY = 20  # monitorHistory and retrainHistory keep this many entries
WRITE_TRIES = 3  # conditional status writes lost to the serving daemon before leaving it to the next look
FAILURE_REASONS = {mon.ERROR_REFERENCE: c.REASON_REFERENCE_UNAVAILABLE,
                   mon.ERROR_REGISTRY: c.REASON_REGISTRY_UNAVAILABLE,
                   mon.ERROR_TRAFFIC: c.REASON_TRAFFIC_LOG_UNAVAILABLE, mon.ERROR_CHECK: c.REASON_CHECK_FAILED}
RUNNING_PHASES = frozenset({"Launching", "Running", "Registering"})
EVENT_REASONS = {c.DRIFT_DETECTED: ("DriftDetected", "DriftCleared"),
                 c.QUALITY_DEGRADED: ("QualityDegraded", "QualityRecovered"),
                 c.MONITOR_STALE: ("MonitorStale", "MonitorRecovered")}
REASON_RETRAIN_IN_FLIGHT = "RetrainRequested"
REASON_RETRAIN_DONE = "RetrainFinished"


def _feedback(raw: dict[str, Any] | None) -> FeedbackData | None:
    """The check's new examples, if it wrote any (a malformed answer is ignored, not fatal)."""
    if not raw:
        return None
    try:
        return FeedbackData.model_validate(raw)
    except ValidationError:
        log.warning("the check answered feedback %r that is not {uri, hash, examples}; ignored", raw)
        return None


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Effects:
    """What a decision does besides status, done only once the status write went through."""

    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    counts: list[tuple[str, str]] = field(default_factory=list)  # tuneloop_retrains_total (outcome, reason)
    annotate: str | None = None  # request id to send to the FineTune


def approved_now(body: dict[str, Any], status: ModelDeploymentStatus) -> bool:
    """The approve-retrain annotation names the request pending approval."""
    approval = (body["metadata"].get("annotations") or {}).get(constants.ANNOTATION_APPROVE_RETRAIN)
    return approval is not None and any(r.id == approval and r.state == "PendingApproval"
                                        for r in status.retrain_history)


def retrain_reason(body: dict[str, Any], rec: RetrainRecord) -> str:
    """The FineTune's tuneloop.io/retrain-reason: `<request id>: requested by … at …: <trigger>`."""
    meta = body["metadata"]
    return c.truncate(f"{rec.id}: requested by ModelDeployment {meta['namespace']}/{meta['name']} at "
                      f"{rec.requested_at.isoformat()}: {rec.reason}", 2000)


class MonitorKube(Protocol):
    async def get_modeldeployment(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def write_modeldeployment_status_if(self, namespace: str, name: str, status: dict[str, Any],
                                              resource_version: str) -> bool: ...
    async def get_finetune(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def annotate_finetune(self, namespace: str, name: str, annotations: Mapping[str, str]) -> None: ...


class MonitorReconciler:
    """Scheduled checks and guarded retraining; one instance serves every ModelDeployment."""

    def __init__(self, kube: MonitorKube, checks: mon.Monitor, events: Events, settings: OperatorSettings,
                 metrics: Metrics | None = None, clock: Callable[[], datetime] = utcnow) -> None:
        self.kube, self.checks, self.events, self.settings = kube, checks, events, settings
        self.metrics = metrics or Metrics.disabled()
        self.clock = clock
        self.traffic_root = settings.serve_traffic_root or f"file://{settings.storage_root}/traffic"

    def tracking_uri(self, spec: ModelDeploymentSpec) -> str | None:
        return spec.model.tracking_uri or self.settings.mlflow_tracking_uri

    async def monitor(self, namespace: str, name: str) -> float | None:
        """One check if one is due; returns seconds until the next look (None: the object is gone)."""
        body = await self.kube.get_modeldeployment(namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        try:
            spec = ModelDeploymentSpec.model_validate(body.get("spec") or {})
        except ValidationError:
            return self.settings.max_poll_seconds  # the deployment reconciler reports InvalidSpec
        interval = float(spec.monitoring.interval_seconds)
        if not spec.monitoring.enabled or spec.suspend:
            return interval
        status = ModelDeploymentStatus.model_validate(body.get("status") or {})
        now = self.clock()
        if status.last_monitor is not None:  # a restart keeps the schedule the last check set
            due = status.last_monitor.time + timedelta(seconds=interval)
            if now < due:
                left = (due - now).total_seconds()
                retraining_on = spec.retraining.enabled and spec.fine_tune_ref is not None
                if retraining_on and status.retrain_in_flight:
                    await self.follow(body, spec)  # a retrain is followed at poll pace, not check pace
                    return min(left, self.settings.max_poll_seconds)
                if retraining_on and approved_now(body, status):
                    await self.approve(body, spec, status.last_monitor)  # a person need not wait for a check
                return left
        request = self.build_request(namespace, name, spec, status, now)
        if request is None:  # no reference yet: nothing is served
            return self.settings.max_poll_seconds
        answer = await self.checks.check(request)
        return await self.act(body, spec, answer, interval)

    def build_request(self, namespace: str, name: str, spec: ModelDeploymentSpec, status: ModelDeploymentStatus,
                      now: datetime) -> dict[str, Any] | None:
        m = spec.monitoring
        tracking = self.tracking_uri(spec)
        if m.reference.source == "Uri" and m.reference.uri:
            ref: dict[str, Any] = {"uri": m.reference.uri}
        elif status.served_version and tracking:
            ref = {"tracking_uri": tracking, "model": spec.model.name, "version": status.served_version}
        else:
            return None
        traffic = spec.serving.traffic_log_uri or f"{self.traffic_root.rstrip('/')}/{namespace}"
        retraining_on = spec.retraining.enabled and spec.fine_tune_ref is not None
        return {
            # Where a window's labelled feedback becomes training examples for the retrain it may trigger.
            "feedback_uri": f"{traffic.rstrip('/')}/feedback-sets" if retraining_on else None,
            "feedback_below": highest_breach_bar(m.quality),  # only a window below it can trigger a retrain
            "traffic_uri": traffic, "deployment": serveconfig.app_name(namespace, name),
            "since": (now - timedelta(seconds=m.window_seconds)).isoformat(), "reference": ref,
            "config": {"min_samples": m.min_samples, "drift_columns": list(m.drift.columns),
                       "drift_share_threshold": m.drift.share_threshold, "quality_metric": m.quality.metric,
                       "quality_minimum": m.quality.minimum},
            "tracking_uri": tracking, "experiment": f"tuneloop-monitor/{namespace}/{name}",
        }

    async def act(self, body: dict[str, Any], spec: ModelDeploymentSpec, answer: mon.CheckAnswer,
                  interval: float) -> float:
        """Conditions, metrics and Events from the answer; then retraining. Status is written only if the
        object is still the version read (the serving daemon writes status too): a lost race is decided
        again from a fresh read, so neither daemon undoes the other's write."""
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        now = self.clock()
        next_look = min(interval, self.settings.max_poll_seconds) if answer.error else interval

        async def decide(fresh: dict[str, Any], st: ModelDeploymentStatus, effects: Effects) -> None:
            generation = fresh["metadata"].get("generation")
            if answer.error:
                verdict = decide_monitor_failure(FAILURE_REASONS.get(answer.error, c.REASON_CHECK_FAILED),
                                                 answer.message or answer.error, st.conditions,
                                                 st.consecutive_breaches, now, generation)
            else:
                window = Window(samples=answer.samples, insufficient=answer.insufficient,
                                drift_share=answer.drift_share, quality=answer.quality)
                verdict = decide_monitor_verdict(window, spec.monitoring, st.conditions, st.consecutive_breaches,
                                                 now, generation)
                result = MonitorResult(time=now, samples=answer.samples, drift_share=answer.drift_share,
                                       drifted_columns=list(answer.drifted_columns), quality=answer.quality,
                                       breach=bool(verdict.breach), report_uri=answer.report_uri,
                                       feedback=_feedback(answer.feedback))
                st.last_monitor = result
                st.monitor_history = [*st.monitor_history, result][-HISTORY:]
            st.conditions, st.consecutive_breaches = verdict.conditions, verdict.consecutive_breaches
            effects.events += self.verdict_events(verdict, st)
            if spec.retraining.enabled and spec.fine_tune_ref is not None:
                await self.retrain(fresh, spec, st, verdict, answer, now, effects)

        st = await self.commit(namespace, name, spec, decide)
        labels = {"namespace": namespace, "deployment": name}
        if st is None:
            return min(next_look, self.settings.max_poll_seconds)
        if not answer.error:
            self.metrics.monitor_last_success.labels(**labels).set(now.timestamp())
            if answer.drift_share is not None:
                self.metrics.drift_share.labels(**labels).set(answer.drift_share)
            if answer.quality is not None:
                self.metrics.quality.labels(**labels, metric=spec.monitoring.quality.metric).set(answer.quality)
        self.metrics.consecutive_breaches.labels(**labels).set(st.consecutive_breaches)
        log.debug("monitored %s/%s: %s", namespace, name, answer.error or f"{answer.samples} samples")
        return next_look

    async def approve(self, body: dict[str, Any], spec: ModelDeploymentSpec, last: MonitorResult) -> None:
        """The pending request was just approved: decide again on the last check's figures (the breach count
        in status is the one that check left)."""
        meta = body["metadata"]
        answer = mon.CheckAnswer(samples=last.samples, drift_share=last.drift_share,
                                 drifted_columns=tuple(last.drifted_columns), quality=last.quality)

        async def decide(fresh: dict[str, Any], st: ModelDeploymentStatus, effects: Effects) -> None:
            if approved_now(fresh, st) and not st.retrain_in_flight:
                await self.decide(fresh, spec, st, answer, self.clock(), effects)

        await self.commit(meta["namespace"], meta["name"], spec, decide)

    async def follow(self, body: dict[str, Any], spec: ModelDeploymentSpec) -> None:
        """Between checks: the retrain in flight read back from the FineTune (re-sent if it never got it)."""
        meta = body["metadata"]

        async def decide(fresh: dict[str, Any], st: ModelDeploymentStatus, effects: Effects) -> None:
            await self.settle(fresh, spec, st, self.clock(), effects)

        await self.commit(meta["namespace"], meta["name"], spec, decide)
        log.debug("followed the retrain of %s/%s", meta["namespace"], meta["name"])

    async def commit(self, namespace: str, name: str, spec: ModelDeploymentSpec,
                     decide: Callable[[dict[str, Any], ModelDeploymentStatus, Effects], Awaitable[None]],
                     ) -> ModelDeploymentStatus | None:
        """Read, decide, write status if still that version (else again, a few times); then the Events, the
        retrain counters and the FineTune's annotations. Status first: once it holds a request, a crash before
        the annotation is repaired by the next look, with the same id. None: nothing written (gone, or the
        object kept changing: the next look decides again)."""
        for _ in range(WRITE_TRIES):
            fresh = await self.kube.get_modeldeployment(namespace, name)
            if fresh is None or fresh["metadata"].get("deletionTimestamp"):
                return None
            before = ModelDeploymentStatus.model_validate(fresh.get("status") or {})
            st, effects = before.model_copy(deep=True), Effects()
            await decide(fresh, st, effects)
            if st.to_k8s() == before.to_k8s() or await self.kube.write_modeldeployment_status_if(
                    namespace, name, st.to_k8s(), str(fresh["metadata"].get("resourceVersion", ""))):
                break
            log.debug("status of %s/%s changed under the monitor; deciding again", namespace, name)
        else:
            return None
        for type_, reason, message in effects.events:
            await self.events.emit(fresh, type_, reason, message)
        for outcome, reason in effects.counts:
            self.metrics.retrains.labels(namespace=namespace, deployment=name, outcome=outcome, reason=reason).inc()
        if effects.annotate is not None and spec.fine_tune_ref is not None:
            rec = next((r for r in st.retrain_history if r.id == effects.annotate), None)
            # One patch: the request never wakes the FineTune without its reason and data.
            annotations = {constants.ANNOTATION_RETRAIN_REQUEST: effects.annotate}
            if rec is not None:
                annotations[constants.ANNOTATION_RETRAIN_REASON] = retrain_reason(fresh, rec)
                if rec.added_data is not None:
                    annotations[constants.ANNOTATION_RETRAIN_DATA] = f"{rec.id}: {rec.added_data.uri}"
            await self.kube.annotate_finetune(namespace, spec.fine_tune_ref.name, annotations)
        return st

    def verdict_events(self, verdict: MonitorVerdict, st: ModelDeploymentStatus) -> list[tuple[str, str, str]]:
        out = []
        for type_ in verdict.flipped:
            cond = c.get_condition(st.conditions, type_)
            if cond is None or type_ not in EVENT_REASONS:
                continue
            raised = cond.status == "True"
            reason = EVENT_REASONS[type_][0 if raised else 1]
            out.append(("Warning" if raised else "Normal", reason, f"{cond.reason}: {cond.message}"))
        return out

    async def retrain(self, body: dict[str, Any], spec: ModelDeploymentSpec, st: ModelDeploymentStatus,
                      verdict: MonitorVerdict, answer: mon.CheckAnswer, now: datetime, effects: Effects) -> None:
        """Settle the retrain in flight from the FineTune, then, on a breach, decide on a new one.
        Mutates `st` and `effects`."""
        await self.settle(body, spec, st, now, effects)
        if verdict.breach is True and not st.retrain_in_flight:
            await self.decide(body, spec, st, answer, now, effects)

    async def settle(self, body: dict[str, Any], spec: ModelDeploymentSpec, st: ModelDeploymentStatus,
                     now: datetime, effects: Effects) -> None:
        """The retrain in flight as the FineTune shows it: started, ended (record and condition), or never
        received (its id to annotate again). Mutates `st`."""
        meta = body["metadata"]
        namespace = meta["namespace"]
        assert spec.fine_tune_ref is not None
        ft_name = spec.fine_tune_ref.name
        ft = await self.kube.get_finetune(namespace, ft_name)
        ft_status = FineTuneStatus.model_validate((ft or {}).get("status") or {})
        ft_annotation = ((ft or {}).get("metadata", {}).get("annotations") or {}).get(
            constants.ANNOTATION_RETRAIN_REQUEST)
        if st.retrain_in_flight:
            rid = st.retrain_in_flight
            rec = next((r for r in st.retrain_history if r.id == rid), None)
            run = ft_status.run
            ours = run is not None and run.trigger == f"retrain:{rid}"
            if ft is None:
                self._finish(st, rec, "Failed", now)
                effects.events.append(("Warning", REASON_RETRAIN_DONE, f"retrain {rid}: FineTune {ft_name} is gone"))
                effects.counts.append(("failed", "FineTuneGone"))
            elif ours and ft_status.phase in ("Succeeded", "Failed"):
                outcome = retraining.run_outcome(ft_status.phase, ft_status.promotion)
                if rec is not None:
                    rec.version = ft_status.model.version if ft_status.model else None
                    rec.run = run.number if run else None
                    resources = TrainingResources.model_validate(((ft or {}).get("spec") or {}).get("resources") or {})
                    rec.gpu_hours = retraining.run_gpu_hours(ft_status.attempts, run.number if run else None,
                                                             resources.gpus, resources.workers)
                self._finish(st, rec, outcome, now)
                what = {"Succeeded": "succeeded and was promoted", "Failed": "failed",
                        "NotPromoted": "registered a version the gate kept challenger; the champion keeps serving"}
                promotion = f": {ft_status.promotion.message}" if ft_status.promotion else ""
                effects.events.append(("Normal" if outcome == "Succeeded" else "Warning", REASON_RETRAIN_DONE,
                               c.truncate(f"retrain {rid}: run {run.number if run else '?'} of FineTune {ft_name} "
                                          f"{what[outcome]}{promotion if outcome != 'Failed' else ''}", 1000)))
                effects.counts.append(({"NotPromoted": "not_promoted"}.get(outcome, outcome.lower()),
                                       retraining.REQUEST_REASON))
            elif ours:
                if rec is not None and rec.state != "Running":
                    rec.state, rec.run = "Running", run.number if run else None
                    effects.counts.append(("started", retraining.REQUEST_REASON))
            elif ft_annotation != rid and ft_status.handled_retrain_request != rid:
                effects.annotate = rid  # our status holds the request, the FineTune never got it (killed in between)

    async def decide(self, body: dict[str, Any], spec: ModelDeploymentSpec, st: ModelDeploymentStatus,
                     answer: mon.CheckAnswer, now: datetime, effects: Effects) -> None:
        """decide_retrain on a breach, and its outcome in `st`: a request (its id to annotate), a pending
        approval or a skip (the Retraining condition says why, one Event per new reason)."""
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        assert spec.fine_tune_ref is not None
        ft_name = spec.fine_tune_ref.name
        ft = await self.kube.get_finetune(namespace, ft_name)
        ft_status = FineTuneStatus.model_validate((ft or {}).get("status") or {})
        running = ft is not None and ft_status.phase in RUNNING_PHASES
        trigger = self.trigger_text(spec, st, answer)
        window = st.last_monitor.feedback if st.last_monitor is not None else None  # the breaching window's
        decision = retraining.decide_retrain(retraining.RetrainInput(
            spec=spec.retraining, breaches_required=spec.monitoring.quality.consecutive_breaches,
            consecutive_breaches=st.consecutive_breaches, history=st.retrain_history, in_flight=st.retrain_in_flight,
            fine_tune_running=running, approval=(meta.get("annotations") or {}).get(
                constants.ANNOTATION_APPROVE_RETRAIN), trigger=trigger, namespace=namespace, name=name,
            feedback_examples=window.examples if window is not None else 0), now)
        if decision.action == "skip" and decision.reason == retraining.SKIP_NOT_ENOUGH_BREACHES:
            return  # the QualityDegraded message counts the breaches
        if decision.action == "request":
            assert decision.request_id is not None
            rid = decision.request_id
            rec = next((r for r in st.retrain_history if r.id == rid), None)
            added = window
            if rec is None:
                rec = RetrainRecord(id=rid, state="Requested", reason=trigger, requested_at=now, fine_tune=ft_name,
                                    added_data=added)
                st.retrain_history = [*st.retrain_history, rec][-HISTORY:]
            else:
                rec.state, rec.requested_at, rec.fine_tune = "Requested", now, ft_name
                rec.added_data = rec.added_data or added
            st.retrain_in_flight, st.last_retrain_time = rid, now
            st.conditions = c.set_condition(st.conditions, c.RETRAINING, "True", REASON_RETRAIN_IN_FLIGHT,
                                            f"asked FineTune {ft_name} for run {rid}: {decision.message}", now,
                                            meta.get("generation"))
            effects.events.append(("Normal", REASON_RETRAIN_IN_FLIGHT,
                           f"asked FineTune {ft_name} to retrain ({rid}): {decision.message}"))
            effects.counts.append(("requested", decision.reason))
            effects.annotate = rid
            return
        if decision.action == "await_approval":
            assert decision.request_id is not None
            if not any(r.id == decision.request_id for r in st.retrain_history):
                st.retrain_history = [*st.retrain_history, RetrainRecord(
                    id=decision.request_id, state="PendingApproval", reason=trigger, requested_at=now,
                    fine_tune=ft_name)][-HISTORY:]
        previous = c.get_condition(st.conditions, c.RETRAINING)
        st.conditions = c.set_condition(st.conditions, c.RETRAINING, "False", decision.reason, decision.message, now,
                                        meta.get("generation"))
        if previous is None or previous.reason != decision.reason:  # one Event per reason, not one per check
            effects.events.append(("Normal", decision.reason, decision.message))
            effects.counts.append(("skipped", decision.reason))

    @staticmethod
    def trigger_text(spec: ModelDeploymentSpec, st: ModelDeploymentStatus, answer: mon.CheckAnswer) -> str:
        q = spec.monitoring.quality
        value = "n/a" if answer.quality is None else f"{answer.quality:.3f}"
        text = f"{q.metric} {value} < {q.minimum:.3f} for {st.consecutive_breaches} checks"
        if answer.drift_share is not None:
            text += f"; drift share {answer.drift_share:.2f}"
            if answer.drifted_columns:
                text += f" ({', '.join(answer.drifted_columns)})"
        return text

    def _finish(self, st: ModelDeploymentStatus, rec: RetrainRecord | None, state: str, now: datetime) -> None:
        if rec is not None:
            rec.state, rec.finished_at = state, now  # type: ignore[assignment]
        st.retrain_in_flight = None
        st.conditions = c.set_condition(st.conditions, c.RETRAINING, "False", REASON_RETRAIN_DONE,
                                        f"retrain {rec.id if rec else '?'} {state.lower()}", now)
