"""The current champion, scored on this run's held-out set when it was scored on another one.

The gate compares a candidate with the champion on the same frozen held-out set (proven by the dataset
hash). A retrain whose data gained feedback examples has a new dataset version, so the champion's recorded
figure no longer compares; the job then evaluates the champion's own adapter on the new held-out set, in
the same evaluation task as the candidate, and reports the figures with the version and the hash they were
scored on (`JobResult.champion`). The controller uses them only if that version is still champion when it
decides.

A champion that cannot be compared this way — another base model, a full fine-tune, no artifact, MLflow
not answering — is skipped with a line in the log: the gate then keeps its rule (different data, stays
challenger, the message says so). Comparing is never a reason for the job to fail.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneloop.api import constants

log = logging.getLogger(__name__)

COMPARABLE_METHODS = frozenset({"lora", "qlora"})  # an adapter on the same base: loaded like the candidate's


@dataclass(frozen=True)
class ChampionCopy:
    """The champion's adapter, downloaded for evaluation."""

    version: str
    dataset_hash: str | None
    method: str
    adapter_dir: Path


def why_not_comparable(tags: dict[str, str], config: dict[str, Any], base_model_uri: str, dataset_hash: str,
                       method: str) -> str | None:
    """None when the champion should be scored here; else why not (pure: tags and config in)."""
    if tags.get(constants.TAG_DATASET_HASH) == dataset_hash:
        return "it was scored on this held-out set already"
    champion_method = str(config.get("method") or tags.get(constants.TAG_METHOD) or "")
    if champion_method not in COMPARABLE_METHODS or method not in COMPARABLE_METHODS:
        return f"methods {champion_method or 'unknown'} and {method}: only adapters on one base are compared here"
    champion_base = config.get("base_model_uri") or tags.get(constants.TAG_BASE_MODEL)
    if champion_base != base_model_uri:
        return f"it was trained on base model {champion_base}, this run on {base_model_uri}"
    return None


def adapter_of(model_dir: Path) -> tuple[Path, dict[str, Any]]:
    """The adapter folder and model_config of a downloaded pyfunc logged by `tracking.log_model`."""
    import yaml

    flavor = (yaml.safe_load((model_dir / "MLmodel").read_text()) or {}).get("flavors", {}).get("python_function", {})
    artifact = (flavor.get("artifacts") or {}).get("model") or {}
    if "path" not in artifact:
        raise ValueError(f"{model_dir}: the logged pyfunc has no adapter artifact")
    return model_dir / artifact["path"], dict(flavor.get("config") or {})


def fetch(tracking_uri: str | None, model_name: str, base_model_uri: str, dataset_hash: str, method: str,
          dest: Path) -> ChampionCopy | None:
    """The champion of `model_name` to score on this run's held-out set, or None (logged why)."""
    if not tracking_uri:
        return None
    try:
        import mlflow
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        try:
            version = client.get_model_version_by_alias(model_name, constants.ALIAS_CHAMPION)
        except mlflow.exceptions.MlflowException as e:
            if "RESOURCE_DOES_NOT_EXIST" in str(getattr(e, "error_code", "")) or "not found" in str(e).lower():
                log.info("no %s of %s yet: nothing to compare on this held-out set", constants.ALIAS_CHAMPION,
                         model_name)
                return None
            raise
        tags = dict(version.tags or {})
        if tags.get(constants.TAG_DATASET_HASH) == dataset_hash:
            log.info("champion v%s was scored on this held-out set already", version.version)
            return None
        source = client.get_model_version_download_uri(model_name, version.version)
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True, exist_ok=True)
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(dest),
                                                         tracking_uri=tracking_uri))
        adapter, config = adapter_of(local)
        why = why_not_comparable(tags, config, base_model_uri, dataset_hash, method)
        if why is not None:
            log.info("champion v%s is not scored here: %s", version.version, why)
            return None
        return ChampionCopy(version=str(version.version), dataset_hash=tags.get(constants.TAG_DATASET_HASH),
                            method=str(config.get("method")), adapter_dir=adapter)
    except Exception as e:  # comparing is best effort: the gate keeps its rule without it
        log.warning("could not fetch the champion of %s to score it on this held-out set: %s: %s", model_name,
                    type(e).__name__, e)
        return None
