"""Held-out metrics as tables: exact match, JSON validity and field-level F1."""

from __future__ import annotations

import pytest

from tuneloop.jobs import metrics

REF = '{"invoice_id": "INV-1", "vendor": "Acme", "total": "10.00"}'


@pytest.mark.parametrize(("prediction", "reference", "expected"), [
    ("abc", "abc", 1.0),
    ("  abc\n", "abc", 1.0),
    ("abd", "abc", 0.0),
    ('{"total": "10.00", "vendor": "Acme", "invoice_id": "INV-1"}', REF, 1.0),  # key order does not matter
    ('{"invoice_id":"INV-1","vendor":"Acme","total":"10.00"}', REF, 1.0),  # spacing does not matter
    ('{"invoice_id": "INV-1", "vendor": "Acme", "total": 10.0}', REF, 0.0),  # type matters
    ("", REF, 0.0),
])
def test_exact_match(prediction: str, reference: str, expected: float) -> None:
    assert metrics.exact_match(prediction, reference) == expected


@pytest.mark.parametrize(("prediction", "expected"), [
    ('{"a": 1}', 1.0), ("[1, 2]", 1.0), ('"text"', 1.0), ('{"a": 1', 0.0), ("", 0.0), ("{'a': 1}", 0.0),
])
def test_json_valid(prediction: str, expected: float) -> None:
    assert metrics.json_valid(prediction) == expected


@pytest.mark.parametrize(("prediction", "reference", "expected"), [
    (REF, REF, 1.0),
    ('{"invoice_id": "INV-1", "vendor": "Acme"}', REF, 0.8),  # P=1, R=2/3
    ('{"invoice_id": "INV-1", "vendor": "Acme", "total": "10.00", "extra": 1}', REF, 6 / 7),  # P=3/4, R=1
    ('{"invoice_id": "INV-2", "vendor": "Globex", "total": "1"}', REF, 0.0),
    ("not json", REF, 0.0),
    ("[1]", REF, 0.0),
    ('{"a": {"b": 1, "c": 2}}', '{"a": {"b": 1, "c": 3}}', 0.5),  # nested fields compared by path
    ("anything", "plain text reference", None),  # not a JSON object: the metric does not apply
])
def test_field_f1(prediction: str, reference: str, expected: float | None) -> None:
    got = metrics.field_f1(prediction, reference)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


def test_score_averages_and_skips_non_json_references_for_f1() -> None:
    out = metrics.score([REF, "nope", "x"], [REF, REF, "x"], ["exact_match", "json_valid", "field_f1"])
    assert out["exact_match"] == pytest.approx(2 / 3)
    assert out["json_valid"] == pytest.approx(1 / 3)
    assert out["field_f1"] == pytest.approx(0.5)  # (1 + 0) / 2: the third reference is not JSON


def test_score_only_computes_requested_metrics() -> None:
    assert set(metrics.score(["a"], ["a"], ["exact_match"])) == {"exact_match"}


@pytest.mark.parametrize(("prediction", "expected"), [
    ('{"a": 1}', 1.0), ("[1, 2]", 1.0), ('"text"', 1.0), ('{"a": 1', 0.0), ("", 0.0), ("{'a': 1}", 0.0),
])
def test_answer_shape_without_a_schema_is_json_valid(prediction: str, expected: float) -> None:
    assert metrics.answer_shape(prediction) == (metrics.json_valid(prediction), None) == (expected, None)


SCHEMA = {"invoice_id": str, "total": float, "lines": object}


@pytest.mark.parametrize(("prediction", "expected"), [
    ('{"invoice_id": "A", "total": 1.5, "lines": []}', (1.0, 1.0)),
    ('{"invoice_id": "A", "total": 2, "lines": null, "extra": 1}', (1.0, 1.0)),  # int for float; extra keys ok
    ('{"invoice_id": "A", "lines": []}', (1.0, 0.0)),  # a key missing
    ('{"invoice_id": 7, "total": 1.5, "lines": []}', (1.0, 0.0)),  # a wrong type
    ('{"invoice_id": "A", "total": true, "lines": []}', (1.0, 0.0)),  # a bool is not a number here
    ("[1]", (1.0, 0.0)),
    ("not json", (0.0, 0.0)),
])
def test_answer_shape_with_a_schema(prediction: str, expected: tuple[float, float]) -> None:
    assert metrics.answer_shape(prediction, SCHEMA) == expected
