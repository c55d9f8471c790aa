"""The ModelDeployment kind: serve a registered version, log its traffic, monitor drift and quality
with Evidently, and ask the referenced FineTune to retrain — guarded by hysteresis, cooldown, one
retrain in flight, a daily cap, a GPU-hour budget and optional approval.

Retraining never edits the FineTune's spec (Git owns it): it annotates the FineTune with a request
id, and the FineTune controller starts a run for it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from tuneloop.api.base import ApiModel
from tuneloop.api.common import ComputeResources, LocalObjectRef, WaitStatus
from tuneloop.api.conditions import Condition

Runtime = Literal["RayServe", "KServe"]
Engine = Literal["Transformers", "VLLM"]
ServeMode = Literal["ExistingCluster", "RayService"]
# What the quality monitors compute, each with its range: the minimum must lie inside it.
QualityMetric = Literal["exact_match", "field_f1", "json_valid"]
# The descriptor columns the monitors compute (tuneloop.monitoring.columns; a unit test keeps the two equal).
# No OOV or sentiment column: Evidently's OOVWordsPercentage and Sentiment download NLTK data and fail offline.
DriftColumn = Literal[
    "prompt_length", "prompt_word_count", "prompt_non_letter_share", "response_length", "response_word_count",
    "response_non_letter_share", "response_json_valid", "response_schema_match",
]
QUALITY_METRIC_RANGES: dict[str, tuple[float, float]] = {"exact_match": (0.0, 1.0), "field_f1": (0.0, 1.0),
                                                         "json_valid": (0.0, 1.0)}
Approval = Literal["Auto", "Manual"]
DeploymentPhase = Literal["Pending", "Deploying", "Serving", "Degraded", "Retraining", "Failed", "Suspended"]
RetrainState = Literal["PendingApproval", "Requested", "Running", "Succeeded", "NotPromoted", "Failed", "Rejected"]


class ModelRef(ApiModel):
    """A registered MLflow model version: by alias (follows promotions) or by pinned version."""

    name: str = Field(min_length=1, max_length=256, description="MLflow registered model name.")
    alias: str | None = Field(default=None, min_length=1, description="Alias to follow, e.g. champion.")
    version: str | None = Field(default=None, pattern=r"^[0-9]+$", description="Pinned version number.")
    tracking_uri: str | None = Field(default=None, description="MLflow tracking URI; defaults to the operator setting.")

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.alias) != has(self.version)",
                    "message": "set exactly one of spec.model.alias (follow promotions) or spec.model.version (pin)",
                    "reason": "FieldValueInvalid",
                }
            ]
        }
    }


class CanarySpec(ApiModel):
    """Canary analysis of a new version (Flagger's vocabulary): the candidate takes `stepWeight` percent of
    the requests that name no model, `stepWeight` more after each passed check up to `maxWeight`, then all
    of them; after `threshold` failed checks the stable version takes everything back."""

    interval_seconds: int = Field(default=60, ge=1, le=86400, description="Seconds between checks.")
    threshold: int = Field(default=3, ge=1, le=100, description="Failed checks (in all) before rolling back.")
    step_weight: int = Field(default=10, ge=1, le=100, description="Percent of traffic added after a passed check.")
    max_weight: int = Field(default=50, ge=1, le=100,
                            description="Highest canary percentage; a passed check there promotes the candidate.")
    max_error_rate: float = Field(
        default=0.01, ge=0, le=1, description="A check fails when the candidate's failed share of requests in the "
        "interval is above this (0.01 = 1%).")
    max_p95_latency_ms: float | None = Field(
        default=None, gt=0, description="A check fails when the candidate's p95 latency in the interval is above "
        "this; no latency bound when unset.")
    min_requests: int = Field(
        default=10, ge=1, le=1000000, description="Candidate requests a check needs to conclude; with fewer the "
        "weight is held and the check counts neither way.")

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.stepWeight) || !has(self.maxWeight) || self.stepWeight <= self.maxWeight",
                    "message": "spec.serving.canary.stepWeight must be <= maxWeight",
                    "fieldPath": ".stepWeight",
                    "reason": "FieldValueInvalid",
                }
            ]
        }
    }


class VllmSpec(ApiModel):
    """The GPU engine: Ray Serve LLM (`ray.serve.llm`) on vLLM, one base model per replica and LoRA adapters
    loaded per request from an object store (vLLM's dynamic LoRA loading reads only remote stores)."""

    adapter_store_uri: str = Field(
        pattern=r"^(s3|gs|abfss|azure)://\S+$",
        description="Object-store prefix holding one folder per version, <model>--v<version>, with the adapter's "
        "adapter_config.json and weights (vLLM loads them on first use).")
    base_model_source: str | None = Field(
        default=None, description="Base model for vLLM (a Hugging Face id, a local path, or an s3://, gs:// "
        "prefix); defaults to the served version's recorded base model (hf:// stripped).")
    max_adapters_per_replica: int = Field(default=16, ge=1, le=1024, description="Adapters kept per replica.")
    max_lora_rank: int = Field(default=16, ge=1, le=512, description="Largest adapter rank vLLM reserves for.")
    max_model_len: int | None = Field(default=None, ge=16, description="vLLM max_model_len (prompt + answer).")
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1,
                                                 description="Share of each GPU vLLM may take.")
    accelerator_type: str | None = Field(default=None, description="Ray accelerator type, e.g. A10G, L4, H100.")


class ServingSpec(ApiModel):
    """How the version is served."""

    runtime: Runtime = Field(default="RayServe", description="RayServe or KServe.")
    replicas: int = Field(default=1, ge=0, le=1000, description="Serving replicas; 0 scales to zero.")
    resources: ComputeResources = Field(default_factory=ComputeResources, description="Compute per replica.")
    max_new_tokens: int = Field(default=256, ge=1, le=32768, description="Generation cap per request.")
    log_requests: bool = Field(default=True, description="Log prompts and responses for monitoring.")
    traffic_log_uri: str | None = Field(
        default=None, description="Where the inference log is written (file:// or pvc://); defaults per deployment."
    )
    mode: ServeMode = Field(
        default="ExistingCluster",
        description="ExistingCluster deploys a Serve application through the Ray dashboard at `address`; "
        "RayService creates an owned KubeRay RayService with its own cluster (workers sized from `resources`; "
        "its image, the operator setting TUNELOOP_RAY_IMAGE, must contain tuneloop's serving package).",
    )
    address: str | None = Field(
        default=None,
        pattern=r"^https?://\S+$",
        description="Ray dashboard address (http://host:8265) for ExistingCluster; defaults to the operator "
        "setting TUNELOOP_SERVE_ADDRESS.",
    )
    endpoint_base: str | None = Field(
        default=None, pattern=r"^https?://\S+$",
        description="Base URL clients reach the Serve proxy at (an Ingress, a load balancer), used in "
        "status.endpoint; defaults to the operator setting TUNELOOP_SERVE_ENDPOINT_BASE, else the address the "
        "operator reaches the proxy at.",
    )
    engine: Engine = Field(
        default="Transformers", description="Transformers: tuneloop's CPU/GPU application (PEFT adapters per "
        "version, multiplexed). VLLM: Ray Serve LLM on vLLM (GPU only; `vllm` settings; the `gpu` extra and an "
        "image with vLLM); clients name the version as model <model>:<model>--v<version>.")
    vllm: VllmSpec | None = Field(default=None, description="Settings of the VLLM engine.")
    canary: CanarySpec | None = Field(
        default=None, description="Move to a new version of the followed alias by canary analysis with automatic "
        "rollback (ExistingCluster only); unset: the new version takes all traffic once it answers a warm-up.")

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.canary) || !has(self.mode) || self.mode == 'ExistingCluster'",
                    "message": "spec.serving.canary needs mode ExistingCluster (the operator reads the candidate's "
                    "figures from the application it deploys there)",
                    "fieldPath": ".canary",
                    "reason": "FieldValueInvalid",
                },
                {
                    "rule": "!has(self.engine) || self.engine != 'VLLM' || (has(self.vllm) && has(self.resources) "
                    "&& has(self.resources.gpus) && self.resources.gpus >= 1 && !has(self.canary))",
                    "message": "spec.serving.engine VLLM needs spec.serving.vllm (its adapterStoreUri) and "
                    "resources.gpus >= 1, and has no canary (the version is named in each request)",
                    "fieldPath": ".engine",
                    "reason": "FieldValueInvalid",
                },
            ]
        }
    }


class ReferenceData(ApiModel):
    """What current traffic is compared against."""

    source: Literal["HeldOut", "Uri"] = Field(
        default="HeldOut", description="HeldOut uses the FineTune's frozen held-out set; Uri reads `uri`."
    )
    uri: str | None = Field(
        default=None, pattern=r"^(s3|pvc|file)://\S+$", description="Reference data (JSONL/Parquet)."
    )

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.source) || self.source != 'Uri' || has(self.uri)",
                    "message": "reference source Uri needs spec.monitoring.reference.uri",
                    "fieldPath": ".uri",
                    "reason": "FieldValueRequired",
                }
            ]
        }
    }


_DEFAULT_DRIFT_COLUMNS: tuple[DriftColumn, ...] = (
    "prompt_length", "prompt_word_count", "prompt_non_letter_share", "response_length", "response_json_valid",
)


class DriftSpec(ApiModel):
    """Evidently data-drift thresholds."""

    share_threshold: float = Field(
        default=0.5, gt=0, le=1, description="Drift when this share of monitored columns drifted."
    )
    columns: list[DriftColumn] = Field(
        default_factory=lambda: list(_DEFAULT_DRIFT_COLUMNS),
        min_length=1,
        description="Text descriptors of the inputs (prompt_*) and answers (response_*) tested for drift, each with "
        "its own method (Kolmogorov-Smirnov for numbers, Jensen-Shannon for yes/no columns); response_schema_match "
        "checks the JSON keys the reference answers share.",
    )


class QualitySpec(ApiModel):
    """Quality rule on logged traffic with feedback or labels."""

    metric: QualityMetric = Field(
        default="exact_match", description="Quality metric the monitors compute on the window: exact_match, "
        "field_f1 or json_valid (each in [0, 1])."
    )
    minimum: float = Field(default=0.5, description="Breach when the metric falls below this; within the metric's "
                           "range.")
    recovery_margin: float = Field(
        default=0.02, ge=0, description="Hysteresis: a breach clears only above minimum + recoveryMargin."
    )
    consecutive_breaches: int = Field(default=3, ge=1, le=100, description="Breaches in a row before acting.")

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    # Each metric's range is spelled out, so a metric with another range gets its own clause.
                    "rule": "!has(self.minimum) || " + " && ".join(
                        f"(self.metric != '{m}' || (self.minimum >= {lo} && self.minimum <= {hi}))"
                        for m, (lo, hi) in QUALITY_METRIC_RANGES.items()),
                    "message": "spec.monitoring.quality.minimum must lie within the metric's range: exact_match, "
                    "field_f1 and json_valid are in [0, 1]",
                    "fieldPath": ".minimum",
                    "reason": "FieldValueInvalid",
                }
            ]
        }
    }


class MonitoringSpec(ApiModel):
    """Scheduled drift and quality monitoring."""

    enabled: bool = Field(default=True, description="Run the monitors.")
    interval_seconds: int = Field(default=3600, ge=10, description="Seconds between monitor runs.")
    window_seconds: int = Field(default=86400, ge=60, description="Traffic window each run looks at.")
    min_samples: int = Field(default=100, ge=1, description="Skip (Unknown) a window with fewer requests.")
    reference: ReferenceData = Field(default_factory=ReferenceData, description="Reference data.")
    drift: DriftSpec = Field(default_factory=DriftSpec, description="Drift thresholds.")
    quality: QualitySpec = Field(default_factory=QualitySpec, description="Quality rule.")


class RetrainingSpec(ApiModel):
    """Guards on automatic retraining."""

    enabled: bool = Field(default=False, description="Ask the FineTune to retrain when quality breaches.")
    cooldown_seconds: int = Field(default=86400, ge=0, description="Minimum seconds between retrains.")
    max_per_day: int = Field(default=1, ge=0, le=100, description="Retrains allowed per rolling 24 h.")
    max_gpu_hours_per_day: float | None = Field(
        default=None, ge=0, description="Budget cap: no retrain once retraining used this many GPU-hours in 24 h."
    )
    approval: Approval = Field(
        default="Auto",
        description="Manual holds a request until the annotation tuneloop.io/approve-retrain=<request id>.",
    )
    min_feedback_examples: int = Field(
        default=0, ge=0, le=1_000_000,
        description="Hold a retrain until the breaching window holds at least this many labelled feedback examples "
        "(what the retrain adds to its dataset; a retrain on a handful cannot learn the new traffic). The breach "
        "streak keeps counting meanwhile. 0: no minimum.",
    )


class ModelDeploymentSpec(ApiModel):
    """Desired serving and monitoring of a registered model version."""

    model: ModelRef = Field(description="The registered version to serve.")
    fine_tune_ref: LocalObjectRef | None = Field(default=None, description="FineTune to retrain (same namespace).")
    serving: ServingSpec = Field(default_factory=ServingSpec, description="Serving runtime and scale.")
    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec, description="Drift and quality monitors.")
    retraining: RetrainingSpec = Field(default_factory=RetrainingSpec, description="Retraining guards.")
    suspend: bool = Field(default=False, description="Pause monitoring and retraining while true.")

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.retraining) || !has(self.retraining.enabled) || !self.retraining.enabled "
                    "|| has(self.fineTuneRef)",
                    "message": "retraining.enabled needs spec.fineTuneRef: the FineTune to retrain",
                    "fieldPath": ".fineTuneRef",
                    "reason": "FieldValueRequired",
                },
                {
                    "rule": "!has(self.retraining) || !has(self.retraining.cooldownSeconds) || !has(self.monitoring) "
                    "|| !has(self.monitoring.intervalSeconds) "
                    "|| self.retraining.cooldownSeconds >= self.monitoring.intervalSeconds",
                    "message": "spec.retraining.cooldownSeconds must be >= spec.monitoring.intervalSeconds, or one "
                    "breach could trigger several retrains",
                    "fieldPath": ".retraining.cooldownSeconds",
                    "reason": "FieldValueInvalid",
                },
            ]
        }
    }


class FeedbackData(ApiModel):
    """Labelled feedback of a monitor window written as training examples (PII-scrubbed, deduplicated against
    the served version's held-out set and among themselves)."""

    uri: str = Field(description="The examples ({prompt, completion} JSONL), named by their hash.")
    hash: str = Field(description="sha256 over the examples' keys (order-independent).")
    examples: int = Field(description="New examples in the file.")
    labelled: int = Field(default=0, description="Requests in the window a person labelled or corrected.")


class MonitorResult(ApiModel):
    """One monitor run."""

    time: datetime = Field(description="When the monitor ran.")
    samples: int = Field(default=0, description="Requests in the window.")
    drift_share: float | None = Field(default=None, description="Share of monitored columns that drifted.")
    drifted_columns: list[str] = Field(default_factory=list, description="Columns Evidently found drifted.")
    quality: float | None = Field(default=None, description="Quality metric value on the window.")
    breach: bool = Field(default=False, description="Whether quality was in breach after hysteresis.")
    report_uri: str | None = Field(default=None, description="Evidently HTML report.")
    feedback: FeedbackData | None = Field(
        default=None, description="The window's labelled feedback as new training examples (none: no new ones).")


class RetrainRecord(ApiModel):
    """One retrain this deployment asked for."""

    id: str = Field(description="Request id, also written to the FineTune annotation.")
    state: RetrainState = Field(description="PendingApproval, Requested, Running, Succeeded (promoted), "
                                      "NotPromoted (the gate kept it challenger), Failed or Rejected.")
    reason: str = Field(default="", description="What triggered it (metric, value, threshold).")
    requested_at: datetime = Field(description="When it was requested.")
    finished_at: datetime | None = Field(default=None, description="When the run ended.")
    fine_tune: str | None = Field(default=None, description="FineTune name.")
    run: int | None = Field(default=None, description="FineTune run number.")
    version: str | None = Field(default=None, description="Version the retrain produced.")
    gpu_hours: float | None = Field(default=None, description="GPU-hours the retrain used.")
    added_data: FeedbackData | None = Field(
        default=None, description="Feedback examples the retrain adds to the FineTune's dataset (a new dataset "
        "version; the FineTune's spec is unchanged).")


class RolloutStatus(ApiModel):
    """The version being rolled out: what was sent to Ray Serve and when."""

    version: str = Field(description="MLflow version being rolled out.")
    model_id: str = Field(description="Serve model id (<registered name>/<version>).")
    start_time: datetime = Field(description="When this rollout began.")
    applied_time: datetime | None = Field(
        default=None, description="When the operator last sent the application config; Ready needs a deploy after it."
    )
    config_hash: str | None = Field(default=None, description="Hash of the application config sent.")


CanaryPhase = Literal["Progressing", "Promoting", "RolledBack"]
RolloutOutcome = Literal["Switched", "Promoted", "RolledBack"]


class CanaryCheck(ApiModel):
    """One canary check: the candidate's figures over the interval, as the serving application counted them."""

    time: datetime = Field(description="When the check ran.")
    weight: int = Field(description="Canary percentage during the interval.")
    requests: int = Field(default=0, description="Candidate requests in the interval.")
    errors: int = Field(default=0, description="Candidate requests that failed.")
    error_rate: float | None = Field(default=None, description="errors / requests.")
    p95_latency_ms: float | None = Field(default=None, description="p95 latency of the answered requests.")
    stable_requests: int = Field(default=0, description="Stable-version requests in the interval.")
    stable_p95_latency_ms: float | None = Field(default=None, description="The stable version's p95, for comparison.")
    passed: bool | None = Field(default=None, description="True passed, False failed, absent: too few requests.")
    message: str = Field(default="", description="What the check found.")


class CanaryStatus(ApiModel):
    """The canary in progress, or the last one rolled back (kept so the same version and spec are not retried)."""

    phase: CanaryPhase = Field(description="Progressing, Promoting (all traffic being handed over) or RolledBack.")
    version: str = Field(description="Candidate version.")
    model_id: str = Field(description="Candidate Serve model id.")
    stable_version: str = Field(description="Version that keeps the rest of the traffic.")
    weight: int = Field(default=0, description="Percent of traffic the candidate takes now.")
    failed_checks: int = Field(default=0, description="Failed checks so far.")
    start_time: datetime = Field(description="When the canary began.")
    last_check_time: datetime = Field(description="When the last check ran (or the canary began).")
    window_start: float | None = Field(
        default=None, description="Start of the current interval on the serving application's clock (its /v1/stats).")
    generation: int = Field(default=0, description="metadata.generation the canary ran under.")
    last_check: CanaryCheck | None = Field(default=None, description="The latest check.")


class RolloutRecord(ApiModel):
    """One completed switch of the served version, or a canary rolled back."""

    version: str = Field(description="Version now served.")
    previous_version: str | None = Field(default=None, description="Version served before, if any.")
    alias: str | None = Field(default=None, description="Alias followed when the switch happened.")
    time: datetime = Field(description="When the new version was confirmed serving.")
    outcome: RolloutOutcome | None = Field(
        default=None, description="Switched (no canary), Promoted (by canary analysis) or RolledBack.")
    candidate_version: str | None = Field(default=None, description="RolledBack: the version that failed its canary.")
    message: str | None = Field(default=None, description="Canary: why, with the last check's figures.")


class ModelDeploymentStatus(ApiModel):
    """Observed state of a ModelDeployment, written only by the operator."""

    phase: DeploymentPhase | None = Field(
        default=None, description="Pending, Deploying, Serving, Degraded, Retraining, Failed or Suspended."
    )
    observed_generation: int | None = Field(default=None, description="Last metadata.generation acted on.")
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, ModelResolved, RollingOut, DriftDetected, QualityDegraded, Retraining.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    served_version: str | None = Field(default=None, description="MLflow version being served.")
    endpoint: str | None = Field(default=None, description="Inference URL.")
    ready_replicas: int | None = Field(default=None, description="Replicas ready to serve.")
    app_name: str | None = Field(default=None, description="Ray Serve application name (<namespace>.<name>).")
    rollout: RolloutStatus | None = Field(default=None, description="The rollout in progress; absent when none.")
    canary: CanaryStatus | None = Field(default=None, description="The canary in progress or last rolled back.")
    rollout_history: list[RolloutRecord] = Field(
        default_factory=list, description="Switches of the served version, oldest first (bounded)."
    )
    last_monitor: MonitorResult | None = Field(default=None, description="Latest monitor run.")
    monitor_history: list[MonitorResult] = Field(default_factory=list, description="Recent monitor runs (bounded).")
    consecutive_breaches: int = Field(default=0, description="Quality breaches in a row.")
    retrain_in_flight: str | None = Field(default=None, description="Id of the retrain in flight, if any.")
    retrain_history: list[RetrainRecord] = Field(default_factory=list, description="Retrains requested (bounded).")
    last_retrain_time: datetime | None = Field(default=None, description="When the last retrain was requested.")
    waiting: WaitStatus | None = Field(
        default=None,
        description="What the ModelDeployment waits on outside its spec (e.g. RegistryUnavailable, "
        "RayUnavailable, SecretNotFound), re-checked with backoff; absent when nothing.",
    )


class ModelDeployment(ApiModel):
    """A served model version with drift/quality monitoring and guarded retraining."""

    api_version: str = Field(default="tuneloop.io/v1alpha1", description="tuneloop.io/v1alpha1")
    kind: str = Field(default="ModelDeployment", description="ModelDeployment")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Standard object metadata.")
    spec: ModelDeploymentSpec = Field(description="Desired serving and monitoring.")
    status: ModelDeploymentStatus | None = Field(default=None, description="Observed state, written by the operator.")
