"""The ModelDeployment decision: resolve `spec.model`, roll the version out on Ray Serve, say how it is.

`decide_deployment(observed, policy) -> DeployPlan` is pure. In: the spec and status, what MLflow
says about the model (`ModelLookup`) and what Serve reports for our application (`ServeApp`). Out:
the status to write, at most one action (send our application config), Events and when to look again.

Rules:
- A model, alias or pinned version that is not there is the world's fault (a FineTune may register
  it later): `ModelResolved=False` names what was tried and what exists, and it is re-checked with
  backoff (`logic.waiting`). A version already served keeps serving.
- The config is sent only when Serve's `deployed_app_config` differs from ours (hash in status).
- Ready (Serving) only when the application is RUNNING, was deployed after our last send
  (`last_deployed_time_s` ≥ `status.rollout.appliedTime`) and its deployed config is ours
  (shared/FACTS.md: a RUNNING from before the send says nothing about what we sent).
- DEPLOY_FAILED and UNHEALTHY are ours to report (KubeRay does not act on them): Ready=False with
  Serve's message; a version already served counts as Degraded, nothing served as Failed.
- Ray or MLflow unreachable, or no Ray address at all: a wait with backoff, never a crash loop.
- With `spec.serving.canary`, a live switch (ExistingCluster, same base, candidate warmed up) is a canary:
  the stable version stays the Ingress default and the candidate takes a share set in the Ingress
  `user_config`, stepped, promoted or rolled back by `logic.canary.decide_canary` from the application's
  own per-version figures. A rolled-back version is not tried again until the alias moves or the spec
  changes (`status.canary` remembers it with the generation).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from tuneloop.api import conditions as c
from tuneloop.api.conditions import Condition
from tuneloop.api.deployment import (
    CanaryStatus,
    DeploymentPhase,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    RolloutRecord,
    RolloutStatus,
)
from tuneloop.operator.logic import canary, rayservice, serveconfig, vllmconfig, waiting
from tuneloop.operator.logic.plans import Event, VersionInfo

HISTORY_LIMIT = 20
MAX_LISTED = 10  # versions and aliases named in a not-found message


@dataclass(frozen=True)
class DeployPolicy:
    """Administrator settings the decision depends on."""

    poll_seconds: float = 10.0  # alias re-check while serving
    max_poll_seconds: float = 120.0  # backoff ceiling of waits, and of their Warning events
    rollout_poll_seconds: float = 2.0  # how often a rollout in progress is looked at
    app: serveconfig.AppSettings = field(default_factory=lambda: serveconfig.AppSettings("file:///var/lib/tuneloop"))
    ray_image: str = "rayproject/ray:2.60.0-py311"  # RayService pods: an image with tuneloop's serving package
    ray_head_cpu: str = "2"
    ray_head_memory: str = "8Gi"


@dataclass(frozen=True)
class ModelLookup:
    """What the registry says about `spec.model`: the version it resolves to, or what exists instead."""

    version: VersionInfo | None
    model_exists: bool = True
    versions: tuple[str, ...] = ()
    aliases: dict[str, str] = field(default_factory=dict)  # alias → version


@dataclass(frozen=True)
class ServeApp:
    """Our application as `GET /api/serve/applications/` reports it."""

    status: str  # NOT_STARTED, DEPLOYING, RUNNING, DEPLOY_FAILED, UNHEALTHY, DELETING
    message: str = ""
    last_deployed_time_s: float | None = None
    deployed_app_config: dict[str, Any] | None = None
    ready_replicas: int = 0  # RUNNING replicas of the Generator
    # Whether the deploy Serve reports came after our last write, where the reporter knows it (RayService:
    # KubeRay's observedGeneration); None: judged from last_deployed_time_s against status.rollout.appliedTime.
    deployed_after_send: bool | None = None


@dataclass(frozen=True)
class Warmup:
    """One completion asked of the running application with the candidate's model id, before the switch."""

    model_id: str
    ok: bool
    message: str = ""


@dataclass(frozen=True)
class DeployObserved:
    namespace: str
    name: str
    generation: int
    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus
    now: datetime
    address: str | None  # the Ray dashboard (spec, else operator setting)
    tracking_uri: str | None  # MLflow (spec, else operator setting)
    lookup: ModelLookup | None = None  # None: not looked up (nothing to look up with)
    app: ServeApp | None = None  # None: Serve has no application of ours
    endpoint_base: str | None = None  # http://host:port of the Serve proxy, as the operator reaches it
    public_endpoint_base: str | None = None  # as clients reach it (spec, else operator setting), for status.endpoint
    uid: str = ""
    rayservice: dict[str, Any] | None = None  # RayService mode: our RayService as the apiserver has it
    warmup: Warmup | None = None  # the candidate's answer to one request, when `needs_warmup` asked for it
    canary_window: canary.CanaryWindow | None = None  # the app's per-version figures, when `canary_read` asked
    canary_read_error: str = ""  # why they could not be read


@dataclass(frozen=True)
class PutApp:
    """Send our application (read-merge-write of the cluster's whole config)."""

    address: str
    app_name: str
    config: dict[str, Any]


@dataclass(frozen=True)
class EnsureRayService:
    """Create our RayService, or replace its spec (RayService mode)."""

    manifest: dict[str, Any]


Action = PutApp | EnsureRayService


@dataclass(frozen=True)
class DeployPlan:
    status: ModelDeploymentStatus
    actions: tuple[Action, ...] = ()
    events: tuple[Event, ...] = ()
    requeue_seconds: float | None = None


def describe_missing(o: DeployObserved, lookup: ModelLookup) -> tuple[str, str]:
    """Reason and message for a `spec.model` that does not resolve: what was tried, what exists."""
    ref, where = o.spec.model, f"in MLflow at {o.tracking_uri}"
    if not lookup.model_exists:
        return c.REASON_MODEL_NOT_FOUND, (
            f"spec.model.name: no registered model {ref.name!r} {where}; register a version (a FineTune with "
            f"spec.registry.modelName: {ref.name} does) or fix the name")
    versions = ", ".join(lookup.versions[-MAX_LISTED:]) or "none"
    if ref.alias is not None:
        held = ", ".join(f"{a} → {v}" for a, v in sorted(lookup.aliases.items())[:MAX_LISTED]) or "none"
        return c.REASON_ALIAS_NOT_FOUND, (
            f"spec.model.alias: model {ref.name!r} has no alias {ref.alias!r} {where}; aliases: {held}; "
            f"versions: {versions}. Waiting for a promotion to set it, or set spec.model.version")
    return c.REASON_VERSION_NOT_FOUND, (
        f"spec.model.version: model {ref.name!r} has no version {ref.version} {where}; versions: {versions}")


def _phase_when_waiting(st: ModelDeploymentStatus) -> DeploymentPhase:
    return "Degraded" if st.served_version else "Pending"


def _wait(o: DeployObserved, p: DeployPolicy, st: ModelDeploymentStatus, reason: str, message: str
          ) -> DeployPlan:
    """A wait on the world: Ready says so unless a version is still served; backoff and rate-limited Warnings."""
    w = waiting.decide_wait(st.waiting, reason, o.now, p.poll_seconds, p.max_poll_seconds)
    st.waiting = w.status
    st.phase = _phase_when_waiting(st)
    if not st.served_version:
        st.conditions = c.set_condition(st.conditions, c.READY, "False", reason, message, o.now, o.generation)
    events = (Event("Warning", reason, c.truncate(message)),) if w.warn else ()
    return DeployPlan(st, (), events, w.requeue_seconds)


def _start(o: DeployObserved) -> ModelDeploymentStatus:
    st = o.status.model_copy(deep=True)
    st.observed_generation = o.generation
    st.app_name = serveconfig.app_name(o.namespace, o.name)
    return st


def decide_unavailable(o: DeployObserved, p: DeployPolicy, reason: str, message: str) -> DeployPlan:
    """Ray or MLflow could not be reached: wait with backoff, keep what is served. What MLflow said before
    Ray failed still counts (ModelResolved)."""
    st = _start(o)
    if o.lookup is not None and o.lookup.version is not None:
        st.conditions = _resolved(o, st, o.lookup.version.version)
    return _with_events(o, _wait(o, p, st, reason, message))


def _resolved(o: DeployObserved, st: ModelDeploymentStatus, version: str) -> list[Condition]:
    ref = o.spec.model
    how = f"alias {ref.alias!r}" if ref.alias is not None else "pinned version"
    return c.set_condition(st.conditions, c.MODEL_RESOLVED, "True", c.REASON_RESOLVED,
                           f"{ref.name} {how} → version {version}", o.now, o.generation)


def decide_deployment(o: DeployObserved, p: DeployPolicy) -> DeployPlan:
    st = _start(o)
    ref = o.spec.model
    if o.spec.serving.runtime != "RayServe":
        message = (f"spec.serving.runtime {o.spec.serving.runtime} is not implemented by this operator yet; "
                   "use RayServe")
        st.phase, st.waiting = "Failed", None
        st.conditions = c.set_condition(st.conditions, c.READY, "False", c.REASON_NOT_IMPLEMENTED, message, o.now,
                                        o.generation)
        return _with_events(o, DeployPlan(st))
    if not o.tracking_uri:
        return _with_events(o, _wait(o, p, st, c.REASON_REGISTRY_NOT_CONFIGURED, (
            "spec.model.trackingUri is empty and the operator has no TUNELOOP_MLFLOW_TRACKING_URI: set one")))
    on_kuberay = o.spec.serving.mode == "RayService"
    if not o.address and not on_kuberay:
        return _with_events(o, _wait(o, p, st, c.REASON_RAY_NOT_CONFIGURED, (
            "spec.serving.address is empty and the operator has no TUNELOOP_SERVE_ADDRESS: set the Ray "
            "dashboard address (http://host:8265)")))
    lookup = o.lookup
    if lookup is None or lookup.version is None:
        reason, message = describe_missing(o, lookup or ModelLookup(None, model_exists=False))
        st.conditions = c.set_condition(st.conditions, c.MODEL_RESOLVED, "False", reason, message, o.now,
                                        o.generation)
        return _with_events(o, _wait(o, p, st, reason, message))

    version = lookup.version.version
    wanted_id = serveconfig.model_id(ref.name, version)
    st.conditions = _resolved(o, st, version)
    st.waiting = None
    # `version` is what the alias resolves to; `serve_version` what the Ingress makes its default (the stable
    # one while a canary runs or after it rolled back), with the canary's share in `route`.
    serve_version, route = version, None
    canary_events: tuple[Event, ...] = ()
    if not on_kuberay:
        step = _canary(o, p, st, version, wanted_id)
        if isinstance(step, DeployPlan):
            return _with_events(o, step)
        serve_version, route, canary_events = step
    serve_id = serveconfig.model_id(ref.name, serve_version)
    return _with_canary(o, st, canary_events, _decide_serving(
        o, p, st, on_kuberay, version, wanted_id, serve_version, serve_id, route))


def _decide_serving(o: DeployObserved, p: DeployPolicy, st: ModelDeploymentStatus, on_kuberay: bool, version: str,
                    wanted_id: str, serve_version: str, serve_id: str, route: tuple[str, int] | None) -> DeployPlan:
    """Send our config if Serve's differs, else judge what Serve reports; `serve_version` is the default."""
    lookup = o.lookup
    assert lookup is not None and lookup.version is not None and o.tracking_uri is not None
    if on_kuberay:
        deployed = rayservice.deployed_app(o.rayservice)
    else:
        app = o.app if o.app is not None and o.app.status != "DELETING" else None
        deployed = app.deployed_app_config if app is not None else None
    try:
        if o.spec.serving.engine == "VLLM":  # adapters named per request: no default, no canary, no args to keep
            recorded = serveconfig.version_base(lookup.version.tags)
            config = vllmconfig.build_llm_app(o.namespace, o.name, o.spec, recorded.uri if recorded else None)
        else:
            base = serveconfig.serving_base(lookup.version.tags, deployed)
            config = serveconfig.build_app(o.namespace, o.name, o.spec, o.tracking_uri, serve_id,
                                           serveconfig.kept_model_id(deployed, base), p.app, base, route)
    except ValueError as e:  # the serving app's own argument check (serving.args), e.g. a model name it cannot route
        message = f"spec cannot be served: {e}"
        st.phase = "Failed"
        st.conditions = c.set_condition(st.conditions, c.READY, "False", c.REASON_INVALID_SPEC, message, o.now,
                                        o.generation)
        return DeployPlan(st)
    digest = serveconfig.config_hash(config)
    action: Action
    if on_kuberay:
        defaults = rayservice.RayServiceDefaults(p.ray_image, p.ray_head_cpu, p.ray_head_memory)
        manifest = rayservice.build_rayservice(o.namespace, o.name, o.uid, o.spec, config, defaults)
        app = rayservice.observe_rayservice(o.rayservice, manifest, config["name"])
        o = replace(o, endpoint_base=rayservice.endpoint_base(o.namespace, o.name))
        action = EnsureRayService(manifest)
    else:
        assert o.address is not None
        action = PutApp(o.address, config["name"], config)
    rollout = st.rollout if st.rollout is not None and st.rollout.version == serve_version else None
    start_time = rollout.start_time if rollout is not None else o.now

    if app is None:
        st.served_version, st.ready_replicas, st.endpoint = None, 0, None
    if app is None or not serveconfig.matches(config, deployed):
        if needs_warmup(o) and (o.warmup is None or o.warmup.model_id != wanted_id or not o.warmup.ok):
            return _candidate_unhealthy(o, st, version, wanted_id, p)
        st.rollout = RolloutStatus(version=serve_version, model_id=serve_id, start_time=start_time,
                                   applied_time=o.now, config_hash=digest)
        what = "written to the RayService" if on_kuberay else "sent to Ray Serve"
        return _rolling(o, st, serve_version, what, p, (action,))
    assert app is not None

    applied = st.rollout.applied_time if st.rollout is not None and st.rollout.config_hash == digest else None
    if app.deployed_after_send is not None:
        fresh = app.deployed_after_send
    else:
        fresh = applied is None or (app.last_deployed_time_s or 0.0) >= applied.timestamp()
    if app.status == "RUNNING" and fresh:
        return _serving(o, st, serve_version, app, p)
    if app.status in ("DEPLOY_FAILED", "UNHEALTHY"):
        reason = c.REASON_DEPLOY_FAILED if app.status == "DEPLOY_FAILED" else c.REASON_UNHEALTHY
        message = (f"Ray Serve application {config['name']} is {app.status} with version {serve_version}: "
                   f"{app.message or 'no message'}")
        st.phase = "Degraded" if st.served_version else "Failed"
        st.ready_replicas = app.ready_replicas
        st.conditions = c.set_condition(st.conditions, c.READY, "False", reason, message, o.now, o.generation)
        st.conditions = c.set_condition(st.conditions, c.ROLLING_OUT, "False", reason, message, o.now, o.generation)
        # Looked at again: UNHEALTHY may recover, and an alias move brings a new config after DEPLOY_FAILED.
        return DeployPlan(st, (), (), p.poll_seconds)
    if st.rollout is None or st.rollout.version != serve_version:
        st.rollout = RolloutStatus(version=serve_version, model_id=serve_id, start_time=start_time, config_hash=digest)
    return _rolling(o, st, serve_version, f"Serve reports {app.status}", p, ())


def needs_warmup(o: DeployObserved) -> bool:
    """Whether the resolved version must answer once before it takes the default: only when another
    version is serving on a RUNNING ExistingCluster application (the switch then only moves the Ingress
    default, so the candidate's adapter is loaded and proven on a live replica first; a first deploy
    or a RayService has nothing serving to protect), and only on the base the replicas hold (another
    base means new `args` and a restart: the live replicas would refuse the candidate's adapter)."""
    lookup, app = o.lookup, o.app
    return (o.spec.serving.mode == "ExistingCluster" and o.spec.serving.engine != "VLLM"
            and lookup is not None and lookup.version is not None
            and app is not None and app.status == "RUNNING" and bool(o.status.served_version)
            and o.status.served_version != lookup.version.version and o.endpoint_base is not None
            and _canary_of(o, lookup.version.version) is None
            and serveconfig.kept_model_id(
                app.deployed_app_config,
                serveconfig.serving_base(lookup.version.tags, app.deployed_app_config)) is not None)


def _canary_of(o: DeployObserved, version: str) -> CanaryStatus | None:
    """The canary of `version` still in hand: running, handing over, or rolled back under this generation
    from the version still served (not tried again until the spec or the alias changes)."""
    cur = o.status.canary
    if cur is None or cur.version != version or cur.stable_version != o.status.served_version:
        return None
    if cur.phase == "RolledBack" and cur.generation != o.generation:
        return None
    if cur.phase == "Progressing" and o.spec.serving.canary is None:
        return None  # canary analysis switched off mid-way: a plain switch
    return cur


def canary_read(o: DeployObserved) -> tuple[bool, float | None]:
    """Whether the application's per-version figures are needed now, and since when (its clock): at a
    canary's start (for the window's start) and when a check is due."""
    spec = o.spec.serving.canary
    if spec is None or o.spec.serving.mode != "ExistingCluster" or o.endpoint_base is None:
        return False, None
    if needs_warmup(o):
        return True, None
    version = o.lookup.version.version if o.lookup is not None and o.lookup.version is not None else None
    cur = _canary_of(o, version) if version is not None else None
    if cur is None or cur.phase != "Progressing":
        return False, None
    return (o.now - cur.last_check_time).total_seconds() >= spec.interval_seconds, cur.window_start


def _canary(o: DeployObserved, p: DeployPolicy, st: ModelDeploymentStatus, version: str, wanted_id: str
            ) -> tuple[str, tuple[str, int] | None, tuple[Event, ...]] | DeployPlan:
    """(the Ingress default, the canary's (model id, percent) or None, Events), or the plan of a candidate
    that failed its warm-up. Updates `st.canary` and, on a rollback, `st.rolloutHistory`."""
    spec = o.spec.serving.canary
    stable = st.served_version
    cur = _canary_of(o, version)
    if cur is None:
        st.canary = None
        if spec is None or stable is None or o.spec.serving.engine == "VLLM" or not needs_warmup(o):
            return version, None, ()  # no canary: a first deploy, a restart on another base, or none asked
        if o.warmup is None or o.warmup.model_id != wanted_id or not o.warmup.ok:
            return _candidate_unhealthy(o, st, version, wanted_id, p)
        weight = canary.first_weight(spec)
        st.canary = CanaryStatus(phase="Progressing", version=version, model_id=wanted_id, stable_version=stable,
                                 weight=weight, start_time=o.now, last_check_time=o.now, generation=o.generation,
                                 window_start=o.canary_window.now if o.canary_window is not None else None)
        return stable, (wanted_id, weight), (Event("Normal", c.REASON_CANARY_STARTED, (
            f"version {version} takes {weight}% of requests, version {stable} the rest; a check every "
            f"{spec.interval_seconds}s")),)
    cur = st.canary
    assert cur is not None and stable is not None
    if cur.phase == "RolledBack":
        return stable, None, ()
    if cur.phase == "Promoting" or spec is None:
        return version, None, ()
    d = canary.decide_canary(spec, cur.weight, cur.failed_checks, cur.last_check_time, o.now, o.canary_window,
                             o.canary_read_error)
    if d.check is None:
        return stable, (wanted_id, cur.weight), ()
    cur.last_check, cur.last_check_time, cur.failed_checks, cur.weight = d.check, o.now, d.failed_checks, d.weight
    if o.canary_window is not None:
        cur.window_start = o.canary_window.now
    message = c.truncate(f"version {version}: {d.check.message}")
    if d.action == "Promote":
        cur.phase = "Promoting"
        return version, None, (Event("Normal", c.REASON_CANARY_PROMOTING, message),)
    if d.action == "RollBack":
        cur.phase = "RolledBack"
        record = RolloutRecord(version=stable, previous_version=stable, alias=o.spec.model.alias, time=o.now,
                               outcome="RolledBack", candidate_version=version, message=message)
        st.rollout_history = [*st.rollout_history, record][-HISTORY_LIMIT:]
        return stable, None, (Event("Warning", c.REASON_CANARY_ROLLED_BACK, c.truncate(
            f"version {version} rolled back, version {stable} takes all traffic: {d.check.message}")),)
    if d.action == "Step":
        return stable, (wanted_id, cur.weight), (Event("Normal", c.REASON_CANARY_WEIGHT, message),)
    events = (Event("Warning", c.REASON_CANARY_CHECK_FAILED, message),) if d.check.passed is False else ()
    return stable, (wanted_id, cur.weight), events


def _with_canary(o: DeployObserved, st: ModelDeploymentStatus, events: tuple[Event, ...], plan: DeployPlan
                 ) -> DeployPlan:
    """A canary's say in the plan: RollingOut tells its state (over the plain rollout's words), a rollback
    leaves the phase Degraded, and a running canary is looked at again when its next check is due."""
    cur, spec, after = plan.status.canary, o.spec.serving.canary, plan.status
    requeue = plan.requeue_seconds
    if cur is not None and cur.phase == "Progressing" and spec is not None:
        last = f"; last check: {cur.last_check.message}" if cur.last_check is not None else ""
        after.conditions = c.set_condition(after.conditions, c.ROLLING_OUT, "True", c.REASON_CANARY_PROGRESSING, (
            f"canary: version {cur.version} takes {cur.weight}% of requests, version {cur.stable_version} the rest; "
            f"{cur.failed_checks}/{spec.threshold} failed checks{last}"), o.now, o.generation)
        due = spec.interval_seconds - (o.now - cur.last_check_time).total_seconds()
        requeue = max(0.5, min(due, requeue if requeue is not None else due))
    elif cur is not None and cur.phase == "RolledBack":
        why = cur.last_check.message if cur.last_check is not None else "failed checks"
        after.conditions = c.set_condition(after.conditions, c.ROLLING_OUT, "False", c.REASON_CANARY_ROLLED_BACK, (
            f"canary of version {cur.version} rolled back, version {cur.stable_version} serves: {why}; tried again "
            "when the alias moves or the spec changes"), o.now, o.generation)
        if after.phase == "Serving":
            after.phase = "Degraded"
    plan = _with_events(o, DeployPlan(after, plan.actions, plan.events, requeue))
    extra = tuple(e for e in events if all(e.reason != seen.reason for seen in plan.events))
    return DeployPlan(plan.status, plan.actions, plan.events + extra, plan.requeue_seconds)


def _candidate_unhealthy(o: DeployObserved, st: ModelDeploymentStatus, version: str, model_id: str,
                         p: DeployPolicy) -> DeployPlan:
    """The candidate failed its warm-up request: the served version keeps the traffic; tried again later."""
    detail = o.warmup.message if o.warmup is not None else "no answer"
    message = (f"version {version} did not answer a warm-up completion ({model_id}): {detail}; version "
               f"{st.served_version} keeps serving, retried with backoff")
    st.phase = "Degraded"
    st.conditions = c.set_condition(st.conditions, c.ROLLING_OUT, "False", c.REASON_CANDIDATE_UNHEALTHY, message,
                                    o.now, o.generation)
    w = waiting.decide_wait(o.status.waiting, c.REASON_CANDIDATE_UNHEALTHY, o.now, p.poll_seconds, p.max_poll_seconds)
    st.waiting = w.status
    events = (Event("Warning", c.REASON_CANDIDATE_UNHEALTHY, c.truncate(message)),) if w.warn else ()
    return DeployPlan(st, (), events, w.requeue_seconds)


def _rolling(o: DeployObserved, st: ModelDeploymentStatus, version: str, what: str, p: DeployPolicy,
             actions: tuple[Action, ...]) -> DeployPlan:
    message = f"version {version} {what}; waiting for RUNNING with this config"
    st.conditions = c.set_condition(st.conditions, c.ROLLING_OUT, "True", c.REASON_DEPLOYING, message, o.now,
                                    o.generation)
    if st.served_version:
        st.phase = "Serving"  # the old default keeps answering until the Ingress takes the new one
    else:
        st.phase = "Deploying"
        st.conditions = c.set_condition(st.conditions, c.READY, "False", c.REASON_DEPLOYING, message, o.now,
                                        o.generation)
    return DeployPlan(st, actions, (), p.rollout_poll_seconds)


def _serving(o: DeployObserved, st: ModelDeploymentStatus, version: str, app: ServeApp, p: DeployPolicy
             ) -> DeployPlan:
    previous = st.served_version
    base = o.public_endpoint_base or o.endpoint_base
    endpoint = f"{base.rstrip('/')}{serveconfig.route_prefix(o.namespace, o.name)}" if base else st.endpoint
    st.served_version, st.ready_replicas, st.endpoint, st.rollout = version, app.ready_replicas, endpoint, None
    st.phase = "Serving"
    events: tuple[Event, ...] = ()
    if previous != version:
        promoted = st.canary if st.canary is not None and st.canary.version == version else None
        how = "by canary analysis" if promoted is not None else ""
        record = RolloutRecord(version=version, previous_version=previous, alias=o.spec.model.alias, time=o.now,
                               outcome="Promoted" if promoted is not None else "Switched",
                               message=promoted.last_check.message if promoted and promoted.last_check else None)
        st.rollout_history = [*st.rollout_history, record][-HISTORY_LIMIT:]
        st.canary = None if promoted is not None else st.canary
        was = f" (was {previous})" if previous else ""
        events = (Event("Normal", c.REASON_ROLLOUT_COMPLETE, f"serving version {version}{was} at {endpoint}"
                        f"{' ' + how if how else ''}"),)
    message = f"version {version} RUNNING at {endpoint}"
    if o.spec.serving.engine == "VLLM":
        message += f" (request model {vllmconfig.request_model(o.spec.model.name, version)})"
    st.conditions = c.set_condition(st.conditions, c.READY, "True", c.REASON_SERVING, message, o.now, o.generation)
    st.conditions = c.set_condition(st.conditions, c.ROLLING_OUT, "False", c.REASON_ROLLOUT_COMPLETE,
                                    f"version {version} serving", o.now, o.generation)
    # An alias is followed by re-reading it; a pinned version only needs Serve's health now and then.
    requeue = p.poll_seconds if o.spec.model.alias is not None else p.max_poll_seconds
    return DeployPlan(st, (), events, requeue)


def transition_events(before: ModelDeploymentStatus, after: ModelDeploymentStatus) -> tuple[Event, ...]:
    """One Event per change of phase or Ready reason (Warning when Ready turns False for a fault)."""
    def key(s: ModelDeploymentStatus) -> tuple[object, ...]:
        ready = c.get_condition(s.conditions, c.READY)
        return (s.phase, ready.reason if ready else None)

    if key(before) == key(after):
        return ()
    ready = c.get_condition(after.conditions, c.READY)
    if ready is None:
        return ()
    bad = ready.status == "False" and ready.reason not in (c.REASON_DEPLOYING,)
    return (Event("Warning" if bad else "Normal", ready.reason, ready.message),)


def _with_events(o: DeployObserved, plan: DeployPlan) -> DeployPlan:
    events = transition_events(o.status, plan.status)
    events += tuple(e for e in plan.events if all(e.reason != seen.reason for seen in events))
    return DeployPlan(plan.status, plan.actions, events, plan.requeue_seconds)


def is_steady(o: DeployObserved, plan: DeployPlan) -> bool:
    """Whether a look found a Serving deployment at rest and left it so: no action, no Event, status as it
    was, no rollout, canary or wait in progress. Such a plan depends on the observation only, not on the
    clock (set_condition keeps a condition's time while its status holds; only rollouts, canaries and
    waits read `now`), so the same observation later decides the same (`repeats_steady_look`)."""
    st = plan.status
    return (not plan.actions and not plan.events and st.phase == "Serving" and st.rollout is None
            and st.canary is None and st.waiting is None and st.to_k8s() == o.status.to_k8s())


def repeats_steady_look(steady: DeployObserved | None, o: DeployObserved) -> bool:
    """Whether `o` observes exactly what the last steady look (`is_steady`) observed, its time aside: the
    object (its status included), the registry's answer and Serve's or KubeRay's. Then its plan is that
    look's — nothing to do until the next look — and deciding again is skipped (#11: deciding and the
    status comparison were ~half of an idle Serving look)."""
    return steady is not None and replace(steady, now=o.now) == o


def next_look_is_quiet(delay: float | None, woken: bool, poll_seconds: float) -> bool:
    """Whether the next look may read the object from the watch instead of a GET: a Serving deployment's
    alias re-check after a whole poll interval with nothing woken. Rollout steps, waits after a lost race
    and looks after a change GET the object."""
    return not woken and delay is not None and delay >= poll_seconds
