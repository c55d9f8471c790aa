"""Semantic checks the CRD schema cannot express, each problem naming the field and what to do.

The schema (types, patterns, CEL) already refused malformed specs at `kubectl apply`. What is left
needs context the apiserver lacks: operator defaults (is there any tracking URI?) and the filesystem
(does the file:// dataset exist?). Filesystem facts come in through `ValidationContext.path_exists`,
so the functions stay pure and table-testable. Each problem carries its reason; `logic.waiting`
decides from it whether the problem is the spec's (terminal until the spec changes) or the world's
(waited out and re-checked).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlparse

from tuneloop.api import conditions
from tuneloop.api.finetune import FineTuneSpec
from tuneloop.operator.logic.waiting import Problem

__all__ = ["Problem", "ValidationContext", "file_uris_visible", "validate_spec"]
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass(frozen=True)
class ValidationContext:
    """What the operator knows that the apiserver does not."""

    default_tracking_uri: str | None
    check_file_uris: Literal["auto", "always", "never"] = "auto"
    path_exists: Callable[[str], bool] = lambda _path: True


def file_uris_visible(spec: FineTuneSpec, mode: Literal["auto", "always", "never"]) -> bool:
    """Whether a file:// path in the spec means the same file to the operator as to the job.

    In RayJob mode the path is inside the Ray pods; in ExistingCluster mode on loopback the job runs
    on the operator's machine. Elsewhere the operator cannot tell, so it does not guess.
    """
    if mode != "auto":
        return mode == "always"
    if spec.ray.mode != "ExistingCluster" or not spec.ray.address:
        return False
    return urlparse(spec.ray.address).hostname in LOOPBACK_HOSTS


def _file_path(uri: str) -> str | None:
    return uri[len("file://"):] if uri.startswith("file://") else None


def validate_spec(spec: FineTuneSpec, ctx: ValidationContext) -> list[Problem]:
    """Every problem found, in field order; empty when the spec can run."""
    problems: list[Problem] = []
    if file_uris_visible(spec, ctx.check_file_uris):
        model_path = _file_path(spec.base_model.uri)
        if model_path is not None and not ctx.path_exists(model_path):
            problems.append(Problem(
                "spec.baseModel.uri",
                f"base model path {model_path!r} does not exist on the machine running the job; put the model "
                "folder (config.json and weights) there, or point spec.baseModel.uri at an existing one. "
                "Checked again with backoff: the run starts once it exists",
                conditions.REASON_BASE_MODEL_NOT_FOUND,
            ))
        data_path = _file_path(spec.dataset.uri)
        if data_path is not None and not ctx.path_exists(data_path):
            problems.append(Problem(
                "spec.dataset.uri",
                f"dataset path {data_path!r} does not exist; write the JSONL/Parquet file there or fix "
                "spec.dataset.uri. Checked again with backoff: the run starts once it exists",
                conditions.REASON_DATA_NOT_FOUND,
            ))
    if spec.ray.mode == "ExistingCluster" and not spec.ray.address:
        problems.append(Problem(
            "spec.ray.address",
            "ExistingCluster mode submits to a running Ray cluster: set spec.ray.address to its job API, "
            "e.g. http://raycluster-head-svc:8265, or use mode RayJob",
        ))
    ref = spec.registry.tracking_uri_secret_ref
    if ref is not None:
        problems += _secret_ref_problems(spec, ctx)
    elif not spec.registry.tracking_uri and not ctx.default_tracking_uri:
        problems.append(Problem(
            "spec.registry.trackingUri",
            "no MLflow tracking URI: set spec.registry.trackingUri, or ask the administrator to set "
            "TUNELOOP_MLFLOW_TRACKING_URI on the operator and restart it; the FineTune goes on then",
            conditions.REASON_REGISTRY_NOT_CONFIGURED,
        ))
    return problems


def _secret_ref_problems(spec: FineTuneSpec, ctx: ValidationContext) -> list[Problem]:
    """The Secret reaches the job as Secret-backed variables of the RayJob's pods; the operator never reads
    it (no Secret rights) and registers with its own MLflow settings, so those must exist."""
    field = "spec.registry.trackingUriSecretRef"
    if spec.registry.tracking_uri:
        return [Problem(field, "set spec.registry.trackingUri or spec.registry.trackingUriSecretRef, not both: "
                               "the job would log to the Secret's server and the operator look in the other")]
    if spec.ray.mode == "ExistingCluster":
        return [Problem(field, "the Secret's URI and credentials reach the job as Secret-backed environment "
                               "variables of the RayJob's pods; in mode ExistingCluster they would travel in the "
                               "Ray job's runtime_env, readable by anyone with the Ray dashboard: use spec.ray.mode "
                               "RayJob, or spec.registry.trackingUri")]
    if not ctx.default_tracking_uri:
        return [Problem(field, "the job reads its MLflow URI and credentials from the Secret, but the operator, "
                               "which never reads Secrets, registers the version with its own MLflow settings and "
                               "has none: ask the administrator to set TUNELOOP_MLFLOW_TRACKING_URI (the same "
                               "server) on the operator and restart it; the FineTune goes on then",
                        conditions.REASON_REGISTRY_NOT_CONFIGURED)]
    return []
