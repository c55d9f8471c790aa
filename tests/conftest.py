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
