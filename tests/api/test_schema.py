"""The generated CRDs on a real kube-apiserver: examples apply, bad specs are refused at apply time
with the field named, defaults and pruning behave, the status subresource guards spec."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tuneloop.api.deployment import ModelDeploymentSpec
from tuneloop.api.finetune import FineTuneSpec

pytestmark = pytest.mark.apiserver

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.yaml"))
INVALID = sorted((Path(__file__).parent / "invalid").glob("*.yaml"))

MINIMAL_FT = """
apiVersion: tuneloop.io/v1alpha1
kind: FineTune
metadata: {name: minimal}
spec:
  baseModel: {uri: "file:///models/tiny"}
  dataset: {uri: "file:///data/train.jsonl"}
  registry: {modelName: tiny}
"""


def _expected_field(path: Path) -> str:
    for line in path.read_text().splitlines():
        if line.startswith("# expect-field:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"{path.name} has no '# expect-field:' header")


def test_invalid_corpus_is_large_enough():
    assert len(INVALID) >= 15


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_applies_server_side(control_plane, namespace, path):
    control_plane.kubectl("apply", "--server-side", "-n", namespace, "-f", str(path))
    doc = yaml.safe_load(path.read_text())
    got = json.loads(
        control_plane.kubectl("get", doc["kind"], doc["metadata"]["name"], "-n", namespace, "-o", "json").stdout
    )
    stored, given = got["spec"], doc["spec"]
    assert _without_defaults(stored, given) == given  # what the manifest says is stored as it says it
    # ...and every field it leaves out that the apiserver fills gets the model's default (list
    # defaults are the model's alone: see test_defaults_are_filled_by_the_apiserver).
    model = {"FineTune": FineTuneSpec, "ModelDeployment": ModelDeploymentSpec}[doc["kind"]]
    expected = model.model_validate(given).model_dump(mode="json", by_alias=True, exclude_none=True)
    filled = {k: v for k, v in stored.items() if k not in given}
    assert filled, f"{path.name}: the apiserver filled no default"
    for key, value in filled.items():
        assert key in expected and _without_defaults(expected[key], value) == value, (
            f"{path.name}: spec.{key} defaulted to {value!r}, the model says {expected.get(key)!r}")


def _without_defaults(stored: object, given: object) -> object:
    """`stored` cut down to the keys `given` has, recursively (the defaults the apiserver added go)."""
    if isinstance(stored, dict) and isinstance(given, dict):
        return {k: _without_defaults(stored[k], given[k]) for k in given if k in stored}
    return stored


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_manifest_is_refused_naming_the_field(control_plane, namespace, path):
    field = _expected_field(path)
    proc = control_plane.kubectl("apply", "--server-side", "-n", namespace, "-f", str(path), check=False)
    assert proc.returncode != 0, f"{path.name} was accepted"
    assert "is invalid" in proc.stderr, proc.stderr
    assert field in proc.stderr, f"refusal of {path.name} does not name {field}: {proc.stderr}"
    doc = yaml.safe_load(path.read_text())
    missing = control_plane.kubectl("get", doc["kind"], doc["metadata"]["name"], "-n", namespace, check=False)
    assert missing.returncode != 0


def test_defaults_are_filled_by_the_apiserver(control_plane, namespace):
    control_plane.kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input_text=MINIMAL_FT)
    spec = json.loads(control_plane.kubectl("get", "ft", "minimal", "-n", namespace, "-o", "json").stdout)["spec"]
    assert spec["method"] == "lora"
    assert spec["lora"] == {"rank": 8, "alpha": 16, "dropout": 0.05}  # list defaults come from the models
    assert spec["dataset"]["evalFraction"] == 0.1
    assert spec["training"]["epochs"] == 3
    assert spec["resources"]["workers"] == 1 and spec["resources"]["gpus"] == 0
    assert spec["ray"]["mode"] == "RayJob"
    assert spec["evaluation"]["promotion"]["metric"] == "exact_match"
    assert spec["backoffLimit"] == 2 and spec["suspend"] is False


def test_unknown_fields_are_pruned(control_plane, namespace):
    doc = yaml.safe_load(MINIMAL_FT)
    doc["metadata"]["name"] = "pruned"
    doc["spec"]["notAField"] = "dropped"
    doc["spec"]["dataset"]["alsoNot"] = 1
    # --validate=ignore: kubectl would otherwise refuse unknown fields before pruning could happen
    control_plane.kubectl("apply", "--validate=ignore", "-n", namespace, "-f", "-", input_text=yaml.safe_dump(doc))
    spec = json.loads(control_plane.kubectl("get", "ft", "pruned", "-n", namespace, "-o", "json").stdout)["spec"]
    assert "notAField" not in spec
    assert "alsoNot" not in spec["dataset"]
    assert spec["dataset"]["uri"] == "file:///data/train.jsonl"


def test_status_subresource_keeps_status_and_ignores_spec(control_plane, namespace):
    control_plane.kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input_text=MINIMAL_FT)
    patch = {
        "spec": {"method": "full"},
        "status": {
            "phase": "Running",
            "observedGeneration": 1,
            "unmodelled": "pruned",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": "Training",
                    "message": "epoch 1/3",
                    "lastTransitionTime": "2026-11-22T00:00:00Z",
                }
            ],
        },
    }
    control_plane.kubectl(
        "patch", "ft", "minimal", "-n", namespace, "--subresource=status", "--type=merge", "-p", json.dumps(patch)
    )
    got = json.loads(control_plane.kubectl("get", "ft", "minimal", "-n", namespace, "-o", "json").stdout)
    assert got["status"]["phase"] == "Running"
    assert got["status"]["conditions"][0]["reason"] == "Training"
    assert "unmodelled" not in got["status"]
    assert got["spec"]["method"] == "lora", "a spec change through /status must be ignored"
    # and a spec write through the main resource does not touch status
    control_plane.kubectl(
        "patch",
        "ft",
        "minimal",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"suspend": True}, "status": {"phase": "Failed"}}),
    )
    got = json.loads(control_plane.kubectl("get", "ft", "minimal", "-n", namespace, "-o", "json").stdout)
    assert got["spec"]["suspend"] is True
    assert got["status"]["phase"] == "Running"
    # printer columns read status
    table = control_plane.kubectl("get", "ft", "minimal", "-n", namespace).stdout
    assert table.split()[:7] == ["NAME", "PHASE", "MODEL", "VERSION", "ALIAS", "REASON", "AGE"]
    assert "Running" in table and "Training" in table


def test_kubectl_explain_shows_field_descriptions(control_plane):
    out = control_plane.kubectl("explain", "finetune.spec.dataset").stdout
    assert "Training data and its preparation." in out
    assert "evalFraction" in out and "Share of examples held out for evaluation" in out
    out = control_plane.kubectl("explain", "modeldeployment.spec.retraining.approval").stdout
    assert "tuneloop.io/approve-retrain" in out


def test_short_names_and_category(control_plane, namespace):
    control_plane.kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input_text=MINIMAL_FT)
    assert "minimal" in control_plane.kubectl("get", "ft", "-n", namespace).stdout
    assert "minimal" in control_plane.kubectl("get", "tuneloop", "-n", namespace).stdout
    assert control_plane.kubectl("get", "mdep", "-n", namespace).returncode == 0


def test_restricted_credential_is_denied_without_rbac(control_plane, namespace):
    proc = control_plane.kubectl("get", "ft", "-n", namespace, context="restricted", check=False)
    assert proc.returncode != 0
    assert "forbidden" in proc.stderr.lower()
    assert 'User "restricted"' in proc.stderr


# --- printer columns: the values, as the apiserver's Table output computes them ----------------------


def _table(api_client, namespace: str, plural: str, name: str) -> dict[str, object]:
    """GET the object as a meta.k8s.io Table (what kubectl prints); column name -> (cell, priority)."""
    from tuneloop.api import constants

    method, url, headers, body, _ = api_client.param_serialize(
        "GET", f"/apis/{constants.GROUP}/{constants.VERSION}/namespaces/{namespace}/{plural}/{name}",
        header_params={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}, auth_settings=["BearerToken"])
    response = api_client.call_api(method, url, header_params=headers, body=body)
    response.read()
    table = json.loads(response.data)
    assert table["kind"] == "Table", table
    [row] = table["rows"]
    columns = table["columnDefinitions"]
    return {c["name"]: (cell, c.get("priority", 0)) for c, cell in zip(columns, row["cells"], strict=True)}


def _write_status(control_plane, namespace: str, kind: str, name: str, status: dict) -> None:
    control_plane.kubectl("patch", kind, name, "-n", namespace, "--subresource=status", "--type=merge",
                          "-p", json.dumps({"status": status}))


def test_finetune_printer_columns_show_the_status_the_operator_writes(control_plane, api_client, namespace):
    """Each column's value, from a status shaped by the API model (so a renamed status field breaks the
    column here, not silently in `kubectl get`). Ready is not the first condition and the others carry
    other reasons: the Reason column must pick Ready's."""
    from tuneloop.api.finetune import FineTuneStatus

    control_plane.kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input_text=MINIMAL_FT)
    status = FineTuneStatus.model_validate({
        "phase": "Succeeded", "observedGeneration": 1,
        "conditions": [
            {"type": "Succeeded", "status": "True", "reason": "Registered", "message": "v7",
             "lastTransitionTime": "2026-11-22T00:00:00Z"},
            {"type": "Ready", "status": "True", "reason": "Promoted", "message": "champion",
             "lastTransitionTime": "2026-11-22T00:00:00Z"},
            {"type": "Failed", "status": "False", "reason": "NoFailure", "message": "",
             "lastTransitionTime": "2026-11-22T00:00:00Z"}],
        "run": {"number": 3, "generation": 1, "attempt": 2},
        "model": {"name": "tiny", "version": "7", "alias": "champion"},
    }).to_k8s()
    _write_status(control_plane, namespace, "ft", "minimal", status)
    cols = _table(api_client, namespace, "finetunes", "minimal")
    assert {k: v for k, v in cols.items() if k not in ("Name", "Age")} == {
        "Phase": ("Succeeded", 0), "Model": ("tiny", 0), "Version": ("7", 0), "Alias": ("champion", 0),
        "Run": (3, 1), "Reason": ("Promoted", 0)}
    # kubectl shows the priority-1 column (Run) only with -o wide, as the demo's summary uses it
    plain = control_plane.kubectl("get", "ft", "minimal", "-n", namespace).stdout.splitlines()
    wide = control_plane.kubectl("get", "ft", "minimal", "-n", namespace, "-o", "wide").stdout.splitlines()
    assert plain[1].split()[:6] == ["minimal", "Succeeded", "tiny", "7", "champion", "Promoted"]
    assert wide[0].split()[:7] == ["NAME", "PHASE", "MODEL", "VERSION", "ALIAS", "RUN", "REASON"]
    assert wide[1].split()[:7] == ["minimal", "Succeeded", "tiny", "7", "champion", "3", "Promoted"]


def test_modeldeployment_printer_columns_show_the_status_the_operator_writes(control_plane, api_client, namespace):
    from tuneloop.api.deployment import ModelDeploymentStatus

    manifest = {"apiVersion": "tuneloop.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "inv"},
                "spec": {"model": {"name": "invoices-extractor", "alias": "champion"}}}
    control_plane.kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input_text=json.dumps(manifest))
    status = ModelDeploymentStatus.model_validate({
        "phase": "Degraded", "observedGeneration": 1,
        "conditions": [
            {"type": "RollingOut", "status": "False", "reason": "CandidateUnhealthy", "message": "v5",
             "lastTransitionTime": "2026-11-22T00:00:00Z"},
            {"type": "Ready", "status": "True", "reason": "Serving", "message": "v4",
             "lastTransitionTime": "2026-11-22T00:00:00Z"}],
        "servedVersion": "4", "endpoint": "http://127.0.0.1:8000/ns/inv",
        "lastMonitor": {"time": "2026-11-22T00:00:00Z", "samples": 120, "driftShare": 0.25},
    }).to_k8s()
    _write_status(control_plane, namespace, "mdep", "inv", status)
    cols = _table(api_client, namespace, "modeldeployments", "inv")
    assert {k: v for k, v in cols.items() if k not in ("Name", "Age")} == {
        "Phase": ("Degraded", 0), "Model": ("invoices-extractor", 0), "Version": ("4", 0),
        "Alias": ("champion", 0), "Endpoint": ("http://127.0.0.1:8000/ns/inv", 0), "Drift": (0.25, 1),
        "Reason": ("Serving", 0)}
