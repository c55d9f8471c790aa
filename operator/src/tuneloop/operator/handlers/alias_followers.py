"""Which ModelDeployments of this process follow which registered model's aliases, so that an alias the
FineTune controller moves (a promotion) wakes them at once.

A Serving deployment re-reads its alias only every `TUNELOOP_MAX_POLL_SECONDS` (each look costs an MLflow
request; hundreds of idle deployments polling every few seconds were most of the operator's idle CPU, #11).
Moves made by this operator need not wait for that look: each deployment daemon registers its wake event
under (tracking URI, model name) on every look, and the FineTune reconciler calls `moved` after it set an
alias. Moves made elsewhere (by hand in MLflow, another operator) are seen on the next periodic look.
Events are held weakly: a deployment gone from kopf's memory is forgotten without being told.
"""

from __future__ import annotations

import asyncio
import weakref


def _key(tracking_uri: str, model: str) -> tuple[str, str]:
    return tracking_uri.rstrip("/"), model


class AliasFollowers:
    """Wake events of the deployments following each (tracking URI, model)."""

    def __init__(self) -> None:
        self._by_model: dict[tuple[str, str], weakref.WeakSet[asyncio.Event]] = {}

    def follow(self, tracking_uri: str, model: str, wake: asyncio.Event) -> None:
        self._by_model.setdefault(_key(tracking_uri, model), weakref.WeakSet()).add(wake)

    def moved(self, tracking_uri: str, model: str) -> int:
        """Wake every deployment following `model` at `tracking_uri`; returns how many were woken."""
        followers = list(self._by_model.get(_key(tracking_uri, model), ()))
        for wake in followers:
            wake.set()
        return len(followers)
