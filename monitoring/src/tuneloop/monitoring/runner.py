"""One scheduled check as the operator asks for it: read the traffic window and the reference, run
`checking.check`, log the report to MLflow, and answer in plain data.

The operator cannot import this library (it installs without the monitor extra; an import-linter
contract keeps it so), so it names `run_check` by its dotted path (TUNELOOP_MONITOR_CHECK) and calls it
in a worker thread with a JSON-like request. The answer is JSON-like too: the figures
`logic.monitor_verdict.Window` needs, or `{"error": <kind>, "message": …}` for a check that could not
run, the kind naming what failed so the operator can say so in MonitorStale:

- `reference`: the reference set cannot be read (file absent, held-out artifact missing);
- `registry`: MLflow does not answer (the held-out set cannot be looked up);
- `traffic`: the traffic log cannot be read;
- `check`: the check itself failed (the message has the error).

Request keys: `traffic_uri`, `deployment` (the Serve application name the log is partitioned by),
`since` (ISO time: the window's start), `reference` (`{"uri": …}` or `{"tracking_uri", "model",
"version"}`), `config` (CheckConfig's fields), optionally `report_dir`, and `tracking_uri` plus
`experiment` to log the summary and the Evidently HTML report as a run, and `feedback_uri` (a folder,
`file://` or `s3://`) to write the window's labelled feedback there as training examples for a retrain
(`feedback.build_feedback_set`, deduplicated against the reference); the answer then names the file
(`<feedback_uri>/<deployment>/<hash>.jsonl`, so the same examples are one file), its hash and count —
only for a window whose quality is below `feedback_below` when that is given (`could_retrain`).
"""

from __future__ import annotations

import json
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from tuneloop.monitoring import checking, feedback, reference, reporting

ERROR_REFERENCE = "reference"
ERROR_REGISTRY = "registry"
ERROR_TRAFFIC = "traffic"
ERROR_CHECK = "check"


def _failure(kind: str, message: str) -> dict[str, Any]:
    return {"error": kind, "message": message[:1000]}


def read_reference(spec: dict[str, Any]) -> Any:
    if spec.get("uri"):
        return reference.from_uri(spec["uri"])
    return reference.from_model_version(spec["tracking_uri"], spec["model"], spec["version"])


def _registry_down(e: Exception) -> bool:
    text = str(e).lower()
    return any(w in text for w in ("connection refused", "max retries", "failed to establish", "timed out",
                                   "name or service not known", "connectionerror"))


def run_check(request: dict[str, Any]) -> dict[str, Any]:
    try:
        ref = read_reference(request["reference"])
    except reference.ReferenceUnavailable as e:
        kind = ERROR_REGISTRY if not request["reference"].get("uri") and _registry_down(e) else ERROR_REFERENCE
        return _failure(kind, str(e))
    try:
        from tuneloop.serving import traffic_read

        since = datetime.fromisoformat(request["since"])
        current = traffic_read.read_traffic(request["traffic_uri"], request["deployment"], since)
        if "time" in current.columns and len(current):
            current = current[current["time"].map(lambda t: traffic_read.utc(_as_time(t)) >= since)]
    except Exception as e:  # pyarrow and fsspec raise their own errors for a missing or unreadable log
        return _failure(ERROR_TRAFFIC, f"traffic log {request['traffic_uri']} ({request['deployment']}): "
                                       f"{type(e).__name__}: {e}")
    config = checking.CheckConfig(**request.get("config", {}))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            report_dir = Path(request.get("report_dir") or tmp)
            summary = checking.check(ref, current, config, report_dir / "monitor-report.html")
            # Without report_dir the file dies with the temporary folder: only MLflow's copy is worth naming.
            report_uri = summary.report_path if request.get("report_dir") else None
            if request.get("tracking_uri") and request.get("experiment"):
                report_uri = reporting.log_check(summary, request["tracking_uri"], request["experiment"],
                                                 request["deployment"], {"tuneloop.deployment": request["deployment"]})
    except Exception as e:
        if _registry_down(e):
            return _failure(ERROR_REGISTRY, f"logging the check to {request.get('tracking_uri')}: {e}")
        return _failure(ERROR_CHECK, f"{type(e).__name__}: {e}")
    added = None
    measured = summary.quality.value if summary.quality is not None else None
    if request.get("feedback_uri") and could_retrain(measured, request.get("feedback_below")):
        try:
            added = write_feedback(current, ref, request["feedback_uri"], request["deployment"])
        except Exception as e:  # the figures stand; a retrain then goes without the feedback
            return _failure(ERROR_TRAFFIC, f"writing the window's feedback to {request['feedback_uri']}: "
                                           f"{type(e).__name__}: {e}")
    q = summary.quality
    return {
        "feedback": added,
        "samples": summary.samples,
        "insufficient": summary.verdict == "InsufficientData",
        "drift_share": summary.drift_share,
        "drifted_columns": summary.drifted_columns,
        "quality": q.value if q is not None else None,
        "report_uri": report_uri,
        "verdict": summary.verdict,
    }


def could_retrain(quality: float | None, below: float | None) -> bool:
    """Whether a retrain could take this window's feedback: only a breaching window triggers one, and a window
    breaches only when its quality was measured below the operator's highest bar (`feedback_below`: the
    minimum plus the recovery margin). Without that bar, every window's feedback is written. Healthy windows
    write nothing: at a 10 s interval that would be thousands of files a day that no retrain reads, and
    building one scrubs and deduplicates the whole window in the operator's process."""
    if below is None:
        return True
    return quality is not None and quality < below


def write_feedback(window: Any, ref: Any, folder: str, deployment: str) -> dict[str, Any] | None:
    """The window's new labelled examples as `<folder>/<deployment>/<hash>.jsonl`; None when there are none.
    Written once per content (the name is the hash), through a temporary name, so a reader never sees half."""
    from tuneloop.serving import traffic_log

    known = ref.to_dict("records") if hasattr(ref, "to_dict") else []
    added = feedback.build_feedback_set(window, known)
    if not added.examples:
        return None
    filesystem, root = traffic_log.resolve(folder)
    directory = f"{root.rstrip('/')}/{deployment}"
    path = f"{directory}/{added.hash[:32]}.jsonl"
    if filesystem.get_file_info(path).type.name == "NotFound":
        filesystem.create_dir(directory, recursive=True)
        body = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in added.examples).encode()
        with filesystem.open_output_stream(f"{path}.partial") as out:
            out.write(body)
        filesystem.move(f"{path}.partial", path)
    scheme = "s3" if folder.startswith("s3://") else "file"  # pvc:// resolves to the mounted path
    return {"uri": f"{scheme}://{path}", "hash": added.hash, "examples": len(added.examples),
            "labelled": added.labelled}


def _as_time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    if hasattr(value, "to_pydatetime"):
        return value.to_pydatetime()
    return datetime.fromisoformat(str(value))
