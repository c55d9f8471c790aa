"""The SRE side of the loop: monitoring/prometheus-rules.yaml passes the real promtool (`check rules` and
the alert cases in prometheus-rules.test.yaml), every metric an alert or a dashboard panel names is one
the operator exports, and every alert has its runbook section. promtool is fetched by
hack/get-promtool.sh (Debian's pinned prometheus package, cached outside the repo) — a fetch that fails
fails these tests."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tuneloop.operator.metrics import Metrics

ROOT = Path(__file__).resolve().parents[3]
RULES = ROOT / "monitoring" / "prometheus-rules.yaml"
RULE_TESTS = ROOT / "monitoring" / "prometheus-rules.test.yaml"
DASHBOARD = ROOT / "monitoring" / "grafana-dashboard.json"
RUNBOOK = ROOT / "monitoring" / "RUNBOOK.md"
ALERTS = {"ModelDriftDetected", "ModelQualityBelowThreshold", "RetrainFailed", "MonitorStale", "RetrainStorm"}


@pytest.fixture(scope="module")
def promtool() -> str:
    done = subprocess.run(["bash", str(ROOT / "hack" / "get-promtool.sh")], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, f"could not get promtool:\n{done.stderr[-2000:]}"
    return done.stdout.strip().splitlines()[-1]


def _run(promtool: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_promtool_checks_the_rules(promtool: str) -> None:
    done = _run(promtool, "check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 5 rules found" in done.stdout


def test_each_alert_fires_on_its_case_and_not_on_its_neighbour(promtool: str) -> None:
    done = _run(promtool, "test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_refuses_a_broken_rule(promtool: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("groups: [{name: g, rules: [{alert: A, expr: 'sum by (x (tuneloop_deployment_quality)'}]}]\n")
    assert _run(promtool, "check", "rules", str(bad)).returncode != 0


def exported_names() -> set[str]:
    """Every sample name the operator's registry can expose."""
    suffixes = {"gauge": [""], "counter": ["_total", "_created"],
                "histogram": ["_bucket", "_sum", "_count", "_created"]}
    return {f.name + s for f in Metrics.disabled().registry.collect() for s in suffixes[f.type]}


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right",
             "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers outside label matchers, ranges and
    grouping lists that are not keywords or function calls."""
    text = _LABEL_LISTS.sub(" ", _RANGES.sub(" ", _MATCHERS.sub(" ", _STRINGS.sub(" ", expr))))
    return {m.group() for m in _IDENT.finditer(text)
            if m.group().lower() not in _KEYWORDS and not text[m.end():].lstrip().startswith("(")
            and not (m.start() and (text[m.start() - 1].isdigit() or text[m.start() - 1] == "."))}


@pytest.mark.parametrize(("expr", "names"), [
    ('max by (namespace, deployment) (tuneloop_a{x="y"}) >= 0.5', {"tuneloop_a"}),
    ('sum by (o) (increase(tuneloop_b_total{o="f(x)"}[6h])) > 0', {"tuneloop_b_total"}),
    ("time() - max without (pod) (tuneloop_c) > 3 * 3600 and on (ns) up", {"tuneloop_c", "up"}),
    ("rate(x_bucket[5m]) / ignoring(le) group_left y offset 1h", {"x_bucket", "y"}),
    ("1e3 < bool tuneloop_d", {"tuneloop_d"}),
])
def test_metric_names_are_read_from_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def _alerts() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r]


def test_every_metric_an_alert_names_is_exported_by_the_operator() -> None:
    exported = exported_names()
    assert {a["alert"] for a in _alerts()} == ALERTS
    for alert in _alerts():
        names = metric_names(alert["expr"])
        assert names, alert["alert"]
        assert names <= exported, f"{alert['alert']} names {sorted(names - exported)}, not in operator metrics"


def test_the_name_check_can_fail() -> None:
    assert not metric_names("max(tuneloop_deployment_drift_shares) > 0.5") <= exported_names()


def test_every_dashboard_panel_queries_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exported = exported_names()
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 6
    shown = set()
    for expr in exprs:
        names = metric_names(expr.replace("$namespace", "x").replace("$deployment", "x"))
        assert names and names <= exported, expr
        shown |= names
    # Drift, quality, breaches, retrains and staleness are all on the dashboard.
    assert {"tuneloop_deployment_drift_share", "tuneloop_deployment_quality",
            "tuneloop_deployment_consecutive_breaches", "tuneloop_retrains_total",
            "tuneloop_monitor_last_success_timestamp_seconds"} <= shown
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"datasource", "namespace", "deployment"}


def test_every_alert_has_a_runbook_section() -> None:
    headings = {line[3:].strip() for line in RUNBOOK.read_text().splitlines() if line.startswith("## ")}
    for alert in _alerts():
        assert alert["alert"] in headings
        assert alert["annotations"]["runbook_url"] == f"monitoring/RUNBOOK.md#{alert['alert'].lower()}"
        assert alert["labels"]["severity"] in {"info", "warning", "critical"}
