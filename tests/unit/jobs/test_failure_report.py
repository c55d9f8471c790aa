"""Where a failed job's JobResult goes when its MLflow run is already open (the real MLflow path of a
job that failed before opening one is in tests/api/test_job_failure_result.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from tuneloop.api.results import JobResult
from tuneloop.jobs import train
from tuneloop.jobs.errors import ExitCode, JobError


class RecordingTracker:
    def __init__(self, fail_logging: bool = False) -> None:
        self.run_id = "run-1"
        self.logged: list[JobResult] = []
        self.finished: list[bool] = []
        self.fail_logging = fail_logging

    def log_result(self, result: JobResult) -> None:
        if self.fail_logging:
            raise JobError(ExitCode.TRACKING_FAILED, "MLflow logging the result document failed: down")
        self.logged.append(result.model_copy())

    def finish(self, succeeded: bool) -> None:
        self.finished.append(succeeded)


def args(tmp_path: Path, *tags: str, extra: tuple[str, ...] = ()) -> argparse.Namespace:
    return train.parse_args(["--spec", "{}", "--storage", str(tmp_path), *extra,
                             *[x for t in tags for x in ("--tag", t)]])


def failed() -> JobResult:
    return JobResult(status="Failed", exit_code=int(ExitCode.TRAINING_FAILED), reason="TrainingFailed",
                     message="worker 1 died", run_id="run-1")


def test_an_open_run_gets_the_failed_document_then_is_closed_failed(tmp_path: Path) -> None:
    tracker = RecordingTracker()
    train.report_failure(args(tmp_path), failed(), train.Progress(tracker=tracker))
    assert [(r.status, r.reason, r.exit_code) for r in tracker.logged] == [("Failed", "TrainingFailed", 40)]
    assert tracker.finished == [False]


def test_a_tracking_failure_while_reporting_still_closes_the_run(tmp_path: Path) -> None:
    tracker = RecordingTracker(fail_logging=True)
    train.report_failure(args(tmp_path), failed(), train.Progress(tracker=tracker))  # does not raise
    assert tracker.finished == [False]


def test_without_a_tracking_uri_no_run_is_opened(tmp_path: Path, monkeypatch) -> None:
    """No tracking URI: mlflow would write ./mlruns in the pod, where no controller looks."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(train, "_report_on", lambda *_: (_ for _ in ()).throw(AssertionError("reported")))
    result = failed().model_copy(update={"run_id": None})
    train.report_failure(args(tmp_path, "tuneloop.run.attempt=1", extra=("--experiment", "e")), result,
                         train.Progress())
    assert result.run_id is None
