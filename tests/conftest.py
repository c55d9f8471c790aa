"""Fixtures shared by every suite: the real control plane (session-scoped, always torn down) and a
fresh namespace per test. Services are real upstream software on loopback; nothing here fakes an API."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
CRD_DIR = REPO_ROOT / "crds"

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def control_plane() -> Iterator[object]:
    """etcd + kube-apiserver with tuneloop's CRDs installed. Fails (never skips) when it cannot start."""
    from tuneloop.devenv import controlplane

    with controlplane.running(crd_dir=CRD_DIR) as cp:
        yield cp


@pytest.fixture(scope="session")
def kubeconfig(control_plane) -> Path:
    return control_plane.kubeconfig


@pytest.fixture(scope="session")
def api_client(control_plane):
    """A kubernetes ApiClient with the admin credential."""
    from kubernetes import config

    return config.new_client_from_config(config_file=str(control_plane.kubeconfig), context="admin")


@pytest.fixture
def namespace(control_plane) -> str:
    """A fresh namespace per test (not deleted: there is no namespace controller in this control plane)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    control_plane.kubectl("create", "namespace", name)
    return name


SHARED_SERVICES_GROUP = "shared-services"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`make test` runs two pytest-xdist workers with `--dist loadgroup` (two streams on the machine's two
    cores). Every test that uses the session's one Ray head and MLflow server (tests/e2e/conftest.py
    shared_services) goes to one worker, so only one worker starts them; everything else (unit, the real
    apiserver suite, the demo and devenv stories with their own services) is the other stream, in
    collection order. Without -n the mark does nothing."""
    for item in items:
        uses_shared = SHARED_SERVICES_GROUP.replace("-", "_") in getattr(item, "fixturenames", ())
        item.add_marker(pytest.mark.xdist_group(SHARED_SERVICES_GROUP if uses_shared else "own-services"))
