"""Types shared by both kinds: compute resources, tolerations, secret and object references, waits."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field

from tuneloop.api.base import ApiModel

# Kubernetes resource.Quantity: "2", "500m", "16Gi", "1.5". Integers are accepted too.
QUANTITY_PATTERN = r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"
Quantity = int | Annotated[str, Field(pattern=QUANTITY_PATTERN)]


class Toleration(ApiModel):
    """A pod toleration, as in corev1.Toleration, copied onto Ray worker pods."""

    key: str | None = Field(default=None, description="Taint key the toleration applies to; empty matches all.")
    operator: Literal["Exists", "Equal"] | None = Field(default=None, description="Exists or Equal (default Equal).")
    value: str | None = Field(default=None, description="Taint value to match when operator is Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match; empty matches all effects."
    )
    toleration_seconds: int | None = Field(
        default=None, ge=0, description="For NoExecute: how long the pod stays bound after the taint appears."
    )


class SecretKeyRef(ApiModel):
    """A key of a Secret in the object's namespace."""

    name: str = Field(min_length=1, description="Name of the Secret in the same namespace.")
    key: str = Field(min_length=1, description="Key within the Secret whose value is used.")


class LocalObjectRef(ApiModel):
    """A reference to an object in the same namespace."""

    name: str = Field(min_length=1, max_length=253, description="Name of the object in the same namespace.")


class ComputeResources(ApiModel):
    """Compute for each Ray worker (training) or each serving replica."""

    gpus: int = Field(default=0, ge=0, le=16, description="NVIDIA GPUs per worker (resource nvidia.com/gpu).")
    gpu_type: str | None = Field(
        default=None,
        description="GPU product label value (nvidia.com/gpu.product), e.g. NVIDIA-A100-SXM4-80GB; "
        "added to the nodeSelector. Requires gpus >= 1.",
    )
    cpu: Quantity = Field(default="2", description="CPU request and limit per worker, e.g. 4 or 3500m.")
    memory: Quantity = Field(default="8Gi", description="Memory request and limit per worker, e.g. 32Gi.")
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels the worker pods must match.")
    tolerations: list[Toleration] = Field(default_factory=list, description="Tolerations for tainted (e.g. GPU) nodes.")

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.gpuType) || (has(self.gpus) && self.gpus >= 1)",
                    "message": "gpuType selects a GPU product, so gpus must be >= 1",
                    "fieldPath": ".gpus",
                    "reason": "FieldValueInvalid",
                }
            ]
        }
    }


class WaitStatus(ApiModel):
    """What the object waits on outside its spec (a path, the registry, a Secret, Ray), re-checked with backoff.

    Absent when nothing is waited on. Kept in status so that backoff and Warning events stay bounded
    across operator restarts.
    """

    reason: str = Field(description="CamelCase reason of the wait, the same as the Ready condition's.")
    since: datetime = Field(description="When this reason was first seen; re-checks back off from here.")
    last_warning_time: datetime | None = Field(
        default=None, description="When the last Warning event about this wait was posted."
    )
