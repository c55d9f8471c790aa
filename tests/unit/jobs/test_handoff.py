"""The handoff between a driver that started Ray Train early and its workers (training.start_fit): the
workers wait for the loop config file, read it whole, and stop at once when the driver aborted instead.
EarlyFit runs on a thread here with a stand-in for Ray Train's fit (our own function); the real one is
run by tests/e2e/test_train_job.py, whose timeline shows the workers starting before the data is ready."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tuneloop.jobs import modeling, training
from tuneloop.jobs.errors import ExitCode, JobError

OPTIONS = modeling.ModelOptions(model_dir="/models/tiny", method="lora", lora_rank=4, lora_alpha=8,
                                lora_dropout=0.0, lora_target_modules=("q_proj", "v_proj"), precision="auto", seed=7)
LOOP = training.LoopConfig(model=OPTIONS, train_path="/data/train.jsonl", held_out_path="/data/held_out.jsonl",
                           epochs=2, learning_rate=1e-3, batch_size=4, gradient_accumulation_steps=1,
                           max_seq_length=64, warmup_ratio=0.0, weight_decay=0.0, seed=7,
                           tracking_uri="http://mlflow:5000", run_id="abc123")


def early(tmp_path: Path) -> tuple[training.EarlyFit, list[training.LoopConfig | BaseException]]:
    """An EarlyFit whose 'fit' is one worker waiting for the handoff, as train_loop_per_worker does."""
    seen: list[training.LoopConfig | BaseException] = []
    handoff = tmp_path / "handoff.json"

    def worker() -> training.TrainOutcome:
        try:
            seen.append(training.await_handoff(handoff, timeout_seconds=10))
        except JobError as e:
            seen.append(e)
            raise
        return training.TrainOutcome(tmp_path, [{"train_loss": 1.0}], None, 0)

    return training.EarlyFit(handoff, worker), seen


def test_the_workers_get_the_config_the_driver_sends_later(tmp_path: Path) -> None:
    fit, seen = early(tmp_path)
    time.sleep(0.2)
    assert seen == []  # still waiting: nothing sent
    fit.send(LOOP)
    assert fit.result().history == [{"train_loss": 1.0}]
    assert seen == [LOOP]  # model options (tuples included) come back as they were sent
    assert not list(tmp_path.glob("*.tmp"))  # written whole: tmp file renamed into place


def test_an_abort_ends_the_workers_wait_and_fit_raises(tmp_path: Path) -> None:
    fit, seen = early(tmp_path)
    fit.abort("JobError: EvalSetEmpty: the held-out set is empty")
    assert len(seen) == 1 and isinstance(seen[0], JobError)
    assert "the driver stopped before training: JobError: EvalSetEmpty" in str(seen[0])
    with pytest.raises(JobError):
        fit.result()


def test_an_abort_after_the_config_was_sent_changes_nothing(tmp_path: Path) -> None:
    fit, seen = early(tmp_path)
    fit.send(LOOP)
    fit.abort("a later failure (evaluation)")
    assert seen == [LOOP] and fit.result().history


def test_a_driver_that_never_hands_over_ends_the_wait(tmp_path: Path) -> None:
    with pytest.raises(JobError) as caught:
        training.await_handoff(tmp_path / "never.json", timeout_seconds=0.2)
    assert caught.value.code == ExitCode.INTERNAL and "did not hand over" in str(caught.value)

