"""Operator benchmark: apply 100 and 500 FineTunes at once in RayJob mode against a real apiserver
(control plane from devenv, the test RayJob CRD installed, no KubeRay) and measure

* apply → RayJob-created latency per FineTune (p50, p99): from just before the create request is
  sent to the moment a watch on RayJobs delivers the child,
* the time until every FineTune has its RayJob,
* the client side on its own: how long creating all FineTunes took, and each create call,
* CPU seconds used by the operator, kube-apiserver and etcd while the run lasted, and the machine's
  load average (they share the machine with the client, and with whatever else runs there),
* the operator's peak RSS (VmHWM of the `kopf run` process, a fresh process per size).

`--profile PATH` also records the operator with py-spy (samples holding the GIL) into PATH.<size>.txt.
Writes bench/results/operator.json. Goals: p50 < 150 ms and p99 < 1 s at 500; RSS < 250 MB.
Run: `python bench/bench_operator.py [--sizes 100 500]`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "operator.json"
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


def run_size(cp, api_client, size: int, workers: int, profile: Path | None = None) -> dict:
    from kubernetes import client as k8s
    from kubernetes import watch

    ns = f"bench-{size}-{int(time.time())}"
    cp.kubectl("create", "namespace", ns)
    env = {**os.environ, "KUBECONFIG": str(cp.kubeconfig), "TUNELOOP_POLL_SECONDS": str(POLL_SECONDS),
           "TUNELOOP_METRICS_PORT": "0", "TUNELOOP_KUBE_THREADS": "16"}
    log = open(REPO / "bench" / "results" / f"operator-{size}.log", "w")  # noqa: SIM115
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
                                    "-o", str(profile.with_suffix(f".{size}.txt"))],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1)
        applied: dict[str, float] = {}
        create_calls: list[float] = []

        def apply(i: int) -> None:
            name = f"ft-{i:04d}"
            applied[name] = time.monotonic()
            custom.create_namespaced_custom_object("tuneloop.io", "v1alpha1", ns, "finetunes", finetune(name))
            create_calls.append(time.monotonic() - applied[name])

        pids = {"operator": op.pid, **{Path(p.args[0]).name: p.pid for p in cp.procs}}
        cpu_before = {k: cpu_seconds(pid) for k, pid in pids.items()}
        threads_before = thread_cpu_seconds(op.pid)
        load_before = os.getloadavg()[0]
        started = time.monotonic()
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
        threads_after = thread_cpu_seconds(op.pid)
        by_thread = {k: round(v - threads_before[k], 2) for k, v in threads_after.items()}
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
        latencies = [seen[name] - t for name, t in applied.items()]
        return {
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
        }
    finally:
        op.terminate()
        try:
            op.wait(timeout=15)
        except subprocess.TimeoutExpired:
            op.kill()
        log.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 500])
    parser.add_argument("--apply-threads", type=int, default=8, help="client threads creating FineTunes")
    parser.add_argument("--profile", type=Path, metavar="PATH",
                        help="record the operator with py-spy (--gil; pip install py-spy) into PATH.<size>.txt "
                             "(raw, collapsed stacks); its CPU figures are then not comparable with unprofiled runs")
    args = parser.parse_args()
    import urllib3
    from kubernetes import config

    # The local control plane's kubeconfig skips TLS verification: one warning per request otherwise.
    urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    from tuneloop.devenv import controlplane

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with controlplane.running() as cp:
        cp.kubectl("apply", "--server-side", "-f", str(RAYJOB_CRD))
        cp.kubectl("wait", "--for=condition=Established", "--timeout=30s", "-f", str(RAYJOB_CRD))
        api_client = config.new_client_from_config(config_file=str(cp.kubeconfig), context="admin")
        api_client.configuration.connection_pool_maxsize = args.apply_threads
        runs = []
        for size in args.sizes:
            result = run_size(cp, api_client, size, args.apply_threads, args.profile)
            print(json.dumps(result), flush=True)
            runs.append(result)
    out = {"benchmark": "operator apply -> RayJob created (RayJob mode, no KubeRay)", "cpus": os.cpu_count(),
           "method": METHOD,
           "goals": {"p50_ms_at_500": 150, "p99_ms_at_500": 1000, "rss_mb": 250}, "runs": runs}
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
