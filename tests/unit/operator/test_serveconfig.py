"""The application's `args` across an alias move, as a table: the version's base model (its registered
tags) is in the args, so a move to another base restarts the application while a move on the same base
only moves the Ingress default."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from tuneloop.api import constants
from tuneloop.api.deployment import ModelDeploymentSpec
from tuneloop.operator.logic import serveconfig

SPEC = ModelDeploymentSpec.model_validate({"model": {"name": "inv", "alias": "champion"},
                                           "serving": {"resources": {"cpu": "1"}}})
SETTINGS = serveconfig.AppSettings("file:///srv/traffic")
MLFLOW = "http://127.0.0.1:5000"
TINY = {constants.TAG_BASE_MODEL: "file:///models/tiny"}
TINY_REV = {constants.TAG_BASE_MODEL: "hf://org/tiny", constants.TAG_BASE_MODEL_REVISION: "abc123"}


def deployed(version: str, tags: dict[str, str]) -> dict[str, Any]:
    """The config an earlier send of `version` (whose tags are `tags`) left deployed."""
    return build(version, tags, None)


def build(version: str, tags: dict[str, str], on_cluster: dict[str, Any] | None) -> dict[str, Any]:
    """What decide_deployment builds for `version` against what is on the cluster."""
    base = serveconfig.serving_base(tags, on_cluster)
    return serveconfig.build_app("ns", "md", SPEC, MLFLOW, f"inv/{version}",
                                 serveconfig.kept_model_id(on_cluster, base), SETTINGS, base)


@dataclass
class Case:
    on_cluster: dict[str, Any] | None
    version: str
    tags: dict[str, str]
    default_id: str  # args.default_model_id
    base: tuple[str | None, str | None]  # args base_model_uri, base_model_revision
    restart: bool  # args differ from the deployed ones


CASES = {
    "first deploy: the version's base and id": Case(None, "1", TINY, "inv/1", ("file:///models/tiny", None), True),
    "move on the same base: args kept (reconfigure only)": Case(
        deployed("1", TINY), "2", TINY, "inv/1", ("file:///models/tiny", None), False),
    "move to another base: the new base and id (restart)": Case(
        deployed("1", TINY), "2", {constants.TAG_BASE_MODEL: "file:///models/big"}, "inv/2",
        ("file:///models/big", None), True),
    "same uri, another revision: restart": Case(
        deployed("1", TINY_REV), "2", {**TINY_REV, constants.TAG_BASE_MODEL_REVISION: "def456"}, "inv/2",
        ("hf://org/tiny", "def456"), True),
    "same uri and revision: args kept": Case(
        deployed("1", TINY_REV), "2", TINY_REV, "inv/1", ("hf://org/tiny", "abc123"), False),
    "version with no base recorded: taken to be on the replicas' base, args kept (warm-up guards it)": Case(
        deployed("1", TINY), "2", {}, "inv/1", ("file:///models/tiny", None), False),
    "no base recorded anywhere: args kept": Case(deployed("1", {}), "2", {}, "inv/1", (None, None), False),
    "first deploy of a version with no base recorded": Case(None, "1", {}, "inv/1", (None, None), True),
    "deployed before bases were in args: restart once onto the base": Case(
        deployed("1", {}), "2", TINY, "inv/2", ("file:///models/tiny", None), True),
    "back to the version first deployed, same base: no restart": Case(
        deployed("1", TINY), "1", TINY, "inv/1", ("file:///models/tiny", None), False),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_app_args_follow_the_versions_base(case: Case) -> None:
    app = build(case.version, case.tags, case.on_cluster)
    args = app["args"]
    assert args["default_model_id"] == case.default_id
    assert (args.get("base_model_uri"), args.get("base_model_revision")) == case.base
    old_args = (case.on_cluster or {}).get("args")
    assert (args != old_args) == case.restart
    # The served version always moves through the Ingress default, whatever the args keep.
    ingress = next(d for d in app["deployments"] if d["name"] == "Ingress")
    assert ingress["user_config"] == {"default_model_id": f"inv/{case.version}"}


def test_a_deployed_config_is_read_back_as_its_base() -> None:
    assert serveconfig.deployed_base(deployed("1", TINY_REV)) == serveconfig.BaseRef("hf://org/tiny", "abc123")
    assert serveconfig.deployed_base(None) is None
    assert serveconfig.version_base({constants.TAG_BASE_MODEL: ""}) is None
