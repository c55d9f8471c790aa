"""Semantic validation: field paths, one reason per problem, and when file:// paths are checked."""

from __future__ import annotations

import pytest

from tuneloop.api.finetune import FineTuneSpec
from tuneloop.operator.logic.validation import ValidationContext, validate_spec


def spec(**kw) -> FineTuneSpec:
    body = {"baseModel": {"uri": "file:///models/tiny"}, "dataset": {"uri": "file:///data/x.jsonl"},
            "registry": {"modelName": "m", "trackingUri": "http://mlflow"},
            "ray": {"mode": "ExistingCluster", "address": "http://127.0.0.1:8265"}}
    body.update(kw)
    return FineTuneSpec.model_validate(body)


def ctx(existing=("/models/tiny", "/data/x.jsonl"), default_uri=None, mode="auto") -> ValidationContext:
    return ValidationContext(default_uri, mode, lambda p: p in existing)


SECRET_REGISTRY = {"modelName": "m", "trackingUriSecretRef": {"name": "mlflow", "key": "uri"}}

CASES = {
    "valid": (spec(), ctx(), []),
    "dataset missing": (spec(), ctx(existing=("/models/tiny",)), [("spec.dataset.uri", "DataNotFound")]),
    "base model missing": (spec(), ctx(existing=("/data/x.jsonl",)), [("spec.baseModel.uri", "BaseModelNotFound")]),
    "both missing": (spec(), ctx(existing=()), [("spec.baseModel.uri", "BaseModelNotFound"),
                                                ("spec.dataset.uri", "DataNotFound")]),
    "remote cluster: paths not checked": (spec(ray={"mode": "ExistingCluster", "address": "http://ray:8265"}),
                                          ctx(existing=()), []),
    "RayJob: paths are inside pods": (spec(ray={"mode": "RayJob"}), ctx(existing=()), []),
    "always checks": (spec(ray={"mode": "RayJob"}), ctx(existing=("/models/tiny",), mode="always"),
                      [("spec.dataset.uri", "DataNotFound")]),
    "no address": (spec(ray={"mode": "ExistingCluster"}), ctx(), [("spec.ray.address", "InvalidSpec")]),
    "no tracking uri anywhere": (spec(registry={"modelName": "m"}), ctx(), [("spec.registry.trackingUri",
                                                                             "RegistryNotConfigured")]),
    "operator default tracking uri": (spec(registry={"modelName": "m"}), ctx(default_uri="http://m"), []),
    # trackingUriSecretRef: the job gets the Secret through its pods (RayJob); the operator registers with its own
    "secret ref on a RayJob": (spec(registry=SECRET_REGISTRY, ray={"mode": "RayJob"}), ctx(default_uri="http://m"), []),
    "secret ref and no operator uri": (spec(registry=SECRET_REGISTRY, ray={"mode": "RayJob"}), ctx(),
                                       [("spec.registry.trackingUriSecretRef", "RegistryNotConfigured")]),
    "secret ref on an existing cluster": (spec(registry=SECRET_REGISTRY), ctx(default_uri="http://m"),
                                          [("spec.registry.trackingUriSecretRef", "InvalidSpec")]),
    "secret ref and a uri": (spec(registry={**SECRET_REGISTRY, "trackingUri": "http://x"}, ray={"mode": "RayJob"}),
                             ctx(default_uri="http://m"), [("spec.registry.trackingUriSecretRef", "InvalidSpec")]),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_validate(case: str) -> None:
    given, context, expected = CASES[case]
    assert [(p.field, p.reason) for p in validate_spec(given, context)] == expected


def test_messages_name_the_path_and_say_what_happens_next() -> None:
    base, data = validate_spec(spec(), ctx(existing=()))
    assert "'/models/tiny'" in base.message and "'/data/x.jsonl'" in data.message
    assert all("Checked again with backoff" in p.message for p in (base, data))
    [registry] = validate_spec(spec(registry={"modelName": "m"}), ctx())
    assert "TUNELOOP_MLFLOW_TRACKING_URI" in registry.message and "restart" in registry.message


def test_a_secret_ref_on_an_existing_cluster_says_why_and_what_to_use() -> None:
    [problem] = validate_spec(spec(registry=SECRET_REGISTRY), ctx(default_uri="http://m"))
    assert "Ray dashboard" in problem.message and "RayJob" in problem.message
