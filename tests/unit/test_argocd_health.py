"""The Argo CD health checks run the way Argo CD runs them: gopher-lua with only the base, table and
package libraries and a safe os (hack/argocd-health, built once from the Go module proxy). Each check
is laid out like Argo CD's bundled ones (health.lua, health_test.yaml, testdata/) and the argocd-cm
example carries exactly these scripts."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from tuneloop.devenv import chart

REPO_ROOT = Path(__file__).resolve().parents[2]
CHECKS = chart.HEALTH_DIR
KINDS = {"tuneloop.io_FineTune", "tuneloop.io_ModelDeployment", "ray.io_RayJob", "ray.io_RayService"}


@pytest.fixture(scope="module")
def harness() -> Path:
    proc = subprocess.run(["bash", str(REPO_ROOT / "hack" / "build-argocd-health.sh")], capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, f"hack/build-argocd-health.sh failed:\n{proc.stderr[-3000:]}"
    return Path(proc.stdout.strip().splitlines()[-1])


def test_every_kind_has_a_check_with_tests():
    assert set(chart.health_checks()) == KINDS
    for path in chart.health_checks().values():
        tests = yaml.safe_load((path.parent / "health_test.yaml").read_text())["tests"]
        inputs = {t["inputPath"] for t in tests}
        on_disk = {f"testdata/{p.name}" for p in (path.parent / "testdata").glob("*.yaml")}
        assert inputs == on_disk, f"{path.parent}: testdata not used {on_disk - inputs}, missing {inputs - on_disk}"
        statuses = {t["healthStatus"]["status"] for t in tests}
        assert {"Healthy", "Progressing", "Degraded"} <= statuses, f"{path.parent} does not test {statuses}"


def test_health_checks_give_the_expected_status_and_message_in_argo_cds_sandbox(harness):
    proc = subprocess.run([str(harness), "test", str(CHECKS)], capture_output=True, text=True, timeout=120)
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    failures = [r for r in lines if not r.get("summary") and not r["ok"]]
    assert not failures, "\n".join(json.dumps(f) for f in failures)
    summary = lines[-1]
    assert summary["checks"] == len(KINDS) and summary["tests"] >= 30 and proc.returncode == 0, summary


@pytest.mark.parametrize("call", ['string.format("%d", 1)', '("abc"):upper()', "math.floor(1.5)", "io.open('x')",
                                  "os.getenv('HOME')"])
def test_the_sandbox_refuses_what_argo_cd_refuses(harness, tmp_path, call):
    """PUC Lua would accept these; Argo CD's sandbox (and so the harness) must not, or a check that
    passes here would fail in Argo CD."""
    script = tmp_path / "health.lua"
    script.write_text(f"local x = {call}\nreturn {{status = 'Healthy', message = tostring(x)}}\n")
    obj = tmp_path / "obj.yaml"
    obj.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    proc = subprocess.run([str(harness), "eval", str(script), str(obj)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2, f"{call} ran in the sandbox: {proc.stdout}"


def test_a_status_argo_cd_does_not_know_becomes_unknown_and_os_time_works(harness, tmp_path):
    script = tmp_path / "health.lua"
    script.write_text("local os = require('os')\nlocal t = os.time()\n"
                      "if t > 0 then return {status = 'Fine', message = 'x'} end\n")
    obj = tmp_path / "obj.yaml"
    obj.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    proc = subprocess.run([str(harness), "eval", str(script), str(obj)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"status": "Unknown", "message": "Lua returned an invalid health status"}


def test_argocd_cm_example_carries_every_check_verbatim():
    cm = yaml.safe_load(chart.ARGOCD_CM.read_text())
    assert cm["metadata"]["name"] == "argocd-cm"
    expected = {f"resource.customizations.health.{key}": path.read_text()
                for key, path in chart.health_checks().items()}
    assert cm["data"] == expected, "examples/gitops/argocd-cm.yaml is stale: run `make chart`"


def test_gitops_examples_point_at_what_exists():
    gitops = REPO_ROOT / "examples" / "gitops"
    kustomization = yaml.safe_load((gitops / "kustomization.yaml").read_text())
    for entry in kustomization["resources"]:
        assert entry.startswith("https://") or (gitops / entry).exists(), entry
    assert [p["path"] for p in kustomization["patches"]] == ["argocd-cm.yaml"]
    apps = [yaml.safe_load(p.read_text()) for p in sorted(gitops.glob("application-*.yaml"))]
    assert {a["kind"] for a in apps} == {"Application"}
    for app in apps:
        assert (REPO_ROOT / app["spec"]["source"]["path"]).is_dir(), app["spec"]["source"]
    [operator_app] = [a for a in apps if a["spec"]["source"]["path"] == "charts/tuneloop"]
    assert "ServerSideApply=true" in operator_app["spec"]["syncPolicy"]["syncOptions"]


def test_the_operator_applications_values_pass_the_charts_schema(tmp_path):
    app = yaml.safe_load((REPO_ROOT / "examples" / "gitops" / "application-tuneloop.yaml").read_text())
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(app["spec"]["source"]["helm"]["valuesObject"]))
    docs = chart.template(os.environ.get("KUBE_VERSION", "1.33.13"), "-f", str(values),
                          namespace=app["spec"]["destination"]["namespace"])
    assert {"ServiceMonitor", "PrometheusRule"} <= {d["kind"] for d in docs}
