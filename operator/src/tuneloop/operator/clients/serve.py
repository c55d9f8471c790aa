"""Ray Serve on an existing cluster, through the dashboard's REST API (`/api/serve/applications/`).

`PUT` takes the whole cluster's ServeDeploySchema and deletes every declaratively deployed
application missing from it (no per-application PUT: ray #42974). So `apply_app` reads the cluster's
config, replaces only our application in it (`logic.serveconfig.merge_applications`), and writes it
back — under one lock per Ray address, so two ModelDeployments handled by this operator never write
over each other's read. It PUTs only when our application's deployed config differs from what we
want. One operator is active at a time (kopf peering), so the lock covers every writer tuneloop has;
a person PUTting by hand between our GET and PUT can still lose their change (there is no
compare-and-set in the API).

The GET is sent as a non-browser client: the dashboard redacts `runtime_env` values for browsers,
and a redacted config written back would break other applications.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from tuneloop.operator.clients.errors import Rejected, Unavailable
from tuneloop.operator.clients.ray import describe
from tuneloop.operator.logic import serveconfig, vllmconfig
from tuneloop.operator.logic.deploying import ServeApp
from tuneloop.serving import warmup

SYSTEM = "ray"
PATH = "/api/serve/applications/"
GENERATOR = "Generator"


@dataclass(frozen=True)
class ServeState:
    """What the cluster's Serve reports: each application's state and deployed config, and the proxy's port."""

    apps: dict[str, ServeApp] = field(default_factory=dict)
    http_host: str | None = None
    http_port: int | None = None
    top_level: dict[str, Any] = field(default_factory=dict)  # proxy_location, target_capacity: kept on a PUT


class Serve(Protocol):
    """What the ModelDeployment controller needs from a Ray cluster's Serve."""

    async def get_state(self, address: str) -> ServeState: ...
    async def apply_app(self, address: str, name: str, config: dict[str, Any] | None) -> bool: ...
    async def warm_up(self, endpoint: str, model_id: str) -> tuple[bool, str]: ...
    async def read_stats(self, endpoint: str, since: float | None) -> tuple[dict[str, Any] | None, str]: ...


def parse_state(payload: dict[str, Any]) -> ServeState:
    """`GET /api/serve/applications/` as ServeState (ServeInstanceDetails; empty when Serve is not running)."""
    apps: dict[str, ServeApp] = {}
    for name, app in (payload.get("applications") or {}).items():
        deployments = app.get("deployments") or {}
        # The replicas that generate: tuneloop's Generator, or the vLLM engine's LLMServer deployments.
        replicas = (deployments.get(GENERATOR) or {}).get("replicas") or [
            r for d_name, d in deployments.items() if d_name.startswith(vllmconfig.SERVER_PREFIX)
            for r in (d or {}).get("replicas") or []]
        apps[name] = ServeApp(
            status=str(app.get("status") or "NOT_STARTED"), message=str(app.get("message") or ""),
            last_deployed_time_s=app.get("last_deployed_time_s"), deployed_app_config=app.get("deployed_app_config"),
            ready_replicas=sum(1 for r in replicas if r.get("state") == "RUNNING"))
    http = payload.get("http_options") or {}
    top = {k: payload[k] for k in ("proxy_location", "target_capacity") if payload.get(k) is not None}
    return ServeState(apps, http.get("host"), http.get("port"), top)


def build_put_body(state: ServeState, name: str, config: dict[str, Any] | None, default_host: str,
                   default_port: int) -> dict[str, Any]:
    """The whole config to PUT: every other live application as deployed, ours replaced (or removed)."""
    live = {n: a.deployed_app_config for n, a in state.apps.items() if a.status != "DELETING"}
    body: dict[str, Any] = dict(state.top_level)
    body["http_options"] = {"host": state.http_host or default_host, "port": state.http_port or default_port}
    body["applications"] = serveconfig.merge_applications(live, name, config)
    return body


class HttpServe:
    """`Serve` over HTTP, serialised per Ray address."""

    def __init__(self, timeout_seconds: float = 10.0, retries: int = 2, token: str | None = None,
                 http_host: str = "0.0.0.0", http_port: int = 8000) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._retries = retries
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session: aiohttp.ClientSession | None = None
        self._locks: dict[tuple[int, str], asyncio.Lock] = {}
        self.http_host, self.http_port = http_host, http_port
        self.puts = 0  # PUTs sent by this client (for tests and metrics)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout, headers=self._headers)
        return self._session

    def _lock(self, address: str) -> asyncio.Lock:
        # Keyed by the running loop as well: tests run several operators (loops) in one process.
        return self._locks.setdefault((id(asyncio.get_running_loop()), address.rstrip("/")), asyncio.Lock())

    async def _request(self, method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        last: BaseException | None = None
        for attempt in range(self._retries + 1):
            try:
                async with self._get_session().request(method, url, json=body) as resp:
                    text = await resp.text()
                    if resp.status >= 500 and attempt < self._retries:
                        last = Unavailable(f"{method} {url}: HTTP {resp.status}: {text[:300]}", SYSTEM)
                    else:
                        try:
                            payload: Any = await resp.json(content_type=None) if text else None
                        except ValueError:
                            payload = text
                        return resp.status, payload if payload is not None else text
            except (TimeoutError, aiohttp.ClientError, OSError) as e:
                last = e
            await asyncio.sleep(min(0.5 * 2**attempt, 5.0))
        cause = describe(last, self._timeout.total) if last is not None else "no answer"
        raise Unavailable(f"Ray Serve API {method} {url} failed after {self._retries + 1} tries: {cause}",
                          SYSTEM) from last

    async def get_state(self, address: str) -> ServeState:
        url = address.rstrip("/") + PATH
        status, payload = await self._request("GET", url)
        if status != 200 or not isinstance(payload, dict):
            raise _refused("read", url, status, payload)
        return parse_state(payload)

    async def apply_app(self, address: str, name: str, config: dict[str, Any] | None) -> bool:
        """Make our application `config` (None: absent) in the cluster's Serve; True when a PUT was sent."""
        url = address.rstrip("/") + PATH
        async with self._lock(address):
            state = await self.get_state(address)
            current = state.apps.get(name)
            live = current is not None and current.status != "DELETING"
            if config is None and not live:
                return False
            if config is not None and live and current is not None and serveconfig.matches(
                    config, current.deployed_app_config):
                return False
            body = build_put_body(state, name, config, self.http_host, self.http_port)
            status, payload = await self._request("PUT", url, body)
            if status != 200:
                raise _refused("deploy", url, status, payload)
            self.puts += 1
            return True

    async def warm_up(self, endpoint: str, model_id: str) -> tuple[bool, str]:
        """One completion with `model_id` through the application's own route: loads the version's adapter
        on a replica and proves it answers. (ok, what went wrong); never raises."""
        url = endpoint.rstrip("/") + "/v1/completions"
        headers = {"x-request-id": warmup.request_id(model_id)}  # the monitors leave it out (serving.warmup)
        try:
            async with self._get_session().post(url, json=warmup.body(model_id), headers=headers,
                                                timeout=aiohttp.ClientTimeout(total=WARMUP_TIMEOUT_SECONDS)) as resp:
                text = await resp.text()
                if resp.status == 200:
                    return True, ""
                return False, f"HTTP {resp.status}: {text[:400]}"
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            return False, describe(e, WARMUP_TIMEOUT_SECONDS)


    async def read_stats(self, endpoint: str, since: float | None) -> tuple[dict[str, Any] | None, str]:
        """The application's per-version figures since `since` (its clock; serving.traffic_stats), or (None,
        what went wrong); never raises."""
        url = endpoint.rstrip("/") + "/v1/stats" + (f"?since={since!r}" if since is not None else "")
        try:
            async with self._get_session().get(url) as resp:
                text = await resp.text()
                if resp.status != 200:
                    return None, f"GET {url}: HTTP {resp.status}: {text[:300]}"
                payload = await resp.json(content_type=None)
                return (payload, "") if isinstance(payload, dict) else (None, f"GET {url}: not an object")
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as e:
            return None, f"GET {url}: {describe(e, self._timeout.total)}"


WARMUP_TIMEOUT_SECONDS = 120.0  # the first request of a version downloads and attaches its adapter


def _refused(verb: str, url: str, status: int, payload: Any) -> Exception:
    text = str(payload)[:800]
    if status in (401, 403):
        return Rejected(f"Ray Serve API refused to {verb} ({url}: HTTP {status}): set TUNELOOP_RAY_AUTH_TOKEN "
                        f"to the cluster's token or disable token auth. {text}", SYSTEM)
    if status >= 500:
        return Unavailable(f"Ray Serve API could not {verb} ({url}: HTTP {status}): {text}", SYSTEM)
    return Rejected(f"Ray Serve API refused to {verb} ({url}: HTTP {status}): {text}", SYSTEM)
