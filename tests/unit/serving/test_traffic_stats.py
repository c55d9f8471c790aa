"""The Ingress's recent-request figures (GET /v1/stats) and its weighted choice of model for a canary."""

from __future__ import annotations

import random

import pytest
from pydantic import ValidationError

from tuneloop.serving import args, traffic_stats
from tuneloop.serving.traffic_stats import ModelFigures, RecentRequests


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_summary_by_model_over_a_window() -> None:
    clock = Clock()
    recent = RecentRequests(capacity=100, clock=clock)
    for i in range(1, 21):  # m/1: 20 answered, latency 1..20 ms
        recent.add("m/1", True, float(i))
    clock.t = 110.0
    first = recent.summary()
    assert first["now"] == 110.0 and first["models"]["m/1"] == {
        "requests": 20, "errors": 0, "p50_latency_ms": 10.0, "p95_latency_ms": 19.0}
    clock.t = 115.0
    recent.add("m/2", True, 300.0)
    recent.add("m/2", False, 5.0)  # a failure counts, but not in the latency of answered requests
    clock.t = 120.0
    second = recent.summary(since=first["now"])
    assert set(second["models"]) == {"m/2"}
    assert traffic_stats.model_figures(second, "m/2") == ModelFigures(2, 1, 300.0, 300.0)
    assert traffic_stats.model_figures(second, "m/2").error_rate == 0.5
    assert traffic_stats.model_figures(second, "m/1") == ModelFigures(0, 0, None, None)


def test_the_ring_is_bounded_oldest_first() -> None:
    recent = RecentRequests(capacity=3, clock=Clock())
    for i in range(5):
        recent.add("m/1", True, float(i))
    assert recent.summary()["models"]["m/1"]["requests"] == 3
    assert recent.summary()["models"]["m/1"]["p50_latency_ms"] == 3.0


@pytest.mark.parametrize(("values", "q", "expected"), [([], 95, None), ([5.0], 95, 5.0),
                                                       ([float(i) for i in range(1, 101)], 95, 95.0),
                                                       ([3.0, 1.0, 2.0], 50, 2.0)])
def test_percentile_nearest_rank(values: list[float], q: float, expected: float | None) -> None:
    assert traffic_stats.percentile(values, q) == expected


def test_ingress_routes_the_canary_share_of_requests_naming_no_model() -> None:
    route = args.IngressConfig(default_model_id="m/1", canary_model_id="m/2", canary_weight=20)
    assert route.pick(None, 0.19) == "m/2" and route.pick(None, 0.2) == "m/1"
    rng = random.Random(7)
    picks = [route.pick(None, rng.random()) for _ in range(5000)]
    assert 0.17 < picks.count("m/2") / len(picks) < 0.23
    assert args.IngressConfig(default_model_id="m/1").pick(None, 0.0) == "m/1"
    assert args.IngressConfig().pick("m/9", 0.5) == "m/9"  # the app's args default
    assert args.IngressConfig(default_model_id="m/1", canary_model_id="m/2", canary_weight=0).pick(None, 0.0) == "m/1"


@pytest.mark.parametrize("bad", [{"canary_weight": 10}, {"canary_model_id": "m", "canary_weight": 10},
                                 {"canary_model_id": "m/2", "canary_weight": 101}])
def test_ingress_refuses_a_canary_it_cannot_route(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        args.IngressConfig.model_validate({"default_model_id": "m/1", **bad})
