"""MLflow for one training job: one run holding the spec as parameters, lineage and dataset tags, the
per-epoch training metrics, the held-out metrics of the model and of the prompt baseline, the frozen
held-out set as an artifact, and the trained model logged as a pyfunc (see jobs.pyfunc_model for why).

A rerun of the same run storage (a resumed job) continues the same MLflow run — its id is kept in the
storage folder — so a killed attempt does not leave a second, half-filled run behind. Registration
and aliases belong to the controller. MLflow failures become TRACKING_FAILED.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from tuneloop.api import constants
from tuneloop.api.finetune import DatasetSummary, FineTuneSpec
from tuneloop.api.results import JobResult
from tuneloop.jobs.errors import ExitCode, JobError

MODEL_NAME = "model"
RUN_STATE_FILE = "mlflow_run.json"
MAX_PARAM_CHARS = 500
# user:password@ in a URL (a tracking URI from a Secret may carry them): never into a message or a log.
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/\s@]+@")


def redact(text: str) -> str:
    """`text` with the credentials of every URL in it replaced by ***."""
    return _USERINFO.sub(r"\1***@", text)


@contextlib.contextmanager
def _mlflow_errors(what: str) -> Iterator[None]:
    try:
        yield
    except JobError:
        raise
    except Exception as e:
        # MLflow's own messages name the request URL, credentials included.
        raise JobError(ExitCode.TRACKING_FAILED, redact(f"MLflow {what} failed: {type(e).__name__}: {e}")) from e


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """Nested spec → {"training.epochs": "3", ...}; lists as JSON; values cut to MLflow's limit."""
    if isinstance(value, Mapping):
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    text = json.dumps(value) if isinstance(value, list | tuple) else str(value)
    return {prefix: text[:MAX_PARAM_CHARS]}


class Tracker:
    """The job's MLflow run. `start()` opens (or resumes) it; `finish()` closes it."""

    def __init__(self, tracking_uri: str | None, experiment: str, run_name: str | None, tags: Mapping[str, str],
                 storage_dir: Path) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.run_name = run_name
        self.tags = dict(tags)
        self.state_file = storage_dir / RUN_STATE_FILE
        self.run_id: str | None = None
        self.experiment_id: str | None = None

    def start(self) -> str:
        import mlflow

        with _mlflow_errors(f"connecting to {self.tracking_uri or 'the default tracking URI'}"):
            if self.tracking_uri:
                mlflow.set_tracking_uri(self.tracking_uri)
            self.tracking_uri = mlflow.get_tracking_uri()  # what the workers log live epochs to
            experiment = mlflow.set_experiment(self.experiment)
            self.experiment_id = experiment.experiment_id
            previous = self._previous_run_id()
            if previous is not None:
                run = mlflow.start_run(run_id=previous)
            else:
                run = mlflow.start_run(run_name=self.run_name, tags=self.tags)
            mlflow.set_tags(self.tags)
        self.run_id = run.info.run_id
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps({"run_id": self.run_id, "experiment_id": self.experiment_id}))
        return self.run_id

    def _previous_run_id(self) -> str | None:
        """The run an earlier attempt on this storage opened, unless it already finished."""
        import mlflow

        if not self.state_file.is_file():
            return None
        run_id = json.loads(self.state_file.read_text()).get("run_id")
        try:
            run = mlflow.get_run(run_id)
        except Exception:
            return None
        if run.info.experiment_id != self.experiment_id or run.info.status == "FINISHED":
            return None
        return str(run_id)

    def log_spec(self, spec: FineTuneSpec) -> None:
        import mlflow

        params = flatten(spec.model_dump(mode="json", by_alias=True, exclude={"ray"}))
        with _mlflow_errors("logging parameters"):
            existing = mlflow.get_run(self.run_id).data.params if self.run_id else {}
            fresh = {k: v for k, v in params.items() if k not in existing}
            items = list(fresh.items())
            for i in range(0, len(items), 100):
                mlflow.log_params(dict(items[i: i + 100]))
            mlflow.set_tags({constants.TAG_METHOD: spec.method, constants.TAG_BASE_MODEL: spec.base_model.uri,
                             constants.TAG_DATASET_URI: spec.dataset.uri,
                             **({constants.TAG_BASE_MODEL_REVISION: spec.base_model.revision}
                                if spec.base_model.revision else {})})

    def log_dataset(self, summary: DatasetSummary, held_out_path: Path) -> None:
        import mlflow

        tags = {
            constants.TAG_DATASET_HASH: summary.hash,
            "tuneloop.dataset.total_rows": str(summary.total_rows),
            "tuneloop.dataset.train_rows": str(summary.train_rows),
            "tuneloop.dataset.eval_rows": str(summary.eval_rows),
            "tuneloop.dataset.duplicates_removed": str(summary.duplicates_removed),
            "tuneloop.dataset.pii_redactions": json.dumps(summary.pii_redactions, sort_keys=True),
        }
        with _mlflow_errors("logging the dataset"):
            mlflow.set_tags(tags)
            mlflow.log_artifact(str(held_out_path), artifact_path="dataset")

    def set_stage(self, stage: str) -> None:
        """Tag where the job is (prepared, training, evaluating, logging_model, succeeded, failed)."""
        import mlflow

        with _mlflow_errors("tagging the stage"):
            mlflow.set_tag(constants.TAG_STAGE, stage)

    def log_history(self, history: list[dict[str, float]]) -> None:
        """Log the epochs the workers did not already log live (step = epoch number)."""
        import mlflow
        from mlflow.tracking import MlflowClient

        with _mlflow_errors("logging epoch metrics"):
            logged = {m.step for m in MlflowClient().get_metric_history(str(self.run_id), "train_loss")}
            for entry in history:
                step = int(entry["epoch"])
                if step not in logged:
                    mlflow.log_metrics({k: float(v) for k, v in entry.items() if k != "epoch"}, step=step)

    def log_evaluation(self, metrics: Mapping[str, float], baseline: Mapping[str, float], predictions: Path) -> None:
        import mlflow

        values = {f"eval_{k}": v for k, v in metrics.items()} | {f"baseline_{k}": v for k, v in baseline.items()}
        with _mlflow_errors("logging evaluation"):
            mlflow.log_metrics(values)
            mlflow.set_tags({f"{constants.TAG_EVAL_METRIC_PREFIX}{k}": repr(float(v)) for k, v in metrics.items()})
            if predictions.is_file():
                mlflow.log_artifact(str(predictions), artifact_path="evaluation")

    def log_model(self, trained_dir: Path, spec: FineTuneSpec) -> str:
        """Log the adapter/full model as a pyfunc; returns its URI (models:/m-…) for registration."""
        import mlflow.pyfunc

        from tuneloop.jobs import pyfunc_model

        config = {"method": spec.method, "base_model_uri": spec.base_model.uri,
                  "base_model_revision": spec.base_model.revision, "max_new_tokens": spec.evaluation.max_new_tokens}
        with _mlflow_errors("logging the model"):
            info = mlflow.pyfunc.log_model(
                name=MODEL_NAME, python_model=pyfunc_model.TunedTextModel(),
                artifacts={"model": str(trained_dir)}, model_config=config,
                # Listed, not inferred: inference loads the model in a subprocess (slow, and needs the base).
                pip_requirements=_requirements(), tags={constants.TAG_METHOD: spec.method},
            )
        return str(info.model_uri)

    def log_result(self, result: JobResult) -> None:
        """The result document on the run, where the controller reads it when the job ran in a pod."""
        import mlflow

        with _mlflow_errors("logging the result document"):
            mlflow.log_dict(result.to_k8s(), constants.RESULT_ARTIFACT)

    def finish(self, succeeded: bool) -> None:
        import mlflow

        if self.run_id is None:
            return
        with contextlib.suppress(Exception):  # closing must never hide the job's own error
            mlflow.set_tag(constants.TAG_STAGE, "succeeded" if succeeded else "failed")
            mlflow.end_run(status="FINISHED" if succeeded else "FAILED")


def _requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for package in ("mlflow", "torch", "transformers", "peft", "tokenizers", "safetensors", "tuneloop"):
        try:
            out.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            out.append(package)
    return out
