"""The serving application's arguments: what a ServeDeploySchema entry passes as `args` to
`tuneloop.serving.app:build`, and the Ingress `user_config` that moves the default version.

Pydantic only, so the controller can build and check them without importing Ray. Unknown keys are
refused: a misspelt argument fails the deploy (DEPLOY_FAILED with this message) instead of being
ignored.

Why two places: Serve restarts replicas when `args` change but only calls `reconfigure` when a
deployment's `user_config` changes (shared/FACTS.md). The default model id therefore lives in the
Ingress `user_config` (an alias move is a lightweight update, no replica restart); `args` hold what
needs a restart anyway (the base model, the log location) and the first default.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from tuneloop.serving import bodies

APP_IMPORT_PATH = "tuneloop.serving.app:build"
INGRESS = "Ingress"
GENERATOR = "Generator"


class AppArgs(BaseModel):
    """Arguments of `tuneloop.serving.app:build`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    deployment: str = Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                            description="ModelDeployment name; the traffic log's partition key.")
    tracking_uri: str | None = Field(default=None, description="MLflow tracking URI the versions are read from.")
    default_model_id: str | None = Field(
        default=None, description="<name>/<version> served when a request names no model; the Ingress user_config "
                                  "default_model_id overrides it without a restart.")
    base_model_uri: str | None = Field(
        default=None, description="Base model every adapter attaches to; defaults to the default version's base.")
    base_model_revision: str | None = Field(default=None, description="Revision of an hf:// base model.")
    max_tokens: int = Field(default=256, ge=1, le=32768, description="Largest max_tokens a request may ask.")
    default_max_tokens: int = Field(default=64, ge=1, le=32768, description="max_tokens when a request gives none.")
    max_prompt_chars: int = Field(default=32_000, ge=1, description="Longest prompt accepted.")
    max_models_per_replica: int = Field(default=4, ge=1, le=1000,
                                        description="Adapters kept attached per Generator replica (LRU).")
    cache_dir: str | None = Field(default=None, description="Where base models and adapters are downloaded.")
    log_requests: bool = Field(default=True, description="Log requests, responses and feedback.")
    traffic_log_uri: str | None = Field(default=None, description="file://, pvc:// or s3:// root of the log.")
    log_batch_size: int = Field(default=256, ge=1, description="Records per Parquet part file (at most).")
    log_flush_interval_seconds: float = Field(default=5.0, gt=0, description="Longest a record waits in memory.")
    log_capacity: int = Field(default=10_000, ge=1, description="Records held in memory before dropping.")

    @field_validator("default_model_id")
    @classmethod
    def _model_id(cls, value: str | None) -> str | None:
        if value is not None:
            bodies.parse_model_id(value, "default_model_id")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> AppArgs:
        if self.log_requests and not self.traffic_log_uri:
            raise ValueError("traffic_log_uri is required when log_requests is true")
        if self.base_model_uri is None and self.default_model_id is None:
            raise ValueError("give base_model_uri or default_model_id (whose base is then loaded)")
        if self.default_max_tokens > self.max_tokens:
            raise ValueError(f"default_max_tokens {self.default_max_tokens} exceeds max_tokens {self.max_tokens}")
        if self.log_batch_size > self.log_capacity:
            raise ValueError(f"log_batch_size {self.log_batch_size} exceeds log_capacity {self.log_capacity}")
        return self

    def limits(self) -> bodies.Limits:
        return bodies.Limits(max_tokens=self.max_tokens, default_max_tokens=self.default_max_tokens,
                             max_prompt_chars=self.max_prompt_chars)


class IngressConfig(BaseModel):
    """The Ingress deployment's `user_config` (lightweight update: `reconfigure`, no restart): the default
    model id, and during a canary the candidate's id and the percentage of default-routed requests it takes.
    A request that names its model is never re-routed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default_model_id: str | None = Field(default=None, description="Overrides AppArgs.default_model_id.")
    canary_model_id: str | None = Field(default=None, description="The candidate version during a canary.")
    canary_weight: int = Field(default=0, ge=0, le=100,
                               description="Percent of requests naming no model sent to canary_model_id.")

    @field_validator("default_model_id", "canary_model_id")
    @classmethod
    def _model_id(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            bodies.parse_model_id(value, str(info.field_name))
        return value

    @model_validator(mode="after")
    def _canary(self) -> IngressConfig:
        if self.canary_weight and self.canary_model_id is None:
            raise ValueError(f"canary_weight {self.canary_weight} needs canary_model_id")
        return self

    def pick(self, fallback: str | None, draw: float) -> str | None:
        """The model id for a request naming none; `draw` is uniform in [0, 1)."""
        if self.canary_model_id is not None and draw * 100 < self.canary_weight:
            return self.canary_model_id
        return self.default_model_id or fallback
