"""What the demo shows, decided from what it observes: pure functions over plain dicts, tested as tables.

A `Observation` is one look at a FineTune (its object from the apiserver) and its current MLflow run (the
`tuneloop.stage` tag the job sets, the per-epoch `train_loss` the workers log live, the dataset tags).
`stage_of` turns it into the stage the loop is in; `Timeline` remembers when each stage was first seen so
the summary can say how long each took; `summarize` builds the end-of-demo facts from final statuses.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# The loop's stages in order, as the demo's progress bars show them.
STAGES = ("queued", "data", "training", "evaluation", "registration", "done")
STAGE_TITLES = {
    "queued": "Launching",
    "data": "Data preparation",
    "training": "Training",
    "evaluation": "Evaluation",
    "registration": "Registration",
    "done": "Done",
}
TERMINAL_PHASES = ("Succeeded", "Failed")


@dataclass(frozen=True)
class Observation:
    """One look at a FineTune and its MLflow run (run fields empty until the job opened the run)."""

    name: str
    status: Mapping[str, Any] = field(default_factory=dict)
    epochs_total: int = 0
    run_stage: str | None = None  # the job's tuneloop.stage tag
    run_tags: Mapping[str, str] = field(default_factory=dict)
    losses: Sequence[float] = ()  # train_loss per finished epoch, in order

    @property
    def phase(self) -> str:
        return str(self.status.get("phase") or "")

    @property
    def ready(self) -> Mapping[str, Any]:
        return ready_condition(self.status)


def stage_of(obs: Observation) -> str:
    """The stage the FineTune is in. The operator's phase wins where it knows more (registration,
    the end); inside the Ray job the job's own stage tag says where it is."""
    if obs.phase in TERMINAL_PHASES:
        return "done"
    if obs.phase == "Registering":
        return "registration"
    if obs.phase != "Running":
        return "queued"
    if obs.run_stage in ("evaluating", "logging_model", "succeeded"):
        return "evaluation"
    if obs.run_stage == "training" or obs.losses:
        return "training"
    return "data"


@dataclass
class Timeline:
    """When each stage was first seen, per FineTune; stages skipped between two looks get the later time."""

    started: dict[str, float] = field(default_factory=dict)

    def see(self, stage: str, now: float) -> None:
        index = STAGES.index(stage)
        for s in STAGES[: index + 1]:
            self.started.setdefault(s, now)

    def seconds(self) -> dict[str, float]:
        """Wall time of each finished stage (a stage ends where the next one starts)."""
        out: dict[str, float] = {}
        for a, b in itertools.pairwise(STAGES):
            if a in self.started and b in self.started:
                out[a] = round(self.started[b] - self.started[a], 1)
        return out


def progress_line(obs: Observation) -> str:
    """The plain (no TTY) progress line for one observation."""
    ready = obs.ready
    parts = [f"{obs.name}: phase {obs.phase or '-'}"]
    if ready.get("reason"):
        parts.append(f"({ready['reason']})")
    run = obs.status.get("run") or {}
    if run:
        parts.append(f"run {run.get('number')} attempt {run.get('attempt')}")
    stage = stage_of(obs)
    parts.append(f"stage {STAGE_TITLES[stage].lower()}")
    if obs.losses and stage in ("training", "evaluation"):
        parts.append(f"epoch {len(obs.losses)}/{obs.epochs_total} train_loss {obs.losses[-1]:.4f}")
    return " ".join(parts)


def summarize(status: Mapping[str, Any], timeline: Timeline | None = None) -> dict[str, Any]:
    """The facts the demo ends with, for one finished FineTune."""
    model = status.get("model") or {}
    promotion = status.get("promotion") or {}
    cost = status.get("cost") or {}
    dataset = status.get("dataset") or {}
    promoted_condition = condition(status, "Promoted")
    metrics = dict(status.get("metrics") or {})
    baseline = dict(status.get("baselineMetrics") or {})
    return {
        "phase": status.get("phase"),
        "dataset": {
            "rows": dataset.get("totalRows"),
            "duplicatesRemoved": dataset.get("duplicatesRemoved", 0),
            "piiRedactions": dict(dataset.get("piiRedactions") or {}),
            "trainRows": dataset.get("trainRows"),
            "heldOutRows": dataset.get("evalRows"),
            "hash": dataset.get("hash"),
        },
        "metrics": metrics,
        "baselineMetrics": baseline,
        "gate": {
            "promoted": promotion.get("promoted"),
            "metric": promotion.get("metric"),
            "candidate": promotion.get("candidate"),
            "baseline": promotion.get("baseline"),
            "champion": promotion.get("champion"),
            "championVersion": promotion.get("championVersion"),
            "why": promotion.get("message") or promoted_condition.get("message", ""),
        },
        "model": {"name": model.get("name"), "version": model.get("version"), "alias": model.get("alias"),
                  "uri": model.get("uri")},
        "cost": {"gpuHours": cost.get("gpuHours", 0.0), "estimatedUsd": cost.get("estimatedUsd", 0.0)},
        "stageSeconds": timeline.seconds() if timeline else {},
    }


def losses_from_history(history: Sequence[tuple[int, float]]) -> list[float]:
    """train_loss per epoch from MLflow metric history (step = epoch); the last value of a step wins."""
    by_step: dict[int, float] = {}
    for step, value in sorted(history, key=lambda sv: sv[0]):  # stable: a later log of a step wins
        by_step[int(step)] = float(value)
    return [by_step[s] for s in sorted(by_step)]


def to_json(summary: Mapping[str, Any]) -> str:
    return json.dumps(summary, indent=2, sort_keys=True, default=str)


# --- serving: the ModelDeployment the demo applies once a champion exists ------------------------------


def condition(status: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    """The status condition of that type ({} when there is none)."""
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), {})


def ready_condition(status: Mapping[str, Any]) -> Mapping[str, Any]:
    return condition(status, "Ready")


def serving_ready(status: Mapping[str, Any], version: str | None = None) -> bool:
    """Whether a ModelDeployment serves (`version`, when given) with nothing rolling out: Ready True, a
    served version and an endpoint."""
    return (ready_condition(status).get("status") == "True" and bool(status.get("servedVersion"))
            and bool(status.get("endpoint")) and not status.get("rollout")
            and (version is None or status.get("servedVersion") == version))


def serving_line(name: str, status: Mapping[str, Any]) -> str:
    """The progress line for a ModelDeployment while the demo waits for it."""
    ready = ready_condition(status)
    parts = [f"{name}: phase {status.get('phase') or '-'}"]
    if ready.get("reason"):
        parts.append(f"({ready['reason']})")
    if status.get("servedVersion"):
        parts.append(f"serving version {status['servedVersion']}")
    rollout = status.get("rollout") or {}
    if rollout.get("version"):
        parts.append(f"rolling out version {rollout['version']}")
    return " ".join(parts)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) — a value that was measured, never an interpolation; None
    for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n * q / 100), at least the first
    return float(ordered[int(rank) - 1])


@dataclass(frozen=True)
class Answer:
    """One request of the demo's burst: HTTP status (0: no answer), wall time, the version that answered."""

    status: int
    latency_ms: float
    version: str | None = None
    error: str = ""


def summarize_serving(name: str, status: Mapping[str, Any], answers: Sequence[Answer]) -> dict[str, Any]:
    """The serving facts the demo ends with: where, which version, and how the burst went. Latency
    figures are over answered requests only (a failure's wall time is the timeout, not the model)."""
    ok = [a for a in answers if a.status == 200]
    failed = [a for a in answers if a.status != 200]
    p50, p95 = percentile([a.latency_ms for a in ok], 50), percentile([a.latency_ms for a in ok], 95)
    return {
        "name": name,
        "phase": status.get("phase"),
        "endpoint": status.get("endpoint"),
        "servedVersion": status.get("servedVersion"),
        "requests": len(answers),
        "answered": len(ok),
        "failures": len(failed),
        "answeredBy": sorted({a.version for a in ok if a.version}),
        "p50Ms": None if p50 is None else round(p50, 1),
        "p95Ms": None if p95 is None else round(p95, 1),
        "firstFailure": f"HTTP {failed[0].status}: {failed[0].error}"[:300] if failed else "",
    }
