"""The reconciler with fake clients behind our interfaces: whole runs, kills at every write, outages,
retries, suspend, invalid specs, waits on the world, restarts and deletion. FakeKube refuses a status
without a phase, so every story here also proves that no status write leaves `phase` empty."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.unit.operator.fakes import Crasher, FakeEvents, FakeKube, FakeRay, FakeRegistry, Killed
from tuneloop.api import constants
from tuneloop.api.finetune import DatasetSummary
from tuneloop.api.results import JobResult
from tuneloop.operator.handlers.reconciler import Clients, FineTuneReconciler
from tuneloop.operator.settings import OperatorSettings

NS, NAME, UID = "ns", "ft", "11111111-2222-3333-4444-555555555555"
# What the real job logs to MLflow when its data is bad (checked by tests/api/test_job_failure_result.py).
FAILED_RESULT_DATA_INVALID = Path(__file__).parent / "data" / "failed-result-data-invalid.json"
H = "h" * 64


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class World:
    """One FineTune, fake systems that outlive operator restarts, and a way to restart the operator."""

    def __init__(self, mode: str = "RayJob", **spec: Any) -> None:
        self.crasher = Crasher()
        self.kube = FakeKube(self.crasher)
        self.ray = FakeRay(self.crasher)
        self.registry = FakeRegistry(self.crasher)
        self.events = FakeEvents(self.crasher)
        self.clock = Clock()
        ray = {"mode": mode}
        if mode == "ExistingCluster":
            ray["address"] = "http://ray:8265"
        body_spec = {"baseModel": {"uri": "hf://m/x"}, "dataset": {"uri": "s3://b/d.jsonl"},
                     "registry": {"modelName": "m", "trackingUri": "http://mlflow"}, "ray": ray,
                     "resources": {"gpus": 1}, "backoffLimit": 1, **spec}
        self.kube.finetunes[(NS, NAME)] = {
            "apiVersion": constants.API_VERSION, "kind": "FineTune",
            "metadata": {"name": NAME, "namespace": NS, "uid": UID, "generation": 1, "annotations": {}},
            "spec": body_spec,
        }
        self.paths: set[str] = set()
        self.restart()

    def restart(self, **settings: Any) -> None:
        """A new operator process: nothing in memory, the same apiserver, Ray and MLflow."""
        values: dict[str, Any] = {"poll_seconds": 1, "max_poll_seconds": 8, "storage_root": "/nonexistent",
                                  "inconsistent_grace_seconds": 10, "deadline_grace_seconds": 5, **settings}
        self.op = FineTuneReconciler(Clients(self.kube, self.ray, self.registry, self.events),
                                     OperatorSettings(**values), clock=self.clock, path_exists=self.paths.__contains__)

    def reconcile(self) -> float | None:
        return asyncio.run(self.op.reconcile(NS, NAME))

    def wait(self, delay: float | None) -> float | None:
        """Let `delay` pass as the daemon would, then reconcile."""
        assert delay is not None, "nothing to wait for"
        self.clock.advance(delay)
        return self.reconcile()

    def warnings(self) -> list[str]:
        return [reason for kind, reason, _ in self.events.events if kind == "Warning"]

    @property
    def body(self) -> dict[str, Any]:
        return self.kube.finetunes[(NS, NAME)]

    @property
    def status(self) -> dict[str, Any]:
        return self.body.get("status") or {}

    def ready(self) -> dict[str, Any]:
        return next(c for c in self.status["conditions"] if c["type"] == "Ready")

    def update_spec(self, **changes: Any) -> None:
        self.body["spec"].update(changes)
        self.body["metadata"]["generation"] += 1

    def job_succeeds(self, metric: float = 0.8, attempt: int = 1, run: int = 1, status: str = "Succeeded",
                     reason: str | None = None) -> None:
        self.registry.results[(UID, run, attempt)] = JobResult(
            status=status, reason=reason, message="bad row 3" if reason else None, run_id=f"run-{attempt}",
            model_uri=f"runs:/run-{attempt}/model", metrics={"exact_match": metric},
            baseline_metrics={"exact_match": 0.5}, dataset=DatasetSummary(hash=H, total_rows=10, train_rows=9,
                                                                           eval_rows=1))
        if self.status["run"]["mode"] == "RayJob":
            self.kube.set_rayjob_status(jobDeploymentStatus="Complete", jobStatus="SUCCEEDED")
        else:
            self.ray.jobs[self.status["run"]["submissionId"]]["status"] = "SUCCEEDED"


def run_to_end(world: World, limit: int = 30) -> int:
    """Reconcile to a terminal phase, restarting the operator whenever it is killed; returns the kills."""
    kills = 0
    for _ in range(limit):
        try:
            world.reconcile()
        except Killed:
            kills += 1
            world.crasher.after = None
            world.restart()
            continue
        if world.status.get("phase") in ("Succeeded", "Failed"):
            return kills
        if world.status.get("phase") in ("Launching", "Running") and world.status["run"]["attempt"] >= 1 \
                and (UID, 1, world.status["run"]["attempt"]) not in world.registry.results:
            world.job_succeeds(attempt=world.status["run"]["attempt"])
    raise AssertionError(f"never finished: {world.status}")


@pytest.mark.parametrize("mode", ["RayJob", "ExistingCluster"])
def test_whole_run(mode: str) -> None:
    w = World(mode)
    assert w.reconcile() == 1  # poll while the job runs
    assert w.status["phase"] == "Launching" and w.status["run"]["attempt"] == 1
    w.job_succeeds()
    assert w.reconcile() == 600  # only the slow re-check of the alias is left
    st = w.status
    assert st["phase"] == "Succeeded" and st["model"]["version"] == "1" and st["model"]["alias"] == "champion"
    assert w.registry.aliases == {"champion": "1"}
    assert w.ready()["reason"] == "Promoted" and st["observedGeneration"] == 1
    tags = w.registry.versions[0].tags
    assert tags[constants.TAG_DATASET_HASH] == H and tags[constants.TAG_EVAL_METRIC_PREFIX + "exact_match"] == "0.8"
    assert [e[1] for e in w.events.events] == ["Launching", "Registering", "Promoted"]
    assert st["cost"]["gpuHours"] == 0.0  # the fake clock did not move


# Mutating calls of a whole run without a kill. RayJob: Event + status (Launching), ConfigMap + RayJob,
# Event + status (Registering), version, status (version), status (decision), alias, Event + status
# (Promoted). ExistingCluster: one submission instead of ConfigMap + RayJob.
MUTATIONS = {"RayJob": 12, "ExistingCluster": 11}
KILL_POINTS = [(mode, n) for mode, count in MUTATIONS.items() for n in range(count)]


@pytest.mark.parametrize("mode", list(MUTATIONS))
def test_kill_points_cover_every_mutation(mode: str) -> None:
    w = World(mode)
    assert run_to_end(w) == 0 and w.crasher.count == MUTATIONS[mode]


@pytest.mark.parametrize(("mode", "kill_after"), KILL_POINTS, ids=[f"{m}-{n}" for m, n in KILL_POINTS])
def test_killed_at_any_write_still_one_job_one_version_every_event(mode: str, kill_after: int) -> None:
    w = World(mode)
    w.crasher.after = kill_after
    assert run_to_end(w) == 1, "the operator was never killed: the kill point is past the run's last write"
    assert w.status["phase"] == "Succeeded", w.status
    launches = w.kube.rayjob_creates if mode == "RayJob" else w.ray.submits
    assert launches == 1
    assert len(w.registry.versions) == 1 and w.registry.aliases == {"champion": "1"}
    assert [a["outcome"] for a in w.status["attempts"]] == ["Succeeded"]
    assert len(w.status["aliasHistory"]) == 1
    # Every transition's Event is posted, whichever write the kill fell before (at least once).
    reasons = [e[1] for e in w.events.events]
    assert sorted(set(reasons)) == ["Launching", "Promoted", "Registering"], reasons
    assert len(reasons) <= 4  # at most the one Event of the interrupted step again


def test_failed_attempts_are_retried_up_to_backoff_limit() -> None:
    w = World()
    w.reconcile()
    w.kube.set_rayjob_status(jobDeploymentStatus="Complete", jobStatus="FAILED", reason="AppFailed",
                             message="Traceback: boom")
    w.reconcile()
    assert w.status["run"]["attempt"] == 2 and w.ready()["reason"] == "Retrying"
    assert len(w.kube.rayjobs) == 2
    w.kube.set_rayjob_status(jobDeploymentStatus="Complete", jobStatus="FAILED", reason="AppFailed",
                             message="Traceback: boom")
    w.reconcile()
    st = w.status
    assert st["phase"] == "Failed" and w.ready()["reason"] == "JobFailed"
    assert "backoffLimit 1 reached after 2 failed" in w.ready()["message"] and "boom" in w.ready()["message"]
    assert [a["outcome"] for a in st["attempts"]] == ["Failed", "Failed"]
    assert w.reconcile() is None and len(w.kube.rayjobs) == 2  # terminal: nothing more


def test_rayjob_validation_failed_is_terminal_without_retry() -> None:
    w = World(backoffLimit=3)
    w.reconcile()
    w.kube.set_rayjob_status(jobDeploymentStatus="ValidationFailed", reason="ValidationFailed",
                             message="failed to unmarshal RuntimeEnvYAML")
    assert w.reconcile() is None
    assert w.status["phase"] == "Failed" and w.ready()["reason"] == "RayJobValidationFailed"
    assert "RuntimeEnvYAML" in w.ready()["message"] and w.kube.rayjob_creates == 1
    assert [a["outcome"] for a in w.status["attempts"]] == ["Failed"]
    assert w.warnings() == ["RayJobValidationFailed"]


@pytest.mark.parametrize("phase_before", ["Launching", "Running"])
def test_unknown_rayjob_state_is_a_visible_condition(phase_before: str) -> None:
    w = World()
    w.reconcile()
    if phase_before == "Running":
        w.kube.set_rayjob_status(jobDeploymentStatus="Running", jobStatus="RUNNING")
        w.reconcile()
    assert w.status["phase"] == phase_before
    w.kube.set_rayjob_status(jobDeploymentStatus="Hibernating", jobStatus="RUNNING")
    assert w.reconcile() == 1  # still polled
    assert w.status["phase"] == phase_before and w.ready()["reason"] == "UnknownRayJobState"
    assert "'Hibernating'" in w.ready()["message"] and w.warnings() == ["UnknownRayJobState"]
    w.kube.set_rayjob_status(jobDeploymentStatus="Running", jobStatus="RUNNING")
    w.reconcile()
    assert w.status["phase"] == "Running" and w.ready()["reason"] == "Training"


def test_rayjob_stuck_without_rayjobinfo_fails_after_the_grace_from_its_first_sighting() -> None:
    """kuberay #3553 from a KubeRay that never reports rayJobInfo: the grace (10 s here) is timed from
    when tuneloop first saw the state, kept in status so an operator restart does not start it again."""
    w = World()
    w.reconcile()
    w.kube.set_rayjob_status(jobDeploymentStatus="Running", jobStatus="RUNNING")
    w.reconcile()
    assert "inconsistentSince" not in w.status["run"]
    w.clock.advance(5)
    first_seen = w.clock.now
    w.kube.set_rayjob_status(jobDeploymentStatus="Running", jobStatus="FAILED")
    w.reconcile()
    assert w.status["phase"] == "Running" and w.status["run"]["attempt"] == 1
    assert datetime.fromisoformat(w.status["run"]["inconsistentSince"]) == first_seen
    w.clock.advance(8)
    w.restart()
    w.reconcile()
    assert w.status["run"]["attempt"] == 1
    assert datetime.fromisoformat(w.status["run"]["inconsistentSince"]) == first_seen
    w.clock.advance(3)
    w.reconcile()
    assert w.status["run"]["attempt"] == 2 and w.ready()["reason"] == "Retrying"
    assert w.status["attempts"][0]["outcome"] == "Failed" and "kuberay #3553" in w.status["attempts"][0]["reason"]
    assert "inconsistentSince" not in w.status["run"]  # the new attempt starts clean
    assert [key[1] for key in w.kube.rayjobs] == [w.status["run"]["rayJobName"]]  # the stuck one was deleted


def test_rayjob_data_invalid_from_the_jobs_own_document_is_not_retried() -> None:
    """RayJob mode: the only failure report is the job's document on MLflow; KubeRay says AppFailed."""
    w = World(backoffLimit=3)
    w.reconcile()
    document = json.loads(FAILED_RESULT_DATA_INVALID.read_text())
    w.registry.results[(UID, 1, 1)] = JobResult.model_validate(document)
    w.kube.set_rayjob_status(jobDeploymentStatus="Complete", jobStatus="FAILED", reason="AppFailed",
                             message="Job entrypoint command failed with exit code 23")
    assert w.reconcile() is None
    assert w.status["phase"] == "Failed" and w.ready()["reason"] == "DataInvalid"
    assert "line 2: field 'completion' is missing" in w.ready()["message"]
    assert w.kube.rayjob_creates == 1 and [a["outcome"] for a in w.status["attempts"]] == ["Failed"]


def test_data_invalid_failure_is_not_retried() -> None:
    w = World("ExistingCluster")
    w.reconcile()
    w.registry.results[(UID, 1, 1)] = JobResult(status="Failed", reason="DataInvalid",
                                                message="data.jsonl line 3: missing field completion")
    w.ray.jobs[w.status["run"]["submissionId"]]["status"] = "FAILED"
    w.reconcile()
    assert w.status["phase"] == "Failed" and w.ready()["reason"] == "DataInvalid"
    assert "line 3" in w.ready()["message"] and w.ray.submits == 1


def test_deadline_stops_the_job() -> None:
    w = World("ExistingCluster", activeDeadlineSeconds=60)
    w.reconcile()
    w.ray.jobs[w.status["run"]["submissionId"]]["status"] = "RUNNING"
    w.reconcile()
    assert w.status["phase"] == "Running"
    w.clock.advance(61)
    w.reconcile()
    assert w.status["phase"] == "Failed" and w.ready()["reason"] == "DeadlineExceeded"
    assert w.ray.stopped == [w.status["run"]["submissionId"]]
    assert w.status["attempts"][0]["outcome"] == "DeadlineExceeded"
    assert w.status["cost"]["gpuHours"] == pytest.approx(61 / 3600, abs=1e-6)


def test_registry_outage_is_waited_out_then_registers_once() -> None:
    w = World()
    w.reconcile()
    w.job_succeeds()
    w.registry.down = True
    delays = [w.reconcile()]
    for _ in range(5):
        delays.append(w.wait(delays[-1]))
    assert delays == [1, 1, 2, 4, 8, 8]  # exponential backoff, capped at max_poll_seconds
    assert w.status["phase"] == "Registering" and w.ready()["reason"] == "RegistryUnavailable"
    # checks at 0, 1, 2, 4, 8, 16 s: a Warning when the wait began, then one per 8 s ceiling (8, 16)
    assert w.warnings().count("RegistryUnavailable") == 3
    w.registry.down = False
    w.reconcile()
    assert w.status["phase"] == "Succeeded" and len(w.registry.versions) == 1


def test_ray_outage_at_launch_is_a_pending_wait() -> None:
    w = World("ExistingCluster")
    w.ray.down = True
    assert w.reconcile() == 1
    assert w.status["phase"] == "Pending" and "run" not in w.status
    assert w.ready()["reason"] == "RayUnavailable" and "ray is down" in w.ready()["message"]
    assert w.status["waiting"]["reason"] == "RayUnavailable"
    w.ray.down = False
    w.wait(1)
    assert w.status["phase"] == "Launching" and w.ray.submits == 1 and "waiting" not in w.status


def test_suspend_stops_and_resume_launches_next_attempt() -> None:
    w = World()
    w.reconcile()
    w.update_spec(suspend=True)
    w.reconcile()
    assert w.status["phase"] == "Suspended" and w.kube.rayjobs == {}
    assert w.status["run"]["number"] == 1  # suspend is not a new run
    assert [a["outcome"] for a in w.status["attempts"]] == ["Stopped"]
    assert any(c["type"] == "Suspended" and c["status"] == "True" for c in w.status["conditions"])
    w.update_spec(suspend=False)
    w.reconcile()
    assert w.status["phase"] == "Launching" and w.status["run"]["attempt"] == 2
    w.job_succeeds(attempt=2)
    w.reconcile()
    assert w.status["phase"] == "Succeeded"  # a stopped attempt does not count toward backoffLimit


def test_spec_change_starts_a_new_run_and_stops_the_old_job() -> None:
    w = World()
    run_to_end(w)
    w.update_spec(training={"epochs": 5})
    w.reconcile()
    assert w.status["run"]["number"] == 2 and w.status["phase"] == "Launching" and "model" not in w.status
    w.update_spec(training={"epochs": 6})
    w.reconcile()
    assert w.status["run"]["number"] == 3 and w.status["attempts"][-1]["outcome"] == "Stopped"


def test_worse_candidate_stays_challenger() -> None:
    w = World()
    run_to_end(w)
    w.update_spec(training={"epochs": 5})
    w.reconcile()
    w.registry.results[(UID, 2, 1)] = JobResult(
        status="Succeeded", run_id="r2", model_uri="runs:/r2/model", metrics={"exact_match": 0.7},
        baseline_metrics={"exact_match": 0.5}, dataset=DatasetSummary(hash=H, total_rows=10, train_rows=9, eval_rows=1))
    w.kube.set_rayjob_status(jobDeploymentStatus="Complete", jobStatus="SUCCEEDED")
    w.reconcile()
    st = w.status
    assert st["model"]["alias"] == "challenger" and st["model"]["version"] == "2"
    assert w.registry.aliases == {"champion": "1", "challenger": "2"}
    assert w.ready()["reason"] == "NotPromoted" and "missed by 0.1" in w.ready()["message"]


def test_invalid_spec_is_reported_once_without_retry_storm() -> None:
    w = World("ExistingCluster")
    w.body["spec"]["ray"] = {"mode": "ExistingCluster"}
    for _ in range(3):
        assert w.reconcile() is None
    w.restart()  # checked once more after a restart: still invalid, so nothing is written or posted
    assert w.reconcile() is None
    assert w.status["phase"] == "Failed" and w.ready()["reason"] == "InvalidSpec"
    assert "spec.ray.address" in w.ready()["message"]
    assert w.kube.status_writes == 1 and len(w.events.events) == 1 and w.events.events[0][0] == "Warning"
    assert w.ray.submits == 0
    w.update_spec(ray={"mode": "ExistingCluster", "address": "http://ray:8265"})
    w.reconcile()
    assert w.status["phase"] == "Launching" and w.ray.submits == 1


def test_missing_result_fails_after_grace() -> None:
    w = World()
    w.reconcile()
    w.kube.set_rayjob_status(jobDeploymentStatus="Complete", jobStatus="SUCCEEDED")
    w.reconcile()
    assert w.status["phase"] == "Registering" and w.ready()["reason"] == "ResultMissing"
    w.clock.advance(301)
    w.reconcile()
    assert w.status["phase"] == "Failed" and w.ready()["reason"] == "ResultMissing"


def test_cleanup_deletes_children_and_gives_up_on_unreachable_ray() -> None:
    w = World("ExistingCluster")
    w.reconcile()
    w.ray.down = True
    w.body["metadata"]["deletionTimestamp"] = w.clock.now.isoformat()
    from tuneloop.operator.clients.errors import Unavailable

    with pytest.raises(Unavailable):
        asyncio.run(w.op.cleanup(w.body))
    w.clock.advance(61)
    asyncio.run(w.op.cleanup(w.body))  # bounded: gives up with a Warning
    assert w.events.events[-1][:2] == ("Warning", "CleanupAbandoned")
    w2 = World()
    w2.reconcile()
    w2.body["metadata"]["deletionTimestamp"] = w2.clock.now.isoformat()
    asyncio.run(w2.op.cleanup(w2.body))
    assert w2.kube.rayjobs == {} and w2.kube.configmaps == {}


def _lose_first_submission(w: World) -> None:
    w.ray.lose_responses = True
    w.reconcile()
    assert w.status["phase"] == "Pending" and "run" not in w.status


def _lose_a_retry(w: World) -> None:
    w.reconcile()
    w.ray.jobs[w.status["run"]["submissionId"]]["status"] = "FAILED"
    w.ray.lose_responses = True
    w.reconcile()
    assert w.status["run"]["attempt"] == 1 and not w.status.get("attempts")  # the retry was not recorded


def _lose_a_new_runs_launch(w: World) -> None:
    run_to_end(w)
    w.update_spec(training={"epochs": 5})
    w.ray.lose_responses = True
    w.reconcile()
    assert w.status["phase"] == "Pending" and w.status["run"]["number"] == 1  # run 2 was not recorded


@pytest.mark.parametrize(("story", "lost"), [(_lose_first_submission, (1, 1)), (_lose_a_retry, (1, 2)),
                                             (_lose_a_new_runs_launch, (2, 1))],
                         ids=["first submission", "retry", "new run after a spec change"])
def test_deletion_stops_a_submission_whose_response_was_lost(story: Any, lost: tuple[int, int]) -> None:
    """ExistingCluster: the submission reached Ray, its response did not reach the operator, so status
    never recorded it; deletion finds it by its predictable submission id and stops it."""
    w = World("ExistingCluster")
    story(w)
    lost_id = f"tuneloop-{UID}-r{lost[0]}-a{lost[1]}"
    assert w.ray.jobs[lost_id]["status"] == "PENDING"
    w.ray.lose_responses = False
    w.body["metadata"]["deletionTimestamp"] = w.clock.now.isoformat()
    asyncio.run(w.op.cleanup(w.body))
    assert w.ray.jobs[lost_id]["status"] == "STOPPED"
    assert not any(kind == "Warning" and reason == "CleanupAbandoned" for kind, reason, _ in w.events.events)


def test_deleting_a_finished_finetune_asks_nothing_of_ray() -> None:
    w = World("ExistingCluster")
    run_to_end(w)
    w.ray.down = True  # a Ray cluster gone since: deletion must not wait on it
    w.body["metadata"]["deletionTimestamp"] = w.clock.now.isoformat()
    asyncio.run(w.op.cleanup(w.body))
    assert w.ray.stopped == [] and w.events.events[-1][1] != "CleanupAbandoned"


def test_first_look_with_a_given_body_saves_the_get() -> None:
    w = World()
    gets: list[str] = []
    get = w.kube.get_finetune

    async def counting_get(namespace: str, name: str) -> dict[str, Any] | None:
        gets.append(name)
        return await get(namespace, name)

    w.kube.get_finetune = counting_get  # type: ignore[method-assign]
    assert asyncio.run(w.op.reconcile(NS, NAME, dict(w.body))) == 1
    assert gets == [] and w.status["phase"] == "Launching" and w.kube.rayjob_creates == 1
    assert w.reconcile() == 1 and gets == [NAME]  # later looks read the object afresh
    assert w.kube.rayjob_creates == 1


# --- waits on the world ---------------------------------------------------------------------------


@pytest.mark.parametrize(("field", "path", "reason"), [
    ("dataset", "/data/x.jsonl", "DataNotFound"),
    ("baseModel", "/models/tiny", "BaseModelNotFound"),
])
def test_missing_path_is_waited_on_then_the_run_proceeds_without_a_spec_change(field: str, path: str,
                                                                               reason: str) -> None:
    w = World("ExistingCluster", baseModel={"uri": "file:///models/tiny"}, dataset={"uri": "file:///data/x.jsonl"})
    w.body["spec"]["ray"]["address"] = "http://127.0.0.1:8265"  # loopback: the operator sees the job's files
    w.paths.update({"/models/tiny", "/data/x.jsonl"} - {path})
    delays = [w.reconcile()]
    for _ in range(9):
        delays.append(w.wait(delays[-1]))
    assert delays == [1, 1, 2, 4, 8, 8, 8, 8, 8, 8]
    assert w.status["phase"] == "Pending" and w.ready()["reason"] == reason and "run" not in w.status
    assert f"spec.{field}.uri" in w.ready()["message"] and path in w.ready()["message"]
    assert w.status["waiting"]["reason"] == reason and w.ray.submits == 0
    # 10 checks at 0, 1, 2, 4, 8, 16 … 48 s: a Warning at the start, then one per 8 s ceiling
    assert w.warnings() == [reason] * (1 + 48 // 8) and len(w.events.events) == 7
    assert w.kube.status_writes == 7  # a write only to record a Warning's time, not one per check

    w.paths.add(path)
    w.wait(delays[-1])
    assert w.status["phase"] == "Launching" and "waiting" not in w.status
    assert w.body["metadata"]["generation"] == 1 and w.status["run"]["generation"] == 1
    w.job_succeeds()
    w.reconcile()
    assert w.status["phase"] == "Succeeded" and w.ray.submits == 1
    assert not any(c["type"] == "Failed" for c in w.status["conditions"])


def test_operator_without_tracking_uri_waits_then_a_restart_with_one_moves_on() -> None:
    w = World(registry={"modelName": "m"})
    w.reconcile()
    assert w.status["phase"] == "Pending" and w.ready()["reason"] == "RegistryNotConfigured"
    assert "TUNELOOP_MLFLOW_TRACKING_URI" in w.ready()["message"] and w.kube.rayjobs == {}
    w.restart(mlflow_tracking_uri="http://mlflow")
    w.reconcile()
    assert w.status["phase"] == "Launching" and w.kube.rayjob_creates == 1


@pytest.mark.parametrize("old_reason", ["InvalidSpec", "DataInvalid"])
def test_failed_by_the_old_rules_is_rechecked_on_start(old_reason: str) -> None:
    """An older operator (or this one with other settings) called a world problem InvalidSpec (or
    DataInvalid) and stopped for good; the first look after a start checks again."""
    w = World(registry={"modelName": "m"})
    message = "spec.registry.trackingUri: no MLflow tracking URI"
    w.body["status"] = {"phase": "Failed", "observedGeneration": 1, "conditions": [
        {"type": t, "status": s, "reason": old_reason, "message": message, "observedGeneration": 1,
         "lastTransitionTime": "2025-12-31T00:00:00Z"} for t, s in (("Ready", "False"), ("Failed", "True"))]}
    w.restart(mlflow_tracking_uri="http://mlflow")
    w.reconcile()
    assert w.status["phase"] == "Launching" and w.kube.rayjob_creates == 1
    assert not any(c["type"] == "Failed" for c in w.status["conditions"])


def test_spec_problem_and_world_problem_together_are_terminal() -> None:
    w = World("ExistingCluster", dataset={"uri": "file:///data/x.jsonl"},
              registry={"modelName": "m", "trackingUriSecretRef": {"name": "s", "key": "k"}})
    w.body["spec"]["ray"]["address"] = "http://127.0.0.1:8265"
    assert w.reconcile() is None
    assert w.status["phase"] == "Failed" and w.ready()["reason"] == "InvalidSpec" and "waiting" not in w.status
    assert "spec.dataset.uri" in w.ready()["message"] and "trackingUriSecretRef" in w.ready()["message"]


@pytest.mark.parametrize(("job_reason", "reason"), [("DataNotFound", "DataNotFound"),
                                                    ("ModelNotFound", "BaseModelNotFound"),
                                                    ("DataEmpty", "DataEmpty")])
def test_permanent_job_errors_are_terminal_under_one_name(job_reason: str, reason: str) -> None:
    w = World("ExistingCluster")
    w.reconcile()
    w.registry.results[(UID, 1, 1)] = JobResult(status="Failed", reason=job_reason, message="nothing at s3://b/d")
    w.ray.jobs[w.status["run"]["submissionId"]]["status"] = "FAILED"
    w.reconcile()
    assert w.status["phase"] == "Failed" and w.ready()["reason"] == reason and w.ray.submits == 1
    w.restart()
    assert w.reconcile() is None and w.ray.submits == 1  # a run of this spec failed: not rechecked


def test_a_spec_this_operator_cannot_parse_is_failed_with_a_phase() -> None:
    w = World()
    w.body["spec"]["method"] = "rlhf"
    assert w.reconcile() is None
    assert w.status["phase"] == "Failed" and w.ready()["reason"] == "InvalidSpec"
    assert "does not match this operator's model" in w.ready()["message"]
