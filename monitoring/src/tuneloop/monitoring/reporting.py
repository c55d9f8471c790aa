"""Keeping a check's outcome where people look: one MLflow run per check, holding Evidently's HTML
report (`monitor/report.html`), the summary as JSON (`monitor/summary.json`), and the headline figures
as metrics (drift share, quality, samples) so the MLflow UI can chart them across checks."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path

from tuneloop.monitoring import summary as s

REPORT_ARTIFACT = "monitor/report.html"
SUMMARY_ARTIFACT = "monitor/summary.json"


def log_check(result: s.MonitorSummary, tracking_uri: str, experiment: str, run_name: str,
              tags: Mapping[str, str] | None = None) -> str:
    """Log `result` (and its HTML report, when it has one) as a new run of `experiment`; returns the
    report's artifact URI, or the summary's when the check wrote no report (InsufficientData)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    run = client.create_run(experiment_id, run_name=run_name,
                            tags={**(tags or {}), "tuneloop.monitor.verdict": result.verdict})
    run_id = run.info.run_id
    try:
        figures = {"samples": float(result.samples), "check_seconds": result.seconds}
        if result.drift_share is not None:
            figures["drift_share"] = result.drift_share
        if result.quality is not None:
            figures.update({f"quality.{k}": v for k, v in result.quality.values.items()})
        for key, value in figures.items():
            client.log_metric(run_id, key, value)
        with tempfile.TemporaryDirectory() as tmp:
            summary_path = Path(tmp) / Path(SUMMARY_ARTIFACT).name
            summary_path.write_text(json.dumps(result.to_dict(), indent=2, sort_keys=True))
            client.log_artifact(run_id, str(summary_path), artifact_path=str(Path(SUMMARY_ARTIFACT).parent))
        artifact = SUMMARY_ARTIFACT
        if result.report_path:
            report = Path(result.report_path)
            with tempfile.TemporaryDirectory() as tmp:
                # The artifact's name is fixed whatever the local file was called.
                named = Path(tmp) / Path(REPORT_ARTIFACT).name
                named.write_bytes(report.read_bytes())
                client.log_artifact(run_id, str(named), artifact_path=str(Path(REPORT_ARTIFACT).parent))
            artifact = REPORT_ARTIFACT
        client.set_terminated(run_id, "FINISHED")
    except Exception:
        client.set_terminated(run_id, "FAILED")
        raise
    return f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{artifact}"
