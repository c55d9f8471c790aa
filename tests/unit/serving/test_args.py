"""The app arguments a ServeDeploySchema passes: what is refused before any replica starts."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from tuneloop.serving import args

BASE = {"deployment": "invoices", "default_model_id": "invoices/1", "traffic_log_uri": "file:///tmp/log"}

REFUSED = [
    ("unknown key", {"max_token": 5}, "max_token"),
    ("bad default model id", {"default_model_id": "invoices"}, "default_model_id"),
    ("log without uri", {"traffic_log_uri": None}, "traffic_log_uri"),
    ("neither base nor default", {"default_model_id": None}, "base_model_uri"),
    ("default tokens over cap", {"max_tokens": 8, "default_max_tokens": 16}, "default_max_tokens"),
    ("batch over capacity", {"log_batch_size": 20, "log_capacity": 10}, "log_batch_size"),
    ("deployment with slash", {"deployment": "a/b"}, "deployment"),
]


@pytest.mark.parametrize(("change", "named"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_refused(change: dict[str, Any], named: str) -> None:
    with pytest.raises(ValidationError) as info:
        args.AppArgs.model_validate({**BASE, **change})
    assert named in str(info.value)


def test_defaults_and_limits() -> None:
    parsed = args.AppArgs.model_validate({**BASE, "log_requests": True})
    assert parsed.limits().max_tokens == 256 and parsed.limits().default_max_tokens == 64
    assert args.AppArgs.model_validate({"deployment": "d", "base_model_uri": "file:///m", "log_requests": False})


def test_ingress_config_moves_the_default() -> None:
    assert args.IngressConfig.model_validate({"default_model_id": "m/2"}).default_model_id == "m/2"
    with pytest.raises(ValidationError):
        args.IngressConfig.model_validate({"default_model_id": "m"})
    with pytest.raises(ValidationError):
        args.IngressConfig.model_validate({"served": "m/2"})
