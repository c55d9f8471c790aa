"""Request bodies of the HTTP API: parsing and validating `POST /v1/completions` (OpenAI-compatible:
model, prompt, max_tokens, temperature) and `POST /v1/feedback`, and the model id format.

Pure functions. A bad body raises `InvalidRequest` naming the field (`param`, as OpenAI's error object
does), the bad value and what is allowed; the ingress turns it into a 400. Fields OpenAI clients send
that do not change the answer here (`user`, `top_p`...) are ignored; ones that would (`stream`, `n`,
`stop`, a list of prompts) are refused, so a client never silently gets something other than it asked.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

# <registered model name>/<version>: the registry name may itself hold '/', the version never does.
MODEL_ID = re.compile(r"^(?P<name>\S(?:.*\S)?)/(?P<version>[0-9]+)$")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
MAX_TEMPERATURE = 2.0
MAX_FEEDBACK_CHARS = 100_000
# Accepted only at these values, which are what this runtime does anyway.
UNSUPPORTED = {"stream": (None, False), "n": (None, 1), "best_of": (None, 1), "echo": (None, False),
               "logprobs": (None,), "stop": (None,), "suffix": (None,)}


class InvalidRequest(ValueError):
    """A request the API refuses; `param` names the field (None for the body as a whole)."""

    def __init__(self, param: str | None, message: str, status_code: int = 400) -> None:
        super().__init__(f"{param}: {message}" if param else message)
        self.param = param
        self.message = message
        self.status_code = status_code

    def to_body(self) -> dict[str, Any]:
        """OpenAI's error object."""
        return {"error": {"message": str(self), "type": "invalid_request_error", "param": self.param,
                          "code": None}}


@dataclass(frozen=True)
class ModelId:
    name: str
    version: str

    def __str__(self) -> str:
        return f"{self.name}/{self.version}"


def parse_model_id(value: str, param: str = "model") -> ModelId:
    match = MODEL_ID.match(value) if isinstance(value, str) else None
    if match is None:
        raise InvalidRequest(param, f"{value!r} is not a model id; use <registered model name>/<version>, "
                                    "e.g. invoices-extractor/3")
    return ModelId(match["name"], match["version"])


@dataclass(frozen=True)
class Limits:
    """What the deployment allows (from the app args)."""

    max_tokens: int = 256
    default_max_tokens: int = 64
    max_prompt_chars: int = 32_000


@dataclass(frozen=True)
class CompletionRequest:
    prompt: str
    model: str | None  # None: the deployment's default (served) version
    max_tokens: int
    temperature: float  # 0 is greedy


@dataclass(frozen=True)
class FeedbackRequest:
    request_id: str
    label: str | None
    correction: str | None
    score: float | None


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidRequest(None, f"the body must be a JSON object, got {type(body).__name__}")
    return body


def _int(body: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(key, f"must be an integer, got {value!r}")
    if not low <= value <= high:
        raise InvalidRequest(key, f"{value} is out of range; allowed {low}..{high}")
    return value


def _number(body: dict[str, Any], key: str, default: float | None, low: float, high: float) -> float | None:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidRequest(key, f"must be a number, got {value!r}")
    if not low <= value <= high:
        raise InvalidRequest(key, f"{value} is out of range; allowed {low}..{high}")
    return float(value)


def _text(body: dict[str, Any], key: str, max_chars: int, required: bool = False) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise InvalidRequest(key, "is required")
        return None
    if not isinstance(value, str):
        hint = " (one prompt per request)" if key == "prompt" and isinstance(value, list) else ""
        raise InvalidRequest(key, f"must be a string{hint}, got {type(value).__name__}")
    if required and not value.strip():
        raise InvalidRequest(key, "must not be empty")
    if len(value) > max_chars:
        raise InvalidRequest(key, f"is {len(value)} characters; at most {max_chars} allowed")
    return value


def parse_completion(body: Any, limits: Limits) -> CompletionRequest:
    """A validated completion request, or InvalidRequest naming the first bad field."""
    body = _object(body)
    for key, allowed in UNSUPPORTED.items():
        if body.get(key) not in allowed:
            raise InvalidRequest(key, f"{body[key]!r} is not supported by this runtime; leave it out")
    prompt = _text(body, "prompt", limits.max_prompt_chars, required=True)
    assert prompt is not None
    model = body.get("model")
    if model is not None:
        if not isinstance(model, str):
            raise InvalidRequest("model", f"must be a string, got {type(model).__name__}")
        parse_model_id(model)
    max_tokens = _int(body, "max_tokens", min(limits.default_max_tokens, limits.max_tokens), 1, limits.max_tokens)
    temperature = _number(body, "temperature", 0.0, 0.0, MAX_TEMPERATURE)
    assert temperature is not None
    return CompletionRequest(prompt=prompt, model=model, max_tokens=max_tokens, temperature=temperature)


def parse_feedback(body: Any) -> FeedbackRequest:
    """A validated feedback record: the logged request id, and a label, a correction and/or a score."""
    body = _object(body)
    request_id = body.get("request_id")
    if request_id is None:
        raise InvalidRequest("request_id", "is required: the id a completion returned (body id, x-request-id)")
    if not isinstance(request_id, str) or not REQUEST_ID.match(request_id):
        raise InvalidRequest("request_id", f"{request_id!r} is not a request id")
    label = _text(body, "label", MAX_FEEDBACK_CHARS)
    correction = _text(body, "correction", MAX_FEEDBACK_CHARS)
    score = _number(body, "score", None, -1e9, 1e9)
    if label is None and correction is None and score is None:
        raise InvalidRequest("label", "give at least one of label, correction or score")
    return FeedbackRequest(request_id=request_id, label=label, correction=correction, score=score)


def accepted_request_id(header: str | None) -> str | None:
    """The x-request-id when it is safe to use as the log and feedback key, else None (then a fresh id).
    Serve's proxy sets one on every request — the client's own if it sent one — so the log, the response
    and Serve's access log share it."""
    return header if header is not None and REQUEST_ID.match(header) else None
