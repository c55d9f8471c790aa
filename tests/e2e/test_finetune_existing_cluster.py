"""The FineTune controller end to end in ExistingCluster mode: the operator in-process against the
real apiserver, a real `ray start --head` and MLflow server on loopback, and the real training job on
the tiny Llama. A FineTune trains, registers and becomes champion; a worse one stays challenger."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from tests.api.conftest import OPERATOR_ENV, start_operator
from tests.api.kube import Cluster, wait_for
from tests.e2e.conftest import SharedServices
from tuneloop.api import constants
from tuneloop.devenv import basemodel, tinymodel

pytestmark = [pytest.mark.e2e, pytest.mark.apiserver, pytest.mark.slow]
FAST_RAY_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5", "MLFLOW_DISABLE_TELEMETRY": "true"}


@pytest.fixture(scope="module")
def services(shared_services: SharedServices, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """The session's MLflow server and Ray head (tests/e2e/conftest.py); the model names below are this
    module's own."""
    workdir = tmp_path_factory.mktemp("ft-e2e")
    model_dir = basemodel.ensure_base_model()  # pre-trained once, cached (make demo uses the same)
    data = tinymodel.write_jsonl(workdir / "data.jsonl", tinymodel.invoice_examples(96, seed=3))
    yield {"tracking_uri": shared_services.tracking_uri, "address": shared_services.ray.address, "model": model_dir,
           "data": data, "storage": workdir / "storage"}


def spec(s: dict[str, Any], **training: Any) -> dict[str, Any]:
    return {
        "baseModel": {"uri": f"file://{s['model']}"},
        "lora": {"rank": 8, "alpha": 16, "dropout": 0.0, "targetModules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
        "dataset": {"uri": f"file://{s['data']}", "evalFraction": 0.15, "splitSeed": "e2e"},
        "training": {"epochs": 2, "learningRate": 0.02, "batchSize": 8, "maxSeqLength": 320, "seed": 7, **training},
        "resources": {"workers": 2},
        "evaluation": {"maxNewTokens": 40, "maxExamples": 6, "baseline": {"enabled": False},
                       "promotion": {"metric": "loss"}},
        "registry": {"modelName": "invoices-ft-e2e", "trackingUri": s["tracking_uri"]},
        "ray": {"mode": "ExistingCluster", "address": s["address"], "runtimeEnv": {"env_vars": FAST_RAY_ENV}},
        "backoffLimit": 0,
    }


def test_finetunes_train_register_and_gate(services, api_client, namespace, kubeconfig):
    env = {**OPERATOR_ENV, "KUBECONFIG": str(kubeconfig), "TUNELOOP_POLL_SECONDS": "1",
           "TUNELOOP_STORAGE_ROOT": str(services["storage"])}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    cluster = Cluster(api_client, namespace)
    try:
        with start_operator(namespace):
            body = {"apiVersion": constants.API_VERSION, "kind": "FineTune", "metadata": {"name": "good"},
                    "spec": spec(services)}
            cluster.create(body)

            def finished(name: str):
                return lambda: cluster.status(name) if cluster.status(name).get("phase") in ("Succeeded",
                                                                                              "Failed") else None
            st = wait_for(finished("good"), timeout=420, interval=1, what="first FineTune finished")
            assert st["phase"] == "Succeeded", st
            assert st["model"]["version"] == "1" and st["model"]["alias"] == "champion"
            assert st["metrics"]["loss"] > 0 and st["dataset"]["evalRows"] > 0
            assert st["run"]["submissionId"].startswith("tuneloop-")
            client = MlflowClient(services["tracking_uri"])
            assert client.get_model_version_by_alias("invoices-ft-e2e", "champion").version == "1"

            worse = {**body, "metadata": {"name": "worse"}, "spec": spec(services, epochs=1, learningRate=1e-6)}
            cluster.create(worse)
            st2 = wait_for(finished("worse"), timeout=420, interval=1, what="second FineTune finished")
            assert st2["phase"] == "Succeeded", st2
            assert st2["model"]["version"] == "2" and st2["model"]["alias"] == "challenger"
            assert st2["promotion"]["promoted"] is False and st2["promotion"]["championVersion"] == "1"
            assert client.get_model_version_by_alias("invoices-ft-e2e", "champion").version == "1"
            assert len(client.search_model_versions("name = 'invoices-ft-e2e'")) == 2
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_bad_data_fails_once_as_data_invalid(services, api_client, namespace, kubeconfig, tmp_path):
    """Issue 14.2 end to end: the real job finds a bad row on the real Ray head; the FineTune ends
    Failed/DataInvalid after its first attempt although backoffLimit allows two more — the job's Failed
    result reaches the controller and a data error is not retried."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    from tuneloop.operator.logic import naming

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "c"}\n')
    env = {**OPERATOR_ENV, "KUBECONFIG": str(kubeconfig), "TUNELOOP_POLL_SECONDS": "1",
           "TUNELOOP_STORAGE_ROOT": str(services["storage"])}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    cluster = Cluster(api_client, namespace)
    try:
        with start_operator(namespace):
            base = spec(services)
            body = {"apiVersion": constants.API_VERSION, "kind": "FineTune", "metadata": {"name": "bad-data"},
                    "spec": {**base, "dataset": {**base["dataset"], "uri": f"file://{bad}"}, "backoffLimit": 2,
                             "registry": {**base["registry"], "modelName": "invoices-ft-e2e-bad"}}}
            uid = cluster.create(body)["metadata"]["uid"]
            st = wait_for(lambda: cluster.status("bad-data") if cluster.status("bad-data").get("phase") in
                          ("Succeeded", "Failed") else None, timeout=300, interval=1, what="bad-data finished")
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert (st["phase"], ready["reason"]) == ("Failed", "DataInvalid"), st
    assert str(bad) in ready["message"] and "line 2" in ready["message"], ready
    assert st["run"]["attempt"] == 1 and [a["attempt"] for a in st.get("attempts", [])] in ([], [1]), st
    jobs = [j for j in JobSubmissionClient(services["address"]).list_jobs()
            if (j.submission_id or "").startswith(f"tuneloop-{uid}-")]
    assert [(j.submission_id, j.status) for j in jobs] == [(naming.submission_id(uid, 1, 1), JobStatus.FAILED)], jobs
