"""The operator's entry to the monitors (`runner.run_check`): plain data in, plain data out. A logged
window that drifted comes back as the figures the operator's verdict needs; a reference or traffic log
that cannot be read comes back as a failure naming which, never as an exception into the operator."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.unit.monitoring import traffic
from tuneloop.monitoring import runner
from tuneloop.serving import traffic_log

START = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)


def log_window(root: Path, n: int, template: str, start: datetime = START) -> None:
    log = traffic_log.TrafficLogger(f"file://{root}", "ns.md", batch_size=64, flush_interval_seconds=3600,
                                    start=False)
    for i, row in enumerate(traffic.rows(n, seed=5, template=template)):
        log.log(traffic_log.TrafficRecord(kind="request", request_id=f"r{i}", time=start + timedelta(seconds=i),
                                          model_id="m/1", model_version="1", prompt=row["prompt"],
                                          completion=row["completion"], status_code=200))
    log.close()


def request(root: Path, reference: Path, since: datetime = START - timedelta(minutes=1)) -> dict[str, Any]:
    return {"traffic_uri": f"file://{root}", "deployment": "ns.md", "since": since.isoformat(),
            "reference": {"uri": f"file://{reference}"}, "report_dir": str(root / "reports"),
            "config": {"min_samples": 50, "quality_metric": "json_valid", "quality_minimum": 0.5}}


def write_reference(path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in traffic.rows(200, seed=1)))
    return path


def test_a_drifted_window_comes_back_as_figures_with_its_report(tmp_path: Path) -> None:
    log_window(tmp_path / "log", 120, traffic.DRIFTED_TEMPLATE)
    answer = runner.run_check(request(tmp_path / "log", write_reference(tmp_path / "ref.jsonl")))
    assert "error" not in answer, answer
    assert answer["samples"] == 120 and answer["insufficient"] is False
    assert answer["drift_share"] >= 0.5 and "prompt_length" in answer["drifted_columns"]
    assert answer["quality"] == 1.0 and "<html" in Path(answer["report_uri"]).read_text()
    json.dumps(answer)  # plain data: it crosses into the operator


def test_only_the_window_counts(tmp_path: Path) -> None:
    log_window(tmp_path / "log", 120, traffic.DRIFTED_TEMPLATE)
    answer = runner.run_check(request(tmp_path / "log", write_reference(tmp_path / "ref.jsonl"),
                                      since=START + timedelta(seconds=100)))
    assert answer["samples"] == 20 and answer["insufficient"] is True and answer["drift_share"] is None


def test_unreadable_inputs_are_failures_that_say_which(tmp_path: Path) -> None:
    log_window(tmp_path / "log", 60, traffic.TEMPLATE)
    missing = runner.run_check(request(tmp_path / "log", tmp_path / "absent.jsonl"))
    assert missing["error"] == runner.ERROR_REFERENCE and "absent.jsonl" in missing["message"]
    bad_log = {**request(tmp_path / "log", write_reference(tmp_path / "ref.jsonl")), "traffic_uri": "nope://x"}
    assert runner.run_check(bad_log)["error"] == runner.ERROR_TRAFFIC


def test_a_windows_labelled_feedback_is_written_once_as_training_examples(tmp_path: Path) -> None:
    log_window(tmp_path / "log", 120, traffic.DRIFTED_TEMPLATE)
    rows = traffic.rows(120, seed=5, template=traffic.DRIFTED_TEMPLATE)
    log = traffic_log.TrafficLogger(f"file://{tmp_path / 'log'}", "ns.md", batch_size=64,
                                    flush_interval_seconds=3600, start=False)
    for i in range(0, 60, 2):  # a person labelled every other one of the first 60 (one with an e-mail in it)
        label = rows[i]["completion"] + (" mail ann@example.com" if i == 0 else "")
        log.log(traffic_log.TrafficRecord(kind="feedback", request_id=f"r{i}", time=START + timedelta(seconds=200 + i),
                                          label=label))
    log.close()
    folder = f"file://{tmp_path / 'feedback-sets'}"
    ask = {**request(tmp_path / "log", write_reference(tmp_path / "ref.jsonl")), "feedback_uri": folder}
    answer = runner.run_check(ask)
    added = answer["feedback"]
    assert added["labelled"] == 30 and added["examples"] == 30
    path = Path(added["uri"].removeprefix("file://"))
    assert path.parent == tmp_path / "feedback-sets" / "ns.md" and path.stem == added["hash"][:32]
    written = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(written) == 30 and {"prompt", "completion"} == set(written[0])
    assert not any("ann@example.com" in e["completion"] for e in written)  # scrubbed
    again = runner.run_check(ask)  # the same window: the same file, not a second one
    assert again["feedback"] == added and len(list(path.parent.iterdir())) == 1
    json.dumps(answer)


def test_a_healthy_windows_feedback_is_not_written(tmp_path: Path) -> None:
    """Only a window below the operator's highest breach bar can trigger a retrain, so only its feedback is
    kept: a deployment checked every 10 s would otherwise write thousands of files a day nobody reads."""
    log_window(tmp_path / "log", 120, traffic.DRIFTED_TEMPLATE)
    rows = traffic.rows(120, seed=5, template=traffic.DRIFTED_TEMPLATE)
    log = traffic_log.TrafficLogger(f"file://{tmp_path / 'log'}", "ns.md", batch_size=64,
                                    flush_interval_seconds=3600, start=False)
    for i in range(0, 60, 2):
        log.log(traffic_log.TrafficRecord(kind="feedback", request_id=f"r{i}", time=START + timedelta(seconds=200 + i),
                                          label=rows[i]["completion"]))
    log.close()
    folder = tmp_path / "feedback-sets"
    ask = {**request(tmp_path / "log", write_reference(tmp_path / "ref.jsonl")), "feedback_uri": f"file://{folder}"}
    healthy = runner.run_check({**ask, "feedback_below": 0.6})
    assert healthy["quality"] == 1.0 and healthy["feedback"] is None and not folder.exists(), healthy
    breaching = runner.run_check({**ask, "feedback_below": 1.01})  # the same window under a higher bar
    assert breaching["feedback"]["examples"] == 30 and len(list((folder / "ns.md").iterdir())) == 1, breaching


def test_could_retrain() -> None:
    assert runner.could_retrain(0.5, 0.9) and runner.could_retrain(None, None) and runner.could_retrain(1.0, None)
    assert not runner.could_retrain(0.9, 0.9) and not runner.could_retrain(None, 0.9)  # unmeasured: no breach


def test_no_labels_no_feedback_file(tmp_path: Path) -> None:
    log_window(tmp_path / "log", 120, traffic.DRIFTED_TEMPLATE)
    ask = {**request(tmp_path / "log", write_reference(tmp_path / "ref.jsonl")),
           "feedback_uri": f"file://{tmp_path / 'feedback-sets'}"}
    assert runner.run_check(ask)["feedback"] is None
    assert not (tmp_path / "feedback-sets").exists()
