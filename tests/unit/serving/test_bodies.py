"""Request validation as tables: every accepted completion/feedback body with what it becomes, and every
refused one with the field the 400 names."""

from __future__ import annotations

from typing import Any

import pytest

from tuneloop.serving import bodies

LIMITS = bodies.Limits(max_tokens=100, default_max_tokens=32, max_prompt_chars=50)

ACCEPTED = [
    # (name, body, (prompt, model, max_tokens, temperature))
    ("prompt only: defaults", {"prompt": "hi"}, ("hi", None, 32, 0.0)),
    ("model id", {"prompt": "hi", "model": "invoices/3"}, ("hi", "invoices/3", 32, 0.0)),
    ("name with slash", {"prompt": "hi", "model": "team/invoices/12"}, ("hi", "team/invoices/12", 32, 0.0)),
    ("max_tokens at cap", {"prompt": "hi", "max_tokens": 100}, ("hi", None, 100, 0.0)),
    ("temperature int", {"prompt": "hi", "temperature": 1}, ("hi", None, 32, 1.0)),
    ("temperature max", {"prompt": "hi", "temperature": 2.0}, ("hi", None, 32, 2.0)),
    ("nulls mean defaults", {"prompt": "hi", "model": None, "max_tokens": None, "temperature": None},
     ("hi", None, 32, 0.0)),
    ("harmless OpenAI fields ignored", {"prompt": "hi", "user": "u1", "top_p": 1, "stream": False, "n": 1},
     ("hi", None, 32, 0.0)),
]

REFUSED = [
    # (name, body, param named in the 400)
    ("not an object", ["hi"], None),
    ("string body", "hi", None),
    ("prompt missing", {"model": "m/1"}, "prompt"),
    ("prompt empty", {"prompt": "  "}, "prompt"),
    ("prompt list", {"prompt": ["a", "b"]}, "prompt"),
    ("prompt number", {"prompt": 3}, "prompt"),
    ("prompt too long", {"prompt": "x" * 51}, "prompt"),
    ("model without version", {"prompt": "hi", "model": "invoices"}, "model"),
    ("model alias", {"prompt": "hi", "model": "invoices@champion"}, "model"),
    ("model version not numeric", {"prompt": "hi", "model": "invoices/v3"}, "model"),
    ("model not string", {"prompt": "hi", "model": 3}, "model"),
    ("max_tokens zero", {"prompt": "hi", "max_tokens": 0}, "max_tokens"),
    ("max_tokens over cap", {"prompt": "hi", "max_tokens": 101}, "max_tokens"),
    ("max_tokens float", {"prompt": "hi", "max_tokens": 5.5}, "max_tokens"),
    ("max_tokens bool", {"prompt": "hi", "max_tokens": True}, "max_tokens"),
    ("max_tokens string", {"prompt": "hi", "max_tokens": "5"}, "max_tokens"),
    ("temperature negative", {"prompt": "hi", "temperature": -0.1}, "temperature"),
    ("temperature too high", {"prompt": "hi", "temperature": 2.5}, "temperature"),
    ("temperature string", {"prompt": "hi", "temperature": "hot"}, "temperature"),
    ("temperature nan", {"prompt": "hi", "temperature": float("nan")}, "temperature"),
    ("stream refused", {"prompt": "hi", "stream": True}, "stream"),
    ("n > 1 refused", {"prompt": "hi", "n": 2}, "n"),
    ("stop refused", {"prompt": "hi", "stop": ["\n"]}, "stop"),
]


@pytest.mark.parametrize(("body", "expected"), [c[1:] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED])
def test_completion_accepted(body: Any, expected: tuple[str, str | None, int, float]) -> None:
    parsed = bodies.parse_completion(body, LIMITS)
    assert (parsed.prompt, parsed.model, parsed.max_tokens, parsed.temperature) == expected


@pytest.mark.parametrize(("body", "param"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_completion_refused_names_the_field(body: Any, param: str | None) -> None:
    with pytest.raises(bodies.InvalidRequest) as info:
        bodies.parse_completion(body, LIMITS)
    assert info.value.param == param and info.value.status_code == 400
    error = info.value.to_body()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    if param is not None:
        assert error["message"].startswith(f"{param}: ")


FEEDBACK_REFUSED = [
    ("no request id", {"label": "good"}, "request_id"),
    ("request id not string", {"request_id": 5, "label": "good"}, "request_id"),
    ("request id with spaces", {"request_id": "a b", "label": "good"}, "request_id"),
    ("nothing to say", {"request_id": "cmpl-1"}, "label"),
    ("label not string", {"request_id": "cmpl-1", "label": 1}, "label"),
    ("score not number", {"request_id": "cmpl-1", "score": "high"}, "score"),
    ("not an object", [], None),
]


@pytest.mark.parametrize(("body", "param"), [c[1:] for c in FEEDBACK_REFUSED], ids=[c[0] for c in FEEDBACK_REFUSED])
def test_feedback_refused_names_the_field(body: Any, param: str | None) -> None:
    with pytest.raises(bodies.InvalidRequest) as info:
        bodies.parse_feedback(body)
    assert info.value.param == param


def test_feedback_accepted() -> None:
    parsed = bodies.parse_feedback({"request_id": "cmpl-abc", "correction": "{}", "score": 0})
    assert (parsed.request_id, parsed.label, parsed.correction, parsed.score) == ("cmpl-abc", None, "{}", 0.0)


@pytest.mark.parametrize(("header", "kept"), [("req-1", True), ("a" * 128, True), ("a" * 129, False),
                                              ("bad id", False), (None, False), ("x/y", False)])
def test_client_request_id_reused_only_when_safe(header: str | None, kept: bool) -> None:
    assert bodies.accepted_request_id(header) == (header if kept else None)


def test_model_id_splits_on_the_last_slash() -> None:
    assert bodies.parse_model_id("team/invoices/12") == bodies.ModelId("team/invoices", "12")
    assert str(bodies.parse_model_id("m/1")) == "m/1"
