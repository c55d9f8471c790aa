"""Conditions shaped like `metav1.Condition`, their types and reasons, and pure setters.

Types and reasons are CamelCase constants documented here, next to each other, so a reason a user
sees in `kubectl get` can be looked up in one place. `lastTransitionTime` changes only when a
condition's status flips; setters return new lists and never mutate their input.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from tuneloop.api.base import ApiModel

ConditionStatus = Literal["True", "False", "Unknown"]

# --- condition types -------------------------------------------------------------------------
READY = "Ready"  # the object has reached its goal (FineTune: model registered; ModelDeployment: serving)
SUCCEEDED = "Succeeded"  # FineTune run finished and its version is registered
FAILED = "Failed"  # terminal failure of the current generation; needs a spec change or a retrain
SUSPENDED = "Suspended"  # spec.suspend is true and no job is running
MODEL_REGISTERED = "ModelRegistered"  # the run's version exists in the MLflow registry
PROMOTED = "Promoted"  # the run's version holds the champion alias
DRIFT_DETECTED = "DriftDetected"  # ModelDeployment: the drift share is over its threshold
QUALITY_DEGRADED = "QualityDegraded"  # ModelDeployment: quality under its minimum (with hysteresis)
MONITOR_STALE = "MonitorStale"  # ModelDeployment: the last monitor check could not run (drift/quality are old)
RETRAINING = "Retraining"  # ModelDeployment: a retrain it triggered is in flight
MODEL_RESOLVED = "ModelResolved"  # ModelDeployment: spec.model names a version that exists in MLflow
ROLLING_OUT = "RollingOut"  # ModelDeployment: a version is being deployed and not yet confirmed serving

# --- reasons ---------------------------------------------------------------------------------
# Why a FineTune cannot start or go on. Two kinds (`operator.logic.waiting` decides which is which):
# the spec's own fault is terminal until metadata.generation changes (phase Failed); a fault of the
# world (a path not there yet, an unset or unreachable registry, a missing Secret, no Ray cluster) is
# waited out (phase Pending, or the current phase) and re-checked with backoff.
REASON_INVALID_SPEC = "InvalidSpec"  # spec: passed the schema but contradictory or unsupported; message has the field
REASON_DATA_INVALID = "DataInvalid"  # spec: the job found bad rows (a missing field, a wrong type)
REASON_DATA_NOT_FOUND = "DataNotFound"  # world: the dataset path does not exist (yet)
REASON_BASE_MODEL_NOT_FOUND = "BaseModelNotFound"  # world: the base model path does not exist (yet)
REASON_REGISTRY_NOT_CONFIGURED = "RegistryNotConfigured"  # world: no tracking URI in the spec or the operator
REASON_SECRET_NOT_FOUND = "SecretNotFound"  # world: a Secret (or its key) the spec names does not exist
REASON_PENDING = "Pending"  # accepted, nothing launched yet
REASON_LAUNCHING = "Launching"  # creating the RayJob or submitting to the cluster
REASON_RAY_CLUSTER_PROVISIONING = "RayClusterProvisioning"  # RayJob waiting for its cluster
REASON_RAYJOB_INVALID = "RayJobValidationFailed"  # spec: KubeRay refused the RayJob (e.g. a bad runtimeEnv)
REASON_RAYJOB_SUSPENDED = "RayJobSuspended"  # the RayJob was suspended outside tuneloop; resume or delete it
REASON_UNKNOWN_RAYJOB_STATE = "UnknownRayJobState"  # KubeRay reports a state this operator does not know
REASON_TRAINING = "Training"  # the Ray job is running
REASON_RETRYING = "Retrying"  # a failed attempt is being retried (within backoffLimit)
REASON_JOB_FAILED = "JobFailed"  # the Ray job failed and backoffLimit is exhausted
REASON_DEADLINE_EXCEEDED = "DeadlineExceeded"  # activeDeadlineSeconds passed
REASON_REGISTERING = "Registering"  # writing the version to MLflow
REASON_RESULT_MISSING = "ResultMissing"  # the job succeeded but its result cannot be found (yet)
REASON_REGISTRY_UNAVAILABLE = "RegistryUnavailable"  # world: MLflow unreachable; retried with backoff
REASON_RAY_UNAVAILABLE = "RayUnavailable"  # world: the Ray job API is unreachable; retried with backoff
REASON_PROMOTED = "Promoted"  # beat baseline and champion: holds the champion alias
REASON_SUPERSEDED = "Superseded"  # held the champion alias until another version took it (alias history says which)
REASON_NOT_PROMOTED = "NotPromoted"  # registered as challenger; the message says by how much it missed
# ModelDeployment (Ready, ModelResolved, RollingOut):
REASON_RESOLVED = "Resolved"  # ModelResolved: the alias or version was found; the message names the version
REASON_MODEL_NOT_FOUND = "ModelNotFound"  # world: no registered model of that name (yet)
REASON_ALIAS_NOT_FOUND = "AliasNotFound"  # world: the model has no such alias (yet); message lists the aliases
REASON_VERSION_NOT_FOUND = "VersionNotFound"  # world: the pinned version does not exist; message lists versions
REASON_DEPLOYING = "Deploying"  # the Serve application config was sent; waiting for RUNNING with it
REASON_SERVING = "Serving"  # RUNNING with the config sent, deployed after it was sent
REASON_ROLLOUT_COMPLETE = "RolloutComplete"  # RollingOut False: the wanted version is serving
REASON_DEPLOY_FAILED = "DeployFailed"  # Ray Serve reports DEPLOY_FAILED; the message has Serve's reason
REASON_UNHEALTHY = "Unhealthy"  # Ray Serve reports UNHEALTHY (replicas failing health checks)
REASON_CANDIDATE_UNHEALTHY = "CandidateUnhealthy"  # RollingOut False: the new version failed its warm-up request
REASON_CANARY_PROGRESSING = "CanaryProgressing"  # RollingOut True: the candidate takes a share of traffic under checks
REASON_CANARY_ROLLED_BACK = "CanaryRolledBack"  # RollingOut False: threshold failed checks; the stable version serves
# Events of a canary (no condition of their own): started, weight stepped, a check failed, promoting.
REASON_CANARY_STARTED = "CanaryStarted"
REASON_CANARY_WEIGHT = "CanaryWeight"
REASON_CANARY_CHECK_FAILED = "CanaryCheckFailed"
REASON_CANARY_PROMOTING = "CanaryPromoting"
REASON_RAY_NOT_CONFIGURED = "RayNotConfigured"  # world: no spec.serving.address and no TUNELOOP_SERVE_ADDRESS
REASON_NOT_IMPLEMENTED = "NotImplemented"  # spec: a serving path this operator does not implement yet
# ModelDeployment monitors (DriftDetected, QualityDegraded; operator.logic.monitor_verdict):
REASON_DRIFT_OVER_THRESHOLD = "DriftShareOverThreshold"  # DriftDetected True: the share of drifted columns >= threshold
REASON_NO_DRIFT = "NoDrift"  # DriftDetected False: the last conclusive window was under the threshold
REASON_QUALITY_BELOW_MINIMUM = "QualityBelowMinimum"  # QualityDegraded True: the metric fell under its minimum
REASON_QUALITY_OK = "QualityOk"  # QualityDegraded False: at or over the minimum (over minimum + margin to clear)
REASON_QUALITY_NOT_MEASURED = "QualityNotMeasured"  # Unknown: too little feedback on the window for the metric
REASON_INSUFFICIENT_DATA = "InsufficientData"  # Unknown: fewer requests than minSamples; nothing concluded
REASON_CHECK_SUCCEEDED = "CheckSucceeded"  # MonitorStale False: the last check ran (whatever it found)
REASON_REFERENCE_UNAVAILABLE = "ReferenceUnavailable"  # MonitorStale True: the reference set cannot be read
REASON_TRAFFIC_LOG_UNAVAILABLE = "TrafficLogUnavailable"  # MonitorStale True: the traffic log cannot be read
REASON_CHECK_FAILED = "CheckFailed"  # MonitorStale True: the check itself failed; the message has the error
REASON_SUCCEEDED = "Succeeded"
REASON_SUSPENDED = "Suspended"
REASON_DELETING = "Deleting"


class Condition(ApiModel):
    """One observation of the object's state, as in metav1.Condition."""

    type: str = Field(description="CamelCase condition type, e.g. Ready, Succeeded, DriftDetected.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(description="CamelCase machine-readable reason for the last transition.")
    message: str = Field(default="", description="Human-readable detail: what happened and what to do.")
    last_transition_time: datetime = Field(
        description="When status last changed (not when the message or reason last changed)."
    )
    observed_generation: int | None = Field(
        default=None, description="metadata.generation the condition was computed from."
    )


MAX_MESSAGE_CHARS = 1024


def truncate(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """Cut long upstream text (stack traces, Ray logs) so status stays readable and small."""
    suffix = "… (truncated)"
    return text if len(text) <= limit else text[: limit - len(suffix)] + suffix


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    now: datetime,
    observed_generation: int | None = None,
) -> list[Condition]:
    """Return `conditions` with `type_` set; keeps lastTransitionTime unless the status flips."""
    message = truncate(message)
    out: list[Condition] = []
    found = False
    for c in conditions:
        if c.type != type_:
            out.append(c)
            continue
        found = True
        transition = c.last_transition_time if c.status == status else now
        out.append(
            Condition(
                type=type_,
                status=status,
                reason=reason,
                message=message,
                last_transition_time=transition,
                observed_generation=observed_generation,
            )
        )
    if not found:
        out.append(
            Condition(
                type=type_,
                status=status,
                reason=reason,
                message=message,
                last_transition_time=now,
                observed_generation=observed_generation,
            )
        )
    return out


def get_condition(conditions: list[Condition], type_: str) -> Condition | None:
    """The condition of `type_`, or None."""
    return next((c for c in conditions if c.type == type_), None)


def remove_condition(conditions: list[Condition], type_: str) -> list[Condition]:
    """Return `conditions` without `type_`."""
    return [c for c in conditions if c.type != type_]
