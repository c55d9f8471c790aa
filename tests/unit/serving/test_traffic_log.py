"""The inference log on a real local filesystem: flushing by size and by interval, bounded memory with
drop counting, PII scrubbing with the training job's scrubber, hour partitions, surviving a failed write,
flush on close, and reading it back with feedback joined by request id."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tuneloop.jobs import pii
from tuneloop.serving import traffic_log, traffic_read, warmup
from tuneloop.serving.traffic_log import TrafficLogger, TrafficRecord

T0 = datetime(2026, 11, 23, 13, 5, 0, tzinfo=UTC)


def request(i: int, at: datetime = T0, prompt: str = "hello", **extra: object) -> TrafficRecord:
    return TrafficRecord(kind=traffic_log.KIND_REQUEST, request_id=f"r{i}", time=at, model_id="inv/1",
                         model_version="1", prompt=prompt, completion=f"answer {i}", latency_ms=12.5,
                         prompt_tokens=5, completion_tokens=3, max_tokens=16, temperature=0.0,
                         finish_reason="stop", status_code=200, **extra)  # type: ignore[arg-type]


def feedback(i: int, at: datetime, label: str | None = None, correction: str | None = None) -> TrafficRecord:
    return TrafficRecord(kind=traffic_log.KIND_FEEDBACK, request_id=f"r{i}", time=at, label=label,
                         correction=correction)


def parts(root: Path) -> list[Path]:
    return sorted(root.rglob("part-*.parquet"))


def wait_for(check: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@pytest.fixture(scope="module", autouse=True)
def scrubber_built() -> None:
    """Build the process's PII scrubber once before the timed waits below: loading Presidio (and torch through
    spaCy) takes seconds to tens of seconds on a busy machine, a one-time cost the flush deadlines are not about."""
    pii.scrubber()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "traffic"


def test_flushes_when_a_batch_is_full(root: Path) -> None:
    log = TrafficLogger(f"file://{root}", "inv", batch_size=3, flush_interval_seconds=3600)
    try:
        for i in range(3):
            assert log.log(request(i))
        wait_for(lambda: log.written == 3)
        assert len(parts(root)) == 1
    finally:
        log.close()


def test_flushes_on_the_interval(root: Path) -> None:
    log = TrafficLogger(f"file://{root}", "inv", batch_size=100, flush_interval_seconds=0.1)
    try:
        log.log(request(1))
        wait_for(lambda: log.written == 1)
    finally:
        log.close()


def test_memory_is_bounded_and_drops_are_counted(root: Path) -> None:
    seen: list[int] = []
    log = TrafficLogger(f"file://{root}", "inv", batch_size=2, capacity=5, on_drop=seen.append, start=False)
    accepted = [log.log(request(i)) for i in range(8)]
    assert accepted == [True] * 5 + [False] * 3
    assert log.stats().queued == 5 and log.dropped == 3 and sum(seen) == 3
    stats = log.close()
    assert (stats.written, stats.dropped, stats.queued) == (5, 3, 0)
    assert len(parts(root)) == 3  # batches of 2, 2, 1
    assert not log.log(request(9)) and log.dropped == 4  # closed: refused, counted


def test_close_writes_everything_queued(root: Path) -> None:
    log = TrafficLogger(f"file://{root}", "inv", batch_size=1000, flush_interval_seconds=3600)
    for i in range(250):
        log.log(request(i))
    assert log.written == 0
    stats = log.close()
    assert stats.written == 250 and stats.dropped == 0
    assert len(traffic_read.read_traffic(f"file://{root}", "inv")) == 250


def test_pii_is_scrubbed_before_it_reaches_disk(root: Path) -> None:
    log = TrafficLogger(f"file://{root}", "inv", start=False)
    log.log(request(1, prompt="Invoice from bob@example.com, call +44 20 7946 0958."))
    log.log(feedback(1, T0 + timedelta(minutes=1), label="bad", correction="card 4111 1111 1111 1111"))
    log.close()
    raw = b"".join(p.read_bytes() for p in parts(root))
    assert b"bob@example.com" not in raw and b"4111 1111" not in raw and b"7946" not in raw
    frame = traffic_read.read_traffic(f"file://{root}", "inv")
    row = frame.iloc[0]
    assert row["prompt"] == "Invoice from [EMAIL], call [PHONE]."
    assert row["pii_redactions"] == 2
    assert row["feedback_correction"] == "card [CARD]" and row["feedback_label"] == "bad"


def test_partitioned_by_deployment_and_hour(root: Path) -> None:
    log = TrafficLogger(f"file://{root}", "inv", start=False)
    log.log(request(1, at=T0))
    log.log(request(2, at=T0 + timedelta(hours=1)))
    log.log(request(3, at=datetime(2026, 11, 23, 15, 0)))  # naive: taken as UTC
    log.close()
    folders = sorted(p.parent.relative_to(root).as_posix() for p in parts(root))
    assert folders == ["deployment=inv/hour=2026-11-23T13", "deployment=inv/hour=2026-11-23T14",
                       "deployment=inv/hour=2026-11-23T15"]
    assert not list(root.rglob(".*.tmp"))


def test_read_back_joins_the_latest_feedback_and_filters_by_time(root: Path) -> None:
    log = TrafficLogger(f"file://{root}", "inv", start=False)
    for i in range(4):
        log.log(request(i, at=T0 + timedelta(minutes=30 * i)))
    log.log(feedback(1, T0 + timedelta(hours=3), label="wrong"))
    log.log(feedback(1, T0 + timedelta(hours=4), label="right", correction="fixed"))
    log.log(feedback(3, T0 + timedelta(hours=3), label="good"))
    log.close()
    other = TrafficLogger(f"file://{root}", "other", start=False)
    other.log(request(99))
    other.close()

    frame = traffic_read.read_traffic(f"file://{root}", "inv")
    assert list(frame["request_id"]) == ["r0", "r1", "r2", "r3"]
    assert set(frame["deployment"]) == {"inv"}
    labels = frame.set_index("request_id")["feedback_label"]
    assert labels.isna().tolist() == [True, False, True, False]
    r1 = frame.set_index("request_id").loc["r1"]
    assert r1["feedback_label"] == "right" and r1["feedback_correction"] == "fixed"
    assert r1["completion"] == "answer 1" and r1["latency_ms"] == 12.5 and r1["status_code"] == 200

    since = traffic_read.read_traffic(f"file://{root}", "inv", since=T0 + timedelta(minutes=45))
    assert list(since["request_id"]) == ["r2", "r3"]
    assert since.set_index("request_id").loc["r3", "feedback_label"] == "good"
    # Only the partitions from since's hour on are opened.
    assert len(traffic_read.part_files(f"file://{root}", "inv", since=T0 + timedelta(hours=2))) == 2


def test_warm_ups_stay_in_the_log_but_not_in_the_monitors_table(root: Path) -> None:
    log = TrafficLogger(f"file://{root}", "inv", start=False)
    log.log(request(0))
    wu = warmup.body("inv/2")
    log.log(TrafficRecord(kind=traffic_log.KIND_REQUEST, request_id=warmup.request_id("inv/2"), time=T0,
                          model_id=wu["model"], model_version="2", prompt=wu["prompt"], completion="x",
                          latency_ms=900.0, max_tokens=wu["max_tokens"], temperature=0.0, status_code=200))
    # A user's request that borrows the prefix is still the user's traffic; so is the warm-up text under
    # a user's own id.
    log.log(TrafficRecord(kind=traffic_log.KIND_REQUEST, request_id="tuneloop-warmup-mine", time=T0,
                          model_id="inv/2", prompt="Invoice 7 total 12 EUR", status_code=200))
    log.log(request(3, prompt=warmup.PROMPT))
    log.close()

    assert warmup.request_id("inv/2") == "tuneloop-warmup-inv-2"
    assert len(traffic_read.read_records(f"file://{root}", "inv")) == 4
    frame = traffic_read.read_traffic(f"file://{root}", "inv")
    assert list(frame["request_id"]) == ["r0", "tuneloop-warmup-mine", "r3"]


def test_empty_log_reads_as_an_empty_table(root: Path) -> None:
    frame = traffic_read.read_traffic(f"file://{root}", "nothing-yet")
    assert frame.empty and {"request_id", "prompt", "feedback_label", "deployment"} <= set(frame.columns)


def test_a_failed_write_keeps_its_records(tmp_path: Path) -> None:
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where the log folder should be")
    log = TrafficLogger(f"file://{blocker}/traffic", "inv", batch_size=10, start=False)
    for i in range(5):
        log.log(request(i))
    assert log.flush() == 0
    stats = log.stats()
    assert (stats.queued, stats.write_errors, stats.dropped) == (5, 1, 0) and stats.last_error
    blocker.unlink()
    assert log.flush() == 5
    assert log.close().written == 5
    assert list(traffic_read.read_traffic(f"file://{blocker}/traffic", "inv")["request_id"]) == [
        f"r{i}" for i in range(5)]


def test_unsupported_uri_is_refused() -> None:
    with pytest.raises(ValueError, match="traffic log URI"):
        TrafficLogger("ftp://host/x", "inv")
    with pytest.raises(ValueError, match="traffic log URI"):
        TrafficLogger("/relative/without/scheme", "inv")
