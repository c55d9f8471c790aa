"""Generate the CustomResourceDefinitions in `crds/` from the API models.

pydantic emits JSON Schema 2020-12; a CRD wants a structural OpenAPI v3.0 schema. The translation
inlines `$ref`s, drops the `null` branch of optional fields (the apiserver prunes nulls for
non-nullable fields before defaulting), maps `int | str` to `x-kubernetes-int-or-string`, turns
numeric `exclusiveMinimum` into the v3.0 boolean form, maps `dict[str, Any]` to
`x-kubernetes-preserve-unknown-fields`, and sets `default: {}` on all-optional sub-objects so the
apiserver fills nested defaults (they show in `kubectl get -o yaml`). CEL rules come from each
model's `json_schema_extra`. Run `python -m tuneloop.api.crdgen crds/` (or `make crds`).
"""

from __future__ import annotations

import copy
import sys
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from tuneloop.api import constants
from tuneloop.api.deployment import ModelDeployment
from tuneloop.api.finetune import FineTune

HEADER = "# generated — do not edit. Source: operator/src/tuneloop/api (run `make crds`).\n"

READY_REASON = '.status.conditions[?(@.type=="Ready")].reason'

KINDS: list[dict[str, Any]] = [
    {
        "model": FineTune,
        "kind": constants.FINETUNE_KIND,
        "plural": constants.FINETUNE_PLURAL,
        "singular": "finetune",
        "short": [constants.FINETUNE_SHORT],
        "columns": [
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Model", "type": "string", "jsonPath": ".spec.registry.modelName"},
            {"name": "Version", "type": "string", "jsonPath": ".status.model.version"},
            {"name": "Alias", "type": "string", "jsonPath": ".status.model.alias"},
            {"name": "Run", "type": "integer", "jsonPath": ".status.run.number", "priority": 1},
            {"name": "Reason", "type": "string", "jsonPath": READY_REASON},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    },
    {
        "model": ModelDeployment,
        "kind": constants.DEPLOYMENT_KIND,
        "plural": constants.DEPLOYMENT_PLURAL,
        "singular": "modeldeployment",
        "short": [constants.DEPLOYMENT_SHORT],
        "columns": [
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Model", "type": "string", "jsonPath": ".spec.model.name"},
            {"name": "Version", "type": "string", "jsonPath": ".status.servedVersion"},
            {"name": "Alias", "type": "string", "jsonPath": ".spec.model.alias"},
            {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint"},
            {"name": "Drift", "type": "number", "jsonPath": ".status.lastMonitor.driftShare", "priority": 1},
            {"name": "Reason", "type": "string", "jsonPath": READY_REASON},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    },
]


class SchemaError(ValueError):
    """The models produced a schema construct a CRD cannot express."""


def _resolve(node: Any, defs: dict[str, Any], path: str) -> Any:
    if isinstance(node, list):
        return [_resolve(n, defs, f"{path}[{i}]") for i, n in enumerate(node)]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        target = copy.deepcopy(defs[node.pop("$ref").rsplit("/", 1)[-1]])
        target.update(node)  # sibling keys (a field's description, default) override the model's
        node = target
    if "anyOf" in node:
        branches = [_resolve(b, defs, path) for b in node.pop("anyOf") if b.get("type") != "null"]
        types_ = sorted(b.get("type", "") for b in branches)
        if len(branches) == 1:
            merged = dict(branches[0])
            merged.update(node)
            node = merged
        elif types_ == ["integer", "string"]:
            pattern = next((b.get("pattern") for b in branches if "pattern" in b), None)
            node["x-kubernetes-int-or-string"] = True
            if pattern:
                node["pattern"] = pattern
        else:
            raise SchemaError(f"{path}: a CRD cannot express anyOf {types_}")
        if node.get("default", 0) is None:
            node.pop("default")
    for bound, flag in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(node.get(bound), int | float) and not isinstance(node.get(bound), bool):
            node[flag] = node.pop(bound)
            node[bound] = True
    if "const" in node:
        node["enum"] = [node.pop("const")]
    node.pop("title", None)
    if node.get("additionalProperties") is True or (
        node.get("type") == "object" and node.get("additionalProperties") == {}
    ):
        node.pop("additionalProperties")
        node["x-kubernetes-preserve-unknown-fields"] = True
    for key in ("properties",):
        if key in node:
            node[key] = {k: _resolve(v, defs, f"{path}.{k}") for k, v in node[key].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            node[key] = _resolve(node[key], defs, f"{path}.{key}")
    return node


def _model_of(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """(model class, is a list) for an annotation like M, M | None, list[M]."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _model_of(args[0]) if len(args) == 1 else (None, False)
    if origin is list:
        inner, _ = _model_of(typing.get_args(annotation)[0])
        return inner, True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    return None, False


def _all_optional(model: type[BaseModel]) -> bool:
    return all(not f.is_required() for f in model.model_fields.values())


def _apply_object_defaults(model: type[BaseModel], schema: dict[str, Any]) -> None:
    """`default: {}` on all-optional sub-objects built by default_factory, recursively."""
    props = schema.get("properties", {})
    for name, field in model.model_fields.items():
        prop = props.get(field.alias or name)
        sub, is_list = _model_of(field.annotation)
        if prop is None or sub is None:
            continue
        child: type[BaseModel] = sub
        if is_list:
            _apply_object_defaults(child, prop.get("items", {}))
            continue
        factory: Any = field.default_factory
        if factory is child and _all_optional(child):
            prop["default"] = {}
        _apply_object_defaults(child, prop)


def _check_descriptions(node: dict[str, Any], path: str) -> None:
    for name, prop in node.get("properties", {}).items():
        if path.count(".") == 0 and name == "metadata":
            continue
        if not prop.get("description"):
            raise SchemaError(f"{path}.{name} has no description (it becomes `kubectl explain` text)")
        _check_descriptions(prop, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        _check_descriptions(node["items"], f"{path}[]")


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural openAPIV3Schema for a kind's top-level model."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema = _resolve(raw, defs, model.__name__)
    _apply_object_defaults(model, schema)
    props = schema["properties"]
    props["apiVersion"] = {"type": "string", "description": "API version: tuneloop.io/v1alpha1."}
    props["kind"] = {"type": "string", "description": f"Kind: {model.__name__}."}
    props["metadata"] = {"type": "object"}  # the apiserver allows nothing else here
    for key in ("apiVersion", "kind"):
        props[key].pop("default", None)
    schema["required"] = ["spec"]
    _check_descriptions(schema, model.__name__)
    return schema


def build_crd(entry: dict[str, Any]) -> dict[str, Any]:
    """A complete apiextensions.k8s.io/v1 CustomResourceDefinition for one kind."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{entry['plural']}.{constants.GROUP}",
            "labels": {"app.kubernetes.io/part-of": "tuneloop"},
        },
        "spec": {
            "group": constants.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": entry["kind"],
                "listKind": f"{entry['kind']}List",
                "plural": entry["plural"],
                "singular": entry["singular"],
                "shortNames": entry["short"],
                "categories": [constants.CATEGORY],
            },
            "versions": [
                {
                    "name": constants.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": entry["columns"],
                    "schema": {"openAPIV3Schema": openapi_schema(entry["model"])},
                }
            ],
        },
    }


def render_all() -> dict[str, str]:
    """File name -> YAML text for every CRD."""
    out = {}
    for entry in KINDS:
        crd = build_crd(entry)
        out[f"{crd['metadata']['name']}.yaml"] = HEADER + yaml.safe_dump(crd, sort_keys=False, width=120)
    return out


def main(argv: list[str] | None = None) -> int:
    """Write every CRD into the folder given (default `crds`)."""
    args = sys.argv[1:] if argv is None else argv
    target = Path(args[0] if args else "crds")
    target.mkdir(parents=True, exist_ok=True)
    for name, text in render_all().items():
        (target / name).write_text(text)
        print(f"wrote {target / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
