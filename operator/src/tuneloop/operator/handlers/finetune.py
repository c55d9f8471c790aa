"""kopf handlers of the FineTune kind: one reconcile daemon per object, a nudge on change, a finalizer.

Create, update, resume and polling all go down one path: the per-object daemon calls
`FineTuneReconciler.reconcile` in a loop, sleeping for the delay it returns, and the watch handler
wakes it early when the generation or the retrain annotation changes. One daemon per object means
reconciles of one FineTune never overlap. Handlers return None: kopf would write return values into
status, where the schema prunes them.
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
from tuneloop.operator.handlers.reconciler import FineTuneReconciler

RESOURCE = (constants.GROUP, constants.VERSION, constants.FINETUNE_PLURAL)
log = logging.getLogger(__name__)


def _reconciler(memo: kopf.Memo) -> FineTuneReconciler:
    reconciler = getattr(memo, "reconciler", None)
    if reconciler is None:
        raise kopf.PermanentError("the operator did not start: its reconciler is missing (see start-up logs)")
    return reconciler


def _wake(memo: kopf.Memo) -> asyncio.Event:
    if getattr(memo, "wake", None) is None:
        memo.wake = asyncio.Event()
    return memo.wake


def _change_key(body: kopf.Body) -> tuple[Any, ...]:
    annotations = body.meta.annotations
    return (body.meta.get("generation"), annotations.get(constants.ANNOTATION_RETRAIN_REQUEST),
            annotations.get(constants.ANNOTATION_ALIAS_CHECK))


def snapshot(body: kopf.Body) -> dict[str, Any]:
    """A private copy of kopf's live body, without `metadata.managedFields` (the apiserver's field
    ownership: often the biggest part of the object, never read here, and deep-copied for nothing)."""
    raw = dict(body)
    raw["metadata"] = {k: v for k, v in dict(body.get("metadata") or {}).items() if k != "managedFields"}
    return copy.deepcopy(raw)


@kopf.daemon(*RESOURCE, id="reconcile", cancellation_timeout=2.0)
async def reconcile_daemon(stopped: kopf.DaemonStopped, name: str, namespace: str, body: kopf.Body,
                           memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
    wake, reconciler = _wake(memo), _reconciler(memo)
    memo.seen = _change_key(body)
    # The first look uses the body kopf started us with (no status written by us yet), saving a GET
    # of every new object; later looks GET it, as our own status writes may not have arrived here yet.
    first_look: dict[str, Any] | None = snapshot(body)
    while not stopped:
        wake.clear()
        try:
            delay = await reconciler.reconcile(namespace, name, first_look)
        except ClientError as e:
            logger.warning("reconcile failed, retrying in %.1fs: %s", reconciler.settings.poll_seconds, e)
            delay = reconciler.settings.poll_seconds
        except Exception:  # a bug must not stop the object's reconciliation for good
            logger.exception("reconcile crashed, retrying in %.1fs", reconciler.settings.max_poll_seconds)
            reconciler.metrics.errors.labels(system="operator").inc()
            delay = reconciler.settings.max_poll_seconds
        first_look = None
        if stopped:
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=delay)


def changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> bool:
    """The nudge's filter: kopf calls the handler (with its State, invocation and an INFO log line) only
    for an event that changes the key, not for each of the ~3 watch events of every new object (#11)."""
    return getattr(memo, "seen", None) != _change_key(body)


@kopf.on.event(*RESOURCE, id="nudge", when=changed)
async def nudge(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    key = _change_key(body)
    if getattr(memo, "seen", None) != key:
        memo.seen = key
        _wake(memo).set()


@kopf.on.delete(*RESOURCE, id="cleanup")
async def cleanup(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    reconciler = _reconciler(memo)
    try:
        await reconciler.cleanup(dict(body))
    except ClientError as e:
        raise kopf.TemporaryError(f"cleanup failed, retrying: {e}", delay=reconciler.settings.poll_seconds) from e
