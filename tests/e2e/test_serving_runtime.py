"""The serving runtime end to end on CPU: a real `ray start --head` and a real MLflow tracking server on
loopback, two versions of a LoRA adapter on the tiny Llama registered in MLflow, and the app deployed
the way the controller will deploy it — a ServeDeploySchema PUT to the dashboard's Serve REST API.

The adapters are built directly with peft (random, non-zero LoRA weights, so the two versions answer
differently) rather than trained by the Ray training job — that job is covered by test_train_job.py and
would add minutes here — and they are logged and registered with the job's own `jobs.tracking.Tracker`,
so the runtime reads exactly the pyfunc layout a training run produces.

One story, in order: the app reaches RUNNING; completions equal the same adapter run in-process under
greedy decoding; a second version is served by model id, and the default moves to it through the
Ingress user_config, both without restarting a replica; malformed requests get 400 naming the field;
every request and feedback record is on disk, PII-scrubbed, only after the app is deleted (flush on
shutdown).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import SharedServices
from tuneloop.devenv import ray_head, tinymodel
from tuneloop.devenv.ports import free_port

pytestmark = pytest.mark.e2e

MODEL_NAME = "invoices-serve"
APP = "invoices"
PROMPT = "Extract the fields.\nInvoice INV-7 from Acme GmbH, dated 2026-03-04. Amount due: 120.50 EUR."
MAX_TOKENS = 24


@dataclass
class Stack:
    ray: ray_head.RayHead
    tracking_uri: str
    model_dir: Path
    adapters: dict[str, Path]  # model id -> adapter folder
    serve_url: str
    serve_port: int
    traffic_uri: str
    workdir: Path


def http(method: str, url: str, body: Any = None, timeout: float = 120) -> tuple[int, dict[str, str], Any]:
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, headers, raw = resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        status, headers, raw = e.code, dict(e.headers), e.read()
    try:
        return status, {k.lower(): v for k, v in headers.items()}, json.loads(raw) if raw else None
    except ValueError:
        return status, headers, raw.decode(errors="replace")


def build_adapter(model_dir: Path, out: Path, seed: int) -> Path:
    """A LoRA adapter with random non-zero weights (peft's init_lora_weights=False), saved like the job saves."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tuneloop.jobs import modeling

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(str(model_dir))
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
                        task_type="CAUSAL_LM")
    modeling.save_trained(get_peft_model(base, config), modeling.load_tokenizer(model_dir), out)
    return out


def log_and_register(tracking_uri: str, model_dir: Path, adapter_dir: Path, storage: Path) -> str:
    """Log the adapter with the training job's Tracker (the pyfunc a run logs) and register a version."""
    import mlflow

    from tuneloop.api.finetune import FineTuneSpec
    from tuneloop.jobs import tracking

    spec = FineTuneSpec.model_validate({
        "baseModel": {"uri": f"file://{model_dir}"}, "method": "lora",
        "dataset": {"uri": "file:///unused.jsonl"}, "registry": {"modelName": MODEL_NAME},
        "evaluation": {"maxNewTokens": MAX_TOKENS},
    })
    tracker = tracking.Tracker(tracking_uri, "tuneloop/e2e-serving", adapter_dir.name, {}, storage)
    tracker.start()
    model_uri = tracker.log_model(adapter_dir, spec)
    tracker.finish(True)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)  # never a registry an earlier test in this process left set
    version = mlflow.register_model(model_uri, MODEL_NAME)
    return f"{MODEL_NAME}/{version.version}"


def keep_logs(head: ray_head.RayHead, target: Path) -> None:
    with contextlib.suppress(OSError, shutil.Error):
        shutil.copytree(head.temp_dir / "session_latest" / "logs", target, ignore_dangling_symlinks=True)


@pytest.fixture(scope="module")
def stack(shared_services: SharedServices, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The session's Ray head and MLflow server (tests/e2e/conftest.py). Logical CPUs: one Generator
    replica (1) and the Ingress (0.5) fit the head's 4 whatever the machine's core count. MODEL_NAME starts
    from version 1 as on a server of its own; Serve is shut down after the module, freeing the CPUs."""
    workdir = tmp_path_factory.mktemp("serving-e2e")
    head = shared_services.ray
    with contextlib.ExitStack() as stack:
        stack.callback(shared_services.release_serve)
        # Serve's replica logs outlive the head in pytest's kept tmp folder, for diagnosing a failed run.
        stack.callback(keep_logs, head, workdir / "ray-logs")
        shared_services.forget_model(MODEL_NAME)
        model_dir = tinymodel.build_model(workdir / "model")
        adapter_dirs = [build_adapter(model_dir, workdir / f"adapter-{seed}", seed) for seed in (1, 2)]
        adapters = {log_and_register(shared_services.tracking_uri, model_dir, d, workdir / f"run-{d.name}"): d
                    for d in adapter_dirs}
        port = free_port()
        yield Stack(head, shared_services.tracking_uri, model_dir, adapters, f"http://127.0.0.1:{port}/{APP}", port,
                    f"file://{workdir / 'traffic'}", workdir)


def deploy_config(s: Stack, default_model_id: str, apps: bool = True) -> dict[str, Any]:
    """The ServeDeploySchema the controller will PUT (see the serving README section)."""
    first = next(iter(s.adapters))
    app = {
        "name": APP, "route_prefix": f"/{APP}", "import_path": "tuneloop.serving.app:build",
        "runtime_env": {"env_vars": {"MLFLOW_DISABLE_TELEMETRY": "true"}},
        "args": {
            "deployment": APP, "tracking_uri": s.tracking_uri, "default_model_id": first,
            "base_model_uri": f"file://{s.model_dir}", "max_tokens": 64, "default_max_tokens": MAX_TOKENS,
            "max_models_per_replica": 2, "traffic_log_uri": s.traffic_uri,
            # Nothing is written before shutdown: the last test proves close() flushes everything.
            "log_batch_size": 1000, "log_flush_interval_seconds": 3600, "log_capacity": 5000,
            "cache_dir": str(s.workdir / "serve-cache"),
        },
        "deployments": [
            {"name": "Generator", "num_replicas": 1, "ray_actor_options": {"num_cpus": 1}},
            {"name": "Ingress", "num_replicas": 1, "ray_actor_options": {"num_cpus": 0.5},
             "user_config": {"default_model_id": default_model_id}},
        ],
    }
    return {"http_options": {"host": "127.0.0.1", "port": s.serve_port}, "applications": [app] if apps else []}


def applications(s: Stack) -> dict[str, Any]:
    status, _, body = http("GET", f"{s.ray.address}/api/serve/applications/", timeout=30)
    assert status == 200, body
    return body.get("applications") or {}


def put_and_wait(s: Stack, config: dict[str, Any], timeout_seconds: float = 420) -> dict[str, Any]:
    """PUT the whole config, then wait for RUNNING with a deploy time after the PUT and our config
    deployed (FACTS.md: the PUT returns before the deploy finishes)."""
    sent_at = time.time()
    status, _, body = http("PUT", f"{s.ray.address}/api/serve/applications/", config)
    assert status == 200, body
    deadline = time.monotonic() + timeout_seconds
    while True:
        app = applications(s).get(APP, {})
        deployed = app.get("deployed_app_config") or {}
        wanted = config["applications"][0]
        if (app.get("status") == "RUNNING" and app.get("last_deployed_time_s", 0) >= sent_at - 1
                and deployed.get("args") == wanted["args"]
                and {d["name"]: d.get("user_config") for d in deployed.get("deployments", [])}
                == {d["name"]: d.get("user_config") for d in wanted["deployments"]}):
            return app
        assert app.get("status") != "DEPLOY_FAILED", app.get("message", "")[-4000:]
        assert time.monotonic() < deadline, f"app not RUNNING: {json.dumps(app)[-4000:]}"
        time.sleep(1)


def replicas(app: dict[str, Any]) -> dict[str, set[tuple[str, int]]]:
    return {name: {(r["replica_id"], r["pid"]) for r in d.get("replicas", [])}
            for name, d in app["deployments"].items()}


def reference_answer(s: Stack, model_id: str, prompt: str, max_tokens: int) -> str:
    """The same adapter run in-process the way the training job's evaluation runs it."""
    import torch

    from tuneloop.jobs import evaluating, modeling, prompts

    device = torch.device("cpu")
    model = modeling.load_for_inference(s.model_dir, s.adapters[model_id], "lora", device)
    return evaluating.generate(model, modeling.load_tokenizer(s.model_dir), [prompts.render_prompt(prompt)],
                               max_tokens, device)[0]


def complete(s: Stack, body: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
    return http("POST", f"{s.serve_url}/v1/completions", body)


@pytest.fixture(scope="module")
def deployed(stack: Stack) -> dict[str, Any]:
    return put_and_wait(stack, deploy_config(stack, next(iter(stack.adapters))))


SENT: list[str] = []  # request ids the story sends, checked against the log at the end


def test_serves_the_default_version_like_the_job_evaluates_it(stack: Stack, deployed: dict[str, Any]) -> None:
    v1 = next(iter(stack.adapters))
    status, headers, body = complete(stack, {"prompt": PROMPT})
    assert status == 200, body
    SENT.append(body["id"])
    # Serve's proxy gives every request an x-request-id (the client's, if sent): the log key is that id.
    assert body["id"] and headers["x-request-id"] == body["id"]
    assert body["model"] == v1 and body["object"] == "text_completion"
    choice = body["choices"][0]
    assert choice["text"] == reference_answer(stack, v1, PROMPT, MAX_TOKENS)
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0 and 0 < usage["completion_tokens"] <= MAX_TOKENS
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]

    status, _, health = http("GET", f"{stack.serve_url}/healthz")
    assert status == 200 and health["default_model_id"] == v1 and health["traffic_log"]["dropped"] == 0


def test_second_version_by_model_id_and_as_default_without_restart(stack: Stack, deployed: dict[str, Any]) -> None:
    v1, v2 = list(stack.adapters)
    before = replicas(applications(stack)[APP])
    expected = {v: reference_answer(stack, v, PROMPT, 16) for v in (v1, v2)}
    assert expected[v1] != expected[v2], "the two adapters must answer differently for this test to mean anything"
    for model_id in (v2, v1, v2):  # both attached on one replica, switched per request
        status, _, body = complete(stack, {"model": model_id, "prompt": PROMPT, "max_tokens": 16})
        assert status == 200, body
        SENT.append(body["id"])
        assert body["model"] == model_id and body["choices"][0]["text"] == expected[model_id]

    # An alias move: the controller changes only the Ingress user_config (reconfigure, no restart).
    app = put_and_wait(stack, deploy_config(stack, v2))
    assert replicas(app) == before
    deadline = time.monotonic() + 60
    while http("GET", f"{stack.serve_url}/healthz")[2]["default_model_id"] != v2:  # reconfigure is async
        assert time.monotonic() < deadline, "the Ingress never took the new default_model_id"
        time.sleep(0.5)
    status, _, body = complete(stack, {"prompt": PROMPT, "max_tokens": 16, "temperature": 0})
    assert status == 200 and body["model"] == v2 and body["choices"][0]["text"] == expected[v2]
    SENT.append(body["id"])


BAD: list[tuple[dict[str, Any], int, str]] = [
    ({"model": "invoices-serve/1"}, 400, "prompt"),
    ({"prompt": "hi", "max_tokens": 0}, 400, "max_tokens"),
    ({"prompt": "hi", "temperature": "hot"}, 400, "temperature"),
    ({"prompt": "hi", "model": "invoices-serve"}, 400, "model"),
    ({"prompt": "hi", "stream": True}, 400, "stream"),
    ({"prompt": "hi", "model": "invoices-serve/99"}, 404, "model"),
]


def test_malformed_requests_name_the_field(stack: Stack, deployed: dict[str, Any]) -> None:
    for body, code, param in BAD:
        status, headers, answer = complete(stack, body)
        assert (status, answer["error"]["param"]) == (code, param), answer
        SENT.append(headers["x-request-id"])
    status, headers, answer = http("POST", f"{stack.serve_url}/v1/completions", b"{not json")
    SENT.append(headers["x-request-id"])
    assert status == 400 and answer["error"]["param"] is None and "JSON" in answer["error"]["message"]
    status, _, answer = http("POST", f"{stack.serve_url}/v1/feedback", {"label": "good"})
    assert status == 400 and answer["error"]["param"] == "request_id"


def test_requests_and_feedback_reach_parquet_scrubbed_on_shutdown(stack: Stack, deployed: dict[str, Any]) -> None:
    from tuneloop.serving import traffic_read

    pii_prompt = PROMPT + " Contact: billing@acme.example.com, +44 20 7946 0958."
    status, _, body = complete(stack, {"prompt": pii_prompt, "max_tokens": 8})
    assert status == 200, body
    SENT.append(body["id"])
    status, _, ack = http("POST", f"{stack.serve_url}/v1/feedback",
                          {"request_id": body["id"], "label": "wrong", "correction": "mail ops@acme.example.com"})
    assert status == 202 and ack["id"] == body["id"]
    assert traffic_read.read_traffic(stack.traffic_uri, APP).empty  # all still in memory (hour-long interval)

    # Delete the app the way the controller will: PUT the config without it.
    status, _, answer = http("PUT", f"{stack.ray.address}/api/serve/applications/", deploy_config(stack, "", False))
    assert status == 200, answer
    deadline = time.monotonic() + 120
    while APP in applications(stack):
        assert time.monotonic() < deadline, "app not deleted"
        time.sleep(1)

    frame = traffic_read.read_traffic(stack.traffic_uri, APP)
    assert sorted(frame["request_id"]) == sorted(SENT)
    ok = frame[frame["status_code"] == 200]
    assert len(ok) == 6 and set(ok["model_version"]) == {"1", "2"} and (ok["latency_ms"] > 0).all()
    assert (ok["completion_tokens"] > 0).all() and ok["completion"].notna().all()
    assert sorted(frame["status_code"].tolist()) == [200] * 6 + [400] * 6 + [404]
    row = frame.set_index("request_id").loc[body["id"]]
    assert "billing@acme" not in row["prompt"] and "[EMAIL]" in row["prompt"] and "[PHONE]" in row["prompt"]
    assert row["pii_redactions"] == 2
    assert row["feedback_label"] == "wrong" and row["feedback_correction"] == "mail [EMAIL]"
    raw = b"".join(p.read_bytes() for p in Path(stack.traffic_uri.removeprefix("file://")).rglob("*.parquet"))
    assert b"acme.example.com" not in raw and b"7946" not in raw
