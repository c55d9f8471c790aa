"""The FineTune kind: what to train (base model, data, method), how (hyperparameters, Ray, GPUs),
how to judge it (evaluation, promotion), and where to register it (MLflow).

Every field a later feature needs is here now, so the CRD does not churn as features land.
Cross-field rules are CEL (`x-kubernetes-validations` in `json_schema_extra`) so `kubectl apply`
refuses a bad spec at once; the rules the schema cannot express are checked by the operator's
`logic.validation`: a contradiction is `InvalidSpec` (terminal until the spec changes), a path or
setting that is not there yet is a wait (`DataNotFound`, `BaseModelNotFound`, `RegistryNotConfigured`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from tuneloop.api.base import ApiModel
from tuneloop.api.common import ComputeResources, SecretKeyRef, WaitStatus
from tuneloop.api.conditions import Condition

Method = Literal["lora", "qlora", "full", "dpo"]
DatasetFormat = Literal["instruction", "chat", "completion", "preference", "text"]
Metric = Literal["exact_match", "json_valid", "field_f1", "loss", "perplexity", "preference_accuracy", "reward_margin"]
Precision = Literal["auto", "bf16", "fp16", "fp32"]
LaunchMode = Literal["RayJob", "ExistingCluster"]
Phase = Literal["Pending", "Launching", "Running", "Registering", "Succeeded", "Failed", "Suspended"]

DEFAULT_METRICS: tuple[Metric, ...] = ("exact_match", "json_valid", "field_f1", "loss")
MODEL_URI_PATTERN = r"^(hf|s3|pvc|file)://\S+$"
DATASET_URI_PATTERN = r"^(s3|pvc|file)://\S+$"
# Lower is better for these metrics; higher for every other one.
LOWER_IS_BETTER: frozenset[str] = frozenset({"loss", "perplexity"})
# Scored from held-out preference pairs: only method dpo has them.
PREFERENCE_METRICS: tuple[Metric, ...] = ("preference_accuracy", "reward_margin")
# Raw documents have no answer to generate and compare: only these score format text.
TEXT_METRICS: tuple[Metric, ...] = ("perplexity", "loss")


def _cel(rule: str, message: str, field_path: str | None = None, reason: str = "FieldValueInvalid") -> dict:
    out = {"rule": rule, "message": message, "reason": reason}
    if field_path:
        out["fieldPath"] = field_path
    return out


class BaseModelRef(ApiModel):
    """The pretrained model to fine-tune."""

    uri: str = Field(
        pattern=MODEL_URI_PATTERN,
        description="Where the base model lives: hf://org/name (local Hugging Face cache; nothing is "
        "downloaded by tests), s3://bucket/prefix, pvc://claim/path or file:///abs/path.",
    )
    revision: str | None = Field(
        default=None, description="Revision (commit, tag or branch) for hf:// models; recorded in lineage."
    )


class LoraSpec(ApiModel):
    """LoRA adapter parameters (used by lora, qlora and dpo)."""

    rank: int = Field(default=8, ge=1, le=1024, description="Adapter rank r.")
    alpha: int = Field(default=16, ge=1, le=4096, description="Scaling numerator lora_alpha (scale = alpha/rank).")
    dropout: float = Field(default=0.05, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "v_proj"],
        min_length=1,
        max_length=64,
        description="Names of the modules to adapt, e.g. q_proj, k_proj, v_proj, o_proj.",
    )


class FieldMapping(ApiModel):
    """Which record fields hold the prompt and the answer, per dataset format."""

    prompt: str = Field(
        default="prompt", min_length=1, description="Prompt field (instruction, completion, preference)."
    )
    completion: str = Field(
        default="completion", min_length=1, description="Target answer field (instruction, completion)."
    )
    system: str | None = Field(default=None, description="Optional system-prompt field (instruction).")
    messages: str = Field(default="messages", min_length=1, description="List of {role, content} (chat).")
    chosen: str = Field(default="chosen", min_length=1, description="Preferred answer (preference/dpo).")
    rejected: str = Field(default="rejected", min_length=1, description="Dispreferred answer (preference/dpo).")
    text: str = Field(default="text", min_length=1, description="Document field (text: continued pretraining).")


class DatasetSpec(ApiModel):
    """Training data and how to prepare it."""

    uri: str = Field(
        pattern=DATASET_URI_PATTERN,
        description="JSONL or Parquet file or folder: file:///abs/path, pvc://claim/path or s3://bucket/key.",
    )
    format: DatasetFormat = Field(
        default="instruction",
        description="Record shape: instruction, chat, completion, preference (prompt, chosen, rejected: method dpo) "
        "or text (one document per record: continued pretraining, causal LM loss over every token, packed into "
        "maxSeqLength blocks).",
    )
    fields: FieldMapping = Field(default_factory=FieldMapping, description="Record field names for the format.")
    eval_fraction: float = Field(
        default=0.1,
        gt=0,
        le=0.5,
        description="Share of examples held out for evaluation, in (0, 0.5]. The split is by a hash of each "
        "example, so an example never changes sides when data is appended or the job reruns.",
    )
    split_seed: str = Field(
        default="tuneloop", min_length=1, max_length=64, description="Salt mixed into the split hash."
    )
    dedupe: bool = Field(default=True, description="Drop exact and normalised (case/whitespace) duplicates.")
    pii_scrub: bool = Field(
        default=True, description="Redact emails, phone numbers, card numbers (Luhn), IBANs and national IDs."
    )
    max_examples: int | None = Field(default=None, ge=1, description="Use at most this many examples (after dedupe).")


class TrainingSpec(ApiModel):
    """Optimisation hyperparameters."""

    epochs: int = Field(default=3, ge=1, le=1000, description="Passes over the training split.")
    learning_rate: float = Field(default=2e-4, gt=0, le=1, description="Peak AdamW learning rate.")
    batch_size: int = Field(default=8, ge=1, le=4096, description="Examples per worker per step.")
    gradient_accumulation_steps: int = Field(default=1, ge=1, le=1024, description="Steps accumulated per update.")
    max_seq_length: int = Field(default=512, ge=8, le=131072, description="Tokens per example after truncation.")
    warmup_ratio: float = Field(default=0.0, ge=0, le=0.5, description="Share of updates with linear warmup.")
    weight_decay: float = Field(default=0.0, ge=0, le=1, description="AdamW weight decay.")
    seed: int = Field(default=42, ge=0, description="Random seed for initialisation and shuffling.")
    precision: Precision = Field(default="auto", description="auto picks bf16 on GPUs that support it, else fp32.")


class DpoSpec(ApiModel):
    """Direct Preference Optimization (method dpo): the LoRA policy against the frozen base as reference."""

    beta: float = Field(
        default=0.1, gt=0, le=10,
        description="Strength of the pull towards the reference (the base with the adapter disabled): the DPO "
        "loss is -log sigmoid(beta * ((log pi(chosen) - log ref(chosen)) - (log pi(rejected) - log ref(rejected)))).",
    )


class TrainingResources(ComputeResources):
    """Ray Train workers and the compute each one gets."""

    workers: int = Field(default=1, ge=1, le=512, description="Ray Train workers (DDP ranks).")


class RaySpec(ApiModel):
    """Where the training job runs."""

    mode: LaunchMode = Field(
        default="RayJob",
        description="RayJob creates a KubeRay RayJob with its own cluster; ExistingCluster submits to the "
        "job API at `address`.",
    )
    address: str | None = Field(
        default=None,
        pattern=r"^https?://\S+$",
        description="Ray dashboard/job API address (http://host:8265). Required for ExistingCluster.",
    )
    image: str | None = Field(
        default=None, description="Container image for head and workers (RayJob); defaults to the operator setting."
    )
    runtime_env: dict[str, Any] = Field(
        default_factory=dict,
        description="Ray runtime_env merged into the job's (env_vars, pip, working_dir, …).",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    service_account_name: str | None = Field(default=None, description="Service account for Ray pods (RayJob).")

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                _cel(
                    "!has(self.mode) || self.mode != 'ExistingCluster' || has(self.address)",
                    "mode ExistingCluster submits to a running Ray cluster: set spec.ray.address "
                    "(its job API, e.g. http://ray-head.ray.svc:8265)",
                    ".address",
                    "FieldValueRequired",
                )
            ]
        }
    }


class PromptBaselineSpec(ApiModel):
    """The base model prompted with k examples from the training split: what fine-tuning must beat."""

    enabled: bool = Field(default=True, description="Score the prompt baseline on the held-out set.")
    shots: int = Field(default=3, ge=0, le=32, description="Few-shot examples in the baseline prompt.")


class PromotionRule(ApiModel):
    """When a candidate gets the champion alias."""

    metric: Metric = Field(default="exact_match", description="Metric compared on the frozen held-out set.")
    min_improvement: float = Field(
        default=0.0,
        ge=0,
        description="How much the candidate must beat the prompt baseline by (absolute, in metric units).",
    )
    min_improvement_over_champion: float = Field(
        default=0.0,
        ge=0,
        description="How much it must beat the current champion by; 0 means strictly better.",
    )


class EvaluationSpec(ApiModel):
    """How a run is scored on the held-out set."""

    metrics: list[Metric] = Field(
        default_factory=lambda: list(DEFAULT_METRICS),
        min_length=1,
        max_length=8,
        description="Metrics to compute: exact_match, json_valid, field_f1 (JSON outputs), loss (answer tokens), "
        "perplexity (exp of loss; every token for format text, lower is better), preference_accuracy and "
        "reward_margin (method dpo: the share of held-out pairs whose implicit reward prefers chosen, ties "
        "half, and the mean chosen-minus-rejected reward).",
    )
    max_new_tokens: int = Field(default=64, ge=1, le=8192, description="Generation budget per held-out example.")
    max_examples: int | None = Field(default=None, ge=1, description="Score at most this many held-out examples.")
    baseline: PromptBaselineSpec = Field(default_factory=PromptBaselineSpec, description="Prompt baseline.")
    promotion: PromotionRule = Field(default_factory=PromotionRule, description="Champion rule.")


class RegistrySpec(ApiModel):
    """Where versions are registered."""

    model_name: str = Field(
        min_length=1, max_length=256, description="MLflow registered model name, e.g. invoices-extractor."
    )
    tracking_uri: str | None = Field(
        default=None, description="MLflow tracking URI; defaults to the operator's TUNELOOP_MLFLOW_TRACKING_URI."
    )
    tracking_uri_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Secret (same namespace) whose key holds the MLflow tracking URI the job logs to (it may embed "
        "credentials); its optional keys MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD and MLFLOW_TRACKING_TOKEN "
        "become the job's credentials. RayJob mode only: they reach the Ray pods as Secret-backed environment "
        "variables, never in the RayJob in clear; the operator never reads the Secret and registers the version "
        "with its own TUNELOOP_MLFLOW_TRACKING_URI, which must name the same server. Exclusive with trackingUri.",
    )
    experiment: str | None = Field(
        default=None, description="MLflow experiment; defaults to tuneloop/<namespace>/<name>."
    )


class FineTuneSpec(ApiModel):
    """Desired fine-tuning: data, base model, method, compute, evaluation and registry."""

    base_model: BaseModelRef = Field(description="The pretrained model to fine-tune.")
    method: Method = Field(
        default="lora",
        description="lora, qlora (4-bit base, needs GPUs), full, or dpo (a LoRA adapter trained with the DPO loss "
        "on format preference).",
    )
    lora: LoraSpec = Field(default_factory=LoraSpec, description="Adapter parameters (lora, qlora, dpo).")
    dpo: DpoSpec = Field(default_factory=DpoSpec, description="DPO loss parameters (method dpo).")
    dataset: DatasetSpec = Field(description="Training data and its preparation.")
    training: TrainingSpec = Field(default_factory=TrainingSpec, description="Hyperparameters.")
    resources: TrainingResources = Field(default_factory=TrainingResources, description="Workers and compute.")
    ray: RaySpec = Field(default_factory=RaySpec, description="Where the job runs.")
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec, description="Held-out scoring and promotion.")
    registry: RegistrySpec = Field(description="MLflow registration.")
    suspend: bool = Field(default=False, description="Stop the running job and launch nothing while true.")
    active_deadline_seconds: int | None = Field(
        default=None, ge=1, description="Fail an attempt that runs longer than this (also set on the RayJob)."
    )
    backoff_limit: int = Field(default=2, ge=0, le=100, description="Retries of a failed Ray job before Failed.")

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                _cel(
                    "self.method != 'qlora' "
                    "|| (has(self.resources) && has(self.resources.gpus) && self.resources.gpus >= 1)",
                    "qlora loads the base model in 4-bit with bitsandbytes and needs GPUs: set "
                    "spec.resources.gpus >= 1, or use method lora",
                    ".resources.gpus",
                ),
                _cel(
                    "self.method != 'dpo' || (has(self.dataset.format) && self.dataset.format == 'preference')",
                    "method dpo trains on preference pairs: set spec.dataset.format to preference",
                    ".dataset.format",
                ),
                _cel(
                    "!has(self.dataset.format) || self.dataset.format != 'preference' || self.method == 'dpo'",
                    "dataset format preference is only used by method dpo",
                    ".method",
                ),
                _cel(
                    "!has(self.dataset.format) || self.dataset.format != 'text' "
                    "|| self.method == 'lora' || self.method == 'full'",
                    "dataset format text (continued pretraining) trains with method lora or full",
                    ".method",
                ),
                _cel(
                    # Spelled out, not left to defaults: the defaults (exact_match, ...) cannot score text.
                    "!has(self.dataset.format) || self.dataset.format != 'text' || (has(self.evaluation) "
                    "&& has(self.evaluation.metrics) && self.evaluation.metrics.all(m, m in "
                    + str(list(TEXT_METRICS)) + ") && has(self.evaluation.promotion) "
                    "&& has(self.evaluation.promotion.metric) && self.evaluation.promotion.metric in "
                    + str(list(TEXT_METRICS)) + ")",
                    "dataset format text has no answers to generate and compare: set spec.evaluation.metrics to "
                    "[perplexity, loss] and spec.evaluation.promotion.metric to perplexity",
                    ".evaluation.metrics",
                ),
                _cel(
                    "self.method == 'dpo' || !has(self.evaluation) || !has(self.evaluation.metrics) "
                    "|| !self.evaluation.metrics.exists(m, m in " + str(list(PREFERENCE_METRICS)) + ")",
                    "preference_accuracy and reward_margin score preference pairs: they need method dpo",
                    ".evaluation.metrics",
                ),
                _cel(
                    "!has(self.evaluation) || !has(self.evaluation.promotion) "
                    "|| !has(self.evaluation.promotion.metric) || !has(self.evaluation.metrics)"
                    " || self.evaluation.promotion.metric in self.evaluation.metrics",
                    "spec.evaluation.promotion.metric must be one of spec.evaluation.metrics",
                    ".evaluation.promotion.metric",
                ),
            ]
        }
    }


# --- status ----------------------------------------------------------------------------------


class RunStatus(ApiModel):
    """The current run: one per spec generation or retrain request."""

    number: int = Field(description="Run number, 1-based; increases with each new generation or retrain.")
    generation: int = Field(description="metadata.generation the run trains.")
    trigger: str | None = Field(default=None, description="Why the run started: spec, or retrain:<request id>.")
    trigger_reason: str | None = Field(
        default=None, description="For a retrain: who asked, when and why (the ModelDeployment's quality and drift "
        "figures), from the tuneloop.io/retrain-reason annotation."
    )
    added_data: str | None = Field(
        default=None, description="For a retrain: examples added to spec.dataset for this run (the deployment's "
        "labelled feedback, PII-scrubbed), from the tuneloop.io/retrain-data annotation; the spec is unchanged."
    )
    mode: LaunchMode | None = Field(default=None, description="RayJob or ExistingCluster.")
    spec_hash: str | None = Field(
        default=None,
        description="sha256 of the spec the run trains (every field but suspend); a different hash starts a new run.",
    )
    attempt: int = Field(default=0, description="Attempt number within the run, 1-based once launched.")
    ray_job_name: str | None = Field(default=None, description="RayJob name (RayJob mode).")
    submission_id: str | None = Field(default=None, description="Ray job submission id.")
    ray_cluster_name: str | None = Field(default=None, description="Ray cluster running the job.")
    dashboard_url: str | None = Field(default=None, description="Ray dashboard URL.")
    job_status: str | None = Field(default=None, description="Ray job status (PENDING, RUNNING, SUCCEEDED, …).")
    job_deployment_status: str | None = Field(default=None, description="KubeRay jobDeploymentStatus.")
    start_time: datetime | None = Field(default=None, description="When the first attempt launched.")
    end_time: datetime | None = Field(default=None, description="When the run reached a terminal phase.")
    attempt_start_time: datetime | None = Field(default=None, description="When the current attempt launched.")
    result_uri: str | None = Field(default=None, description="Where the job writes its result JSON.")
    message: str | None = Field(default=None, description="Last message from Ray about this run.")
    inconsistent_since: datetime | None = Field(
        default=None, description="When tuneloop first saw the current attempt's Ray job ended (jobStatus FAILED "
        "or STOPPED) while KubeRay's jobDeploymentStatus stayed Running (kuberay #3553). The attempt fails "
        "TUNELOOP_INCONSISTENT_GRACE_SECONDS after the Ray job's end (status.rayJobInfo.endTime), or after this "
        "time when KubeRay reports no end time. Cleared when the state clears or a new attempt launches.",
    )


class AttemptRecord(ApiModel):
    """One finished attempt of a run."""

    run: int = Field(description="Run number.")
    attempt: int = Field(description="Attempt number within the run.")
    id: str = Field(description="RayJob name or submission id of the attempt.")
    outcome: Literal["Succeeded", "Failed", "Stopped", "DeadlineExceeded"] = Field(description="How it ended.")
    reason: str | None = Field(default=None, description="Why it ended that way.")
    start_time: datetime | None = Field(default=None, description="Launch time.")
    end_time: datetime | None = Field(default=None, description="End time.")


class DatasetSummary(ApiModel):
    """What data preparation produced."""

    hash: str = Field(description="sha256 of the prepared examples, split included (order-independent).")
    total_rows: int = Field(description="Rows read.")
    train_rows: int = Field(description="Rows in the training split.")
    eval_rows: int = Field(description="Rows in the frozen held-out split.")
    duplicates_removed: int = Field(default=0, description="Exact and normalised duplicates dropped.")
    pii_redactions: dict[str, int] = Field(default_factory=dict, description="Redactions by kind (email, phone, …).")
    pii_engine: str | None = Field(default=None, description="The PII scrubber that ran: 'presidio' (Presidio's "
                                   "pattern recognizers and phonenumbers, the pii extra) or 'regex' (the built-in "
                                   "fallback). Unset when piiScrub is off.")
    pii_names: str | None = Field(default=None, description="Person-name detection: 'on: spaCy model <name>', or "
                                  "'off: <why>' (no spaCy model installed, or the regex engine): names then stay in "
                                  "the data. Unset when piiScrub is off.")
    held_out_uri: str | None = Field(default=None, description="Where the frozen held-out set was written.")
    added_rows: int = Field(default=0, description="Of total_rows, examples added to spec.dataset for this run "
                            "(a retrain's labelled feedback): a new dataset version, so a new hash.")


class ModelVersionStatus(ApiModel):
    """The registered version this FineTune produced."""

    name: str = Field(description="MLflow registered model name.")
    version: str = Field(description="MLflow model version.")
    uri: str | None = Field(default=None, description="models:/<name>/<version>.")
    run_id: str | None = Field(default=None, description="MLflow run id of the training run.")
    alias: str | None = Field(default=None, description="champion or challenger.")


class PromotionStatus(ApiModel):
    """The gate's decision and the numbers behind it."""

    promoted: bool = Field(description="Whether the version got the champion alias.")
    metric: str = Field(description="Metric compared.")
    candidate: float | None = Field(default=None, description="Candidate's value on the held-out set.")
    baseline: float | None = Field(default=None, description="Prompt baseline's value.")
    champion: float | None = Field(default=None, description="Previous champion's value, if there was one.")
    champion_version: str | None = Field(default=None, description="Previous champion's version.")
    message: str = Field(default="", description="Why, and by how much it beat or missed.")


class AliasEvent(ApiModel):
    """One alias move. MLflow keeps no alias history (mlflow #2169), so tuneloop keeps it."""

    alias: str = Field(description="Alias moved (champion, challenger).")
    version: str = Field(description="Version that got the alias.")
    previous_version: str | None = Field(default=None, description="Version that held it before.")
    time: datetime = Field(description="When.")
    run: int | None = Field(default=None, description="Run that caused the move.")
    reason: str = Field(default="", description="Why.")


class CostStatus(ApiModel):
    """GPU usage and an estimate of its price (operator price table)."""

    gpu_hours: float = Field(default=0.0, description="GPU-hours used by all attempts of all runs.")
    estimated_usd: float = Field(default=0.0, description="gpuHours times the operator's price for the GPU type.")
    gpu_type: str | None = Field(default=None, description="GPU type priced.")


class FineTuneStatus(ApiModel):
    """Observed state of a FineTune, written only by the operator."""

    phase: Phase | None = Field(
        default=None, description="Pending, Launching, Running, Registering, Succeeded, Failed or Suspended."
    )
    observed_generation: int | None = Field(default=None, description="Last metadata.generation acted on.")
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, Succeeded, Failed, Suspended, ModelRegistered, Promoted.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    run: RunStatus | None = Field(default=None, description="The current (or last) run.")
    attempts: list[AttemptRecord] = Field(default_factory=list, description="Finished attempts, newest last (bounded).")
    handled_retrain_request: str | None = Field(
        default=None, description="Id of the last retrain request annotation that started a run."
    )
    dataset: DatasetSummary | None = Field(default=None, description="Data preparation summary of the last run.")
    metrics: dict[str, float] = Field(default_factory=dict, description="Held-out metrics of the last run.")
    baseline_metrics: dict[str, float] = Field(default_factory=dict, description="Prompt-baseline metrics, same set.")
    model: ModelVersionStatus | None = Field(default=None, description="Registered version of the last run.")
    promotion: PromotionStatus | None = Field(default=None, description="Champion decision of the last run.")
    alias_history: list[AliasEvent] = Field(
        default_factory=list, description="Alias moves this FineTune made (bounded)."
    )
    cost: CostStatus | None = Field(default=None, description="GPU-hours and estimated price.")
    waiting: WaitStatus | None = Field(
        default=None,
        description="What the FineTune waits on outside its spec (DataNotFound, BaseModelNotFound, "
        "RegistryNotConfigured, SecretNotFound, RayUnavailable, RegistryUnavailable); absent when nothing.",
    )


class FineTune(ApiModel):
    """A fine-tuning of a base model on a dataset, evaluated, registered in MLflow and gated for promotion."""

    api_version: str = Field(default="tuneloop.io/v1alpha1", description="tuneloop.io/v1alpha1")
    kind: str = Field(default="FineTune", description="FineTune")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Standard object metadata.")
    spec: FineTuneSpec = Field(description="Desired fine-tuning.")
    status: FineTuneStatus | None = Field(default=None, description="Observed state, written by the operator.")
