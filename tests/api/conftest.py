"""Fixtures for the operator against the real apiserver: the RayJob CRD stand-in, a real MLflow
server, and the operator itself in-process (kopf's KopfRunner), configured for short polls."""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

OPERATOR_ENV = {
    "TUNELOOP_POLL_SECONDS": "0.5",
    "TUNELOOP_MAX_POLL_SECONDS": "2",
    "TUNELOOP_INCONSISTENT_GRACE_SECONDS": "1",
    "TUNELOOP_DEADLINE_GRACE_SECONDS": "1",
    "TUNELOOP_RESULT_GRACE_SECONDS": "30",
    "TUNELOOP_DELETE_TIMEOUT_SECONDS": "3",
    "TUNELOOP_CLIENT_TIMEOUT_SECONDS": "15",
    "TUNELOOP_CLIENT_RETRIES": "1",
    "TUNELOOP_METRICS_PORT": "0",
    "TUNELOOP_GPU_PRICES_USD_PER_HOUR": '{"default": 2.0, "NVIDIA-A100-SXM4-80GB": 4.0}',
}


@pytest.fixture(scope="session")
def rayjob_crd(control_plane) -> None:
    path = FIXTURES / "rayjob-crd.yaml"
    control_plane.kubectl("apply", "--server-side", "-f", str(path))
    control_plane.kubectl("wait", "--for=condition=Established", "--timeout=30s", "-f", str(path))


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> Iterator[object]:
    from tuneloop.devenv import mlflow_server

    with mlflow_server.running(workdir=tmp_path_factory.mktemp("mlflow")) as server:
        yield server


@pytest.fixture(scope="session")
def operator_env(kubeconfig, tmp_path_factory) -> Iterator[dict[str, str]]:
    """Environment for in-process operators (kopf and our settings read os.environ)."""
    env = {**OPERATOR_ENV, "KUBECONFIG": str(kubeconfig),
           "TUNELOOP_STORAGE_ROOT": str(tmp_path_factory.mktemp("storage"))}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def start_operator(namespace: str):
    """A KopfRunner for one namespace (`with start_operator(ns) as runner:`)."""
    from kopf.testing import KopfRunner

    return KopfRunner(
        ["run", "-m", "tuneloop.operator.main", "--standalone", "--namespace", namespace],
        timeout=60,
    )


@pytest.fixture
def operator(operator_env, rayjob_crd, namespace) -> Iterator[object]:
    with start_operator(namespace) as runner:
        yield runner
    assert runner.exit_code == 0, runner.output
    assert runner.exception is None, runner.exception


@pytest.fixture(scope="module")
def shared_operator(operator_env, rayjob_crd, ns_prefix, tmp_path_factory) -> Iterator[object]:
    """One real operator process per module, watching the module's namespaces (`ns_prefix`, defined by
    each module that uses it); it must survive the whole module."""
    from tests.api.harness import OperatorProcess, operator_process_env

    log = tmp_path_factory.mktemp("operator") / "operator.log"
    op = OperatorProcess(f"{ns_prefix}-*", operator_process_env(operator_env), log).start()
    yield op
    alive = op.proc is not None and op.proc.poll() is None
    op.stop()
    assert alive, f"the shared operator died during the module:\n{op.tail()}"


_namespace_counter = itertools.count()


@pytest.fixture
def cluster(shared_operator, api_client, ns_prefix) -> Iterator[object]:
    """A fresh namespace the module's shared operator watches; the operator's log for it is printed
    (shown by pytest when the test failed)."""
    from tests.api.harness import create_namespace
    from tests.api.kube import Cluster

    ns = create_namespace(api_client, f"{ns_prefix}-{next(_namespace_counter)}")
    yield Cluster(api_client, ns)
    print(f"--- operator log for {ns} ---\n{shared_operator.tail(contains=ns)}")


@pytest.fixture
def ray_api() -> Iterator[object]:
    """A stand-in for Ray's job API (for the states a real head cannot be put in)."""
    from tests.api.harness import RayJobApiStub

    stub = RayJobApiStub()
    yield stub
    with contextlib.suppress(Exception):
        stub.close()
