"""The training job's other outcomes, with the real job on a real Ray head and MLflow server (the
services, base model and helpers of test_train_job.py):

- `method: full` trains every weight end to end: submitted through the Ray job API as the controller
  does, it trains on two Ray Train workers, is evaluated, and logs a full model (no adapter) whose pyfunc
  answers a held-out prompt exactly as evaluation did;
- exit code 40 (TrainingFailed, retryable): a Ray Train worker killed mid-training makes the job fail
  with 40, and its Failed result document rides on its MLflow run (closed FAILED);
- exit code 50 (TrackingFailed, retryable): an MLflow server that cannot be reached makes the job fail
  with 50, the message naming the tracking URI.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import test_train_job as train_e2e
from tests.e2e.test_train_job import FAST_RAY_ENV, Services, job_argv, make_spec, mlflow_client, read_result
from tests.processes import all_procs
from tuneloop.api.results import JobResult
from tuneloop.devenv.ports import free_port
from tuneloop.jobs.errors import ExitCode

pytestmark = pytest.mark.e2e
services = train_e2e.services  # the same module-scoped fixture: Ray head, MLflow server, base model, data


def submit(services: Services, argv: list[str], env: dict[str, str] | None = None) -> tuple[Any, str]:
    """Submit `python -m tuneloop.jobs.train ARGV` to the Ray head's job API; the client and the job id."""
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(services.ray.address)
    job_id = client.submit_job(entrypoint="python -m tuneloop.jobs.train " + shlex.join(argv),
                               runtime_env={"env_vars": {**FAST_RAY_ENV, **(env or {})}})
    return client, job_id


def wait_terminal(client: Any, job_id: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while not client.get_job_status(job_id).is_terminal():
        assert time.monotonic() < deadline, f"job {job_id} still running:\n{client.get_job_logs(job_id)[-3000:]}"
        time.sleep(1)
    return str(client.get_job_logs(job_id))


def test_full_fine_tune_trains_every_weight_end_to_end(services: Services) -> None:
    storage, result_path = services.workdir / "full", services.workdir / "full-result.json"
    spec = make_spec(services, method="full", training={"learningRate": 0.001},
                     evaluation={"maxExamples": 4, "maxNewTokens": 40})
    client, job_id = submit(services, job_argv(spec, storage, result_path, services.tracking_uri, "full"))
    logs = wait_terminal(client, job_id, 600)
    from ray.job_submission import JobStatus

    assert client.get_job_status(job_id) == JobStatus.SUCCEEDED, logs[-5000:]
    result = read_result(result_path)
    assert result.status == "Succeeded" and result.exit_code == 0
    assert result.train_metrics["train_loss"] < result.train_metrics["first_epoch_train_loss"], logs[-3000:]
    assert set(result.metrics) == {"exact_match", "json_valid", "field_f1", "loss"}
    assert result.metrics["loss"] < result.baseline_metrics["loss"]

    run = mlflow_client(services.tracking_uri).get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["tuneloop.method"] == "full"
    # every weight was trained: the checkpoint holds the whole model, not an adapter
    trained = storage / "ray"
    weights = list(trained.rglob("model.safetensors")) + list(trained.rglob("pytorch_model.bin"))
    adapters = list(trained.rglob("adapter_config.json"))
    assert weights and not adapters, sorted(str(p.relative_to(trained)) for p in trained.rglob("*"))[:40]

    import mlflow.pyfunc

    assert result.model_uri
    mlflow.set_tracking_uri(services.tracking_uri)
    model = mlflow.pyfunc.load_model(result.model_uri)
    rows = [json.loads(line) for line in (storage / "evaluation" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 4
    # the logged full model answers as the evaluated one did (greedy decoding); the base would not
    assert model.predict([rows[0]["prompt"]], params={"max_new_tokens": 40}) == [rows[0]["prediction"]], rows[0]
    assert any(r["prediction"] != r["baseline_prediction"] for r in rows), rows


def descendants(root: int) -> list[Any]:
    procs = all_procs()
    children: dict[int, list[Any]] = {}
    for p in procs:
        children.setdefault(p.ppid, []).append(p)
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child.pid)
    return found


def test_a_ray_train_worker_killed_mid_training_exits_40(services: Services) -> None:
    storage, result_path = services.workdir / "killed", services.workdir / "killed-result.json"
    spec = make_spec(services, training={"epochs": 60})  # long enough to be killed in the middle
    argv = [*job_argv(spec, storage, result_path, services.tracking_uri, "killed"),
            "--tag", "tuneloop.run.attempt=1"]
    client, job_id = submit(services, argv)
    assert services.ray.proc is not None
    head = services.ray.proc.pid  # only this head's workers: other tests may run Ray on this machine
    snapshot = storage / "ray" / "train" / "checkpoint_manager_snapshot.json"  # the first checkpoint
    deadline = time.monotonic() + 420
    while True:
        status = client.get_job_status(job_id)
        assert not status.is_terminal(), f"ended before a worker was killed:\n{client.get_job_logs(job_id)[-3000:]}"
        assert time.monotonic() < deadline, "no Ray Train worker training within 420 s"
        workers = [p for p in descendants(head) if "RayTrainWorker" in p.cmdline and p.state != "Z"]
        # after the first checkpoint: the workers are in the training loop, not starting
        if workers and snapshot.is_file():
            os.kill(workers[0].pid, signal.SIGKILL)
            break
        time.sleep(0.2)
    logs = wait_terminal(client, job_id, 300)
    from ray.job_submission import JobStatus

    assert client.get_job_status(job_id) == JobStatus.FAILED
    assert "exit code 40" in (client.get_job_info(job_id).message or ""), client.get_job_info(job_id).message
    assert "FAILED TrainingFailed (exit 40)" in logs, logs[-3000:]
    result = read_result(result_path)
    assert (result.status, result.exit_code, result.reason) == ("Failed", 40, "TrainingFailed")
    assert "Ray Train failed" in (result.message or "")
    # the controller finds the failure on the job's own run (RayJob mode cannot read the file)
    tracking = mlflow_client(services.tracking_uri)
    run = tracking.get_run(result.run_id)
    assert run.info.status == "FAILED" and run.data.tags["tuneloop.run.attempt"] == "1"
    logged = JobResult.model_validate_json(Path(tracking.download_artifacts(
        result.run_id, "tuneloop-result.json", str(services.workdir / "killed-dl"))).read_text())
    assert (logged.status, logged.exit_code, logged.reason) == ("Failed", 40, "TrainingFailed")


def test_an_unreachable_tracking_server_exits_50_naming_it(services: Services, tmp_path: Path) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    spec = make_spec(services)
    env = {**os.environ, **services.ray.env, **FAST_RAY_ENV, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
           "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    proc = subprocess.run([sys.executable, "-m", "tuneloop.jobs.train",
                           *job_argv(spec, tmp_path / "s", tmp_path / "r.json", nowhere, f"n-{uuid.uuid4().hex[:6]}")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == ExitCode.TRACKING_FAILED == 50, proc.stderr[-3000:]
    assert "FAILED TrackingFailed (exit 50)" in proc.stderr
    result = read_result(tmp_path / "r.json")
    assert (result.status, result.exit_code, result.reason) == ("Failed", 50, "TrackingFailed")
    assert nowhere in (result.message or ""), result.message
    assert result.model_uri is None and result.dataset is not None  # the data was prepared, nothing logged
