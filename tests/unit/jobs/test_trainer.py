"""The job's TorchTrainer: Ray Train V2's fixed-size policy without the AutoscalingCoordinator wait.

The whole path (a real head, two DDP workers, no coordinator actor left on the cluster) is
tests/e2e/test_train_job.py; these pin the pieces and the private Ray 2.60 hook they rely on, so an
upgrade that moves them fails here rather than quietly bringing the 10 s back."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import ray
from ray.train import RunConfig, ScalingConfig
from ray.train.v2._internal.execution.context import TrainRunContext
from ray.train.v2._internal.execution.scaling_policy import (
    FixedScalingPolicy,
    NoopDecision,
    ResizeDecision,
    create_scaling_policy,
)
from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

from tuneloop.jobs import trainer


def _run_context(scaling: ScalingConfig) -> TrainRunContext:
    from ray.train import DataConfig
    from ray.train.torch import TorchConfig

    return TrainRunContext(run_config=RunConfig(name="t"), train_loop_config=None, scaling_config=scaling,
                           backend_config=TorchConfig(), dataset_config=DataConfig())


def test_the_policy_decides_like_rays_and_never_asks_the_coordinator() -> None:
    scaling = ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1})
    policy = trainer.FixedSizeScalingPolicy(scaling)
    policy.after_controller_start(_run_context(scaling))
    decision = policy.make_decision_for_non_running_worker_group()
    assert isinstance(decision, ResizeDecision)
    assert (decision.num_workers, decision.resources_per_worker) == (2, {"CPU": 1})
    assert isinstance(policy.make_decision_for_running_worker_group(None, None), NoopDecision)  # type: ignore[arg-type]
    policy._cancel_resource_request()
    # Ray's own policy would have looked up (created) the detached coordinator actor: a Ray cluster.
    assert "_autoscaling_coordinator" not in vars(policy._coordinator_client)
    assert not ray.is_initialized()


def test_rays_fit_hands_the_policy_to_the_hook_this_trainer_overrides() -> None:
    """Ray 2.60's DataParallelTrainer.fit builds the policy with create_scaling_policy and passes it as
    scaling_policy= to _initialize_and_run_controller; a fixed-size config gets a FixedScalingPolicy."""
    source = inspect.getsource(DataParallelTrainer.fit)
    assert "self._initialize_and_run_controller(" in source
    assert "scaling_policy=create_scaling_policy(self.scaling_config)" in source
    assert type(create_scaling_policy(ScalingConfig(num_workers=2))) is FixedScalingPolicy


@pytest.mark.parametrize(("given", "expected"), [
    ("fixed", trainer.FixedSizeScalingPolicy),
    ("other", "kept"),
])
def test_the_trainer_swaps_only_rays_fixed_policy(monkeypatch: pytest.MonkeyPatch, given: str,
                                                  expected: Any) -> None:
    seen: dict[str, Any] = {}

    def controller(self: Any, **kwargs: Any) -> str:  # stands in for starting the controller actor
        seen.update(kwargs)
        return "result"

    monkeypatch.setattr(DataParallelTrainer, "_initialize_and_run_controller", controller)
    scaling = ScalingConfig(num_workers=2)
    policy: Any = FixedScalingPolicy(scaling) if given == "fixed" else object()
    job = trainer.FixedSizeTorchTrainer(lambda: None, scaling_config=scaling)
    assert job._initialize_and_run_controller(scaling_policy=policy, other=1) == "result"
    assert seen["other"] == 1
    if expected == "kept":
        assert seen["scaling_policy"] is policy
    else:
        assert type(seen["scaling_policy"]) is expected
        assert seen["scaling_policy"].scaling_config is scaling
