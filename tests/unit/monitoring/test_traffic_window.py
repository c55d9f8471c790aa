"""The monitors read what serving writes: requests and feedback logged by the real TrafficLogger (scrubbed,
Parquet, hour partitions), read back by traffic_read, checked — failed requests are not samples, and the
latest feedback on a request is its expected answer."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.unit.monitoring import traffic
from tuneloop.monitoring import checking, summary
from tuneloop.serving import traffic_log, traffic_read

START = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)


def test_a_logged_window_is_checked_with_its_feedback(tmp_path: Path) -> None:
    rows = traffic.rows(150, seed=11, template=traffic.DRIFTED_TEMPLATE)
    log = traffic_log.TrafficLogger(f"file://{tmp_path}", "inv", batch_size=64, flush_interval_seconds=3600,
                                    start=False)
    for i, row in enumerate(rows):
        answer = json.loads(row["completion"])
        answer["total"] = "0.00"  # the model gets the total wrong on the new template
        log.log(traffic_log.TrafficRecord(kind="request", request_id=f"r{i}", time=START + timedelta(minutes=i),
                                          model_id="inv/3", model_version="3", prompt=row["prompt"],
                                          completion=json.dumps(answer), status_code=200))
    for i in range(5):  # failed requests: logged, never samples
        log.log(traffic_log.TrafficRecord(kind="request", request_id=f"e{i}", time=START, status_code=500,
                                          error="generation failed", prompt="x"))
    for i in range(40):  # feedback on the first 40: first a wrong label, then the correction wins
        log.log(traffic_log.TrafficRecord(kind="feedback", request_id=f"r{i}", time=START + timedelta(hours=3),
                                          label="nope"))
        log.log(traffic_log.TrafficRecord(kind="feedback", request_id=f"r{i}",
                                          time=START + timedelta(hours=3, seconds=1), correction=rows[i]["completion"]))
    log.close()

    window = traffic_read.read_traffic(f"file://{tmp_path}", "inv", since=START)
    result = checking.check(traffic.frame(200, seed=1), window, checking.CheckConfig(
        min_samples=100, quality_metric="field_f1", quality_minimum=0.9))
    assert result.samples == 150
    assert result.drift_detected is True
    q = result.quality
    assert q is not None and q.labelled_samples == 40
    assert q.values["exact_match"] == 0.0 and q.value == pytest.approx(0.75)  # 3 of 4 fields right
    assert q.values["json_valid"] == 1.0
    assert result.verdict == summary.DEGRADED
