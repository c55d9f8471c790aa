"""Deterministic names of everything a FineTune creates, derived from its uid, run and attempt.

Determinism is what makes the controller idempotent across restarts: an operator killed between
"create the RayJob" and "record it in status" computes the same name again and finds the job instead
of launching a second one. The uid is part of every name, so a FineTune deleted and re-created under
the same name never adopts the children of its predecessor.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import PurePosixPath

from tuneloop.api import constants
from tuneloop.api.finetune import FineTuneSpec

# KubeRay derives RayCluster, Service and submitter Job names from the RayJob name; it refuses
# RayJob names longer than this so that every derived DNS-1035 label fits in 63 characters.
MAX_RAYJOB_NAME = 47
MAX_LABEL_VALUE = 63
_NOT_DNS = re.compile(r"[^a-z0-9-]+")


def _short_hash(text: str, length: int = 6) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def child_prefix(name: str, uid: str) -> str:
    """`<name>-<hash of uid>`, a DNS-1035 label prefix short enough for the run/attempt suffix."""
    base = _NOT_DNS.sub("-", name.lower()).strip("-") or "ft"
    if not base[0].isalpha():
        base = "ft-" + base
    return f"{base[:28].rstrip('-')}-{_short_hash(uid)}"


def rayjob_name(name: str, uid: str, run: int, attempt: int) -> str:
    """One RayJob per attempt: tuneloop counts and re-creates attempts itself (KubeRay backoffLimit 0)."""
    out = f"{child_prefix(name, uid)}-r{run}a{attempt}"
    if len(out) > MAX_RAYJOB_NAME:  # only with absurd run/attempt numbers
        raise ValueError(f"RayJob name {out!r} is longer than {MAX_RAYJOB_NAME} characters")
    return out


def configmap_name(name: str, uid: str, run: int) -> str:
    """The ConfigMap carrying the spec of a run (shared by its attempts)."""
    return f"{child_prefix(name, uid)}-r{run}-spec"


def submission_id(uid: str, run: int, attempt: int) -> str:
    """Ray job submission id; Ray refuses a reused id, which is the guard against a second launch."""
    return f"tuneloop-{uid}-r{run}-a{attempt}"


def label_value(name: str) -> str:
    """A FineTune name as a label value (names may be 253 characters, label values 63)."""
    if len(name) <= MAX_LABEL_VALUE:
        return name
    return f"{name[: MAX_LABEL_VALUE - 7].rstrip('-.')}-{_short_hash(name)}"


def child_labels(name: str, run: int) -> dict[str, str]:
    """Our labels only: never the parent's (Argo CD tracks by label and would adopt children, #8683)."""
    return {
        constants.LABEL_MANAGED_BY: constants.MANAGED_BY_VALUE,
        constants.LABEL_FINETUNE: label_value(name),
        constants.LABEL_RUN: str(run),
    }


def experiment_name(namespace: str, name: str, spec: FineTuneSpec) -> str:
    return spec.registry.experiment or f"tuneloop/{namespace}/{name}"


def mlflow_run_name(name: str, run: int, attempt: int) -> str:
    return f"{name}-r{run}-a{attempt}"


def spec_hash(spec: FineTuneSpec) -> str:
    """sha256 of everything that shapes a run; `suspend` is left out so pausing never starts a new run."""
    body = spec.to_k8s()
    body.pop("suspend", None)
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def run_folder(root: str | PurePosixPath, namespace: str, name: str, uid: str, run: int) -> PurePosixPath:
    """Checkpoints of a run live here, shared by its attempts so a retry can resume."""
    return PurePosixPath(root) / namespace / f"{name}-{uid[:8]}" / f"run-{run}"


def result_path(
    root: str | PurePosixPath, namespace: str, name: str, uid: str, run: int, attempt: int
) -> PurePosixPath:
    """Where an attempt writes its JobResult (one file per attempt, never overwritten by a retry)."""
    return run_folder(root, namespace, name, uid, run) / f"attempt-{attempt}" / "result.json"
