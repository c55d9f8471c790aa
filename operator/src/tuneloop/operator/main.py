"""The operator process: `kopf run -m tuneloop.operator.main [--standalone | --peering NAME]`.

Start-up reads the administrator's settings (`TUNELOOP_*`; a bad value stops the operator naming the
variable; a missing one it can run without is logged once, with the metric
`tuneloop_operator_config_problem{setting}`), keeps kopf's progress in annotations under
`tuneloop.io/` (the CRD schema would prune `status.kopf`), stores no diff-base (`NoDiffBase`), uses
our finalizer name, joins the peering object for HA when one exists (one active replica per peering;
`--standalone` in tests), serves Prometheus metrics, and builds the clients every handler shares.
Importing this module registers the handlers.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from tuneloop.api import constants
from tuneloop.operator import settings as settings_module
from tuneloop.operator.clients.kube import KubeEvents, RealKube
from tuneloop.operator.clients.mlflow import MlflowRegistry
from tuneloop.operator.clients.monitor import ThreadedMonitor
from tuneloop.operator.clients.ray import HttpRayJobs
from tuneloop.operator.clients.serve import HttpServe
from tuneloop.operator.handlers import deployment, finetune, monitor  # register the handlers of both kinds
from tuneloop.operator.handlers.deployment_reconciler import DeploymentReconciler
from tuneloop.operator.handlers.monitor_reconciler import MonitorReconciler
from tuneloop.operator.handlers.reconciler import Clients, FineTuneReconciler
from tuneloop.operator.metrics import Metrics
from tuneloop.operator.settings import (
    CHECKED_SETTINGS,
    SettingsError,
    config_problems,
    load_settings,
)

__all__ = ["deployment", "finetune", "monitor"]
_served_ports: dict[int, Metrics] = {}


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf's change detection switched off: to kopf, no event ever changes an object's essence.

    No handler here needs it: the FineTune daemon reconciles level-based and `nudge` compares the
    generation and the retrain annotation itself; only `on.delete` is a changing handler, and kopf
    detects deletion from `deletionTimestamp` and the finalizer. Stored as the
    last-handled-configuration annotation, the diff-base cost one more PATCH of every new object (and
    one more watch event, ~15% of the apiserver's requests on the create path) and a copy of the spec
    in metadata (which can exceed 256 KiB, kopf #1087). An `on.create/update/resume/field` handler
    would never be called with this storage: `test_main` fails if one is registered.
    """

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return kopf.BodyEssence()

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def configure_kopf(settings: kopf.OperatorSettings, peering_name: str) -> None:
    """kopf settings that keep state out of the (pruned) status and name things after tuneloop."""
    settings.persistence.finalizer = constants.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=constants.KOPF_ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.peering.name = peering_name
    settings.peering.mandatory = False  # no peering object: run alone (with kopf's warning)
    settings.posting.level = logging.INFO


def report_config_problems(settings: settings_module.OperatorSettings, metrics: Metrics,
                           logger: logging.Logger) -> None:
    """Say once, at start-up, what the configuration lacks; the objects it affects say it again."""
    problems = {p.setting: p.message for p in config_problems(settings)}
    for setting in CHECKED_SETTINGS:
        metrics.config_problem.labels(setting=setting).set(1 if setting in problems else 0)
    for setting, message in problems.items():
        logger.warning("operator setting %s %s", setting, message)


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In-cluster service account, else $KUBECONFIG read now (the client library reads it at import)."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
    try:
        ours = load_settings()
    except SettingsError as e:
        logger.error("invalid operator settings: %s", e)
        raise kopf.PermanentError(f"invalid operator settings: {e}") from e
    configure_kopf(settings, ours.peering_name)
    if ours.metrics_port:
        if ours.metrics_port not in _served_ports:  # one HTTP server per port per process
            metrics = Metrics.disabled()
            try:
                metrics.serve(ours.metrics_port)
            except OSError as e:
                # Permanent: kopf would otherwise retry the whole start-up every 60 s, naming nothing.
                message = (f"TUNELOOP_METRICS_PORT={ours.metrics_port}: cannot serve /metrics there "
                           f"({type(e).__name__}: {e}); choose a free port, or 0 to disable metrics")
                logger.error("invalid operator settings: %s", message)
                raise kopf.PermanentError(f"invalid operator settings: {message}") from e
            _served_ports[ours.metrics_port] = metrics
        metrics = _served_ports[ours.metrics_port]
    else:
        metrics = Metrics.disabled()
    report_config_problems(ours, metrics, logger)
    token = ours.ray_auth_token.get_secret_value() if ours.ray_auth_token else None
    kube = RealKube.from_environment(ours.kube_threads)
    # Deployments following an alias share one listing of the registry's aliases, at most a fifth of a poll
    # interval old (clients/mlflow_rest.py); a version's details are re-read every max poll interval.
    registry = MlflowRegistry(ours.client_timeout_seconds, ours.client_retries,
                              alias_snapshot_seconds=ours.poll_seconds / 5,
                              version_cache_seconds=ours.max_poll_seconds)
    clients = Clients(
        kube=kube,
        ray=HttpRayJobs(ours.client_timeout_seconds, ours.client_retries, token),
        registry=registry,
        events=KubeEvents(kube),
    )
    memo.reconciler = FineTuneReconciler(clients, ours, metrics)
    serve = HttpServe(ours.client_timeout_seconds, ours.client_retries, token, ours.serve_http_host,
                      ours.serve_http_port)
    memo.deployment_reconciler = DeploymentReconciler(kube, serve, registry, clients.events, ours, metrics)
    memo.monitor = ThreadedMonitor(ours.monitor_check, ours.monitor_max_checks)
    memo.monitor_reconciler = MonitorReconciler(kube, memo.monitor, clients.events, ours, metrics)
    memo.clients = clients
    memo.serve = serve
    logger.info("tuneloop operator started: poll %.1fs, metrics port %s", ours.poll_seconds, ours.metrics_port or "off")


@kopf.on.cleanup()
async def shutdown(memo: kopf.Memo, **_: Any) -> None:
    clients = getattr(memo, "clients", None)
    if clients is None:
        return
    await clients.ray.close()
    serve = getattr(memo, "serve", None)
    if serve is not None:
        await serve.close()
    monitor_pool = getattr(memo, "monitor", None)
    if monitor_pool is not None:
        monitor_pool.close()
    if isinstance(clients.registry, MlflowRegistry):  # its REST session belongs to this event loop
        await clients.registry.aclose()
    await clients.kube.aclose()
