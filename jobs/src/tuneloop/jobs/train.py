"""`python -m tuneloop.jobs.train`: the whole training job for one FineTune run, in order —
parse the spec, read and validate the data, resolve the base model, start Ray Train, and while its
workers start and load the model: prepare the data (scrub, dedupe, hash split, frozen held-out set) and
open the MLflow run, then hand both to the workers; train (resuming from the run storage's latest
checkpoint), evaluate the model and the prompt baseline on the held-out set, log the model, and write
the JobResult JSON the controller reads.

    python -m tuneloop.jobs.train --spec SPEC --storage DIR [--result FILE]
        [--tracking-uri URI] [--experiment NAME] [--run-name NAME] [--tag KEY=VALUE ...]

SPEC is a file (JSON or YAML; a FineTuneSpec or a whole FineTune object) or an inline JSON string.
Exit codes and failure reasons are in tuneloop.jobs.errors; on a failure the job also writes a Failed
JobResult to --result and marks the MLflow run FAILED (a failed run never gets a model). The controller
of a RayJob cannot read --result (it lies in the pod), so the failed document also goes onto the MLflow
run — or, when the job failed before opening one (bad data is found first), onto a run of its own
tagged like the job's — whenever the job was given the attempt tag the controller looks it up by.
The data is read and checked against the spec before torch and Ray are imported, so a schema error fails
in about a second; data that leaves too few distinct examples or an empty split is found while Ray Train
starts (the run is then called off: seconds more).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneloop.api import constants
from tuneloop.api.finetune import PREFERENCE_METRICS, TEXT_METRICS, FineTuneSpec
from tuneloop.api.results import ChampionScore, JobResult
from tuneloop.jobs import champion, datasets, timeline
from tuneloop.jobs.errors import ExitCode, JobError

if TYPE_CHECKING:  # torch and Ray load with these modules: imported when the job gets that far
    from tuneloop.jobs.modeling import ModelOptions
    from tuneloop.jobs.training import EarlyFit

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tuneloop.jobs.train", description=__doc__.splitlines()[0])
    p.add_argument("--spec", required=True, help="FineTune spec: a file path (JSON/YAML) or inline JSON")
    p.add_argument("--storage", required=True, type=Path,
                   help="run storage folder: prepared data, held-out set, checkpoints (resume looks here)")
    p.add_argument("--result", type=Path, help="where to write the JobResult JSON (atomically)")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI)")
    p.add_argument("--experiment", default=None, help="MLflow experiment (default: spec.registry.experiment)")
    p.add_argument("--run-name", default=None, help="MLflow run name")
    p.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE", help="lineage tag on the MLflow run")
    p.add_argument("--extra-data", action="append", default=[], metavar="URI",
                   help="more examples ({prompt, completion} JSONL, e.g. a retrain's labelled feedback) added to "
                        "spec.dataset before preparation: a new dataset version with its own hash")
    return p.parse_args(argv)


def load_spec(text: str) -> FineTuneSpec:
    """A FineTuneSpec from inline JSON or a JSON/YAML file; accepts a whole FineTune object too."""
    import pydantic
    import yaml

    source = "inline --spec"
    if not text.lstrip().startswith("{"):
        path = Path(text)
        if not path.is_file():
            raise JobError(ExitCode.CONFIG_INVALID, f"--spec {text!r} is neither inline JSON nor an existing file")
        source, text = str(path), path.read_text(encoding="utf-8")
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise JobError(ExitCode.CONFIG_INVALID, f"{source}: not JSON or YAML: {e}") from e
    if isinstance(document, dict) and "spec" in document and "baseModel" not in document:
        document = document["spec"]
    if not isinstance(document, dict):
        raise JobError(ExitCode.CONFIG_INVALID, f"{source}: expected a FineTune spec object")
    try:
        return FineTuneSpec.model_validate(document)
    except pydantic.ValidationError as e:
        problems = "; ".join(f"spec.{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors()[:5])
        raise JobError(ExitCode.CONFIG_INVALID, f"{source}: {problems}") from e


def check_spec(spec: FineTuneSpec) -> None:
    """Rules the job enforces before touching data (the CRD's CEL rules repeated for direct use)."""
    fmt, metrics = spec.dataset.format, spec.evaluation.metrics
    if spec.method == "dpo" and fmt != "preference":
        raise JobError(ExitCode.CONFIG_INVALID,
                       f"spec.method dpo trains on preference pairs, but spec.dataset.format is {fmt!r}: set it to "
                       "preference (fields prompt, chosen, rejected)")
    if fmt == "preference" and spec.method != "dpo":
        raise JobError(ExitCode.CONFIG_INVALID,
                       "spec.dataset.format preference is only used by method dpo; use instruction, chat or completion")
    if fmt == "text" and spec.method not in ("lora", "full"):
        raise JobError(ExitCode.CONFIG_INVALID,
                       f"spec.dataset.format text (continued pretraining) trains with method lora or full, not "
                       f"{spec.method!r}")
    if fmt == "text" and not set(metrics) <= set(TEXT_METRICS):
        raise JobError(ExitCode.CONFIG_INVALID,
                       f"spec.dataset.format text has no answers to generate and compare, but spec.evaluation.metrics "
                       f"is {metrics}: set it to [perplexity, loss] and spec.evaluation.promotion.metric to perplexity")
    if spec.method != "dpo" and set(metrics) & set(PREFERENCE_METRICS):
        raise JobError(ExitCode.CONFIG_INVALID,
                       f"spec.evaluation.metrics {metrics}: preference_accuracy and reward_margin score preference "
                       "pairs and need method dpo")
    if spec.method == "qlora" and spec.resources.gpus < 1:
        raise JobError(ExitCode.RESOURCES_UNAVAILABLE,
                       "spec.method qlora loads the base model in 4-bit through bitsandbytes, which needs a CUDA "
                       "GPU: set spec.resources.gpus >= 1, or use method lora on CPU")
    if spec.evaluation.promotion.metric not in spec.evaluation.metrics:
        raise JobError(ExitCode.CONFIG_INVALID,
                       f"spec.evaluation.promotion.metric {spec.evaluation.promotion.metric!r} must be one of "
                       f"spec.evaluation.metrics {spec.evaluation.metrics}")


def parse_tags(pairs: Sequence[str]) -> dict[str, str]:
    tags = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise JobError(ExitCode.CONFIG_INVALID, f"--tag {pair!r}: expected KEY=VALUE")
        tags[key] = value
    return tags


def write_result(path: Path | None, result: JobResult) -> None:
    """Write the result atomically: a reader sees the old file or the whole new one, never a part."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json.dumps(result.to_k8s(), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


@dataclass
class Progress:
    """What a failed job has got as far as, for its failure report."""

    spec: FineTuneSpec | None = None
    tags: dict[str, str] = field(default_factory=dict)
    tracker: Any = None  # tracking.Tracker, once its MLflow run is open


def run(args: argparse.Namespace, result: JobResult, started: float, progress: Progress | None = None) -> JobResult:
    """The job proper; fills `result` and `progress` as it goes so a failure still reports what was done."""
    from tuneloop.jobs import modeling, training

    progress = progress or Progress()
    spec = progress.spec = load_spec(args.spec)
    check_spec(spec)
    progress.tags = parse_tags(args.tag)
    storage: Path = args.storage.resolve()
    t = spec.training
    loaded = datasets.load(spec.dataset, extra_uris=args.extra_data)  # schema errors: before anything slow
    _stage("data_loaded")
    # Ray Train starts now, on a thread: its controller and workers start and load the base model while
    # this thread scrubs, dedupes and splits the data and opens the MLflow run; the workers get the rest of
    # their config through a handoff file (training.start_fit). An unknown base model is reported after
    # the data is prepared, as before.
    early: training.EarlyFit | None = None
    model_error: JobError | None = None
    try:
        base_dir = modeling.resolve_model_dir(spec.base_model.uri, spec.base_model.revision, storage / "cache")
    except JobError as e:
        model_error = e
    options = modeling.ModelOptions(
        model_dir=str(base_dir) if model_error is None else "", method=spec.method, lora_rank=spec.lora.rank,
        lora_alpha=spec.lora.alpha, lora_dropout=spec.lora.dropout,
        lora_target_modules=tuple(spec.lora.target_modules), precision=t.precision, seed=t.seed)
    try:
        if model_error is None:
            training.init_ray()
            _stage("ray_init")
            training.load_trainer()  # torch: before any other thread of this process imports it
            early = training.start_fit(options, spec.resources.workers, spec.resources.gpus, storage / "ray",
                                       storage / f"handoff-{uuid.uuid4().hex[:12]}.json")
            _stage("fit_start")
        return _train(args, result, started, progress, spec, storage, loaded, options, early, model_error)
    except BaseException as e:
        if early is not None:
            early.abort(f"{type(e).__name__}: {e}")
        raise
    finally:
        if early is not None:
            early.handoff.unlink(missing_ok=True)


def _train(args: argparse.Namespace, result: JobResult, started: float, progress: Progress, spec: FineTuneSpec,
           storage: Path, loaded: datasets.Loaded, options: ModelOptions, early: EarlyFit | None,
           model_error: JobError | None) -> JobResult:
    from tuneloop.jobs import evaluating, tracking, training

    tags, t = progress.tags, spec.training
    prepared = datasets.prepare(spec.dataset, storage / "data", loaded=loaded)
    result.dataset = prepared.summary
    _stage("data_prepared")
    _log(f"data: {prepared.summary.train_rows} train / {prepared.summary.eval_rows} held-out, "
         f"hash {prepared.summary.hash[:12]}, {prepared.summary.duplicates_removed} duplicates removed, "
         f"PII {prepared.summary.pii_redactions}")
    if model_error is not None:
        raise model_error
    assert early is not None
    base_dir = Path(options.model_dir)

    tracker = tracking.Tracker(args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"),
                               args.experiment or spec.registry.experiment or f"tuneloop/{spec.registry.model_name}",
                               args.run_name, tags, storage)
    result.run_id = tracker.start()
    result.experiment_id = tracker.experiment_id
    progress.tracker = tracker
    _stage("tracker_started")
    try:
        tracker.log_spec(spec)
        tracker.log_dataset(prepared.summary, prepared.held_out_path)
        tracker.set_stage("training")
        loop = training.LoopConfig(
            model=options,
            train_path=str(prepared.train_path), held_out_path=str(prepared.held_out_path), epochs=t.epochs,
            learning_rate=t.learning_rate, batch_size=t.batch_size,
            gradient_accumulation_steps=t.gradient_accumulation_steps, max_seq_length=t.max_seq_length,
            warmup_ratio=t.warmup_ratio, weight_decay=t.weight_decay, seed=t.seed,
            tracking_uri=tracker.tracking_uri, run_id=result.run_id, dataset_format=spec.dataset.format,
            dpo_beta=spec.dpo.beta)
        early.send(loop)
        _stage("handed_over")
        # A CPU job evaluates in this process: import what it needs while Ray Train runs.
        warming = None if spec.resources.gpus else evaluating.warm_up()
        outcome = early.result()
        _stage("fit_done")
        if spec.resources.gpus:  # held from the moment the worker group was asked for
            result.gpu_seconds = (time.monotonic() - early.started) * spec.resources.workers * spec.resources.gpus
        result.resumed_from_checkpoint = outcome.resumed_from
        last = outcome.history[-1]
        result.train_metrics = {**{k: float(v) for k, v in last.items()},
                                "first_epoch_train_loss": float(outcome.history[0]["train_loss"]),
                                "resumed_at_epoch": float(outcome.resumed_at_epoch)}
        _log(f"trained: {len(outcome.history)} epochs, train_loss {outcome.history[0]['train_loss']:.4f} -> "
             f"{last['train_loss']:.4f}" + (f", resumed at epoch {outcome.resumed_at_epoch} from "
                                            f"{outcome.resumed_from}" if outcome.resumed_from else ""))
        tracker.log_history(outcome.history)

        tracker.set_stage("evaluating")
        trained_dir = outcome.checkpoint_dir / training.MODEL_SUBDIR
        request = evaluating.EvalRequest(
            base_model_dir=str(base_dir), trained_dir=str(trained_dir), method=spec.method,
            train_path=str(prepared.train_path), held_out_path=str(prepared.held_out_path),
            metrics=tuple(spec.evaluation.metrics), max_new_tokens=spec.evaluation.max_new_tokens,
            max_examples=spec.evaluation.max_examples, baseline_enabled=spec.evaluation.baseline.enabled,
            baseline_shots=spec.evaluation.baseline.shots, max_seq_length=t.max_seq_length,
            predictions_path=str(storage / "evaluation" / "predictions.jsonl"),
            dataset_format=spec.dataset.format, dpo_beta=spec.dpo.beta)
        held = None  # the champion re-scored here only for the prompt → answer formats evaluate_run scores
        if spec.dataset.format in datasets.EXTRA_FORMATS:
            held = champion.fetch(tracker.tracking_uri, spec.registry.model_name, spec.base_model.uri,
                                  prepared.summary.hash, spec.method, storage / "champion")
        if held is not None:
            request = dataclasses.replace(request, champion_dir=str(held.adapter_dir))
        if warming is not None:
            warming.join()  # no two threads importing the same modules at once
        evaluation = evaluating.evaluate(request, spec.resources.gpus)
        result.metrics, result.baseline_metrics = evaluation.metrics, evaluation.baseline_metrics
        if held is not None and evaluation.champion_metrics is not None:
            result.champion = ChampionScore(version=held.version, dataset_hash=prepared.summary.hash,
                                            metrics=evaluation.champion_metrics)
            _log(f"champion v{held.version} (scored on {str(held.dataset_hash)[:12]}) on this held-out set: "
                 f"{evaluation.champion_metrics}")
        _log(f"held-out ({evaluation.examples}): model {evaluation.metrics}, baseline {evaluation.baseline_metrics}")
        _stage("evaluated")
        tracker.log_evaluation(evaluation.metrics, evaluation.baseline_metrics, Path(request.predictions_path))
        tracker.set_stage("logging_model")
        result.model_uri = tracker.log_model(trained_dir, spec)
        _stage("model_logged")
        result.status = "Succeeded"
        result.exit_code = ExitCode.OK
        result.duration_seconds = round(time.monotonic() - started, 3)
        # Last, so a run that carries the document is a run whose model is complete.
        tracker.log_result(result)
    except BaseException:
        result.status, result.exit_code = "Failed", int(ExitCode.INTERNAL)
        raise  # main() reports the failure on this run, then closes it
    tracker.finish(succeeded=True)
    return result


def report_failure(args: argparse.Namespace, result: JobResult, progress: Progress) -> None:
    """Put the failed JobResult where the controller looks for it (best effort: never hides the error).

    On the job's MLflow run when it is open. Before that (bad data, bad config: found before the run
    opens), on a run of its own, but only when the job has the `tuneloop.run.attempt` tag: the
    controller finds a result by (uid, run, attempt) tags, and a job run by hand gets no stray run."""
    from tuneloop.jobs import tracking

    tracker = progress.tracker
    if tracker is None:
        experiment = args.experiment
        if not experiment and progress.spec is not None:
            registry = progress.spec.registry
            experiment = registry.experiment or f"tuneloop/{registry.model_name}"
        tags = progress.tags
        if not tags:
            try:
                tags = parse_tags(args.tag)
            except JobError:
                return
        uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if constants.TAG_RUN_ATTEMPT not in tags or not experiment or not uri:
            return
        # Bounded: a tracking server that is down must not hold a failed job for minutes.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        # Its own scratch folder: a later attempt on the same storage must not resume this run.
        with tempfile.TemporaryDirectory(prefix="tuneloop-failure-") as scratch:
            tracker = tracking.Tracker(uri, experiment, args.run_name, tags, Path(scratch))
            try:
                result.run_id = tracker.start()
                result.experiment_id = tracker.experiment_id
            except JobError as e:
                _log(f"could not report the failure to MLflow: {e}")
                result.run_id = result.experiment_id = None
                return
            _report_on(tracker, result)
        return
    _report_on(tracker, result)


def _report_on(tracker: Any, result: JobResult) -> None:
    try:
        tracker.log_result(result)
    except JobError as e:
        _log(f"could not log the failed result to MLflow run {tracker.run_id}: {e}")
    finally:
        tracker.finish(succeeded=False)


def _log(message: str) -> None:
    print(f"[tuneloop.train] {message}", file=sys.stderr, flush=True)


_since: float | None = None  # when the driver process started: the `+N s` of each stage mark


def _stage(name: str) -> None:
    timeline.mark(name, since=_since)


def main(argv: Sequence[str] | None = None, process_started: float | None = None) -> int:
    """`process_started`: when the driver process started (given when run as a script), for the timeline."""
    global _since
    _since = process_started
    if process_started is not None:
        timeline.mark("driver_start", at=process_started, since=process_started)
    _stage("imports")
    args = parse_args(argv)
    started = time.monotonic()
    result = JobResult(status="Failed", exit_code=int(ExitCode.INTERNAL))
    progress = Progress()
    try:
        run(args, result, started, progress)
        code = ExitCode.OK
    except JobError as e:
        _log(f"FAILED {e.reason} (exit {int(e.code)}): {e.message}")
        result.status, result.exit_code, result.reason, result.message = "Failed", int(e.code), e.reason, e.message
        code = e.code
    except Exception as e:
        traceback.print_exc()
        message = f"{type(e).__name__}: {e}"[:2000]
        result.status, result.exit_code, result.reason, result.message = (
            "Failed", int(ExitCode.INTERNAL), "InternalError", message)
        code = ExitCode.INTERNAL
    except BaseException:  # killed or interrupted: close the run without a verdict, as before
        if progress.tracker is not None:
            progress.tracker.finish(succeeded=False)
        raise
    result.duration_seconds = round(time.monotonic() - started, 3)
    if code != ExitCode.OK:
        report_failure(args, result, progress)
    write_result(args.result, result)
    if code == ExitCode.OK:
        _log(f"succeeded in {result.duration_seconds:.1f}s: run {result.run_id}, model {result.model_uri}")
    _stage("exit")
    return int(code)


if __name__ == "__main__":
    raise SystemExit(main(process_started=timeline.process_start_time()))
