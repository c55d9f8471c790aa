"""The CRDs are generated from the models: the checked-in YAML must match a fresh generation, and the
translation to a structural schema keeps the properties a CRD needs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import Field

from tuneloop.api import crdgen
from tuneloop.api.base import ApiModel
from tuneloop.api.deployment import ModelDeployment
from tuneloop.api.finetune import FineTune

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_checked_in_crds_match_a_fresh_generation():
    rendered = crdgen.render_all()
    on_disk = {p.name: p.read_text() for p in (REPO_ROOT / "crds").glob("*.yaml")}
    assert set(rendered) == set(on_disk), "crds/ has extra or missing files: run `make crds`"
    for name, text in rendered.items():
        assert on_disk[name] == text, f"crds/{name} is stale: run `make crds` and commit the result"


def _walk(node, path=""):
    yield path, node
    for key, child in node.get("properties", {}).items():
        yield from _walk(child, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")


@pytest.mark.parametrize("model", [FineTune, ModelDeployment])
def test_schema_is_structural(model):
    schema = crdgen.openapi_schema(model)
    for path, node in _walk(schema):
        assert "$ref" not in node and "anyOf" not in node and "title" not in node, path
        assert node.get("default", "") is not None, f"{path}: a null default would be pruned"
        assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{path} has no type"
        if path.count(".") and not path.endswith((".metadata", "[]")):
            assert node.get("description"), f"{path} has no description"


def test_generated_header_and_names():
    text = crdgen.render_all()["finetunes.tuneloop.io.yaml"]
    assert text.startswith("# generated — do not edit")
    crd = yaml.safe_load(text)
    assert crd["spec"]["names"]["shortNames"] == ["ft"]
    assert crd["spec"]["names"]["categories"] == ["tuneloop"]
    assert crd["spec"]["versions"][0]["subresources"] == {"status": {}}


def test_exclusive_bounds_use_the_openapi_v3_boolean_form():
    spec = crdgen.openapi_schema(FineTune)["properties"]["spec"]["properties"]
    frac = spec["dataset"]["properties"]["evalFraction"]
    assert frac["minimum"] == 0 and frac["exclusiveMinimum"] is True and frac["maximum"] == 0.5


def test_all_optional_sub_objects_default_to_empty_so_nested_defaults_apply():
    spec = crdgen.openapi_schema(FineTune)["properties"]["spec"]["properties"]
    assert spec["lora"]["default"] == {}
    assert spec["evaluation"]["properties"]["promotion"]["default"] == {}
    assert "default" not in spec["dataset"]  # dataset.uri is required: no accidental default


def test_int_or_string_quantities_keep_their_pattern():
    res = crdgen.openapi_schema(FineTune)["properties"]["spec"]["properties"]["resources"]["properties"]
    assert res["cpu"]["x-kubernetes-int-or-string"] is True
    assert "pattern" in res["cpu"]


def test_free_form_maps_preserve_unknown_fields():
    ray = crdgen.openapi_schema(FineTune)["properties"]["spec"]["properties"]["ray"]["properties"]
    assert ray["runtimeEnv"]["x-kubernetes-preserve-unknown-fields"] is True
    assert "additionalProperties" not in ray["runtimeEnv"]


def test_conditions_are_a_map_list_keyed_by_type():
    status = crdgen.openapi_schema(FineTune)["properties"]["status"]["properties"]
    assert status["conditions"]["x-kubernetes-list-type"] == "map"
    assert status["conditions"]["x-kubernetes-list-map-keys"] == ["type"]


def test_missing_description_is_an_error():
    class Undocumented(ApiModel):
        """Has a field without a description."""

        spec: int = Field(default=1)

    with pytest.raises(crdgen.SchemaError, match="no description"):
        crdgen.openapi_schema(Undocumented)


def test_unsupported_union_is_an_error():
    class Mixed(ApiModel):
        """Unions other than int|str cannot be expressed structurally."""

        spec: int | list[int] = Field(default=1, description="bad")

    with pytest.raises(crdgen.SchemaError, match="anyOf"):
        crdgen.openapi_schema(Mixed)


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "examples").glob("*.yaml")), ids=lambda p: p.stem)
def test_examples_parse_into_the_models(path):
    doc = yaml.safe_load(path.read_text())
    model = {"FineTune": FineTune, "ModelDeployment": ModelDeployment}[doc["kind"]]
    obj = model.model_validate(doc)
    assert obj.to_k8s()["spec"]
