"""The monitored columns: each a text descriptor of the request's input (`prompt`) or the model's output
(`completion`), computed by Evidently, with the drift method it is tested with chosen here, explicitly,
per column — never left to Evidently's size-dependent automatic choice, so a verdict means the same at
100 and at 100 000 rows.

Method per kind of column:
- numeric descriptors (lengths, word counts, non-letter share): two-sample Kolmogorov-Smirnov, drift when
  p < 0.05. The reference is usually the champion's held-out set (tens to thousands of rows); a p-value
  accounts for both sample sizes, where a normed distance (wasserstein, psi) raises false alarms on a
  window of 100 rows against 40 reference rows from sampling noise alone.
- yes/no descriptors (valid JSON, schema match): Jensen-Shannon distance, drift when ≥ 0.1. Robust when one
  side is all-yes, where chi-square and the z-test have an empty expected cell.

Offline trap: OOVWordsPercentage and Sentiment call nltk.download at first use and fail without the
internet; they are not offered. JSON validity is a custom descriptor over `jobs.metrics.json_valid`, the
training evaluation's own function, so drift and label-free quality count the same thing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tuneloop.jobs import metrics

PROMPT = "prompt"
COMPLETION = "completion"
JSON_VALID = "response_json_valid"
SCHEMA_MATCH = "response_schema_match"
# The completion with no answer as '' (answered() makes it None for the length descriptors):
# JSONSchemaMatch calls json.loads on the value and fails on None.
COMPLETION_TEXT = "completion_text"

# How a method's score reads: a p-value drifts when BELOW the threshold, a distance when AT OR ABOVE it.
SCORE_KINDS: dict[str, str] = {"ks": "p_value", "jensenshannon": "distance"}


@dataclass(frozen=True)
class MonitoredColumn:
    """One descriptor column: its name (the alias the spec's drift.columns uses), the text it describes,
    the Evidently descriptor that computes it, and how its drift is tested."""

    name: str
    source: str
    descriptor: str
    method: str
    threshold: float
    needs_schema: bool = False

    @property
    def score_kind(self) -> str:
        return SCORE_KINDS[self.method]


def _numeric(name: str, source: str, descriptor: str) -> MonitoredColumn:
    return MonitoredColumn(name, source, descriptor, method="ks", threshold=0.05)


def _yes_no(name: str, source: str, descriptor: str, needs_schema: bool = False) -> MonitoredColumn:
    return MonitoredColumn(name, source, descriptor, method="jensenshannon", threshold=0.1, needs_schema=needs_schema)


CATALOGUE: dict[str, MonitoredColumn] = {c.name: c for c in (
    _numeric("prompt_length", PROMPT, "TextLength"),
    _numeric("prompt_word_count", PROMPT, "WordCount"),
    _numeric("prompt_non_letter_share", PROMPT, "NonLetterCharacterPercentage"),
    _numeric("response_length", COMPLETION, "TextLength"),
    _numeric("response_word_count", COMPLETION, "WordCount"),
    _numeric("response_non_letter_share", COMPLETION, "NonLetterCharacterPercentage"),
    _yes_no(JSON_VALID, COMPLETION, "json_valid"),
    # Keys (and value types) every JSON-object answer of the reference has; absent when it has none.
    _yes_no(SCHEMA_MATCH, COMPLETION, "JSONSchemaMatch", needs_schema=True),
)}

# Three input and two output columns: a changed input template alone (3 of 5) crosses a 0.5 drift share.
DEFAULT_COLUMNS: tuple[str, ...] = (
    "prompt_length", "prompt_word_count", "prompt_non_letter_share", "response_length", JSON_VALID,
)

_NOT_OFFERED = {
    "oov_share": "OOVWordsPercentage downloads NLTK data at first use and fails offline",
    "sentiment": "Sentiment downloads NLTK data at first use and fails offline",
}


class UnknownColumn(ValueError):
    """A drift column the monitors do not compute."""


def resolve(names: Iterable[str]) -> list[MonitoredColumn]:
    """The catalogue entries for `names` (order kept, duplicates dropped); an unknown name says what exists."""
    out: list[MonitoredColumn] = []
    for name in names:
        if name in _NOT_OFFERED:
            raise UnknownColumn(f"drift column {name!r} is not offered: {_NOT_OFFERED[name]}; "
                                f"choose from {sorted(CATALOGUE)}")
        if name not in CATALOGUE:
            raise UnknownColumn(f"unknown drift column {name!r}; choose from {sorted(CATALOGUE)}")
        if CATALOGUE[name] not in out:
            out.append(CATALOGUE[name])
    return out


def json_valid_column(column: Any) -> Any:
    """Evidently custom descriptor: `jobs.metrics.json_valid` per answer, as a yes/no column."""
    from evidently.core.datasets import DatasetColumn

    return DatasetColumn("cat", column.data.map(lambda text: bool(metrics.json_valid(text or ""))))


def build_descriptor(column: MonitoredColumn, schema: Mapping[str, type] | None) -> Any:
    """The Evidently descriptor that computes `column`, aliased to its name."""
    from evidently import descriptors as d

    if column.descriptor == "json_valid":
        return d.CustomColumnDescriptor(column.source, json_valid_column, alias=column.name)
    if column.descriptor == "JSONSchemaMatch":
        return d.JSONSchemaMatch(COMPLETION_TEXT, expected_schema=dict(schema or {}), validate_types=True,
                                 alias=column.name)
    factories: dict[str, Callable[..., Any]] = {
        "TextLength": d.TextLength, "WordCount": d.WordCount,
        "NonLetterCharacterPercentage": d.NonLetterCharacterPercentage,
    }
    return factories[column.descriptor](column.source, alias=column.name)


def infer_schema(completions: Sequence[str | None]) -> dict[str, type] | None:
    """The keys every JSON-object answer in `completions` has, each with its value type when that type is
    the same everywhere (else `object`); None when no answer is a JSON object or they share no key."""
    import json

    keys: dict[str, set[type]] | None = None
    for text in completions:
        try:
            value = json.loads(text) if text else None
        except ValueError:
            continue
        if not isinstance(value, dict):
            continue
        types = {k: type(v) for k, v in value.items()}
        if keys is None:
            keys = {k: {t} for k, t in types.items()}
        else:
            keys = {k: seen | {types[k]} for k, seen in keys.items() if k in types}
    if not keys:
        return None
    return {k: next(iter(ts)) if len(ts) == 1 else object for k, ts in sorted(keys.items())}
