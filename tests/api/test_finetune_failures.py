"""Failure stories of the FineTune controller against the real kube-apiserver + etcd and a real MLflow
server: failed attempts and retries, deadlines, KubeRay's inconsistent states (kuberay #2314, #3553),
suspend, deletion, operator restarts at every step, an MLflow outage during registration and a spec
the schema cannot refuse.

The test acts as KubeRay (writes RayJob status), as the training job (writes the MLflow run and its
result artifact) and, for ExistingCluster mode, as the Ray job API (`harness.RayJobApiStub`, a few
lines of HTTP: a real Ray head costs more start-up than this whole module may take on two cores). The
operator runs as a child process (`harness.OperatorProcess`), so a restart is a real SIGKILL. One
operator serves every test namespace of the module (`<prefix>-*`); the restart story has its own
operator and namespace. MLflow is the session's server: the outage story stops it and starts it again
on its port and store.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from tests.api.conftest import OPERATOR_ENV
from tests.api.harness import (
    OperatorProcess,
    cond,
    create_namespace,
    experiment,
    holds_for_looks,
    job_tags,
    launched,
    operator_process_env,
    phase,
    wait_status,
    wait_warning,
    warning_reasons,
)
from tests.api.kube import Cluster, act_as_job, finetune, wait_for
from tuneloop.api import constants
from tuneloop.operator.logic import naming

pytestmark = [pytest.mark.apiserver, pytest.mark.slow]

INCONSISTENT_GRACE = float(OPERATOR_ENV["TUNELOOP_INCONSISTENT_GRACE_SECONDS"])
DEADLINE_GRACE = float(OPERATOR_ENV["TUNELOOP_DEADLINE_GRACE_SECONDS"])
DELETE_TIMEOUT = float(OPERATOR_ENV["TUNELOOP_DELETE_TIMEOUT_SECONDS"])


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ns_prefix() -> str:
    return f"tlf{uuid.uuid4().hex[:6]}"


# --- helpers -------------------------------------------------------------------------------------


def rayjob_names(cluster: Cluster, name: str | None = None) -> list[str]:
    return sorted(r["metadata"]["name"] for r in cluster.rayjobs()
                  if name is None or r["metadata"].get("labels", {}).get(constants.LABEL_FINETUNE) == name)


def versions(uri: str, model: str) -> list[Any]:
    return list(MlflowClient(uri).search_model_versions(f"name = '{model}'"))


def versions_of_run(uri: str, model: str, uid: str, run: int) -> list[Any]:
    return list(MlflowClient(uri).search_model_versions(
        f"name = '{model}' and tag.`{constants.TAG_FINETUNE_UID}` = '{uid}' "
        f"and tag.`{constants.TAG_RUN_NUMBER}` = '{run}'"))


def rj(ft: dict[str, Any], attempt: int, run: int = 1) -> str:
    """The deterministic RayJob name of an attempt."""
    return naming.rayjob_name(ft["metadata"]["name"], ft["metadata"]["uid"], run, attempt)


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def running(cluster: Cluster, name: str, job: str) -> dict[str, Any]:
    """Act as KubeRay: the cluster is up and the Ray job runs."""
    cluster.set_rayjob_status(job, jobStatus="RUNNING", jobDeploymentStatus="Running",
                              rayClusterName=f"{job}-raycluster", dashboardURL="http://dash:8265")
    return wait_status(cluster, name, phase("Running"), "Running")


# --- 1. app failure, retry, Failed ----------------------------------------------------------------


def test_app_failure_is_retried_up_to_backoff_limit_then_fails_with_rays_message(cluster, mlflow_server,
                                                                                 shared_operator):
    uri, model = mlflow_server.tracking_uri, f"m-{cluster.ns}-app"
    ft = cluster.create(finetune("app", uri, model=model, backoffLimit=1))
    a1, a2, a3 = rj(ft, 1), rj(ft, 2), rj(ft, 3)
    wait_status(cluster, "app", launched(1), "attempt 1 launched")
    assert rayjob_names(cluster) == [a1]

    cluster.set_rayjob_status(a1, jobDeploymentStatus="Failed", jobStatus="FAILED", reason="AppFailed",
                              message="RuntimeError: CUDA out of memory (attempt one)")
    st = wait_status(cluster, "app", launched(2), "attempt 2 after attempt 1 failed")
    assert st["run"]["rayJobName"] == a2 and a2.endswith("-r1a2")
    assert cluster.rayjob(a2)["spec"]["jobId"] == naming.submission_id(ft["metadata"]["uid"], 1, 2)
    assert [(a["attempt"], a["outcome"]) for a in st["attempts"]] == [(1, "Failed")]
    assert "CUDA out of memory (attempt one)" in st["attempts"][0]["reason"]
    assert cond(st, "Ready")["reason"] == "Retrying", cond(st, "Ready")
    assert sorted([a1, a2]) == rayjob_names(cluster)

    cluster.set_rayjob_status(a2, jobDeploymentStatus="Failed", jobStatus="FAILED", reason="AppFailed",
                              message="ValueError: loss is NaN (attempt two)")
    st = wait_status(cluster, "app", phase("Failed"), "Failed after attempt 2")
    ready = cond(st, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "JobFailed")
    assert "loss is NaN (attempt two)" in ready["message"] and "backoffLimit 1" in ready["message"], ready
    assert cond(st, "Failed")["status"] == "True" and cond(st, "Succeeded")["status"] == "False"
    assert [(a["run"], a["attempt"], a["outcome"]) for a in st["attempts"]] == [(1, 1, "Failed"), (1, 2, "Failed")]
    assert (st["run"]["number"], st["run"]["attempt"]) == (1, 2)
    assert "model" not in st

    # backoffLimit reached: no third attempt, however often the operator looks.
    holds_for_looks(shared_operator, cluster, "app",
                    lambda: rayjob_names(cluster) == sorted([a1, a2]) and cluster.status("app")["phase"] == "Failed",
                    3, "no third RayJob, still Failed")
    assert a3 not in rayjob_names(cluster)
    assert "loss is NaN" in wait_warning(cluster, "app", "JobFailed")
    assert warning_reasons(cluster, "app").count("Retrying") == 1
    assert warning_reasons(cluster, "app").count("JobFailed") == 1
    assert versions(uri, model) == []


# --- 2. deadline -----------------------------------------------------------------------------------


def test_deadline_fails_the_attempt_and_deletes_the_rayjob(cluster, mlflow_server, shared_operator):
    uri = mlflow_server.tracking_uri
    ft = cluster.create(finetune("late", uri, model=f"m-{cluster.ns}", activeDeadlineSeconds=2, backoffLimit=1))
    a1 = rj(ft, 1)
    wait_status(cluster, "late", launched(1), "attempt 1 launched")
    assert cluster.rayjob(a1)["spec"]["activeDeadlineSeconds"] == 2  # KubeRay enforces it first
    running(cluster, "late", a1)

    # KubeRay "missed" the deadline: tuneloop fails the attempt after deadline + grace and stops it.
    st = wait_status(cluster, "late", phase("Failed"), "Failed by the deadline", timeout=20)
    ready = cond(st, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "DeadlineExceeded")
    assert "activeDeadlineSeconds (2s)" in ready["message"], ready
    [attempt] = st["attempts"]
    assert attempt["outcome"] == "DeadlineExceeded" and attempt["id"] == a1
    assert (ts(attempt["endTime"]) - ts(attempt["startTime"])).total_seconds() > 2 + DEADLINE_GRACE
    wait_for(lambda: rayjob_names(cluster, "late") == [] or None, 10, "the timed-out RayJob deleted")
    # A deadline is not retried (backoffLimit 1 notwithstanding).
    holds_for_looks(shared_operator, cluster, "late",
                    lambda: rayjob_names(cluster, "late") == [] and cluster.status("late")["phase"] == "Failed",
                    3, "no new attempt after the deadline")
    assert "activeDeadlineSeconds" in wait_warning(cluster, "late", "DeadlineExceeded")

    # KubeRay enforcing the deadline itself (#2314: deployment Failed while the Ray job still runs).
    ft2 = cluster.create(finetune("late2", uri, model=f"m-{cluster.ns}", activeDeadlineSeconds=600))
    b1 = rj(ft2, 1)
    wait_status(cluster, "late2", launched(1), "attempt 1 launched")
    running(cluster, "late2", b1)
    cluster.set_rayjob_status(b1, jobDeploymentStatus="Failed", jobStatus="RUNNING", reason="DeadlineExceeded",
                              message="The RayJob has passed the activeDeadlineSeconds.")
    st = wait_status(cluster, "late2", phase("Failed"), "Failed by KubeRay's deadline")
    assert cond(st, "Ready")["reason"] == "DeadlineExceeded"
    assert "passed the activeDeadlineSeconds" in cond(st, "Ready")["message"]
    assert [a["outcome"] for a in st["attempts"]] == ["DeadlineExceeded"]
    wait_for(lambda: rayjob_names(cluster, "late2") == [] or None, 10, "KubeRay-timed-out RayJob deleted")


# --- 3. KubeRay's inconsistent states ----------------------------------------------------------------


def test_deployment_failed_while_job_running_fails_the_attempt_and_stops_it(cluster, mlflow_server):
    """kuberay #2314: jobDeploymentStatus Failed, jobStatus RUNNING. Must not hang in Running."""
    ft = cluster.create(finetune("incon-a", mlflow_server.tracking_uri, model=f"m-{cluster.ns}", backoffLimit=0))
    a1 = rj(ft, 1)
    wait_status(cluster, "incon-a", launched(1), "attempt 1 launched")
    running(cluster, "incon-a", a1)
    cluster.set_rayjob_status(a1, jobDeploymentStatus="Failed", jobStatus="RUNNING",
                              message="submitter K8s Job failed: BackoffLimitExceeded")
    st = wait_status(cluster, "incon-a", phase("Failed"), "Failed")
    assert cond(st, "Ready")["reason"] == "JobFailed"
    assert "BackoffLimitExceeded" in cond(st, "Ready")["message"]
    assert [(a["attempt"], a["outcome"]) for a in st["attempts"]] == [(1, "Failed")]
    # the Ray job may still hold GPUs: tuneloop deletes the RayJob (and with it the cluster)
    wait_for(lambda: rayjob_names(cluster) == [] or None, 10, "the RayJob of the half-failed attempt deleted")


def test_job_failed_while_deployment_stays_running_fails_after_the_grace(cluster, mlflow_server):
    """kuberay #3553: jobStatus FAILED, jobDeploymentStatus stays Running. KubeRay sets status.endTime only
    when the deployment finishes, so the Ray job's end is only in status.rayJobInfo.endTime."""
    ft = cluster.create(finetune("incon-b", mlflow_server.tracking_uri, model=f"m-{cluster.ns}", backoffLimit=0))
    a1 = rj(ft, 1)
    wait_status(cluster, "incon-b", launched(1), "attempt 1 launched")
    running(cluster, "incon-b", a1)
    ended = datetime.now(UTC).replace(microsecond=0)
    cluster.set_rayjob_status(a1, jobDeploymentStatus="Running", jobStatus="FAILED",
                              rayJobInfo={"endTime": ended.strftime("%Y-%m-%dT%H:%M:%SZ")},
                              message="Job entrypoint failed: exit 1")
    st = wait_status(cluster, "incon-b", phase("Failed"), "Failed after the inconsistency grace", timeout=20)
    ready = cond(st, "Ready")
    assert ready["reason"] == "JobFailed" and "kuberay #3553" in ready["message"], ready
    [attempt] = st["attempts"]
    assert attempt["outcome"] == "Failed" and "exit 1" in attempt["reason"]
    assert (ts(attempt["endTime"]) - ended).total_seconds() > INCONSISTENT_GRACE  # KubeRay got its grace
    wait_for(lambda: rayjob_names(cluster) == [] or None, 10, "the stuck RayJob deleted")


def test_complete_without_succeeded_job_is_not_success(cluster, mlflow_server, shared_operator):
    """Complete alone is not success, even with a success result document lying in MLflow."""
    uri, model = mlflow_server.tracking_uri, f"m-{cluster.ns}"
    ft = cluster.create(finetune("incon-c", uri, model=model, backoffLimit=0))
    a1 = rj(ft, 1)
    wait_status(cluster, "incon-c", launched(1), "attempt 1 launched")
    running(cluster, "incon-c", a1)
    act_as_job(uri, experiment(ft), job_tags(ft), {"exact_match": 0.9}, {"exact_match": 0.1})
    cluster.set_rayjob_status(a1, jobDeploymentStatus="Complete", jobStatus="STOPPED",
                              message="Job was intentionally stopped.")
    st = wait_status(cluster, "incon-c", phase("Failed"), "Failed")
    assert cond(st, "Ready")["reason"] == "JobFailed"
    assert "intentionally stopped" in cond(st, "Ready")["message"]
    assert [a["outcome"] for a in st["attempts"]] == ["Failed"]
    assert "model" not in st and cond(st, "Succeeded")["status"] == "False"
    holds_for_looks(shared_operator, cluster, "incon-c", lambda: cluster.status("incon-c")["phase"] == "Failed", 2,
                    "still Failed, nothing registered")
    assert versions(uri, model) == []


def test_validation_failed_is_terminal_at_once_without_a_retry(cluster, mlflow_server):
    """KubeRay refused the RayJob (a bad runtimeEnvYAML): a spec problem, not a 24 h wait or a retry."""
    ft = cluster.create(finetune("refused", mlflow_server.tracking_uri, model=f"m-{cluster.ns}", backoffLimit=2))
    a1 = rj(ft, 1)
    wait_status(cluster, "refused", launched(1), "attempt 1 launched")
    cluster.set_rayjob_status(a1, jobDeploymentStatus="ValidationFailed", reason="ValidationFailed",
                              message="failed to unmarshal RuntimeEnvYAML")
    st = wait_status(cluster, "refused", phase("Failed"), "Failed at once")
    ready = cond(st, "Ready")
    assert ready["reason"] == "RayJobValidationFailed" and "RuntimeEnvYAML" in ready["message"], ready
    assert [(a["attempt"], a["outcome"]) for a in st["attempts"]] == [(1, "Failed")]
    assert rayjob_names(cluster) == [a1]
    assert "RuntimeEnvYAML" in wait_warning(cluster, "refused", "RayJobValidationFailed")


def test_unknown_rayjob_state_is_named_on_the_object(cluster, mlflow_server):
    ft = cluster.create(finetune("future", mlflow_server.tracking_uri, model=f"m-{cluster.ns}"))
    a1 = rj(ft, 1)
    wait_status(cluster, "future", launched(1), "attempt 1 launched")
    cluster.set_rayjob_status(a1, jobDeploymentStatus="Hibernating", jobStatus="RUNNING")
    st = wait_status(cluster, "future", lambda s: cond(s, "Ready").get("reason") == "UnknownRayJobState",
                     "UnknownRayJobState")
    assert "'Hibernating'" in cond(st, "Ready")["message"] and st["phase"] == "Launching"
    assert "Hibernating" in wait_warning(cluster, "future", "UnknownRayJobState")


# --- 4. suspend ------------------------------------------------------------------------------------


def test_suspend_stops_the_job_and_resume_launches_a_new_attempt_of_the_same_run(cluster, mlflow_server,
                                                                                 shared_operator):
    ft = cluster.create(finetune("pause", mlflow_server.tracking_uri, model=f"m-{cluster.ns}", backoffLimit=1))
    a1, a2, a3 = rj(ft, 1), rj(ft, 2), rj(ft, 3)
    wait_status(cluster, "pause", launched(1), "attempt 1 launched")
    running(cluster, "pause", a1)

    cluster.patch_spec("pause", {"suspend": True})
    st = wait_status(cluster, "pause", phase("Suspended"), "Suspended")
    assert cond(st, "Suspended")["status"] == "True"
    assert (cond(st, "Ready")["status"], cond(st, "Ready")["reason"]) == ("False", "Suspended")
    assert [(a["attempt"], a["outcome"]) for a in st["attempts"]] == [(1, "Stopped")]
    assert st["run"]["number"] == 1
    wait_for(lambda: rayjob_names(cluster) == [] or None, 10, "the suspended attempt's RayJob deleted")
    holds_for_looks(shared_operator, cluster, "pause",
                    lambda: rayjob_names(cluster) == [] and cluster.status("pause")["phase"] == "Suspended",
                    3, "nothing launched while suspended")
    wait_for(lambda: "Suspended" in [e.reason for e in cluster.events("pause") if e.type == "Normal"], 15,
             "a Normal Suspended event")

    cluster.patch_spec("pause", {"suspend": False})
    st = wait_status(cluster, "pause", launched(2), "attempt 2 after resume")
    assert st["run"]["number"] == 1 and st["run"]["rayJobName"] == a2  # the same run: no new run number
    assert cond(st, "Suspended")["status"] == "False"
    assert rayjob_names(cluster) == [a2]

    # The Stopped attempt does not count: with backoffLimit 1 one failure is still retried.
    cluster.set_rayjob_status(a2, jobDeploymentStatus="Failed", jobStatus="FAILED", reason="AppFailed",
                              message="boom")
    st = wait_status(cluster, "pause", launched(3), "attempt 3 (the Stopped attempt is not a failure)")
    assert cond(st, "Ready")["reason"] == "Retrying"
    assert [a["outcome"] for a in st["attempts"]] == ["Stopped", "Failed"]
    assert st["run"]["number"] == 1 and rayjob_names(cluster) == sorted([a2, a3])


# --- 5. delete -------------------------------------------------------------------------------------


def test_delete_removes_rayjobs_and_configmap_then_the_object(cluster, mlflow_server):
    ft = cluster.create(finetune("gone", mlflow_server.tracking_uri, model=f"m-{cluster.ns}", backoffLimit=1))
    a1, a2 = rj(ft, 1), rj(ft, 2)
    wait_status(cluster, "gone", launched(1), "attempt 1 launched")
    cluster.set_rayjob_status(a1, jobDeploymentStatus="Failed", jobStatus="FAILED", message="first try failed")
    wait_status(cluster, "gone", launched(2), "attempt 2")
    running(cluster, "gone", a2)
    assert rayjob_names(cluster) == sorted([a1, a2]) and len(cluster.configmaps()) == 1
    assert constants.FINALIZER in cluster.get("gone")["metadata"]["finalizers"]

    cluster.delete("gone")
    # No garbage collector runs here: only the finalizer can have removed the children.
    wait_for(lambda: not cluster.exists("gone"), 20, "the FineTune to disappear")
    assert rayjob_names(cluster) == []
    assert cluster.configmaps() == []


def test_delete_with_ray_unreachable_gives_up_after_the_timeout_with_a_warning(cluster, mlflow_server, ray_api):
    ray = {"mode": "ExistingCluster", "address": ray_api.address}
    ft = cluster.create(finetune("orphan", mlflow_server.tracking_uri, model=f"m-{cluster.ns}", ray=ray))
    sid = naming.submission_id(ft["metadata"]["uid"], 1, 1)
    st = wait_status(cluster, "orphan", phase("Running"), "Running on the existing cluster")
    assert st["run"]["submissionId"] == sid and ray_api.submissions() == [sid]

    ray_api.close()  # the Ray head goes away: its port is closed
    st = wait_status(cluster, "orphan", lambda s: cond(s, "Ready").get("reason") == "RayUnavailable",
                     "RayUnavailable")
    assert st["phase"] == "Running"  # an outage is waited out, not a failure

    started = time.monotonic()
    cluster.delete("orphan")
    wait_for(lambda: not cluster.exists("orphan"), DELETE_TIMEOUT + 15, "the FineTune to disappear")
    took = time.monotonic() - started
    assert took >= DELETE_TIMEOUT * 0.9, f"gave up after {took:.1f}s, before trying for {DELETE_TIMEOUT}s"
    message = wait_warning(cluster, "orphan", "CleanupAbandoned")
    assert sid in message and ray_api.address in message, message


# --- 6. operator restarts ------------------------------------------------------------------------


def test_operator_killed_at_every_step_leaves_one_rayjob_and_one_version(
        api_client, operator_env, rayjob_crd, mlflow_server, ns_prefix, tmp_path):
    ns = create_namespace(api_client, f"{ns_prefix}r")
    cluster = Cluster(api_client, ns)
    uri, model = mlflow_server.tracking_uri, f"m-{ns}"
    op = OperatorProcess(ns, operator_process_env(operator_env), tmp_path / "operator.log", standby=True)
    try:
        ft = cluster.create(finetune("boot", uri, model=model, backoffLimit=1))  # while no operator runs
        uid, a1 = ft["metadata"]["uid"], rj(ft, 1)

        # killed right after taking the object (finalizer on), before or while launching
        op.start()
        wait_for(lambda: constants.FINALIZER in (cluster.get("boot")["metadata"].get("finalizers") or []),
                 180, "the operator's finalizer")
        op.kill()
        # killed as soon as the RayJob exists: the status may not name it yet
        op.start()
        wait_for(lambda: rayjob_names(cluster) or None, 180, "the RayJob", interval=0.05)
        op.kill()
        op.start()
        st = wait_status(cluster, "boot", launched(1), "attempt 1 recorded after restarts", timeout=180)
        assert st["run"]["rayJobName"] == a1 and rayjob_names(cluster) == [a1]

        # killed while Running; the job succeeds while no operator runs
        running(cluster, "boot", a1)
        op.kill()
        act_as_job(uri, experiment(ft), job_tags(ft), {"exact_match": 0.8}, {"exact_match": 0.3})
        cluster.set_rayjob_status(a1, jobStatus="SUCCEEDED", jobDeploymentStatus="Complete")

        # killed when registration starts, then as soon as the version exists (alias/status not yet)
        op.start()
        wait_status(cluster, "boot", lambda s: s.get("phase") in ("Registering", "Succeeded")
                    or bool(versions_of_run(uri, model, uid, 1)), "registration under way", timeout=180)
        op.kill()
        op.start()
        wait_for(lambda: versions_of_run(uri, model, uid, 1), 180, "the version registered", interval=0.05)
        op.kill()
        op.start()
        st = wait_status(cluster, "boot", phase("Succeeded"), "Succeeded after restarts", timeout=180)
        assert (st["run"]["number"], st["run"]["attempt"]) == (1, 1)
        assert [(a["attempt"], a["outcome"]) for a in st["attempts"]] == [(1, "Succeeded")]
        assert rayjob_names(cluster) == [a1]
        assert len(cluster.configmaps()) == 1
        [mv] = versions_of_run(uri, model, uid, 1)
        assert [v.version for v in versions(uri, model)] == ["1"] == [mv.version]
        assert st["model"]["version"] == "1" and st["model"]["alias"] == "champion"
        assert MlflowClient(uri).get_model_version_by_alias(model, "champion").version == "1"
    except BaseException:
        print(f"--- restarted operator's log ---\n{op.tail()}")
        raise
    finally:
        op.stop()


# --- 7. MLflow down during registration ------------------------------------------------------------


def test_registry_outage_during_registration_is_waited_out_then_registers_once(cluster, mlflow_server,
                                                                               shared_operator):
    uri, model = mlflow_server.tracking_uri, f"m-{cluster.ns}"
    ft = cluster.create(finetune("reg", uri, model=model, backoffLimit=0))
    a1 = rj(ft, 1)
    wait_status(cluster, "reg", launched(1), "attempt 1 launched")
    running(cluster, "reg", a1)
    act_as_job(uri, experiment(ft), job_tags(ft), {"exact_match": 0.8}, {"exact_match": 0.3})

    mlflow_server.stop()
    try:
        cluster.set_rayjob_status(a1, jobStatus="SUCCEEDED", jobDeploymentStatus="Complete")
        st = wait_status(cluster, "reg", lambda s: cond(s, "Ready").get("reason") == "RegistryUnavailable",
                         "RegistryUnavailable")
        assert st["phase"] == "Registering", st
        holds_for_looks(shared_operator, cluster, "reg",
                        lambda: (cluster.status("reg")["phase"], cond(cluster.status("reg"), "Ready")["reason"])
                        == ("Registering", "RegistryUnavailable"), 3, "waiting on MLflow, not Failed", timeout=90)
        assert "mlflow unreachable" in cond(cluster.status("reg"), "Ready")["message"]
        wait_warning(cluster, "reg", "RegistryUnavailable")
    finally:
        mlflow_server.start()  # same port, same backing store
    assert mlflow_server.tracking_uri == uri

    st = wait_status(cluster, "reg", phase("Succeeded"), "Succeeded after MLflow came back", timeout=60)
    assert st["model"]["version"] == "1" and cond(st, "Ready")["reason"] == "Promoted"
    assert [a["outcome"] for a in st["attempts"]] == ["Succeeded"]
    assert [v.version for v in versions_of_run(uri, model, ft["metadata"]["uid"], 1)] == ["1"]
    assert len(versions(uri, model)) == 1


# --- 8. a spec the schema cannot refuse --------------------------------------------------------------


def test_unsupported_spec_is_reported_once_without_launching_until_the_spec_changes(cluster, mlflow_server, ray_api,
                                                                                    shared_operator):
    """Schema-valid but unsupported: terminal (InvalidSpec) until metadata.generation changes. Waits on
    the world (a path not there yet) are the other kind: see test_finetune_waits.py."""
    ray = {"mode": "ExistingCluster", "address": ray_api.address}
    uri = mlflow_server.tracking_uri
    cluster.create(finetune("bad", uri, model=f"m-{cluster.ns}", ray=ray,
                            registry={"modelName": f"m-{cluster.ns}",
                                      "trackingUriSecretRef": {"name": "mlflow", "key": "uri"}}))
    st = wait_status(cluster, "bad", phase("Failed"), "Failed")
    ready = cond(st, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec"), ready
    # a Secret ref in ExistingCluster mode: its values would travel in the Ray job's runtime_env
    assert "spec.registry.trackingUriSecretRef" in ready["message"] and "use spec.ray.mode RayJob" in ready["message"]
    assert ready["observedGeneration"] == 1 and "run" not in st and "waiting" not in st

    assert "trackingUriSecretRef" in wait_warning(cluster, "bad", "InvalidSpec")
    # several looks later: still one Warning, nothing sent to Ray (no retry storm)
    holds_for_looks(shared_operator, cluster, "bad",
                    lambda: warning_reasons(cluster, "bad") == ["InvalidSpec"] and ray_api.requests == []
                    and cluster.status("bad")["phase"] == "Failed", 3, "one Warning event, no Ray request, Failed")

    cluster.patch_spec("bad", {"registry": {"trackingUriSecretRef": None, "trackingUri": uri}})
    st = wait_status(cluster, "bad", launched(1), "launched after the fix")
    ready = cond(st, "Ready")
    assert ready["reason"] != "InvalidSpec" and ready["observedGeneration"] == 2, ready
    assert st["run"]["number"] == 1 and st["run"]["generation"] == 2
    assert "Failed" not in {c["type"] for c in st.get("conditions", []) if c["status"] == "True"}
    wait_for(lambda: ray_api.submissions() or None, 10, "the submission to Ray")
    assert len(ray_api.submissions()) == 1
