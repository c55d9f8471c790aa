"""Base class for every API model: camelCase on the wire, snake_case in Python.

Models accept both spellings (`populate_by_name`) so tests and jobs can build them naturally, and
dump by alias for Kubernetes. Unknown fields are ignored on read: the apiserver prunes them anyway,
and an operator must survive a newer CRD that added fields it does not know yet.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class ApiModel(BaseModel):
    """Shared configuration for tuneloop API objects."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        use_attribute_docstrings=False,
        validate_default=False,
    )

    def to_k8s(self) -> dict[str, Any]:
        """Dump as the JSON Kubernetes stores: camelCase keys, unset optional fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")
