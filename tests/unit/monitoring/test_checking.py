"""The monitor check with real Evidently on small frames: in-distribution traffic is Healthy, a changed
input template drifts, a window below minSamples concludes nothing, quality reads feedback with the
training job's metric functions, and the HTML report is written and shows the monitored columns."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.unit.monitoring import traffic
from tuneloop.jobs import metrics
from tuneloop.monitoring import checking, columns, summary

REFERENCE = traffic.frame(200, seed=1)
CONFIG = checking.CheckConfig(min_samples=100, quality_metric="exact_match", quality_minimum=0.5)


@pytest.fixture(scope="module")
def in_distribution() -> summary.MonitorSummary:
    return checking.check(REFERENCE, traffic.frame(300, seed=2), CONFIG)


@pytest.fixture(scope="module")
def drifted(tmp_path_factory: pytest.TempPathFactory) -> summary.MonitorSummary:
    report = tmp_path_factory.mktemp("report") / "drift.html"
    return checking.check(REFERENCE, traffic.frame(300, seed=3, template=traffic.DRIFTED_TEMPLATE), CONFIG, report)


def test_in_distribution_traffic_is_healthy(in_distribution: summary.MonitorSummary) -> None:
    assert in_distribution.verdict == summary.HEALTHY
    assert in_distribution.drift_detected is False
    assert in_distribution.drift_share is not None and in_distribution.drift_share < 0.5
    assert [c.column for c in in_distribution.columns] == list(columns.DEFAULT_COLUMNS)
    assert in_distribution.samples == 300 and in_distribution.reference_samples == 200


def test_a_changed_input_template_drifts_on_the_input_columns(drifted: summary.MonitorSummary) -> None:
    assert drifted.verdict == summary.DEGRADED
    assert drifted.drift_detected is True
    assert set(drifted.drifted_columns) >= {"prompt_length", "prompt_word_count", "prompt_non_letter_share"}
    # The answers kept their shape: their columns do not drift.
    assert "response_json_valid" not in drifted.drifted_columns
    assert drifted.drift_share == pytest.approx(len(drifted.drifted_columns) / len(columns.DEFAULT_COLUMNS))


@pytest.mark.parametrize("case", ["in_distribution", "drifted"])
def test_each_column_verdict_follows_its_score_in_the_direction_of_its_method(
        case: str, request: pytest.FixtureRequest) -> None:
    result: summary.MonitorSummary = request.getfixturevalue(case)
    for c in result.columns:
        assert c.method == columns.CATALOGUE[c.column].method  # chosen explicitly, never auto
        below = c.score < c.threshold
        assert c.drifted == (below if c.score_kind == "p_value" else not below), c


def test_verdict_is_not_inverted(in_distribution: summary.MonitorSummary, drifted: summary.MonitorSummary) -> None:
    # Healthy and drifted traffic must get different verdicts, the drifted one the alarm.
    assert (in_distribution.drift_detected, drifted.drift_detected) == (False, True)
    assert (in_distribution.verdict, drifted.verdict) == (summary.HEALTHY, summary.DEGRADED)
    assert in_distribution.drift_share is not None and drifted.drift_share is not None
    assert drifted.drift_share > in_distribution.drift_share


def test_the_report_is_written_and_shows_the_monitored_columns(drifted: summary.MonitorSummary) -> None:
    assert drifted.report_path is not None
    html = Path(drifted.report_path).read_text()
    assert html.lstrip().lower().startswith("<!doctype html") or "<html" in html[:2000].lower()
    for name in columns.DEFAULT_COLUMNS:
        assert name in html


@pytest.mark.parametrize(("samples", "min_samples", "verdict"), [
    (99, 100, summary.INSUFFICIENT_DATA),
    (0, 1, summary.INSUFFICIENT_DATA),
    (100, 100, summary.DEGRADED),  # at minSamples the check runs (and this traffic has drifted)
])
def test_a_window_below_min_samples_concludes_nothing(samples: int, min_samples: int, verdict: str,
                                                       tmp_path: Path) -> None:
    current = traffic.frame(samples, seed=4, template=traffic.DRIFTED_TEMPLATE)
    if samples == 0:
        current = pd.DataFrame({"prompt": [], "completion": []})
    config = checking.CheckConfig(min_samples=min_samples)
    result = checking.check(REFERENCE, current, config, tmp_path / "r.html")
    assert result.verdict == verdict
    if verdict == summary.INSUFFICIENT_DATA:
        # Drifted traffic, but too little of it: no drift figure, no alarm, no report.
        assert result.drift_detected is None and result.drift_share is None and result.quality is None
        assert result.report_path is None and not (tmp_path / "r.html").exists()
        assert result.samples == samples


def test_failed_and_empty_answers_are_not_samples_and_do_not_break_descriptors() -> None:
    current = traffic.frame(120, seed=5)
    current["status_code"] = [500] * 10 + [200] * 110
    current.loc[0:19, "completion"] = ""  # 10 of them failed anyway; 10 answered with nothing
    result = checking.check(REFERENCE, current, checking.CheckConfig(min_samples=111))
    assert result.verdict == summary.INSUFFICIENT_DATA and result.samples == 110
    result = checking.check(REFERENCE, current, checking.CheckConfig(min_samples=110, quality_metric="json_valid"))
    assert result.quality is not None and result.quality.value == pytest.approx(100 / 110)


def _with_feedback(current: Any, gold: list[str], labelled: int, column: str = "feedback_correction") -> Any:
    current = current.copy()
    current[column] = gold[:labelled] + [None] * (len(current) - labelled)
    return current


def _wrong_ids(completions: list[str]) -> list[str]:
    out = []
    for c in completions:
        value = json.loads(c)
        value["invoice_id"] = value["invoice_id"][:-1] + ("0" if value["invoice_id"][-1] != "0" else "1")
        out.append(json.dumps(value))
    return out


def test_labelled_quality_uses_the_training_metrics_and_breaches_below_the_minimum() -> None:
    current = traffic.frame(150, seed=6)
    gold = current["completion"].tolist()
    current["completion"] = _wrong_ids(gold)  # same shape and length: no drift, every answer wrong
    result = checking.check(REFERENCE, _with_feedback(current, gold, 60), CONFIG)
    assert result.drift_detected is False
    q = result.quality
    assert q is not None and q.labelled_samples == 60
    expected = metrics.score(current["completion"].tolist()[:60], gold[:60], ["exact_match", "field_f1"])
    assert q.values["exact_match"] == pytest.approx(expected["exact_match"]) == 0.0
    assert q.values["field_f1"] == pytest.approx(expected["field_f1"]) == pytest.approx(0.75)
    assert q.values["json_valid"] == 1.0 and q.values["schema_match"] == 1.0
    assert (q.value, q.below_minimum, result.verdict) == (0.0, True, summary.DEGRADED)


def test_correct_answers_with_feedback_are_healthy_and_a_correction_overrides_a_label() -> None:
    current = traffic.frame(150, seed=7)
    gold = current["completion"].tolist()
    labelled = _with_feedback(current, ["wrong"] * 150, 60, column="feedback_label")
    labelled = _with_feedback(labelled, gold, 60)
    result = checking.check(REFERENCE, labelled, CONFIG)
    assert result.quality is not None
    assert (result.quality.value, result.quality.below_minimum, result.verdict) == (1.0, False, summary.HEALTHY)


def test_too_little_feedback_leaves_labelled_quality_unmeasured_not_breached() -> None:
    current = traffic.frame(150, seed=8)
    gold = current["completion"].tolist()
    current["completion"] = _wrong_ids(gold)
    result = checking.check(REFERENCE, _with_feedback(current, gold, 5), CONFIG)  # min_labelled_samples is 20
    assert result.quality is not None and result.quality.labelled_samples == 5
    assert result.quality.value is None and result.quality.below_minimum is None
    assert "exact_match" not in result.quality.values
    assert result.verdict == summary.HEALTHY


def test_schema_match_counts_answers_missing_a_reference_key() -> None:
    current = traffic.frame(100, seed=9)
    answers = [json.loads(c) for c in current["completion"]]
    current["completion"] = [json.dumps({k: v for k, v in a.items() if k != "total" or i % 2}) for i, a in
                             enumerate(answers)]
    result = checking.check(REFERENCE, current, checking.CheckConfig(
        min_samples=100, drift_columns=["response_schema_match"], quality_metric="json_valid"))
    assert result.quality is not None and result.quality.values["schema_match"] == pytest.approx(0.5)
    assert result.drifted_columns == ["response_schema_match"] and result.drift_share == 1.0


def test_no_schema_column_when_reference_answers_are_not_json_objects() -> None:
    reference = pd.DataFrame({"prompt": ["a b", "c d e"] * 20, "completion": ["plain", "text answer"] * 20})
    result = checking.check(reference, reference, checking.CheckConfig(
        min_samples=10, drift_columns=["response_length", "response_schema_match"], quality_metric="json_valid"))
    assert [c.column for c in result.columns] == ["response_length"]
    assert "response_schema_match" in result.skipped_columns
    assert result.quality is not None and "schema_match" not in result.quality.values


@pytest.mark.parametrize(("name", "says"), [("oov_share", "NLTK"), ("sentiment", "NLTK"), ("bogus", "choose from")])
def test_columns_that_download_data_or_do_not_exist_are_refused(name: str, says: str) -> None:
    with pytest.raises(columns.UnknownColumn, match=says):
        checking.check(REFERENCE, REFERENCE, checking.CheckConfig(min_samples=1, drift_columns=[name]))


def test_summary_is_json_ready(in_distribution: summary.MonitorSummary) -> None:
    data = json.loads(json.dumps(in_distribution.to_dict()))
    assert data["verdict"] == "Healthy" and len(data["columns"]) == len(columns.DEFAULT_COLUMNS)
    assert data["drifted_columns"] == in_distribution.drifted_columns


def test_drift_on_a_capped_sample_still_drifts_and_quality_counts_every_answer() -> None:
    current = traffic.frame(400, seed=10, template=traffic.DRIFTED_TEMPLATE)
    current.loc[:39, "completion"] = "not json"  # 40 of 400: json_valid is 0.9 exactly, whatever the sample
    capped = checking.CheckConfig(min_samples=100, quality_metric="json_valid", max_drift_rows=150)
    result = checking.check(REFERENCE, current, capped)
    assert (result.samples, result.drift_rows) == (400, 150)
    assert result.drift_detected is True
    assert result.quality is not None and result.quality.value == pytest.approx(0.9)
    # Seeded: the same window gives the same figures.
    again = checking.check(REFERENCE, current, capped)
    assert [c.score for c in again.columns] == [c.score for c in result.columns]
