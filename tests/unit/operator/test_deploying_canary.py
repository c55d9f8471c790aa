"""decide_deployment with spec.serving.canary, as a table of named steps: start (after a warm-up), wait,
step, a failed check, rollback, staying rolled back, retry on a new generation, promotion and its record;
each case checks the config sent (the Ingress user_config), the status and the Events."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import pytest

from tests.unit.operator.test_deploying import ADDRESS, BASE, MLFLOW, NOW, POLICY, T0, found
from tuneloop.api import conditions as c
from tuneloop.api.deployment import CanaryCheck, CanaryStatus, ModelDeploymentSpec, ModelDeploymentStatus
from tuneloop.operator.logic import deploying, serveconfig
from tuneloop.operator.logic.canary import CanaryWindow
from tuneloop.operator.logic.deploying import DeployObserved, PutApp, ServeApp
from tuneloop.serving.traffic_stats import ModelFigures

CANARY = {"intervalSeconds": 30, "threshold": 2, "stepWeight": 20, "maxWeight": 40, "maxErrorRate": 0.05,
          "maxP95LatencyMs": 500, "minRequests": 5}


def spec(canary: dict[str, Any] | None = CANARY) -> ModelDeploymentSpec:
    serving: dict[str, Any] = {"resources": {"cpu": "1"}}
    if canary is not None:
        serving["canary"] = canary
    return ModelDeploymentSpec.model_validate({"model": {"name": "inv", "alias": "champion"}, "serving": serving})


def config(default: str, route: tuple[str, int] | None = None) -> dict[str, Any]:
    """What Serve holds: first deployed with version 1 (args kept), Ingress default `default`."""
    return serveconfig.build_app("ns", "md", spec(), MLFLOW, f"inv/{default}", "inv/1", POLICY.app, BASE, route)


def app(default: str = "1", route: tuple[str, int] | None = None) -> ServeApp:
    return ServeApp("RUNNING", "", NOW.timestamp() - 50, config(default, route), ready_replicas=1)


def running(weight: int, failed: int = 0, since: float = 30, phase: str = "Progressing", generation: int = 1,
            checked: bool = False) -> ModelDeploymentStatus:
    st = ModelDeploymentStatus(served_version="1", phase="Degraded" if phase == "RolledBack" else "Serving")
    st.conditions = c.set_condition([], c.READY, "True", c.REASON_SERVING, "", T0, 1)
    last = CanaryCheck(time=T0, weight=weight, passed=True, message="check passed at 20%") if checked else None
    st.canary = CanaryStatus(phase=phase, version="2", model_id="inv/2", stable_version="1", weight=weight,  # type: ignore[arg-type]
                             failed_checks=failed, start_time=T0, last_check_time=NOW - timedelta(seconds=since),
                             window_start=900.0, generation=generation, last_check=last)
    return st


def serving1() -> ModelDeploymentStatus:
    return running(0).model_copy(update={"canary": None})


def window(requests: int = 10, p95: float = 100.0) -> CanaryWindow:
    return CanaryWindow(1000.0, ModelFigures(requests, 0, p95 / 2, p95), ModelFigures(40, 0, 50.0, 90.0))


def observed(st: ModelDeploymentStatus, app_: ServeApp, warmup: bool | None = None, w: CanaryWindow | None = None,
             generation: int = 1, s: ModelDeploymentSpec | None = None) -> DeployObserved:
    o = DeployObserved("ns", "md", generation, s or spec(), st, NOW, ADDRESS, MLFLOW, found("2"), app_,
                       "http://127.0.0.1:8000", canary_window=w)
    return replace(o, warmup=deploying.Warmup("inv/2", warmup, "HTTP 500") if warmup is not None else None)


@dataclass
class Case:
    o: DeployObserved
    sent: tuple[str, str | None, int] | None  # Ingress (default, canary id, weight) sent; None: no PUT
    canary: tuple[str, int, int] | None  # status.canary (phase, weight, failed checks); None: absent
    rolling_out: tuple[str, str]  # RollingOut (status, reason)
    phase: str = "Serving"
    served: str = "1"
    events: tuple[str, ...] = ()
    requeue_at_most: float | None = None


CASES = {
    "alias moved, candidate warmed up: canary starts at stepWeight": Case(
        observed(serving1(), app(), warmup=True, w=window(0)), ("inv/1", "inv/2", 20), ("Progressing", 20, 0),
        ("True", "CanaryProgressing"), events=("CanaryStarted",), requeue_at_most=2),
    "candidate failed its warm-up: no canary, the stable keeps all": Case(
        observed(serving1(), app(), warmup=False), None, None, ("False", "CandidateUnhealthy"), phase="Degraded",
        events=("Serving", "CandidateUnhealthy")),
    "canary running, check not due: nothing sent, looked at when due": Case(
        observed(running(20, since=10), app("1", ("inv/2", 20))), None, ("Progressing", 20, 0),
        ("True", "CanaryProgressing"), requeue_at_most=20),
    "check due and passed: weight stepped": Case(
        observed(running(20), app("1", ("inv/2", 20)), w=window()), ("inv/1", "inv/2", 40), ("Progressing", 40, 0),
        ("True", "CanaryProgressing"), events=("CanaryWeight",)),
    "check failed under the threshold: weight held, a Warning": Case(
        observed(running(20), app("1", ("inv/2", 20)), w=window(p95=900)), None, ("Progressing", 20, 1),
        ("True", "CanaryProgressing"), events=("CanaryCheckFailed",)),
    "threshold reached: rolled back to the stable": Case(
        observed(running(40, failed=1), app("1", ("inv/2", 40)), w=window(p95=900)), ("inv/1", None, 0),
        ("RolledBack", 0, 2), ("False", "CanaryRolledBack"), phase="Degraded",
        events=("Serving", "CanaryRolledBack")),
    "rolled back, same generation: stays on the stable, no warm-up asked": Case(
        observed(running(0, failed=2, phase="RolledBack"), app("1")), None, ("RolledBack", 0, 2),
        ("False", "CanaryRolledBack"), phase="Degraded"),
    "passed at maxWeight: promoting, the candidate becomes the default": Case(
        observed(running(40), app("1", ("inv/2", 40)), w=window()), ("inv/2", None, 0), ("Promoting", 100, 0),
        ("True", "Deploying"), events=("CanaryPromoting",)),
    "canary switched off mid-way: a plain switch (after a warm-up)": Case(
        observed(running(20), app("1", ("inv/2", 20)), warmup=True, s=spec(None)), ("inv/2", None, 0), None,
        ("True", "Deploying")),
}


@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
def test_canary_steps(case: Case) -> None:
    plan = deploying.decide_deployment(case.o, POLICY)
    st = plan.status
    if case.sent is None:
        assert plan.actions == ()
    else:
        (action,) = plan.actions
        assert isinstance(action, PutApp)
        ingress = {d["name"]: d for d in action.config["deployments"]}["Ingress"]["user_config"]
        default, canary_id, weight = case.sent
        assert ingress == ({"default_model_id": default} if canary_id is None else
                           {"default_model_id": default, "canary_model_id": canary_id, "canary_weight": weight})
        assert action.config["args"]["default_model_id"] == "inv/1"  # args kept: no replica restart
    assert (None if st.canary is None else (st.canary.phase, st.canary.weight, st.canary.failed_checks)) == case.canary
    rolling = c.get_condition(st.conditions, c.ROLLING_OUT)
    assert rolling is not None and (rolling.status, rolling.reason) == case.rolling_out
    assert st.phase == case.phase and st.served_version == case.served
    assert c.get_condition(st.conditions, c.READY).status == "True"  # type: ignore[union-attr]
    assert tuple(e.reason for e in plan.events) == case.events
    if case.requeue_at_most is not None:
        assert plan.requeue_seconds is not None and plan.requeue_seconds <= case.requeue_at_most


def test_a_rollback_is_recorded_with_its_figures() -> None:
    plan = deploying.decide_deployment(observed(running(40, failed=1), app("1", ("inv/2", 40)), w=window(p95=900)),
                                       POLICY)
    (record,) = plan.status.rollout_history
    assert (record.outcome, record.version, record.candidate_version) == ("RolledBack", "1", "2")
    assert record.message is not None and "p95 900 ms > maxP95LatencyMs 500" in record.message
    assert "10 requests" in record.message
    (event,) = [e for e in plan.events if e.reason == "CanaryRolledBack"]
    assert event.type == "Warning" and "version 1 takes all traffic" in event.message
    assert "p95 900 ms" in c.get_condition(plan.status.conditions, c.ROLLING_OUT).message  # type: ignore[union-attr]


def test_a_new_generation_tries_a_rolled_back_version_again() -> None:
    o = observed(running(0, failed=2, phase="RolledBack"), app("1"), generation=2)
    assert deploying.needs_warmup(o)
    assert deploying.canary_read(o) == (True, None)
    plan = deploying.decide_deployment(replace(o, warmup=deploying.Warmup("inv/2", True), canary_window=window(0)),
                                       POLICY)
    assert plan.status.canary is not None and plan.status.canary.phase == "Progressing"
    assert plan.status.canary.generation == 2 and plan.status.canary.failed_checks == 0
    assert plan.status.canary.window_start == 1000.0


def test_stats_are_read_only_at_the_start_and_when_a_check_is_due() -> None:
    assert deploying.canary_read(observed(running(20, since=10), app("1", ("inv/2", 20)))) == (False, 900.0)
    assert deploying.canary_read(observed(running(20, since=30), app("1", ("inv/2", 20)))) == (True, 900.0)
    assert deploying.canary_read(observed(serving1(), app(), s=spec(None))) == (False, None)
    assert not deploying.needs_warmup(observed(running(20), app("1", ("inv/2", 20))))


def test_promotion_confirmed_is_recorded_as_promoted() -> None:
    st = running(100, phase="Promoting", checked=True)
    plan = deploying.decide_deployment(observed(st, ServeApp("RUNNING", "", NOW.timestamp(), config("2"), 1)), POLICY)
    assert plan.status.served_version == "2" and plan.status.canary is None and plan.status.phase == "Serving"
    (record,) = plan.status.rollout_history
    assert (record.outcome, record.version, record.previous_version) == ("Promoted", "2", "1")
    assert record.message == "check passed at 20%"
    assert any(e.reason == "RolloutComplete" and "by canary analysis" in e.message for e in plan.events)


def test_alias_back_to_the_stable_ends_the_canary() -> None:
    o = replace(observed(running(20), app("1", ("inv/2", 20))), lookup=found("1"))
    plan = deploying.decide_deployment(o, POLICY)
    assert plan.status.canary is None
    (action,) = plan.actions
    assert isinstance(action, PutApp)
    ingress = {d["name"]: d for d in action.config["deployments"]}["Ingress"]["user_config"]
    assert ingress == {"default_model_id": "inv/1"}
