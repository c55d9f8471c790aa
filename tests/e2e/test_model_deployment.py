"""The ModelDeployment controller end to end: a real kube-apiserver with the CRDs, the operator as a
real process (`kopf run`, killable), a real `ray start --head` and a real MLflow server on loopback,
two LoRA versions of the tiny Llama registered in MLflow (built as in test_serving_runtime).

One story, in order: a ModelDeployment following `champion` serves it and answers completions; a
second ModelDeployment (pinned) on the same Ray cluster deploys without deleting the first; moving
`champion` switches serving while a client sends requests throughout, with no failed request and no
replica restart; bad model references get ModelResolved=False naming what exists; a registered
version that cannot answer its warm-up request never takes the default (the old keeps serving); the operator
killed mid-rollout and restarted converges to one served version; deleting a ModelDeployment removes
only its own application.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from tests.api.harness import OperatorProcess, operator_process_env
from tests.api.kube import wait_for
from tests.e2e.conftest import SharedServices
from tests.e2e.test_serving_runtime import MODEL_NAME, PROMPT, build_adapter, http, keep_logs, log_and_register
from tuneloop.api import constants
from tuneloop.devenv import ray_head, tinymodel
from tuneloop.devenv.ports import free_port

pytestmark = pytest.mark.e2e
PLURAL = constants.DEPLOYMENT_PLURAL
DEPLOY_TIMEOUT = 420.0


@dataclass
class Stack:
    ray: ray_head.RayHead
    tracking_uri: str
    versions: list[str]  # "1", "2"
    serve_port: int
    operator: OperatorProcess
    api: k8s.CustomObjectsApi
    core: k8s.CoreV1Api
    ns: str
    workdir: Path

    # --- the objects ---
    def create(self, name: str, model: dict[str, Any], ns: str | None = None, **serving: Any) -> None:
        body = {"apiVersion": constants.API_VERSION, "kind": constants.DEPLOYMENT_KIND,
                "metadata": {"name": name},
                "spec": {"model": {"name": MODEL_NAME, **model},
                         "serving": {"replicas": 1, "resources": {"cpu": "1"}, "maxNewTokens": 64,
                                     "trafficLogUri": f"file://{self.workdir / 'traffic'}", **serving},
                         "monitoring": {"enabled": False}}}
        self.api.create_namespaced_custom_object(constants.GROUP, constants.VERSION, ns or self.ns, PLURAL, body)

    def get(self, name: str, ns: str | None = None) -> dict[str, Any]:
        return self.api.get_namespaced_custom_object(constants.GROUP, constants.VERSION, ns or self.ns, PLURAL, name)

    def status(self, name: str, ns: str | None = None) -> dict[str, Any]:
        return self.get(name, ns).get("status") or {}

    def wait(self, name: str, pred: Callable[[dict[str, Any]], bool], what: str, timeout: float = DEPLOY_TIMEOUT,
             ns: str | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            last = self.status(name, ns)
            if pred(last):
                return last
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what} of {name}; last status:\n"
                                     f"{json.dumps(last, indent=1)[:4000]}\noperator:\n{self.operator.tail(lines=40)}")
            time.sleep(0.2)

    # --- MLflow and Serve ---
    def set_champion(self, version: str) -> None:
        from mlflow.tracking import MlflowClient

        MlflowClient(self.tracking_uri, registry_uri=self.tracking_uri).set_registered_model_alias(
            MODEL_NAME, "champion", version)

    def apps(self) -> dict[str, Any]:
        status, _, body = http("GET", f"{self.ray.address}/api/serve/applications/", timeout=30)
        assert status == 200, body
        return body.get("applications") or {}


def cond(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), {})


def serving(version: str) -> Callable[[dict[str, Any]], bool]:
    return lambda st: (st.get("servedVersion") == version and cond(st, "Ready").get("status") == "True"
                       and not st.get("rollout"))


@pytest.fixture(scope="module")
def stack(shared_services: SharedServices, tmp_path_factory: pytest.TempPathFactory, kubeconfig: Path,
          api_client: Any) -> Iterator[Stack]:
    """The session's Ray head and MLflow server (tests/e2e/conftest.py); MODEL_NAME starts from version 1 as
    on a server of its own (the story checks "versions: 1, 2"); Serve is shut down after the module."""
    workdir = tmp_path_factory.mktemp("mdep-e2e")
    head = shared_services.ray
    prefix = f"md{uuid.uuid4().hex[:6]}"
    with contextlib.ExitStack() as es:
        es.callback(shared_services.release_serve)
        es.callback(keep_logs, head, workdir / "ray-logs")
        shared_services.forget_model(MODEL_NAME)
        model_dir = tinymodel.build_model(workdir / "model")
        versions = []
        for seed in (1, 2):
            adapter = build_adapter(model_dir, workdir / f"adapter-{seed}", seed)
            versions.append(log_and_register(shared_services.tracking_uri, model_dir, adapter, workdir / f"run-{seed}")
                            .split("/")[1])
        serve_port = free_port()
        env = operator_process_env({
            "KUBECONFIG": str(kubeconfig), "TUNELOOP_POLL_SECONDS": "1", "TUNELOOP_MAX_POLL_SECONDS": "4",
            "TUNELOOP_SERVE_ROLLOUT_POLL_SECONDS": "2", "TUNELOOP_METRICS_PORT": "0",
            "TUNELOOP_DELETE_TIMEOUT_SECONDS": "30", "TUNELOOP_CLIENT_RETRIES": "1",
            "TUNELOOP_MLFLOW_TRACKING_URI": shared_services.tracking_uri, "TUNELOOP_SERVE_ADDRESS": head.address,
            "TUNELOOP_SERVE_HTTP_HOST": "127.0.0.1", "TUNELOOP_SERVE_HTTP_PORT": str(serve_port),
            "TUNELOOP_STORAGE_ROOT": str(workdir / "storage"),
        })
        op = OperatorProcess(f"{prefix}-*", env, workdir / "operator.log")
        es.callback(op.stop)
        core = k8s.CoreV1Api(api_client)
        for suffix in ("a", "b"):
            core.create_namespace({"metadata": {"name": f"{prefix}-{suffix}"}})
        op.start()
        yield Stack(head, shared_services.tracking_uri, versions, serve_port, op, k8s.CustomObjectsApi(api_client),
                    core, f"{prefix}-a", workdir)


def complete(url: str, **body: Any) -> tuple[int, Any]:
    status, _, answer = http("POST", f"{url}/v1/completions", {"prompt": PROMPT, "max_tokens": 8, **body}, timeout=60)
    return status, answer


def test_follows_champion_and_answers_completions(stack: Stack) -> None:
    v1, _ = stack.versions
    stack.set_champion(v1)
    started = time.monotonic()
    stack.create("inv", {"alias": "champion"})
    st = stack.wait("inv", serving(v1), "serving version 1")
    print(f"FIGURE first deploy to Ready: {time.monotonic() - started:.1f}s")
    assert st["endpoint"] == f"http://127.0.0.1:{stack.serve_port}/{stack.ns}/inv"
    assert st["readyReplicas"] == 1 and st["observedGeneration"] == 1 and st["phase"] == "Serving"
    assert cond(st, "ModelResolved")["status"] == "True" and cond(st, "RollingOut")["status"] == "False"
    assert [(r["version"], r.get("previousVersion")) for r in st["rolloutHistory"]] == [(v1, None)]
    status, answer = complete(st["endpoint"])
    assert status == 200, answer
    assert answer["model"] == f"{MODEL_NAME}/{v1}" and answer["choices"][0]["text"] and answer["usage"]["total_tokens"]


def test_a_second_deployment_keeps_the_first(stack: Stack) -> None:
    _, v2 = stack.versions
    other_ns = stack.ns[:-1] + "b"
    stack.create("pinned", {"version": v2}, ns=other_ns)
    st = stack.wait("pinned", serving(v2), "serving pinned version 2", ns=other_ns)
    apps = stack.apps()
    assert {f"{stack.ns}.inv", f"{other_ns}.pinned"} <= set(apps)
    assert all(apps[a]["status"] == "RUNNING" for a in (f"{stack.ns}.inv", f"{other_ns}.pinned"))
    first = stack.status("inv")
    assert first["servedVersion"] == stack.versions[0] and cond(first, "Ready")["status"] == "True"
    for url, version in ((first["endpoint"], stack.versions[0]), (st["endpoint"], v2)):
        status, answer = complete(url)
        assert status == 200 and answer["model"] == f"{MODEL_NAME}/{version}", answer


def test_moving_champion_switches_with_no_failed_request(stack: Stack) -> None:
    v1, v2 = stack.versions
    url = stack.status("inv")["endpoint"]
    before = {name: {r["replica_id"] for r in d.get("replicas", [])}
              for name, d in stack.apps()[f"{stack.ns}.inv"]["deployments"].items()}
    results: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            status, answer = complete(url, max_tokens=4)
            results.append((status, answer.get("model") if isinstance(answer, dict) else str(answer)[:200]))

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    try:
        wait_for(lambda: len(results) >= 3, 120, "requests before the move")
        stack.set_champion(v2)
        moved = time.monotonic()
        st = stack.wait("inv", serving(v2), "serving version 2 after the alias move")
        print(f"FIGURE alias move to servedVersion 2: {time.monotonic() - moved:.1f}s")
        seen = len(results)
        wait_for(lambda: len(results) >= seen + 5, 120, "requests after the switch")
    finally:
        stop.set()
        thread.join(timeout=120)
    failed = [r for r in results if r[0] != 200]
    print(f"FIGURE requests during the switch: {len(results)}, failed: {len(failed)}")
    assert not failed, f"{len(failed)} of {len(results)} requests failed: {failed[:5]}"
    models = [m for _, m in results]
    switch = models.index(f"{MODEL_NAME}/{v2}")
    assert set(models[:switch]) == {f"{MODEL_NAME}/{v1}"} and set(models[switch:]) == {f"{MODEL_NAME}/{v2}"}
    assert [(r["version"], r.get("previousVersion"), r.get("alias")) for r in st["rolloutHistory"]][-1] == (
        v2, v1, "champion")
    after = {name: {r["replica_id"] for r in d.get("replicas", [])}
             for name, d in stack.apps()[f"{stack.ns}.inv"]["deployments"].items()}
    assert after == before, "the switch restarted replicas"
    assert stack.apps()[f"{stack.ns[:-1]}b.pinned"]["status"] == "RUNNING"


def test_bad_model_references_say_what_exists(stack: Stack) -> None:
    stack.create("no-alias", {"alias": "gold"})
    stack.create("no-model", {"alias": "champion", "name": "nobody-registered-this"})
    st = stack.wait("no-alias", lambda s: cond(s, "ModelResolved").get("reason") == "AliasNotFound",
                    "AliasNotFound", timeout=60)
    message = cond(st, "ModelResolved")["message"]
    assert "'gold'" in message and f"champion → {stack.versions[1]}" in message and "versions: 1, 2" in message
    assert st["phase"] == "Pending" and cond(st, "Ready")["reason"] == "AliasNotFound" and st["waiting"]
    st = stack.wait("no-model", lambda s: cond(s, "ModelResolved").get("reason") == "ModelNotFound",
                    "ModelNotFound", timeout=60)
    assert "nobody-registered-this" in cond(st, "ModelResolved")["message"]
    assert not any(name.endswith(("no-alias", "no-model")) for name in stack.apps())


def test_a_candidate_that_cannot_answer_never_takes_traffic(stack: Stack) -> None:
    from mlflow.tracking import MlflowClient

    _, v2 = stack.versions
    client = MlflowClient(stack.tracking_uri, registry_uri=stack.tracking_uri)
    broken = str(client.create_model_version(MODEL_NAME, "s3://nowhere/not-an-adapter").version)
    stack.set_champion(broken)
    st = stack.wait("inv", lambda s: cond(s, "RollingOut").get("reason") == "CandidateUnhealthy", "CandidateUnhealthy",
                    timeout=240)
    assert st["servedVersion"] == v2 and cond(st, "Ready")["status"] == "True" and st["phase"] == "Degraded"
    assert f"version {broken} did not answer" in cond(st, "RollingOut")["message"]
    ingress = {d["name"]: d for d in stack.apps()[f"{stack.ns}.inv"]["deployed_app_config"]["deployments"]}["Ingress"]
    assert ingress["user_config"] == {"default_model_id": f"{MODEL_NAME}/{v2}"}
    status, answer = complete(st["endpoint"])
    assert status == 200 and answer["model"] == f"{MODEL_NAME}/{v2}", answer


def test_operator_killed_mid_rollout_converges(stack: Stack) -> None:
    v1, _ = stack.versions
    stack.set_champion(v1)
    stack.wait("inv", lambda s: (s.get("rollout") or {}).get("version") == v1, "rollout of version 1 started",
               timeout=60)
    stack.operator.kill()
    stack.operator.start()
    st = stack.wait("inv", serving(v1), "serving version 1 after the restart")
    apps = [name for name in stack.apps() if name.endswith(".inv")]
    assert apps == [f"{stack.ns}.inv"]
    ingress = {d["name"]: d for d in stack.apps()[apps[0]]["deployed_app_config"]["deployments"]}["Ingress"]
    assert ingress["user_config"] == {"default_model_id": f"{MODEL_NAME}/{v1}"}
    status, answer = complete(st["endpoint"])
    assert status == 200 and answer["model"] == f"{MODEL_NAME}/{v1}", answer


def test_deleting_removes_only_its_own_application(stack: Stack) -> None:
    other_ns = stack.ns[:-1] + "b"
    stack.api.delete_namespaced_custom_object(constants.GROUP, constants.VERSION, other_ns, PLURAL, "pinned")
    wait_for(lambda: f"{other_ns}.pinned" not in stack.apps(), 120, "the pinned application removed")
    apps = stack.apps()
    assert apps[f"{stack.ns}.inv"]["status"] == "RUNNING"
    status, answer = complete(stack.status("inv")["endpoint"])
    assert status == 200, answer
