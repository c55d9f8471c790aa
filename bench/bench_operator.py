"""Operator benchmark: apply 100 and 500 FineTunes at once in RayJob mode against a real apiserver
(control plane from devenv, the test RayJob CRD installed, no KubeRay) and measure

* apply → RayJob-created latency per FineTune (p50, p99): from just before the create request is
  sent to the moment a watch on RayJobs delivers the child,
* the time until every FineTune has its RayJob,
* the client side on its own: how long creating all FineTunes took, and each create call,
* CPU seconds used by the operator, kube-apiserver and etcd while the run lasted, and the machine's
  load average (they share the machine with the client, and with whatever else runs there),
* the operator's peak RSS (VmHWM of the `kopf run` process, a fresh process per size).

`--mixed` runs each size again with the rest of the product's load on the same event loop (50
ModelDeployments created with the FineTunes and brought to Serving, 20 of them monitored every 10 s; see
MIXED_METHOD and bench/operator_load.py), interleaved with the plain runs (`--repeats`). `--idle` measures
the operator holding 1,000 terminal FineTunes and 200 Serving ModelDeployments: its share of one core
over a window once settled, and its RSS (IDLE_METHOD).

`--profile PATH` also records the operator with py-spy (samples holding the GIL) into PATH.<size>.txt.
Writes bench/results/operator.json. Goals: p50 < 150 ms and p99 < 1 s at 500; RSS < 250 MB; mixed within
1.3x of no-load; idle < 2% of a core and < 400 MB.
Run: `python bench/bench_operator.py [--sizes 100 500] [--mixed [--repeats N]] [--idle]`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import operator_load as load  # bench/, next to this file

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "operator.json"
OPERATOR_ENV = {"TUNELOOP_KUBE_THREADS": "16"}  # --kube-threads, --operator-src change it (for comparisons)
POLL_SECONDS = 30
RAYJOB_CRD = REPO / "tests" / "fixtures" / "rayjob-crd.yaml"
METHOD = (
    "A fresh `kopf run` operator per size, one namespace, RayJob mode, no KubeRay; one warm-up FineTune "
    "first (not counted). Then N FineTunes are created by a bounded pool of client threads (--apply-threads) "
    "as fast as the apiserver accepts them. latency = RayJob ADDED on a watch minus the moment just before "
    "that FineTune's create request was sent; every FineTune counts, nothing is excluded or retried. "
    "create_call_ms is the client's create request alone; all_launched_seconds runs from the first create "
    "to the last RayJob. cpu_seconds are utime+stime from /proc between the first create and the last "
    "RayJob. The operator, kube-apiserver, etcd and this client share the machine's CPUs with anything "
    "else running: compare load_average (1-min, before and after) when comparing runs. "
    "operator_cpu_seconds_until_idle extends the operator's window until it is idle (under 20 ms of CPU in "
    "0.5 s, and before the first FineTunes poll again), so each FineTune's Event and status write, which "
    "follow its RayJob, count too; it is split into the main thread (kopf's event loop) and all others."
)
MIXED_METHOD = (
    "--mixed: each size also runs with the rest of the product's load, on a fresh operator as above, the two "
    "scenarios interleaved (order alternating per repeat). A real MLflow server holds a model whose champion "
    "alias the ModelDeployments follow; the operator runs the scripted monitor check of the API tests "
    "(tests/api/scripted_check.py, the answer is a file). Warm-up: one ModelDeployment Serving and checked "
    "(not counted). Then, at the moment of the first FineTune create, a separate client thread creates 50 "
    "ModelDeployments in RayService mode (one after another, ~1 s); the bench acts as KubeRay and writes each "
    "new RayService's status RUNNING, so each goes create -> MLflow lookup -> RayService -> Deploying -> "
    "rollout poll (2 s) -> Serving; the first 20 carry monitoring every 10 s (the least allowed), their first "
    "check due at once. The FineTune figures are measured exactly as without the load (same window, same "
    "operator settings); the operator's CPU then includes the deployments' and monitors' work. "
    "operator_cpu_ms_per_object_until_idle divides it by FineTunes + ModelDeployments. mixed.* says how much of "
    "the load happened before the operator settled (deployments Serving, monitor checks run)."
)
IDLE_METHOD = (
    "--idle: a fresh operator with its default settings (poll 10 s) in a namespace holding N terminal FineTunes "
    "(half Succeeded with a registered version not holding an alias, half Failed; status written through the "
    "status subresource before the operator starts, a finished run of the same spec) and M ModelDeployments in "
    "RayService mode following a champion alias in a real MLflow server, monitored hourly by the scripted check. "
    "The operator starts, brings the M to Serving (the bench acts as KubeRay) and checks each once; once it "
    "settled (under 5% of a core over 10 s, then 10 s more), its CPU (utime+stime) is read over --idle-window "
    "seconds (default 120, a whole slow look of each finished FineTune, TUNELOOP_MAX_POLL_SECONDS; a Serving "
    "deployment re-reads its alias every TUNELOOP_POLL_SECONDS, 10 s): operator_cpu_percent_of_a_core = "
    "CPU seconds / window. RSS is VmRSS at the end "
    "and VmHWM. finetune_phases_after and rayjobs_started check that nothing started again."
)


@dataclass(frozen=True)
class Mixed:
    """The load beside the FineTune burst: ModelDeployments created with it (RayService mode), the first
    `monitored` of them checked every `monitor_seconds`."""

    tracking_uri: str
    scripts: Path
    deployments: int = 50
    monitored: int = 20
    monitor_seconds: int = 10  # the least spec.monitoring.intervalSeconds allows


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def finetune(name: str) -> dict:
    return {
        "apiVersion": "tuneloop.io/v1alpha1", "kind": "FineTune", "metadata": {"name": name},
        "spec": {"baseModel": {"uri": "hf://tiny/llama"}, "dataset": {"uri": "s3://bucket/data.jsonl"},
                 "registry": {"modelName": "bench", "trackingUri": "http://127.0.0.1:1"},
                 "resources": {"gpus": 1, "workers": 2}, "activeDeadlineSeconds": 3600},
    }


def ms(seconds: list[float], q: float) -> float:
    return round(percentile(seconds, q) * 1000, 1)


def cpu_seconds(pid: int) -> float:
    return cpu_seconds_of(Path(f"/proc/{pid}/stat"))


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds of a process's main thread (kopf's event loop) and of all its other threads."""
    totals = {"event_loop": 0.0, "threads": 0.0}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            totals["event_loop" if task.name == str(pid) else "threads"] += cpu_seconds_of(task / "stat")
        except OSError:  # the thread ended meanwhile (its CPU is lost from the split)
            continue
    return totals


def cpu_seconds_of(stat: Path) -> float:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_size(cp, api_client, size: int, workers: int, profile: Path | None = None,
             mixed: Mixed | None = None) -> dict:
    from kubernetes import client as k8s
    from kubernetes import watch

    scenario = "mixed" if mixed else "no-load"
    ns = f"bench-{size}-{scenario}-{int(time.time())}"
    cp.kubectl("create", "namespace", ns)
    env = {**os.environ, "KUBECONFIG": str(cp.kubeconfig), "TUNELOOP_POLL_SECONDS": str(POLL_SECONDS),
           "TUNELOOP_METRICS_PORT": "0", **OPERATOR_ENV}
    if mixed:
        scripts = mixed.scripts / ns
        env |= {"TUNELOOP_MONITOR_CHECK": load.SCRIPTED_CHECK, load.SCRIPT_DIR_ENV: str(scripts)}
    log = open(REPO / "bench" / "results" / f"operator-{size}-{scenario}.log", "w")  # noqa: SIM115
    op = subprocess.Popen([sys.executable, "-m", "kopf", "run", "-m", "tuneloop.operator.main", "--standalone",
                           "--namespace", ns], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    custom = k8s.CustomObjectsApi(api_client)
    seen: dict[str, float] = {}
    done = threading.Event()
    ready = threading.Event()

    def watch_rayjobs() -> None:
        w = watch.Watch()
        ready.set()
        for event in w.stream(custom.list_namespaced_custom_object, "ray.io", "v1", ns, "rayjobs",
                              timeout_seconds=600):
            if event["type"] == "ADDED":
                owner = event["object"]["metadata"]["ownerReferences"][0]["name"]
                seen.setdefault(owner, time.monotonic())
                if len(seen) >= size + 1:
                    break
        done.set()

    threading.Thread(target=watch_rayjobs, daemon=True).start()
    ready.wait()
    try:
        # Warm-up: the operator is up once it launched this one.
        custom.create_namespaced_custom_object("tuneloop.io", "v1alpha1", ns, "finetunes", finetune("warmup"))
        deadline = time.monotonic() + 120
        while "warmup" not in seen:
            if op.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"operator did not launch the warm-up FineTune; see {log.name}")
            time.sleep(0.05)
        rss_idle = peak_rss_mb(op.pid)
        spy = None
        if profile:
            # Samples of the operator's threads holding the GIL (its Python CPU; threads blocked on a
            # socket are not counted), from just before the first create until the operator is idle.
            spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(op.pid),
                                    "--gil", "--nolineno", "--rate", "250", "-f", "raw",
                                    "-o", str(profile.with_suffix(f".{size}{'.mixed' if mixed else ''}.txt"))],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1)
        applied: dict[str, float] = {}
        create_calls: list[float] = []

        def apply(i: int) -> None:
            name = f"ft-{i:04d}"
            applied[name] = time.monotonic()
            custom.create_namespaced_custom_object("tuneloop.io", "v1alpha1", ns, "finetunes", finetune(name))
            create_calls.append(time.monotonic() - applied[name])

        deployments: threading.Thread | None = None
        if mixed:
            load.KubeRayStandIn(api_client, ns)
            monitored = [f"md-{i:03d}" for i in range(mixed.monitored)]
            load.script_answers(scripts, ns, [*monitored, "md-warmup"])
            # Warm-up of the deployment path too (mlflow is imported on the first registry call, the monitor
            # check function on the first check): one deployment Serving and checked, not counted.
            custom.create_namespaced_custom_object(load.GROUP, load.VERSION, ns, "modeldeployments",
                                                   load.deployment("md-warmup", mixed.tracking_uri, 3600))
            load.wait_until(lambda: load.serving_and_monitored(api_client, ns) == (1, 1), 120,
                            f"the warm-up ModelDeployment Serving and checked; see {log.name}")

            def deploy() -> None:  # the ModelDeployments arrive with the FineTunes, from their own client
                for i in range(mixed.deployments):
                    custom.create_namespaced_custom_object(
                        load.GROUP, load.VERSION, ns, "modeldeployments",
                        load.deployment(f"md-{i:03d}", mixed.tracking_uri,
                                        mixed.monitor_seconds if i < mixed.monitored else None))

            deployments = threading.Thread(target=deploy, daemon=True)
        pids = {"operator": op.pid, **{Path(p.args[0]).name: p.pid for p in cp.procs}}
        cpu_before = {k: cpu_seconds(pid) for k, pid in pids.items()}
        threads_before = thread_cpu_seconds(op.pid)
        load_before = os.getloadavg()[0]
        wall_started = time.time()
        started = time.monotonic()
        if deployments is not None:
            deployments.start()
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(apply, range(size)))
        apply_seconds = time.monotonic() - started
        if not done.wait(timeout=600):
            raise RuntimeError(f"only {len(seen) - 1}/{size} RayJobs after 600s")
        cpu = {k: round(cpu_seconds(pid) - cpu_before[k], 2) for k, pid in pids.items()}
        # The window above ends at the last RayJob; each FineTune's Event and status write come after
        # its RayJob. Wait until the operator is idle (under 20 ms of CPU in 0.5 s) to count them too,
        # but stop before the first launched FineTunes poll again (TUNELOOP_POLL_SECONDS after launch).
        settle_deadline, last, idle = started + POLL_SECONDS - 2, cpu_seconds(op.pid), False
        while time.monotonic() < settle_deadline:
            time.sleep(0.5)
            now = cpu_seconds(op.pid)
            idle, last = now - last < 0.02, now
            if idle:
                break
        operator_settled = round(last - cpu_before["operator"], 2)
        settled_at = time.time()
        threads_after = thread_cpu_seconds(op.pid)
        by_thread = {k: round(v - threads_before[k], 2) for k, v in threads_after.items()}
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
        latencies = [seen[name] - t for name, t in applied.items()]
        extra: dict = {}
        if mixed:
            assert deployments is not None
            deployments.join()
            extra = {"mixed": mixed_figures(api_client, ns, mixed, scripts, wall_started, settled_at),
                     "operator_cpu_ms_per_object_until_idle": round(
                         operator_settled / (size + mixed.deployments) * 1000, 1)}
        return {
            "scenario": scenario,
            "finetunes": size,
            "apply_seconds": round(apply_seconds, 3),
            "create_call_ms_p50": ms(create_calls, 50),
            "create_call_ms_p99": ms(create_calls, 99),
            "latency_ms_p50": ms(latencies, 50),
            "latency_ms_p99": ms(latencies, 99),
            "latency_ms_max": round(max(latencies) * 1000, 1),
            "latency_ms_mean": round(statistics.mean(latencies) * 1000, 1),
            "all_launched_seconds": round(max(seen[n] for n in applied) - started, 3),
            "cpu_seconds": cpu,
            "operator_cpu_ms_per_finetune": round(cpu["operator"] / size * 1000, 1),
            "operator_cpu_seconds_until_idle": operator_settled,
            "operator_cpu_ms_per_finetune_until_idle": round(operator_settled / size * 1000, 1),
            "operator_idle_reached": idle,
            "operator_cpu_seconds_until_idle_by_thread": by_thread,
            "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "operator_rss_mb_idle": round(rss_idle, 1),
            "operator_rss_mb_peak": round(peak_rss_mb(op.pid), 1),
            **extra,
        }
    finally:
        stop_operator(op, log)


def stop_operator(op: subprocess.Popen, log) -> None:
    """Stop the bench's `kopf run` (SIGTERM, then SIGKILL after 15 s) and close its log."""
    op.terminate()
    try:
        op.wait(timeout=15)
    except subprocess.TimeoutExpired:
        op.kill()
    log.close()


def mixed_figures(api_client, ns: str, mixed: Mixed, scripts: Path, wall_started: float, settled_at: float) -> dict:
    """How much of the mixed load happened while the FineTunes were measured (until the operator settled)."""
    from kubernetes import client as k8s

    items = k8s.CustomObjectsApi(api_client).list_namespaced_custom_object(
        load.GROUP, load.VERSION, ns, "modeldeployments")["items"]
    ours = [i for i in items if i["metadata"]["name"] != "md-warmup"]
    serving_since = [datetime.fromisoformat(c["lastTransitionTime"]).timestamp()
                     for i in ours if (i.get("status") or {}).get("phase") == "Serving"
                     for c in i["status"].get("conditions", []) if c["type"] == "Ready"]
    checks = []  # the time of each scripted check (its request's `since` plus the default 1-day window)
    for path in scripts.glob("*.calls"):
        if path.name.endswith(".md-warmup.calls"):
            continue
        for line in path.read_text().splitlines():
            checks.append((datetime.fromisoformat(json.loads(line)["since"]) + timedelta(days=1)).timestamp())
    return {
        "deployments": mixed.deployments, "monitored": mixed.monitored,
        "monitor_interval_seconds": mixed.monitor_seconds,
        "deployments_serving_when_settled": sum(t <= settled_at + 1 for t in serving_since),
        "deployments_serving_seconds_max": round(max(serving_since) - wall_started, 1) if serving_since else None,
        "monitor_checks_until_settled": sum(wall_started - 1 <= t <= settled_at for t in checks),
    }


def run_idle(cp, api_client, tracking_uri: str, scripts: Path, finetunes: int, deployments: int,
             window: float, workers: int, profile: Path | None = None) -> dict:
    """The operator holding finished work: `finetunes` terminal FineTunes (half Succeeded, half Failed, status
    written before it starts) and `deployments` ModelDeployments it brings to Serving and checks once; then
    its CPU over `window` seconds once start-up has settled. Operator settings are its defaults."""
    from kubernetes import client as k8s

    ns = f"bench-idle-{int(time.time())}"
    cp.kubectl("create", "namespace", ns)
    custom = k8s.CustomObjectsApi(api_client)
    body = finetune("x")
    body["spec"]["registry"]["trackingUri"] = tracking_uri
    failed = load.terminal_status(body["spec"], False, "")

    def make_finetune(i: int) -> None:
        name = f"done-{i:04d}"
        custom.create_namespaced_custom_object(load.GROUP, load.VERSION, ns, "finetunes",
                                               {**body, "metadata": {"name": name}})
        # Succeeded ones hold versions 1000+ (none holds the alias: version 1 of register_model does)
        st = load.terminal_status(body["spec"], True, str(1000 + i)) if i % 2 == 0 else failed
        custom.patch_namespaced_custom_object_status(load.GROUP, load.VERSION, ns, "finetunes", name, {"status": st})

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(make_finetune, range(finetunes)))
    names = [f"idle-{i:03d}" for i in range(deployments)]
    load.script_answers(scripts / ns, ns, names)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda n: custom.create_namespaced_custom_object(
            load.GROUP, load.VERSION, ns, "modeldeployments", load.deployment(n, tracking_uri, 3600)), names))
    load.KubeRayStandIn(api_client, ns)
    env = {**os.environ, "KUBECONFIG": str(cp.kubeconfig), "TUNELOOP_METRICS_PORT": "0", **OPERATOR_ENV,
           "TUNELOOP_MONITOR_CHECK": load.SCRIPTED_CHECK, load.SCRIPT_DIR_ENV: str(scripts / ns)}
    log = open(REPO / "bench" / "results" / "operator-idle.log", "w")  # noqa: SIM115
    op = subprocess.Popen([sys.executable, "-m", "kopf", "run", "-m", "tuneloop.operator.main", "--standalone",
                           "--namespace", ns], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        started = time.monotonic()
        load.wait_until(lambda: op.poll() is None and load.serving_and_monitored(api_client, ns) == (
            deployments, deployments), 600, f"{deployments} ModelDeployments Serving and checked; see {log.name}")
        serving_seconds = time.monotonic() - started
        # Settled: under 5% of a core over 10 s (or 300 s after start at most), then 10 s more.
        last, settle_deadline = cpu_seconds(op.pid), started + 300
        while time.monotonic() < settle_deadline:
            time.sleep(10)
            now = cpu_seconds(op.pid)
            busy, last = (now - last) / 10, now
            if busy < 0.05:
                break
        time.sleep(10)
        startup_cpu = cpu_seconds(op.pid)
        settled_seconds = time.monotonic() - started
        spy = None
        if profile:
            spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(op.pid),
                                    "--gil", "--nolineno", "--rate", "100", "-f", "raw",
                                    "-o", str(profile.with_suffix(".idle.txt"))],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pids = {"operator": op.pid, **{Path(p.args[0]).name: p.pid for p in cp.procs}}
        cpu_before = {k: cpu_seconds(pid) for k, pid in pids.items()}
        threads_before = thread_cpu_seconds(op.pid)
        load_before = os.getloadavg()[0]
        t0 = time.monotonic()
        time.sleep(window)
        elapsed = time.monotonic() - t0
        cpu = {k: round(cpu_seconds(pid) - cpu_before[k], 2) for k, pid in pids.items()}
        by_thread = {k: round(v - threads_before[k], 2) for k, v in thread_cpu_seconds(op.pid).items()}
        load_after = os.getloadavg()[0]
        rss_now = next(int(line.split()[1]) / 1024 for line in Path(f"/proc/{op.pid}/status").read_text().splitlines()
                       if line.startswith("VmRSS:"))
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
        finetune_phases = load.phases(api_client, ns, "finetunes")
        rayjobs = len(custom.list_namespaced_custom_object("ray.io", "v1", ns, "rayjobs")["items"])
        return {
            "scenario": "idle", "terminal_finetunes": finetunes, "deployments": deployments,
            "finetune_phases_after": finetune_phases, "rayjobs_started": rayjobs,
            "deployments_serving_seconds": round(serving_seconds, 1), "settled_seconds": round(settled_seconds, 1),
            "operator_startup_cpu_seconds": round(startup_cpu, 2),
            "window_seconds": round(elapsed, 1), "cpu_seconds": cpu,
            "operator_cpu_percent_of_a_core": round(cpu["operator"] / elapsed * 100, 2),
            "operator_cpu_seconds_by_thread": by_thread,
            "load_average": [round(load_before, 2), round(load_after, 2)],
            "operator_rss_mb": round(rss_now, 1), "operator_rss_mb_peak": round(peak_rss_mb(op.pid), 1),
        }
    finally:
        stop_operator(op, log)


def summarize(runs: list[dict]) -> list[dict]:
    """Medians per (size, scenario) over the repeats, and mixed / no-load ratios."""
    keys = ("latency_ms_p50", "latency_ms_p99", "all_launched_seconds", "operator_cpu_ms_per_finetune",
            "operator_cpu_ms_per_finetune_until_idle", "operator_rss_mb_peak")
    rows = []
    for size in sorted({r["finetunes"] for r in runs}):
        by = {}
        for scenario in ("no-load", "mixed"):
            mine = [r for r in runs if r["finetunes"] == size and r["scenario"] == scenario]
            if mine:
                medians = {k: round(statistics.median(r[k] for r in mine), 1) for k in keys}
                by[scenario] = {"repeats": len(mine), **medians, "load_average": [r["load_average"] for r in mine]}
        row = {"finetunes": size, **by}
        if len(by) == 2:
            row["mixed_over_no_load"] = {k: round(by["mixed"][k] / by["no-load"][k], 2) for k in keys}
        rows.append(row)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[100, 500])
    parser.add_argument("--apply-threads", type=int, default=8, help="client threads creating FineTunes")
    parser.add_argument("--mixed", action="store_true",
                        help="also run each size with 50 ModelDeployments reconciling, 20 monitored (MIXED_METHOD)")
    parser.add_argument("--repeats", type=int, default=1, help="repeats of each (size, scenario), interleaved")
    parser.add_argument("--idle", action="store_true", help="also measure the operator holding finished work")
    parser.add_argument("--idle-finetunes", type=int, default=1000)
    parser.add_argument("--idle-deployments", type=int, default=200)
    parser.add_argument("--idle-window", type=float, default=120,
                        help="seconds the idle CPU is measured over (a finished FineTune looks every 120 s)")
    parser.add_argument("--kube-threads", type=int, default=16,
                        help="TUNELOOP_KUBE_THREADS of the operator (also its apiserver connection limit)")
    parser.add_argument("--operator-src", type=Path, metavar="DIR",
                        help="run the operator from another checkout's operator/src (a before/after comparison)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--profile", type=Path, metavar="PATH",
                        help="record the operator with py-spy (--gil; pip install py-spy) into PATH.<size>.txt "
                             "(raw, collapsed stacks); its CPU figures are then not comparable with unprofiled runs")
    args = parser.parse_args()
    import tempfile

    import urllib3
    from kubernetes import config

    # The local control plane's kubeconfig skips TLS verification: one warning per request otherwise.
    urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    from tuneloop.devenv import controlplane, mlflow_server

    OPERATOR_ENV["TUNELOOP_KUBE_THREADS"] = str(args.kube_threads)
    if args.operator_src:
        OPERATOR_ENV["PYTHONPATH"] = os.pathsep.join([str(args.operator_src.resolve()), str(REPO)])
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    runs, idle = [], None
    with controlplane.running() as cp, tempfile.TemporaryDirectory(prefix="bench-operator-") as tmp:
        for crd in (RAYJOB_CRD, load.RAYSERVICE_CRD):
            cp.kubectl("apply", "--server-side", "-f", str(crd))
            cp.kubectl("wait", "--for=condition=Established", "--timeout=30s", "-f", str(crd))
        api_client = config.new_client_from_config(config_file=str(cp.kubeconfig), context="admin")
        api_client.configuration.connection_pool_maxsize = args.apply_threads
        with contextlib.ExitStack() as stack:
            mixed, tracking_uri = None, ""
            if args.mixed or args.idle:
                server = stack.enter_context(mlflow_server.running(workdir=Path(tmp) / "mlflow"))
                tracking_uri = server.tracking_uri
                load.register_model(tracking_uri)
                mixed = Mixed(tracking_uri, Path(tmp) / "scripts")
            for repeat in range(args.repeats):
                for size in args.sizes:
                    scenarios = [None, mixed] if args.mixed else [None]
                    for scenario in scenarios[::-1] if repeat % 2 else scenarios:  # interleaved, order alternating
                        result = run_size(cp, api_client, size, args.apply_threads, args.profile, scenario)
                        print(json.dumps(result), flush=True)
                        runs.append(result)
            if args.idle:
                idle = run_idle(cp, api_client, tracking_uri, Path(tmp) / "scripts", args.idle_finetunes,
                                args.idle_deployments, args.idle_window, args.apply_threads, args.profile)
                print(json.dumps(idle), flush=True)
    out = {"benchmark": "operator apply -> RayJob created (RayJob mode, no KubeRay)", "cpus": os.cpu_count(),
           "method": METHOD, "mixed_method": MIXED_METHOD, "idle_method": IDLE_METHOD,
           "goals": {"p50_ms_at_500": 150, "p99_ms_at_500": 1000, "rss_mb": 250, "mixed_over_no_load": 1.3,
                     "idle_percent_of_a_core": 2, "idle_rss_mb": 400},
           "operator_env": OPERATOR_ENV, "runs": runs, "summary": summarize(runs), "idle": idle}
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
