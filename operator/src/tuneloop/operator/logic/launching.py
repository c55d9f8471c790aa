"""The training job's command line and the ExistingCluster submission, built from a FineTune.

Both launch paths run the same entrypoint, `python -m tuneloop.jobs.train`, with the same tags. The
tags (FineTune uid, run number, attempt) are how the controller finds the job's MLflow run and its
`tuneloop-result.json` artifact again, wherever the job ran.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Any

from tuneloop.api import constants
from tuneloop.api.finetune import FineTuneSpec
from tuneloop.operator.logic import naming


@dataclass(frozen=True)
class Target:
    """The FineTune and the attempt being launched."""

    namespace: str
    name: str
    uid: str
    generation: int
    run: int
    attempt: int
    spec: FineTuneSpec
    extra_data: tuple[str, ...] = ()  # examples added to spec.dataset for this run (a retrain's feedback)


@dataclass(frozen=True)
class JobPaths:
    """Where the job reads its spec and writes its result and checkpoints."""

    spec: str  # a file path, or the inline JSON of the spec
    result: str
    storage: str


def job_tags(target: Target, operator_version: str) -> dict[str, str]:
    """Tags the job puts on its MLflow run; the controller searches runs by uid + run + attempt."""
    return {
        constants.TAG_FINETUNE_UID: target.uid,
        constants.TAG_FINETUNE_NAME: target.name,
        constants.TAG_FINETUNE_NAMESPACE: target.namespace,
        constants.TAG_RUN_NUMBER: str(target.run),
        constants.TAG_RUN_ATTEMPT: str(target.attempt),
        constants.TAG_SPEC_GENERATION: str(target.generation),
        constants.TAG_OPERATOR_VERSION: operator_version,
    }


def build_entrypoint(
    target: Target, paths: JobPaths, tracking_uri: str | None, python: str, operator_version: str
) -> str:
    """The shell command Ray runs as the job's driver. Without a tracking URI the job reads
    MLFLOW_TRACKING_URI from its environment (a Secret-backed variable: see `rayjob.tracking_env`)."""
    argv = [
        python, "-m", "tuneloop.jobs.train",
        "--spec", paths.spec,
        "--result", paths.result,
        "--storage", paths.storage,
        *(["--tracking-uri", tracking_uri] if tracking_uri else []),
        "--experiment", naming.experiment_name(target.namespace, target.name, target.spec),
        "--run-name", naming.mlflow_run_name(target.name, target.run, target.attempt),
    ]
    for key, value in job_tags(target, operator_version).items():
        argv += ["--tag", f"{key}={value}"]
    for uri in target.extra_data:
        argv += ["--extra-data", uri]
    return shlex.join(argv)


def build_submission(
    target: Target, storage_root: str, tracking_uri: str, python: str, operator_version: str
) -> dict[str, Any]:
    """The body of POST /api/jobs/ for ExistingCluster mode (spec passed inline as JSON)."""
    paths = JobPaths(
        spec=json.dumps(target.spec.to_k8s(), sort_keys=True, separators=(",", ":")),
        result=str(naming.result_path(storage_root, target.namespace, target.name, target.uid,
                                      target.run, target.attempt)),
        storage=str(naming.run_folder(storage_root, target.namespace, target.name, target.uid, target.run)),
    )
    body: dict[str, Any] = {
        "entrypoint": build_entrypoint(target, paths, tracking_uri, python, operator_version),
        "submission_id": naming.submission_id(target.uid, target.run, target.attempt),
        "metadata": {k: v for k, v in job_tags(target, operator_version).items()},
    }
    if target.spec.ray.runtime_env:
        body["runtime_env"] = target.spec.ray.runtime_env
    return body
