"""The task metrics, one implementation for every place that scores answers: the training job's
held-out evaluation, and the deployment monitors' labelled and label-free quality on logged traffic
(tuneloop.monitoring). Exact match, JSON validity and field-level F1 over JSON answers.

Pure and standard-library only (an import-linter contract keeps it so), so the Serve application and the
monitors import it without torch or the operator. The tables in tests/unit/jobs/test_metrics.py are the spec.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

# The answer metrics computed here (the job adds the answer-token loss, which needs the model).
TEXT_METRICS = ("exact_match", "json_valid", "field_f1")


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the answers are equal after trimming; JSON answers compare as parsed values, so key
    order and spacing do not matter."""
    p, r = prediction.strip(), reference.strip()
    if p == r:
        return 1.0
    pj, rj = _parse(p), _parse(r)
    return float(pj is not _INVALID and rj is not _INVALID and pj == rj)


def json_valid(prediction: str) -> float:
    """1.0 when the answer parses as JSON."""
    return float(_parse(prediction) is not _INVALID)


def answer_shape(prediction: str, schema: Mapping[str, type] | None = None) -> tuple[float, float | None]:
    """(json_valid, schema_match) of one answer from one parse — label-free quality. schema_match is 1.0 when
    the answer is a JSON object with every key of `schema`, each value of that key's type (`object`: any;
    an integer passes for float), and None when no schema is given."""
    value = _parse(prediction)
    valid = float(value is not _INVALID)
    if schema is None:
        return valid, None
    if not isinstance(value, dict):
        return valid, 0.0
    for key, expected in schema.items():
        if key not in value:
            return valid, 0.0
        got = type(value[key])
        if not (expected is object or got is expected or (expected is float and got is int)):
            return valid, 0.0
    return valid, 1.0


def field_f1(prediction: str, reference: str) -> float | None:
    """F1 over the (field path, value) pairs of two JSON objects; None when the reference is not a
    JSON object (the metric does not apply), 0.0 when the prediction is not one."""
    ref = _parse(reference)
    if not isinstance(ref, dict):
        return None
    pred = _parse(prediction)
    if not isinstance(pred, dict):
        return 0.0
    ref_pairs, pred_pairs = set(_flatten(ref)), set(_flatten(pred))
    if not ref_pairs and not pred_pairs:
        return 1.0
    correct = len(ref_pairs & pred_pairs)
    if correct == 0:
        return 0.0
    precision, recall = correct / len(pred_pairs), correct / len(ref_pairs)
    return 2 * precision * recall / (precision + recall)


_INVALID = object()


def _parse(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, TypeError):
        return _INVALID


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(value, dict):
        out: list[tuple[str, str]] = []
        for k, v in value.items():
            out += _flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    if isinstance(value, list):
        return [(f"{prefix}[{i}]", json.dumps(v, sort_keys=True)) for i, v in enumerate(value)]
    return [(prefix, json.dumps(value))]


def score(predictions: Sequence[str], references: Sequence[str], metrics: Sequence[str]) -> dict[str, float]:
    """Mean of each text metric over the examples (field_f1 over those whose reference is JSON)."""
    out: dict[str, float] = {}
    if "exact_match" in metrics:
        out["exact_match"] = _mean([exact_match(p, r) for p, r in zip(predictions, references, strict=True)])
    if "json_valid" in metrics:
        out["json_valid"] = _mean([json_valid(p) for p in predictions])
    if "field_f1" in metrics:
        f1s = [f for p, r in zip(predictions, references, strict=True) if (f := field_f1(p, r)) is not None]
        if f1s:
            out["field_f1"] = _mean(f1s)
    return out


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0
