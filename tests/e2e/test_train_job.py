"""The training job end to end on CPU: a real Ray head and a real MLflow tracking server on loopback,
the tiny Llama with its locally trained tokenizer, and the synthetic invoice task.

Stories: (1) a job submitted through the Ray job API (the controller's ExistingCluster path) trains on
two Ray Train workers, the loss falls, held-out and baseline metrics reach the result and MLflow, and
the logged model loads and answers; (2) a driver killed after its first checkpoint is started again
and resumes from that checkpoint, in the same MLflow run, with the same split and dataset hash as (1);
(3) every bad-data and bad-config case ends with its own exit code, a message naming file/row/field,
a Failed JobResult, and no MLflow run.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import SharedServices
from tuneloop.api.results import JobResult
from tuneloop.devenv import basemodel, ray_head, tinymodel
from tuneloop.jobs import timeline, train
from tuneloop.jobs.errors import ExitCode

pytestmark = pytest.mark.e2e

EXPERIMENT = "tuneloop/e2e-invoices"
# Each ray.train.report waits for the controller's health-check tick (2 s by default, FACTS.md); a
# shorter tick keeps the per-epoch reports of these short runs from dominating the suite's time.
FAST_RAY_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5", "MLFLOW_DISABLE_TELEMETRY": "true"}


@dataclass
class Services:
    tracking_uri: str
    ray: ray_head.RayHead
    model_dir: Path
    data_path: Path
    workdir: Path


@pytest.fixture(scope="module")
def services(shared_services: SharedServices, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """The session's MLflow server and Ray head (tests/e2e/conftest.py: no story here kills either), and the
    tiny model + data of this module."""
    workdir = tmp_path_factory.mktemp("train-e2e")
    model_dir = basemodel.ensure_base_model()  # pre-trained once, cached (make demo uses the same)
    data_path = tinymodel.write_jsonl(workdir / "data" / "invoices.jsonl",
                                      tinymodel.invoice_examples(96, seed=3, pii_every=8))
    yield Services(shared_services.tracking_uri, shared_services.ray, model_dir, data_path, workdir)


def make_spec(s: Services, **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "baseModel": {"uri": f"file://{s.model_dir}"},
        "method": "lora",
        "lora": {"rank": 8, "alpha": 16, "dropout": 0.0, "targetModules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
        "dataset": {"uri": f"file://{s.data_path}", "evalFraction": 0.15, "splitSeed": "e2e"},
        "training": {"epochs": 2, "learningRate": 0.02, "batchSize": 8, "maxSeqLength": 320, "seed": 7},
        "resources": {"workers": 2},
        "evaluation": {"maxNewTokens": 40, "maxExamples": 6, "baseline": {"enabled": True, "shots": 2}},
        "registry": {"modelName": "invoices-e2e"},
    }
    for key, value in overrides.items():
        spec[key] = {**spec[key], **value} if isinstance(value, dict) else value
    return spec


def job_argv(spec: dict[str, Any] | str, storage: Path, result: Path, tracking_uri: str, run_name: str) -> list[str]:
    return ["--spec", spec if isinstance(spec, str) else json.dumps(spec), "--storage", str(storage),
            "--result", str(result), "--tracking-uri", tracking_uri, "--experiment", EXPERIMENT,
            "--run-name", run_name, "--tag", "tuneloop.finetune.uid=uid-123", "--tag", "tuneloop.run.number=1"]


def read_result(path: Path) -> JobResult:
    return JobResult.model_validate_json(path.read_text())


def mlflow_client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


@pytest.fixture(scope="module")
def submitted_run(services: Services) -> tuple[JobResult, Path, str]:
    """Story 1, run once: the job submitted to the Ray head's job API, as the controller does."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    storage, result_path = services.workdir / "run-1", services.workdir / "run-1-result.json"
    argv = job_argv(make_spec(services), storage, result_path, services.tracking_uri, "run-1")
    client = JobSubmissionClient(services.ray.address)
    job_id = client.submit_job(entrypoint="python -m tuneloop.jobs.train " + shlex.join(argv),
                               runtime_env={"env_vars": FAST_RAY_ENV})
    deadline = time.monotonic() + 420
    while not client.get_job_status(job_id).is_terminal():
        assert time.monotonic() < deadline, f"job {job_id} still running:\n{client.get_job_logs(job_id)[-3000:]}"
        time.sleep(1)
    logs = client.get_job_logs(job_id)
    assert client.get_job_status(job_id) == JobStatus.SUCCEEDED, logs[-5000:]
    return read_result(result_path), storage, logs


def test_submitted_job_trains_evaluates_and_logs(submitted_run, services: Services) -> None:
    result, storage, logs = submitted_run
    assert result.status == "Succeeded" and result.exit_code == 0
    assert result.train_metrics["train_loss"] < result.train_metrics["first_epoch_train_loss"], logs[-3000:]
    assert result.train_metrics["epoch"] == 2.0 and result.train_metrics["train_tokens_per_second"] > 0
    for metrics in (result.metrics, result.baseline_metrics):
        assert set(metrics) == {"exact_match", "json_valid", "field_f1", "loss"}
        assert all(0.0 <= metrics[m] <= 1.0 for m in ("exact_match", "json_valid", "field_f1"))
        assert metrics["loss"] > 0
    # Fine-tuning must have moved the answer loss below the untrained base's few-shot loss.
    assert result.metrics["loss"] < result.baseline_metrics["loss"]
    assert result.resumed_from_checkpoint is None and result.duration_seconds and result.duration_seconds > 0

    ds = result.dataset
    assert ds is not None and ds.total_rows == 96 and ds.train_rows + ds.eval_rows == 96 and ds.eval_rows > 0
    assert ds.pii_redactions == {"email": 12, "phone": 12}
    held_out = Path(ds.held_out_uri.removeprefix("file://"))
    assert held_out.is_file() and held_out.read_text().count("\n") == ds.eval_rows
    assert "@example.com" not in held_out.read_text() + (storage / "data" / "train.jsonl").read_text()

    client = mlflow_client(services.tracking_uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "run-1"
    tags = run.data.tags
    assert tags["tuneloop.dataset.hash"] == ds.hash and tags["tuneloop.finetune.uid"] == "uid-123"
    assert tags["tuneloop.dataset.eval_rows"] == str(ds.eval_rows) and tags["tuneloop.method"] == "lora"
    assert run.data.params["training.epochs"] == "2" and run.data.params["lora.rank"] == "8"
    losses = [m.value for m in sorted(client.get_metric_history(result.run_id, "train_loss"), key=lambda m: m.step)]
    assert len(losses) == 2 and losses[-1] < losses[0]
    assert run.data.metrics["eval_exact_match"] == result.metrics["exact_match"]
    assert run.data.metrics["baseline_loss"] == result.baseline_metrics["loss"]
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "dataset")}
    assert artifacts == {"dataset/held_out.jsonl"}
    # The result document rides on the run too: in RayJob mode the controller cannot read the pod's file.
    logged_path = client.download_artifacts(result.run_id, "tuneloop-result.json", str(storage))
    logged = JobResult.model_validate(json.loads(Path(logged_path).read_text()))
    assert logged.status == "Succeeded" and logged.model_uri == result.model_uri
    assert logged.metrics == result.metrics and logged.dataset == result.dataset

    # Where the job's seconds went: every stage mark (jobs.timeline), from the driver and from rank 0
    # (forwarded by Ray, so not necessarily in log order); each side's in its order, and Ray Train
    # started before the data was prepared (its workers start meanwhile), the handoff before training.
    marks = timeline.parse(logs)
    assert set(marks) == set(timeline.STAGES) - {"submitted"}, marks
    for chain in (timeline.DRIVER_CHAIN, timeline.WORKER_CHAIN):
        assert sorted(chain, key=marks.__getitem__) == list(chain), marks
    assert marks["fit_start"] < marks["data_prepared"] and marks["handed_over"] < marks["model_loaded"], marks
    # No fixed cost a CPU job does not need: it evaluates in its driver (no evaluate_run Ray task, which
    # started a process that imported torch and transformers again), and no AutoscalingCoordinator
    # actor is asked for resources (jobs.trainer: its 5 s waits ran out on a fresh head).
    from ray.util.state import list_actors, list_tasks

    address = services.ray.address
    tasks = list_tasks(address=address, filters=[("type", "=", "NORMAL_TASK")], limit=10_000,
                       raise_on_missing_output=False)
    assert not [t.name for t in tasks if t.name.rsplit(".", 1)[-1] == "evaluate_run"]
    actors = list_actors(address=address, limit=10_000, raise_on_missing_output=False)
    assert actors and not [a.class_name for a in actors if "AutoscalingCoordinator" in a.class_name]

    import mlflow.pyfunc

    assert result.model_uri and result.model_uri.startswith("models:/")
    mlflow.set_tracking_uri(services.tracking_uri)
    model = mlflow.pyfunc.load_model(result.model_uri)
    # The registered pyfunc is the evaluated model: base + this run's adapter answers a held-out prompt
    # exactly as evaluation did (greedy decoding); a pyfunc that lost its adapter answers like the base.
    rows = [json.loads(line) for line in (storage / "evaluation" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all("baseline_prediction" in r for r in rows)
    answers = model.predict([rows[0]["prompt"]], params={"max_new_tokens": 40})
    assert answers == [rows[0]["prediction"]], (answers, rows[0])


def test_killed_job_resumes_from_its_checkpoint(submitted_run, services: Services) -> None:
    first, _, _ = submitted_run
    storage, result_path = services.workdir / "run-2", services.workdir / "run-2-result.json"
    spec = make_spec(services, training={"epochs": 4})
    spec_file = services.workdir / "run-2-spec.json"
    spec_file.write_text(json.dumps(spec))
    argv = [sys.executable, "-m", "tuneloop.jobs.train",
            *job_argv(str(spec_file), storage, result_path, services.tracking_uri, "run-2")]
    env = {**os.environ, **services.ray.env, **FAST_RAY_ENV}
    snapshot = storage / "ray" / "train" / "checkpoint_manager_snapshot.json"
    log1 = services.workdir / "run-2-attempt-1.log"
    with log1.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 240
        while not snapshot.is_file():
            assert proc.poll() is None, f"job ended before its first checkpoint:\n{log1.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert not result_path.exists(), "the killed attempt must not have finished"
    killed_run_id = json.loads((storage / "mlflow_run.json").read_text())["run_id"]

    again = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=420)
    assert again.returncode == 0, again.stderr[-5000:]
    result = read_result(result_path)
    resumed_at = result.train_metrics["resumed_at_epoch"]
    assert result.resumed_from_checkpoint and 1 <= resumed_at < 4, again.stderr[-3000:]
    assert f"resumed at epoch {int(resumed_at)}" in again.stderr
    assert result.train_metrics["epoch"] == 4.0
    assert result.run_id == killed_run_id

    # Same data and seed as story 1: same split, same hash, byte-identical frozen held-out set.
    assert result.dataset and first.dataset
    assert result.dataset.hash == first.dataset.hash
    assert (storage / "data" / "held_out.jsonl").read_bytes() == Path(
        first.dataset.held_out_uri.removeprefix("file://")).read_bytes()
    history = mlflow_client(services.tracking_uri).get_metric_history(result.run_id, "train_loss")
    assert sorted(m.step for m in history) == [1, 2, 3, 4]


def test_killed_dpo_job_resumes_from_its_checkpoint(services: Services) -> None:
    """DPO on the same Ray Train path: two DDP workers, a checkpoint per epoch, and a driver killed after
    the first checkpoint resumes from it (adapter, optimizer, schedule; the reference log-probs are
    recomputed from the frozen base) and finishes with the preference metrics."""
    rows = [json.loads(line) for line in services.data_path.read_text().splitlines()]
    pairs = [{"prompt": r["prompt"], "chosen": r["completion"],
              "rejected": r["completion"].replace('"currency": "', '"currency": "X')} for r in rows]
    data = tinymodel.write_jsonl(services.workdir / "pairs.jsonl", pairs)
    storage, result_path = services.workdir / "dpo", services.workdir / "dpo-result.json"
    spec = make_spec(services, method="dpo", training={"epochs": 3},
                     dataset={"uri": f"file://{data}", "format": "preference"},
                     evaluation={"metrics": ["preference_accuracy", "reward_margin"],
                                 "promotion": {"metric": "preference_accuracy"}})
    spec["dpo"] = {"beta": 0.5}
    spec_file = services.workdir / "dpo-spec.json"
    spec_file.write_text(json.dumps(spec))
    argv = [sys.executable, "-m", "tuneloop.jobs.train",
            *job_argv(str(spec_file), storage, result_path, services.tracking_uri, "dpo")]
    env = {**os.environ, **services.ray.env, **FAST_RAY_ENV}
    snapshot = storage / "ray" / "train" / "checkpoint_manager_snapshot.json"
    log1 = services.workdir / "dpo-attempt-1.log"
    with log1.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 300
        while not snapshot.is_file():
            assert proc.poll() is None, f"job ended before its first checkpoint:\n{log1.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert not result_path.exists(), "the killed attempt must not have finished"

    again = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=480)
    assert again.returncode == 0, again.stderr[-5000:]
    result = read_result(result_path)
    resumed_at = result.train_metrics["resumed_at_epoch"]
    assert result.resumed_from_checkpoint and 1 <= resumed_at < 3, again.stderr[-3000:]
    assert result.train_metrics["epoch"] == 3.0
    assert set(result.metrics) == {"preference_accuracy", "reward_margin"}
    assert result.baseline_metrics == {"preference_accuracy": 0.5, "reward_margin": 0.0}
    assert result.metrics["preference_accuracy"] > 0.5 and result.metrics["reward_margin"] > 0, result.metrics
    assert 0.0 <= result.train_metrics["eval_preference_accuracy"] <= 1.0
    print(f"DPO resumed at epoch {int(resumed_at)}: {result.metrics}, last epoch {result.train_metrics}")


BAD_CASES = [
    # (name, file content or None, spec overrides, exit code, reason, message substrings)
    ("missing field", b'{"prompt": "a", "completion": "b"}\n{"prompt": "c"}\n', {}, ExitCode.DATA_INVALID,
     "DataInvalid", ["line 2", "'completion' is missing"]),
    ("empty file", b"", {}, ExitCode.DATA_EMPTY, "DataEmpty", ["no records"]),
    ("invalid utf-8", b'{"prompt": "a", "completion": "b"}\n{"prompt": "\xff", "completion": "c"}\n', {},
     ExitCode.DATA_ENCODING, "DataEncodingInvalid", ["line 2", "invalid UTF-8"]),
    ("all duplicates", b'{"prompt": "a", "completion": "b"}\n{"prompt": " A", "completion": "b"}\n', {},
     ExitCode.DATA_ALL_DUPLICATES, "DataAllDuplicates", ["only 1 distinct"]),
    ("eval set empty", None, {"dataset": {"evalFraction": 0.0001}}, ExitCode.EVAL_SET_EMPTY, "EvalSetEmpty",
     ["held-out set empty"]),
    ("bad config", None, {"training": {"epochs": 0}}, ExitCode.CONFIG_INVALID, "ConfigInvalid",
     ["spec.training.epochs"]),
    ("dpo on answers", None, {"method": "dpo"}, ExitCode.CONFIG_INVALID, "ConfigInvalid",
     ["spec.method dpo trains on preference pairs", "set it to preference"]),
    ("qlora on cpu", None, {"method": "qlora"}, ExitCode.RESOURCES_UNAVAILABLE, "ResourcesUnavailable",
     ["needs a CUDA GPU"]),
    ("missing base model", None, {"baseModel": {"uri": "file:///nonexistent/model"}}, ExitCode.MODEL_NOT_FOUND,
     "ModelNotFound", ["/nonexistent/model", "config.json"]),
]


@pytest.mark.parametrize(("content", "overrides", "code", "reason", "needles"), [c[1:] for c in BAD_CASES],
                         ids=[c[0] for c in BAD_CASES])
def test_bad_input_fails_with_its_code(services: Services, tmp_path: Path, content: bytes | None,
                                       overrides: dict[str, Any], code: ExitCode, reason: str,
                                       needles: list[str]) -> None:
    data = services.data_path
    if content is not None:
        data = tmp_path / "bad.jsonl"
        data.write_bytes(content)
    spec = make_spec(services, dataset={"uri": f"file://{data}"})
    for key, value in overrides.items():
        spec[key] = {**spec[key], **value} if isinstance(value, dict) and key in spec else value
    result_path = tmp_path / "result.json"
    # In-process main(): the same code path as the CLI minus interpreter start-up (the process exit
    # code itself is checked by the subprocess case below).
    try:
        assert train.main(job_argv(spec, tmp_path / "storage", result_path, services.tracking_uri, "bad")) == code
    finally:
        # In process: a job that got as far as starting Ray Train (data found bad while its workers start)
        # joined the Ray head from this pytest process; leave the process as a job's exit would.
        import ray

        if ray.is_initialized():
            ray.shutdown()
    result = read_result(result_path)
    assert (result.status, result.exit_code, result.reason) == ("Failed", int(code), reason)
    for needle in needles:
        assert needle in (result.message or "")
    if content is not None:
        assert str(data) in (result.message or "")
    assert result.model_uri is None and result.run_id is None
    experiment = mlflow_client(services.tracking_uri).get_experiment_by_name(EXPERIMENT)
    if experiment is not None:
        client = mlflow_client(services.tracking_uri)
        assert client.search_runs([experiment.experiment_id], "attributes.run_name = 'bad'") == []


def test_process_exit_code_and_stderr_name_the_row(services: Services, tmp_path: Path) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "c", "completion": 3}\n')
    spec = make_spec(services, dataset={"uri": f"file://{data}"})
    proc = subprocess.run([sys.executable, "-m", "tuneloop.jobs.train",
                           *job_argv(spec, tmp_path / "s", tmp_path / "r.json", services.tracking_uri, "bad")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == ExitCode.DATA_INVALID
    assert f"{data} line 2: field 'completion' must be a string, got int" in proc.stderr
    assert read_result(tmp_path / "r.json").reason == "DataInvalid"
