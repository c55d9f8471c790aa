"""kopf handlers of the ModelDeployment kind: one reconcile daemon per object, a nudge on change, a finalizer.

As for FineTunes: create, update, resume and polling go down one path (the daemon calls
`DeploymentReconciler.reconcile` in a loop and sleeps for the delay it returns; a new generation
wakes it early), looks at one object never overlap, and handlers return None (kopf would write
return values into status, where the schema prunes them).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from typing import Any

import kopf

from tuneloop.api import constants
from tuneloop.operator.clients.errors import ClientError
from tuneloop.operator.handlers.deployment_reconciler import DeploymentReconciler
from tuneloop.operator.logic import deploying

RESOURCE = (constants.GROUP, constants.VERSION, constants.DEPLOYMENT_PLURAL)
RAYSERVICES = ("ray.io", "v1", "rayservices")


def _reconciler(memo: kopf.Memo) -> DeploymentReconciler:
    reconciler = getattr(memo, "deployment_reconciler", None)
    if reconciler is None:
        raise kopf.PermanentError("the operator did not start: its reconciler is missing (see start-up logs)")
    return reconciler


def _wake(memo: kopf.Memo) -> asyncio.Event:
    if getattr(memo, "wake", None) is None:
        memo.wake = asyncio.Event()
    return memo.wake


@kopf.daemon(*RESOURCE, id="reconcile", cancellation_timeout=2.0)
async def reconcile_daemon(stopped: kopf.DaemonStopped, name: str, namespace: str, body: kopf.Body,
                           memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
    wake, reconciler = _wake(memo), _reconciler(memo)
    memo.seen = body.meta.get("generation")
    look: dict[str, Any] | None = copy.deepcopy(dict(body))
    while not stopped:
        wake.clear()
        try:
            delay = await reconciler.reconcile(namespace, name, look)
        except ClientError as e:
            logger.warning("reconcile failed, retrying in %.1fs: %s", reconciler.settings.poll_seconds, e)
            delay = reconciler.settings.poll_seconds
        except Exception:  # a bug must not stop the object's reconciliation for good
            logger.exception("reconcile crashed, retrying in %.1fs", reconciler.settings.max_poll_seconds)
            reconciler.metrics.errors.labels(system="operator").inc()
            delay = reconciler.settings.max_poll_seconds
        if stopped:
            return
        woken = False
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=delay)
            woken = True
        quiet = deploying.next_look_is_quiet(delay, woken, reconciler.settings.poll_seconds)
        look = snapshot(body) if quiet else None


def snapshot(body: kopf.Body) -> dict[str, Any]:
    """A watch-fed body as an informer's cache holds it, without managedFields: a quiet look's view of its
    ModelDeployment (instead of a GET per look: `make bench-operator --idle`, the GET was ~30% of a Serving
    deployment's look, #11) and of its RayService. kopf replaces the body whole on each event, never in
    place, so a shallow copy is a consistent snapshot, and nothing here writes into it. Stale is safe: status
    writes are conditional on its resourceVersion (a lost write is looked at again within a second, with a
    GET), and a poll interval is far longer than the watch's lag."""
    raw = dict(body)
    raw["metadata"] = {k: v for k, v in dict(raw.get("metadata") or {}).items() if k != "managedFields"}
    return raw


@kopf.on.event(*RESOURCE, id="nudge")
async def nudge(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    generation = body.meta.get("generation")
    if getattr(memo, "seen", None) != generation:
        memo.seen = generation
        _wake(memo).set()


OURS: dict[str, Any] = {constants.LABEL_MANAGED_BY: constants.MANAGED_BY_VALUE,
                         constants.LABEL_DEPLOYMENT: kopf.PRESENT}


@kopf.on.event(*RAYSERVICES, id="rayservice-watch", labels=OURS)
async def watch_rayservice(type: str, body: kopf.Body, name: str, namespace: str | None, memo: kopf.Memo,
                           **_: Any) -> None:
    """Our RayServices as the watch sees them, for the quiet looks of their ModelDeployments (the
    RayService GET was ~20% of an idle RayService-mode look, #11). Observation only: a RayService's
    change does not wake its ModelDeployment, which reads it at its next look as before."""
    reconciler = getattr(memo, "deployment_reconciler", None)
    if reconciler is not None:
        reconciler.saw_rayservice(namespace or "", name, None if type == "DELETED" else snapshot(body))


@kopf.on.delete(*RESOURCE, id="cleanup")
async def cleanup(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    reconciler = _reconciler(memo)
    try:
        await reconciler.cleanup(dict(body))
    except ClientError as e:
        raise kopf.TemporaryError(f"cleanup failed, retrying: {e}", delay=reconciler.settings.poll_seconds) from e
