"""The Helm chart, with the real helm CLI (hack/build-helm.sh: built once from the Go module proxy at a
pinned version, cached outside the repo): lint --strict and template for every ci/*.yaml values file
with an explicit --kube-version, the CRD templates equal to crds/, values refused when unknown, and
what the rendered objects promise (least privilege, restricted pod security, one replica)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tuneloop.devenv import chart
from tuneloop.operator.metrics import Metrics
from tuneloop.operator.settings import OperatorSettings, load_settings

KUBE_VERSION = os.environ.get("KUBE_VERSION", "1.33.13")
CI_VALUES = sorted((chart.CHART_DIR / "ci").glob("*.yaml"))


def render(*args: str, namespace: str = "tuneloop-system") -> list[dict]:
    return chart.template(KUBE_VERSION, *args, namespace=namespace)


def kinds(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def operator_container(docs: list[dict]) -> dict:
    [deployment] = kinds(docs, "Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return container


def test_generated_chart_files_match_their_sources():
    for path, text in chart.rendered_files().items():
        assert path.exists() and path.read_text() == text, f"{path} is stale: run `make chart` and commit it"
    on_disk = set(chart.CRD_TEMPLATE_DIR.glob("*.yaml")) | set(chart.RULES_DIR.glob("*.yaml"))
    assert on_disk == {p for p in chart.rendered_files() if p.parent in (chart.CRD_TEMPLATE_DIR, chart.RULES_DIR)}


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_helm_lint_strict(values: Path):
    out = chart.helm("lint", "--strict", str(chart.CHART_DIR), "-f", str(values), "--kube-version", KUBE_VERSION)
    assert "0 chart(s) failed" in out.stdout, out.stdout


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_helm_template_renders_objects_with_names_and_namespaces(values: Path):
    docs = render("-f", str(values))
    assert kinds(docs, "Deployment") and kinds(docs, "ServiceAccount")
    for doc in docs:
        assert doc["metadata"]["name"], doc
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "tuneloop", doc["metadata"]


def test_the_crds_in_the_chart_are_crds_dir_plus_keep_and_release_labels():
    rendered = {d["metadata"]["name"]: d for d in kinds(render(), "CustomResourceDefinition")}
    sources = {(c := yaml.safe_load(p.read_text()))["metadata"]["name"]: c for p in chart.CRD_SOURCE_DIR.glob("*.yaml")}
    assert set(rendered) == set(sources)
    for name, source in sources.items():
        got = rendered[name]
        assert got["metadata"]["annotations"] == {chart.KEEP_ANNOTATION: "keep"}
        assert source["metadata"]["labels"].items() <= got["metadata"]["labels"].items()
        assert got["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        assert {k: v for k, v in got.items() if k != "metadata"} == {k: v for k, v in source.items() if k != "metadata"}
    assert not kinds(render("--set", "crds.install=false"), "CustomResourceDefinition")


@pytest.mark.parametrize("bad", ["nope=1", "config.notASetting=1", "image.pullPolicy=Sometimes", "replicaCount=2",
                                 "watchNamespaces[0]=Not_A_Namespace", "metrics.serviceMonitor.enabeld=true"])
def test_values_schema_refuses_unknown_keys_and_bad_values(bad: str):
    proc = chart.helm("template", "t", str(chart.CHART_DIR), "--kube-version", KUBE_VERSION, "--set", bad, check=False)
    assert proc.returncode != 0, f"--set {bad} was accepted"
    assert "values don't meet the specifications of the schema" in proc.stderr, proc.stderr


@pytest.mark.parametrize("args, message", [
    (["--set", "singleNamespaceInstall=true", "--set", "watchNamespaces[0]=a"], "not both"),
    (["--set", "podDisruptionBudget.enabled=true"], "needs ha.enabled"),
    (["--set", "metrics.enabled=false", "--set", "metrics.prometheusRule.enabled=true"], "needs metrics.enabled"),
])
def test_contradictory_values_fail_with_a_message_saying_why(args: list[str], message: str):
    proc = chart.helm("template", "t", str(chart.CHART_DIR), "--kube-version", KUBE_VERSION, *args, check=False)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr


def test_config_keys_are_exactly_the_operator_settings():
    schema = json.loads(chart.VALUES_SCHEMA.read_text())
    keys = set(schema["properties"]["config"]["properties"])
    wanted = {chart.camel(f) for f in OperatorSettings.model_fields if f not in chart.CHART_MANAGED_SETTINGS}
    assert keys == wanted, "values.schema.json is stale (a setting was added or removed): run `make chart`"


def test_every_config_key_reaches_the_operator_as_its_setting():
    """helm's snakecase must turn each camelCase key back into the setting's own name."""
    schema = json.loads(chart.VALUES_SCHEMA.read_text())["properties"]["config"]["properties"]
    sample = {"string": "x", "integer": "7"}
    args = []
    for key, prop in schema.items():
        if prop["type"] == "object":  # (a number may be a string: `--set` passes floats as strings)
            args += ["--set", f"config.{key}.default=1"]
        else:
            value = prop["enum"][0] if "enum" in prop else sample.get(str(prop["type"]), "7.5")
            args += ["--set-string" if prop["type"] == "string" else "--set", f"config.{key}={value}"]
    env = {e["name"] for e in operator_container(render(*args))["env"]} - {"HOME"}
    assert env == {f"TUNELOOP_{f.upper()}" for f in OperatorSettings.model_fields} - {"TUNELOOP_RAY_AUTH_TOKEN"}


def test_config_becomes_settings_the_operator_reads():
    env = {e["name"]: e.get("value") for e in operator_container(render(
        "--set", "config.mlflowTrackingUri=http://mlflow:5000", "--set", "config.rayjobTtlSeconds=60",
        "--set", "config.gpuPricesUsdPerHour.default=2.5", "--set", "config.pollSeconds=0.5"))["env"]}
    settings = load_settings(env)
    assert settings.mlflow_tracking_uri == "http://mlflow:5000" and settings.rayjob_ttl_seconds == 60
    assert settings.poll_seconds == 0.5 and settings.gpu_prices_usd_per_hour == {"default": 2.5}
    assert str(settings.storage_root) == "/var/lib/tuneloop" and settings.metrics_port == 8080


def test_deployment_is_one_recreated_replica_with_restricted_pod_security():
    docs = render()
    [deployment] = kinds(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    container = operator_container(docs)
    assert container["command"] == ["kopf"]
    assert container["args"][:5] == ["run", "-m", "tuneloop.operator.main", "-m", "tuneloop.operator.noscan"]
    assert "--all-namespaces" in container["args"] and "--standalone" in container["args"]
    assert "--liveness=http://0.0.0.0:8081/healthz" in container["args"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["readOnlyRootFilesystem"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert container["resources"]["requests"]


def test_ha_runs_peered_replicas_each_with_its_own_priority():
    docs = render("--set", "ha.enabled=true")
    [deployment] = kinds(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2 and deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    container = operator_container(docs)
    assert "--standalone" not in container["args"][0] and "--priority=" in container["args"][0]
    assert "/dev/urandom" in container["args"][0]
    [peering] = kinds(docs, "ClusterKopfPeering")
    assert peering["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    assert {d["metadata"]["name"] for d in kinds(docs, "CustomResourceDefinition")} >= {
        "clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"}
    [role] = [r for r in kinds(docs, "ClusterRole") if r["metadata"]["name"] == "tuneloop"]
    assert {"apiGroups": ["kopf.dev"], "resources": ["clusterkopfpeerings"],
            "verbs": ["list", "watch", "patch"]} in role["rules"]


def operator_rules(role: dict) -> list[dict]:
    return role["rules"]


def test_operator_rights_are_least_privilege():
    [role] = [r for r in kinds(render(), "ClusterRole") if r["metadata"]["name"] == "tuneloop"]
    for rule in operator_rules(role):
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"], rule
        assert "secrets" not in rule["resources"] and "pods" not in rule["resources"], rule
        assert not rule.get("resourceNames"), rule
    granted = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
               for v in rule["verbs"]}
    assert ("", "configmaps", "get") not in granted and ("ray.io", "rayjobs", "update") not in granted
    [binding] = kinds(render(), "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "tuneloop", "namespace": "tuneloop-system"}]


def test_single_namespace_install_has_no_cluster_wide_operator_rights():
    docs = render("--set", "singleNamespaceInstall=true", namespace="ml")
    assert not kinds(docs, "ClusterRoleBinding")
    assert {r["metadata"]["name"] for r in kinds(docs, "ClusterRole")} == {"tuneloop-view", "tuneloop-edit"}
    [role] = kinds(docs, "Role")
    assert role["metadata"]["namespace"] == "ml"
    [cluster_role] = [r for r in kinds(render(), "ClusterRole") if r["metadata"]["name"] == "tuneloop"]
    assert role["rules"] == cluster_role["rules"]
    args = operator_container(docs)["args"]
    assert "--namespace=ml" in args and "--all-namespaces" not in args


def test_watch_namespaces_gets_a_role_and_binding_in_each():
    docs = render("--set", "watchNamespaces={team-a,team-b}")
    assert {r["metadata"]["namespace"] for r in kinds(docs, "Role")} == {"team-a", "team-b"}
    assert {(b["metadata"]["namespace"], b["subjects"][0]["namespace"]) for b in kinds(docs, "RoleBinding")} == {
        ("team-a", "tuneloop-system"), ("team-b", "tuneloop-system")}
    args = operator_container(docs)["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args


def test_user_roles_aggregate_into_view_and_edit():
    roles = {r["metadata"]["name"]: r for r in kinds(render(), "ClusterRole")}
    view, edit = roles["tuneloop-view"], roles["tuneloop-edit"]
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert "aggregate-to-view" not in " ".join(edit["metadata"]["labels"])
    assert set(view["rules"][0]["verbs"]) == {"get", "list", "watch"}
    assert not any("status" in r for rule in edit["rules"] for r in rule["resources"]), "users never write status"


def test_prometheus_rule_alerts_only_on_metrics_the_operator_exports():
    docs = render("--set", "metrics.prometheusRule.enabled=true")
    [rule] = kinds(docs, "PrometheusRule")
    sources = sorted(chart.RULES_SOURCES, key=lambda p: p.name)
    assert rule["spec"]["groups"] == [g for p in sources for g in yaml.safe_load(p.read_text())["groups"]]
    assert "{{ $labels.setting }}" in json.dumps(rule["spec"]), "alert templates must reach Prometheus unrendered"
    exported = {m.name for m in Metrics.disabled().registry.collect()}
    for group in rule["spec"]["groups"]:
        for alert in group["rules"]:
            names = set(re.findall(r"\btuneloop_[a-z_]+", alert["expr"]))
            assert names, alert
            for name in names:
                base = re.sub(r"_(bucket|sum|count|total)$", "", name)
                assert base in exported, f"{alert['alert']} reads {name}, which the operator does not export"


def test_the_operator_alerts_pass_promtool_and_each_has_its_runbook_section():
    proc = subprocess.run(["bash", str(chart.REPO_ROOT / "hack" / "get-promtool.sh")], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"could not get promtool:\n{proc.stderr[-2000:]}"
    promtool = proc.stdout.strip().splitlines()[-1]
    source = chart.RULES_SOURCES[0]
    done = subprocess.run([promtool, "check", "rules", str(source)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "SUCCESS: 4 rules found" in done.stdout, done.stdout + done.stderr
    runbook = (chart.REPO_ROOT / "docs" / "runbook.md").read_text()
    anchors = {"#" + line[3:].strip().lower() for line in runbook.splitlines() if line.startswith("## ")}
    for group in yaml.safe_load(source.read_text())["groups"]:
        for alert in group["rules"]:
            url = alert["annotations"]["runbook_url"]
            assert url == f"docs/runbook.md#{alert['alert'].lower()}" and url.split("docs/runbook.md")[1] in anchors
