"""The TorchTrainer the job runs: Ray Train V2's own, minus a wait a fixed-size run does not need.

Train V2's FixedScalingPolicy registers the run's resources with Ray Data's AutoscalingCoordinator, a
detached actor it creates on first use, and waits up to a hard-coded 5 s for the answer — twice before
the worker group starts (ray 2.60: `AUTOSCALING_REQUESTS_GET_TIMEOUT_S`, no setting turns it off). On a
head where that actor is not up yet (a fresh cluster, a busy node: its process start is most of the
wait) both waits run out: 10 s of every first job. The request only feeds a cluster autoscaler, and a
fixed-size job's placement group is autoscaler demand on its own, so this job's policy sends none.
Everything else (placement group, DDP set-up, checkpoints, resume, failure handling) is Ray's.

Imports ray at module level: load it only where the trainer runs (training.fit), never in the workers.
"""

from __future__ import annotations

from typing import Any

from ray.train.torch import TorchTrainer
from ray.train.v2._internal.execution.scaling_policy import FixedScalingPolicy


class FixedSizeScalingPolicy(FixedScalingPolicy):
    """Ray's fixed-size policy without the AutoscalingCoordinator round trips."""

    def _maybe_send_resource_request(self) -> None:
        pass

    def _send_resource_request(self) -> None:
        pass

    def _cancel_resource_request(self) -> None:
        pass


class FixedSizeTorchTrainer(TorchTrainer):
    """TorchTrainer whose controller gets `FixedSizeScalingPolicy` for a fixed-size scaling config.

    Hooks `_initialize_and_run_controller` (ray 2.60, private: tests/unit/jobs/test_trainer.py fails
    when an upgrade renames it or the policy it is handed)."""

    def _initialize_and_run_controller(self, **controller_init_kwargs: Any) -> Any:
        policy = controller_init_kwargs.get("scaling_policy")
        if type(policy) is FixedScalingPolicy:
            controller_init_kwargs["scaling_policy"] = FixedSizeScalingPolicy(policy.scaling_config)
        return super()._initialize_and_run_controller(**controller_init_kwargs)
