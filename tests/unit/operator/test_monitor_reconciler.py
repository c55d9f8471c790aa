"""The monitor's gather → decide → act with fakes behind our interfaces: a scripted check, a ModelDeployment
and its FineTune in memory. What the loop must do once a check has answered: conditions and breaches,
one retrain request per breach streak, the request id carried over a crash, the run's end read back from
the FineTune, Manual approval, a failed check as MonitorStale. And the worker pool: at most K checks at
once, off the event loop."""

from __future__ import annotations

import asyncio
import copy
import functools
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.unit.operator.fakes import FakeEvents
from tuneloop.api import constants
from tuneloop.operator.clients import monitor as mon
from tuneloop.operator.handlers.monitor_reconciler import MonitorReconciler
from tuneloop.operator.metrics import Metrics
from tuneloop.operator.settings import OperatorSettings

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
INTERVAL = 60
DRIFTED = mon.CheckAnswer(samples=200, drift_share=0.8, drifted_columns=("prompt_length",), quality=0.2)
HEALTHY = mon.CheckAnswer(samples=200, drift_share=0.0, quality=0.9)
FEEDBACK = {"uri": "file:///traffic/ns/feedback-sets/ns.md/abc.jsonl", "hash": "abc", "examples": 40, "labelled": 55}
DRIFTED_LABELLED = mon.CheckAnswer(samples=200, drift_share=0.8, drifted_columns=("prompt_length",), quality=0.2,
                                   feedback=FEEDBACK)


def sync(test: Any) -> Any:
    """Run an async test on a fresh event loop (the suite has no asyncio plugin)."""
    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))
    return run


def md_body(approval: str = "Auto", retrain: bool = True) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": "md", "generation": 1, "uid": "u1", "resourceVersion": "1"},
        "spec": {"model": {"name": "m", "alias": "champion", "trackingUri": "http://mlflow"},
                 "fineTuneRef": {"name": "ft"},
                 "monitoring": {"intervalSeconds": INTERVAL, "minSamples": 10,
                                "reference": {"source": "Uri", "uri": "file:///ref.jsonl"},
                                "quality": {"minimum": 0.5, "consecutiveBreaches": 2}},
                 "retraining": {"enabled": retrain, "cooldownSeconds": 3600, "maxPerDay": 5, "approval": approval}},
        "status": {"servedVersion": "1"},
    }


class Kube:
    def __init__(self, md: dict[str, Any]) -> None:
        self.md = md
        self.ft: dict[str, Any] | None = {"metadata": {"name": "ft", "annotations": {}},
                                          "status": {"phase": "Succeeded"}}
        self.annotations: list[tuple[str, str]] = []
        self.fail_annotate = False
        self.other_writer: Any = None

    async def get_modeldeployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.md)

    async def write_modeldeployment_status_if(self, namespace: str, name: str, status: dict[str, Any],
                                              resource_version: str) -> bool:
        if self.other_writer is not None:  # the serving daemon writes between our read and our write
            self.other_writer(self.md)
            self.other_writer = None
            self.bump()
        if resource_version != self.md["metadata"]["resourceVersion"]:
            return False
        self.md = {**self.md, "status": status}
        self.bump()
        return True

    def bump(self) -> None:
        self.md["metadata"]["resourceVersion"] = str(int(self.md["metadata"]["resourceVersion"]) + 1)

    async def get_finetune(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.ft

    async def annotate_finetune(self, namespace: str, name: str, annotations: Mapping[str, str]) -> None:
        if self.fail_annotate:
            raise RuntimeError("killed between the status write and the annotation")
        assert self.ft is not None
        request = annotations[constants.ANNOTATION_RETRAIN_REQUEST]
        # The request arrives with its reason (and data) in the same patch, never before them.
        assert annotations[constants.ANNOTATION_RETRAIN_REASON].startswith(f"{request}:"), annotations
        data = annotations.get(constants.ANNOTATION_RETRAIN_DATA)
        assert data is None or data.startswith(f"{request}:"), annotations
        assert set(annotations) <= {constants.ANNOTATION_RETRAIN_REQUEST, constants.ANNOTATION_RETRAIN_REASON,
                                    constants.ANNOTATION_RETRAIN_DATA}
        self.annotations.append((name, request))
        self.ft["metadata"]["annotations"].update(annotations)


class Scripted:
    def __init__(self, *answers: mon.CheckAnswer) -> None:
        self.answers = list(answers)
        self.requests: list[dict[str, Any]] = []

    async def check(self, request: dict[str, Any]) -> mon.CheckAnswer:
        self.requests.append(request)
        return self.answers.pop(0)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def make(md: dict[str, Any], *answers: mon.CheckAnswer) -> tuple[MonitorReconciler, Kube, Scripted, FakeEvents,
                                                                  Clock]:
    kube, check, events, clock = Kube(md), Scripted(*answers), FakeEvents(), Clock()
    r = MonitorReconciler(kube, check, events, OperatorSettings(), Metrics.disabled(), clock)
    return r, kube, check, events, clock


def cond(kube: Kube, type_: str) -> dict[str, Any]:
    return next((c for c in kube.md["status"].get("conditions", []) if c["type"] == type_), {})


async def tick(r: MonitorReconciler, clock: Clock) -> float | None:
    delay = await r.monitor("ns", "md")
    clock.now += timedelta(seconds=INTERVAL)
    return delay


def reasons(events: FakeEvents) -> list[str]:
    return [e[1] for e in events.events]


@sync
async def test_breaches_in_a_row_request_one_retrain_and_the_fine_tune_is_annotated_not_edited() -> None:
    r, kube, check, events, clock = make(md_body(), DRIFTED, DRIFTED, DRIFTED)
    assert await tick(r, clock) == INTERVAL
    assert cond(kube, "DriftDetected")["status"] == "True" and cond(kube, "QualityDegraded")["status"] == "True"
    assert kube.annotations == [] and kube.md["status"]["consecutiveBreaches"] == 1
    await tick(r, clock)
    st = kube.md["status"]
    rid = st["retrainInFlight"]
    assert kube.annotations == [("ft", rid)] and st["retrainHistory"][0]["state"] == "Requested"
    assert "drift share 0.80 (prompt_length)" in st["retrainHistory"][0]["reason"]
    reason = kube.ft["metadata"]["annotations"][constants.ANNOTATION_RETRAIN_REASON]
    assert reason.startswith(f"{rid}: requested by ModelDeployment ns/md at 2026-11-23T12:01:00")
    assert "drift share 0.80 (prompt_length)" in reason
    assert cond(kube, "Retraining")["status"] == "True" and "RetrainRequested" in reasons(events)
    await tick(r, clock)  # still breaching, the retrain in flight: no second request
    assert kube.annotations == [("ft", rid)] and len(kube.md["status"]["retrainHistory"]) == 1
    assert check.requests[0]["reference"] == {"uri": "file:///ref.jsonl"}
    assert check.requests[0]["deployment"] == "ns.md"


@sync
async def test_the_run_for_the_request_is_followed_to_its_end_then_cooldown_holds() -> None:
    r, kube, _, events, clock = make(md_body(), DRIFTED, DRIFTED, DRIFTED, DRIFTED)
    await tick(r, clock)
    await tick(r, clock)
    rid = kube.md["status"]["retrainInFlight"]
    assert kube.ft is not None
    kube.ft["status"] = {"phase": "Running", "handledRetrainRequest": rid,
                         "run": {"number": 2, "generation": 1, "trigger": f"retrain:{rid}"}}
    await tick(r, clock)
    assert kube.md["status"]["retrainHistory"][0]["state"] == "Running"
    kube.ft["status"] = {"phase": "Succeeded", "handledRetrainRequest": rid,
                         "run": {"number": 2, "generation": 1, "trigger": f"retrain:{rid}"},
                         "model": {"name": "m", "version": "2"}}
    await tick(r, clock)
    st = kube.md["status"]
    assert "retrainInFlight" not in st and st["retrainHistory"][0]["state"] == "Succeeded"
    assert st["retrainHistory"][0]["version"] == "2" and st["retrainHistory"][0]["run"] == 2
    assert cond(kube, "Retraining")["reason"] == "Cooldown" and "Cooldown" in reasons(events)
    assert len(kube.annotations) == 1


@sync
async def test_a_crash_between_status_and_annotation_re_sends_the_same_request() -> None:
    r, kube, _, _, clock = make(md_body(), DRIFTED, DRIFTED, DRIFTED)
    await tick(r, clock)
    kube.fail_annotate = True
    with pytest.raises(RuntimeError):
        await tick(r, clock)
    rid = kube.md["status"]["retrainInFlight"]  # status was written first
    kube.fail_annotate = False
    await tick(r, clock)
    assert kube.annotations == [("ft", rid)] and len(kube.md["status"]["retrainHistory"]) == 1


@sync
async def test_manual_approval_waits_for_the_annotation_with_the_request_id() -> None:
    r, kube, _, events, clock = make(md_body(approval="Manual"), DRIFTED, DRIFTED, DRIFTED, DRIFTED)
    await tick(r, clock)
    await tick(r, clock)
    await tick(r, clock)
    st = kube.md["status"]
    assert kube.annotations == [] and [h["state"] for h in st["retrainHistory"]] == ["PendingApproval"]
    assert cond(kube, "Retraining")["reason"] == "AwaitingApproval"
    assert reasons(events).count("AwaitingApproval") == 1  # one Event, not one per check
    rid = st["retrainHistory"][0]["id"]
    assert f"approve-retrain={rid}" in cond(kube, "Retraining")["message"]
    kube.md["metadata"]["annotations"] = {constants.ANNOTATION_APPROVE_RETRAIN: rid}
    await tick(r, clock)
    assert kube.annotations == [("ft", rid)] and kube.md["status"]["retrainHistory"][0]["state"] == "Requested"


@sync
async def test_a_check_that_cannot_run_is_monitor_stale_and_keeps_the_last_figures() -> None:
    down = mon.CheckAnswer(error=mon.ERROR_REGISTRY, message="MLflow at http://mlflow: connection refused")
    r, kube, _, events, clock = make(md_body(), HEALTHY, down)
    await tick(r, clock)
    last = kube.md["status"]["lastMonitor"]
    r.settings = OperatorSettings(max_poll_seconds=15)
    assert await r.monitor("ns", "md") == 15  # retried with backoff, sooner than the interval
    assert cond(kube, "MonitorStale")["status"] == "True"
    assert cond(kube, "MonitorStale")["reason"] == "RegistryUnavailable"
    assert kube.md["status"]["lastMonitor"] == last and cond(kube, "DriftDetected")["status"] == "False"
    assert "MonitorStale" in reasons(events)


@sync
async def test_a_restart_keeps_the_schedule_and_no_reference_means_no_check() -> None:
    r, _, check, _, clock = make(md_body(), HEALTHY)
    await r.monitor("ns", "md")
    clock.now += timedelta(seconds=20)
    assert await r.monitor("ns", "md") == pytest.approx(INTERVAL - 20)  # not due: no check
    assert len(check.requests) == 1
    body = md_body()
    body["spec"]["monitoring"]["reference"] = {"source": "HeldOut"}
    body["status"] = {}
    r2, _, check2, _, _ = make(body)
    assert await r2.monitor("ns", "md") == OperatorSettings().max_poll_seconds and check2.requests == []


@sync
async def test_the_pool_runs_at_most_k_checks_at_once_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    running, peak, lock = [0], [0], threading.Lock()

    def slow(request: dict[str, Any]) -> dict[str, Any]:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.2)
        with lock:
            running[0] -= 1
        return {"samples": request["n"], "quality": 0.5}

    monkeypatch.setattr(mon, "load_function", lambda path: slow)
    pool = mon.ThreadedMonitor("x:y", max_checks=2)
    ticks = 0

    async def heartbeat() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    beat = asyncio.create_task(heartbeat())
    answers = await asyncio.gather(*(pool.check({"n": n}) for n in range(5)))
    beat.cancel()
    pool.close()
    assert [a.samples for a in answers] == [0, 1, 2, 3, 4] and peak[0] == 2
    assert ticks > 30  # the loop kept running during ~0.6 s of checks


@sync
async def test_a_missing_monitor_extra_is_a_failed_check_not_a_crash() -> None:
    pool = mon.ThreadedMonitor("tuneloop_no_such_module:run_check", max_checks=1)
    answer = await pool.check({})
    pool.close()
    assert answer.error == mon.ERROR_CHECK and "monitor extra" in answer.message


@sync
async def test_a_status_written_by_the_serving_daemon_meanwhile_is_kept_and_effects_happen_once() -> None:
    r, kube, _, events, clock = make(md_body(), DRIFTED, DRIFTED)
    await tick(r, clock)

    def serving_writes(md: dict[str, Any]) -> None:
        md["status"] = {**md["status"], "servedVersion": "7", "phase": "Serving"}

    kube.other_writer = serving_writes
    await tick(r, clock)
    st = kube.md["status"]
    assert st["servedVersion"] == "7" and st["phase"] == "Serving"  # not undone by our write
    assert st["retrainInFlight"] and len(st["monitorHistory"]) == 2 and len(st["retrainHistory"]) == 1
    assert reasons(events).count("RetrainRequested") == 1 and len(kube.annotations) == 1
    counted = r.metrics.registry.get_sample_value(
        "tuneloop_retrains_total", {"namespace": "ns", "deployment": "md", "outcome": "requested",
                                    "reason": "QualityBreach"})
    assert counted == 1


@sync
async def test_an_approval_is_acted_on_at_once_not_at_the_next_check() -> None:
    r, kube, check, _, clock = make(md_body(approval="Manual"), DRIFTED, DRIFTED)
    await tick(r, clock)
    await r.monitor("ns", "md")
    [pending] = kube.md["status"]["retrainHistory"]
    assert pending["state"] == "PendingApproval" and kube.annotations == []
    clock.now += timedelta(seconds=5)
    assert await r.monitor("ns", "md") == pytest.approx(INTERVAL - 5)  # not due, nothing approved: nothing
    assert kube.annotations == []
    kube.md["metadata"]["annotations"] = {constants.ANNOTATION_APPROVE_RETRAIN: "retrain-9-other"}
    await r.monitor("ns", "md")
    assert kube.annotations == []  # another id approves nothing
    kube.md["metadata"]["annotations"] = {constants.ANNOTATION_APPROVE_RETRAIN: pending["id"]}
    assert await r.monitor("ns", "md") == pytest.approx(INTERVAL - 5)
    st = kube.md["status"]
    assert kube.annotations == [("ft", pending["id"])] and st["retrainInFlight"] == pending["id"]
    assert st["retrainHistory"][0]["state"] == "Requested" and len(check.requests) == 2  # no extra check
    reason = kube.ft["metadata"]["annotations"][constants.ANNOTATION_RETRAIN_REASON] if kube.ft else ""
    assert "drift share 0.80 (prompt_length)" in reason


@sync
async def test_the_breaching_windows_feedback_goes_with_the_request_as_added_data() -> None:
    r, kube, check, _, clock = make(md_body(), DRIFTED, DRIFTED_LABELLED)
    await tick(r, clock)
    await tick(r, clock)
    st = kube.md["status"]
    rid = st["retrainInFlight"]
    assert st["lastMonitor"]["feedback"] == FEEDBACK
    assert st["retrainHistory"][0]["addedData"] == FEEDBACK
    assert kube.ft is not None
    assert kube.ft["metadata"]["annotations"][constants.ANNOTATION_RETRAIN_DATA] == f"{rid}: {FEEDBACK['uri']}"
    assert kube.annotations == [("ft", rid)]  # the request last, after reason and data (the fake checks order)
    assert check.requests[0]["feedback_uri"] == f"file://{OperatorSettings().storage_root}/traffic/ns/feedback-sets"
    quality = md_body()["spec"]["monitoring"]["quality"]  # feedback only from a window that could breach
    assert check.requests[0]["feedback_below"] == pytest.approx(quality["minimum"] + 0.02)  # default recoveryMargin


@sync
async def test_without_retraining_no_feedback_set_is_written() -> None:
    r, _, check, _, clock = make(md_body(retrain=False), DRIFTED)
    await tick(r, clock)
    assert check.requests[0]["feedback_uri"] is None


@sync
async def test_a_retrain_the_gate_kept_challenger_is_not_promoted_and_its_gpu_hours_counted() -> None:
    r, kube, _, events, clock = make(md_body(), DRIFTED, DRIFTED, DRIFTED)
    await tick(r, clock)
    await tick(r, clock)
    rid = kube.md["status"]["retrainInFlight"]
    assert kube.ft is not None
    kube.ft["spec"] = {"resources": {"gpus": 2, "workers": 3}}
    kube.ft["status"] = {
        "phase": "Succeeded", "handledRetrainRequest": rid, "model": {"name": "m", "version": "3"},
        "run": {"number": 2, "generation": 1, "trigger": f"retrain:{rid}"},
        "promotion": {"promoted": False, "metric": "field_f1", "message": "field_f1 0.5 vs champion v1 0.9"},
        "attempts": [  # run 1 is not the retrain's; run 2 had a failed and a good attempt: 0.5 h + 1 h, 6 GPUs
            {"run": 1, "attempt": 1, "id": "a", "outcome": "Succeeded",
             "startTime": "2026-11-23T08:00:00Z", "endTime": "2026-11-23T09:00:00Z"},
            {"run": 2, "attempt": 1, "id": "b", "outcome": "Failed",
             "startTime": "2026-11-23T10:00:00Z", "endTime": "2026-11-23T10:30:00Z"},
            {"run": 2, "attempt": 2, "id": "c", "outcome": "Succeeded",
             "startTime": "2026-11-23T10:30:00Z", "endTime": "2026-11-23T11:30:00Z"}]}
    await tick(r, clock)
    record = kube.md["status"]["retrainHistory"][0]
    assert record["state"] == "NotPromoted" and record["version"] == "3"
    assert record["gpuHours"] == pytest.approx(1.5 * 6)
    done = [e for e in events.events if e[1] == "RetrainFinished"]
    assert done and done[-1][0] == "Warning" and "champion keeps serving" in done[-1][2]
    assert "field_f1 0.5 vs champion v1 0.9" in done[-1][2]
