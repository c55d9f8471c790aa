"""The FineTune state machine: `decide_finetune(observed, policy) -> Plan`.

validate → launch → watch → gate → register → promote → Succeeded, one run per spec (per spec hash,
so toggling `suspend` never starts a run) or per retrain request. Every decision is made from what is
observed now (status, the job, the registry), never from what happened in memory before, so create,
update, resume after a restart and periodic polls all take the same path, and every action in a plan
is idempotent (deterministic names, lookups by tag before writes).

Phases:   Pending → Launching → Running → Registering → Succeeded
                       ↑   ↓ (failed attempt within backoffLimit: next attempt)
          Suspended ←──┘   Failed (backoffLimit reached, deadline, invalid spec, no result)

Pending also means waiting on the world (`logic.waiting`): a dataset or base model path not there
yet, no tracking URI, Ray unreachable at launch. Such a wait is re-checked with backoff and never
needs a spec change; an invalid spec is Failed until metadata.generation changes (or, once, when
the operator restarts, in case the operator's settings were the problem).

A plan's actions run before its status is written: a crash in between repeats the actions, which
find what they did (409 on create, version found by tag, alias already set) and change nothing.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Literal

from tuneloop.api import conditions as c
from tuneloop.api import constants
from tuneloop.api.finetune import (
    AliasEvent,
    AttemptRecord,
    FineTuneStatus,
    ModelVersionStatus,
    Phase,
    PromotionStatus,
    RunStatus,
)
from tuneloop.api.results import JobResult
from tuneloop.operator.logic import cost, naming, promotion, waiting
from tuneloop.operator.logic.launching import Target
from tuneloop.operator.logic.observing import JobObservation
from tuneloop.operator.logic.plans import (
    Action,
    Event,
    Launch,
    NudgeFineTune,
    Observed,
    Plan,
    Policy,
    RegisterVersion,
    SetAlias,
    StopJob,
    VersionInfo,
)

MAX_ATTEMPT_RECORDS = 50
MAX_ALIAS_EVENTS = 20
ACTIVE_PHASES = frozenset({"Launching", "Running"})
TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})
WARNING_REASONS = frozenset({
    c.REASON_INVALID_SPEC, c.REASON_JOB_FAILED, c.REASON_DEADLINE_EXCEEDED, c.REASON_RETRYING,
    c.REASON_RESULT_MISSING, c.REASON_RAYJOB_INVALID, c.REASON_RAYJOB_SUSPENDED, c.REASON_UNKNOWN_RAYJOB_STATE,
    *waiting.WORLD_REASONS, *waiting.PERMANENT_JOB_REASONS,
    *waiting.JOB_REASON_NAMES.values(),
})


# --- helpers ---------------------------------------------------------------------------------


def _ready(st: FineTuneStatus, o: Observed, status: c.ConditionStatus, reason: str, message: str) -> None:
    st.conditions = c.set_condition(st.conditions, c.READY, status, reason, message, o.now, o.generation)


def _cond(st: FineTuneStatus, o: Observed, type_: str, status: c.ConditionStatus, reason: str, message: str) -> None:
    st.conditions = c.set_condition(st.conditions, type_, status, reason, message, o.now, o.generation)


def _ref(o: Observed) -> str:
    return f"{o.namespace}/{o.name}"


def wanted_trigger(o: Observed) -> str | None:
    """Why a new run must start now (`spec` or `retrain:<id>`), or None."""
    if o.retrain_request and o.retrain_request != o.status.handled_retrain_request:
        return f"retrain:{o.retrain_request}"
    run = o.status.run
    if run is not None and run.spec_hash == naming.spec_hash(o.spec):
        return None
    ready = c.get_condition(o.status.conditions, c.READY)
    rejected = (o.status.phase == "Failed" and ready is not None and ready.reason == c.REASON_INVALID_SPEC
                and ready.observed_generation == o.generation)
    if rejected and not o.recheck:
        return None  # reported once for this generation; permanent until the spec changes
    # Anything else without a run of this spec is checked again: a wait on the world, or a Failed
    # left by an operator whose rules or settings called a world problem a spec problem.
    return "spec"


def needs_job(status: FineTuneStatus) -> bool:
    return status.phase in ACTIVE_PHASES and status.run is not None and status.run.attempt > 0


def target_of(o: Observed, run: RunStatus, attempt: int) -> Target:
    return Target(o.namespace, o.name, o.uid, run.generation, run.number, attempt, o.spec,
                  extra_data=(run.added_data,) if run.added_data else ())


def _stop_action(o: Observed, run: RunStatus) -> StopJob:
    return StopJob(
        mode=run.mode or o.spec.ray.mode, run=run.number, attempt=run.attempt,
        rayjob_name=run.ray_job_name, submission_id=run.submission_id, address=o.spec.ray.address,
    )


def _record_attempt(st: FineTuneStatus, o: Observed, p: Policy, outcome: str, reason: str) -> None:
    run = st.run
    assert run is not None
    if any(a.run == run.number and a.attempt == run.attempt for a in st.attempts):
        return
    ident = run.ray_job_name or run.submission_id or f"attempt-{run.attempt}"
    st.attempts = [*st.attempts, AttemptRecord(
        run=run.number, attempt=run.attempt, id=ident, outcome=outcome,  # type: ignore[arg-type]
        reason=c.truncate(reason, 512), start_time=run.attempt_start_time, end_time=o.now,
    )][-MAX_ATTEMPT_RECORDS:]
    res = o.spec.resources
    hours = cost.attempt_gpu_hours(run.attempt_start_time, o.now, res.gpus, res.workers)
    st.cost = cost.add_gpu_hours(st.cost, hours, res.gpu_type, p.gpu_prices)


def failed_attempts(st: FineTuneStatus, run: int) -> int:
    return sum(1 for a in st.attempts if a.run == run and a.outcome == "Failed")


def _fail(st: FineTuneStatus, o: Observed, reason: str, message: str) -> Plan:
    st.phase = "Failed"
    if st.run is not None:
        st.run.end_time = st.run.end_time or o.now
    _cond(st, o, c.FAILED, "True", reason, message)
    _cond(st, o, c.SUCCEEDED, "False", reason, message)
    _ready(st, o, "False", reason, message)
    return Plan(st)


def _suspended_flag(st: FineTuneStatus, o: Observed) -> None:
    existing = c.get_condition(st.conditions, c.SUSPENDED)
    if o.spec.suspend:
        _cond(st, o, c.SUSPENDED, "True", c.REASON_SUSPENDED, "spec.suspend is true: no job runs and none is launched")
    elif existing is not None:
        _cond(st, o, c.SUSPENDED, "False", c.REASON_SUSPENDED, "spec.suspend is false")


def _suspend(st: FineTuneStatus, o: Observed, actions: tuple[Action, ...]) -> Plan:
    st.phase = "Suspended"
    _suspended_flag(st, o)
    run = st.run
    what = f"run {run.number} paused" if run else "paused"
    _ready(st, o, "False", c.REASON_SUSPENDED, f"{what}: set spec.suspend to false to continue")
    return Plan(st, actions)


def _wait(o: Observed, p: Policy, st: FineTuneStatus, phase: Phase, reason: str, message: str,
          actions: tuple[Action, ...] = ()) -> Plan:
    """Waiting on the world: say on what, look again with backoff, warn within the rate limit."""
    st.phase = phase
    if phase not in ACTIVE_PHASES and phase != "Registering":
        st.conditions = c.remove_condition(st.conditions, c.FAILED)
        _cond(st, o, c.SUCCEEDED, "False", reason, message)
    _ready(st, o, "False", reason, message)
    wait = waiting.decide_wait(o.status.waiting, reason, o.now, p.poll_seconds, p.max_poll_seconds)
    st.waiting = wait.status
    events = (Event("Warning", reason, message),) if wait.warn else ()
    return Plan(st, actions, events, requeue_seconds=wait.requeue_seconds)


# --- phases ----------------------------------------------------------------------------------


def _retrain_reason(o: Observed, trigger: str) -> str | None:
    """The reason annotation, only when it speaks of this request (`<request id>: …`): a stale one is not ours."""
    rid = trigger.removeprefix("retrain:")
    reason = o.retrain_reason or ""
    return reason if trigger.startswith("retrain:") and reason.startswith(f"{rid}:") else None


def _retrain_data(o: Observed, trigger: str) -> str | None:
    """The feedback examples sent with this request (`<request id>: <uri>`), or None."""
    rid = trigger.removeprefix("retrain:")
    value = o.retrain_data or ""
    if not trigger.startswith("retrain:") or not value.startswith(f"{rid}:"):
        return None
    return value[len(rid) + 1:].strip() or None


def _start_run(o: Observed, p: Policy, st: FineTuneStatus, trigger: str) -> Plan:
    actions: list[Action] = []
    if st.run is not None and st.phase in ACTIVE_PHASES and st.run.attempt > 0:
        actions.append(_stop_action(o, st.run))
        _record_attempt(st, o, p, "Stopped", f"superseded: {trigger}")
    blocker = waiting.decide_blocker(o.problems)
    if blocker is not None and blocker.kind == "world":  # not consumed: the request starts the run later
        return _wait(o, p, st, "Pending", blocker.reason, blocker.message, tuple(actions))
    if trigger.startswith("retrain:"):
        st.handled_retrain_request = trigger.split(":", 1)[1]
    if blocker is not None:
        plan = _fail(st, o, blocker.reason, blocker.message)
        return Plan(plan.status, tuple(actions))
    st.run = RunStatus(
        number=(st.run.number if st.run else 0) + 1, generation=o.generation, trigger=trigger,
        trigger_reason=_retrain_reason(o, trigger), added_data=_retrain_data(o, trigger),
        mode=o.spec.ray.mode, spec_hash=naming.spec_hash(o.spec), attempt=0,
    )
    st.metrics, st.baseline_metrics, st.dataset, st.model, st.promotion = {}, {}, None, None, None
    st.conditions = c.remove_condition(st.conditions, c.FAILED)
    st.conditions = c.remove_condition(st.conditions, c.MODEL_REGISTERED)
    st.conditions = c.remove_condition(st.conditions, c.PROMOTED)
    _cond(st, o, c.SUCCEEDED, "False", c.REASON_PENDING, f"run {st.run.number} started ({trigger})")
    if o.spec.suspend:
        st.phase = "Pending"
        return _suspend(st, o, tuple(actions))
    return _launch(o, p, st, 1, retrying=False, actions=tuple(actions))


def _launch(o: Observed, p: Policy, st: FineTuneStatus, attempt: int, retrying: bool,
            actions: tuple[Action, ...] = ()) -> Plan:
    run = st.run
    assert run is not None
    target = target_of(o, run, attempt)
    run.attempt = attempt
    run.mode = o.spec.ray.mode
    run.attempt_start_time = o.now
    run.start_time = run.start_time or o.now
    run.end_time = None
    run.job_status = run.job_deployment_status = run.ray_cluster_name = run.message = run.inconsistent_since = None
    run.submission_id = naming.submission_id(o.uid, run.number, attempt)
    experiment = naming.experiment_name(o.namespace, o.name, o.spec)
    if o.spec.ray.mode == "RayJob":
        run.ray_job_name = naming.rayjob_name(o.name, o.uid, run.number, attempt)
        run.dashboard_url = None
        run.result_uri = (f"mlflow:{experiment}/{naming.mlflow_run_name(o.name, run.number, attempt)}/"
                          f"{constants.RESULT_ARTIFACT}")
    else:
        run.ray_job_name = None
        run.dashboard_url = f"{(o.spec.ray.address or '').rstrip('/')}/#/jobs/{run.submission_id}"
        run.result_uri = "file://" + str(naming.result_path(p.storage_root, o.namespace, o.name, o.uid,
                                                            run.number, attempt))
    st.phase = "Launching"
    _suspended_flag(st, o)
    where = f"RayJob {o.namespace}/{run.ray_job_name}" if run.ray_job_name else f"submission {run.submission_id}"
    limit = o.spec.backoff_limit + 1
    if retrying:
        last = st.attempts[-1] if st.attempts else None
        why = f" after attempt {last.attempt} failed: {last.reason}" if last else ""
        _ready(st, o, "False", c.REASON_RETRYING, f"attempt {attempt} of at most {limit}{why}; launching {where}")
    else:
        _ready(st, o, "False", c.REASON_LAUNCHING, f"run {run.number} attempt {attempt}: launching {where}")
    return Plan(st, (*actions, Launch(target)), requeue_seconds=p.poll_seconds)


def _deadline_passed(o: Observed, p: Policy, run: RunStatus) -> float | None:
    """The deadline in seconds when the attempt ran past it (plus grace for KubeRay to act)."""
    if run.attempt_start_time is None:
        return None
    if o.spec.ray.mode == "RayJob":
        limit = o.spec.active_deadline_seconds or p.default_active_deadline_seconds
        grace = p.deadline_grace_seconds
    elif o.spec.active_deadline_seconds:
        limit, grace = o.spec.active_deadline_seconds, 0.0
    else:
        return None
    elapsed = (o.now - run.attempt_start_time).total_seconds()
    return float(limit) if elapsed > limit + grace else None


def _watch(o: Observed, p: Policy, st: FineTuneStatus) -> Plan:
    run = st.run
    assert run is not None
    job = o.job or JobObservation(state="Missing")
    if o.spec.suspend:
        _record_attempt(st, o, p, "Stopped", "suspended by spec.suspend")
        return _suspend(st, o, (_stop_action(o, run),))
    deadline = _deadline_passed(o, p, run)
    if job.state == "DeadlineExceeded" or (deadline is not None and job.state not in ("Succeeded", "Failed")):
        limit = deadline or float(o.spec.active_deadline_seconds or p.default_active_deadline_seconds)
        message = f"attempt {run.attempt} ran longer than activeDeadlineSeconds ({limit:.0f}s); {job.message}".strip()
        _record_attempt(st, o, p, "DeadlineExceeded", message)
        plan = _fail(st, o, c.REASON_DEADLINE_EXCEEDED, message.rstrip("; "))
        return Plan(plan.status, (_stop_action(o, run),))
    run.job_status = job.job_status or run.job_status
    run.job_deployment_status = job.deployment_status or run.job_deployment_status
    run.dashboard_url = job.dashboard_url or run.dashboard_url
    run.ray_cluster_name = job.cluster_name or run.ray_cluster_name
    run.message = c.truncate(job.message, 512) if job.message else run.message
    # The first sighting of kuberay #3553 times its grace when KubeRay reports no rayJobInfo.endTime.
    run.inconsistent_since = (run.inconsistent_since or o.now) if job.inconsistent else None
    where = f"RayJob {o.namespace}/{run.ray_job_name}" if run.ray_job_name else f"submission {run.submission_id}"
    if job.state == "Missing":
        if st.phase == "Launching":  # launched by a plan whose status write was lost, or not yet: ensure
            return Plan(st, (Launch(target_of(o, run, run.attempt)),), requeue_seconds=p.poll_seconds)
        return _attempt_failed(o, p, st, "JobMissing", f"{where} disappeared while running (deleted outside tuneloop?)")
    if job.state == "Pending":
        st.phase = "Launching"
        reason = c.REASON_RAY_CLUSTER_PROVISIONING if run.ray_job_name else c.REASON_LAUNCHING
        _ready(st, o, "False", reason, f"run {run.number} attempt {run.attempt}: {where} is starting")
        return Plan(st, requeue_seconds=p.poll_seconds)
    if job.state == "Running":
        st.phase = "Running"
        _ready(st, o, "False", c.REASON_TRAINING, f"run {run.number} attempt {run.attempt}: {where} is training")
        return Plan(st, requeue_seconds=p.poll_seconds)
    if job.state == "Stuck":  # the phase stays; the condition says what is wrong and who can fix it
        _ready(st, o, "False", job.reason, f"run {run.number} attempt {run.attempt}: {where}: {job.message}")
        return Plan(st, requeue_seconds=p.poll_seconds)
    if job.state == "Succeeded":
        _record_attempt(st, o, p, "Succeeded", "job succeeded")
        st.phase = "Registering"
        _ready(st, o, "False", c.REASON_REGISTERING, f"run {run.number}: reading the result and registering the model")
        return Plan(st, again=True)
    stop = (_stop_action(o, run),) if job.needs_stop else ()
    if not job.retryable:
        _record_attempt(st, o, p, "Failed", f"{job.reason}: {job.message}")
        plan = _fail(st, o, job.reason, job.message)
        return Plan(plan.status, stop)
    plan = _attempt_failed(o, p, st, job.reason or "AppFailed", job.message or "the Ray job failed")
    return Plan(plan.status, stop + plan.actions, requeue_seconds=plan.requeue_seconds, again=plan.again)


def _attempt_failed(o: Observed, p: Policy, st: FineTuneStatus, reason: str, message: str) -> Plan:
    run = st.run
    assert run is not None
    _record_attempt(st, o, p, "Failed", f"{reason}: {message}")
    permanent = waiting.permanent_job_reason(o.failure.reason if o.failure is not None else None)
    if permanent is not None:  # bad data or config: a retry fails the same way
        return _fail(st, o, permanent, (o.failure.message if o.failure else None) or message)
    failures = failed_attempts(st, run.number)
    if failures <= o.spec.backoff_limit:
        return _launch(o, p, st, run.attempt + 1, retrying=True)
    return _fail(st, o, c.REASON_JOB_FAILED, (
        f"attempt {run.attempt} failed ({reason}: {message}); spec.backoffLimit {o.spec.backoff_limit} reached "
        f"after {failures} failed attempt(s). Fix the cause and change the spec, or request a retrain"
    ))


def _register(o: Observed, p: Policy, st: FineTuneStatus) -> Plan:
    run = st.run
    assert run is not None
    lookup = o.result
    result = lookup.result if lookup else None
    if result is None:
        where = lookup.where if lookup else "nowhere"
        ended = next((a.end_time for a in reversed(st.attempts) if a.run == run.number and a.outcome == "Succeeded"),
                     None)
        waited = (o.now - ended).total_seconds() if ended else 0.0
        message = f"the job succeeded but its result was not found ({where})"
        if waited > p.result_grace_seconds:
            return _fail(st, o, c.REASON_RESULT_MISSING, message + f" after {waited:.0f}s")
        _ready(st, o, "False", c.REASON_RESULT_MISSING, message + "; looking again")
        return Plan(st, requeue_seconds=p.poll_seconds)
    if result.status != "Succeeded":
        # Ray said SUCCEEDED but the job's own document says it failed: the attempt failed.
        reason, message = result.reason or "JobFailed", result.message or "the job wrote a failure result"
        st.attempts = [
            a.model_copy(update={"outcome": "Failed", "reason": c.truncate(f"{reason}: {message}", 512)})
            if a.run == run.number and a.attempt == run.attempt else a
            for a in st.attempts
        ]
        return _attempt_failed(replace(o, failure=result), p, st, reason, message)
    st.metrics = dict(result.metrics)
    st.baseline_metrics = dict(result.baseline_metrics)
    st.dataset = result.dataset
    model_name = o.spec.registry.model_name
    if not result.model_uri:
        return _fail(st, o, c.REASON_JOB_FAILED, "the job's result has no modelUri: nothing to register")
    if o.version is None:
        _ready(st, o, "False", c.REASON_REGISTERING, f"registering {result.model_uri} as a version of {model_name}")
        return Plan(st, (RegisterVersion(
            model_name=model_name, source=result.model_uri, run_id=result.run_id,
            tags=lineage_tags(o, run, result, p.operator_version),
            description=f"FineTune {_ref(o)} run {run.number} (uid {o.uid})",
        ),), again=True)
    version = o.version
    st.model = ModelVersionStatus(
        name=model_name, version=version.version, uri=f"models:/{model_name}/{version.version}",
        run_id=version.run_id or result.run_id,
    )
    registered = f"registered as {model_name} version {version.version}"
    _cond(st, o, c.MODEL_REGISTERED, "True", c.REASON_SUCCEEDED, registered)
    if st.promotion is None or champion_moved(o, version, st.promotion):
        # Decided again when another FineTune of this model moved the champion since the decision was
        # written: the alias is set only against the champion it was compared with (compare-and-set;
        # the operator serialises gates of one registered model so the read stays true until the set).
        st.promotion = decide(o, result, version)
        return Plan(st, again=True)  # write the decision before moving aliases: it names the old champion
    return _promote(o, p, st, version, st.promotion)


def champion_moved(o: Observed, version: VersionInfo, decision: PromotionStatus) -> bool:
    """The champion now is not the one `decision` was made against (and not this version: our own set)."""
    current = o.champion.version if o.champion is not None else None
    return current != decision.champion_version and current != version.version


def decide(o: Observed, result: JobResult, version: VersionInfo) -> PromotionStatus:
    rule = o.spec.evaluation.promotion
    metric = rule.metric
    champion = None
    if o.champion is not None:
        tag = o.champion.tags.get(constants.TAG_EVAL_METRIC_PREFIX + metric)
        try:
            value = float(tag) if tag is not None else None
        except ValueError:
            value = None
        champion = promotion.Champion(o.champion.version, value, o.champion.tags.get(constants.TAG_DATASET_HASH))
        champion = promotion.on_candidate_data(champion, result.champion, metric)
    return promotion.decide_promotion(promotion.GateInput(
        metric=metric,
        candidate_version=version.version,
        candidate=result.metrics.get(metric),
        candidate_dataset_hash=result.dataset.hash if result.dataset else None,
        baseline=result.baseline_metrics.get(metric) if o.spec.evaluation.baseline.enabled else None,
        baseline_required=o.spec.evaluation.baseline.enabled,
        min_improvement=rule.min_improvement,
        min_improvement_over_champion=rule.min_improvement_over_champion,
        champion=champion,
    ))


def _promote(o: Observed, p: Policy, st: FineTuneStatus, version: VersionInfo, decision: PromotionStatus) -> Plan:
    run = st.run
    assert run is not None and st.model is not None
    alias = constants.ALIAS_CHAMPION if decision.promoted else constants.ALIAS_CHALLENGER
    actions: tuple[Action, ...] = ()
    if alias not in version.aliases:
        actions = (SetAlias(st.model.name, alias, version.version),)
        loser = o.champion
        if decision.promoted and loser is not None and loser.version != version.version:
            ns, name = loser.tags.get(constants.TAG_FINETUNE_NAMESPACE), loser.tags.get(constants.TAG_FINETUNE_NAME)
            if ns and name and loser.tags.get(constants.TAG_FINETUNE_UID) != o.uid:
                actions += (NudgeFineTune(ns, name, f"{st.model.name}/{loser.version}->{version.version}"),)
    if not any(e.run == run.number and e.alias == alias for e in st.alias_history):
        if alias == constants.ALIAS_CHAMPION:
            previous = decision.champion_version
        else:
            previous = o.challenger.version if o.challenger and o.challenger.version != version.version else None
        if previous != version.version:
            st.alias_history = [*st.alias_history, AliasEvent(
                alias=alias, version=version.version, previous_version=previous, time=o.now, run=run.number,
                reason=decision.message,
            )][-MAX_ALIAS_EVENTS:]
    st.model.alias = alias
    st.phase = "Succeeded"
    run.end_time = run.end_time or o.now
    reason = c.REASON_PROMOTED if decision.promoted else c.REASON_NOT_PROMOTED
    summary = f"{st.model.name} version {version.version} is {alias}: {decision.message}"
    _cond(st, o, c.PROMOTED, "True" if decision.promoted else "False", reason, decision.message)
    _cond(st, o, c.SUCCEEDED, "True", c.REASON_SUCCEEDED, f"run {run.number} registered version {version.version}")
    st.conditions = c.remove_condition(st.conditions, c.FAILED)
    _ready(st, o, "True", reason, summary)
    return Plan(st, actions, requeue_seconds=p.alias_recheck_seconds)  # see _recheck_alias


def _recheck_alias(o: Observed, p: Policy, st: FineTuneStatus) -> Plan:
    """A Succeeded FineTune whose version was champion says so no longer once another version took the
    alias (woken by the FineTune that moved it, or by the slow periodic look for moves made by hand),
    and says so again if the alias comes back. The alias history records where it went."""
    model, run = st.model, st.run
    assert model is not None and run is not None
    if not o.aliases_read:
        return Plan(st, requeue_seconds=p.alias_recheck_seconds)
    holder = o.champion.version if o.champion is not None else None
    holds = holder == model.version
    if model.alias == constants.ALIAS_CHAMPION and not holds:
        where = f"version {holder}" if holder else "no version (the alias was removed)"
        if o.champion is not None:
            ns = o.champion.tags.get(constants.TAG_FINETUNE_NAMESPACE)
            name = o.champion.tags.get(constants.TAG_FINETUNE_NAME)
            if ns and name:
                where += f" of FineTune {ns}/{name}"
        message = f"{model.name} version {model.version} was champion; champion is now {where}"
        model.alias = (constants.ALIAS_CHALLENGER if o.challenger is not None and o.challenger.version == model.version
                       else None)
        st.alias_history = [*st.alias_history, AliasEvent(
            alias=constants.ALIAS_CHAMPION, version=holder or "", previous_version=model.version, time=o.now,
            run=run.number, reason=message,
        )][-MAX_ALIAS_EVENTS:]
        _cond(st, o, c.PROMOTED, "False", c.REASON_SUPERSEDED, message)
        _ready(st, o, "True", c.REASON_SUPERSEDED, message)
    elif holds and model.alias != constants.ALIAS_CHAMPION:
        message = f"{model.name} version {model.version} holds the champion alias again (moved outside the gate)"
        previous = st.alias_history[-1].version if st.alias_history else None
        model.alias = constants.ALIAS_CHAMPION
        st.alias_history = [*st.alias_history, AliasEvent(
            alias=constants.ALIAS_CHAMPION, version=model.version, previous_version=previous or None, time=o.now,
            run=run.number, reason=message,
        )][-MAX_ALIAS_EVENTS:]
        _cond(st, o, c.PROMOTED, "True", c.REASON_PROMOTED, message)
        _ready(st, o, "True", c.REASON_PROMOTED, message)
    return Plan(st, requeue_seconds=p.alias_recheck_seconds)


def lineage_tags(o: Observed, run: RunStatus, result: JobResult, operator_version: str) -> dict[str, str]:
    """Version tags: how to find it again (uid + run) and where it came from."""
    tags = {
        constants.TAG_FINETUNE_UID: o.uid,
        constants.TAG_FINETUNE_NAME: o.name,
        constants.TAG_FINETUNE_NAMESPACE: o.namespace,
        constants.TAG_RUN_NUMBER: str(run.number),
        constants.TAG_SPEC_GENERATION: str(run.generation),
        constants.TAG_DATASET_URI: o.spec.dataset.uri,
        constants.TAG_BASE_MODEL: o.spec.base_model.uri,
        constants.TAG_METHOD: o.spec.method,
        constants.TAG_OPERATOR_VERSION: operator_version,
    }
    if o.spec.base_model.revision:
        tags[constants.TAG_BASE_MODEL_REVISION] = o.spec.base_model.revision
    if result.dataset is not None:
        tags[constants.TAG_DATASET_HASH] = result.dataset.hash
    for metric, value in result.metrics.items():
        tags[constants.TAG_EVAL_METRIC_PREFIX + metric] = repr(float(value))
    return tags


# --- entry points ----------------------------------------------------------------------------


def decide_finetune(o: Observed, p: Policy) -> Plan:
    """The next step for a FineTune, from what is observed now."""
    st = o.status.model_copy(deep=True)
    st.observed_generation = o.generation
    st.waiting = None  # set again by a plan that still waits
    trigger = wanted_trigger(o)
    if trigger is not None:
        plan = _start_run(o, p, st, trigger)
    elif st.run is None or st.phase in TERMINAL_PHASES:
        _suspended_flag(st, o)
        plan = _recheck_alias(o, p, st) if st.phase == "Succeeded" and st.model is not None else Plan(st)
    elif st.phase in ("Pending", "Suspended"):
        if o.spec.suspend:
            plan = _suspend(st, o, ())
        else:
            _suspended_flag(st, o)
            plan = _launch(o, p, st, st.run.attempt + 1, retrying=False)
    elif st.phase in ACTIVE_PHASES:
        plan = _watch(o, p, st)
    else:
        plan = _register(o, p, st)
    return _with_events(o, plan)


def decide_unavailable(o: Observed, p: Policy, reason: str, message: str) -> Plan:
    """Ray or MLflow could not be reached while acting on `o`: the plan made for it is dropped and the
    object waits. An active run keeps its phase; anything else is Pending until the call goes through."""
    st = o.status.model_copy(deep=True)
    st.observed_generation = o.generation
    current = st.phase if st.phase in ACTIVE_PHASES or st.phase == "Registering" else "Pending"
    assert current is not None
    return _with_events(o, _wait(o, p, st, current, reason, message))


def decide_unparseable(status: FineTuneStatus, message: str, now: datetime, generation: int) -> FineTuneStatus:
    """The spec does not parse into this operator's model (an operator older than the CRD): terminal
    for this generation, like any InvalidSpec."""
    st = status.model_copy(deep=True)
    st.phase, st.observed_generation, st.waiting = "Failed", generation, None
    reason = c.REASON_INVALID_SPEC
    st.conditions = c.set_condition(st.conditions, c.FAILED, "True", reason, message, now, generation)
    st.conditions = c.set_condition(st.conditions, c.SUCCEEDED, "False", reason, message, now, generation)
    st.conditions = c.set_condition(st.conditions, c.READY, "False", reason, message, now, generation)
    return st


def _with_events(o: Observed, plan: Plan) -> Plan:
    """The plan with one Event per transition, plus a wait's rate-limited reminder."""
    events = transition_events(o.status, plan.status)
    events += tuple(e for e in plan.events if all(e.reason != seen.reason for seen in events))
    return Plan(plan.status, plan.actions, events, plan.requeue_seconds, plan.again)


def transition_events(before: FineTuneStatus, after: FineTuneStatus) -> tuple[Event, ...]:
    """One Event per transition: a new phase, Ready reason, run or attempt."""
    def key(s: FineTuneStatus) -> tuple[object, ...]:
        ready = c.get_condition(s.conditions, c.READY)
        return (s.phase, ready.reason if ready else None, s.run.number if s.run else None,
                s.run.attempt if s.run else None)

    if key(before) == key(after):
        return ()
    ready = c.get_condition(after.conditions, c.READY)
    if ready is None:
        return ()
    kind: Literal["Normal", "Warning"] = "Warning" if ready.reason in WARNING_REASONS else "Normal"
    return (Event(kind, ready.reason, ready.message),)
