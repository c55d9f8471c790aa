"""Waits on the world, against the real kube-apiserver + etcd and a real MLflow server: a FineTune that
cannot start because of something outside its spec (a file:// path not there yet, no tracking URI in
the operator, a Ray head not ready) waits in phase Pending and goes on by itself, without a spec
change, once the world is fixed; a problem of the spec itself stays Failed until the spec changes.

As in test_finetune_failures.py, the operator is a child process (`kopf run`), the test acts as the Ray
job API (`harness.RayJobApiStub`) and as the training job (the MLflow run and its result artifact).
One operator serves the module's namespaces (`<prefix>-*`); the settings story runs its own, twice.
"""

from __future__ import annotations

import socket
import time
import urllib.request
import uuid
from typing import Any

import pytest

from tests.api.conftest import OPERATOR_ENV
from tests.api.harness import (
    OperatorProcess,
    RayJobApiStub,
    cond,
    create_namespace,
    experiment,
    holds_for_looks,
    job_tags,
    operator_process_env,
    phase,
    wait_status,
    wait_warning,
    warning_reasons,
)
from tests.api.kube import GROUP, PLURAL, VERSION, Cluster, act_as_job, finetune, wait_for
from tuneloop.operator.logic import naming

pytestmark = [pytest.mark.apiserver, pytest.mark.slow]

MAX_POLL = float(OPERATOR_ENV["TUNELOOP_MAX_POLL_SECONDS"])


@pytest.fixture(scope="module")
def ns_prefix() -> str:
    return f"tlw{uuid.uuid4().hex[:6]}"


def submits(ray_api: RayJobApiStub) -> int:
    return sum(1 for method, path in ray_api.requests if method == "POST" and path.rstrip("/") == "/api/jobs")


def reason_is(reason: str):
    return lambda st: cond(st, "Ready").get("reason") == reason


def true_conditions(st: dict[str, Any]) -> set[str]:
    return {c["type"] for c in st.get("conditions", []) if c["status"] == "True"}


# --- a path that is not there yet ------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["dataset", "baseModel"])
def test_missing_path_waits_then_runs_to_succeeded_once_it_exists(missing, cluster, mlflow_server, ray_api,
                                                                   tmp_path, shared_operator):
    uri, model = mlflow_server.tracking_uri, f"m-{cluster.ns}"
    data, base = tmp_path / "invoices.jsonl", tmp_path / "tiny-llama"
    reason, path = ("DataNotFound", data) if missing == "dataset" else ("BaseModelNotFound", base)
    if missing == "dataset":
        base.mkdir()
    else:
        data.write_text('{"prompt": "a", "completion": "b"}\n')
    ray = {"mode": "ExistingCluster", "address": ray_api.address}  # loopback: the operator sees the job's files
    ft = cluster.create(finetune("later", uri, model=model, ray=ray, baseModel={"uri": f"file://{base}"},
                                 dataset={"uri": f"file://{data}"}))
    sid = naming.submission_id(ft["metadata"]["uid"], 1, 1)

    st = wait_status(cluster, "later", reason_is(reason), reason)
    ready = cond(st, "Ready")
    assert st["phase"] == "Pending" and ready["status"] == "False", st
    assert f"spec.{missing}.uri" in ready["message"] and str(path) in ready["message"], ready
    assert st["waiting"]["reason"] == reason and "run" not in st and "Failed" not in true_conditions(st)
    assert str(path) in wait_warning(cluster, "later", reason)
    holds_for_looks(shared_operator, cluster, "later",
                    lambda: cluster.status("later")["phase"] == "Pending" and ray_api.requests == [], 3,
                    "waiting, nothing sent to Ray")

    if missing == "dataset":
        data.write_text('{"prompt": "a", "completion": "b"}\n')
    else:
        base.mkdir()
    st = wait_status(cluster, "later", phase("Running"), "Running once the path exists", timeout=2 * MAX_POLL + 15)
    assert cluster.get("later")["metadata"]["generation"] == 1 and st["run"]["generation"] == 1  # no spec change
    assert "waiting" not in st and ray_api.submissions() == [sid]

    act_as_job(uri, experiment(ft), job_tags(ft), {"exact_match": 0.8}, {"exact_match": 0.3})
    ray_api.jobs[sid]["status"] = "SUCCEEDED"
    st = wait_status(cluster, "later", phase("Succeeded"), "Succeeded", timeout=60)
    assert st["model"]["version"] == "1" and cond(st, "Ready")["reason"] == "Promoted"
    assert ray_api.submissions() == [sid] and submits(ray_api) == 1
    assert [a["outcome"] for a in st["attempts"]] == ["Succeeded"]


# --- a Ray head that is not ready ------------------------------------------------------------------


def test_ray_not_ready_at_launch_is_pending_in_kubectl_then_submits_once(cluster, mlflow_server, ray_api,
                                                                         control_plane):
    ray_api.down = True
    ray = {"mode": "ExistingCluster", "address": ray_api.address}
    ft = cluster.create(finetune("rayless", mlflow_server.tracking_uri, model=f"m-{cluster.ns}", ray=ray))
    st = wait_status(cluster, "rayless", reason_is("RayUnavailable"), "RayUnavailable")
    assert st["phase"] == "Pending" and "run" not in st and st["waiting"]["reason"] == "RayUnavailable", st
    assert "503" in cond(st, "Ready")["message"]
    table = control_plane.kubectl("get", "ft", "rayless", "-n", cluster.ns, "--no-headers").stdout.split()
    assert table[:2] == ["rayless", "Pending"] and "RayUnavailable" in table, table  # the PHASE column
    wait_warning(cluster, "rayless", "RayUnavailable")

    ray_api.down = False
    st = wait_status(cluster, "rayless", phase("Running"), "Running once Ray answers", timeout=2 * MAX_POLL + 15)
    assert ray_api.submissions() == [naming.submission_id(ft["metadata"]["uid"], 1, 1)] and submits(ray_api) == 1
    assert "waiting" not in st


# --- the spec's own fault ----------------------------------------------------------------------------


def test_permanent_job_error_stays_failed_until_the_spec_changes(cluster, mlflow_server, ray_api, shared_operator):
    """The job found bad rows: no retry (backoffLimit notwithstanding), no recheck, until a new spec."""
    uri = mlflow_server.tracking_uri
    ray = {"mode": "ExistingCluster", "address": ray_api.address}
    ft = cluster.create(finetune("rows", uri, model=f"m-{cluster.ns}", ray=ray, backoffLimit=2))
    uid = ft["metadata"]["uid"]
    sid = naming.submission_id(uid, 1, 1)
    wait_status(cluster, "rows", phase("Running"), "Running")
    act_as_job(uri, experiment(ft), job_tags(ft), {}, {}, status="Failed", reason="DataInvalid")
    ray_api.jobs[sid].update(status="FAILED", message="job exited with 23")
    st = wait_status(cluster, "rows", phase("Failed"), "Failed")
    assert (cond(st, "Ready")["reason"], cond(st, "Failed")["reason"]) == ("DataInvalid", "DataInvalid")
    assert "waiting" not in st
    holds_for_looks(shared_operator, cluster, "rows",
                    lambda: cluster.status("rows")["phase"] == "Failed" and ray_api.submissions() == [sid], 3,
                    "Failed, no second attempt")
    wait_warning(cluster, "rows", "DataInvalid")
    assert warning_reasons(cluster, "rows").count("DataInvalid") == 1

    cluster.patch_spec("rows", {"dataset": {"uri": "s3://bucket/invoices-fixed.jsonl"}})
    st = wait_status(cluster, "rows", lambda s: (s.get("run") or {}).get("number") == 2 and s.get("phase") in
                     ("Launching", "Running"), "run 2 after the spec changed")
    assert ray_api.submissions() == [sid, naming.submission_id(uid, 2, 1)]


# --- an operator setting that is missing -------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def sample(text: str, name: str) -> float:
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


def test_operator_without_tracking_uri_says_so_once_and_a_restart_with_one_moves_waiting_finetunes_on(
        api_client, operator_env, rayjob_crd, mlflow_server, ns_prefix, tmp_path):
    ceiling = 5.0  # backoff ceiling and least time between two Warnings about one wait
    ns = create_namespace(api_client, f"{ns_prefix}cfg")
    cluster, uri, port = Cluster(api_client, ns), mlflow_server.tracking_uri, free_port()
    env = operator_process_env({**operator_env, "TUNELOOP_POLL_SECONDS": "0.2",
                                "TUNELOOP_MAX_POLL_SECONDS": str(ceiling), "TUNELOOP_METRICS_PORT": str(port)})
    env.pop("TUNELOOP_MLFLOW_TRACKING_URI", None)
    op = OperatorProcess(ns, env, tmp_path / "operator.log")
    ray_api = RayJobApiStub()
    spec = {"ray": {"mode": "ExistingCluster", "address": ray_api.address},
            "registry": {"modelName": f"m-{ns}"}}  # no trackingUri: the operator's default is meant
    try:
        # Left Failed by an older operator that called the missing setting InvalidSpec, for good.
        old = cluster.create(finetune("old", uri, **spec))
        message = "spec.registry.trackingUri: no MLflow tracking URI"
        cluster.custom.patch_namespaced_custom_object_status(GROUP, VERSION, ns, PLURAL, "old", {"status": {
            "phase": "Failed", "observedGeneration": 1, "conditions": [
                {"type": t, "status": s, "reason": "InvalidSpec", "message": message, "observedGeneration": 1,
                 "lastTransitionTime": "2026-01-01T00:00:00Z"} for t, s in (("Ready", "False"), ("Failed", "True"))]}})

        op.start()
        new = cluster.create(finetune("new", uri, **spec))
        started = time.monotonic()
        for name in ("old", "new"):
            st = wait_status(cluster, name, reason_is("RegistryNotConfigured"), "RegistryNotConfigured", timeout=60)
            assert st["phase"] == "Pending" and "Failed" not in true_conditions(st), st
            assert "TUNELOOP_MLFLOW_TRACKING_URI" in cond(st, "Ready")["message"]

        # said once at start-up, in the log and as a metric
        assert len(op.tail("operator setting TUNELOOP_MLFLOW_TRACKING_URI").splitlines()) == 1, op.tail()
        text = scrape(port)
        assert sample(text, 'tuneloop_operator_config_problem{setting="TUNELOOP_MLFLOW_TRACKING_URI"}') == 1

        # Warnings while waiting: counted over a counted number of re-checks (reconciles of two objects)
        def checks() -> float:
            return sample(scrape(port), "tuneloop_reconcile_duration_seconds_count")

        wait_for(lambda: checks() >= 14, 60, "14 re-checks of the two waiting FineTunes")
        wait_warning(cluster, "new", "RegistryNotConfigured")
        time.sleep(1)  # kopf posts events in the background
        counts = {name: warning_reasons(cluster, name).count("RegistryNotConfigured") for name in ("old", "new")}
        elapsed, counted = time.monotonic() - started, checks()  # both only grow: upper bounds for the counts
        bound = 1 + int(elapsed // ceiling)  # one when the wait began, then at most one per ceiling
        assert all(1 <= n <= bound for n in counts.values()), (counts, bound, counted, elapsed)
        assert sum(counts.values()) < counted, (counts, counted)  # not one per check
        assert ray_api.requests == []

        op.kill()
        op.env = {**env, "TUNELOOP_MLFLOW_TRACKING_URI": uri}
        op.start()
        for name in ("old", "new"):
            st = wait_status(cluster, name, phase("Running"), "Running after the restart", timeout=60)
            assert st["run"]["generation"] == 1 and "waiting" not in st
        assert sorted(ray_api.submissions()) == sorted(naming.submission_id(o["metadata"]["uid"], 1, 1)
                                                       for o in (old, new))
    except BaseException:
        print(f"--- operator log ---\n{op.tail()}")
        raise
    finally:
        op.stop()
        ray_api.close()
