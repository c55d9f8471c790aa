"""Prometheus metrics of the operator (kopf has none built in, kopf #990), served on /metrics.

FineTunes by phase are counted from what this process last wrote per object, so a restarted replica
rebuilds the gauge as it resumes objects. Everything lives in one CollectorRegistry per process.
"""

from __future__ import annotations

import threading
from collections import Counter as Tally

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

PHASES = ("Pending", "Launching", "Running", "Registering", "Succeeded", "Failed", "Suspended")


class Metrics:
    """The operator's metrics; `disabled()` gives a private registry nobody serves (tests)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.finetunes = Gauge("tuneloop_finetunes", "FineTunes by phase.", ["phase"], registry=registry)
        self.run_seconds = Histogram(
            "tuneloop_finetune_run_duration_seconds", "Wall time of runs from launch to a terminal phase.",
            ["outcome"], registry=registry,
            buckets=(60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400, float("inf")),
        )
        self.reconcile_seconds = Histogram(
            "tuneloop_reconcile_duration_seconds", "Latency of one reconcile of one FineTune.", registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, float("inf")),
        )
        self.errors = Counter("tuneloop_reconcile_errors_total", "Failed calls to outside systems.", ["system"],
                              registry=registry)
        self.launches = Counter("tuneloop_launches_total", "Job launches (attempts).", ["mode"], registry=registry)
        self.config_problem = Gauge(
            "tuneloop_operator_config_problem", "1 when an operator setting is missing or unusable (see the "
            "start-up log), else 0.", ["setting"], registry=registry)
        # ModelDeployment monitors and retraining; monitoring/prometheus-rules.yaml alerts on these (a unit
        # test checks every metric an alert names is defined here).
        deployment = ["namespace", "deployment"]
        self.drift_share = Gauge("tuneloop_deployment_drift_share", "Share of monitored columns that drifted in the "
                                 "last conclusive check.", deployment, registry=registry)
        self.quality = Gauge("tuneloop_deployment_quality", "The quality metric on the last check's window.",
                             [*deployment, "metric"], registry=registry)
        self.consecutive_breaches = Gauge("tuneloop_deployment_consecutive_breaches", "Quality breaches in a row "
                                          "(after hysteresis); 0 when the last measured window was fine.", deployment,
                                          registry=registry)
        self.retrains = Counter("tuneloop_retrains_total", "Retrains by outcome (requested, started, succeeded, "
                                "not_promoted, failed, skipped) and reason (the trigger, or why one was skipped).",
                                [*deployment, "outcome", "reason"], registry=registry)
        self.monitor_last_success = Gauge("tuneloop_monitor_last_success_timestamp_seconds", "Unix time of the last "
                                          "monitor check that completed (any verdict).", deployment, registry=registry)
        self._phases: dict[str, str] = {}
        self._lock = threading.Lock()
        for phase in PHASES:
            self.finetunes.labels(phase=phase).set(0)

    @classmethod
    def disabled(cls) -> Metrics:
        return cls(CollectorRegistry())

    def set_phase(self, uid: str, phase: str | None) -> None:
        with self._lock:
            if self._phases.get(uid) == phase:
                return
            if phase is None:
                self._phases.pop(uid, None)
            else:
                self._phases[uid] = phase
            tally = Tally(self._phases.values())
            for p in PHASES:
                self.finetunes.labels(phase=p).set(tally.get(p, 0))

    def serve(self, port: int) -> None:
        start_http_server(port, addr="0.0.0.0", registry=self.registry)
