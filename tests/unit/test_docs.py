"""The reference pages in docs/reference are generated from the models and the settings (`make docs`):
the checked-in pages must match a fresh generation and name every field and setting."""

from __future__ import annotations

from tuneloop.api import crdgen
from tuneloop.devenv import docs
from tuneloop.operator.settings import OperatorSettings, env_name


def test_reference_pages_match_a_fresh_generation():
    for path, text in docs.rendered_files().items():
        assert path.exists() and path.read_text() == text, f"{path} is stale: run `make docs` and commit it"


def _leaves(node, path):
    for name, child in (node.get("properties") or {}).items():
        yield f"{path}.{name}"
        target = child.get("items") if child.get("type") == "array" else child
        if isinstance(target, dict):
            yield from _leaves(target, f"{path}.{name}[]" if child.get("type") == "array" else f"{path}.{name}")


def test_every_field_and_setting_is_documented():
    page = docs.crd_reference()
    for kind in crdgen.KINDS:
        spec = crdgen.openapi_schema(kind["model"])["properties"]["spec"]
        for path in _leaves(spec, "spec"):
            assert f"`{path}`" in page, f"{kind['kind']} {path} is missing from the CRD reference"
    settings = docs.settings_reference()
    for name in OperatorSettings.model_fields:
        assert f"`{env_name(name)}`" in settings


def test_the_architecture_picture_is_drawn_from_its_text_source():
    import xml.dom.minidom

    import yaml

    svg = docs.architecture_svg()
    xml.dom.minidom.parseString(svg)  # well-formed
    spec = yaml.safe_load(docs.ARCHITECTURE.read_text())
    for box in spec["boxes"].values():
        assert f">{box['label']}</text>" in svg.replace("&amp;", "&")
    assert svg.count("<line ") == len(spec["arrows"])
