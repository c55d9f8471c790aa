"""The Ray Serve application of a ModelDeployment: `import_path: tuneloop.serving.app:build` with
`args` (serving.args.AppArgs).

Two deployments:
- **Generator** holds the base model once per replica and attaches a LoRA adapter per model id
  (`<registered name>/<version>`) with `@serve.multiplexed` (LRU, `max_models_per_replica`). Serve
  routes a request to a replica that already has its adapter, so moving the served version — a new
  model id — loads one adapter and restarts nothing.
- **Ingress** (FastAPI) is the HTTP API: `POST /v1/completions` (OpenAI-compatible), `POST
  /v1/feedback`, `GET /healthz`. It validates (400 naming the field), renders the prompt with the
  training job's `render_prompt`, calls the Generator with the model id, and logs request, response
  and feedback through a TrafficLogger (PII-scrubbed Parquet, never blocking a request). Its
  `user_config` carries the default model id (serving.args for why) and, during a canary, the
  candidate's model id and the share of requests it takes; `GET /v1/stats` gives each version's recent
  request count, errors and p95 latency (serving.traffic_stats) for the operator's canary checks. The request id is the
  `x-request-id` Serve's proxy gives every request (the client's own when it sent a safe one), so the
  log, the response and Serve's access log share one key.

The application entry a controller PUTs (whole ServeDeploySchema: read, merge, write — FACTS.md):

    {"name": "<deployment>", "route_prefix": "/<deployment>", "import_path": "tuneloop.serving.app:build",
     "args": {"deployment": "<deployment>", "tracking_uri": "...", "default_model_id": "<model>/<version>",
              "base_model_uri": "...", "max_tokens": <spec.serving.maxNewTokens>,
              "log_requests": <spec.serving.logRequests>, "traffic_log_uri": "file://...|s3://..."},
     "deployments": [
       {"name": "Generator", "num_replicas": <spec.serving.replicas>, "ray_actor_options": {"num_cpus": 1}},
       {"name": "Ingress", "num_replicas": 1, "user_config": {"default_model_id": "<model>/<version>"}}]}

An alias move to a version on the same base changes only `deployments[Ingress].user_config.default_model_id`
(reconfigure, no restart); `args` stay as they were, or Serve rebuilds the app and restarts every replica.
A version on another base needs that restart: its adapters are refused by a Generator holding another base.
"""

# No `from __future__ import annotations` here: FastAPI (through serve.ingress) must see `Request` as a
# class, not a string, or it takes `request` for a required query parameter (422).
import asyncio
import os
import random
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from tuneloop.jobs import prompts
from tuneloop.serving import adapters, args, bodies, generation, traffic_log, traffic_stats, warmup

REQUEST_ID_HEADER = "x-request-id"
DROPPED_METRIC = "tuneloop_traffic_log_dropped_records"


def _error(status: int, param: str | None, message: str, request_id: str | None = None) -> JSONResponse:
    body = bodies.InvalidRequest(param, message, status).to_body()
    if status >= 500 or status == 404:
        body["error"]["type"] = "not_found_error" if status == 404 else "server_error"
    headers = {REQUEST_ID_HEADER: request_id} if request_id else None
    return JSONResponse(body, status_code=status, headers=headers)


def make_generator(max_models_per_replica: int) -> Any:
    """The Generator deployment class (built per app: the multiplex cap is fixed where the method is
    decorated)."""

    class Generator:
        def __init__(self, app_args: dict[str, Any]) -> None:
            self.args = args.AppArgs.model_validate(app_args)
            self.cache_dir = Path(self.args.cache_dir or tempfile.mkdtemp(prefix="tuneloop-serve-"))
            # One thread runs every model call: adapters switch per call, and the event loop stays free.
            self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")
            base_uri, revision = self.args.base_model_uri, self.args.base_model_revision
            if base_uri is None:
                assert self.args.default_model_id is not None  # AppArgs guarantees one of the two
                first = adapters.download(self.args.default_model_id, self.args.tracking_uri, self.cache_dir)
                base_uri, revision = first.base_model_uri, first.base_model_revision
            self.runtime = generation.BaseModelRuntime(base_uri, revision, self.cache_dir / "base")

        @serve.multiplexed(max_num_models_per_replica=max_models_per_replica)
        async def get_adapter(self, model_id: str) -> generation.AttachedAdapter:
            artifact = await asyncio.to_thread(adapters.download, model_id, self.args.tracking_uri, self.cache_dir)
            loop = asyncio.get_running_loop()
            name = await loop.run_in_executor(self.executor, self.runtime.attach, artifact)
            return generation.AttachedAdapter(artifact, name, lambda n: self.executor.submit(self.runtime.detach, n))

        async def generate(self, prompt_text: str, max_tokens: int, temperature: float) -> dict[str, Any]:
            """A completion with the request's multiplexed model id; errors come back as data (status,
            param, message) so the ingress answers them without unpacking Ray exceptions."""
            model_id = serve.get_multiplexed_model_id()
            loop = asyncio.get_running_loop()
            for _ in range(3):
                try:
                    adapter = await self.get_adapter(model_id)
                except adapters.ModelNotFound as e:
                    return {"error": {"status": 404, "param": "model", "message": str(e)}}
                except (adapters.ModelNotServable, bodies.InvalidRequest) as e:
                    return {"error": {"status": 400, "param": "model", "message": str(e)}}
                except Exception as e:  # the registry or artifact store failing: worth a retry by the client
                    return {"error": {"status": 503, "param": "model", "message": f"loading model {model_id} "
                                      f"failed: {type(e).__name__}: {str(e)[:500]}"}}
                with adapter.use() as usable:
                    if not usable:
                        continue  # evicted between lookup and use: load it again
                    out = await loop.run_in_executor(self.executor, self.runtime.generate, adapter.name,
                                                     prompt_text, max_tokens, temperature)
                    return {"text": out.text, "prompt_tokens": out.prompt_tokens,
                            "completion_tokens": out.completion_tokens, "finish_reason": out.finish_reason,
                            "model_id": model_id, "model_version": adapter.artifact.version, "pid": os.getpid()}
            return {"error": {"status": 503, "param": None, "message": f"model {model_id} kept being evicted; "
                              "raise max_models_per_replica or add replicas"}}

    return serve.deployment(name=args.GENERATOR)(Generator)


api = FastAPI(title="tuneloop serving", docs_url=None, redoc_url=None)


@serve.deployment(name=args.INGRESS)
@serve.ingress(api)
class Ingress:
    def __init__(self, generator: DeploymentHandle, app_args: dict[str, Any]) -> None:
        self.args = args.AppArgs.model_validate(app_args)
        self.generator = generator
        self.limits = self.args.limits()
        self.route = args.IngressConfig(default_model_id=self.args.default_model_id)
        self.rng = random.Random()
        self.recent = traffic_stats.RecentRequests()  # per-version figures for canary checks (GET /v1/stats)
        self.logger: traffic_log.TrafficLogger | None = None
        if self.args.log_requests:
            from ray.serve.metrics import Counter

            dropped = Counter(DROPPED_METRIC, description="Inference log records dropped (queue full or "
                              "write failed past capacity).", tag_keys=("model_deployment",))
            dropped.set_default_tags({"model_deployment": self.args.deployment})
            assert self.args.traffic_log_uri is not None
            self.logger = traffic_log.TrafficLogger(
                self.args.traffic_log_uri, self.args.deployment, batch_size=self.args.log_batch_size,
                flush_interval_seconds=self.args.log_flush_interval_seconds, capacity=self.args.log_capacity,
                on_drop=lambda n: dropped.inc(n))

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        self.route = args.IngressConfig.model_validate(user_config or {})

    @property
    def default_model_id(self) -> str | None:
        return self.route.default_model_id or self.args.default_model_id

    def __del__(self) -> None:
        # Serve calls this on graceful shutdown (within graceful_shutdown_timeout_s): write what is queued.
        logger, self.logger = getattr(self, "logger", None), None
        if logger is not None:
            logger.close(timeout_seconds=15)

    def _log(self, record: traffic_log.TrafficRecord) -> None:
        if self.logger is not None:
            self.logger.log(record)

    @api.post("/v1/completions")
    async def completions(self, request: Request) -> JSONResponse:
        started = time.perf_counter()
        request_id = bodies.accepted_request_id(request.headers.get(REQUEST_ID_HEADER)) or f"cmpl-{uuid.uuid4().hex}"
        received = traffic_log.now()
        body: Any = None
        try:
            body = await request.json()
            parsed = bodies.parse_completion(body, self.limits)
            model_id = parsed.model or self.route.pick(self.args.default_model_id, self.rng.random())
            if model_id is None:
                raise bodies.InvalidRequest("model", "is required: this deployment has no default model")
        except ValueError as e:  # InvalidRequest, and JSONDecodeError for a body that is not JSON
            error = e if isinstance(e, bodies.InvalidRequest) else bodies.InvalidRequest(
                None, f"the body is not JSON: {e}")
            self._log(traffic_log.TrafficRecord(
                kind=traffic_log.KIND_REQUEST, request_id=request_id, time=received,
                prompt=body.get("prompt") if isinstance(body, dict) and isinstance(body.get("prompt"), str) else None,
                latency_ms=(time.perf_counter() - started) * 1000, status_code=400, error=str(error)))
            return _error(400, error.param, error.message, request_id)

        try:
            result = await self.generator.options(multiplexed_model_id=model_id).generate.remote(
                prompts.render_prompt(parsed.prompt), parsed.max_tokens, parsed.temperature)
        except Exception as e:  # a replica that died mid-request, a generation that raised
            result = {"error": {"status": 503, "param": None,
                                "message": f"generation failed: {type(e).__name__}: {str(e)[:500]}"}}
        latency_ms = (time.perf_counter() - started) * 1000
        if not warmup.is_warmup(request_id, parsed.prompt):
            self.recent.add(model_id, "error" not in result, latency_ms)
        common: dict[str, Any] = {"kind": traffic_log.KIND_REQUEST, "request_id": request_id, "time": received,
                  "model_id": model_id, "prompt": parsed.prompt, "latency_ms": latency_ms,
                  "max_tokens": parsed.max_tokens, "temperature": parsed.temperature}
        if "error" in result:
            err = result["error"]
            self._log(traffic_log.TrafficRecord(**common, status_code=err["status"], error=err["message"]))
            return _error(err["status"], err["param"], err["message"], request_id)
        self._log(traffic_log.TrafficRecord(
            **common, model_version=result["model_version"], completion=result["text"],
            prompt_tokens=result["prompt_tokens"], completion_tokens=result["completion_tokens"],
            finish_reason=result["finish_reason"], status_code=200))
        response = {
            "id": request_id, "object": "text_completion", "created": int(received.timestamp()), "model": model_id,
            "choices": [{"index": 0, "text": result["text"], "finish_reason": result["finish_reason"],
                         "logprobs": None}],
            "usage": {"prompt_tokens": result["prompt_tokens"], "completion_tokens": result["completion_tokens"],
                      "total_tokens": result["prompt_tokens"] + result["completion_tokens"]},
        }
        return JSONResponse(response, headers={REQUEST_ID_HEADER: request_id})

    @api.post("/v1/feedback")
    async def feedback(self, request: Request) -> JSONResponse:
        try:
            parsed = bodies.parse_feedback(await request.json())
        except ValueError as e:
            error = e if isinstance(e, bodies.InvalidRequest) else bodies.InvalidRequest(
                None, f"the body is not JSON: {e}")
            return _error(400, error.param, error.message)
        self._log(traffic_log.TrafficRecord(
            kind=traffic_log.KIND_FEEDBACK, request_id=parsed.request_id, time=traffic_log.now(),
            label=parsed.label, correction=parsed.correction, score=parsed.score))
        return JSONResponse({"id": parsed.request_id, "status": "accepted", "logged": self.logger is not None},
                            status_code=202, headers={REQUEST_ID_HEADER: parsed.request_id})

    @api.get("/v1/stats")
    async def stats(self, since: float | None = None) -> JSONResponse:
        """Recent completions by model id after `since` (this app's clock; serving.traffic_stats)."""
        return JSONResponse(self.recent.summary(since))

    @api.get("/healthz")
    async def healthz(self) -> JSONResponse:
        log = self.logger.stats().to_dict() if self.logger is not None else None
        return JSONResponse({"status": "ok", "deployment": self.args.deployment,
                             "default_model_id": self.default_model_id, "canary_model_id": self.route.canary_model_id,
                             "canary_weight": self.route.canary_weight, "traffic_log": log})


def build(app_args: dict[str, Any]) -> Any:
    """The application builder a ServeDeploySchema's `import_path` names; `args` are AppArgs."""
    parsed = args.AppArgs.model_validate(app_args)
    plain = parsed.model_dump(mode="json")
    generator = make_generator(parsed.max_models_per_replica)
    ingress: Any = Ingress  # serve.deployment's return type is not visible to mypy
    return ingress.options(user_config={"default_model_id": parsed.default_model_id}).bind(
        generator.bind(plain), plain)
