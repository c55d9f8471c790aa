"""Reading the pyfunc model the training job logs (adapter folder + model_config), and the lifetime of an
attached adapter under LRU eviction: detached once, and never while a request is using it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tuneloop.serving import adapters, bodies, generation

MODEL_ID = bodies.ModelId("invoices", "3")


def write_mlmodel(folder: Path, flavor: dict[str, Any] | None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if flavor is not None:
        (folder / "MLmodel").write_text(yaml.safe_dump({"flavors": {"python_function": flavor}}))
    return folder


# What jobs.tracking.Tracker.log_model writes (checked against a real logged model in the e2e test).
LOGGED: dict[str, Any] = {"artifacts": {"model": {"path": "artifacts/trained", "uri": "/tmp/trained"}},
          "config": {"method": "lora", "base_model_uri": "file:///models/base", "base_model_revision": None,
                     "max_new_tokens": 40},
          "loader_module": "mlflow.pyfunc.model", "python_model": "python_model.pkl"}

REFUSED = [
    ("no MLmodel", None, "no MLmodel"),
    ("not a tuneloop pyfunc", {"loader_module": "mlflow.sklearn"}, "training job"),
    ("full fine-tune", {**LOGGED, "config": {**LOGGED["config"], "method": "full"}}, "full fine-tune"),
]


def test_reads_the_adapter_and_its_base(tmp_path: Path) -> None:
    artifact = adapters.read_logged_model(write_mlmodel(tmp_path, LOGGED), MODEL_ID, "run-1")
    assert artifact.path == tmp_path / "artifacts" / "trained"
    assert (artifact.model_id, artifact.version, artifact.run_id) == ("invoices/3", "3", "run-1")
    assert (artifact.method, artifact.base_model_uri, artifact.max_new_tokens) == ("lora", "file:///models/base", 40)


@pytest.mark.parametrize(("flavor", "message"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_refuses_what_it_cannot_serve(tmp_path: Path, flavor: dict[str, Any] | None, message: str) -> None:
    with pytest.raises(adapters.ModelNotServable, match=message):
        adapters.read_logged_model(write_mlmodel(tmp_path, flavor), MODEL_ID, None)


def attached(detached: list[str]) -> generation.AttachedAdapter:
    artifact = adapters.AdapterArtifact("invoices/3", "invoices", "3", None, Path("/x"), "lora", "file:///b", None,
                                        None)
    return generation.AttachedAdapter(artifact, "adapter1", detached.append)


def test_eviction_detaches_once() -> None:
    detached: list[str] = []
    adapter = attached(detached)
    adapter.__del__()
    adapter.__del__()  # Serve calls it on eviction, Python again at collection
    assert detached == ["adapter1"]
    with adapter.use() as usable:
        assert not usable  # a request that got the evicted object must load it again


def test_eviction_waits_for_requests_in_flight() -> None:
    detached: list[str] = []
    adapter = attached(detached)
    with adapter.use() as first, adapter.use() as second:
        assert first and second
        adapter.__del__()
        assert detached == []
    assert detached == ["adapter1"]


def test_unevicted_adapter_stays_attached() -> None:
    detached: list[str] = []
    adapter = attached(detached)
    with adapter.use():
        pass
    assert detached == []
    adapter.__del__()  # leave nothing to the finaliser
