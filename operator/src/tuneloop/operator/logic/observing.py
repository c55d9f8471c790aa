"""What a Ray job's reported state means for tuneloop, for both launch paths.

KubeRay's RayJob status has two fields that can disagree (kuberay #2314, #3553); the Ray job API has
one. Both are mapped here to one `JobObservation` so the reconcile decision does not care how the job
was launched. Success is strict: a RayJob succeeded only when `jobDeploymentStatus == Complete` AND
`jobStatus == SUCCEEDED`; Complete alone is not success.

Every value KubeRay v1.7.0 defines (rayjob_types.go) has a row in tests/unit/operator/test_rayjob.py.
A value it does not define (a newer KubeRay) is `Stuck` with reason UnknownRayJobState naming it, and
so is a RayJob suspended outside tuneloop: visible on the object, never a silent wait until the
deadline. `ValidationFailed` (KubeRay refused the RayJob tuneloop built, e.g. its runtimeEnvYAML) is a
failure no retry can fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from tuneloop.api import conditions as c

# Stuck: the job cannot go on until someone acts (the reason says who and how); the phase stays.
JobState = Literal["Missing", "Pending", "Running", "Stuck", "Succeeded", "Failed", "DeadlineExceeded"]

TERMINAL_JOB_STATUSES = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
# KubeRay v1.7.0 rayjob_types.go: JobDeploymentStatus, JobStatus (Ray's) and JobFailedReason.
DEPLOYMENT_STATUSES: tuple[str, ...] = (
    "", "Initializing", "Running", "Complete", "Failed", "ValidationFailed", "Suspending", "Suspended", "Retrying",
    "Waiting",
)
JOB_STATUSES: tuple[str, ...] = ("", "PENDING", "RUNNING", "STOPPED", "SUCCEEDED", "FAILED")
FAILURE_REASONS: tuple[str, ...] = (
    "SubmissionFailed", "DeadlineExceeded", "PreRunningDeadlineExceeded", "AppFailed",
    "JobDeploymentStatusTransitionGracePeriodExceeded", "JobStatusCheckTimeoutExceeded", "ValidationFailed",
)


@dataclass(frozen=True)
class JobObservation:
    """The current attempt's job as tuneloop understands it."""

    state: JobState
    reason: str = ""
    message: str = ""
    job_status: str | None = None
    deployment_status: str | None = None
    dashboard_url: str | None = None
    cluster_name: str | None = None
    # True when the job may still hold a cluster although tuneloop is done with it (#2314, #3553).
    needs_stop: bool = False
    # False when a new attempt of the same spec would fail the same way (KubeRay's ValidationFailed).
    retryable: bool = True
    # True in the #3553 state (the Ray job ended, the deployment still Running): the caller records
    # when it first saw it (`status.run.inconsistentSince`) and passes that back as `inconsistent_since`.
    inconsistent: bool = False


MISSING = JobObservation(state="Missing")


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def observe_rayjob(rayjob: dict[str, Any] | None, now: datetime, inconsistent_grace_seconds: float,
                   inconsistent_since: datetime | None = None) -> JobObservation:
    """Interpret a RayJob's status (None when the RayJob does not exist). `inconsistent_since` is when
    tuneloop first saw this RayJob in the #3553 state, if it did (see below)."""
    if rayjob is None:
        return MISSING
    status = rayjob.get("status") or {}
    job = status.get("jobStatus") or ""
    deployment = status.get("jobDeploymentStatus") or ""
    reason = status.get("reason") or ""
    message = status.get("message") or ""
    common = {
        "job_status": job or None,
        "deployment_status": deployment or None,
        "dashboard_url": status.get("dashboardURL") or None,
        "cluster_name": status.get("rayClusterName") or None,
    }
    if deployment not in DEPLOYMENT_STATUSES or job not in JOB_STATUSES:
        return JobObservation(
            "Stuck", c.REASON_UNKNOWN_RAYJOB_STATE,
            f"RayJob reports jobDeploymentStatus {deployment!r} and jobStatus {job!r}; tuneloop knows the states "
            f"of KubeRay v1.7.0 only (a newer KubeRay?). Looking again until activeDeadlineSeconds; {message}"
            .rstrip("; "), **common,
        )
    if deployment == "ValidationFailed" or reason == "ValidationFailed":
        return JobObservation(
            "Failed", c.REASON_RAYJOB_INVALID,
            f"KubeRay refused the RayJob ({message or 'no message'}): a new attempt would be refused the same "
            "way. Fix spec.ray (runtimeEnv, serviceAccountName) or the operator's Ray settings",
            retryable=False, **common,
        )
    if deployment in ("Suspending", "Suspended"):
        return JobObservation(
            "Stuck", c.REASON_RAYJOB_SUSPENDED,
            f"RayJob jobDeploymentStatus is {deployment}, but tuneloop never suspends a RayJob (it deletes it "
            "on spec.suspend): set the RayJob's spec.suspend to false, or suspend this FineTune instead",
            **common,
        )
    if deployment == "Complete":
        if job == "SUCCEEDED":
            return JobObservation("Succeeded", "Succeeded", message, **common)
        return JobObservation(
            "Failed", reason or "AppFailed",
            message or f"RayJob completed with jobStatus {job or 'empty'}, not SUCCEEDED", **common,
        )
    if deployment == "Failed":
        # #2314: the deployment failed (deadline, submission) while the Ray job may still run.
        still_running = job not in TERMINAL_JOB_STATUSES
        state: JobState = "DeadlineExceeded" if reason == "DeadlineExceeded" else "Failed"
        return JobObservation(
            state, reason or "JobDeploymentFailed", message or "RayJob jobDeploymentStatus is Failed",
            needs_stop=still_running, **common,
        )
    if deployment == "Retrying":  # KubeRay starts the job again on a new cluster (its own backoffLimit)
        return JobObservation("Pending", "RayClusterProvisioning", message or "KubeRay is retrying the RayJob",
                              **common)
    if job in ("FAILED", "STOPPED"):
        # #3553: the Ray job ended but the deployment stays Running. Give KubeRay a grace period,
        # counted from the Ray job's end: `rayJobInfo.endTime` (from the Ray dashboard). KubeRay sets
        # `status.endTime` only when the deployment turns Complete/Failed, which is what did not happen.
        # A KubeRay that reports no rayJobInfo leaves only tuneloop's own first sighting of the state,
        # kept in status so the grace survives operator restarts.
        ended = (_parse_time((status.get("rayJobInfo") or {}).get("endTime")) or _parse_time(status.get("endTime"))
                 or inconsistent_since)
        if ended is not None and (now - ended).total_seconds() > inconsistent_grace_seconds:
            return JobObservation(
                "Failed", "AppFailed",
                f"Ray job {job} but jobDeploymentStatus stayed {deployment or 'empty'} for more than "
                f"{inconsistent_grace_seconds:.0f}s (kuberay #3553); {message}".rstrip("; "),
                needs_stop=True, inconsistent=True, **common,
            )
        return JobObservation("Running", "Finishing", message, inconsistent=True, **common)
    if deployment in ("", "Initializing", "Waiting") or job in ("", "PENDING"):
        return JobObservation("Pending", "RayClusterProvisioning", message, **common)
    return JobObservation("Running", "Training", message, **common)


def observe_submission(info: dict[str, Any] | None, dashboard_url: str | None) -> JobObservation:
    """Interpret the Ray job API's JobDetails (None when no job has that submission id)."""
    if info is None:
        return MISSING
    job = str(info.get("status") or "")
    message = str(info.get("message") or "")
    common = {"job_status": job or None, "dashboard_url": dashboard_url}
    if job == "SUCCEEDED":
        return JobObservation("Succeeded", "Succeeded", message, **common)
    if job in ("FAILED", "STOPPED"):
        reason = str(info.get("error_type") or ("Stopped" if job == "STOPPED" else "AppFailed"))
        return JobObservation("Failed", reason, message or f"Ray job {job}", **common)
    if job == "RUNNING":
        return JobObservation("Running", "Training", message, **common)
    return JobObservation("Pending", "Launching", message, **common)
