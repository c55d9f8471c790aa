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
internet; they are not offered. JSON validity and schema match come from `jobs.metrics.answer_shape` (the
training metrics' own JSON parse, once per answer) and are drift-tested by Evidently as categorical
columns, so drift and label-free quality count the same thing. The schema is read off the reference
answers (`infer_schema`).
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
    _yes_no(JSON_VALID, COMPLETION, "answer_shape"),
    # Keys (and value types) every JSON-object answer of the reference has; absent when it has none.
    _yes_no(SCHEMA_MATCH, COMPLETION, "answer_shape", needs_schema=True),
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


def answer_shapes(completions: Sequence[str | None], schema: Mapping[str, type] | None) -> dict[str, list[bool]]:
    """The yes/no columns `response_json_valid` and, with a schema, `response_schema_match`, from one
    `jobs.metrics.answer_shape` parse per answer. Computed on the whole window (quality counts every
    answer) and handed to Evidently as categorical columns for the drift test."""
    shapes = [metrics.answer_shape(text or "", schema) for text in completions]
    out = {JSON_VALID: [valid == 1.0 for valid, _ in shapes]}
    if schema is not None:
        out[SCHEMA_MATCH] = [match == 1.0 for _, match in shapes]
    return out


def build_descriptors(tested: Sequence[MonitoredColumn]) -> list[Any]:
    """Evidently's descriptors for the `tested` text columns, aliased to their names (the answer-shape
    columns come precomputed, see `answer_shapes`)."""
    from evidently import descriptors as d

    factories: dict[str, Callable[..., Any]] = {
        "TextLength": d.TextLength, "WordCount": d.WordCount,
        "NonLetterCharacterPercentage": d.NonLetterCharacterPercentage,
    }
    return [factories[c.descriptor](c.source, alias=c.name) for c in tested if c.descriptor in factories]


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
