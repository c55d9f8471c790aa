"""The contract between the training job and the controller: the JSON the job writes to `--result`.

The job writes it atomically at the end of a successful run (and a failure document on a handled
error), the controller reads it to gate and register. Versioned so either side can evolve.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tuneloop.api.base import ApiModel
from tuneloop.api.finetune import DatasetSummary

RESULT_SCHEMA_VERSION = 1


class ChampionScore(ApiModel):
    """The champion scored on this run's held-out set (its own figures were taken on another one)."""

    version: str = Field(description="The registered version that held the champion alias when the job looked.")
    dataset_hash: str = Field(description="The held-out set it was scored on: this run's dataset hash.")
    metrics: dict[str, float] = Field(default_factory=dict, description="Its held-out metrics on that set.")


class JobResult(ApiModel):
    """Outcome of one training job run."""

    schema_version: int = Field(default=RESULT_SCHEMA_VERSION, description="Result document version.")
    status: Literal["Succeeded", "Failed"] = Field(description="Succeeded or Failed.")
    exit_code: int = Field(default=0, description="The job's exit code (see jobs.errors).")
    reason: str | None = Field(default=None, description="Failure reason, e.g. DataInvalid.")
    message: str | None = Field(default=None, description="Failure detail naming the file, row and field.")
    run_id: str | None = Field(default=None, description="MLflow run id.")
    experiment_id: str | None = Field(default=None, description="MLflow experiment id.")
    model_uri: str | None = Field(default=None, description="MLflow URI of the logged model (runs:/… or models:/…).")
    metrics: dict[str, float] = Field(default_factory=dict, description="Held-out metrics of the fine-tuned model.")
    baseline_metrics: dict[str, float] = Field(
        default_factory=dict, description="Held-out metrics of the prompt baseline."
    )
    train_metrics: dict[str, float] = Field(
        default_factory=dict, description="Final training metrics (loss, tokens/s)."
    )
    dataset: DatasetSummary | None = Field(default=None, description="Data preparation summary.")
    duration_seconds: float | None = Field(default=None, description="Wall time of the job.")
    resumed_from_checkpoint: str | None = Field(default=None, description="Checkpoint the run resumed from, if any.")
    gpu_seconds: float | None = Field(default=None, description="Sum over workers of GPU wall time.")
    champion: ChampionScore | None = Field(
        default=None, description="The current champion scored on this run's held-out set, when its recorded "
        "figures were taken on another (a retrain's new dataset version); the gate compares with these.")
