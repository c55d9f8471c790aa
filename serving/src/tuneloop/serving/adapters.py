"""From a model id (`<registered name>/<version>`) to an adapter folder on local disk: the MLflow model
version, the pyfunc model the training job logged for it (jobs.tracking.Tracker.log_model), and the
adapter folder inside it with the base model reference from its `model_config`.

The serving runtime reads the logged pyfunc's files instead of calling `mlflow.pyfunc.load_model`:
loading the pyfunc would load a base model per version, and the point of multiplexing is one base per
replica with a small adapter per version. The MLmodel layout read here is the one jobs.pyfunc_model
writes: `flavors.python_function.artifacts.model.path` (the adapter folder) and
`flavors.python_function.config` (method, base_model_uri, base_model_revision, max_new_tokens).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from tuneloop.serving import bodies

MULTIPLEXED_METHODS = ("lora", "qlora")


class ModelNotFound(LookupError):
    """The registry has no such version (404 for the client)."""


class ModelNotServable(ValueError):
    """The version exists but this runtime cannot serve it (a full fine-tune, another base)."""


@dataclass(frozen=True)
class AdapterArtifact:
    """A downloaded version: where its adapter lies and what it was trained on."""

    model_id: str
    name: str
    version: str
    run_id: str | None
    path: Path
    method: str
    base_model_uri: str
    base_model_revision: str | None
    max_new_tokens: int | None


def read_logged_model(model_dir: Path, model_id: bodies.ModelId, run_id: str | None) -> AdapterArtifact:
    """Parse a downloaded pyfunc model folder (see the module docstring for the layout)."""
    import yaml

    mlmodel = model_dir / "MLmodel"
    if not mlmodel.is_file():
        raise ModelNotServable(f"model {model_id}: the logged model has no MLmodel file; was it logged by the "
                               "tuneloop training job?")
    flavor = (yaml.safe_load(mlmodel.read_text()) or {}).get("flavors", {}).get("python_function", {})
    config = flavor.get("config") or {}
    artifact = (flavor.get("artifacts") or {}).get("model") or {}
    if "method" not in config or "path" not in artifact:
        raise ModelNotServable(f"model {model_id}: the logged pyfunc has no adapter artifact or model_config; only "
                               "models logged by the tuneloop training job (jobs.tracking) can be served here")
    method = str(config["method"])
    if method not in MULTIPLEXED_METHODS:
        raise ModelNotServable(f"model {model_id}: method {method!r} is a full fine-tune; this runtime attaches "
                               f"adapters ({', '.join(MULTIPLEXED_METHODS)}) to one base model per replica")
    return AdapterArtifact(
        model_id=str(model_id), name=model_id.name, version=model_id.version, run_id=run_id,
        path=model_dir / artifact["path"], method=method, base_model_uri=str(config["base_model_uri"]),
        base_model_revision=config.get("base_model_revision"),
        max_new_tokens=int(config["max_new_tokens"]) if config.get("max_new_tokens") else None,
    )


def download(model_id: str, tracking_uri: str | None, cache_dir: Path) -> AdapterArtifact:
    """Fetch the version's logged model into `cache_dir/<name>/<version>` (reused when already there)."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    parsed = bodies.parse_model_id(model_id)
    # The registry is the tracking server itself: never an MLFLOW_REGISTRY_URI the replica happened to inherit.
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        version = client.get_model_version(parsed.name, parsed.version)
    except MlflowException as e:
        if getattr(e, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
            raise ModelNotFound(f"model {model_id}: no such registered model version in MLflow "
                                f"({tracking_uri or 'default tracking URI'})") from e
        raise
    target = cache_dir / _safe(parsed.name) / parsed.version
    if not (target / "MLmodel").is_file():
        # The version's own artifact location, not models:/<name>/<version>: that URI is resolved against
        # the process-wide registry URI, which download_artifacts(tracking_uri=...) does not set.
        source = client.get_model_version_download_uri(parsed.name, parsed.version)
        partial = target.with_name(f"{parsed.version}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        local = mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(partial),
                                                    tracking_uri=tracking_uri)
        shutil.rmtree(target, ignore_errors=True)
        Path(local).rename(target)  # the model folder lands under dst_path by its own name
        shutil.rmtree(partial, ignore_errors=True)
    return read_logged_model(target, parsed, version.run_id)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)

