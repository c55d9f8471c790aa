"""What bench_operator.py adds around the FineTune burst: the rest of the product's load on the operator,
driven the real way, as the API tests drive it (tests/api/test_modeldeployment_rayservice.py,
tests/api/test_monitor_retrain.py).

* ModelDeployments in RayService mode (no Ray, no KubeRay): a real MLflow server holds the model and its
  champion alias, the real operator resolves it, creates the RayService and polls the rollout; this
  module acts as KubeRay (`KubeRayStandIn`: each new RayService's status is written RUNNING for its
  generation, as `Objects.as_kuberay` does in the API test), so each deployment goes Deploying → Serving.
* Monitor checks: the operator runs `tests.api.scripted_check:run_check` (our own thin wrapper, the answer
  is a file), on the real schedule, through the real monitor daemon, worker pool and status writes.
* Terminal FineTunes for the idle scenario: created while no operator runs, their status written through
  the status subresource as a previous operator left it (a finished run of this very spec, so nothing
  starts again; Succeeded ones hold a registered version without an alias, so the slow alias re-check
  reads MLflow and writes nothing).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RAYSERVICE_CRD = REPO / "tests" / "fixtures" / "rayservice-crd.yaml"
GROUP, VERSION = "tuneloop.io", "v1alpha1"
MODEL = "bench-serve"
SCRIPTED_CHECK = "tests.api.scripted_check:run_check"
SCRIPT_DIR_ENV = "TUNELOOP_TEST_MONITOR_SCRIPT_DIR"  # tests/api/scripted_check.py's SCRIPT_DIR
HEALTHY = {"samples": 200, "drift_share": 0.0, "drifted_columns": [], "quality": 0.9}


def register_model(tracking_uri: str) -> str:
    """A registered model with one version holding the champion alias; returns that version."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    client.create_registered_model(MODEL)
    version = str(client.create_model_version(MODEL, "s3://models/bench/v1").version)
    client.set_registered_model_alias(MODEL, "champion", version)
    return version


def deployment(name: str, tracking_uri: str, monitor_seconds: int | None) -> dict[str, Any]:
    """A ModelDeployment served by a RayService; monitored every `monitor_seconds` (scripted check) or not."""
    monitoring: dict[str, Any] = {"enabled": False}
    if monitor_seconds is not None:
        monitoring = {"intervalSeconds": monitor_seconds, "minSamples": 50,
                      "reference": {"source": "Uri", "uri": "file:///nonexistent/reference.jsonl"}}
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelDeployment", "metadata": {"name": name},
            "spec": {"model": {"name": MODEL, "alias": "champion", "trackingUri": tracking_uri},
                     "serving": {"mode": "RayService", "replicas": 2, "resources": {"gpus": 1, "memory": "16Gi"}},
                     "monitoring": monitoring}}


def script_answers(folder: Path, namespace: str, names: list[str]) -> None:
    """The scripted check's answer for each monitored deployment (a healthy window)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / f"{namespace}.{name}.json").write_text(json.dumps(HEALTHY))


def checks_run(folder: Path) -> int:
    """Scripted checks the operator ran so far (one line per call in `<deployment>.calls`)."""
    return sum(len(p.read_text().splitlines()) for p in folder.glob("*.calls"))


class KubeRayStandIn:
    """Writes each new RayService's status as KubeRay would once its app runs (Ready, app RUNNING, for the
    object's generation), on a watch, from a thread. A RayService is named after its ModelDeployment."""

    def __init__(self, api_client: Any, namespace: str) -> None:
        from kubernetes import client as k8s

        self.custom, self.ns = k8s.CustomObjectsApi(api_client), namespace
        self.marked: set[str] = set()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait()

    def _run(self) -> None:
        from kubernetes import watch
        from urllib3.exceptions import ProtocolError

        w = watch.Watch()
        self.ready.set()
        with contextlib.suppress(ProtocolError):  # the control plane stopped at the end of the bench
            self._mark(w.stream(self.custom.list_namespaced_custom_object, "ray.io", "v1", self.ns, "rayservices",
                                timeout_seconds=3600))

    def _mark(self, events: Any) -> None:
        for event in events:
            rs = event["object"]
            name = rs["metadata"]["name"]
            if event["type"] != "ADDED" or name in self.marked:
                continue
            self.marked.add(name)
            self.custom.patch_namespaced_custom_object_status("ray.io", "v1", self.ns, "rayservices", name, {
                "status": {"observedGeneration": rs["metadata"]["generation"],
                           "conditions": [{"type": "Ready", "status": "True", "reason": "bench", "message": ""}],
                           "activeServiceStatus": {"applicationStatuses": {
                               f"{self.ns}.{name}": {"status": "RUNNING", "message": ""}}}}})


def phases(api_client: Any, namespace: str, plural: str) -> dict[str, int]:
    from kubernetes import client as k8s

    items = k8s.CustomObjectsApi(api_client).list_namespaced_custom_object(GROUP, VERSION, namespace, plural)["items"]
    counts: dict[str, int] = {}
    for item in items:
        phase = (item.get("status") or {}).get("phase") or "-"
        counts[phase] = counts.get(phase, 0) + 1
    return counts


def serving_and_monitored(api_client: Any, namespace: str) -> tuple[int, int]:
    """ModelDeployments Serving, and those with a monitor check in status."""
    from kubernetes import client as k8s

    items = k8s.CustomObjectsApi(api_client).list_namespaced_custom_object(
        GROUP, VERSION, namespace, "modeldeployments")["items"]
    sts = [item.get("status") or {} for item in items]
    return sum(st.get("phase") == "Serving" for st in sts), sum(bool(st.get("lastMonitor")) for st in sts)


def terminal_status(spec: dict[str, Any], succeeded: bool, version: str) -> dict[str, Any]:
    """The status a previous operator leaves on a FineTune whose run of this spec ended."""
    from datetime import UTC, datetime, timedelta

    from tuneloop.api import conditions as c
    from tuneloop.api.finetune import FineTuneSpec, FineTuneStatus
    from tuneloop.operator.logic import naming

    end = datetime.now(UTC) - timedelta(hours=1)
    start = end - timedelta(minutes=20)
    run = {"number": 1, "generation": 1, "trigger": "spec", "mode": "RayJob", "attempt": 1,
           "specHash": naming.spec_hash(FineTuneSpec.model_validate(spec)), "rayJobName": "done",
           "jobStatus": "SUCCEEDED" if succeeded else "FAILED",
           "jobDeploymentStatus": "Complete" if succeeded else "Failed",
           "startTime": start.isoformat(), "endTime": end.isoformat(), "attemptStartTime": start.isoformat()}
    attempt = {"run": 1, "attempt": 1, "id": "done", "outcome": "Succeeded" if succeeded else "Failed",
               "startTime": start.isoformat(), "endTime": end.isoformat()}

    def cond(type_: str, status: str, reason: str) -> dict[str, Any]:
        return {"type": type_, "status": status, "reason": reason, "message": reason,
                "lastTransitionTime": end.isoformat(), "observedGeneration": 1}

    st: dict[str, Any] = {"observedGeneration": 1, "run": run, "attempts": [attempt]}
    if succeeded:
        st |= {"phase": "Succeeded", "model": {"name": MODEL, "version": version,
                                               "uri": f"models:/{MODEL}/{version}"},
               "conditions": [cond(c.READY, "True", c.REASON_SUPERSEDED), cond(c.SUCCEEDED, "True", c.REASON_SUCCEEDED),
                              cond(c.PROMOTED, "False", c.REASON_SUPERSEDED)]}
    else:
        st |= {"phase": "Failed", "conditions": [cond(c.READY, "False", c.REASON_JOB_FAILED),
                                                 cond(c.FAILED, "True", c.REASON_JOB_FAILED)]}
    return FineTuneStatus.model_validate(st).to_k8s()  # refused here if the model changed


def wait_until(pred: Any, timeout: float, what: str) -> float:
    started = time.monotonic()
    while not pred():
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.5)
    return time.monotonic() - started
