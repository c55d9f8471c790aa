"""When the job scores the current champion on its own held-out set (jobs.champion): only an adapter on the
same base, and only when the champion's figures were taken on another set."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuneloop.api import constants
from tuneloop.jobs import champion

BASE = "file:///models/base"
NEW, OLD = "n" * 64, "o" * 64


def tags(dataset_hash: str = OLD, method: str = "lora", base: str = BASE) -> dict[str, str]:
    return {constants.TAG_DATASET_HASH: dataset_hash, constants.TAG_METHOD: method, constants.TAG_BASE_MODEL: base}


CASES = {
    # (champion's tags, its pyfunc model_config, this run's method) -> why not (None: score it)
    "lora champion on another set, same base": (tags(), {"method": "lora", "base_model_uri": BASE}, "lora", None),
    "qlora champion, lora candidate": (tags(method="qlora"), {"method": "qlora", "base_model_uri": BASE}, "lora",
                                       None),
    "already scored on this set": (tags(NEW), {"method": "lora", "base_model_uri": BASE}, "lora", "already"),
    "full fine-tune champion": (tags(method="full"), {"method": "full", "base_model_uri": BASE}, "lora",
                                "only adapters"),
    "full fine-tune candidate": (tags(), {"method": "lora", "base_model_uri": BASE}, "full", "only adapters"),
    "another base model": (tags(base="file:///other"), {"method": "lora", "base_model_uri": "file:///other"},
                           "lora", "base model file:///other"),
    "config missing: tags decide": (tags(), {}, "lora", None),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_why_not_comparable(case: str) -> None:
    t, config, method, expected = CASES[case]
    why = champion.why_not_comparable(t, config, BASE, NEW, method)
    assert (why is None) if expected is None else (why is not None and expected in why)


def test_the_adapter_is_found_in_the_logged_pyfunc(tmp_path: Path) -> None:
    (tmp_path / "MLmodel").write_text(
        "flavors:\n  python_function:\n    artifacts:\n      model:\n        path: artifacts/adapter\n"
        "    config:\n      method: lora\n      base_model_uri: file:///models/base\n")
    adapter, config = champion.adapter_of(tmp_path)
    assert adapter == tmp_path / "artifacts" / "adapter" and config["method"] == "lora"
    (tmp_path / "MLmodel").write_text("flavors:\n  python_function: {}\n")
    with pytest.raises(ValueError, match="no adapter artifact"):
        champion.adapter_of(tmp_path)


def test_no_tracking_uri_nothing_to_compare(tmp_path: Path) -> None:
    assert champion.fetch(None, "m", BASE, NEW, "lora", tmp_path) is None
