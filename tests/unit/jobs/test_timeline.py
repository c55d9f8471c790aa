"""The job's stage marks: written as a line, read back from a Ray job log, turned into spans."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tuneloop.jobs import timeline

RAY_LOG = """\
[tuneloop.train] stage driver_start at 1000.000 (+0.0s)
[tuneloop.train] stage imports at 1001.500 (+1.5s)
2026-12-02 19:40:01,123 INFO worker.py:1234 -- Connecting to existing Ray cluster
[tuneloop.train] stage ray_init at 1003.250 (+3.2s)
(RayTrainWorker pid=4242) [tuneloop.train] stage workers_started at 1007.000
(RayTrainWorker pid=4242) [tuneloop.train] stage first_step at 1009.000
(RayTrainWorker pid=4343) [tuneloop.train] stage workers_started at 1020.000
[tuneloop.train] stage exit at 1030 (+30.0s)
[tuneloop.train] stage no_time at soon
"""


def test_parse_reads_driver_and_worker_lines_first_mark_wins() -> None:
    assert timeline.parse(RAY_LOG) == {"driver_start": 1000.0, "imports": 1001.5, "ray_init": 1003.25,
                                       "workers_started": 1007.0, "first_step": 1009.0, "exit": 1030.0}


@pytest.mark.parametrize(("marks", "expected"), [
    ("empty", []),
    ("one stage", []),
    ("in order", [("submitted", "driver_start", 2.0), ("driver_start", "ray_init", 3.5)]),
    ("stages missing are skipped", [("submitted", "fit_done", 10.0), ("fit_done", "exit", 1.0)]),
    ("unknown stages are ignored", [("ray_init", "exit", 1.0)]),
    ("side by side: in time order", [("fit_start", "workers_started", 2.0), ("workers_started", "data_prepared", 1.0),
                                     ("data_prepared", "handed_over", 0.5), ("handed_over", "model_loaded", 1.5)]),
    ("a tie keeps the stage order", [("fit_start", "data_prepared", 0.0), ("data_prepared", "workers_started", 0.0)]),
], ids=lambda v: v if isinstance(v, str) else "")
def test_spans(marks: str, expected: list[tuple[str, str, float]]) -> None:
    table = {
        "empty": {},
        "one stage": {"exit": 5.0},
        "in order": {"ray_init": 5.5, "submitted": 0.0, "driver_start": 2.0},
        "stages missing are skipped": {"submitted": 0.0, "fit_done": 10.0, "exit": 11.0},
        "unknown stages are ignored": {"ray_init": 1.0, "mystery": 1.5, "exit": 2.0},
        "side by side: in time order": {"fit_start": 10.0, "data_prepared": 13.0, "workers_started": 12.0,
                                        "handed_over": 13.5, "model_loaded": 15.0},
        "a tie keeps the stage order": {"workers_started": 1.0, "fit_start": 1.0, "data_prepared": 1.0},
    }
    assert timeline.spans(table[marks]) == expected


def test_a_written_mark_reads_back(capsys: pytest.CaptureFixture[str]) -> None:
    timeline.mark("fit_done", at=1234.5678, since=1200.0)
    err = capsys.readouterr().err
    assert err == "[tuneloop.train] stage fit_done at 1234.568 (+34.6s)\n"
    assert timeline.parse(err) == {"fit_done": 1234.568}


def test_every_stage_the_job_marks_is_in_the_order() -> None:
    assert len(set(timeline.STAGES)) == len(timeline.STAGES)
    assert set(timeline.DRIVER_CHAIN) | set(timeline.WORKER_CHAIN) == set(timeline.STAGES) - {"submitted"}
    for stage in timeline.STAGES:
        assert timeline.parse(timeline.format_mark(stage, 1.0)) == {stage: 1.0}


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads /proc (Linux)")
def test_process_start_time_is_when_the_process_started() -> None:
    before = time.time()
    out = subprocess.run([sys.executable, "-c", "import time; from tuneloop.jobs import timeline; "
                          "time.sleep(1.5); print(timeline.process_start_time(), time.time())"],
                         capture_output=True, text=True, check=True).stdout.split()
    started, now = float(out[0]), float(out[1])
    # Started after this test began and before its 1.5 s sleep (clock ticks are 10 ms; btime is whole seconds).
    assert before - 1.0 <= started <= now - 1.4, (before, started, now)
