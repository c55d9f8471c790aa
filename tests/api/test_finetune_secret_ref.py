"""spec.registry.trackingUriSecretRef on a real apiserver with the operator in-process: the RayJob's pods get
the job's MLflow URI and credentials from the Secret by reference, nothing of them is written in clear into
the RayJob or its ConfigMap, and the operator (which never reads Secrets) registers with its own URI;
ExistingCluster mode is refused naming the field."""

from __future__ import annotations

import json

import pytest

from tests.api.conftest import start_operator
from tests.api.kube import Cluster, finetune, wait_for

pytestmark = [pytest.mark.apiserver, pytest.mark.slow]

SECRET_URI = "http://alice:s3cret-pw@mlflow.team.example:5000"
SECRET_TOKEN = "tok-7f3a9c"


def test_secret_ref_reaches_the_pods_by_reference_only(operator_env, rayjob_crd, api_client, namespace,
                                                       monkeypatch) -> None:
    operator_uri = "http://operator-mlflow.example:5000"  # unreachable: no job ever runs here
    monkeypatch.setenv("TUNELOOP_MLFLOW_TRACKING_URI", operator_uri)
    cluster = Cluster(api_client, namespace)
    cluster.core.create_namespaced_secret(namespace, {"metadata": {"name": "mlflow"}, "stringData": {
        "uri": SECRET_URI, "MLFLOW_TRACKING_TOKEN": SECRET_TOKEN}})
    registry = {"modelName": "m", "trackingUriSecretRef": {"name": "mlflow", "key": "uri"}}
    good = finetune("by-ref", "unused")
    good["spec"]["registry"] = registry
    remote = finetune("remote", "unused", ray={"mode": "ExistingCluster", "address": "http://ray:8265"})
    remote["spec"]["registry"] = registry
    with start_operator(namespace) as runner:
        cluster.create(good)
        cluster.create(remote)

        def launched():
            run = cluster.status("by-ref").get("run") or {}
            return run.get("rayJobName")

        job_name = wait_for(launched, what="RayJob launched")
        refused = wait_for(lambda: cluster.ready("remote") if cluster.status("remote").get("phase") == "Failed"
                           else None, what="ExistingCluster FineTune refused")
    assert runner.exception is None, runner.exception

    rj = cluster.rayjob(job_name)
    spec = rj["spec"]
    head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    worker = spec["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    for container in (head, worker):
        env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
        assert env["MLFLOW_TRACKING_URI"] == {"name": "mlflow", "key": "uri"}
        assert env["MLFLOW_TRACKING_TOKEN"] == {"name": "mlflow", "key": "MLFLOW_TRACKING_TOKEN", "optional": True}
    assert "--tracking-uri" not in spec["entrypoint"]
    written = json.dumps(rj) + json.dumps([c.data for c in cluster.configmaps()])
    for leaked in (SECRET_URI, "s3cret-pw", SECRET_TOKEN, operator_uri):
        assert leaked not in written, leaked

    assert refused["reason"] == "InvalidSpec"
    assert "spec.registry.trackingUriSecretRef" in refused["message"] and "RayJob" in refused["message"]
