"""GPU-hours and price estimates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tuneloop.operator.logic import cost

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(("seconds", "gpus", "workers", "hours"), [
    (3600, 1, 1, 1.0), (1800, 2, 4, 4.0), (3600, 0, 8, 0.0), (-5, 1, 1, 0.0),
])
def test_attempt_gpu_hours(seconds: float, gpus: int, workers: int, hours: float) -> None:
    assert cost.attempt_gpu_hours(T0, T0 + timedelta(seconds=seconds), gpus, workers) == pytest.approx(hours)


def test_prices_by_gpu_type_then_default() -> None:
    prices = {"A100": 4.0, "default": 2.0}
    total = cost.add_gpu_hours(None, 1.5, "A100", prices)
    assert (total.gpu_hours, total.estimated_usd, total.gpu_type) == (1.5, 6.0, "A100")
    total = cost.add_gpu_hours(total, 1.0, "T4", prices)
    assert (total.gpu_hours, total.estimated_usd) == (2.5, 8.0)
    assert cost.add_gpu_hours(None, 1.0, None, {}).estimated_usd == 0.0
