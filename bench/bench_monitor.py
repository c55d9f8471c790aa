"""Benchmark: one monitor check at 10k and 100k logged rows against a bare Evidently call on the same frames.

- `check`: `tuneloop.monitoring.checking.check` as the operator runs it — answered-row filtering, JSON
  validity and schema match on every answer, the drift descriptors and report with per-column methods on a
  seeded sample of at most 20 000 rows (`max_drift_rows`), reading the snapshot, labelled quality on the
  rows with feedback (10%) — without writing the HTML report;
- `check_uncapped`: the same with no sample cap (drift on every row): the like-for-like comparison with bare;
- `check_with_report`: the same and Evidently's HTML report written to disk;
- `bare`: `Dataset.from_pandas` with Evidently's own descriptors for the same drift columns (IsValidJSON
  for JSON validity) and `Report([DataDriftPreset(...)]).run` with the same per-column methods — the least
  any Evidently drift check on these columns costs;
- `read_window`: reading the window back from the traffic log's Parquet layout (`traffic_read.read_traffic`),
  which a scheduled check pays before `check`.

Each figure is the median of `--repeats` runs after one warm-up. The reference is `--reference-rows` rows of
the same synthetic invoice traffic (tests/unit/monitoring/traffic.py). Numbers depend on the machine's load
(recorded with them). The goal in issue #9: check < 3 s at 100k rows and <= 1.2x bare.
`bare` runs on every row; compare `check_uncapped` with it for the monitors' own overhead.

    .venv/bin/python bench/bench_monitor.py [--out bench/results/monitor.json] [--rows 10000 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.unit.monitoring import traffic
from tuneloop.monitoring import checking, columns
from tuneloop.serving import traffic_log, traffic_read


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float], Any]:
    fn()  # warm-up: imports, Evidently's first-use registrations
    runs, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        runs.append(time.perf_counter() - started)
    return statistics.median(runs), runs, result


def bare(reference: Any, current: Any) -> Any:
    """The same drift columns and methods with Evidently's own descriptors and nothing else."""
    from evidently import DataDefinition, Dataset, Report
    from evidently import descriptors as d
    from evidently.presets import DataDriftPreset

    wanted = columns.resolve(columns.DEFAULT_COLUMNS)
    factories = {"TextLength": d.TextLength, "WordCount": d.WordCount,
                 "NonLetterCharacterPercentage": d.NonLetterCharacterPercentage, "answer_shape": d.IsValidJSON}
    descriptors = [factories[c.descriptor](c.source, alias=c.name) for c in wanted]
    definition = DataDefinition(text_columns=[columns.PROMPT, columns.COMPLETION])
    ref = Dataset.from_pandas(reference[[columns.PROMPT, columns.COMPLETION]], data_definition=definition,
                              descriptors=descriptors)
    cur = Dataset.from_pandas(current[[columns.PROMPT, columns.COMPLETION]], data_definition=definition,
                              descriptors=descriptors)
    preset = DataDriftPreset(columns=[c.name for c in wanted], per_column_method={c.name: c.method for c in wanted},
                             per_column_threshold={c.name: c.threshold for c in wanted})
    return Report([preset], include_tests=True).run(cur, ref).dict()


def window(rows: int, seed: int) -> Any:
    frame = traffic.frame(rows, seed=seed)
    labelled = rows // 10
    frame["feedback_correction"] = frame["completion"].tolist()[:labelled] + [None] * (rows - labelled)
    return frame


def write_log(frame: Any, root: Path) -> datetime:
    """The window as the traffic logger lays it out: one part file per hour partition."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    start = datetime(2026, 11, 23, 0, 0, tzinfo=UTC)
    step = timedelta(seconds=3600 / max(1, len(frame) // 4))  # four hour partitions
    records = [traffic_log.TrafficRecord(kind="request", request_id=f"r{i}", time=start + i * step, model_id="m/1",
                                         model_version="1", prompt=p, completion=c, status_code=200)
               for i, (p, c) in enumerate(zip(frame["prompt"], frame["completion"], strict=True))]
    by_hour: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_hour.setdefault(traffic_log.hour_of(r.time), []).append(r.__dict__)
    for hour, rows in by_hour.items():
        folder = root / "deployment=bench" / f"hour={hour}"
        folder.mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=traffic_log.schema()), folder / "part-0.parquet")
    return start


_CHECK_FRAMES: dict[str, Any] = {}


def _frames_check(request: dict[str, Any]) -> dict[str, Any]:
    """A check function as TUNELOOP_MONITOR_CHECK names one: the real `checking.check` on prepared frames."""
    summary = checking.check(_CHECK_FRAMES["reference"], _CHECK_FRAMES["current"], _CHECK_FRAMES["config"])
    return {"samples": summary.samples, "drift_share": summary.drift_share}


def reconcile_under_checks(reference: Any, current: Any, config: Any, checks: int, max_checks: int,
                           reconciles: int) -> dict[str, Any]:
    """What `checks` monitor checks running at once (in the operator's pool of `max_checks` threads) cost the
    event loop: the wall time of FineTune reconcile passes (the real FineTuneReconciler over in-memory clients
    behind our interfaces, a run being polled) and the loop's lag on a 10 ms sleep, with and without them."""
    import asyncio

    from tests.unit.operator.test_reconciler import NAME, NS, World
    from tuneloop.operator.clients.monitor import ThreadedMonitor

    _CHECK_FRAMES.update(reference=reference, current=current, config=config)
    sys.modules.setdefault("bench_monitor_checks", sys.modules[__name__])

    async def passes(world: World) -> tuple[list[float], list[float]]:
        durations, lags = [], []
        for _ in range(reconciles):
            started = time.perf_counter()
            await world.op.reconcile(NS, NAME)
            durations.append(time.perf_counter() - started)
            started = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append(time.perf_counter() - started - 0.01)
        return durations, lags

    def measure(with_checks: bool) -> dict[str, Any]:
        world = World(mode="ExistingCluster")
        world.reconcile()  # launched; every later pass polls the Ray job

        async def run() -> tuple[list[float], list[float], float]:
            pool = ThreadedMonitor("bench_monitor_checks:_frames_check", max_checks)
            try:
                pending = [asyncio.ensure_future(pool.check({})) for _ in range(checks)] if with_checks else []
                await asyncio.sleep(0.05)  # the checks are running
                durations, lags = await passes(world)
                busy = sum(not t.done() for t in pending)
                await asyncio.gather(*pending)
                return durations, lags, busy
            finally:
                pool.close()

        durations, lags, busy = asyncio.run(run())
        return {"reconcile_p50_ms": round(statistics.median(durations) * 1000, 2),
                "reconcile_p95_ms": round(sorted(durations)[int(0.95 * (len(durations) - 1))] * 1000, 2),
                "loop_lag_p50_ms": round(statistics.median(lags) * 1000, 2),
                "loop_lag_max_ms": round(max(lags) * 1000, 2), "checks_still_running_at_end": busy}

    quiet, loaded = measure(False), measure(True)
    return {"checks": checks, "max_checks": max_checks, "reconciles": reconciles, "rows": len(current),
            "without_checks": quiet, "with_checks": loaded,
            "reconcile_p50_ratio": round(loaded["reconcile_p50_ms"] / max(quiet["reconcile_p50_ms"], 1e-6), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench/results/monitor.json")
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--reference-rows", type=int, default=2_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--checks", type=int, default=20, help="checks at once for the reconcile-latency figure")
    parser.add_argument("--max-checks", type=int, default=2, help="the operator's TUNELOOP_MONITOR_MAX_CHECKS")
    parser.add_argument("--reconciles", type=int, default=200)
    parser.add_argument("--only-reconcile", action="store_true", help="skip the check-time figures")
    args = parser.parse_args()
    warnings.simplefilter("ignore", RuntimeWarning)

    reference = traffic.frame(args.reference_rows, seed=1)
    config = checking.CheckConfig(min_samples=100, quality_metric="exact_match")
    results: list[dict[str, Any]] = []
    under = reconcile_under_checks(reference, window(10_000, seed=2), config, args.checks, args.max_checks,
                                   args.reconciles)
    print(json.dumps(under), flush=True)
    for rows in [] if args.only_reconcile else args.rows:
        current = window(rows, seed=2)
        check_s, check_runs, summary = timed(partial(checking.check, reference, current, config), args.repeats)
        uncapped = replace(config, max_drift_rows=None)
        uncapped_s, uncapped_runs, _ = timed(partial(checking.check, reference, current, uncapped), args.repeats)
        with tempfile.TemporaryDirectory() as tmp:
            report = Path(tmp) / "report.html"
            report_s, report_runs, _ = timed(partial(checking.check, reference, current, config, report), args.repeats)
            report_bytes = report.stat().st_size
            start = write_log(current, Path(tmp) / "log")
            read_s, read_runs, read = timed(
                partial(traffic_read.read_traffic, f"file://{tmp}/log", "bench", start), args.repeats)
            assert len(read) == rows
        bare_s, bare_runs, _ = timed(partial(bare, reference, current), args.repeats)
        entry = {
            "rows": rows, "reference_rows": args.reference_rows, "labelled_rows": rows // 10,
            "check_seconds": round(check_s, 3), "check_with_report_seconds": round(report_s, 3),
            "check_uncapped_seconds": round(uncapped_s, 3), "bare_evidently_seconds": round(bare_s, 3),
            "check_over_bare": round(check_s / bare_s, 3), "uncapped_over_bare": round(uncapped_s / bare_s, 3),
            "drift_rows": summary.drift_rows,
            "read_window_seconds": round(read_s, 3), "report_bytes": report_bytes,
            "runs": {"check": [round(x, 3) for x in check_runs], "check_uncapped": [round(x, 3) for x in uncapped_runs],
                     "check_with_report": [round(x, 3) for x in report_runs],
                     "bare": [round(x, 3) for x in bare_runs], "read_window": [round(x, 3) for x in read_runs]},
            "verdict": summary.verdict, "drift_share": summary.drift_share,
            "quality": summary.quality.values if summary.quality else None,
        }
        results.append(entry)
        print(json.dumps({k: v for k, v in entry.items() if k != "runs"}), flush=True)

    out = {
        "benchmark": "monitor", "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0]},
        "drift_columns": list(columns.DEFAULT_COLUMNS), "repeats": args.repeats,
        "goal": "check < 3 s at 100k rows and <= 1.2x bare Evidently",
        "results": results,
        "reconcile_under_checks": under,
        "reconcile_goal": "FineTune reconcile latency while 20 checks run within 1.2x of no checks",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
