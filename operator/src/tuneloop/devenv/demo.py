"""`make demo`: tuneloop's main job on one machine, from `kubectl apply` to a registered champion.

It starts the embedded default — a local control plane (etcd + kube-apiserver with the CRDs), a Ray head,
an MLflow tracking server and the operator as a real process (`kopf run -m tuneloop.operator.main`) — or,
with `--cluster=current`, uses the current kube context instead of the local control plane. It pre-trains
the small base model once (cached, see `basemodel`), writes the invoice dataset, applies
`examples/demo/` (ExistingCluster mode on the local Ray head), and shows the loop live: a status table
and per-stage progress bars on a terminal, plain lines otherwise. After the first FineTune becomes
champion it applies a deliberately weaker one against the same registered model, which must stay
challenger. Then it serves the champion: a ModelDeployment following `invoices-extractor@champion` (a Ray
Serve application on the same Ray head), and once that is Ready a burst of held-out invoice prompts to
its `/v1/completions`. It ends with a summary (the FineTunes, then the endpoint, the version served,
requests, failures, p50/p95 latency) and stops everything it started — on success, failure, Ctrl-C and
SIGTERM — unless `--keep`, which leaves it all running until Ctrl-C.

Exit status: 0 when the loop did what the demo promises (first FineTune Succeeded as champion, the
weaker one challenger, the champion's version served and every burst request answered), 1 otherwise
(the message says which and where the logs are), 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import string
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from tuneloop.api import constants
from tuneloop.devenv import basemodel, controlplane, mlflow_server, processes, ray_head, tinymodel
from tuneloop.devenv import demo_loop as loop
from tuneloop.devenv import demo_progress as dp
from tuneloop.devenv import demo_view as views
from tuneloop.devenv.ports import free_port

REPO_ROOT = controlplane.REPO_ROOT
MANIFEST_DIR = REPO_ROOT / "examples" / "demo"
NAMESPACE = "tuneloop-demo"
CHAMPION, CHALLENGER = "invoices-lora", "invoices-lora-weak"
DEPLOYMENT = "invoices-extractor"  # the ModelDeployment (examples/demo/03-…), named after the model it serves
# The demo's dataset: invoices with contact details (PII to scrub) and repeated rows (to dedupe).
DATASET_ROWS, DATASET_SEED, PII_EVERY, DUPLICATES = 400, 2026, 8, 12
# The burst: invoices after the dataset's last row (never trained or evaluated on), one at a time.
BURST_REQUESTS, BURST_MAX_TOKENS, BURST_TIMEOUT_SECONDS = 20, 96, 120.0
# The closed loop: requests per phase (in-distribution, recovery), the most drifted requests to send
# before the monitor must have asked for a retrain, and how long to wait for a check.
LOOP_REQUESTS, DRIFT_MAX_REQUESTS, MONITOR_WAIT_SECONDS = 40, 300, 180.0
SERVING_TIMEOUT_SECONDS = 900.0  # first deploy on a busy 2-core machine: Serve start, base model, adapter
PLURALS = {"FineTune": "finetunes", constants.DEPLOYMENT_KIND: constants.DEPLOYMENT_PLURAL}


class DemoFailed(RuntimeError):
    """The loop did not do what the demo promises; the message says what and where to look."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="make demo ARGS=…", description=__doc__.split("\n\n")[0])
    p.add_argument("--cluster", choices=("local", "current"), default="local",
                   help="local: start an embedded control plane (default); current: use the current kube context")
    p.add_argument("--keep", action="store_true", help="leave everything running after the summary, until Ctrl-C")
    p.add_argument("--plain", action="store_true", help="plain progress lines even on a terminal")
    p.add_argument("--workdir", type=Path, help="where logs, data and service state go (default: a temp folder)")
    p.add_argument("--summary-json", type=Path, help="also write the summary's facts here")
    p.add_argument("--timeout-seconds", type=float, default=1800, help="give up on a FineTune after this long")
    p.add_argument("--no-loop", action="store_true",
                   help="stop after serving the champion (skip drift, retrain, rollout and recovery)")
    return p.parse_args(argv)


# --- services --------------------------------------------------------------------------------------


def start_local_services(stack: contextlib.ExitStack, workdir: Path, view: views.View,
                         with_control_plane: bool) -> dict[str, Any]:
    """Control plane, Ray head and MLflow server, started side by side; each stopped by `stack`."""
    ray_dir = Path(tempfile.mkdtemp(prefix="tl-demo-", dir="/tmp"))  # Ray's socket paths must stay short
    stack.callback(shutil.rmtree, ray_dir, True)
    # Logical CPUs: the Serve app (1.5) and a retrain (2 workers, then a 1-CPU evaluation task) at once.
    head = ray_head.RayHead(ray_dir, num_cpus=4)
    mlflow = mlflow_server.MlflowServer(workdir / "mlflow")
    services: list[Any] = [head, mlflow]
    cp = None
    if with_control_plane:
        cp = controlplane.ControlPlane(workdir=workdir / "control-plane")
        cp.workdir.mkdir(parents=True, exist_ok=True)
        services.append(cp)
    for s in services:
        stack.callback(s.stop)
    errors: list[BaseException] = []

    def start(service: Any) -> None:
        try:
            service.start(timeout_seconds=300)  # a busy 2-core machine can take minutes
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=start, args=(s,), daemon=True) for s in services]
    # Unwinding (Ctrl-C, SIGTERM) waits for starts in flight first, so the stops above see their processes.
    stack.callback(lambda: [t.join(timeout=180) for t in threads])
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    if cp is not None:
        cp.install_crds(REPO_ROOT / "crds")
        view.step(f"control plane ready: kube-apiserver v{controlplane.KUBE_VERSION} at {cp.url}")
    view.step(f"Ray head ready: {head.address}   MLflow: {mlflow.tracking_uri}")
    return {"head": head, "mlflow": mlflow, "control_plane": cp}


def current_kubeconfig(workdir: Path) -> Path:
    """The current context flattened into one file the operator and kubectl can share."""
    if not shutil.which("kubectl"):
        raise DemoFailed("--cluster=current needs kubectl on PATH to read the current context")
    out = subprocess.run(["kubectl", "config", "view", "--minify", "--flatten", "--raw"], capture_output=True,
                         text=True, timeout=30)
    if out.returncode != 0 or not out.stdout.strip():
        raise DemoFailed(f"no current kube context: {out.stderr.strip()}")
    path = workdir / "kubeconfig"
    path.write_text(out.stdout)
    return path


def install_crds(kube: Any) -> None:
    """Server-side apply of crds/ (for --cluster=current; the local control plane installs its own)."""
    from kubernetes import client

    ext = client.ApiextensionsV1Api(kube)
    for path in sorted((REPO_ROOT / "crds").glob("*.yaml")):
        body = yaml.safe_load(path.read_text())
        ext.api_client.call_api(
            f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{body['metadata']['name']}", "PATCH",
            query_params=[("fieldManager", "tuneloop-demo"), ("force", "true")],
            header_params={"Content-Type": "application/apply-patch+yaml", "Accept": "application/json"},
            body=body, auth_settings=["BearerToken"], _preload_content=False)


@contextlib.contextmanager
def operator_process(workdir: Path, kubeconfig: Path, tracking_uri: str, ray_address: str,
                     view: views.View) -> Iterator[dict[str, Any]]:
    """The operator as users run it: `kopf run -m tuneloop.operator.main --all-namespaces`, its own
    process group, logging to `workdir/operator.log`; stopped (group and all) on the way out. Serve's
    HTTP proxy gets a free loopback port (the operator starts it with the first application)."""
    metrics_port, serve_port = free_port(), free_port()
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "TUNELOOP_MLFLOW_TRACKING_URI": tracking_uri,
           "TUNELOOP_STORAGE_ROOT": str(workdir / "storage"), "TUNELOOP_POLL_SECONDS": "1",
           "TUNELOOP_MAX_POLL_SECONDS": "3", "TUNELOOP_METRICS_PORT": str(metrics_port),
           "TUNELOOP_SERVE_ADDRESS": ray_address, "TUNELOOP_SERVE_HTTP_HOST": "127.0.0.1",
           "TUNELOOP_SERVE_HTTP_PORT": str(serve_port), "TUNELOOP_SERVE_ROLLOUT_POLL_SECONDS": "2",
           "MLFLOW_DISABLE_TELEMETRY": "true", "RAY_USAGE_STATS_ENABLED": "0"}
    log_path = workdir / "operator.log"
    argv = [sys.executable, "-m", "kopf", "run", "-m", "tuneloop.operator.main", "--all-namespaces", "--standalone"]
    proc = processes.start_group(argv, log_path, env)
    view.step(f"operator started (pid {proc.pid}): {' '.join(argv[2:])}; log {log_path}")
    try:
        yield {"proc": proc, "log": log_path, "metrics": f"http://127.0.0.1:{metrics_port}/metrics"}
    finally:
        processes.stop_group(proc, grace_seconds=5)


# --- manifests ---------------------------------------------------------------------------------------


def render_manifests(values: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """examples/demo/*.yaml with ${…} filled in, by object name."""
    out = {}
    for path in sorted(MANIFEST_DIR.glob("*.yaml")):
        body = yaml.safe_load(string.Template(path.read_text()).substitute(values))
        out[body["metadata"]["name"]] = body
    return out


def write_dataset(path: Path) -> Path:
    records = tinymodel.invoice_examples(DATASET_ROWS, seed=DATASET_SEED, pii_every=PII_EVERY)
    return tinymodel.write_jsonl(path, records + records[:DUPLICATES])


class Cluster:
    """The few calls the demo makes to the apiserver."""

    def __init__(self, kubeconfig: Path) -> None:
        from kubernetes import client, config

        self.api = config.new_client_from_config(config_file=str(kubeconfig))
        self.core = client.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)

    def ensure_namespace(self, name: str) -> None:
        from kubernetes.client.rest import ApiException

        try:
            self.core.create_namespace({"metadata": {"name": name}})
        except ApiException as e:
            if e.status != 409:
                raise

    def get(self, name: str, plural: str = "finetunes") -> dict[str, Any] | None:
        from kubernetes.client.rest import ApiException

        try:
            return dict(self.custom.get_namespaced_custom_object(constants.GROUP, constants.VERSION, NAMESPACE,
                                                                 plural, name))
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def replace_fresh(self, body: dict[str, Any], timeout_seconds: float = 120) -> None:
        """Create the object; one left by an earlier demo on this cluster is deleted first."""
        name, plural = body["metadata"]["name"], PLURALS[body["kind"]]
        if self.get(name, plural) is not None:
            self.custom.delete_namespaced_custom_object(constants.GROUP, constants.VERSION, NAMESPACE, plural, name)
            deadline = time.monotonic() + timeout_seconds
            while self.get(name, plural) is not None:
                if time.monotonic() > deadline:
                    raise DemoFailed(f"{NAMESPACE}/{name} from an earlier demo was not deleted in time")
                time.sleep(1)
        self.custom.create_namespaced_custom_object(constants.GROUP, constants.VERSION, NAMESPACE, plural, body)


# --- watching ----------------------------------------------------------------------------------------


class RunReader:
    """Finds a FineTune's current MLflow run (by the uid/run/attempt tags the operator passes) and reads
    the job's stage tag, dataset tags and live per-epoch train_loss."""

    def __init__(self, tracking_uri: str) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri)

    def read(self, ft: Mapping[str, Any]) -> tuple[str | None, dict[str, str], list[float]]:
        run = (ft.get("status") or {}).get("run") or {}
        uid = ft["metadata"]["uid"]
        if not run.get("number"):
            return None, {}, []
        try:
            found = self.client.search_runs(
                experiment_ids=[e.experiment_id for e in self.client.search_experiments()],
                filter_string=(f"tags.`{constants.TAG_FINETUNE_UID}` = '{uid}' and "
                               f"tags.`{constants.TAG_RUN_NUMBER}` = '{run['number']}'"),
                order_by=["attributes.start_time DESC"], max_results=1)
            if not found:
                return None, {}, []
            mlrun = found[0]
            history = self.client.get_metric_history(mlrun.info.run_id, "train_loss")
        except Exception:
            return None, {}, []
        losses = dp.losses_from_history([(m.step, m.value) for m in history])
        return mlrun.data.tags.get(constants.TAG_STAGE), dict(mlrun.data.tags), losses


def watch(cluster: Cluster, runs: RunReader, names: Sequence[str], view: views.View,
          timelines: dict[str, dp.Timeline], timeout_seconds: float, until: str) -> dict[str, dict[str, Any]]:
    """Refresh the view about once a second until FineTune `until` is terminal; returns the objects."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        objects: dict[str, dict[str, Any]] = {}
        observations = []
        for name in names:
            ft = cluster.get(name)
            if ft is None:
                continue
            objects[name] = ft
            stage, tags, losses = runs.read(ft)
            obs = dp.Observation(name=name, status=ft.get("status") or {},
                                 epochs_total=int(ft["spec"].get("training", {}).get("epochs", 0)),
                                 run_stage=stage, run_tags=tags, losses=losses)
            timelines.setdefault(name, dp.Timeline()).see(dp.stage_of(obs), time.monotonic())
            observations.append(obs)
        view.update(observations)
        phase = (objects.get(until, {}).get("status") or {}).get("phase")
        if phase in dp.TERMINAL_PHASES:
            return objects
        if time.monotonic() > deadline:
            raise DemoFailed(f"{NAMESPACE}/{until} did not finish in {timeout_seconds:.0f}s (phase {phase})")
        time.sleep(1)


def wait_serving(cluster: Cluster, view: views.View, version: str, timeout_seconds: float) -> dict[str, Any]:
    """Wait until the ModelDeployment serves `version` (Ready, nothing rolling out); a line per change."""
    deadline, last = time.monotonic() + timeout_seconds, ""
    while True:
        md = cluster.get(DEPLOYMENT, constants.DEPLOYMENT_PLURAL) or {}
        status = md.get("status") or {}
        line = dp.serving_line(DEPLOYMENT, status)
        if line != last:
            view.step(line)
            last = line
        if dp.serving_ready(status, version):
            return status
        ready = dp.ready_condition(status)
        if status.get("phase") == "Failed" and ready.get("reason") == "InvalidSpec":
            raise DemoFailed(f"{NAMESPACE}/{DEPLOYMENT} was refused: {ready.get('message')}")
        if time.monotonic() > deadline:
            raise DemoFailed(f"{NAMESPACE}/{DEPLOYMENT} did not serve version {version} in {timeout_seconds:.0f}s: "
                             f"{line}; {ready.get('message', '')}")
        time.sleep(1)


def burst_prompts() -> list[str]:
    """Held-out invoice prompts: rows after the dataset's last, so never trained or evaluated on."""
    return [r["prompt"] for r in tinymodel.invoice_examples(BURST_REQUESTS, seed=DATASET_SEED, pii_every=0,
                                                              start=DATASET_ROWS)]


def complete(endpoint: str, prompt: str) -> dp.Answer:
    """One completion, timed; any failure is an answer with its status (0: none came)."""
    started = time.monotonic()
    status, answer, error = loop.post(f"{endpoint.rstrip('/')}/v1/completions",
                                      {"prompt": prompt, "max_tokens": BURST_MAX_TOKENS, "temperature": 0},
                                      BURST_TIMEOUT_SECONDS)
    latency_ms = (time.monotonic() - started) * 1000
    if status != 200:
        return dp.Answer(status, latency_ms, error=error)
    model = str(answer.get("model") or "")
    return dp.Answer(status, latency_ms, version=model.rsplit("/", 1)[-1] or None)


def serve_champion(cluster: Cluster, manifest: dict[str, Any], version: str, view: views.View) -> dict[str, Any]:
    """Apply the ModelDeployment, wait for it to serve `version`, send the burst; the serving summary."""
    started = time.monotonic()
    cluster.replace_fresh(manifest)
    view.step(f"applied {NAMESPACE}/{DEPLOYMENT}: serving {manifest['spec']['model']['name']}@"
              f"{manifest['spec']['model']['alias']} on the Ray head")
    status = wait_serving(cluster, view, version, SERVING_TIMEOUT_SECONDS)
    ready_seconds = time.monotonic() - started
    view.step(f"{DEPLOYMENT} serving version {version} at {status['endpoint']} after {ready_seconds:.0f}s; "
              f"sending {BURST_REQUESTS} held-out invoices")
    answers = []
    for prompt in burst_prompts():
        answers.append(complete(status["endpoint"], prompt))
        if len(answers) % 5 == 0:
            view.step(f"burst: {len(answers)}/{BURST_REQUESTS} sent, "
                      f"{sum(a.status != 200 for a in answers)} failed")
    final = (cluster.get(DEPLOYMENT, constants.DEPLOYMENT_PLURAL) or {}).get("status") or status
    return {**dp.summarize_serving(DEPLOYMENT, final, answers), "readySeconds": round(ready_seconds, 1)}


def wait_monitor(cluster: Cluster, view: views.View, after: float, timeout_seconds: float,
                 until: Any = None) -> dict[str, Any]:
    """Wait for a monitor check that ran after `after` (epoch seconds) — or, with `until`, for the
    deployment's status to satisfy it; a line per new check."""
    deadline, last = time.monotonic() + timeout_seconds, ""
    while True:
        status = (cluster.get(DEPLOYMENT, constants.DEPLOYMENT_PLURAL) or {}).get("status") or {}
        line = loop.monitor_line(status)
        if line != last:
            view.step(line)
            last = line
        checked = (status.get("lastMonitor") or {}).get("time")
        if until(status) if until is not None else (checked and _epoch(checked) > after):
            return status
        if time.monotonic() > deadline:
            raise DemoFailed(f"{NAMESPACE}/{DEPLOYMENT}: no monitor check in {timeout_seconds:.0f}s ({line})")
        time.sleep(1)


def _epoch(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def loop_invoices() -> dict[str, list[dict[str, str]]]:
    """The closed loop's invoices by phase: in-distribution ones after the dataset's and the burst's, the
    drifted layout (sent until the monitor asks for a retrain), and new drifted ones for the recovery."""
    return {
        "inDistribution": tinymodel.invoice_examples(LOOP_REQUESTS, seed=DATASET_SEED,
                                                     start=DATASET_ROWS + BURST_REQUESTS),
        "drifted": tinymodel.drifted_invoice_examples(DRIFT_MAX_REQUESTS, seed=DATASET_SEED),
        "recovery": tinymodel.drifted_invoice_examples(LOOP_REQUESTS, seed=DATASET_SEED + 1, start=DRIFT_MAX_REQUESTS),
    }


def close_the_loop(cluster: Cluster, runs: RunReader, view: views.View, endpoint: str, version: str,
                   timelines: dict[str, dp.Timeline], timeout_seconds: float) -> dict[str, Any]:
    """In-distribution traffic, then the drifted layout until the monitor asks for a retrain, the retrain
    through the gate to champion, its rollout, and drifted traffic again (see devenv.demo_loop)."""
    invoices = loop_invoices()
    view.step(f"closed loop: {LOOP_REQUESTS} in-distribution invoices, 3 of 4 labelled by a person")
    in_dist = loop.send(endpoint, invoices["inDistribution"], True, BURST_MAX_TOKENS, BURST_TIMEOUT_SECONDS)
    view.step(f"in-distribution: field_f1 {loop.quality(in_dist, version)} (Q0) over {len(in_dist)} answers")
    before = wait_monitor(cluster, view, time.time(), MONITOR_WAIT_SECONDS)
    if before.get("retrainInFlight"):
        raise DemoFailed(f"{DEPLOYMENT} asked for a retrain on in-distribution traffic: {loop.monitor_line(before)}")
    view.step(f"drift: invoices from a new system in another layout ({' / '.join(tinymodel.DRIFT_TEMPLATES)[:90]}…), "
              "sent until the monitor asks for a retrain")
    asked: dict[str, Any] = {}

    def retrain_asked(answers: list[loop.LoopAnswer]) -> bool:
        if len(answers) % 10:
            return False
        status = (cluster.get(DEPLOYMENT, constants.DEPLOYMENT_PLURAL) or {}).get("status") or {}
        view.step(f"drifted: {len(answers)} sent, field_f1 so far {loop.quality(answers, version)}; "
                  f"{loop.monitor_line(status)}")
        if status.get("retrainInFlight"):
            asked.update(status)
            return True
        return False

    drifted = loop.send(endpoint, invoices["drifted"], True, BURST_MAX_TOKENS, BURST_TIMEOUT_SECONDS,
                        retrain_asked)
    if not asked:
        raise DemoFailed(f"{DEPLOYMENT} never asked for a retrain over {len(drifted)} drifted requests: "
                         f"{loop.monitor_line(cluster.get(DEPLOYMENT, constants.DEPLOYMENT_PLURAL) or {})}")
    rid = asked["retrainInFlight"]
    record = next((r for r in asked.get("retrainHistory") or [] if r.get("id") == rid), {})
    added = record.get("addedData") or {}
    examples = read_feedback(str(added.get("uri") or ""))
    mix = None if examples is None else loop.feedback_mix(
        examples, {"inDistribution": invoices["inDistribution"], "drifted": invoices["drifted"][:len(drifted)]})
    view.step(f"retrain {rid} requested on FineTune {CHAMPION} with {added.get('examples', 0)} feedback examples "
              f"({mix or 'file not readable here'}): {record.get('reason', '')}")
    retrain_started = time.monotonic()
    deadline = time.monotonic() + timeout_seconds
    while ((cluster.get(CHAMPION) or {}).get("status") or {}).get("handledRetrainRequest") != rid:
        if time.monotonic() > deadline:
            raise DemoFailed(f"{CHAMPION} never took retrain request {rid}")
        time.sleep(1)
    timelines.pop(CHAMPION, None)  # the first run's stages are in its summary already; time the retrain's
    objects = watch(cluster, runs, [CHAMPION], view, timelines, timeout_seconds, CHAMPION)
    retrained = dp.summarize(objects[CHAMPION].get("status") or {}, timelines.get(CHAMPION))
    new_version = str(retrained["model"]["version"] or "")
    if retrained["phase"] != "Succeeded" or retrained["model"]["alias"] != "champion":
        raise DemoFailed(f"the retrain of {CHAMPION} ended {retrained['phase']} as {retrained['model']['alias']}: "
                         f"{retrained['gate']['why']}; it added {mix} feedback examples from {added.get('uri')} "
                         "(replay them: bench/retrain_spread.py --feedback PATH)")
    view.step(f"retrain registered version {new_version} and took champion: {retrained['gate']['why']}")
    status = wait_serving(cluster, view, new_version, SERVING_TIMEOUT_SECONDS)
    retrain_seconds = time.monotonic() - retrain_started
    recovery = loop.send(endpoint, invoices["recovery"], False, BURST_MAX_TOKENS, BURST_TIMEOUT_SECONDS)
    view.step(f"recovery: field_f1 {loop.quality(recovery, new_version)} (Q2) on new drifted invoices, "
              f"served by version {new_version}")
    final = (cluster.get(DEPLOYMENT, constants.DEPLOYMENT_PLURAL) or {}).get("status") or status
    last_before = before.get("lastMonitor") or {}
    last_asked = asked.get("lastMonitor") or {}
    return loop.summarize_loop(
        {"inDistribution": in_dist, "drifted": drifted, "recovery": recovery},
        {"before": version, "after": new_version},
        {"driftShareBefore": last_before.get("driftShare"), "qualityBefore": last_before.get("quality"),
         "driftShareAtTrigger": last_asked.get("driftShare"), "qualityAtTrigger": last_asked.get("quality"),
         "driftedColumns": last_asked.get("driftedColumns", []), "reportUri": last_asked.get("reportUri"),
         "retrainsRequested": len(final.get("retrainHistory") or [])},
        {"request": rid, "reason": record.get("reason"), "addedExamples": added.get("examples"),
         "feedbackUri": added.get("uri"), "feedbackMix": mix,
         "datasetRows": retrained["dataset"]["rows"], "datasetHash": retrained["dataset"]["hash"],
         "version": new_version, "gate": retrained["gate"]["why"], "seconds": round(retrain_seconds, 1),
         "gpuHours": retrained["cost"]["gpuHours"], "stageSeconds": retrained["stageSeconds"]})


def read_feedback(uri: str) -> list[dict[str, Any]] | None:
    """The examples of a feedback file the operator wrote on this machine (file://); None when not readable
    (another filesystem, as with --cluster=current and a remote traffic folder)."""
    if not uri.startswith("file://"):
        return None
    try:
        return [json.loads(line) for line in Path(uri[len("file://"):]).read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return None


def check_serving(serving: Mapping[str, Any], champion_version: str) -> None:
    """The serving half of the demo's promise: the champion's version answered every request."""
    if serving["servedVersion"] != champion_version:
        raise DemoFailed(f"{DEPLOYMENT} should serve champion version {champion_version}, "
                         f"serves {serving['servedVersion']}")
    if serving["failures"] or serving["answered"] != serving["requests"] or not serving["requests"]:
        raise DemoFailed(f"{DEPLOYMENT}: {serving['failures']} of {serving['requests']} requests failed "
                         f"({serving['firstFailure']})")
    if serving["answeredBy"] != [champion_version]:
        raise DemoFailed(f"{DEPLOYMENT}: requests were answered by versions {serving['answeredBy']}, "
                         f"not only {champion_version}")


def kubectl_wide(kubeconfig: Path, resource: str = "ft") -> str:
    if not shutil.which("kubectl"):
        return "(kubectl not on PATH)"
    out = subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), "get", resource, "-o", "wide", "-n", NAMESPACE],
                         capture_output=True, text=True, timeout=30)
    return (out.stdout or out.stderr).rstrip()


def check(summaries: Mapping[str, Mapping[str, Any]]) -> None:
    """What the demo promises; a broken promise fails the demo (and the test that runs it)."""
    first, second = summaries[CHAMPION], summaries[CHALLENGER]
    if first["phase"] != "Succeeded" or first["model"]["alias"] != "champion":
        raise DemoFailed(f"{CHAMPION} should be Succeeded as champion, got {first['phase']} / "
                         f"{first['model']['alias']}: {first['gate']['why']}")
    if second["phase"] != "Succeeded" or second["model"]["alias"] != "challenger":
        raise DemoFailed(f"{CHALLENGER} should be Succeeded as challenger, got {second['phase']} / "
                         f"{second['model']['alias']}")


# --- main --------------------------------------------------------------------------------------------


def run(args: argparse.Namespace, workdir: Path, view: views.View) -> dict[str, Any]:
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        view.step(f"workdir {workdir}")
        model_dir = basemodel.ensure_base_model(view.base_model)
        view.step(f"base model: {model_dir} (pre-trained tiny Llama, cached)")
        data = write_dataset(workdir / "data" / "invoices.jsonl")
        services = start_local_services(stack, workdir, view, with_control_plane=args.cluster == "local")
        if services["control_plane"] is not None:
            kubeconfig = services["control_plane"].kubeconfig
        else:
            kubeconfig = current_kubeconfig(workdir)
            view.step(f"using the current kube context ({kubeconfig}); it needs the CRDs (installed now), and "
                      "for RayJob mode KubeRay, or — as here — a Ray address the operator can reach")
        cluster = Cluster(kubeconfig)
        if args.cluster == "current":
            install_crds(cluster.api)
        op = stack.enter_context(operator_process(workdir, kubeconfig, services["mlflow"].tracking_uri,
                                                  services["head"].address, view))
        cluster.ensure_namespace(NAMESPACE)
        manifests = render_manifests({"BASE_MODEL_URI": f"file://{model_dir}", "DATASET_URI": f"file://{data}",
                                      "RAY_ADDRESS": services["head"].address})
        runs = RunReader(services["mlflow"].tracking_uri)
        timelines: dict[str, dp.Timeline] = {}

        cluster.replace_fresh(manifests[CHAMPION])
        view.step(f"applied {NAMESPACE}/{CHAMPION} (LoRA on the Ray head, {DATASET_ROWS + DUPLICATES} rows)")
        objects = watch(cluster, runs, [CHAMPION], view, timelines, args.timeout_seconds, CHAMPION)
        if objects[CHAMPION]["status"].get("phase") == "Succeeded":
            cluster.replace_fresh(manifests[CHALLENGER])
            view.step(f"applied {NAMESPACE}/{CHALLENGER}: a deliberately weaker run against the same model")
            objects = watch(cluster, runs, [CHAMPION, CHALLENGER], view, timelines, args.timeout_seconds, CHALLENGER)
        summaries = {name: dp.summarize(ft.get("status") or {}, timelines.get(name)) for name, ft in objects.items()}
        serving: dict[str, Any] | None = None
        champion = summaries[CHAMPION]["model"]
        closed: dict[str, Any] | None = None
        if champion["alias"] == "champion" and champion["version"]:
            serving = serve_champion(cluster, manifests[DEPLOYMENT], str(champion["version"]), view)
            if not args.no_loop and not serving["failures"] and serving["endpoint"]:
                closed = close_the_loop(cluster, runs, view, serving["endpoint"], str(champion["version"]),
                                        timelines, args.timeout_seconds)
        view.close()
        model_name = manifests[CHAMPION]["spec"]["registry"]["modelName"]
        extra = {"namespace": NAMESPACE, "kubectl": kubectl_wide(kubeconfig),
                 "kubectl_mdep": kubectl_wide(kubeconfig, constants.DEPLOYMENT_SHORT) if serving else "",
                 "mlflow_ui": f"{services['mlflow'].tracking_uri}/#/models/{model_name}",
                 "total_seconds": f"{time.monotonic() - started:.0f}s", "operator_log": str(op["log"]),
                 "metrics": op["metrics"]}
        if args.keep:
            extra["keep"] = (f"everything is still running (KUBECONFIG={kubeconfig}); press Ctrl-C or "
                             f"`kill {os.getpid()}` to stop it all")
        views.print_summary(summaries, extra, plain=isinstance(view, views.PlainView), serving=serving, loop=closed)
        result = {"summaries": summaries, "serving": serving, "loop": closed,
                  **{k: v for k, v in extra.items() if k != "keep"}}
        if args.summary_json:
            args.summary_json.parent.mkdir(parents=True, exist_ok=True)
            args.summary_json.write_text(dp.to_json(result))
        if len(summaries) < 2:
            raise DemoFailed(f"{CHAMPION} ended {summaries[CHAMPION]['phase']}: "
                             f"{(objects[CHAMPION]['status'].get('conditions') or [{}])[0].get('message', '')}; "
                             f"see {op['log']}")
        check(summaries)
        if serving is None:
            raise DemoFailed(f"{CHAMPION} is champion but {DEPLOYMENT} was not applied")
        check_serving(serving, str(champion["version"]))
        if not args.no_loop:
            if closed is None:
                raise DemoFailed("the closed loop did not run")
            try:
                loop.check_loop(closed)
            except ValueError as e:
                raise DemoFailed(f"closed loop: {e}") from e
        if args.keep:
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()
        return result


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    view = views.make_view(plain=True if args.plain else None)
    own_workdir = args.workdir is None
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tuneloop-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    succeeded = False
    try:
        # SIGTERM and SIGHUP unwind like Ctrl-C, so every `finally` stops what was started.
        with processes.exit_on_signals():
            run(args, workdir, view)
        succeeded = True
        return 0
    except KeyboardInterrupt:  # Ctrl-C, or processes.StopRequested for SIGTERM/SIGHUP
        view.close()
        print("\ninterrupted: everything the demo started has been stopped", file=sys.stderr)
        return 130
    except Exception as e:
        view.close()
        if not isinstance(e, DemoFailed | controlplane.ControlPlaneError):
            traceback.print_exc()
        print(f"\ndemo failed: {e}\neverything it started has been stopped; logs are in {workdir}", file=sys.stderr)
        return 1
    finally:
        # A failed run keeps its logs; a clean one leaves nothing behind unless the folder was the user's.
        if succeeded and own_workdir and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
