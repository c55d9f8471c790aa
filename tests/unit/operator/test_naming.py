"""Child names: deterministic, DNS-1035, within KubeRay's limit, and distinct per uid/run/attempt."""

from __future__ import annotations

import re

import pytest

from tuneloop.api.finetune import FineTuneSpec
from tuneloop.operator.logic import naming

DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
UID = "a5ebc464-a93e-4ae2-8f9e-ef36a8f8c968"


@pytest.mark.parametrize("name", ["alpha", "x" * 253, "9lives", "my.fine.tune", "a-b-c-"])
def test_rayjob_name_is_a_short_dns_label(name: str) -> None:
    out = naming.rayjob_name(name, UID, 12, 3)
    assert DNS1035.match(out) and len(out) <= naming.MAX_RAYJOB_NAME
    assert out == naming.rayjob_name(name, UID, 12, 3)


def test_names_differ_by_uid_run_and_attempt() -> None:
    names = {naming.rayjob_name("a", UID, 1, 1), naming.rayjob_name("a", UID, 1, 2),
             naming.rayjob_name("a", UID, 2, 1), naming.rayjob_name("a", "other-uid", 1, 1)}
    assert len(names) == 4
    assert naming.submission_id(UID, 2, 1) == f"tuneloop-{UID}-r2-a1"


def test_label_value_fits() -> None:
    assert naming.label_value("short") == "short"
    assert len(naming.label_value("n" * 200)) <= 63


def spec(**kw) -> FineTuneSpec:
    base = {"baseModel": {"uri": "hf://m/x"}, "dataset": {"uri": "s3://b/d.jsonl"}, "registry": {"modelName": "m"}}
    return FineTuneSpec.model_validate({**base, **kw})


def test_spec_hash_ignores_suspend_only() -> None:
    assert naming.spec_hash(spec()) == naming.spec_hash(spec(suspend=True))
    assert naming.spec_hash(spec()) != naming.spec_hash(spec(backoffLimit=5))


def test_result_path_per_attempt() -> None:
    p = naming.result_path("/data", "ns", "ft", UID, 2, 3)
    assert str(p) == f"/data/ns/ft-{UID[:8]}/run-2/attempt-3/result.json"
