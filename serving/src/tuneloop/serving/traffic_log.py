"""The inference log: every request, response and feedback record of a deployment, PII-scrubbed with
the training job's scrubber, written in batches to Parquet under a traffic log URI, partitioned by
deployment and hour: `<root>/deployment=<name>/hour=YYYY-MM-DDTHH/part-<uuid>.parquet`.

A request never waits on the log. `log()` appends to a bounded in-memory queue and returns; a
background thread drains it when `batch_size` records are waiting or every `flush_interval_seconds`.
When the queue is full a record is dropped and counted (`dropped`, and `on_drop` for a metric):
memory stays bounded under overload, and the loss is visible instead of silent. A failed write puts
its records back (as far as there is room), so a short object-store outage loses nothing. `close()`
writes everything still queued. Scrubbing runs on the writer thread, off the request path.

Independent of Ray: the Serve ingress owns one logger per replica; tests drive it directly.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tuneloop.jobs import pii

KIND_REQUEST = "request"
KIND_FEEDBACK = "feedback"
HOUR_FORMAT = "%Y-%m-%dT%H"
# Free-text fields the scrubber sees; everything else is numbers, ids and enums.
SCRUBBED_FIELDS = ("prompt", "completion", "error", "label", "correction")


@dataclass(frozen=True)
class TrafficRecord:
    """One logged event: a completion request with its response (kind=request), or feedback on one."""

    kind: str
    request_id: str
    time: datetime
    model_id: str | None = None
    model_version: str | None = None
    prompt: str | None = None
    completion: str | None = None
    latency_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    finish_reason: str | None = None
    status_code: int | None = None
    error: str | None = None
    label: str | None = None
    correction: str | None = None
    score: float | None = None
    pii_redactions: int | None = None


def schema() -> Any:
    """The Parquet schema of a part file (deployment and hour live in the path, not the file)."""
    import pyarrow as pa

    text, i32, f64 = pa.string(), pa.int32(), pa.float64()
    types = {
        "kind": text, "request_id": text, "time": pa.timestamp("us", tz="UTC"), "model_id": text,
        "model_version": text, "prompt": text, "completion": text, "latency_ms": f64, "prompt_tokens": i32,
        "completion_tokens": i32, "max_tokens": i32, "temperature": f64, "finish_reason": text,
        "status_code": i32, "error": text, "label": text, "correction": text, "score": f64, "pii_redactions": i32,
    }
    assert list(types) == [f.name for f in dataclasses.fields(TrafficRecord)]
    return pa.schema(list(types.items()))


def scrub_record(record: TrafficRecord) -> TrafficRecord:
    """The record with PII replaced by placeholders in every free-text field, and the count of redactions."""
    changes: dict[str, Any] = {}
    total = 0
    for name in SCRUBBED_FIELDS:
        value = getattr(record, name)
        if value:
            clean, counts = pii.scrub(value)
            changes[name] = clean
            total += sum(counts.values())
    return dataclasses.replace(record, **changes, pii_redactions=total)


def hour_of(moment: datetime) -> str:
    """The hour partition value of a moment (UTC; a naive datetime is taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime(HOUR_FORMAT)


def partition_dir(root: str, deployment: str, hour: str) -> str:
    return f"{root.rstrip('/')}/deployment={deployment}/hour={hour}"


def resolve(uri: str) -> tuple[Any, str]:
    """A pyarrow filesystem and root path for a traffic log URI: file://, pvc:// or s3:// — resolved
    the way the training job resolves dataset URIs (S3 region and endpoint from AWS_* variables)."""
    from tuneloop.jobs import datasets
    from tuneloop.jobs.errors import JobError

    if not uri or "://" not in uri:
        raise ValueError(f"traffic log URI {uri!r}: use file:///abs/path, pvc://claim/path or s3://bucket/prefix")
    try:
        location = datasets.resolve(uri)
    except JobError as e:
        raise ValueError(f"traffic log URI {uri!r}: {e}") from e
    return location.filesystem, location.path


def write_batch(filesystem: Any, root: str, deployment: str, records: Sequence[TrafficRecord]) -> list[str]:
    """Write scrubbed records as one part file per hour; returns the paths. Local files appear atomically
    (written under a dot-name, then renamed), so a reader never sees half a file."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyarrow import fs

    by_hour: dict[str, list[TrafficRecord]] = collections.defaultdict(list)
    for record in records:
        by_hour[hour_of(record.time)].append(record)
    local = isinstance(filesystem, fs.LocalFileSystem)
    paths = []
    for hour, rows in sorted(by_hour.items()):
        folder = partition_dir(root, deployment, hour)
        filesystem.create_dir(folder, recursive=True)
        name = f"part-{uuid.uuid4().hex}.parquet"
        columns = {f.name: [getattr(r, f.name) for r in rows] for f in dataclasses.fields(TrafficRecord)}
        table = pa.Table.from_pydict(columns, schema=schema())
        target = f"{folder}/{name}"
        if local:
            tmp = f"{folder}/.{name}.tmp"
            pq.write_table(table, tmp, filesystem=filesystem)
            filesystem.move(tmp, target)
        else:
            pq.write_table(table, target, filesystem=filesystem)
        paths.append(target)
    return paths


@dataclass
class LogStats:
    """Counters a health endpoint or a metric shows."""

    queued: int
    written: int
    dropped: int
    write_errors: int
    last_error: str | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class TrafficLogger:
    """A bounded, non-blocking, batching Parquet writer for one deployment's traffic."""

    def __init__(self, uri: str, deployment: str, *, batch_size: int = 256, flush_interval_seconds: float = 5.0,
                 capacity: int = 10_000, on_drop: Callable[[int], None] | None = None,
                 filesystem: Any = None, start: bool = True) -> None:
        if not 1 <= batch_size <= capacity:
            raise ValueError(f"batch_size {batch_size} must be between 1 and capacity {capacity}")
        if flush_interval_seconds <= 0:
            raise ValueError(f"flush_interval_seconds {flush_interval_seconds} must be > 0")
        if not deployment or "/" in deployment:
            raise ValueError(f"deployment {deployment!r}: a non-empty name without '/'")
        if filesystem is None:
            filesystem, root = resolve(uri)
        else:
            root = uri.split("://", 1)[-1]
        self.uri, self.deployment, self.root, self.filesystem = uri, deployment, root, filesystem
        self.batch_size, self.capacity = batch_size, capacity
        self.flush_interval_seconds = flush_interval_seconds
        self.on_drop = on_drop
        self._queue: collections.deque[TrafficRecord] = collections.deque()
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()  # one writer at a time: the thread, flush() or close()
        self._wake = threading.Event()
        self._closed = False
        self._written = self._dropped = self._write_errors = 0
        self._last_error: str | None = None
        self._thread: threading.Thread | None = None
        if start:
            self._thread = threading.Thread(target=self._run, name=f"traffic-log-{deployment}", daemon=True)
            self._thread.start()

    # --- the request path: never blocks on I/O --------------------------------------------------

    def log(self, record: TrafficRecord) -> bool:
        """Queue a record; False (and counted as dropped) when the queue is full or the logger closed."""
        with self._lock:
            if self._closed or len(self._queue) >= self.capacity:
                self._dropped += 1
                accepted = False
            else:
                self._queue.append(record)
                accepted = True
                if len(self._queue) >= self.batch_size:
                    self._wake.set()
        if not accepted:
            self._notify_drop(1)
        return accepted

    def stats(self) -> LogStats:
        with self._lock:
            return LogStats(len(self._queue), self._written, self._dropped, self._write_errors, self._last_error)

    @property
    def dropped(self) -> int:
        return self.stats().dropped

    @property
    def written(self) -> int:
        return self.stats().written

    # --- the writer side ------------------------------------------------------------------------

    def flush(self) -> int:
        """Write everything queued now, in batches; returns the records written."""
        total = 0
        with self._write_lock:
            while True:
                batch = self._take(self.batch_size)
                if not batch:
                    return total
                if not self._write(batch):
                    return total
                total += len(batch)

    def close(self, timeout_seconds: float = 30.0) -> LogStats:
        """Refuse new records, stop the thread and write what is queued; idempotent."""
        with self._lock:
            already, self._closed = self._closed, True
        if not already:
            self._wake.set()
            if self._thread is not None:
                self._thread.join(timeout_seconds)
        deadline = time.monotonic() + timeout_seconds
        # A write may fail once (a blip); keep trying until the deadline, then count what is left as lost.
        while self.stats().queued and time.monotonic() < deadline:
            if not self.flush():
                time.sleep(0.2)
        with self._lock:
            lost = len(self._queue)
            self._queue.clear()
            self._dropped += lost
        if lost:
            self._notify_drop(lost)
        return self.stats()

    def _run(self) -> None:
        # Build the scrubber now, off the request path, not when the first batch (or close() within Serve's
        # graceful shutdown) is due: loading Presidio takes seconds, tens on a busy node (spaCy imports torch).
        with contextlib.suppress(Exception):  # a scrubber that cannot be built fails each flush, counted there
            pii.scrubber()
        while True:
            self._wake.wait(self.flush_interval_seconds)
            self._wake.clear()
            with self._lock:
                closed = self._closed
            if closed:
                return  # close() writes the rest on its own thread, within its timeout
            self.flush()

    def _take(self, n: int) -> list[TrafficRecord]:
        with self._lock:
            return [self._queue.popleft() for _ in range(min(n, len(self._queue)))]

    def _write(self, batch: list[TrafficRecord]) -> bool:
        try:
            write_batch(self.filesystem, self.root, self.deployment, [scrub_record(r) for r in batch])
        except Exception as e:
            self._requeue(batch, f"{type(e).__name__}: {e}"[:500])
            return False
        with self._lock:
            self._written += len(batch)
        return True

    def _requeue(self, batch: list[TrafficRecord], error: str) -> None:
        with self._lock:
            self._write_errors += 1
            self._last_error = error
            room = max(0, self.capacity - len(self._queue))
            kept, lost = batch[:room], len(batch) - min(room, len(batch))
            self._queue.extendleft(reversed(kept))
            self._dropped += lost
        if lost:
            self._notify_drop(lost)

    def _notify_drop(self, n: int) -> None:
        if self.on_drop is not None:
            with contextlib.suppress(Exception):  # a metric must never break the request path
                self.on_drop(n)


def now() -> datetime:
    return datetime.now(UTC)

