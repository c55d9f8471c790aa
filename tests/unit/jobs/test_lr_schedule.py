"""The training job's learning-rate schedule as a table: linear warmup, then linear decay to 0 at the last
update (the bench that models the demo's retrain uses the same function, so they cannot drift apart)."""

from __future__ import annotations

import pytest

from tuneloop.jobs.training import lr_schedule

CASES = {
    # (total updates, warmup ratio) -> factors at updates 0..total-1
    "no warmup: decay from 1": (4, 0.0, [1.0, 0.75, 0.5, 0.25]),
    "a quarter warmup": (8, 0.25, [1 / 3, 2 / 3, 1.0, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6]),
    "one update": (1, 0.1, [1.0]),
    "all warmup": (2, 1.0, [1 / 3, 2 / 3]),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_lr_schedule(case: str) -> None:
    total, ratio, factors = CASES[case]
    f = lr_schedule(total, ratio)
    assert [f(u) for u in range(total)] == pytest.approx(factors)
    assert f(total) == 0.0  # past the last update: nothing left to decay
