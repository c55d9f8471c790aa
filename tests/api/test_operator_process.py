"""What the README promises of the operator process, through the real `kopf run -m
tuneloop.operator.main` (the console script, as a user starts it) against a real kube-apiserver:

- a bad `TUNELOOP_*` value stops start-up, naming the variable (and the process exits, non-zero);
- `--all-namespaces` serves FineTunes in two namespaces, one of them created after start-up;
- `/metrics` on `TUNELOOP_METRICS_PORT` carries every series the README, the runbook and the alert rules
  name, with the values of what the operator did (two launches, two FineTunes Running, no config problem).

The all-namespaces story runs on a control plane of its own, so no other module's FineTunes (the
shared control plane keeps every namespace: it has no namespace controller) are served by this operator
or counted in its metrics. The test acts as Ray's job API (`RayJobApiStub`: a job that stays RUNNING).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import config as k8s_config

from tests.api.conftest import OPERATOR_ENV
from tests.api.harness import RayJobApiStub, create_namespace, wait_status
from tests.api.kube import Cluster, finetune, wait_for
from tuneloop.devenv.ports import free_port
from tuneloop.operator.logic import naming

pytestmark = [pytest.mark.apiserver, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
KOPF = str(Path(sys.executable).parent / "kopf")  # the console script of this environment
START_UP_TIMEOUT_SECONDS = 120  # imports take ~10 s on two busy cores; kopf retries a failed start-up every 60 s


def kopf_run(env: dict[str, str], log: Path, *scope: str) -> subprocess.Popen[bytes]:
    """`kopf run -m tuneloop.operator.main --standalone <scope>`, as the README runs it."""
    with open(log, "ab") as out:
        return subprocess.Popen([KOPF, "run", "-m", "tuneloop.operator.main", "--standalone", *scope],
                                env={**os.environ, **env, "PYTHONUNBUFFERED": "1"}, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


# --- a bad setting stops start-up, naming the variable ------------------------------------------------


@contextlib.contextmanager
def port_in_use() -> Iterator[int]:
    """A port some other process already serves on (the address the metrics server binds)."""
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        yield int(s.getsockname()[1])


BAD_SETTINGS = {
    # id: (variable, value or None for "a port in use", what the message must say besides the variable)
    "not a number": ("TUNELOOP_POLL_SECONDS", "abc", "valid number"),
    "out of range": ("TUNELOOP_CLIENT_RETRIES", "99", "less than or equal to 10"),
    "not JSON": ("TUNELOOP_GPU_PRICES_USD_PER_HOUR", "{bad", "not JSON"),
    "not a choice": ("TUNELOOP_CHECK_FILE_URIS", "sometimes", "'auto', 'always' or 'never'"),
    # Failed before: start-up failed with a bare "[Errno 98] Address already in use" and kopf retried it
    # every 60 s, for ever, the variable never named.
    "metrics port taken": ("TUNELOOP_METRICS_PORT", None, "choose a free port, or 0"),
}


@pytest.mark.parametrize(("variable", "value", "says"), BAD_SETTINGS.values(), ids=BAD_SETTINGS.keys())
def test_a_bad_setting_stops_start_up_naming_the_variable(kubeconfig, tmp_path: Path, variable: str,
                                                          value: str | None, says: str) -> None:
    log = tmp_path / "operator.log"
    env = {**OPERATOR_ENV, "KUBECONFIG": str(kubeconfig), "TUNELOOP_STORAGE_ROOT": str(tmp_path)}
    with port_in_use() if value is None else contextlib.nullcontext(value) as bad:
        proc = kopf_run({**env, variable: str(bad)}, log, "--all-namespaces")
        try:
            code = proc.wait(timeout=START_UP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            stop(proc)
    text = log.read_text(errors="replace")
    assert code is not None and code != 0, f"the operator did not stop (exit {code}):\n{text[-3000:]}"
    [first, *_] = [line for line in text.splitlines() if "invalid operator settings:" in line] or [""]
    assert f"{variable}={str(bad)!r}" in first or f"{variable}={bad}" in first, text[-3000:]
    assert says in first, first
    assert "tuneloop operator started" not in text


# --- --all-namespaces and /metrics ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def own_control_plane() -> Iterator[Any]:
    from tuneloop.devenv import controlplane

    with controlplane.running(crd_dir=REPO_ROOT / "crds") as cp:
        yield cp


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def value(text: str, series: str) -> float | None:
    """The value of one series (`name{labels}` exactly as exposed), or None when it is not there."""
    return next((float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.rsplit(" ", 1)[0] == series),
                None)


def documented_series() -> set[str]:
    """Every tuneloop_* name the README, the runbook and the alert rules (repo and chart copies) mention."""
    files = [REPO_ROOT / "README.md", REPO_ROOT / "docs" / "runbook.md",
             REPO_ROOT / "monitoring" / "prometheus-rules.yaml",
             *sorted((REPO_ROOT / "charts" / "tuneloop" / "files" / "rules").glob("*.yaml"))]
    names = {m for f in files for m in re.findall(r"\btuneloop_[a-z_]+", f.read_text())}
    # the pattern still finds what the documents name
    assert {"tuneloop_operator_config_problem", "tuneloop_finetunes", "tuneloop_retrains_total"} <= names, names
    return names


def exposed(name: str, families: set[str]) -> bool:
    """A documented name is a family the endpoint declares (a histogram's _bucket/_count/_sum, a counter's
    _total), or, written as a prefix (`tuneloop_deployment_*`), the start of one."""
    if name.endswith("_"):
        return any(f.startswith(name) for f in families)
    return name in families or re.sub(r"_(bucket|count|sum)$", "", name) in families


def test_all_namespaces_serves_two_namespaces_and_metrics_show_it(own_control_plane, mlflow_server,
                                                                  tmp_path: Path) -> None:
    api_client = k8s_config.new_client_from_config(config_file=str(own_control_plane.kubeconfig), context="admin")
    ray_api, port, log = RayJobApiStub(), free_port(), tmp_path / "operator.log"
    env = {**OPERATOR_ENV, "KUBECONFIG": str(own_control_plane.kubeconfig), "TUNELOOP_STORAGE_ROOT": str(tmp_path),
           "TUNELOOP_METRICS_PORT": str(port), "TUNELOOP_MLFLOW_TRACKING_URI": mlflow_server.tracking_uri}
    spec = {"ray": {"mode": "ExistingCluster", "address": ray_api.address}}
    suffix = uuid.uuid4().hex[:6]
    first = Cluster(api_client, create_namespace(api_client, f"first-{suffix}"))
    proc = kopf_run(env, log, "--all-namespaces")
    try:
        made = [first.create(finetune("a", mlflow_server.tracking_uri, model=f"a-{suffix}", **spec))]
        # a namespace that did not exist when the operator started
        later = Cluster(api_client, create_namespace(api_client, f"later-{suffix}"))
        made.append(later.create(finetune("b", mlflow_server.tracking_uri, model=f"b-{suffix}", **spec)))
        for cluster, name in ((first, "a"), (later, "b")):
            st = wait_status(cluster, name, lambda s: s.get("phase") == "Running", f"{name} Running", timeout=120)
            assert st["run"]["submissionId"] == naming.submission_id(cluster.get(name)["metadata"]["uid"], 1, 1)
        assert sorted(ray_api.submissions()) == sorted(naming.submission_id(o["metadata"]["uid"], 1, 1) for o in made)

        def running_two() -> str | None:
            text = scrape(port)
            return text if value(text, 'tuneloop_finetunes{phase="Running"}') == 2 else None

        text = wait_for(running_two, 30, "tuneloop_finetunes{phase=Running} == 2")
        assert value(text, 'tuneloop_launches_total{mode="ExistingCluster"}') == 2
        assert value(text, 'tuneloop_operator_config_problem{setting="TUNELOOP_MLFLOW_TRACKING_URI"}') == 0
        assert (value(text, "tuneloop_reconcile_duration_seconds_count") or 0) >= 2
        assert all(value(text, f'tuneloop_finetunes{{phase="{p}"}}') == 0
                   for p in ("Pending", "Launching", "Registering", "Succeeded", "Failed", "Suspended")), text
        families = {line.split()[2] for line in text.splitlines() if line.startswith("# HELP ")}
        missing = sorted(n for n in documented_series() if not exposed(n, families))
        assert missing == [], f"documented but not exposed on /metrics: {missing}\nexposed: {sorted(families)}"
    except BaseException:
        print(f"--- operator log ---\n{log.read_text(errors='replace')[-6000:]}")
        raise
    finally:
        stop(proc)
        ray_api.close()
