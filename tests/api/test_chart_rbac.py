"""The chart's RBAC on the real apiserver: the rendered chart is server-side applied, and the operator
runs as the chart's ServiceAccount (a TokenRequest token, not admin) with the Deployment's own
command line, through a FineTune's whole life (RayJob mode: the test acts as KubeRay and as the job)
and a ModelDeployment's (to Ready on a stand-in for Ray Serve's REST API, then deleted).

Every rule is proven needed twice over: the apiserver's audit log shows the operator used every verb
it is granted and nothing else (so none is spare, and a granted verb it uses would be refused without
its rule), and each rule removed in turn shows what breaks. Outside its rights it is refused: a Secret,
and in single-namespace mode another namespace."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from tests.api.chart_install import Call, Request, audit, audit_offset, sa_kubeconfig, server_side_apply
from tests.api.conftest import OPERATOR_ENV
from tests.api.harness import cond, create_namespace, job_tags
from tests.api.kube import Cluster, act_as_job, finetune, wait_for
from tuneloop.api import constants
from tuneloop.devenv import chart
from tuneloop.devenv.ports import free_port

pytestmark = [pytest.mark.apiserver, pytest.mark.slow]

KUBE_VERSION = os.environ.get("KUBE_VERSION", "1.33.13")
RELEASE, RELEASE_NS = "tuneloop", "tuneloop-system"
SA_USER = f"system:serviceaccount:{RELEASE_NS}:{RELEASE}"

# --- the rendered chart ------------------------------------------------------------------------------


def deployment_container(docs: list[dict]) -> dict[str, Any]:
    [deployment] = [d for d in docs if d["kind"] == "Deployment"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return container


def role_rules(docs: list[dict], kind: str = "ClusterRole", name: str = RELEASE) -> list[dict]:
    [role] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return role["rules"]


def granted(rules: list[dict]) -> set[Call]:
    return {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


class Operator:
    """The container's command line from the rendered Deployment, run here as a process, with the
    Deployment's environment plus the tests' short polls, logged in with the ServiceAccount token."""

    def __init__(self, docs: list[dict], kubeconfig: Path, log: Path, storage: Path) -> None:
        container = deployment_container(docs)
        assert container["command"] == ["kopf"], container["command"]
        port = free_port()
        self.args = [a.replace("0.0.0.0:8081", f"127.0.0.1:{port}") for a in container["args"]]
        env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
        env |= {**OPERATOR_ENV, "KUBECONFIG": str(kubeconfig), "TUNELOOP_STORAGE_ROOT": str(storage),
                "HOME": os.environ.get("HOME", "/tmp"), "PYTHONUNBUFFERED": "1"}
        self.env = {**os.environ, **env}
        self.log, self.port = log, port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Operator:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "kopf", *self.args], env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        import urllib.request

        def live() -> bool:
            assert self.proc is not None and self.proc.poll() is None, f"operator exited:\n{self.tail()}"
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status == 200
            except OSError:
                return False
        wait_for(live, 120, "the operator's liveness endpoint", interval=0.5)
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""


def refused(control_plane, since: int, group: str, resource: str, verb: str, namespace: str) -> Request | None:
    return next((r for r in audit(control_plane, SA_USER, since) if r.call == (group, resource, verb)
                 and r.namespace == namespace and r.code == 403), None)


# --- a stand-in for Ray Serve's REST API (ExistingCluster serving) ------------------------------


class ServeStub:
    """`GET/PUT /api/serve/applications/`: a PUT's applications are RUNNING at once with the config sent."""

    def __init__(self) -> None:
        self.apps: dict[str, dict[str, Any]] = {}
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def _send(self, code: int, payload: Any) -> None:
                body = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._send(200, {"http_options": {"host": "127.0.0.1", "port": 8000}, "applications": {
                    name: {"status": "RUNNING", "message": "", "last_deployed_time_s": app["time"],
                           "deployed_app_config": app["config"],
                           "deployments": {"Generator": {"replicas": [{"state": "RUNNING"}]}}}
                    for name, app in stub.apps.items()}})

            def do_PUT(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                now = time.time()
                stub.apps = {a["name"]: {"config": a, "time": now} for a in body.get("applications") or []}
                self._send(200, {})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def model_deployment(name: str, model: str, tracking_uri: str, serve_address: str, workdir: Path) -> dict[str, Any]:
    return {"apiVersion": constants.API_VERSION, "kind": constants.DEPLOYMENT_KIND, "metadata": {"name": name},
            "spec": {"model": {"name": model, "alias": "champion", "trackingUri": tracking_uri},
                     "serving": {"mode": "ExistingCluster", "address": serve_address, "replicas": 1,
                                 "resources": {"cpu": "1"}, "trafficLogUri": f"file://{workdir / 'traffic'}"},
                     "monitoring": {"enabled": False}}}


# Only where no RayService CRD is installed yet (KubeRay's own, or a fuller test fixture, wins).
RAYSERVICE_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "rayservices.ray.io"},
    "spec": {"group": "ray.io", "scope": "Namespaced",
             "names": {"kind": "RayService", "plural": "rayservices", "singular": "rayservice",
                       "listKind": "RayServiceList"},
             "versions": [{"name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
                           "schema": {"openAPIV3Schema": {"type": "object",
                                                          "x-kubernetes-preserve-unknown-fields": True}}}]},
}


def ensure_rayservice_crd(control_plane) -> None:
    if control_plane.kubectl("get", "crd", "rayservices.ray.io", check=False).returncode != 0:
        control_plane.kubectl("apply", "--server-side", "-f", "-", input_text=yaml.safe_dump(RAYSERVICE_CRD))
    control_plane.kubectl("wait", "--for=condition=Established", "--timeout=30s", "crd/rayservices.ray.io")


def watches_started(control_plane) -> set[Call]:
    """The watches the chart's ServiceAccount opened, granted."""
    started = audit(control_plane, SA_USER, stage="ResponseStarted")
    return {r.call for r in started if r.verb == "watch" and r.code == 200}


def register_champion(tracking_uri: str, model: str) -> None:
    """Version 1 of `model`, holding the champion alias (what a Succeeded FineTune leaves behind)."""
    from mlflow.tracking import MlflowClient

    run_id = act_as_job(tracking_uri, f"rbac/{model}", {}, {"exact_match": 0.8}, {"exact_match": 0.3})
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    client.create_registered_model(model)
    client.create_model_version(model, f"runs:/{run_id}/model", run_id)
    client.set_registered_model_alias(model, "champion", "1")


def md_status(api_client, namespace: str, name: str) -> dict[str, Any]:
    return k8s.CustomObjectsApi(api_client).get_namespaced_custom_object(
        constants.GROUP, constants.VERSION, namespace, constants.DEPLOYMENT_PLURAL, name).get("status") or {}


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def installed(control_plane, api_client, rayjob_crd, tmp_path_factory) -> dict[str, Any]:
    """The chart with its defaults (every namespace, ClusterRole) applied server-side."""
    ensure_rayservice_crd(control_plane)
    docs = chart.template(KUBE_VERSION, release=RELEASE, namespace=RELEASE_NS)
    try:
        create_namespace(api_client, RELEASE_NS)
    except ApiException as e:
        assert e.status == 409, e
    server_side_apply(control_plane, docs)
    for crd in (d for d in docs if d["kind"] == "CustomResourceDefinition"):
        control_plane.kubectl("wait", "--for=condition=Established", "--timeout=30s", f"crd/{crd['metadata']['name']}")
    workdir = tmp_path_factory.mktemp("chart-rbac")
    kubeconfig = sa_kubeconfig(control_plane, api_client, RELEASE_NS, RELEASE, workdir / "kubeconfig")
    return {"docs": docs, "kubeconfig": kubeconfig, "workdir": workdir}


@pytest.fixture(scope="module")
def operator_as_sa(installed, mlflow_server) -> Iterator[Operator]:
    op = Operator(installed["docs"], installed["kubeconfig"], installed["workdir"] / "operator.log",
                  installed["workdir"]).start()
    yield op
    alive = op.proc is not None and op.proc.poll() is None
    op.stop()
    assert alive, f"the operator died:\n{op.tail()}"


@pytest.fixture
def sa_client(installed) -> k8s.ApiClient:
    return k8s_config.new_client_from_config(config_file=str(installed["kubeconfig"]))


def status_phase(cluster: Cluster, name: str, phase: str):
    return lambda: cluster.status(name) if cluster.status(name).get("phase") == phase else None


# --- the whole life under the chart's rights -------------------------------------------------------


def test_the_operator_runs_a_finetune_through_its_life_with_the_charts_serviceaccount_and_uses_every_right(
        control_plane, api_client, installed, operator_as_sa, mlflow_server):
    since = audit_offset(control_plane)
    cluster = Cluster(api_client, create_namespace(api_client, f"rbac-life-{time.monotonic_ns() % 10**8}"))
    uri, model = mlflow_server.tracking_uri, f"m-{cluster.ns}"
    ft = cluster.create(finetune("life", uri, model=model))
    job = wait_for(lambda: (cluster.status("life").get("run") or {}).get("rayJobName"), 60, "RayJob launched")
    cluster.set_rayjob_status(job, jobStatus="RUNNING", jobDeploymentStatus="Running")
    wait_for(status_phase(cluster, "life", "Running"), 60, "Running")
    act_as_job(uri, f"tuneloop/{cluster.ns}/life", job_tags(ft), {"exact_match": 0.8}, {"exact_match": 0.3})
    cluster.set_rayjob_status(job, jobStatus="SUCCEEDED", jobDeploymentStatus="Complete")
    st = wait_for(status_phase(cluster, "life", "Succeeded"), 90, "Succeeded")
    assert st["model"]["alias"] == "champion" and cond(st, "Ready")["reason"] == "Promoted"
    assert {e.reason for e in cluster.events("life")} >= {"Launching", "Training", "Registering", "Promoted"}

    # A ModelDeployment of the champion, served on a stand-in for Ray Serve, to Ready and deleted.
    serve = ServeStub()
    mds = k8s.CustomObjectsApi(api_client)
    try:
        mds.create_namespaced_custom_object(constants.GROUP, constants.VERSION, cluster.ns, constants.DEPLOYMENT_PLURAL,
                                            model_deployment("serve", model, uri, serve.address, installed["workdir"]))
        md = wait_for(lambda: (s := md_status(api_client, cluster.ns, "serve")) and
                      cond(s, "Ready").get("status") == "True" and s, 90, "ModelDeployment Ready")
        assert md["servedVersion"] == "1" and list(serve.apps) == [md["appName"]]
        mds.delete_namespaced_custom_object(constants.GROUP, constants.VERSION, cluster.ns, constants.DEPLOYMENT_PLURAL,
                                            "serve")
        wait_for(lambda: not mds.list_namespaced_custom_object(constants.GROUP, constants.VERSION, cluster.ns,
                                                               constants.DEPLOYMENT_PLURAL)["items"],
                 60, "ModelDeployment deleted (finalizer removed)")
        assert serve.apps == {}, "deleting the ModelDeployment left its Serve application"
    finally:
        serve.close()

    # RayService mode: the operator creates the RayService (KubeRay would run it) and replaces its spec
    # when the ModelDeployment's changes.
    body = model_deployment("kuberay", model, uri, "", installed["workdir"])
    body["spec"]["serving"] = {"mode": "RayService", "replicas": 1, "resources": {"cpu": "1"},
                               "trafficLogUri": f"file://{installed['workdir'] / 'traffic'}"}
    mds.create_namespaced_custom_object(constants.GROUP, constants.VERSION, cluster.ns, constants.DEPLOYMENT_PLURAL,
                                        body)
    def rayservices() -> list[dict[str, Any]]:
        return mds.list_namespaced_custom_object("ray.io", "v1", cluster.ns, "rayservices")["items"]

    [rs] = wait_for(rayservices, 60, "RayService created")
    mds.patch_namespaced_custom_object(constants.GROUP, constants.VERSION, cluster.ns, constants.DEPLOYMENT_PLURAL,
                                       "kuberay", {"spec": {"serving": {"replicas": 2}}})
    wait_for(lambda: rayservices()[0]["metadata"]["generation"] > rs["metadata"]["generation"], 60,
             "RayService spec replaced")
    mds.delete_namespaced_custom_object(constants.GROUP, constants.VERSION, cluster.ns, constants.DEPLOYMENT_PLURAL,
                                        "kuberay")
    wait_for(lambda: not mds.list_namespaced_custom_object(constants.GROUP, constants.VERSION, cluster.ns,
                                                           constants.DEPLOYMENT_PLURAL)["items"],
             60, "RayService-mode ModelDeployment deleted (finalizer removed)")

    # Deletion: the operator deletes its RayJob and ConfigMap itself (this control plane has no garbage
    # collector) and removes its finalizer.
    assert cluster.rayjobs() and cluster.configmaps()
    cluster.delete("life")
    wait_for(lambda: not cluster.exists("life"), 60, "FineTune deleted (finalizer removed)")
    assert cluster.rayjobs() == [] and cluster.configmaps() == []

    requests = wait_for(lambda: audit(control_plane, SA_USER, since) or None, 10, "audit entries")
    used = {r.call for r in requests}
    refusals = sorted({(r.call, r.namespace) for r in requests if r.code == 403})
    assert not refusals, (f"the operator was refused {refusals}: a new call needs its rule in tuneloop.operatorRules "
                          f"(charts/tuneloop/templates/_helpers.tpl)\n{operator_as_sa.tail()}")
    rules = granted(role_rules(installed["docs"]))
    # The watches and first lists were made before `since`, at start-up (the RayService CRD was installed
    # before the operator started, so it watches our RayServices too: shown from the whole audit log).
    watched = (("tuneloop.io", "finetunes"), ("tuneloop.io", "modeldeployments"), ("ray.io", "rayservices"))
    at_start = {(group, kind, verb) for group, kind in watched for verb in ("list", "watch")}
    from_start = {r.call for r in audit(control_plane, SA_USER) if r.code == 200} | watches_started(control_plane)
    assert at_start <= from_start, f"not listed and watched at start-up: {sorted(at_start - from_start)}"
    assert used | at_start == rules, (
        f"granted but never used: {sorted(rules - used - at_start)}; used without a rule: {sorted(used - rules)}")


def test_the_serviceaccount_is_refused_what_the_chart_does_not_give(control_plane, api_client, installed, sa_client):
    ns = create_namespace(api_client, f"rbac-deny-{time.monotonic_ns() % 10**8}")
    k8s.CoreV1Api(api_client).create_namespaced_secret(ns, {"metadata": {"name": "mlflow-creds"},
                                                            "stringData": {"uri": "http://user:pw@mlflow"}})
    core, custom = k8s.CoreV1Api(sa_client), k8s.CustomObjectsApi(sa_client)
    attempts = {
        "get a Secret": lambda: core.read_namespaced_secret("mlflow-creds", ns),
        "list Secrets": lambda: core.list_namespaced_secret(ns),
        "list Pods": lambda: core.list_namespaced_pod(ns),
        "read a ConfigMap": lambda: core.read_namespaced_config_map("kube-root-ca.crt", ns),
        "create a ModelDeployment": lambda: custom.create_namespaced_custom_object(
            "tuneloop.io", "v1alpha1", ns, "modeldeployments", {"apiVersion": "tuneloop.io/v1alpha1",
                                                                "kind": "ModelDeployment", "metadata": {"name": "x"},
                                                                "spec": {"model": {"name": "m", "version": "1"}}}),
        "update a RayJob": lambda: custom.replace_namespaced_custom_object(
            "ray.io", "v1", ns, "rayjobs", "x",
            {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": {"name": "x"}}),
        "delete a FineTune": lambda: custom.delete_namespaced_custom_object("tuneloop.io", "v1alpha1", ns,
                                                                            "finetunes", "x"),
        "list namespaces": lambda: core.list_namespace(),
    }
    allowed = []
    for what, attempt in attempts.items():
        try:
            attempt()
            allowed.append(what)
        except ApiException as e:
            if e.status != 403:
                allowed.append(f"{what} (answered {e.status}, not 403)")
    assert not allowed, f"the chart's ServiceAccount may: {allowed}"


# --- remove one rule, see what breaks --------------------------------------------------------------

# Each rule of the ClusterRole (by its resource) and what the operator's first refused call is when it
# is missing: (apiGroup, resource, verb).
FIRST_REFUSAL = {
    "finetunes/status": ("tuneloop.io", "finetunes/status", "patch"),
    "modeldeployments/status": ("tuneloop.io", "modeldeployments/status", "patch"),
    "rayservices": ("ray.io", "rayservices", "get"),
    "configmaps": ("", "configmaps", "create"),
    "rayjobs": ("ray.io", "rayjobs", "create"),
    "events": ("", "events", "create"),
}


@pytest.mark.parametrize("removed", list(FIRST_REFUSAL))
def test_without_each_rule_the_operator_breaks(control_plane, api_client, installed, operator_as_sa, mlflow_server,
                                               removed):
    """The role changes under the running operator (RBAC is checked on every request)."""
    docs = installed["docs"]
    [role] = [d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == RELEASE]
    reduced = {**role, "rules": [r for r in role["rules"] if r["resources"] != [removed]]}
    assert len(reduced["rules"]) == len(role["rules"]) - 1
    cluster = Cluster(api_client, create_namespace(api_client, f"rbac-no-{removed.replace('/', '-')}-"
                                                               f"{time.monotonic_ns() % 10**6}"))
    since = audit_offset(control_plane)
    server_side_apply(control_plane, [reduced])
    serve = ServeStub()
    try:
        if removed == "rayservices":
            # A RayService-mode ModelDeployment of a model that resolves: next the operator reads its RayService.
            model = f"m-{cluster.ns}"
            register_champion(mlflow_server.tracking_uri, model)
            body = model_deployment("broken", model, mlflow_server.tracking_uri, "", installed["workdir"])
            body["spec"]["serving"] = {"mode": "RayService", "replicas": 1, "resources": {"cpu": "1"},
                                       "trafficLogUri": f"file://{installed['workdir'] / 'traffic'}"}
            k8s.CustomObjectsApi(api_client).create_namespaced_custom_object(
                constants.GROUP, constants.VERSION, cluster.ns, constants.DEPLOYMENT_PLURAL, body)
        elif removed.startswith("modeldeployments"):
            k8s.CustomObjectsApi(api_client).create_namespaced_custom_object(
                constants.GROUP, constants.VERSION, cluster.ns, constants.DEPLOYMENT_PLURAL,
                model_deployment("broken", "no-such-model", mlflow_server.tracking_uri, serve.address,
                                 installed["workdir"]))
        else:
            cluster.create(finetune("broken", mlflow_server.tracking_uri, model=f"m-{cluster.ns}"))
        group, resource, verb = FIRST_REFUSAL[removed]
        wait_for(lambda: refused(control_plane, since, group, resource, verb, cluster.ns), 60,
                 f"the operator's {verb} {resource} refused in {cluster.ns}")
        if removed.startswith(("modeldeployments", "rayservices")):
            assert "phase" not in md_status(api_client, cluster.ns, "broken")
            if removed == "rayservices":
                assert k8s.CustomObjectsApi(api_client).list_namespaced_custom_object(
                    "ray.io", "v1", cluster.ns, "rayservices")["items"] == []
            return
        status = cluster.status("broken")
        if removed == "events":
            # Events are best effort: the FineTune goes on without them (a warning in the log).
            wait_for(lambda: (cluster.status("broken").get("run") or {}).get("rayJobName"), 60, "launch")
            assert cluster.events("broken") == []
            assert "was refused" in operator_as_sa.tail(400)
        else:
            # Anything else stops the object where it is, with no status (the status write is the
            # last step of a reconcile, or is the refused call).
            assert "phase" not in status, status
            # The launch creates both children at once; the refused one is missing.
            if removed == "configmaps":
                assert cluster.configmaps() == []
            if removed == "rayjobs":
                assert cluster.rayjobs() == [] and len(cluster.configmaps()) == 1
            if removed == "finetunes/status":
                assert len(cluster.rayjobs()) == 1 and cluster.configmaps()
    finally:
        serve.close()
        server_side_apply(control_plane, [role])
        # With every right back, the operator cleans up after it.
        if removed.startswith(("modeldeployments", "rayservices")):
            k8s.CustomObjectsApi(api_client).delete_namespaced_custom_object(
                constants.GROUP, constants.VERSION, cluster.ns, constants.DEPLOYMENT_PLURAL, "broken")
        else:
            cluster.delete("broken")


@pytest.mark.parametrize("kind", ["finetunes", "modeldeployments"])
def test_without_a_kinds_rule_the_operator_cannot_even_watch_it(control_plane, api_client, installed,
                                                                 operator_as_sa, tmp_path, kind):
    """List and watch are made at start-up, so these rules are shown with a fresh operator."""
    docs = installed["docs"]
    [role] = [d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == RELEASE]
    reduced = {**role, "rules": [r for r in role["rules"] if r["resources"] != [kind]]}
    since = audit_offset(control_plane)
    server_side_apply(control_plane, [reduced])
    second = Operator(docs, installed["kubeconfig"], tmp_path / "operator.log", tmp_path)
    try:
        second.start()
        wait_for(lambda: next((r for r in audit(control_plane, SA_USER, since)
                               if r.call == ("tuneloop.io", kind, "list") and r.code == 403), None),
                 60, f"the list of {kind} refused")
    finally:
        second.stop()
        server_side_apply(control_plane, [role])


# --- single-namespace mode -------------------------------------------------------------------------


def test_single_namespace_install_works_in_its_namespace_and_is_refused_everywhere_else(
        control_plane, api_client, rayjob_crd, mlflow_server, tmp_path):
    solo = create_namespace(api_client, f"rbac-solo-{time.monotonic_ns() % 10**8}")
    other = Cluster(api_client, create_namespace(api_client, f"rbac-other-{time.monotonic_ns() % 10**8}"))
    docs = chart.template(KUBE_VERSION, "--set", "singleNamespaceInstall=true", "--set", "crds.install=false",
                          release="solo", namespace=solo)
    assert not [d for d in docs if d["kind"] == "ClusterRoleBinding"]
    server_side_apply(control_plane, docs)
    kubeconfig = sa_kubeconfig(control_plane, api_client, solo, "solo-tuneloop", tmp_path / "kubeconfig")
    custom = k8s.CustomObjectsApi(k8s_config.new_client_from_config(config_file=str(kubeconfig)))
    custom.list_namespaced_custom_object("tuneloop.io", "v1alpha1", solo, "finetunes")
    for what, attempt in {
        "list FineTunes in another namespace": lambda: custom.list_namespaced_custom_object(
            "tuneloop.io", "v1alpha1", other.ns, "finetunes"),
        "list FineTunes cluster-wide": lambda: custom.list_cluster_custom_object(
            "tuneloop.io", "v1alpha1", "finetunes"),
        "create a RayJob in another namespace": lambda: custom.create_namespaced_custom_object(
            "ray.io", "v1", other.ns, "rayjobs", {"apiVersion": "ray.io/v1", "kind": "RayJob",
                                                 "metadata": {"name": "x"}, "spec": {"entrypoint": "x"}}),
    }.items():
        with pytest.raises(ApiException) as e:
            attempt()
        assert e.value.status == 403, what

    op = Operator(docs, kubeconfig, tmp_path / "operator.log", tmp_path)
    assert f"--namespace={solo}" in op.args and "--all-namespaces" not in op.args
    user = f"system:serviceaccount:{solo}:solo-tuneloop"
    since = audit_offset(control_plane)
    op.start()
    try:
        mine = Cluster(api_client, solo)
        mine.create(finetune("solo", mlflow_server.tracking_uri, model=f"m-{solo}"))
        wait_for(lambda: (mine.status("solo").get("run") or {}).get("rayJobName"), 60, "launch in its namespace")
        assert mine.rayjobs() and mine.configmaps() and mine.events("solo")
    finally:
        op.stop()
    # (Another FineTune elsewhere would be picked up by this module's cluster-wide operator; the audit
    # log says what the single-namespace one asked for.)
    requests = audit(control_plane, user, since)
    assert requests and {r.namespace for r in requests} == {solo}, sorted({(r.call, r.namespace) for r in requests})
    assert not [r for r in requests if r.code == 403], "the single-namespace operator was refused something"
