"""Where a check's reference set comes from: by default the frozen held-out set the training job logged
on the served version's MLflow run (`dataset/held_out.jsonl`: key, prompt, completion, optional system —
PII-scrubbed by the same scrubber as the traffic log), or a file the spec names
(`spec.monitoring.reference.uri`, JSONL or Parquet with `prompt` and `completion` columns).

The held-out set's completions are the gold answers, so the reference outputs are what the task's
answers look like; the champion scores close to them or it would not be champion. When a new champion
is promoted its run holds a new held-out set, so the reference rotates with the served version.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

HELD_OUT_ARTIFACT = "dataset/held_out.jsonl"


class ReferenceUnavailable(RuntimeError):
    """The reference set cannot be read (MLflow unreachable, artifact missing, file absent)."""


def read_frame(path: str) -> Any:
    """A JSONL (.jsonl/.json) or Parquet (.parquet) file as a DataFrame."""
    import pandas as pd

    if path.endswith(".parquet"):
        return pd.read_parquet(path)
    if path.endswith((".jsonl", ".json")):
        # An open file, not the path: pandas reads a path that does not exist as literal JSON text.
        with open(path, encoding="utf-8") as f:
            return pd.read_json(f, lines=True, dtype=False)
    raise ReferenceUnavailable(f"reference {path!r}: use a .jsonl or .parquet file")


def from_uri(uri: str) -> Any:
    """A reference file by URI: file:// or a local path (s3:// through fsspec). pvc:// must be resolved to
    its mount path by the caller, who knows where the claim is mounted."""
    if uri.startswith("pvc://"):
        raise ReferenceUnavailable(f"reference {uri!r}: resolve pvc:// to the claim's mount path first")
    path = uri.removeprefix("file://")
    try:
        if uri.startswith("s3://"):
            import fsspec

            with tempfile.TemporaryDirectory() as tmp:
                local = str(Path(tmp) / Path(path).name)
                fsspec.filesystem("s3").get(uri, local)
                return read_frame(local)
        return read_frame(path)
    except (OSError, ValueError) as e:
        raise ReferenceUnavailable(f"reference {uri!r} cannot be read: {e}") from e


def from_run(tracking_uri: str, run_id: str) -> Any:
    """The frozen held-out set logged on MLflow run `run_id`."""
    import mlflow

    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=HELD_OUT_ARTIFACT,
                                                        dst_path=tmp, tracking_uri=tracking_uri)
            return read_frame(local)
    except Exception as e:  # mlflow raises MlflowException, OSError or requests errors
        raise ReferenceUnavailable(f"held-out set {HELD_OUT_ARTIFACT} of run {run_id} at {tracking_uri}: "
                                   f"{type(e).__name__}: {str(e)[:300]}") from e


def from_model_version(tracking_uri: str, model_name: str, version: str) -> Any:
    """The frozen held-out set of the run that produced registered version `model_name`/`version`."""
    from mlflow import MlflowClient

    try:
        run_id = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri).get_model_version(
            model_name, version).run_id
    except Exception as e:
        raise ReferenceUnavailable(f"model version {model_name}/{version} at {tracking_uri}: "
                                   f"{type(e).__name__}: {str(e)[:300]}") from e
    if not run_id:
        raise ReferenceUnavailable(f"model version {model_name}/{version} has no run to take a held-out set from")
    return from_run(tracking_uri, run_id)
