"""A tracking URI from a Secret may carry user:password: the job never writes them into a message (which
becomes the FineTune's status and an Event) or its log."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuneloop.jobs import tracking
from tuneloop.jobs.errors import ExitCode, JobError


@pytest.mark.parametrize(("text", "expected"), [
    ("http://alice:s3cret@mlflow:5000/api", "http://***@mlflow:5000/api"),
    ("https://token@mlflow.example.com", "https://***@mlflow.example.com"),
    ("API request to http://a:b@h/x failed; retry http://c:d@h2", "API request to http://***@h/x failed; retry http://***@h2"),
    ("http://mlflow:5000/api/2.0", "http://mlflow:5000/api/2.0"),  # nothing to hide
    ("mail alice@example.com", "mail alice@example.com"),  # not a URL
])
def test_redact(text: str, expected: str) -> None:
    assert tracking.redact(text) == expected


def test_an_unreachable_server_fails_without_naming_the_password(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    tracker = tracking.Tracker("http://alice:s3cret@127.0.0.1:9", "tuneloop/x", "run", {}, tmp_path)
    with pytest.raises(JobError) as e:
        tracker.start()
    assert e.value.code == ExitCode.TRACKING_FAILED
    assert "s3cret" not in str(e.value) and "alice" not in str(e.value), str(e.value)
    assert "***@127.0.0.1:9" in str(e.value)
