"""One MLflow tracking server and one Ray head per pytest session, shared by the e2e stories that do not
need their own: starting the pair costs ~30 s each on a quiet 2-core machine (more under load), and seven
modules used to start their own.

Who keeps their own: test_demo (the demo starts and stops everything itself, and the test checks that)
and test_devenv_cleanup (its stories are the start and stop of these very services).

What sharing asks of the modules that share:
- Logical CPUs: the head has 4, like the demo's. A training story needs 2 TorchTrainer workers plus its
  driver; a serving module's Serve apps hold CPUs on the head (Generator 1, Ingress 0.5 each). So a module
  that deploys Serve apps calls `release_serve()` in its teardown: Serve is shut down (its apps, proxy and
  controller gone) before the next module starts, and the next serving module starts Serve again with
  its own HTTP port.
- MLflow names: registered model names are global on one server. The training modules already use names
  of their own; a module whose story counts versions from 1 under a shared name calls
  `forget_model(name)` first, which gives it the fresh registry entry a server of its own gave it.
- Stories that kill things kill a driver, a Train worker or an operator, never the head or the server.

Both processes are stopped when the session ends: on success, failure and Ctrl-C (ExitStack callbacks).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tuneloop.devenv import mlflow_server, ray_head

SHARED_RAY_CPUS = 4
# Actors that hold the head's CPUs while Serve runs; none may be alive after release_serve().
SERVE_ACTORS = ("ServeController", "ProxyActor", "ServeReplica")


@dataclass
class SharedServices:
    ray: ray_head.RayHead
    mlflow: mlflow_server.MlflowServer

    @property
    def tracking_uri(self) -> str:
        return self.mlflow.tracking_uri

    def _get(self, path: str) -> dict:
        with urllib.request.urlopen(self.ray.address + path, timeout=30) as resp:
            return json.loads(resp.read() or b"{}")

    def serve_actors(self) -> list[str]:
        """Class names of the live Serve actors on the head (state API through the dashboard)."""
        body = self._get("/api/v0/actors?limit=10000&detail=false")
        actors = body["data"]["result"]["result"]  # a KeyError, never an empty list, if the format changes
        return [a["class_name"] for a in actors
                if a["state"] != "DEAD" and any(s in a["class_name"] for s in SERVE_ACTORS)]

    def release_serve(self, timeout_seconds: float = 120) -> None:
        """Shut Serve down on the shared head (the dashboard's DELETE runs serve.shutdown()) and wait
        until its actors are gone, so the next module finds every CPU free and Serve not started."""
        req = urllib.request.Request(self.ray.address + "/api/serve/applications/", method="DELETE")
        with urllib.request.urlopen(req, timeout=timeout_seconds) as resp:
            assert resp.status == 200, resp.status
        deadline = time.monotonic() + timeout_seconds
        while left := self.serve_actors():
            assert time.monotonic() < deadline, f"Serve actors still alive after shutdown: {left}"
            time.sleep(1)

    def forget_model(self, name: str) -> None:
        """Delete the registered model `name` (and its versions) if an earlier module registered it."""
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.tracking_uri, registry_uri=self.tracking_uri)
        with contextlib.suppress(MlflowException):
            client.delete_registered_model(name)


@pytest.fixture(scope="session")
def shared_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedServices]:
    workdir = tmp_path_factory.mktemp("shared-e2e")
    ray_dir = Path(f"/tmp/tl-sh-{os.getpid()}")  # unix socket paths (107 bytes) must stay short
    mlflow_srv = mlflow_server.MlflowServer(workdir / "mlflow")
    head = ray_head.RayHead(ray_dir, num_cpus=SHARED_RAY_CPUS)
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, ray_dir, True)
        stack.callback(head.stop)
        stack.callback(mlflow_srv.stop)
        # The head first, alone: its raylet must register within Ray's fixed 30 s, which a busy 2-core
        # machine misses while MLflow starts beside it (seen here: two lost races, ~4 min, at load 8-12).
        # RayHead.start retries a lost race; sequential costs ~30 s once per session.
        head.start()
        mlflow_srv.start()
        yield SharedServices(head, mlflow_srv)
