"""The Ray Serve application of a ModelDeployment, and the cluster-wide config it is merged into.

Pure: builds the `applications[]` entry the dashboard's `PUT /api/serve/applications/` takes for one
ModelDeployment, says whether what Serve reports as deployed is that entry, and merges it into the
full config read from the cluster. The PUT is declarative for the whole cluster (an application
missing from the body is deleted, shared/FACTS.md), so `merge_applications` keeps every other
application exactly as Serve reports it deployed.

Names: the application is `<namespace>.<name>` (a namespace has no dots, so the split is unique) at
route `/<namespace>/<name>`. `args` name the base model of the version served (its registered
`tuneloop.base_model.uri`/`.revision` tags, written when a FineTune registers it). An alias move to a
version on the same base changes only the Ingress `user_config` (a `reconfigure`, no replica restart):
`args` keep the default model id they were first deployed with, since changing `args` rebuilds the
application and restarts every replica old-first (serving.app). A version on another base — or an
application deployed without a base in its `args` moving to a version whose base is recorded — gets new
`args` (its base, itself as the default): a restart, since the replicas hold the old base and every
adapter of the new version would be refused there. A version whose base is not recorded (registered by
hand) is taken to be on the base the replicas hold: it moves without a restart, and the warm-up request
it must answer first keeps the old version serving if its adapter does not fit that base.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tuneloop.api import constants
from tuneloop.api.deployment import ModelDeploymentSpec
from tuneloop.serving import args as serve_args

RUNTIME_ENV = {"env_vars": {"MLFLOW_DISABLE_TELEMETRY": "true"}}
INGRESS_NUM_CPUS = 0.5


@dataclass(frozen=True)
class AppSettings:
    """Operator settings that shape the application (never the user's spec)."""

    traffic_root: str  # default traffic log root: file:///… or s3://…; the deployment's folder is added
    cache_dir: str | None = None


def app_name(namespace: str, name: str) -> str:
    return f"{namespace}.{name}"


def route_prefix(namespace: str, name: str) -> str:
    return f"/{namespace}/{name}"


def model_id(model_name: str, version: str) -> str:
    return f"{model_name}/{version}"


def cpu_count(quantity: int | str) -> float:
    """A Kubernetes CPU quantity as Ray's num_cpus: 2 → 2.0, "500m" → 0.5."""
    text = str(quantity)
    match = re.fullmatch(r"([0-9.]+)(m?)", text)
    if match is None:
        return 1.0  # a quantity Ray cannot express (e.g. an exponent): one CPU
    value = float(match.group(1))
    return value / 1000 if match.group(2) else value


@dataclass(frozen=True)
class BaseRef:
    """The base model a version's adapter attaches to."""

    uri: str
    revision: str | None = None


def version_base(tags: Mapping[str, str]) -> BaseRef | None:
    """A registered version's base model, from the tags a FineTune registers it with; None when absent
    (a version registered by hand)."""
    uri = tags.get(constants.TAG_BASE_MODEL)
    return BaseRef(uri, tags.get(constants.TAG_BASE_MODEL_REVISION) or None) if uri else None


def deployed_base(deployed: dict[str, Any] | None) -> BaseRef | None:
    """The base model named in a deployed application's `args`, if any."""
    app_args = (deployed or {}).get("args") or {}
    uri, revision = app_args.get("base_model_uri"), app_args.get("base_model_revision")
    return BaseRef(uri, revision if isinstance(revision, str) and revision else None) if isinstance(uri, str) else None


def serving_base(tags: Mapping[str, str], deployed: dict[str, Any] | None) -> BaseRef | None:
    """The base to serve a version on: its recorded base, or — when none is recorded — the one the
    deployed application holds (None when neither names one)."""
    return version_base(tags) or deployed_base(deployed)


def kept_model_id(deployed: dict[str, Any] | None, base: BaseRef | None) -> str | None:
    """The `args.default_model_id` to keep: the deployed one when the deployed application holds `base`
    (a move without restart; two unknown bases count as the same); None when the base differs or nothing
    is deployed (new `args`, a restart)."""
    return first_model_id(deployed) if deployed is not None and deployed_base(deployed) == base else None


def build_app(namespace: str, name: str, spec: ModelDeploymentSpec, tracking_uri: str, serve_model_id: str,
              first_model_id: str | None, settings: AppSettings, base: BaseRef | None = None,
              canary: tuple[str, int] | None = None) -> dict[str, Any]:
    """The application entry for one ModelDeployment serving `serve_model_id`, whose base is `base` (None:
    unknown, the Generator loads the default version's). `first_model_id` is the default the
    application's `args` were first deployed with (kept only on the same base: `kept_model_id`).
    `canary` is (candidate model id, percent): the Ingress sends that share of requests naming no model to
    the candidate — a `user_config` change, so a canary step restarts nothing."""
    serving = spec.serving
    app = app_name(namespace, name)
    traffic_uri = serving.traffic_log_uri or f"{settings.traffic_root.rstrip('/')}/{namespace}"
    app_args: dict[str, Any] = {
        "deployment": app, "tracking_uri": tracking_uri, "default_model_id": first_model_id or serve_model_id,
        "max_tokens": serving.max_new_tokens, "default_max_tokens": min(64, serving.max_new_tokens),
        "log_requests": serving.log_requests,
    }
    if base is not None:
        app_args["base_model_uri"] = base.uri
        if base.revision:
            app_args["base_model_revision"] = base.revision
    if serving.log_requests:
        app_args["traffic_log_uri"] = traffic_uri
    if settings.cache_dir:
        app_args["cache_dir"] = settings.cache_dir
    serve_args.AppArgs.model_validate(app_args)  # fails here, not as DEPLOY_FAILED minutes later
    ingress_config: dict[str, Any] = {"default_model_id": serve_model_id}
    if canary is not None:
        ingress_config.update(canary_model_id=canary[0], canary_weight=canary[1])
    serve_args.IngressConfig.model_validate(ingress_config)
    generator_options: dict[str, Any] = {"num_cpus": cpu_count(serving.resources.cpu)}
    if serving.resources.gpus:
        generator_options["num_gpus"] = serving.resources.gpus
    return {
        "name": app,
        "route_prefix": route_prefix(namespace, name),
        "import_path": serve_args.APP_IMPORT_PATH,
        "runtime_env": RUNTIME_ENV,
        "args": app_args,
        "deployments": [
            {"name": serve_args.GENERATOR, "num_replicas": serving.replicas, "ray_actor_options": generator_options},
            {"name": serve_args.INGRESS, "num_replicas": 1, "ray_actor_options": {"num_cpus": INGRESS_NUM_CPUS},
             "user_config": ingress_config},
        ],
    }


def first_model_id(deployed: dict[str, Any] | None) -> str | None:
    """The `args.default_model_id` an application was deployed with, if any."""
    value = ((deployed or {}).get("args") or {}).get("default_model_id")
    return value if isinstance(value, str) else None


def config_hash(app: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(app, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def matches(wanted: Any, deployed: Any) -> bool:
    """Whether Serve's `deployed_app_config` is `wanted`: every key we set has our value (Serve may add
    keys we left out); deployments are matched by name. A `user_config` must be equal: Serve replaces it
    whole, so a key left in it (a finished canary's) is a difference."""
    if isinstance(wanted, dict):
        if not isinstance(deployed, dict):
            return False
        return all(v == deployed.get(k) if k == "user_config" else matches(v, deployed.get(k))
                   for k, v in wanted.items())
    if isinstance(wanted, list):
        if not isinstance(deployed, list):
            return False
        if all(isinstance(w, dict) and "name" in w for w in wanted):
            by_name = {d.get("name"): d for d in deployed if isinstance(d, dict)}
            return len(by_name) == len(wanted) and all(matches(w, by_name.get(w["name"])) for w in wanted)
        return len(wanted) == len(deployed) and all(matches(w, d) for w, d in zip(wanted, deployed, strict=True))
    if isinstance(wanted, float) or isinstance(deployed, float):
        return isinstance(deployed, int | float) and not isinstance(deployed, bool) and float(wanted) == float(deployed)
    return bool(wanted == deployed)


def merge_applications(deployed: dict[str, dict[str, Any] | None], name: str, app: dict[str, Any] | None
                       ) -> list[dict[str, Any]]:
    """The full `applications[]` to PUT: every other application as Serve reports it deployed, and ours
    set to `app` (removed when None). `deployed` maps application name → its deployed_app_config; one
    without (deployed imperatively, with `serve.run`) cannot be carried in a PUT and is left out — Serve
    itself refuses a declarative PUT on a cluster that has such applications, and says so."""
    others = [dict(config) for other, config in sorted(deployed.items()) if other != name and config]
    return others + ([app] if app is not None else [])
