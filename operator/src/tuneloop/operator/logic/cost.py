"""GPU-hours of attempts and their estimated price from the administrator's price table."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from tuneloop.api.finetune import CostStatus

DEFAULT_PRICE_KEY = "default"


def attempt_gpu_hours(start: datetime | None, end: datetime | None, gpus_per_worker: int, workers: int) -> float:
    """Wall time times GPUs held: a Ray cluster holds its GPUs from launch until it stops."""
    if start is None or end is None or gpus_per_worker <= 0:
        return 0.0
    seconds = max((end - start).total_seconds(), 0.0)
    return seconds * gpus_per_worker * workers / 3600.0


def price_per_gpu_hour(prices: Mapping[str, float], gpu_type: str | None) -> float:
    if gpu_type and gpu_type in prices:
        return prices[gpu_type]
    return prices.get(DEFAULT_PRICE_KEY, 0.0)


def add_gpu_hours(cost: CostStatus | None, gpu_hours: float, gpu_type: str | None,
                  prices: Mapping[str, float]) -> CostStatus:
    """Cumulative cost over all attempts of all runs."""
    total = (cost.gpu_hours if cost else 0.0) + gpu_hours
    spent = (cost.estimated_usd if cost else 0.0) + gpu_hours * price_per_gpu_hour(prices, gpu_type)
    return CostStatus(gpu_hours=round(total, 6), estimated_usd=round(spent, 4),
                      gpu_type=gpu_type or (cost.gpu_type if cost else None))
