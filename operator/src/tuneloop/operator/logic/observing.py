"""What a Ray job's reported state means for tuneloop, for both launch paths.

KubeRay's RayJob status has two fields that can disagree (kuberay #2314, #3553); the Ray job API has
one. Both are mapped here to one `JobObservation` so the reconcile decision does not care how the job
was launched. Success is strict: a RayJob succeeded only when `jobDeploymentStatus == Complete` AND
`jobStatus == SUCCEEDED`; Complete alone is not success.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

JobState = Literal["Missing", "Pending", "Running", "Succeeded", "Failed", "DeadlineExceeded"]

TERMINAL_JOB_STATUSES = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})


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


MISSING = JobObservation(state="Missing")


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def observe_rayjob(rayjob: dict[str, Any] | None, now: datetime, inconsistent_grace_seconds: float) -> JobObservation:
    """Interpret a RayJob's status (None when the RayJob does not exist)."""
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
    if job in ("FAILED", "STOPPED"):
        # #3553: the Ray job ended but the deployment stays Running. Give KubeRay a grace period,
        # counted from the Ray job's end: `rayJobInfo.endTime` (from the Ray dashboard). KubeRay sets
        # `status.endTime` only when the deployment turns Complete/Failed, which is what did not happen.
        ended = _parse_time((status.get("rayJobInfo") or {}).get("endTime")) or _parse_time(status.get("endTime"))
        if ended is not None and (now - ended).total_seconds() > inconsistent_grace_seconds:
            return JobObservation(
                "Failed", "AppFailed",
                f"Ray job {job} but jobDeploymentStatus stayed {deployment or 'empty'} for more than "
                f"{inconsistent_grace_seconds:.0f}s (kuberay #3553); {message}".rstrip("; "),
                needs_stop=True, **common,
            )
        return JobObservation("Running", "Finishing", message, **common)
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
