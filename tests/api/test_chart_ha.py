"""The chart's HA mode on the real apiserver: two replicas started with the Deployment's own shell
command (kopf peering, each with a random --priority) as the chart's ServiceAccount. One serves, the
other pauses in its favour; the peering rights are used and nothing is refused. Its own module, so no
standalone operator of another module serves the same objects meanwhile."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from tests.api.chart_install import audit, audit_offset, sa_kubeconfig, server_side_apply
from tests.api.conftest import OPERATOR_ENV
from tests.api.harness import create_namespace
from tests.api.kube import Cluster, finetune, wait_for
from tuneloop.devenv import chart
from tuneloop.devenv.ports import free_port

pytestmark = [pytest.mark.apiserver, pytest.mark.slow]

KUBE_VERSION = os.environ.get("KUBE_VERSION", "1.33.13")
RELEASE, RELEASE_NS = "ha", "tuneloop-ha"
SA_USER = f"system:serviceaccount:{RELEASE_NS}:ha-tuneloop"


def start_replica(container: dict[str, Any], kubeconfig: Path, log: Path, storage: Path) -> subprocess.Popen[bytes]:
    """The container's `/bin/sh -c` line as it is, but kopf from this venv and its own liveness port."""
    assert container["command"] == ["/bin/sh", "-c"], container["command"]
    line = container["args"][0].replace("0.0.0.0:8081", f"127.0.0.1:{free_port()}")
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    env |= {**OPERATOR_ENV, "KUBECONFIG": str(kubeconfig), "TUNELOOP_STORAGE_ROOT": str(storage),
            "HOME": os.environ.get("HOME", "/tmp"), "PYTHONUNBUFFERED": "1",
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    with open(log, "ab") as out:
        return subprocess.Popen(["/bin/sh", "-c", line], env={**os.environ, **env}, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def test_two_peered_replicas_one_serves_the_other_pauses(control_plane, api_client, rayjob_crd, mlflow_server,
                                                         tmp_path):
    docs = chart.template(KUBE_VERSION, "--set", "ha.enabled=true", "--set", "crds.install=false",
                          release=RELEASE, namespace=RELEASE_NS)
    create_namespace(api_client, RELEASE_NS)
    crds = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    assert {c["metadata"]["name"] for c in crds} == {"clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"}
    server_side_apply(control_plane, crds)
    for crd in crds:
        control_plane.kubectl("wait", "--for=condition=Established", "--timeout=30s", f"crd/{crd['metadata']['name']}")
    server_side_apply(control_plane, [d for d in docs if d["kind"] != "CustomResourceDefinition"])
    kubeconfig = sa_kubeconfig(control_plane, api_client, RELEASE_NS, "ha-tuneloop", tmp_path / "kubeconfig")
    [deployment] = [d for d in docs if d["kind"] == "Deployment"]
    assert deployment["spec"]["replicas"] == 2
    [container] = deployment["spec"]["template"]["spec"]["containers"]

    since = audit_offset(control_plane)
    logs = [tmp_path / "replica-0.log", tmp_path / "replica-1.log"]
    replicas = [start_replica(container, kubeconfig, log, tmp_path) for log in logs]
    try:
        custom = k8s.CustomObjectsApi(api_client)

        def peers() -> dict[str, Any] | None:
            status = custom.get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", "tuneloop").get(
                "status") or {}
            alive = {k: v for k, v in status.items() if v}
            return alive if len(alive) == 2 else None
        alive = wait_for(peers, 120, "both replicas in the peering object")
        priorities = sorted(p["priority"] for p in alive.values())
        assert priorities[0] != priorities[1], f"equal priorities freeze both: {alive}"

        def paused() -> list[int] | None:
            texts = [log.read_text(errors="replace") if log.exists() else "" for log in logs]
            found = [i for i, text in enumerate(texts) if "Pausing operations in favour of" in text]
            return found or None
        [follower] = wait_for(paused, 60, "the lower-priority replica pausing")

        cluster = Cluster(api_client, create_namespace(api_client, f"ha-{time.monotonic_ns() % 10**8}"))
        cluster.create(finetune("ha", mlflow_server.tracking_uri, model=f"m-{cluster.ns}"))
        wait_for(lambda: (cluster.status("ha").get("run") or {}).get("rayJobName"), 90, "launched by the leader")
        assert len(cluster.rayjobs()) == 1
        leader_log = logs[1 - follower].read_text(errors="replace")
        follower_log = logs[follower].read_text(errors="replace")
        assert f"[{cluster.ns}/ha]" in leader_log and f"[{cluster.ns}/ha]" not in follower_log
    finally:
        for proc in replicas:
            stop(proc)

    requests = audit(control_plane, SA_USER, since)
    [role] = [d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "ha-tuneloop"]
    [rule] = [r for r in role["rules"] if r["apiGroups"] == ["kopf.dev"]]
    granted = {("kopf.dev", "clusterkopfpeerings", v) for v in rule["verbs"]}
    used = {r.call for r in requests if r.group == "kopf.dev"}
    assert used == granted, f"peering verbs granted but unused: {sorted(granted - used)}; used: {sorted(used)}"
    refused = sorted({(r.call, r.namespace) for r in requests if r.code == 403})
    assert not refused, f"a peered replica was refused {refused}"
