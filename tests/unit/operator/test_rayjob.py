"""The RayJob builder and the interpretation of RayJob / Ray job API states, as tables."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from tuneloop.api.finetune import FineTuneSpec
from tuneloop.operator.logic import observing, rayjob
from tuneloop.operator.logic.launching import Target, build_submission
from tuneloop.operator.logic.observing import observe_rayjob, observe_submission

UID = "a5ebc464-a93e-4ae2-8f9e-ef36a8f8c968"
NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
DEFAULTS = rayjob.RayJobDefaults(image="img:1", head_cpu="2", head_memory="8Gi", ttl_seconds_after_finished=600,
                                 default_active_deadline_seconds=86400, pod_storage_root="/ckpt", python="python",
                                 operator_version="0.1.0")


def target(**spec) -> Target:
    body = {"baseModel": {"uri": "hf://m/x"}, "dataset": {"uri": "s3://b/d.jsonl"}, "registry": {"modelName": "m"},
            **spec}
    return Target("ns", "ft", UID, 3, 2, 1, FineTuneSpec.model_validate(body))


def test_gpu_rayjob() -> None:
    t = target(resources={"gpus": 2, "gpuType": "A100", "workers": 3, "nodeSelector": {"pool": "gpu"},
                          "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]},
               ray={"runtimeEnv": {"env_vars": {"A": "1"}}, "serviceAccountName": "ray"}, activeDeadlineSeconds=900)
    rj = rayjob.build_rayjob(t, "http://mlflow:5000", DEFAULTS)
    spec = rj["spec"]
    assert (spec["backoffLimit"], spec["activeDeadlineSeconds"], spec["ttlSecondsAfterFinished"]) == (0, 900, 600)
    assert spec["shutdownAfterJobFinishes"] is True and spec["jobId"] == f"tuneloop-{UID}-r2-a1"
    assert yaml.safe_load(spec["runtimeEnvYAML"]) == {"env_vars": {"A": "1"}}
    group = spec["rayClusterSpec"]["workerGroupSpecs"][0]
    sizes = (group["replicas"], group["minReplicas"], group["maxReplicas"])
    assert group["groupName"] == "gpu-workers" and sizes == (3, 3, 3)
    pod = group["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"] == {"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": "2"}
    assert pod["nodeSelector"] == {"pool": "gpu", "nvidia.com/gpu.product": "A100"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists"}]
    assert pod["serviceAccountName"] == "ray"
    head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    assert head["volumes"][0]["configMap"]["name"] == rayjob.build_configmap(t)["metadata"]["name"]
    for token in ["--spec /etc/tuneloop/spec.json", "--tracking-uri http://mlflow:5000", "--experiment tuneloop/ns/ft",
                  f"--tag tuneloop.finetune.uid={UID}", "--tag tuneloop.run.number=2", "--tag tuneloop.run.attempt=1"]:
        assert token in spec["entrypoint"]
    meta = rj["metadata"]
    assert meta["ownerReferences"][0]["uid"] == UID and meta["ownerReferences"][0]["controller"] is True
    assert set(meta["labels"]) == {"app.kubernetes.io/managed-by", "tuneloop.io/finetune", "tuneloop.io/run"}


def test_tracking_secret_reaches_the_pods_by_reference_only() -> None:
    t = target(registry={"modelName": "m", "trackingUriSecretRef": {"name": "mlflow", "key": "uri"}})
    rj = rayjob.build_rayjob(t, "http://operator-mlflow:5000", DEFAULTS)
    spec = rj["spec"]
    head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    worker = spec["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    expected = [{"name": "MLFLOW_TRACKING_URI", "valueFrom": {"secretKeyRef": {"name": "mlflow", "key": "uri"}}}] + [
        {"name": k, "valueFrom": {"secretKeyRef": {"name": "mlflow", "key": k, "optional": True}}}
        for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")]
    assert head["env"] == expected and worker["env"] == expected
    # The job reads the URI from its environment: the operator's own URI is not passed, nothing in clear.
    assert "--tracking-uri" not in spec["entrypoint"] and "operator-mlflow" not in json.dumps(rj)
    # A key named like a credential variable is not listed twice.
    t2 = target(registry={"modelName": "m", "trackingUriSecretRef": {"name": "s", "key": "MLFLOW_TRACKING_TOKEN"}})
    names = [e["name"] for e in rayjob.tracking_env(t2)]
    assert names == ["MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"]


def test_no_secret_ref_no_env() -> None:
    rj = rayjob.build_rayjob(target(), "http://mlflow:5000", DEFAULTS)
    head = rj["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert "env" not in head and "--tracking-uri http://mlflow:5000" in rj["spec"]["entrypoint"]


def test_cpu_rayjob_defaults() -> None:
    rj = rayjob.build_rayjob(target(), "u", DEFAULTS)
    group = rj["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    assert group["groupName"] == "workers" and "nvidia.com/gpu" not in group["template"]["spec"]["containers"][0][
        "resources"]["limits"]
    assert "nodeSelector" not in group["template"]["spec"] and "runtimeEnvYAML" not in rj["spec"]
    assert rj["spec"]["activeDeadlineSeconds"] == 86400


def test_configmap_carries_the_spec() -> None:
    cm = rayjob.build_configmap(target())
    assert json.loads(cm["data"]["spec.json"])["registry"]["modelName"] == "m"


def test_submission_body() -> None:
    body = build_submission(target(ray={"mode": "ExistingCluster", "address": "http://127.0.0.1:8265"}), "/data",
                            "http://mlflow", "/venv/bin/python", "0.1.0")
    assert body["submission_id"] == f"tuneloop-{UID}-r2-a1"
    assert body["entrypoint"].startswith("/venv/bin/python -m tuneloop.jobs.train --spec '{")
    assert f"--result /data/ns/ft-{UID[:8]}/run-2/attempt-1/result.json" in body["entrypoint"]
    assert body["metadata"]["tuneloop.run.attempt"] == "1"


def rj(**status) -> dict:
    return {"status": status}


RAYJOB_CASES = {
    "absent": (None, "Missing", False),
    "new": (rj(), "Pending", False),
    "initializing": (rj(jobDeploymentStatus="Initializing"), "Pending", False),
    "pending job": (rj(jobDeploymentStatus="Running", jobStatus="PENDING"), "Pending", False),
    "running": (rj(jobDeploymentStatus="Running", jobStatus="RUNNING"), "Running", False),
    "succeeded": (rj(jobDeploymentStatus="Complete", jobStatus="SUCCEEDED"), "Succeeded", False),
    "complete but failed": (rj(jobDeploymentStatus="Complete", jobStatus="FAILED", reason="AppFailed"),
                            "Failed", False),
    "complete alone is not success": (rj(jobDeploymentStatus="Complete"), "Failed", False),
    "succeeded job, deployment still running": (rj(jobDeploymentStatus="Running", jobStatus="SUCCEEDED"),
                                                "Running", False),
    "deadline, job still running (#2314)": (rj(jobDeploymentStatus="Failed", jobStatus="RUNNING",
                                               reason="DeadlineExceeded"), "DeadlineExceeded", True),
    "submission failed": (rj(jobDeploymentStatus="Failed", reason="SubmissionFailed"), "Failed", True),
    "failed job, deployment stuck, fresh (#3553)": (rj(jobDeploymentStatus="Running", jobStatus="FAILED",
                                                       endTime="2026-01-01T11:59:30Z"), "Running", False),
    "failed job, deployment stuck, stale (#3553)": (rj(jobDeploymentStatus="Running", jobStatus="FAILED",
                                                       endTime="2026-01-01T11:50:00Z"), "Failed", True),
    # KubeRay sets status.endTime only when the deployment finishes; the Ray job's end is in rayJobInfo.
    "failed job, deployment stuck, stale by rayJobInfo (#3553)": (
        rj(jobDeploymentStatus="Running", jobStatus="FAILED", rayJobInfo={"endTime": "2026-01-01T11:50:00Z"}),
        "Failed", True),
    "failed job, deployment stuck, fresh by rayJobInfo (#3553)": (
        rj(jobDeploymentStatus="Running", jobStatus="FAILED", rayJobInfo={"endTime": "2026-01-01T11:59:30Z"}),
        "Running", False),
    "stopped job, deployment stuck, no end time, first sighting (#3553)": (
        rj(jobDeploymentStatus="Running", jobStatus="STOPPED"), "Running", False),
    "waiting (cluster selector, no cluster yet)": (rj(jobDeploymentStatus="Waiting"), "Pending", False),
    "retrying": (rj(jobDeploymentStatus="Retrying", jobStatus="FAILED"), "Pending", False),
    "validation failed (bad runtimeEnvYAML)": (rj(jobDeploymentStatus="ValidationFailed", reason="ValidationFailed",
                                                  message="invalid runtimeEnvYAML"), "Failed", False),
    "suspending outside tuneloop": (rj(jobDeploymentStatus="Suspending"), "Stuck", False),
    "suspended outside tuneloop": (rj(jobDeploymentStatus="Suspended"), "Stuck", False),
    "unknown deployment status": (rj(jobDeploymentStatus="Frobnicating", jobStatus="RUNNING"), "Stuck", False),
    "unknown job status": (rj(jobDeploymentStatus="Running", jobStatus="RESCHEDULED"), "Stuck", False),
}


@pytest.mark.parametrize("case", list(RAYJOB_CASES), ids=list(RAYJOB_CASES))
def test_observe_rayjob(case: str) -> None:
    obj, state, needs_stop = RAYJOB_CASES[case]
    obs = observe_rayjob(obj, NOW, inconsistent_grace_seconds=120)
    assert (obs.state, obs.needs_stop) == (state, needs_stop)


# A KubeRay that never reports rayJobInfo in the #3553 state: the grace is timed from tuneloop's own
# first sighting (status.run.inconsistentSince), passed back in as `inconsistent_since`.
STUCK = {"jobDeploymentStatus": "Running", "jobStatus": "FAILED"}
INCONSISTENT_CASES = {
    "first sighting: to be recorded, still running": (rj(**STUCK), None, "Running", True),
    "seen within the grace": (rj(**STUCK), NOW - timedelta(seconds=60), "Running", True),
    "seen longer than the grace ago: failed and stopped": (rj(**STUCK), NOW - timedelta(seconds=121), "Failed",
                                                            True),
    "stopped job seen longer than the grace ago": (rj(jobDeploymentStatus="Running", jobStatus="STOPPED"),
                                                  NOW - timedelta(seconds=300), "Failed", True),
    "rayJobInfo's end time, when reported, times the grace": (
        rj(**STUCK, rayJobInfo={"endTime": "2026-01-01T11:59:30Z"}), NOW - timedelta(seconds=300), "Running", True),
    "the state cleared (deployment Complete): not inconsistent": (
        rj(jobDeploymentStatus="Complete", jobStatus="FAILED"), NOW - timedelta(seconds=300), "Failed", False),
    "a running job is not inconsistent": (rj(jobDeploymentStatus="Running", jobStatus="RUNNING"), None, "Running",
                                          False),
}


@pytest.mark.parametrize("case", list(INCONSISTENT_CASES), ids=list(INCONSISTENT_CASES))
def test_inconsistent_grace_without_rayjobinfo(case: str) -> None:
    obj, since, state, inconsistent = INCONSISTENT_CASES[case]
    obs = observe_rayjob(obj, NOW, 120, inconsistent_since=since)
    assert (obs.state, obs.inconsistent) == (state, inconsistent)
    assert obs.needs_stop == (state == "Failed" and inconsistent)


@pytest.mark.parametrize(("info", "state"), [
    (None, "Missing"), ({"status": "PENDING"}, "Pending"), ({"status": "RUNNING"}, "Running"),
    ({"status": "SUCCEEDED"}, "Succeeded"), ({"status": "FAILED", "message": "boom"}, "Failed"),
    ({"status": "STOPPED"}, "Failed"),
])
def test_observe_submission(info, state: str) -> None:
    assert observe_submission(info, None).state == state


# KubeRay v1.7.0 rayjob_types.go, written out here so a change of the operator's copy is noticed.
KUBERAY_DEPLOYMENT_STATUSES = ["", "Initializing", "Running", "Complete", "Failed", "ValidationFailed", "Suspending",
                               "Suspended", "Retrying", "Waiting"]
KUBERAY_JOB_STATUSES = ["", "PENDING", "RUNNING", "STOPPED", "SUCCEEDED", "FAILED"]
KUBERAY_FAILURE_REASONS = ["SubmissionFailed", "DeadlineExceeded", "PreRunningDeadlineExceeded", "AppFailed",
                           "JobDeploymentStatusTransitionGracePeriodExceeded", "JobStatusCheckTimeoutExceeded",
                           "ValidationFailed"]


def test_every_kuberay_value_is_known() -> None:
    assert list(observing.DEPLOYMENT_STATUSES) == KUBERAY_DEPLOYMENT_STATUSES
    assert list(observing.JOB_STATUSES) == KUBERAY_JOB_STATUSES
    assert list(observing.FAILURE_REASONS) == KUBERAY_FAILURE_REASONS


@pytest.mark.parametrize("deployment", KUBERAY_DEPLOYMENT_STATUSES)
@pytest.mark.parametrize("job", KUBERAY_JOB_STATUSES)
def test_every_kuberay_pair_has_a_meaning(deployment: str, job: str) -> None:
    """No known pair reads as unknown, and a finished deployment never reads as still provisioning."""
    obs = observe_rayjob(rj(jobDeploymentStatus=deployment, jobStatus=job), NOW, inconsistent_grace_seconds=120)
    assert obs.reason != "UnknownRayJobState"
    if deployment in ("Complete", "Failed", "ValidationFailed"):
        assert obs.state in ("Succeeded", "Failed", "DeadlineExceeded"), obs
    if deployment == "ValidationFailed":
        assert not obs.retryable and obs.reason == "RayJobValidationFailed"


@pytest.mark.parametrize("reason", KUBERAY_FAILURE_REASONS)
def test_every_kuberay_failure_reason(reason: str) -> None:
    obs = observe_rayjob(rj(jobDeploymentStatus="Failed", jobStatus="FAILED", reason=reason, message="m"), NOW, 120)
    expected = {"DeadlineExceeded": ("DeadlineExceeded", "DeadlineExceeded", True),
                "ValidationFailed": ("Failed", "RayJobValidationFailed", False)}.get(reason, ("Failed", reason, True))
    assert (obs.state, obs.reason, obs.retryable) == expected


def test_unknown_state_is_named() -> None:
    obs = observe_rayjob(rj(jobDeploymentStatus="Frobnicating", jobStatus="RUNNING"), NOW, 120)
    assert obs.reason == "UnknownRayJobState" and "'Frobnicating'" in obs.message and "v1.7.0" in obs.message
