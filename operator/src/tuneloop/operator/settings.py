"""The operator's own settings, read from `TUNELOOP_*` environment variables at start-up.

These are the administrator's knobs (poll intervals, prices, images, time limits). They never share
a model with the user's FineTune spec: a user cannot raise a timeout or change a price by editing a
custom resource. A bad value stops the operator at start-up with the variable's name, the value and
what is allowed, instead of failing minutes later inside a handler. A missing value the operator can
run without, but some FineTunes cannot (`config_problems`), is said once at start-up; the FineTunes
it affects wait (e.g. `RegistryNotConfigured`) and go on when the operator restarts with it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

ENV_PREFIX = "TUNELOOP_"


class SettingsError(ValueError):
    """An environment variable holds a value the operator cannot use; the message names it."""


class OperatorSettings(BaseModel):
    """Administrator settings. Each field `x_y` is read from the variable `TUNELOOP_X_Y`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    poll_seconds: float = Field(default=10.0, gt=0, le=3600, description="Poll interval of a running job.")
    max_poll_seconds: float = Field(
        default=120.0, gt=0, le=3600,
        description="Cap of the backoff of waits (a path not there yet, no registry, Ray or MLflow unreachable), "
        "and the least time between two Warning events about the same wait."
    )
    mlflow_tracking_uri: str | None = Field(
        default=None, description="Tracking URI used when spec.registry.trackingUri is empty."
    )
    storage_root: Path = Field(
        default=Path("/var/lib/tuneloop"),
        description="ExistingCluster mode: folder (shared with the Ray cluster) for checkpoints and results.",
    )
    pod_storage_root: str = Field(
        default="/tmp/tuneloop", description="RayJob mode: --storage folder inside the Ray pods."
    )
    job_python: str = Field(default="python", description="Interpreter in the job's entrypoint.")
    ray_image: str = Field(
        default="rayproject/ray:2.60.0-py311-gpu", description="Image for RayJob pods when spec.ray.image is empty."
    )
    ray_head_cpu: str = Field(default="2", description="CPU of the RayJob head pod.")
    ray_head_memory: str = Field(default="8Gi", description="Memory of the RayJob head pod.")
    ray_auth_token: SecretStr | None = Field(
        default=None, description="Bearer token for the Ray job API (ray start enables token auth)."
    )
    rayjob_ttl_seconds: int = Field(
        default=3600, ge=0, description="ttlSecondsAfterFinished on RayJobs: how long a finished cluster is kept."
    )
    default_active_deadline_seconds: int = Field(
        default=86400, ge=1, description="activeDeadlineSeconds when the spec sets none (KubeRay needs one)."
    )
    deadline_grace_seconds: float = Field(
        default=60.0, ge=0, description="How long after the deadline tuneloop stops a RayJob KubeRay did not stop."
    )
    inconsistent_grace_seconds: float = Field(
        default=120.0,
        ge=0,
        description="How long a RayJob may show a terminal jobStatus with a live deployment before tuneloop "
        "treats the attempt as failed (kuberay #3553).",
    )
    result_grace_seconds: float = Field(
        default=300.0, ge=0, description="How long to look for the result of a succeeded job before Failed."
    )
    alias_recheck_seconds: float = Field(
        default=600.0, gt=0,
        description="How often a Succeeded FineTune re-reads whether its version still holds its alias "
        "(catches moves made outside tuneloop; moves by another FineTune wake it at once).",
    )
    delete_timeout_seconds: float = Field(
        default=60.0, ge=0, description="How long deletion retries stopping the job before giving up."
    )
    client_timeout_seconds: float = Field(default=10.0, gt=0, description="Timeout of one Ray/MLflow request.")
    client_retries: int = Field(default=2, ge=0, le=10, description="Retries of a failed Ray/MLflow request.")
    kube_threads: int = Field(default=16, ge=1, le=256, description="Threads for Kubernetes API calls.")
    gpu_prices_usd_per_hour: dict[str, float] = Field(
        default_factory=lambda: {"default": 2.5},
        description='JSON price table by GPU product, e.g. {"NVIDIA-A100-SXM4-80GB": 3.7, "default": 2.5}.',
    )
    check_file_uris: Literal["auto", "always", "never"] = Field(
        default="auto",
        description="Check that file:// paths exist: auto does so for ExistingCluster on loopback only.",
    )
    serve_address: str | None = Field(
        default=None, pattern=r"^https?://\S+$",
        description="Ray dashboard (http://host:8265) ModelDeployments deploy to when spec.serving.address is empty.",
    )
    serve_http_host: str = Field(
        default="0.0.0.0", description="Host the Serve proxy binds when tuneloop starts Serve on a cluster."
    )
    serve_http_port: int = Field(
        default=8000, ge=1, le=65535, description="Port of the Serve proxy when tuneloop starts Serve on a cluster."
    )
    serve_traffic_root: str | None = Field(
        default=None, description="Root of inference logs when spec.serving.trafficLogUri is empty "
        "(default file://<storage root>/traffic)."
    )
    serve_endpoint_base: str | None = Field(
        default=None, pattern=r"^https?://\S+$",
        description="Base URL clients reach the Serve proxy at (e.g. https://llm.example.com) when it differs from "
        "the address the operator reaches it at; status.endpoint is this plus the route. spec.serving.endpointBase "
        "overrides it; the operator's own warm-up and canary requests still go to the proxy it reaches.",
    )
    serve_rollout_poll_seconds: float = Field(
        default=2.0, gt=0, le=600, description="How often a ModelDeployment rollout in progress is looked at."
    )
    monitor_max_checks: int = Field(
        default=2, ge=1, le=64,
        description="Monitor checks (Evidently) run at once, each in a worker thread off the event loop; more "
        "ModelDeployments due at the same moment wait for a free worker.",
    )
    monitor_check: str = Field(
        default="tuneloop.monitoring.runner:run_check", pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="module:function that runs one monitor check (needs the monitor extra); imported on the "
        "first check, so an operator without it runs and reports MonitorStale (CheckFailed).",
    )
    metrics_port: int = Field(default=8080, ge=0, le=65535, description="Prometheus /metrics port; 0 disables.")
    peering_name: str = Field(default="tuneloop", min_length=1, description="kopf peering object for HA.")

    @field_validator("gpu_prices_usd_per_hour")
    @classmethod
    def _prices_not_negative(cls, prices: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in prices.items() if v < 0}
        if bad:
            raise ValueError(f"prices must be >= 0, got {bad}")
        return prices


_JSON_FIELDS = {"gpu_prices_usd_per_hour"}


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def load_settings(environ: Mapping[str, str] | None = None) -> OperatorSettings:
    """Read `TUNELOOP_*` variables; raise SettingsError naming the first bad variable."""
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    for field in OperatorSettings.model_fields:
        name = env_name(field)
        if name not in env or env[name] == "":
            continue
        value: Any = env[name]
        if field in _JSON_FIELDS:
            try:
                value = json.loads(value)
            except json.JSONDecodeError as e:
                example = '{"default": 2.5}'
                raise SettingsError(f"{name}={value!r} is not JSON: {e.msg}; expected e.g. {example!r}") from e
        raw[field] = value
    try:
        return OperatorSettings(**raw)
    except ValidationError as e:
        first = e.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "?"
        name = env_name(field)
        raise SettingsError(f"{name}={env.get(name)!r} is invalid: {first['msg']}") from e


@dataclass(frozen=True)
class ConfigProblem:
    """A setting the operator starts without, and what that means for the objects it serves."""

    setting: str  # the variable, e.g. TUNELOOP_MLFLOW_TRACKING_URI
    message: str


# Settings checked by `config_problems`: each is reported as the metric
# tuneloop_operator_config_problem{setting} (1: a problem, 0: fine).
CHECKED_SETTINGS = (env_name("mlflow_tracking_uri"),)


def config_problems(settings: OperatorSettings) -> list[ConfigProblem]:
    """What is missing from a valid configuration, each with its consequence and the fix."""
    problems = []
    if not settings.mlflow_tracking_uri:
        problems.append(ConfigProblem(env_name("mlflow_tracking_uri"), (
            "not set: FineTunes without spec.registry.trackingUri wait with reason RegistryNotConfigured; "
            "set it to the MLflow tracking server (e.g. http://mlflow.mlops.svc:5000) and restart the operator, "
            "and they go on")))
    return problems
