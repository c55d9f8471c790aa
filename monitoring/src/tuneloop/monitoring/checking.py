"""One monitor check: a traffic window against a reference set, with Evidently 0.7.

Drift: every monitored column (columns.py) is a text descriptor of the inputs or outputs, computed by
Evidently on both frames and tested with the method chosen for it; the drift share is the share of
drifted columns (Evidently's DriftedColumnsCount) and the window drifted when it reaches the threshold.
Raw text columns are never tested themselves (Evidently would train a domain classifier on them).

Quality: label-free on every answered request (JSON validity, and schema match when the reference
answers are JSON objects); labelled where feedback came (exact match and field F1 against the latest
correction, else label) — `jobs.metrics`, the functions the training job evaluates with.

A window with fewer answered requests than `min_samples` is `InsufficientData`: nothing is computed
and nothing is concluded. The frames are pandas DataFrames with `prompt` and `completion` columns; the
current window may carry `feedback_label`, `feedback_correction` and `status_code` as
`tuneloop.serving.traffic_read.read_traffic` returns them.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneloop.jobs import metrics
from tuneloop.monitoring import columns as cols
from tuneloop.monitoring import summary as s

LABELLED_METRICS = ("exact_match", "field_f1")
LABEL_FREE_METRICS = ("json_valid", "schema_match")


@dataclass(frozen=True)
class CheckConfig:
    """Thresholds of one check (the operator fills it from spec.monitoring)."""

    min_samples: int = 100
    drift_columns: Sequence[str] = cols.DEFAULT_COLUMNS
    drift_share_threshold: float = 0.5
    quality_metric: str = "exact_match"
    quality_minimum: float = 0.5
    # Labelled figures need this many requests with feedback; fewer leave them unmeasured (None).
    min_labelled_samples: int = 20
    # Drift is tested on a seeded sample of at most this many rows of each frame (quality counts every
    # row). The reference is usually a held-out set of hundreds to thousands of rows, and a two-sample
    # test's power is bounded by the smaller sample: 20 000 current rows against 2 000 reference rows
    # test as sharply as 100 000 do, at a fraction of the descriptor cost. None: no cap.
    max_drift_rows: int | None = 20_000


class MonitorInputError(ValueError):
    """A frame the check cannot use (a missing column, an empty reference)."""


def answered(frame: Any) -> Any:
    """The rows that are answered requests: a completion and no error status. Empty strings become None:
    Evidently's NonLetterCharacterPercentage divides by the length and fails on ''."""
    missing = {cols.PROMPT, cols.COMPLETION} - set(frame.columns)
    if missing:
        raise MonitorInputError(f"frame has no {sorted(missing)} column; it has {sorted(frame.columns)}")
    ok = frame[cols.COMPLETION].notna()
    if "status_code" in frame.columns:
        ok &= frame["status_code"].isna() | (frame["status_code"] == 200)
    out = frame.loc[ok].reset_index(drop=True)
    for c in (cols.PROMPT, cols.COMPLETION):
        out[c] = out[c].where(out[c].astype(bool), None)
    return out


def expected_answers(frame: Any) -> list[str | None]:
    """Per row, the answer a person gave in feedback: the correction, else the label, else None."""
    out: list[str | None] = [None] * len(frame)
    for name in ("feedback_label", "feedback_correction"):  # a correction overrides a label
        if name in frame.columns:
            for i, v in enumerate(frame[name].tolist()):
                if isinstance(v, str) and v.strip():
                    out[i] = v
    return out


def quality(current: Any, config: CheckConfig, json_valid: Any, schema_match: Any | None) -> s.Quality:
    values: dict[str, float] = {}
    if len(current):
        values["json_valid"] = float(json_valid.mean())
        if schema_match is not None:
            values["schema_match"] = float(schema_match.mean())
    pairs = [(p or "", r) for p, r in zip(current[cols.COMPLETION].tolist(), expected_answers(current), strict=True)
             if r is not None]
    if pairs and len(pairs) >= config.min_labelled_samples:
        predictions, references = zip(*pairs, strict=True)
        values.update(metrics.score(predictions, references, LABELLED_METRICS))
    value = values.get(config.quality_metric)
    return s.Quality(metric=config.quality_metric, minimum=config.quality_minimum, value=value,
                     below_minimum=None if value is None else value < config.quality_minimum,
                     labelled_samples=len(pairs), values=values)


def check(reference: Any, current: Any, config: CheckConfig | None = None, report_path: Path | None = None,
          ) -> s.MonitorSummary:
    """Compare the `current` traffic window with `reference`; write Evidently's HTML report to
    `report_path` when given (not for an InsufficientData window: there is no report to write)."""
    config = config or CheckConfig()
    started = time.monotonic()
    wanted = cols.resolve(config.drift_columns)
    if config.quality_metric not in (*LABELLED_METRICS, *LABEL_FREE_METRICS):
        raise MonitorInputError(f"unknown quality metric {config.quality_metric!r}; choose from "
                                f"{[*LABELLED_METRICS, *LABEL_FREE_METRICS]}")
    ref, cur = answered(reference), answered(current)
    if len(ref) < 2:
        raise MonitorInputError(f"the reference has {len(ref)} answered rows; drift needs at least 2")
    if len(cur) < config.min_samples:
        return s.MonitorSummary(
            verdict=s.INSUFFICIENT_DATA, samples=len(cur), reference_samples=len(ref), min_samples=config.min_samples,
            drift_share=None, drift_share_threshold=config.drift_share_threshold, drift_detected=None, columns=(),
            quality=None, seconds=time.monotonic() - started)

    schema = cols.infer_schema(ref[cols.COMPLETION].tolist())
    skipped = {c.name: "the reference answers share no JSON object keys"
               for c in wanted if c.needs_schema and not schema}
    tested = [c for c in wanted if c.name not in skipped]
    # Quality reads JSON validity and schema match from the same columns drift tests, over every answer.
    ref = ref.assign(**cols.answer_shapes(ref[cols.COMPLETION].tolist(), schema))
    cur = cur.assign(**cols.answer_shapes(cur[cols.COMPLETION].tolist(), schema))
    shape_columns = [c for c in (cols.JSON_VALID, cols.SCHEMA_MATCH) if c in cur.columns]
    drift_ref, drift_cur = _sample(ref, config.max_drift_rows), _sample(cur, config.max_drift_rows)
    descriptors = cols.build_descriptors(tested)
    ref_ds = _dataset(drift_ref, descriptors, shape_columns)
    cur_ds = _dataset(drift_cur, descriptors, shape_columns)
    ref_frame, cur_frame = ref_ds.as_dataframe(), cur_ds.as_dataframe()

    drift: tuple[s.ColumnDrift, ...] = ()
    share = 0.0
    if tested:
        snapshot = _run_drift(tested, config.drift_share_threshold, cur_ds, ref_ds)
        drift, share = _read_drift(snapshot.dict(), tested, ref_frame, cur_frame)
        if report_path is not None:
            report_path.parent.mkdir(parents=True, exist_ok=True)
            snapshot.save_html(str(report_path))
    q = quality(cur, config, cur[cols.JSON_VALID], cur[cols.SCHEMA_MATCH] if schema else None)
    drifted = bool(tested) and share >= config.drift_share_threshold
    verdict = s.DEGRADED if drifted or q.below_minimum else s.HEALTHY
    return s.MonitorSummary(
        verdict=verdict, samples=len(cur), reference_samples=len(ref), min_samples=config.min_samples,
        drift_share=share if tested else None, drift_share_threshold=config.drift_share_threshold,
        drift_detected=drifted if tested else None, columns=drift, quality=q, skipped_columns=skipped,
        drift_rows=len(drift_cur),
        report_path=str(report_path) if report_path is not None and tested else None,
        seconds=time.monotonic() - started)


def _sample(frame: Any, rows: int | None) -> Any:
    """At most `rows` rows, a seeded uniform sample: the same window always gives the same verdict."""
    return frame if rows is None or len(frame) <= rows else frame.sample(n=rows, random_state=0)


def _dataset(frame: Any, descriptors: list[Any], categorical: list[str]) -> Any:
    from evidently import DataDefinition, Dataset

    text = [cols.PROMPT, cols.COMPLETION]
    return Dataset.from_pandas(frame[[*text, *categorical]].reset_index(drop=True),
                               data_definition=DataDefinition(text_columns=text, categorical_columns=categorical),
                               descriptors=descriptors)


def _run_drift(tested: list[cols.MonitoredColumn], share_threshold: float, current: Any, reference: Any) -> Any:
    from evidently import Report
    from evidently.presets import DataDriftPreset

    preset = DataDriftPreset(columns=[c.name for c in tested], drift_share=share_threshold,
                             per_column_method={c.name: c.method for c in tested},
                             per_column_threshold={c.name: c.threshold for c in tested})
    with warnings.catch_warnings():
        # numpy warns on constant columns while Evidently renders correlations; the tests are unaffected.
        warnings.simplefilter("ignore", RuntimeWarning)
        return Report([preset], include_tests=True).run(current, reference)  # current first


def _read_drift(snap: dict[str, Any], tested: list[cols.MonitoredColumn], ref_frame: Any, cur_frame: Any,
                ) -> tuple[tuple[s.ColumnDrift, ...], float]:
    """Per-column scores from the ValueDrift metrics, verdicts from their tests, the share from
    DriftedColumnsCount — matched on config.type, and cross-checked so a changed layout fails loudly."""
    scores: dict[str, float] = {}
    share: float | None = None
    count: float | None = None
    for m in snap["metrics"]:
        kind = m["config"].get("type")
        if kind == "evidently:metric_v2:ValueDrift":
            scores[m["config"]["column"]] = float(m["value"])
        elif kind == "evidently:metric_v2:DriftedColumnsCount":
            share, count = float(m["value"]["share"]), float(m["value"]["count"])
    failed = {t["metric_config"]["params"].get("column") for t in snap["tests"]
              if t["metric_config"]["params"].get("type") == "evidently:metric_v2:ValueDrift"
              and str(t["status"]).rsplit(".", 1)[-1] == "FAIL"}
    names = {c.name for c in tested}
    if share is None or count is None or set(scores) != names or len(failed & names) != int(count):
        raise RuntimeError("Evidently's snapshot does not have the expected drift metrics and tests: "
                           f"scores for {sorted(scores)}, drifted {sorted(failed)}, count {count}; "
                           + json.dumps([m['config'].get('type') for m in snap['metrics']]))
    out = tuple(
        s.ColumnDrift(column=c.name, method=c.method, threshold=c.threshold, score=scores[c.name],
                      score_kind=c.score_kind, drifted=c.name in failed,
                      reference_mean=_mean(ref_frame[c.name]), current_mean=_mean(cur_frame[c.name]))
        for c in tested)
    return out, share


def _mean(series: Any) -> float | None:
    value = series.astype(float).mean()
    return None if value != value else float(value)
