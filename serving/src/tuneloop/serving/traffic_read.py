"""Reading a deployment's inference log back: one row per logged request since a moment, with the
latest feedback on it joined by request id — the table the drift and quality monitors start from.

The controller's warm-up completions (serving.warmup) stay in the log but are left out of the table:
they are not users' traffic. Only the hour partitions at or after `since` are listed and read.
Feedback arrives after its request, so it is always in the same or a later partition than the
request it labels.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tuneloop.serving import traffic_log, warmup

FEEDBACK_COLUMNS = {"label": "feedback_label", "correction": "feedback_correction", "score": "feedback_score",
                    "time": "feedback_time"}
REQUEST_COLUMNS = ("request_id", "time", "model_id", "model_version", "prompt", "completion", "latency_ms",
                   "prompt_tokens", "completion_tokens", "max_tokens", "temperature", "finish_reason",
                   "status_code", "error", "pii_redactions")


def part_files(uri: str, deployment: str, since: datetime | None = None, filesystem: Any = None) -> list[str]:
    """The part files of `deployment` in hour partitions at or after `since`'s hour, sorted."""
    from pyarrow import fs

    if filesystem is None:
        filesystem, root = traffic_log.resolve(uri)
    else:
        root = uri.split("://", 1)[-1]
    base = f"{root.rstrip('/')}/deployment={deployment}"
    first_hour = traffic_log.hour_of(since) if since is not None else None
    hours = [info for info in filesystem.get_file_info(fs.FileSelector(base, allow_not_found=True))
             if info.type == fs.FileType.Directory and info.base_name.startswith("hour=")]
    files = []
    for hour in hours:
        if first_hour is not None and hour.base_name[len("hour="):] < first_hour:
            continue
        for info in filesystem.get_file_info(fs.FileSelector(hour.path)):
            if info.type == fs.FileType.File and info.base_name.startswith("part-") and info.base_name.endswith(
                    ".parquet"):
                files.append(info.path)
    return sorted(files)


def read_records(uri: str, deployment: str, since: datetime | None = None, filesystem: Any = None) -> Any:
    """Every logged record (requests and feedback) at or after `since`, as a DataFrame sorted by time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if filesystem is None:
        filesystem, _ = traffic_log.resolve(uri)
    files = part_files(uri, deployment, since, filesystem)
    if files:
        table = pa.concat_tables([pq.read_table(f, filesystem=filesystem, schema=traffic_log.schema())
                                  for f in files])
    else:
        table = traffic_log.schema().empty_table()
    frame = table.to_pandas()
    if since is not None:
        frame = frame[frame["time"] >= utc(since)]
    return frame.sort_values("time", kind="stable").reset_index(drop=True)


def read_traffic(uri: str, deployment: str, since: datetime | None = None, filesystem: Any = None) -> Any:
    """Requests since `since` (one row each, oldest first) with their latest feedback: columns
    `deployment`, the request fields, and feedback_label / feedback_correction / feedback_score /
    feedback_time (empty where no feedback came). Warm-up completions are left out."""
    records = read_records(uri, deployment, since, filesystem)
    requests = records[records["kind"] == traffic_log.KIND_REQUEST][list(REQUEST_COLUMNS)]
    requests = requests.loc[[not warmup.is_warmup(r, p) for r, p in
                             zip(requests["request_id"], requests["prompt"], strict=True)]]
    feedback = records[records["kind"] == traffic_log.KIND_FEEDBACK]
    # The latest word on a request wins: a correction after a label replaces it.
    latest = feedback.drop_duplicates("request_id", keep="last")[["request_id", *FEEDBACK_COLUMNS]]
    joined = requests.merge(latest.rename(columns=FEEDBACK_COLUMNS), on="request_id", how="left")
    joined.insert(0, "deployment", deployment)
    return joined.reset_index(drop=True)


def utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
