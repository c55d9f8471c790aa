"""Stage marks: where a training job's seconds go, one line per stage in the job's own log.

    [tuneloop.train] stage ray_init at 1764700000.123 (+13.9s)

The driver marks its stages (process start, imports, data, MLflow run, `ray.init`, fit, evaluation,
model logged, exit) and Ray Train's rank 0 marks the worker side (loop entered, model loaded, first and
last step); Ray forwards the workers' lines to the driver, so `ray job logs` holds the whole timeline
and `make bench-train` reads it from there. Times are wall-clock epoch seconds (one machine or a
clock-synchronised cluster); `+N s` is since the driver process started, for people reading the log.
Standard library only: the workers and the bench import it.
"""

from __future__ import annotations

import itertools
import os
import re
import sys
import time
from collections.abc import Iterable, Mapping

PREFIX = "[tuneloop.train] stage"
# The order stages happen in; `spans` walks it and skips stages a run did not reach or mark.
STAGES = (
    "submitted",        # the bench's own mark: the job was handed to the Ray job API
    "driver_start",     # the driver process started (before the interpreter imported anything)
    "imports",          # the job module and its light imports are loaded; main() begins
    "data_loaded",      # the dataset read and validated against the spec
    "ray_init",         # the driver joined (or started) the Ray cluster
    "fit_start",        # TorchTrainer.fit() called on a driver thread (training.start_fit)
    # From here the driver (data_prepared → handed_over) and Ray Train (workers_started) run side by side.
    "data_prepared",    # scrubbed, deduplicated, split
    "tracker_started",  # the MLflow run is open
    "handed_over",      # the workers were handed the prepared data and the run (the handoff file)
    "workers_started",  # rank 0 entered train_loop_per_worker (controller and worker group are up)
    "model_loaded",     # rank 0 has the model, tokenizer, encoded data and its checkpoint, if any
    "first_step",       # rank 0 finished its first optimizer step of this attempt
    "last_step",        # rank 0 finished its last step of the last epoch
    "fit_done",         # fit() returned to the driver (last checkpoint reported and persisted)
    "evaluated",        # held-out scores of the model, the baseline and the champion
    "model_logged",     # the model is logged to MLflow
    "exit",             # the job's result is written; the process exits
)
_LINE = re.compile(r"\[tuneloop\.train\] stage (\w+) at (\d+(?:\.\d+)?)")


def process_start_time(pid: int | None = None) -> float | None:
    """When this process (or `pid`) started, in epoch seconds, from /proc (Linux); None elsewhere."""
    try:
        with open(f"/proc/{pid or os.getpid()}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/stat", encoding="ascii") as f:
            boot = next(float(line.split()[1]) for line in f if line.startswith("btime "))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of stat: starttime in ticks
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def format_mark(stage: str, at: float, since: float | None = None) -> str:
    line = f"{PREFIX} {stage} at {at:.3f}"
    return line + (f" (+{at - since:.1f}s)" if since is not None else "")


def mark(stage: str, at: float | None = None, since: float | None = None) -> None:
    """Write the stage's line on stderr (flushed: a killed job keeps the marks it got to)."""
    # Not print(): Ray Train patches print in its workers, and the patched one writes each line twice.
    sys.stderr.write(format_mark(stage, time.time() if at is None else at, since) + "\n")
    sys.stderr.flush()


def parse(text: str) -> dict[str, float]:
    """Stage → time from a log. The first mark of a stage wins (a resumed worker group marks again)."""
    marks: dict[str, float] = {}
    for stage, at in _LINE.findall(text):
        marks.setdefault(stage, float(at))
    return marks


# Stages that follow one another whatever runs side by side: the driver's and rank 0's.
DRIVER_CHAIN = ("driver_start", "imports", "data_loaded", "ray_init", "fit_start", "data_prepared",
                "tracker_started", "handed_over", "fit_done", "evaluated", "model_logged", "exit")
WORKER_CHAIN = ("fit_start", "workers_started", "model_loaded", "first_step", "last_step", "fit_done")


def spans(marks: Mapping[str, float], order: Iterable[str] = STAGES) -> list[tuple[str, str, float]]:
    """(from, to, seconds) between consecutive stages present in `marks`, in the order they happened (ties:
    in `order`): the driver's and the workers' stages interleave while both run."""
    rank = {s: i for i, s in enumerate(order)}
    present = sorted((s for s in rank if s in marks), key=lambda s: (marks[s], rank[s]))
    return [(a, b, round(marks[b] - marks[a], 3)) for a, b in itertools.pairwise(present)]
