"""Benchmark: the serving runtime with the inference log on and off, and what a burst loses.

Two parts, written to one JSON file:
- `logger`: the TrafficLogger alone, in-process — the cost of `log()` on the request path, and a burst
  of 10x its capacity offered at once (the producer outrunning the writer): accepted, dropped, written.
- `serve` (skip with --logger-only): a real `ray start --head` and MLflow on loopback, one LoRA version
  of the tiny Llama, the app deployed through the Serve REST API as the controller will; N completions
  at concurrency C with logging on, then off (an args change: replicas restart), reporting requests/s
  and p50/p99 latency from the client; then a burst of 10x the log capacity through HTTP, counting the
  records on disk after the app is deleted against the requests answered.

Client-side latency includes the proxy, the ingress, the handle call and a greedy generation of
`--max-tokens` tokens on CPU. Numbers depend on the machine's load (recorded with them).

    .venv/bin/python bench/bench_serve.py [--out bench/results/serve.json] [--requests 200] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e import test_serving_runtime as e2e  # the e2e story's deploy helpers
from tuneloop.devenv import mlflow_server, ray_head, tinymodel
from tuneloop.devenv.ports import free_port
from tuneloop.serving import traffic_log, traffic_read


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def bench_logger(root: Path, capacity: int) -> dict[str, Any]:
    record = traffic_log.TrafficRecord(kind="request", request_id="r", time=datetime.now(UTC), model_id="m/1",
                                       model_version="1", prompt="Invoice INV-1 from a@b.com " * 4,
                                       completion='{"invoice_id": "INV-1"}', latency_ms=10.0, status_code=200)
    # Steady: the writer keeps up; the request path pays only log().
    steady = traffic_log.TrafficLogger(f"file://{root / 'steady'}", "bench", batch_size=256,
                                       flush_interval_seconds=0.5, capacity=100_000)
    n = 20_000
    started = time.perf_counter()
    for _ in range(n):
        steady.log(record)
    log_seconds = time.perf_counter() - started
    close_started = time.perf_counter()
    steady_stats = steady.close()
    # Burst: 10x capacity offered at once.
    burst = traffic_log.TrafficLogger(f"file://{root / 'burst'}", "bench", batch_size=min(256, capacity),
                                      flush_interval_seconds=0.5, capacity=capacity)
    offered = 10 * capacity
    accepted = sum(burst.log(record) for _ in range(offered))
    burst_stats = burst.close()
    on_disk = len(traffic_read.read_traffic(f"file://{root / 'burst'}", "bench"))
    return {
        "log_call_us": log_seconds / n * 1e6, "steady_records": n, "steady_dropped": steady_stats.dropped,
        "steady_close_seconds": time.perf_counter() - close_started,
        "burst": {"capacity": capacity, "offered": offered, "accepted": accepted, "dropped": burst_stats.dropped,
                  "written": burst_stats.written, "on_disk": on_disk, "lost_of_accepted": accepted - on_disk},
    }


def load(stack: e2e.Stack, n: int, concurrency: int, max_tokens: int) -> dict[str, Any]:
    body = {"prompt": e2e.PROMPT, "max_tokens": max_tokens}

    def one(_i: int) -> tuple[float, int]:
        started = time.perf_counter()
        status = e2e.complete(stack, body)[0]
        return (time.perf_counter() - started) * 1000, status

    e2e.complete(stack, body)  # warm: adapter loaded, first generation compiled
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, range(n)))
    wall = time.perf_counter() - started
    latencies = [ms for ms, status in results if status == 200]
    return {"requests": n, "ok": len(latencies), "concurrency": concurrency, "requests_per_second": n / wall,
            "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
            "mean_ms": statistics.fmean(latencies)}


def config(stack: e2e.Stack, v1: str, **overrides: Any) -> dict[str, Any]:
    cfg = e2e.deploy_config(stack, v1)
    cfg["applications"][0]["args"].update(overrides)
    return cfg


def bench_serve(root: Path, n: int, concurrency: int, max_tokens: int, burst_capacity: int) -> dict[str, Any]:
    ray_dir = Path(f"/tmp/tl-bs-{os.getpid()}")
    head, srv = ray_head.RayHead(ray_dir, num_cpus=4), mlflow_server.MlflowServer(root / "mlflow")
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, ray_dir, True)
        cleanup.callback(head.stop)
        cleanup.callback(srv.stop)
        head.start()
        srv.start()
        model_dir = tinymodel.build_model(root / "model")
        adapter = e2e.build_adapter(model_dir, root / "adapter-1", 1)
        v1 = e2e.log_and_register(srv.tracking_uri, model_dir, adapter, root / "run")
        port = free_port()
        stack = e2e.Stack(head, srv.tracking_uri, model_dir, {v1: adapter}, f"http://127.0.0.1:{port}/{e2e.APP}",
                          port, f"file://{root / 'traffic'}", root)
        out: dict[str, Any] = {}
        e2e.put_and_wait(stack, config(stack, v1, log_flush_interval_seconds=1.0, log_batch_size=256))
        out["logging_on"] = load(stack, n, concurrency, max_tokens)
        e2e.put_and_wait(stack, config(stack, v1, log_requests=False, traffic_log_uri=None))
        out["logging_off"] = load(stack, n, concurrency, max_tokens)

        burst_uri = f"file://{root / 'burst'}"
        stack.traffic_uri = burst_uri
        e2e.put_and_wait(stack, config(stack, v1, traffic_log_uri=burst_uri, log_capacity=burst_capacity,
                                       log_batch_size=min(64, burst_capacity), log_flush_interval_seconds=1.0))
        burst = load(stack, 10 * burst_capacity, max(concurrency, 8), max_tokens)
        health = e2e.http("GET", f"{stack.serve_url}/healthz")[2]["traffic_log"]
        e2e.http("PUT", f"{head.address}/api/serve/applications/", e2e.deploy_config(stack, v1, apps=False))
        deadline = time.monotonic() + 120
        while e2e.APP in e2e.applications(stack) and time.monotonic() < deadline:
            time.sleep(1)
        on_disk = len(traffic_read.read_traffic(burst_uri, e2e.APP))
        out["burst"] = {"capacity": burst_capacity, "requests": burst["requests"], "answered": burst["ok"],
                        "dropped_at_healthz": health["dropped"], "on_disk_after_delete": on_disk,
                        "lost": burst["ok"] + 1 - on_disk,  # +1: load()'s warm-up request
                        "requests_per_second": burst["requests_per_second"]}
        return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "serve.json")
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--logger-capacity", type=int, default=10_000)
    p.add_argument("--burst-capacity", type=int, default=50, help="the served log's capacity for the burst")
    p.add_argument("--logger-only", action="store_true", help="skip the Ray Serve part")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="tl-bench-serve-", dir="/tmp") as tmp:
        root = Path(tmp)
        result: dict[str, Any] = {
            "benchmark": "serving_runtime",
            "machine": {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
                        "load_average_1m_before": os.getloadavg()[0]},
            "logger": bench_logger(root / "logger", args.logger_capacity),
        }
        if not args.logger_only:
            result["serve"] = bench_serve(root / "serve", args.requests, args.concurrency, args.max_tokens,
                                          args.burst_capacity)
        result["machine"]["load_average_1m_after"] = os.getloadavg()[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
