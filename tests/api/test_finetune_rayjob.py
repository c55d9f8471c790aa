"""The FineTune controller in RayJob mode against a real apiserver, with the test acting as KubeRay
(writing RayJob status) and as the training job (writing the MLflow run and result artifact)."""

from __future__ import annotations

from datetime import datetime

import pytest
from mlflow.tracking import MlflowClient

from tests.api.kube import Cluster, act_as_job, finetune, wait_for
from tuneloop.api import constants

pytestmark = [pytest.mark.apiserver, pytest.mark.slow]


@pytest.fixture
def cluster(api_client, namespace) -> Cluster:
    return Cluster(api_client, namespace)


def job_tags(ft: dict, run: int = 1, attempt: int = 1) -> dict[str, str]:
    return {constants.TAG_FINETUNE_UID: ft["metadata"]["uid"], constants.TAG_RUN_NUMBER: str(run),
            constants.TAG_RUN_ATTEMPT: str(attempt)}


def experiment(ft: dict) -> str:
    return f"tuneloop/{ft['metadata']['namespace']}/{ft['metadata']['name']}"


class _Status(dict):
    """A status that is falsy until it reaches the phase, so wait_for reports the last one seen."""

    def __init__(self, status: dict, ok: bool) -> None:
        super().__init__(status)
        self.ok = ok

    def __bool__(self) -> bool:
        return self.ok


def phase_is(cluster: Cluster, name: str, phase: str):
    def check():
        status = cluster.status(name)
        return _Status(status, status.get("phase") == phase)
    return check


def launched(cluster: Cluster, name: str, attempt: int = 1):
    def check():
        run = cluster.status(name).get("run") or {}
        return run.get("rayJobName") if run.get("attempt") == attempt and run.get("rayJobName") else None
    return check


def test_success_registers_champion_then_worse_run_stays_challenger(operator, cluster, mlflow_server):
    uri = mlflow_server.tracking_uri
    model = f"m-{cluster.ns}"
    ft = cluster.create(finetune("alpha", uri, model=model))
    job_name = wait_for(launched(cluster, "alpha"), what="RayJob launched")

    rj = cluster.rayjob(job_name)
    spec = rj["spec"]
    assert spec["backoffLimit"] == 0 and spec["activeDeadlineSeconds"] == 600
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] == 3600
    assert spec["jobId"] == f"tuneloop-{ft['metadata']['uid']}-r1-a1"
    assert "python -m tuneloop.jobs.train" in spec["entrypoint"]
    assert f"{constants.TAG_FINETUNE_UID}={ft['metadata']['uid']}" in spec["entrypoint"]
    worker = spec["rayClusterSpec"]["workerGroupSpecs"][0]
    assert worker["replicas"] == 2
    pod = worker["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    owner = rj["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("FineTune", ft["metadata"]["uid"], True)
    assert "app.kubernetes.io/instance" not in rj["metadata"].get("labels", {})
    assert not any(k.startswith("argocd") for k in rj["metadata"].get("annotations", {}) or {})
    [cm] = cluster.configmaps()
    assert '"modelName": "' + model + '"' in cm.data["spec.json"]
    # The RayJob has no status yet: KubeRay has not started its cluster.
    wait_for(lambda: cluster.ready("alpha")["reason"] == "RayClusterProvisioning", what="RayClusterProvisioning")
    assert cluster.status("alpha")["phase"] == "Launching"

    cluster.set_rayjob_status(job_name, jobStatus="RUNNING", jobDeploymentStatus="Running",
                              dashboardURL="http://dash:8265", rayClusterName="rc-1")
    wait_for(phase_is(cluster, "alpha", "Running"), what="Running")
    assert cluster.ready("alpha")["reason"] == "Training"
    assert cluster.status("alpha")["run"]["dashboardUrl"] == "http://dash:8265"

    act_as_job(uri, experiment(ft), job_tags(ft), {"exact_match": 0.8, "loss": 0.5}, {"exact_match": 0.3})
    cluster.set_rayjob_status(job_name, jobStatus="SUCCEEDED", jobDeploymentStatus="Complete")
    st = wait_for(phase_is(cluster, "alpha", "Succeeded"), what="Succeeded")
    assert st["model"] == {"name": model, "version": "1", "uri": f"models:/{model}/1", "runId": st["model"]["runId"],
                           "alias": "champion"}
    assert st["promotion"]["promoted"] is True and st["metrics"]["exact_match"] == 0.8
    assert st["attempts"][0]["outcome"] == "Succeeded"
    assert st["cost"]["gpuType"] == "NVIDIA-A100-SXM4-80GB" and st["cost"]["gpuHours"] > 0
    assert st["observedGeneration"] == 1
    assert [e["alias"] for e in st["aliasHistory"]] == ["champion"]
    assert cluster.ready("alpha")["reason"] == "Promoted"

    client = MlflowClient(uri)
    mv = client.get_model_version_by_alias(model, "champion")
    assert mv.version == "1"
    assert mv.tags[constants.TAG_FINETUNE_UID] == ft["metadata"]["uid"]
    assert mv.tags[constants.TAG_DATASET_HASH] == "d" * 64
    assert mv.tags[constants.TAG_BASE_MODEL_REVISION] == "abc123"
    assert float(mv.tags[constants.TAG_EVAL_METRIC_PREFIX + "exact_match"]) == 0.8

    # A second FineTune of the same model that does worse than the champion stays challenger.
    ft2 = cluster.create(finetune("beta", uri, model=model))
    job2 = wait_for(launched(cluster, "beta"), what="second RayJob launched")
    act_as_job(uri, experiment(ft2), job_tags(ft2), {"exact_match": 0.7}, {"exact_match": 0.3})
    cluster.set_rayjob_status(job2, jobStatus="SUCCEEDED", jobDeploymentStatus="Complete")
    st2 = wait_for(phase_is(cluster, "beta", "Succeeded"), what="second Succeeded")
    assert st2["model"]["alias"] == "challenger" and st2["model"]["version"] == "2"
    assert st2["promotion"]["promoted"] is False and st2["promotion"]["championVersion"] == "1"
    ready = cluster.ready("beta")
    assert ready["reason"] == "NotPromoted" and "missed by 0.1" in ready["message"]
    assert client.get_model_version_by_alias(model, "champion").version == "1"
    assert client.get_model_version_by_alias(model, "challenger").version == "2"
    reasons = {e.reason for e in cluster.events("alpha")}
    assert reasons == {"Launching", "RayClusterProvisioning", "Training", "Registering", "Promoted"}, reasons

    # A third, better FineTune takes champion: alpha, the previous holder, says so at once (woken by
    # gamma's gate through an annotation, not by its slow periodic re-check).
    ft3 = cluster.create(finetune("gamma", uri, model=model))
    job3 = wait_for(launched(cluster, "gamma"), what="third RayJob launched")
    act_as_job(uri, experiment(ft3), job_tags(ft3), {"exact_match": 0.9}, {"exact_match": 0.3})
    cluster.set_rayjob_status(job3, jobStatus="SUCCEEDED", jobDeploymentStatus="Complete")
    st3 = wait_for(phase_is(cluster, "gamma", "Succeeded"), what="third Succeeded")
    assert (st3["model"]["alias"], st3["model"]["version"]) == ("champion", "3")
    assert st3["promotion"]["championVersion"] == "1"
    wait_for(lambda: cluster.ready("alpha")["reason"] == "Superseded", what="alpha Superseded")
    st1 = cluster.status("alpha")
    assert st1["model"].get("alias") is None and st1["phase"] == "Succeeded"
    moved = st1["aliasHistory"][-1]
    assert (moved["alias"], moved["version"], moved["previousVersion"]) == ("champion", "3", "1")
    assert f"FineTune {cluster.ns}/gamma" in moved["reason"]
    assert client.get_model_version_by_alias(model, "champion").version == "3"
    # Both objects' alias history record the move, in order: alpha got champion and lost it to v3;
    # gamma took it from v1 — and alpha's record of losing it is not older than gamma's of taking it.
    def moves(status: dict) -> list[tuple[str, str, str | None]]:
        return [(e["alias"], e["version"], e.get("previousVersion")) for e in status["aliasHistory"]]

    st3 = cluster.status("gamma")
    assert moves(st1) == [("champion", "1", None), ("champion", "3", "1")], st1["aliasHistory"]
    assert moves(st3) == [("champion", "3", "1")], st3["aliasHistory"]
    got, took, lost = (datetime.fromisoformat(e["time"]) for e in (*st1["aliasHistory"][:1], *st3["aliasHistory"],
                                                                   st1["aliasHistory"][1]))
    assert got <= took <= lost, (got, took, lost)
