"""The monitors' MLflow side on a real local tracking store: the reference is the held-out set logged on
the served version's run, and a check's HTML report and summary land on a run of their own."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.monitoring import traffic
from tuneloop.monitoring import checking, reference, reporting, summary


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A sqlite tracking store holding one training run with a held-out set and a registered version."""
    import mlflow
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    # A bare sqlite store has no default artifact root: the experiments the checks create put their
    # artifacts under ./mlruns of the directory the store was first opened in — the repo's root, unless
    # it is opened here.
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        experiment = client.create_experiment("train", artifact_location=f"file://{root}/artifacts")
        run = client.create_run(experiment)
        held_out = root / "held_out.jsonl"
        with held_out.open("w") as f:
            for i, row in enumerate(traffic.rows(120, seed=1)):
                f.write(json.dumps({"key": f"k{i}", **row}) + "\n")
        client.log_artifact(run.info.run_id, str(held_out), artifact_path="dataset")
        client.set_terminated(run.info.run_id)
        client.create_registered_model("invoices")
        client.create_model_version("invoices", f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
        assert mlflow.get_tracking_uri()  # the module works without a process-wide tracking URI set
        yield uri, run.info.run_id


def test_the_reference_is_the_served_versions_held_out_set(store: tuple[str, str]) -> None:
    uri, run_id = store
    frame = reference.from_model_version(uri, "invoices", "1")
    assert len(frame) == 120 and {"prompt", "completion", "key"} <= set(frame.columns)
    assert frame["prompt"].tolist() == [r["prompt"] for r in traffic.rows(120, seed=1)]
    assert reference.from_run(uri, run_id).equals(frame)


def test_a_missing_version_or_run_is_reference_unavailable(store: tuple[str, str]) -> None:
    uri, _ = store
    with pytest.raises(reference.ReferenceUnavailable, match="invoices/7"):
        reference.from_model_version(uri, "invoices", "7")
    with pytest.raises(reference.ReferenceUnavailable, match=r"dataset/held_out\.jsonl"):
        reference.from_run(uri, "0" * 32)


def test_a_reference_file_by_uri(tmp_path: Path) -> None:
    path = tmp_path / "ref.parquet"
    traffic.frame(30, seed=1).to_parquet(path)
    assert len(reference.from_uri(f"file://{path}")) == 30
    with pytest.raises(reference.ReferenceUnavailable, match="cannot be read"):
        reference.from_uri(f"file://{tmp_path}/absent.jsonl")
    with pytest.raises(reference.ReferenceUnavailable, match="mount path"):
        reference.from_uri("pvc://claim/ref.jsonl")


def test_the_report_and_summary_are_logged_on_a_run_of_their_own(store: tuple[str, str], tmp_path: Path) -> None:
    import mlflow
    from mlflow import MlflowClient

    uri, _ = store
    ref = reference.from_model_version(uri, "invoices", "1")
    result = checking.check(ref, traffic.frame(150, seed=2, template=traffic.DRIFTED_TEMPLATE),
                            checking.CheckConfig(min_samples=100), tmp_path / "local-name.html")
    artifact = reporting.log_check(result, uri, "tuneloop-monitor/ns/invoices", "check-1", {"tuneloop.deployment": "x"})
    assert artifact.endswith("/monitor/report.html")
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=artifact, dst_path=str(tmp_path / "dl"),
                                                     tracking_uri=uri))
    html = local.read_text()
    assert "prompt_length" in html and len(html) > 10_000
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("tuneloop-monitor/ns/invoices")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert artifact.startswith(run.info.artifact_uri)
    assert run.info.status == "FINISHED" and run.data.tags["tuneloop.monitor.verdict"] == summary.DEGRADED
    assert run.data.metrics["drift_share"] == pytest.approx(result.drift_share)
    logged = json.loads(Path(mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="monitor/summary.json", dst_path=str(tmp_path / "s"),
        tracking_uri=uri)).read_text())
    assert logged["drifted_columns"] == result.drifted_columns


def test_an_insufficient_window_logs_its_summary_without_a_report(store: tuple[str, str], tmp_path: Path) -> None:
    uri, _ = store
    result = checking.check(traffic.frame(50, seed=1), traffic.frame(10, seed=2), checking.CheckConfig(),
                            tmp_path / "r.html")
    assert result.verdict == summary.INSUFFICIENT_DATA
    assert reporting.log_check(result, uri, "tuneloop-monitor/ns/small", "check-1").endswith("/monitor/summary.json")
