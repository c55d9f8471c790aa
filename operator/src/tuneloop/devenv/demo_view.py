"""How the demo looks: a live status table and stage progress bars (rich) on a terminal, plain progress
lines anywhere else (CI, pipes), and the closing summary. The demo's logic lives in `demo_progress`."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from tuneloop.devenv import demo_progress as dp


class View(Protocol):
    def step(self, message: str) -> None: ...
    def base_model(self, step: int, steps: int, loss: float) -> None: ...
    def update(self, observations: Sequence[dp.Observation]) -> None: ...
    def close(self) -> None: ...


def make_view(plain: bool | None = None) -> View:
    if plain is None:
        plain = not sys.stdout.isatty()
    return PlainView() if plain else RichView()


class PlainView:
    """One line per change, flushed at once, for logs and pipes."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.last: dict[str, str] = {}
        self.last_base_step = 0

    def _print(self, text: str) -> None:
        print(f"[demo {time.monotonic() - self.started:7.1f}s] {text}", flush=True)

    def step(self, message: str) -> None:
        self._print(message)

    def base_model(self, step: int, steps: int, loss: float) -> None:
        if step == steps or step - self.last_base_step >= max(1, steps // 10):
            self.last_base_step = step
            self._print(f"pre-training the base model (once, cached): step {step}/{steps} loss {loss:.3f}")

    def update(self, observations: Sequence[dp.Observation]) -> None:
        for obs in observations:
            line = dp.progress_line(obs)
            if self.last.get(obs.name) != line:
                self.last[obs.name] = line
                self._print(line)

    def close(self) -> None:
        pass


class RichView:
    """A status table refreshed from the objects, and one progress bar per stage per FineTune."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self.messages: list[str] = []
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description:<44}"), BarColumn(),
                                 TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), console=self.console)
        self.tasks: dict[tuple[str, str], TaskID] = {}
        self.table = Table()
        self.live = Live(self._render(), console=self.console, refresh_per_second=4, transient=False)
        self.live.start()

    def _render(self) -> Group:
        log = "\n".join(self.messages[-6:]) or "starting…"
        return Group(Panel(log, title="tuneloop demo", border_style="cyan"), self.table, self.progress)

    def step(self, message: str) -> None:
        self.messages.append(f"• {message}")
        self.live.update(self._render())

    def base_model(self, step: int, steps: int, loss: float) -> None:
        self._bar("base model", "pretrain", "Pre-training the base model (once, cached)", steps, step,
                  f"loss {loss:.3f}")

    def _bar(self, owner: str, key: str, title: str, total: float | None, completed: float, detail: str) -> None:
        task = self.tasks.get((owner, key))
        if task is None:
            task = self.progress.add_task(title, total=total, completed=completed, detail=detail)
            self.tasks[(owner, key)] = task
        else:
            self.progress.update(task, total=total, completed=completed, detail=detail)

    def update(self, observations: Sequence[dp.Observation]) -> None:
        table = Table(title="FineTunes (kubectl get ft)", expand=False)
        for column in ("NAME", "PHASE", "READY REASON", "RUN", "ATTEMPT", "VERSION", "ALIAS", "STAGE"):
            table.add_column(column)
        for obs in observations:
            run = obs.status.get("run") or {}
            model = obs.status.get("model") or {}
            stage = dp.stage_of(obs)
            table.add_row(obs.name, obs.phase or "-", str(obs.ready.get("reason") or "-"),
                          str(run.get("number") or "-"), str(run.get("attempt") or "-"),
                          str(model.get("version") or "-"), str(model.get("alias") or "-"), dp.STAGE_TITLES[stage])
            self._stage_bars(obs, stage)
        self.table = table
        self.live.update(self._render())

    def _stage_bars(self, obs: dp.Observation, stage: str) -> None:
        index = dp.STAGES.index(stage)

        def state(s: str) -> float:
            return 1.0 if dp.STAGES.index(s) < index or stage == "done" else 0.0

        self._bar(obs.name, "data", f"{obs.name} · data preparation", 1, state("data"),
                  _dataset_detail(obs.run_tags))
        epochs = max(obs.epochs_total, 1)
        loss = f"epoch {len(obs.losses)}/{epochs} loss {obs.losses[-1]:.4f}" if obs.losses else f"0/{epochs} epochs"
        self._bar(obs.name, "training", f"{obs.name} · training", epochs,
                  epochs if state("training") else len(obs.losses), loss)
        self._bar(obs.name, "evaluation", f"{obs.name} · evaluation (held-out + baseline)", 1,
                  state("evaluation"), "")
        self._bar(obs.name, "registration", f"{obs.name} · registration + gate", 1, state("registration"),
                  str((obs.status.get("model") or {}).get("alias") or ""))

    def close(self) -> None:
        self.live.stop()


def _dataset_detail(tags: Mapping[str, str]) -> str:
    if "tuneloop.dataset.train_rows" not in tags:
        return ""
    return f"{tags['tuneloop.dataset.train_rows']} train / {tags.get('tuneloop.dataset.eval_rows')} held-out"


def print_summary(summaries: Mapping[str, Mapping[str, Any]], extra: Mapping[str, Any], plain: bool,
                  serving: Mapping[str, Any] | None = None, loop: Mapping[str, Any] | None = None) -> None:
    """The closing summary: per FineTune, the champion served (demo_progress.summarize_serving), then how
    to look further."""
    console = Console(no_color=plain, soft_wrap=plain, width=None if not plain else 120)
    for name, s in summaries.items():
        table = Table(title=f"{name}: {s['phase']}", show_header=True)
        table.add_column("metric (held-out)")
        table.add_column("fine-tuned", justify="right")
        table.add_column("prompt baseline", justify="right")
        for metric in sorted(set(s["metrics"]) | set(s["baselineMetrics"])):
            table.add_row(metric, _fmt(s["metrics"].get(metric)), _fmt(s["baselineMetrics"].get(metric)))
        console.print(table)
        d = s["dataset"]
        pii = ", ".join(f"{k} {v}" for k, v in sorted(d["piiRedactions"].items())) or "none"
        console.print(f"  dataset: {d['rows']} rows, {d['duplicatesRemoved']} duplicates dropped, PII redacted: {pii}; "
                      f"{d['trainRows']} train / {d['heldOutRows']} held-out; hash {str(d['hash'])[:16]}")
        g, m = s["gate"], s["model"]
        verdict = "PROMOTED to champion" if g["promoted"] else "kept as challenger"
        console.print(f"  gate on {g['metric']}: {verdict} — {g['why']}")
        console.print(f"  registered: {m['name']} v{m['version']} alias {m['alias']}")
        console.print(f"  cost: {s['cost']['gpuHours']:.3f} GPU-hours, ${s['cost']['estimatedUsd']:.2f} "
                      "(CPU-only demo)")
        stages = ", ".join(f"{dp.STAGE_TITLES[k].lower()} {v:.0f}s" for k, v in s["stageSeconds"].items())
        console.print(f"  wall time per stage: {stages}")
    if serving is not None:
        print_serving(console, serving)
    if loop is not None:
        print_loop(console, loop)
    if extra.get("kubectl"):
        console.print("\n$ kubectl get ft -o wide -n " + str(extra.get("namespace")))
        console.print(extra["kubectl"], markup=False, highlight=False)
    if extra.get("kubectl_mdep"):
        console.print("\n$ kubectl get mdep -o wide -n " + str(extra.get("namespace")))
        console.print(extra["kubectl_mdep"], markup=False, highlight=False)
    for key in ("mlflow_ui", "total_seconds", "keep"):
        if extra.get(key):
            console.print(f"{key.replace('_', ' ')}: {extra[key]}", markup=False)


def print_serving(console: Console, s: Mapping[str, Any]) -> None:
    table = Table(title=f"{s['name']}: {s['phase']}", show_header=True)
    for column in ("endpoint", "served version", "requests", "failures", "p50 latency", "p95 latency"):
        table.add_column(column, justify="left" if column == "endpoint" else "right")
    table.add_row(str(s["endpoint"]), str(s["servedVersion"]), str(s["requests"]), str(s["failures"]),
                  _ms(s["p50Ms"]), _ms(s["p95Ms"]))
    console.print(table)
    console.print(f"  endpoint: {s['endpoint']}/v1/completions", markup=False)  # the table may cut it short
    if s.get("readySeconds") is not None:
        console.print(f"  ready {s['readySeconds']:.0f}s after apply; answered by version(s) "
                      f"{', '.join(s['answeredBy']) or 'none'}")
    if s.get("firstFailure"):
        console.print(f"  first failure: {s['firstFailure']}", markup=False)


def print_loop(console: Console, lp: Mapping[str, Any]) -> None:
    """The closed loop: quality before the drift, under it, after the retrain; what the monitor saw; the retrain."""
    console.print("\n[bold]Closed loop[/bold] (field_f1 of the served answers against the truth)")
    v, m, r = lp["versions"], lp["monitor"], lp["retrain"]
    console.print(f"  Q0 in-distribution, version {v['before']}: {_fmt(lp['q0'])}   "
                  f"Q1 drifted layout, version {v['before']}: {_fmt(lp['q1'])}   "
                  f"Q2 drifted layout after the retrain, version {v['after']}: {_fmt(lp['q2'])} "
                  f"(needed ≥ {_fmt(lp['q2Target'])})", markup=False)
    console.print(f"  requests: {lp['requests']}, {lp['labelled']} labelled by feedback, {lp['failures']} failed",
                  markup=False)
    console.print(f"  monitor: drift share {_fmt(m.get('driftShareBefore'))} before the drift, "
                  f"{_fmt(m.get('driftShareAtTrigger'))} when it asked for the retrain "
                  f"(drifted: {', '.join(m.get('driftedColumns') or []) or '-'}); "
                  f"{m.get('retrainsRequested')} retrain(s) requested", markup=False)
    console.print(f"  retrain {r['request']}: {r['addedExamples']} feedback examples added "
                  f"({r['datasetRows']} rows, dataset {str(r['datasetHash'])[:12]}), version {r['version']} in "
                  f"{r['seconds']:.0f}s, {r['gpuHours']:.3f} GPU-hours — {r['gate']}", markup=False)
    if r.get("feedbackUri"):
        console.print(f"  its feedback by phase: {r.get('feedbackMix') or '-'} in {r['feedbackUri']}", markup=False)
    if m.get("reportUri"):
        console.print(f"  Evidently report: {m['reportUri']}", markup=False)


def _ms(value: Any) -> str:
    return "-" if value is None else f"{float(value):.0f} ms"


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{float(value):.3f}"
