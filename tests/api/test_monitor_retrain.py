"""The closed loop's operator half on the real apiserver, with a real MLflow server and the operator as a
killable process (`kopf run`): monitor checks on schedule, conditions, and guarded retrain requests that
land on the FineTune as an annotation (its spec untouched), followed to the end of the run they start.

- real check: a logged traffic window in another input template and with non-JSON answers, against a
  reference file, gets DriftDetected and QualityDegraded from Evidently, and after two breaches in a row
  one retrain request on its FineTune;
- real check, MLflow unreachable: MonitorStale (RegistryUnavailable), the operator keeps running;
- scripted checks (tests/api/scripted_check.py: the answer is a file the test writes): the request starts
  run 2 of the FineTune; the operator killed and restarted during that run requests no second run; the
  run's end is recorded; then flapping traffic is refused by the cooldown — one retrain per cooldown;
- Manual approval: the request waits (PendingApproval) until the deployment carries the approve annotation;
- minFeedbackExamples: breaching windows with too few labelled examples hold the retrain (AwaitingFeedback),
  and the first window that holds enough asks, with that window's examples.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.api import scripted_check
from tests.api.harness import (
    OperatorProcess,
    create_namespace,
    finish_run,
    launched,
    operator_process_env,
    phase,
    wait_status,
)
from tests.api.kube import Cluster, finetune, wait_for
from tests.unit.monitoring import traffic
from tuneloop.api import constants
from tuneloop.devenv.ports import free_port
from tuneloop.operator.logic import naming

pytestmark = [pytest.mark.apiserver, pytest.mark.slow]

INTERVAL = 10  # the least spec.monitoring.intervalSeconds allows
DRIFTED = {"samples": 200, "drift_share": 0.8, "drifted_columns": ["prompt_length"], "quality": 0.2}
HEALTHY = {"samples": 200, "drift_share": 0.0, "drifted_columns": [], "quality": 0.9}


class Deployments:
    def __init__(self, cluster: Cluster) -> None:
        self.custom, self.ns, self.core = cluster.custom, cluster.ns, cluster.core

    def create(self, body: dict[str, Any]) -> None:
        self.custom.create_namespaced_custom_object(constants.GROUP, constants.VERSION, self.ns,
                                                    constants.DEPLOYMENT_PLURAL, body)

    def get(self, name: str) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(constants.GROUP, constants.VERSION, self.ns,
                                                        constants.DEPLOYMENT_PLURAL, name)

    def annotate(self, name: str, annotations: dict[str, str]) -> None:
        self.custom.patch_namespaced_custom_object(constants.GROUP, constants.VERSION, self.ns,
                                                   constants.DEPLOYMENT_PLURAL, name,
                                                   {"metadata": {"annotations": annotations}})

    def status(self, name: str) -> dict[str, Any]:
        return self.get(name).get("status") or {}

    def patch_spec(self, name: str, spec: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(constants.GROUP, constants.VERSION, self.ns,
                                                   constants.DEPLOYMENT_PLURAL, name, {"spec": spec})

    def wait(self, name: str, pred: Any, what: str, timeout: float = 180) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            st = self.status(name)
            if pred(st):
                return st
            assert time.monotonic() < deadline, (f"timed out waiting for {what} of {self.ns}/{name}; last status:\n"
                                                 f"{json.dumps(st, indent=1)[:4000]}")
            time.sleep(0.2)

    def checks(self, name: str) -> int:
        return len(self.status(name).get("monitorHistory", []))

    def wait_checks(self, name: str, more: int, timeout: float = 120) -> dict[str, Any]:
        """Wait until `more` further checks are in monitorHistory (it keeps the last 20)."""
        start = self.checks(name)
        return self.wait(name, lambda st: len(st.get("monitorHistory", [])) >= min(start + more, 20),
                         f"{more} more monitor checks", timeout)

    def event_reasons(self, name: str) -> list[str]:
        return [e.reason for e in self.core.list_namespaced_event(
            self.ns, field_selector=f"involvedObject.name={name}").items]


def cond(st: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in st.get("conditions", []) if c["type"] == type_), {})


def deployment(name: str, tracking_uri: str, fine_tune: str, reference: str, traffic_uri: str,
               **retraining: Any) -> dict[str, Any]:
    return {"apiVersion": constants.API_VERSION, "kind": constants.DEPLOYMENT_KIND, "metadata": {"name": name},
            "spec": {"model": {"name": f"served-{name}", "alias": "champion", "trackingUri": tracking_uri},
                     "fineTuneRef": {"name": fine_tune},
                     "serving": {"trafficLogUri": traffic_uri},
                     "monitoring": {"intervalSeconds": INTERVAL, "minSamples": 50,
                                    "reference": {"source": "Uri", "uri": f"file://{reference}"},
                                    "quality": {"metric": "json_valid", "minimum": 0.5, "consecutiveBreaches": 2}},
                     "retraining": {"enabled": True, "cooldownSeconds": 3600, "maxPerDay": 5, **retraining}}}


def retrain_annotation(cluster: Cluster, name: str) -> str | None:
    return (cluster.get(name)["metadata"].get("annotations") or {}).get(constants.ANNOTATION_RETRAIN_REQUEST)


def log_traffic(root: Path, deployment_name: str, n: int) -> None:
    """Requests in the drifted input template whose answers are not JSON (json_valid 0)."""
    from tuneloop.serving import traffic_log

    log = traffic_log.TrafficLogger(f"file://{root}", deployment_name, batch_size=64, flush_interval_seconds=3600,
                                    start=False)
    now = datetime.now(UTC)
    for i, row in enumerate(traffic.rows(n, seed=3, template=traffic.DRIFTED_TEMPLATE)):
        log.log(traffic_log.TrafficRecord(kind="request", request_id=f"r{i}", time=now, model_id="m/1",
                                          model_version="1", prompt=row["prompt"], completion="cannot parse",
                                          status_code=200))
    log.close()


def script(folder: Path, ns: str, name: str, answer: dict[str, Any]) -> None:
    path = scripted_check.answer_path(folder, f"{ns}.{name}")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(answer))
    tmp.replace(path)  # the operator never reads half a file


def scarce_window(folder: Path, examples: int) -> dict[str, Any]:
    """A breaching check whose window's labelled feedback came to `examples` new training examples."""
    return {**DRIFTED, "feedback": {"uri": f"file://{folder}/feedback-{examples}.jsonl", "hash": f"{examples:064x}",
                                    "examples": examples, "labelled": examples}}


def rayjobs_of_run(cluster: Cluster, ft: dict[str, Any], run: int) -> list[str]:
    wanted = {naming.rayjob_name(ft["metadata"]["name"], ft["metadata"]["uid"], run, a) for a in (1, 2, 3)}
    return sorted(r["metadata"]["name"] for r in cluster.rayjobs() if r["metadata"]["name"] in wanted)


def test_monitor_checks_request_guarded_retrains_that_survive_a_restart(
        api_client: Any, operator_env: dict[str, str], rayjob_crd: None, mlflow_server: Any, tmp_path: Path) -> None:
    ns = create_namespace(api_client, f"tlm{uuid.uuid4().hex[:6]}")
    cluster, mds = Cluster(api_client, ns), Deployments(Cluster(api_client, ns))
    uri = mlflow_server.tracking_uri
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    reference = tmp_path / "reference.jsonl"
    reference.write_text("".join(json.dumps(r) + "\n" for r in traffic.rows(200, seed=1)))
    log_root = tmp_path / "traffic"
    log_traffic(log_root, f"{ns}.real", 120)
    log_traffic(log_root, f"{ns}.down", 120)
    env = {**operator_process_env(operator_env), "TUNELOOP_MONITOR_CHECK": "tests.api.scripted_check:run_check",
           scripted_check.SCRIPT_DIR: str(scripts), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
           "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    op = OperatorProcess(ns, env, tmp_path / "operator.log", standby=True)
    closed = f"http://127.0.0.1:{free_port()}"  # no MLflow listens there
    try:
        script(scripts, ns, "loop", HEALTHY)
        script(scripts, ns, "manual", DRIFTED)
        script(scripts, ns, "scarce", scarce_window(tmp_path, 3))
        ft = cluster.create(finetune("ft", uri, model=f"m-{ns}"))
        for name in ("ft-real", "ft-manual", "ft-down", "ft-scarce"):
            cluster.create(finetune(name, uri, model=f"m-{ns}-{name}", suspend=True))
        mds.create(deployment("loop", uri, "ft", reference, f"file://{log_root}"))
        mds.create(deployment("real", uri, "ft-real", reference, f"file://{log_root}"))
        mds.create(deployment("down", closed, "ft-down", reference, f"file://{log_root}"))
        mds.create(deployment("manual", uri, "ft-manual", reference, f"file://{log_root}", approval="Manual"))
        mds.create(deployment("scarce", uri, "ft-scarce", reference, f"file://{log_root}", minFeedbackExamples=10))
        op.start()

        # run 1 of the FineTune the loop retrains; meanwhile its traffic is fine
        wait_status(cluster, "ft", launched(1), "run 1 launched", timeout=180)
        finish_run(cluster, uri, ft, 1)
        wait_status(cluster, "ft", phase("Succeeded"), "run 1 Succeeded", timeout=180)
        st = mds.wait("loop", lambda s: cond(s, "DriftDetected").get("status") == "False", "a healthy check")
        assert cond(st, "QualityDegraded")["status"] == "False" and cond(st, "MonitorStale")["status"] == "False"
        assert retrain_annotation(cluster, "ft") is None and not st.get("retrainHistory")

        # drift: after two breaches in a row, one request, as an annotation on the FineTune
        script(scripts, ns, "loop", DRIFTED)
        st = mds.wait("loop", lambda s: s.get("retrainInFlight"), "a retrain request")
        rid = st["retrainInFlight"]
        assert st["consecutiveBreaches"] >= 2 and cond(st, "DriftDetected")["status"] == "True"
        [record] = st["retrainHistory"]
        assert record["id"] == rid and record["state"] in ("Requested", "Running") and record["fineTune"] == "ft"
        assert "drift share 0.80" in record["reason"] and cond(st, "Retraining")["status"] == "True"
        wait_for(lambda: retrain_annotation(cluster, "ft") == rid or None, 30, "the request on the FineTune")
        assert cluster.get("ft")["spec"] == ft["spec"]  # Git's spec untouched
        ft_st = wait_status(cluster, "ft", lambda s: (s.get("run") or {}).get("number") == 2 and launched(1)(s),
                            "run 2 launched for the request")
        assert ft_st["run"]["trigger"] == f"retrain:{rid}" and ft_st["handledRetrainRequest"] == rid
        assert ft_st["run"]["triggerReason"].startswith(f"{rid}: requested by ModelDeployment {ns}/loop at ")
        assert "drift share 0.80 (prompt_length)" in ft_st["run"]["triggerReason"]
        assert {"DriftDetected", "QualityDegraded", "RetrainRequested"} <= set(mds.event_reasons("loop"))

        # the operator killed during the retrain and restarted: still breaching, no second request or run
        op.kill()
        op.start()
        mds.wait_checks("loop", 2)
        st = mds.status("loop")
        assert st["retrainInFlight"] == rid and len(st["retrainHistory"]) == 1
        assert retrain_annotation(cluster, "ft") == rid and len(rayjobs_of_run(cluster, ft, 2)) == 1
        assert (cluster.status("ft").get("run") or {}).get("number") == 2

        # the run ends: recorded on the deployment; then flapping traffic is held by the cooldown
        finish_run(cluster, uri, ft, 2)
        st = mds.wait("loop", lambda s: not s.get("retrainInFlight"), "the retrain recorded as finished")
        assert st["retrainHistory"][0]["state"] == "Succeeded" and st["retrainHistory"][0]["run"] == 2
        for answer in (HEALTHY, DRIFTED, DRIFTED, HEALTHY, DRIFTED, DRIFTED):
            script(scripts, ns, "loop", answer)
            mds.wait_checks("loop", 1)
        st = mds.status("loop")
        assert len(st["retrainHistory"]) == 1 and retrain_annotation(cluster, "ft") == rid
        assert cond(st, "Retraining")["reason"] == "Cooldown" and "Cooldown" in mds.event_reasons("loop")

        # the real check: Evidently on the logged window
        st = mds.wait("real", lambda s: s.get("retrainInFlight"), "drift and breaches from the real check", 300)
        assert cond(st, "DriftDetected")["status"] == "True" and cond(st, "QualityDegraded")["status"] == "True"
        assert st["lastMonitor"]["samples"] == 120 and st["lastMonitor"]["quality"] == 0.0
        assert "prompt_length" in st["lastMonitor"]["driftedColumns"]
        assert st["lastMonitor"]["reportUri"].endswith("monitor/report.html")
        wait_for(lambda: retrain_annotation(cluster, "ft-real") == st["retrainInFlight"] or None, 30,
                 "the real check's request on its FineTune")

        # MLflow unreachable during the check: MonitorStale, and no figures or conditions invented
        st = mds.wait("down", lambda s: cond(s, "MonitorStale").get("status") == "True", "MonitorStale", 300)
        assert cond(st, "MonitorStale")["reason"] == "RegistryUnavailable"
        assert "lastMonitor" not in st and retrain_annotation(cluster, "ft-down") is None

        # Manual: pending until a person approves that request id
        st = mds.wait("manual", lambda s: cond(s, "Retraining").get("reason") == "AwaitingApproval", "approval")
        [pending] = st["retrainHistory"]
        assert pending["state"] == "PendingApproval" and retrain_annotation(cluster, "ft-manual") is None
        assert f"approve-retrain={pending['id']}" in cond(st, "Retraining")["message"]
        mds.wait_checks("manual", 1)
        assert retrain_annotation(cluster, "ft-manual") is None
        # a longer interval takes effect at once (the spec change wakes the daemon; no check is due) ...
        mds.patch_spec("manual", {"monitoring": {"intervalSeconds": 600}})
        time.sleep(2)
        last_check = mds.status("manual")["lastMonitor"]["time"]
        # ... and the approval is acted on at once, on the last check's figures, not 600 s later
        mds.annotate("manual", {constants.ANNOTATION_APPROVE_RETRAIN: pending["id"]})
        wait_for(lambda: retrain_annotation(cluster, "ft-manual") == pending["id"] or None, 30,
                 "the approved request on the FineTune")
        st = mds.status("manual")
        assert st["retrainHistory"][0]["state"] == "Requested" and st["lastMonitor"]["time"] == last_check

        # breaching on 3 labelled examples, under minFeedbackExamples 10: held, the streak still counting
        st = mds.wait("scarce", lambda s: cond(s, "Retraining").get("reason") == "AwaitingFeedback", "feedback")
        assert st["consecutiveBreaches"] >= 2 and not st.get("retrainHistory")
        assert "holds 3 labelled feedback examples" in cond(st, "Retraining")["message"]
        assert "AwaitingFeedback" in mds.event_reasons("scarce") and retrain_annotation(cluster, "ft-scarce") is None
        # the first window holding enough asks, and the retrain gets that window's examples
        script(scripts, ns, "scarce", scarce_window(tmp_path, 12))
        st = mds.wait("scarce", lambda s: s.get("retrainInFlight"), "the request once a window holds enough")
        assert st["retrainHistory"][0]["addedData"]["examples"] == 12
        wait_for(lambda: retrain_annotation(cluster, "ft-scarce") == st["retrainInFlight"] or None, 30,
                 "the request on the FineTune")

        assert "monitor crashed" not in op.tail(lines=100000)
    except BaseException:
        print(f"--- operator log ---\n{op.tail(lines=200)}")
        raise
    finally:
        op.stop()
