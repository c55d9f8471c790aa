"""The training job's failure document reaches the controller in RayJob mode, where the job's
`--result` file lies in a pod the operator cannot read: the real job (`python -m tuneloop.jobs.train`,
a subprocess) fails on bad data against a real MLflow server, and the controller's own MLflow client
finds the Failed result by the FineTune uid, run and attempt tags the controller launched it with.

The document found is checked against tests/unit/operator/data/failed-result-data-invalid.json, the
one the reconciler unit test feeds to a RayJob-mode FineTune (test_reconciler.py), so that test runs
on what the job really writes.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tuneloop.api.results import JobResult
from tuneloop.operator.clients.mlflow import MlflowRegistry

FIXTURE = Path(__file__).resolve().parents[1] / "unit" / "operator" / "data" / "failed-result-data-invalid.json"
UID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
EXPERIMENT = "tuneloop/ns/bad-data"


def job(tmp_path: Path, tracking_uri: str, tags: dict[str, str]) -> subprocess.CompletedProcess[str]:
    data = tmp_path / "train.jsonl"
    data.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "c"}\n')
    spec = {"baseModel": {"uri": "file:///nonexistent/model"}, "dataset": {"uri": f"file://{data}"},
            "registry": {"modelName": "bad-data"}}
    argv = [sys.executable, "-m", "tuneloop.jobs.train", "--spec", json.dumps(spec), "--storage",
            str(tmp_path / "storage"), "--result", str(tmp_path / "result.json"), "--tracking-uri", tracking_uri,
            "--experiment", EXPERIMENT, "--run-name", "bad-data-r1-a1"]
    for key, value in tags.items():
        argv += ["--tag", f"{key}={value}"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300)


def comparable(document: dict[str, Any], data_path: str) -> dict[str, Any]:
    """The document without what differs from run to run (ids, timing, the temporary path)."""
    out = {k: v for k, v in document.items() if k not in ("runId", "experimentId", "durationSeconds")}
    out["message"] = (out.get("message") or "").replace(data_path, "<data>")
    return out


def test_failed_result_reaches_the_controller_by_its_tags(mlflow_server: Any, tmp_path: Path) -> None:
    uri = mlflow_server.tracking_uri
    tags = {"tuneloop.finetune.uid": UID, "tuneloop.run.number": "1", "tuneloop.run.attempt": "1"}
    proc = job(tmp_path, uri, tags)
    assert proc.returncode == 23, proc.stderr[-2000:]

    registry = MlflowRegistry(timeout_seconds=15, retries=1)
    try:
        found = asyncio.run(registry.find_result(uri, EXPERIMENT, UID, 1, 1))
        other_attempt = asyncio.run(registry.find_result(uri, EXPERIMENT, UID, 1, 2))
    finally:
        registry.close()
    assert found is not None, "the controller found no result for uid/run 1/attempt 1"
    assert (found.status, found.reason, found.exit_code) == ("Failed", "DataInvalid", 23)
    assert "line 2" in (found.message or "") and "'completion' is missing" in (found.message or "")
    assert other_attempt is None  # found by its own attempt, not by any run of the FineTune

    from mlflow.tracking import MlflowClient

    run = MlflowClient(tracking_uri=uri).get_run(found.run_id or "")
    assert run.info.status == "FAILED" and run.data.tags["tuneloop.stage"] == "failed"
    written = JobResult.model_validate_json((tmp_path / "result.json").read_text())
    assert written.run_id == found.run_id and written.reason == "DataInvalid"  # one document, two places

    data_path = str(tmp_path / "train.jsonl")
    assert comparable(found.to_k8s(), data_path) == comparable(json.loads(FIXTURE.read_text()), data_path)


def test_a_job_run_by_hand_opens_no_run_for_its_failure(mlflow_server: Any, tmp_path: Path) -> None:
    """Without the attempt tag no controller will look: a bad-data job leaves MLflow as it was."""
    uri = mlflow_server.tracking_uri
    proc = job(tmp_path, uri, {"tuneloop.finetune.uid": "by-hand", "tuneloop.run.number": "1"})
    assert proc.returncode == 23, proc.stderr[-2000:]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], "tags.`tuneloop.finetune.uid` = 'by-hand'") \
        if experiment is not None else []
    assert runs == []
    assert JobResult.model_validate_json((tmp_path / "result.json").read_text()).run_id is None

