"""DPO and continued pretraining end to end, as a user applies them: the operator in-process against the
real apiserver, a real `ray start --head` and MLflow server on loopback, the real training job on the tiny
Llama. Each FineTune trains on Ray Train (DPO on two DDP workers), is scored on its held-out set against
the base, registered, and goes through the gate on its own metric: preference accuracy (higher is
better; the base scores 0.5) for DPO, perplexity (lower is better) for continued pretraining."""

from __future__ import annotations

import json
import os
import random
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


def preference_pairs(n: int, seed: int) -> list[dict[str, str]]:
    """Invoice questions with the right JSON as chosen and the same JSON with a wrong total as rejected."""
    rng = random.Random(seed)
    pairs = []
    for record in tinymodel.invoice_examples(n, seed=seed):
        wrong = json.loads(record["completion"])
        wrong["total"] = f"{rng.randint(10, 9999)}.{rng.randint(0, 99):02d}"
        pairs.append({"question": record["prompt"], "good": record["completion"],
                      "bad": json.dumps(wrong, separators=(", ", ": "))})
    return pairs


def documents(n: int, seed: int) -> list[dict[str, str]]:
    """Raw domain text: each invoice written out with its extracted record, one document per row."""
    return [{"body": f"{r['prompt'].splitlines()[-1]}\nRecord: {r['completion']}"}
            for r in tinymodel.invoice_examples(n, seed=seed)]


@pytest.fixture(scope="module")
def services(shared_services: SharedServices, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """The session's MLflow server and Ray head (tests/e2e/conftest.py: 4 logical CPUs, so the DPO run's two
    workers and the continued-pretraining run's one train side by side); the model names are this module's own."""
    workdir = tmp_path_factory.mktemp("methods-e2e")
    model_dir = basemodel.ensure_base_model()  # pre-trained once, cached (make demo uses the same)
    pairs = tinymodel.write_jsonl(workdir / "pairs.jsonl", preference_pairs(64, seed=5))
    corpus = tinymodel.write_jsonl(workdir / "corpus.jsonl", documents(80, seed=6))
    yield {"tracking_uri": shared_services.tracking_uri, "address": shared_services.ray.address, "model": model_dir,
           "pairs": pairs, "corpus": corpus, "storage": workdir / "storage"}


def common(s: dict[str, Any], model_name: str, workers: int) -> dict[str, Any]:
    return {
        "baseModel": {"uri": f"file://{s['model']}"},
        "lora": {"rank": 8, "alpha": 16, "dropout": 0.0, "targetModules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
        "resources": {"workers": workers},
        "registry": {"modelName": model_name, "trackingUri": s["tracking_uri"]},
        "ray": {"mode": "ExistingCluster", "address": s["address"], "runtimeEnv": {"env_vars": FAST_RAY_ENV}},
        "backoffLimit": 0,
    }


def dpo_spec(s: dict[str, Any]) -> dict[str, Any]:
    return {
        **common(s, "invoices-dpo-e2e", workers=2),
        "method": "dpo",
        "dpo": {"beta": 0.5},
        "dataset": {"uri": f"file://{s['pairs']}", "format": "preference", "evalFraction": 0.2, "splitSeed": "e2e",
                    "fields": {"prompt": "question", "chosen": "good", "rejected": "bad"}},
        "training": {"epochs": 2, "learningRate": 0.01, "batchSize": 8, "maxSeqLength": 256, "seed": 7},
        "evaluation": {"metrics": ["preference_accuracy", "reward_margin", "loss"],
                       "promotion": {"metric": "preference_accuracy", "minImprovement": 0.05}},
    }


def text_spec(s: dict[str, Any]) -> dict[str, Any]:
    return {
        **common(s, "invoices-cpt-e2e", workers=1),
        "method": "lora",
        "dataset": {"uri": f"file://{s['corpus']}", "format": "text", "fields": {"text": "body"},
                    "evalFraction": 0.15, "splitSeed": "e2e"},
        "training": {"epochs": 2, "learningRate": 0.01, "batchSize": 4, "maxSeqLength": 128, "seed": 7},
        "evaluation": {"metrics": ["perplexity", "loss"], "promotion": {"metric": "perplexity"}},
    }


def test_dpo_and_continued_pretraining_train_register_and_gate(services, api_client, namespace, kubeconfig):
    env = {**OPERATOR_ENV, "KUBECONFIG": str(kubeconfig), "TUNELOOP_POLL_SECONDS": "1",
           "TUNELOOP_STORAGE_ROOT": str(services["storage"])}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    cluster = Cluster(api_client, namespace)

    def finished(name: str):
        return lambda: cluster.status(name) if cluster.status(name).get("phase") in ("Succeeded", "Failed") else None

    try:
        with start_operator(namespace):
            for name, spec in (("dpo", dpo_spec(services)), ("cpt", text_spec(services))):
                cluster.create({"apiVersion": constants.API_VERSION, "kind": "FineTune", "metadata": {"name": name},
                                "spec": spec})
            dpo = wait_for(finished("dpo"), timeout=600, interval=2, what="the DPO FineTune finished")
            cpt = wait_for(finished("cpt"), timeout=600, interval=2, what="the continued-pretraining FineTune finished")
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    client = MlflowClient(services["tracking_uri"])
    # DPO: the adapter's implicit reward prefers the right totals on held-out pairs; the base is chance.
    assert dpo["phase"] == "Succeeded", dpo
    assert dpo["baselineMetrics"]["preference_accuracy"] == 0.5 and dpo["baselineMetrics"]["reward_margin"] == 0.0
    assert dpo["metrics"]["preference_accuracy"] > 0.55 and dpo["metrics"]["reward_margin"] > 0, dpo["metrics"]
    assert dpo["promotion"]["promoted"] is True and dpo["promotion"]["metric"] == "preference_accuracy"
    assert dpo["model"]["version"] == "1" and dpo["model"]["alias"] == "champion"
    version = client.get_model_version_by_alias("invoices-dpo-e2e", "champion")
    run = client.get_run(version.run_id)
    assert run.data.tags[constants.TAG_METHOD] == "dpo" and run.data.params["dpo.beta"] == "0.5"
    # per epoch on the held-out pairs (steps 1, 2), and the final evaluation's figure (step 0)
    history = {m.step: m.value for m in client.get_metric_history(version.run_id, "eval_preference_accuracy")}
    assert set(history) == {0, 1, 2} and history[0] == dpo["metrics"]["preference_accuracy"]
    print(f"DPO: {dpo['metrics']} vs base {dpo['baselineMetrics']}; per epoch {history}")

    # Continued pretraining: held-out perplexity falls below the base's, and lower wins the gate.
    assert cpt["phase"] == "Succeeded", cpt
    assert set(cpt["metrics"]) == {"perplexity", "loss"}
    assert cpt["metrics"]["perplexity"] < cpt["baselineMetrics"]["perplexity"], (cpt["metrics"],
                                                                                  cpt["baselineMetrics"])
    assert cpt["promotion"]["promoted"] is True and cpt["model"]["alias"] == "champion"
    assert cpt["dataset"]["trainRows"] + cpt["dataset"]["evalRows"] == 80
    assert client.get_model_version_by_alias("invoices-cpt-e2e", "champion").version == "1"
    print(f"continued pretraining: {cpt['metrics']} vs base {cpt['baselineMetrics']}")
