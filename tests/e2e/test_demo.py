"""`make demo` as a user without a terminal runs it (CI, a pipe): the real demo process starts the local
control plane, Ray head, MLflow server and the operator as a real `kopf run` process, applies
examples/demo/, trains on the pre-trained base model, and ends with its summary. The summary's facts are
asserted — the first FineTune champion, the weaker one challenger saying by how much it missed, the tuned
model above the few-shot prompt baseline by the promotion margin — and nothing it started may outlive it,
on success or on SIGTERM / Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.processes import MARKER_VAR, family, kill_all, wait_until_gone

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def start_demo(tmp_path: Path, marker: str, *args: str) -> tuple[subprocess.Popen[str], Path]:
    log = tmp_path / "demo.log"
    env = {**os.environ, MARKER_VAR: marker, "PYTHONUNBUFFERED": "1"}
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tuneloop.devenv.demo", "--workdir", str(tmp_path / "demo"),
                                 *args], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                                env=env, start_new_session=True)  # its own session, as under a supervisor
    return proc, log


def watch(proc: subprocess.Popen[str], marker: str, sessions: set[int], seen: dict, until, timeout_seconds: float,
          log: Path) -> None:
    """Snapshot the demo's process family every second (Ray's daemons leave the tree) until `until()`."""
    deadline = time.monotonic() + timeout_seconds
    while not until():
        seen.update(family(proc.pid, marker, sessions))
        assert time.monotonic() < deadline, log.read_text()[-6000:]
        time.sleep(1)


def test_make_demo_runs_the_loop_to_its_summary(tmp_path: Path):
    marker, sessions, seen = uuid.uuid4().hex, set(), {}
    summary_path = tmp_path / "summary.json"
    proc, log = start_demo(tmp_path, marker, "--summary-json", str(summary_path))
    try:
        watch(proc, marker, sessions, seen, lambda: proc.poll() is not None, 3600, log)
        out = log.read_text()
        assert proc.returncode == 0, out[-6000:]
        assert len(seen) > 5  # the services, the operator and the job really ran
        # Nothing the demo started outlives it (the control plane, Ray's daemons, MLflow, the operator).
        survivors = wait_until_gone(seen, marker, sessions, timeout_seconds=30)
        assert survivors == [], [p.cmdline for p in survivors]
    finally:
        if proc.poll() is None:
            proc.kill()
        kill_all(seen, marker, sessions)

    summary = json.loads(summary_path.read_text())
    first, second = summary["summaries"]["invoices-lora"], summary["summaries"]["invoices-lora-weak"]
    assert first["phase"] == "Succeeded" and first["model"]["version"] == "1" and first["model"]["alias"] == "champion"
    # Fine-tuning really learns the task (fixed seeds; a quality behaviour, not a timing): on the held-out
    # invoices the tuned model reaches field_f1 >= 0.95 and exact_match >= 0.8 and beats the few-shot prompt
    # baseline by the promotion margin on field_f1.
    assert first["metrics"]["field_f1"] >= 0.95 and first["metrics"]["exact_match"] >= 0.8, first
    assert first["metrics"]["json_valid"] >= 0.95, first
    assert first["metrics"]["field_f1"] >= first["baselineMetrics"]["field_f1"] + 0.05, first
    assert first["metrics"]["loss"] < first["baselineMetrics"]["loss"], first
    assert first["gate"]["promoted"] is True and first["gate"]["metric"] == "field_f1"
    # The deliberately weaker run is registered into the same model and kept challenger, saying by how much.
    assert second["phase"] == "Succeeded" and second["model"]["version"] == "2", second
    assert second["model"]["alias"] == "challenger" and second["gate"]["promoted"] is False
    assert "missed by" in second["gate"]["why"], second["gate"]
    assert second["metrics"]["field_f1"] < first["metrics"]["field_f1"]
    # Data preparation facts: 12 repeated rows dropped, contact details scrubbed, a frozen split.
    data = first["dataset"]
    assert data["duplicatesRemoved"] == 12 and data["rows"] == 412
    assert data["piiRedactions"].get("email", 0) > 0 and data["piiRedactions"].get("phone", 0) > 0
    assert data["trainRows"] + data["heldOutRows"] == 400 and len(data["hash"]) == 64
    assert set(first["stageSeconds"]) >= {"data", "training", "evaluation", "registration"}
    # Without a TTY the demo prints plain progress lines and the summary.
    assert "invoices-lora: phase Running" in out and "stage training epoch 1/6" in out
    assert "kubectl get ft -o wide" in out and "invoices-lora-weak" in summary["kubectl"]
    assert "champion" in summary["kubectl"] and "challenger" in summary["kubectl"]
    assert summary["mlflow_ui"].startswith("http://127.0.0.1:")
    # Serving (#8): the champion's version is served and answers every held-out request of the burst.
    serving = summary["serving"]
    assert serving["servedVersion"] == "1" and serving["answeredBy"] == ["1"], serving
    assert serving["requests"] == 20 and serving["answered"] == 20 and serving["failures"] == 0, serving
    assert serving["endpoint"].startswith("http://127.0.0.1:") and serving["endpoint"].endswith(
        "/tuneloop-demo/invoices-extractor"), serving
    assert 0 < serving["p50Ms"] <= serving["p95Ms"], serving
    assert "invoices-extractor: phase Serving" in out and "p95 latency" in out
    assert "invoices-extractor" in summary["kubectl_mdep"]

    # The closed loop (#9): the drift hurt, the monitor asked for one retrain on the labelled feedback, the
    # retrain beat the champion re-scored on the new data, took the alias, was rolled out and recovered.
    lp = summary["loop"]
    print(f"closed loop: Q0 {lp['q0']} Q1 {lp['q1']} Q2 {lp['q2']} (target {lp['q2Target']}); "
          f"requests {lp['requests']}; monitor {lp['monitor']}; retrain {lp['retrain']}")
    assert lp["q0"] - lp["q1"] >= 0.2, lp
    assert lp["q2"] >= lp["q1"] + 0.9 * (lp["q0"] - lp["q1"]), lp
    assert lp["failures"] == 0 and lp["labelled"] > 0, lp
    assert lp["versions"] == {"before": "1", "after": "3"}, lp  # v2 is the weaker run, kept challenger
    assert lp["monitor"]["retrainsRequested"] == 1, lp
    assert lp["monitor"]["driftShareAtTrigger"] > (lp["monitor"]["driftShareBefore"] or 0.0), lp
    assert lp["monitor"]["reportUri"], lp
    retrain = lp["retrain"]
    assert retrain["addedExamples"] > 0 and retrain["datasetRows"] == 412 + retrain["addedExamples"], retrain
    assert retrain["datasetHash"] != data["hash"] and "re-scored on this held-out set" in retrain["gate"], retrain
    # Which requests the retrain learned from is recorded, so a recovery miss can be replayed offline: every
    # example of the operator's feedback file is a labelled request the demo sent, most of them drifted.
    mix = retrain["feedbackMix"]
    assert retrain["feedbackUri"].startswith("file://") and sum(mix.values()) == retrain["addedExamples"], retrain
    assert mix["other"] == 0 and mix["drifted"] > mix["inDistribution"], retrain
    assert "Closed loop" in out and "Q2 drifted layout after the retrain" in out


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_demo_stops_everything_it_started_on_a_signal(tmp_path: Path, sig: str):
    """Sent while the first FineTune runs: the control plane, Ray head and its job, MLflow and the operator
    all go, and the demo says so."""
    marker, sessions, seen = uuid.uuid4().hex, set(), {}
    proc, log = start_demo(tmp_path, marker)
    try:
        watch(proc, marker, sessions, seen,
              lambda: proc.poll() is not None or "stage data preparation" in log.read_text(), 900, log)
        assert proc.poll() is None, log.read_text()[-4000:]
        time.sleep(3)  # the Ray job is being submitted and started
        seen.update(family(proc.pid, marker, sessions))
        proc.send_signal(getattr(signal, sig))
        assert proc.wait(timeout=180) == 130, log.read_text()[-4000:]
        survivors = wait_until_gone(seen, marker, sessions, timeout_seconds=60)
        assert survivors == [], [p.cmdline for p in survivors]
        assert "everything the demo started has been stopped" in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
        kill_all(seen, marker, sessions)
