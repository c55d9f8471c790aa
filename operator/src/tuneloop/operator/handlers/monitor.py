"""kopf glue of the monitors: one monitor daemon per ModelDeployment, beside its reconcile daemon.

The daemon calls `MonitorReconciler.monitor` and sleeps for the delay it returns (the time left to
`spec.monitoring.intervalSeconds` since the last check, so a restart keeps the schedule); a new
generation (a changed interval, monitoring turned on) or a new approve-retrain annotation wakes it at once. The check
itself runs in the monitor's worker pool, so a slow check holds this object's daemon only, never the
event loop. A separate daemon, not a step of the reconcile loop: a check taking seconds must not delay
a rollout, and a rollout must not move the check's schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import kopf

from tuneloop.api import constants
from tuneloop.operator.clients.errors import ClientError
from tuneloop.operator.handlers.monitor_reconciler import MonitorReconciler

RESOURCE = (constants.GROUP, constants.VERSION, constants.DEPLOYMENT_PLURAL)


def _wake(memo: kopf.Memo) -> asyncio.Event:
    if getattr(memo, "monitor_wake", None) is None:
        memo.monitor_wake = asyncio.Event()
    return memo.monitor_wake


def _essence(body: kopf.Body) -> tuple[Any, Any]:
    return body.meta.get("generation"), body.meta.annotations.get(constants.ANNOTATION_APPROVE_RETRAIN)


@kopf.on.event(*RESOURCE, id="monitor-nudge")
async def monitor_nudge(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    essence = _essence(body)
    if getattr(memo, "monitor_seen", None) != essence:
        memo.monitor_seen = essence
        _wake(memo).set()


@kopf.daemon(*RESOURCE, id="monitor", cancellation_timeout=2.0)
async def monitor_daemon(stopped: kopf.DaemonStopped, name: str, namespace: str, body: kopf.Body,
                         memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
    reconciler: MonitorReconciler | None = getattr(memo, "monitor_reconciler", None)
    if reconciler is None:
        raise kopf.PermanentError("the operator did not start: its monitor is missing (see start-up logs)")
    backoff = reconciler.settings.max_poll_seconds
    wake = _wake(memo)
    memo.monitor_seen = _essence(body)
    while not stopped:
        wake.clear()
        try:
            delay = await reconciler.monitor(namespace, name)
        except ClientError as e:
            logger.warning("monitor look failed, retrying in %.1fs: %s", backoff, e)
            reconciler.metrics.errors.labels(system=e.system).inc()
            delay = backoff
        except Exception:  # a bug must not stop this object's monitoring for good
            logger.exception("monitor crashed, retrying in %.1fs", backoff)
            reconciler.metrics.errors.labels(system="operator").inc()
            delay = backoff
        if delay is None or stopped:
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=delay)
