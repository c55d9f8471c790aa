"""The Helm chart's generated parts and the helm CLI: `make chart` (python -m tuneloop.devenv.chart).

`charts/tuneloop/templates/crds/` holds the CRDs of `crds/` wrapped as templates (installed unless
`crds.install=false`, kept on uninstall by `helm.sh/resource-policy: keep`, labelled like the rest of
the release); `charts/tuneloop/files/rules/` holds the Prometheus rule files of `monitoring/` (the
operator's, and the model/retrain alerts); `values.schema.json`'s `config` part lists the operator's
settings; `examples/gitops/argocd-cm.yaml` carries the Argo CD health checks. All are checked in and
a test fails when they drift from their sources. `helm()` runs the helm built from the Go module
proxy by hack/build-helm.sh (cached outside the repo).
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[4]
CHART_DIR = REPO_ROOT / "charts" / "tuneloop"
CRD_SOURCE_DIR = REPO_ROOT / "crds"
CRD_TEMPLATE_DIR = CHART_DIR / "templates" / "crds"
# Prometheus rule files the chart's PrometheusRule ships (their groups, in this order).
RULES_SOURCES = (REPO_ROOT / "monitoring" / "prometheus" / "tuneloop-operator.rules.yaml",
                 REPO_ROOT / "monitoring" / "prometheus-rules.yaml")
RULES_DIR = CHART_DIR / "files" / "rules"
HEALTH_DIR = REPO_ROOT / "argocd" / "resource_customizations"
ARGOCD_CM = REPO_ROOT / "examples" / "gitops" / "argocd-cm.yaml"
VALUES_SCHEMA = CHART_DIR / "values.schema.json"
# Operator settings the chart sets from other values (storage, metrics, ha, rayAuthToken), not from `config`.
CHART_MANAGED_SETTINGS = frozenset({"storage_root", "metrics_port", "peering_name", "ray_auth_token"})
KEEP_ANNOTATION = "helm.sh/resource-policy"


class ChartError(RuntimeError):
    """A chart source cannot be turned into a template, or helm failed; the message says which."""


def crd_template(source: Path) -> str:
    """One CRD file as a chart template: its metadata becomes the release's labels plus `keep`,
    everything below `spec:` is copied byte for byte."""
    text = source.read_text()
    if "{{" in text or "}}" in text:
        raise ChartError(f"{source}: contains '{{{{' or '}}}}', which helm would read as a template action; "
                         "escape it in the model's description")
    crd = yaml.safe_load(text)
    if set(crd["metadata"]) - {"name", "labels"}:
        raise ChartError(f"{source}: metadata has {sorted(crd['metadata'])}; the chart template knows only "
                         "name and labels — extend tuneloop.devenv.chart.crd_template")
    lines = text.splitlines(keepends=True)
    start = lines.index("metadata:\n")
    end = next(i for i in range(start + 1, len(lines)) if not lines[i].startswith((" ", "\n")))
    body = [line for line in lines[:start] if not line.startswith("#")]
    metadata = (
        "metadata:\n"
        f"  name: {crd['metadata']['name']}\n"
        "  labels:\n"
        '    {{- include "tuneloop.labels" . | nindent 4 }}\n'
        "  annotations:\n"
        "    # helm uninstall must not delete every FineTune in the cluster with the CRD.\n"
        f"    {KEEP_ANNOTATION}: keep\n"
    )
    return (
        f"{{{{- /* generated from crds/{source.name} by `make chart` — do not edit */}}}}\n"
        "{{- if .Values.crds.install }}\n"
        + "".join(body) + metadata + "".join(lines[end:])
        + "{{- end }}\n"
    )


def rendered_files() -> dict[Path, str]:
    """Every file `make chart` writes, with its content."""
    files = {CRD_TEMPLATE_DIR / p.name: crd_template(p) for p in sorted(CRD_SOURCE_DIR.glob("*.yaml"))}
    for source in RULES_SOURCES:
        files[RULES_DIR / source.name] = (
            f"# copied from {source.relative_to(REPO_ROOT)} by `make chart` — do not edit\n" + source.read_text())
    files[ARGOCD_CM] = argocd_cm()
    files[VALUES_SCHEMA] = values_schema()
    return files


def camel(field: str) -> str:
    head, *rest = field.split("_")
    return head + "".join(word.capitalize() for word in rest)


# `helm --set x=0.5` passes the float as a string (only integers and booleans are converted), so a
# number may also be written as a string of digits; the operator parses and checks it either way.
NUMBER = {"type": ["number", "string"], "pattern": r"^[0-9]+(\.[0-9]+)?$", "minimum": 0}


def config_schema() -> dict[str, dict]:
    """values.schema.json's `config` properties: one per operator setting (TUNELOOP_<NAME>), typed."""
    from tuneloop.operator.settings import OperatorSettings, env_name

    out: dict[str, dict] = {}
    for name, field in OperatorSettings.model_fields.items():
        if name in CHART_MANAGED_SETTINGS:
            continue
        schema = OperatorSettings.model_json_schema()["properties"][name]
        types = {s.get("type") for s in schema.get("anyOf", [schema])} - {None, "null"}
        prop: dict = {"description": f"{env_name(name)}: {field.description}"}
        if types == {"object"}:
            prop |= {"type": "object", "additionalProperties": NUMBER}
        elif types == {"integer"}:
            prop["type"] = "integer"
        elif types == {"number"}:
            prop |= NUMBER
        else:
            prop["type"] = "string"
        if "enum" in schema:
            prop["enum"] = schema["enum"]
        out[camel(name)] = prop
    return out


def values_schema() -> str:
    """The checked-in schema with its `config` part regenerated from the operator's settings."""
    schema = json.loads(VALUES_SCHEMA.read_text())
    schema["properties"]["config"]["properties"] = config_schema()
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def health_checks() -> dict[str, Path]:
    """`<group>_<Kind>` (argocd-cm's key suffix) -> that kind's health.lua."""
    return {f"{p.parent.parent.name}_{p.parent.name}": p for p in sorted(HEALTH_DIR.glob("*/*/health.lua"))}


def argocd_cm() -> str:
    """The argocd-cm patch carrying every health check, each script copied verbatim."""
    out = [
        "# generated from argocd/resource_customizations/*/*/health.lua by `make chart` — do not edit.\n",
        "# Merge into Argo CD's argocd-cm (kustomization.yaml here does), then Argo CD reports the health\n",
        "# of FineTunes, ModelDeployments, RayJobs and RayServices instead of leaving them without one.\n",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: argocd-cm\n  namespace: argocd\n",
        "  labels:\n    app.kubernetes.io/name: argocd-cm\n    app.kubernetes.io/part-of: argocd\ndata:\n",
    ]
    for key, path in health_checks().items():
        out.append(f"  resource.customizations.health.{key}: |\n")
        out.extend(f"    {line}" if line.strip() else "\n" for line in path.read_text().splitlines(keepends=True))
    return "".join(out)


def sync() -> list[Path]:
    """Write the generated files; remove CRD templates whose source is gone. Returns what changed."""
    changed = []
    wanted = rendered_files()
    for stale in (set(CRD_TEMPLATE_DIR.glob("*.yaml")) | set(RULES_DIR.glob("*.yaml"))) - set(wanted):
        stale.unlink()
        changed.append(stale)
    for path, text in wanted.items():
        if not path.exists() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            changed.append(path)
    return changed


@functools.cache
def helm_binary() -> Path:
    """hack/build-helm.sh's binary (built once from the Go module proxy, then cached)."""
    proc = subprocess.run(["bash", str(REPO_ROOT / "hack" / "build-helm.sh")], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ChartError(f"hack/build-helm.sh failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(helm_binary()), *args], capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise ChartError(f"helm {' '.join(args)} failed (exit {proc.returncode}):\n{proc.stderr.strip()}")
    return proc


def template(kube_version: str, *args: str, release: str = "tuneloop",
             namespace: str = "tuneloop-system") -> list[dict]:
    """`helm template` of the chart: the rendered objects (empty documents dropped)."""
    out = helm("template", release, str(CHART_DIR), "--namespace", namespace, "--kube-version", kube_version,
               *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def main() -> int:
    for path in sync():
        print(f"wrote {path.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
