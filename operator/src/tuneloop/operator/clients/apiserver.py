"""Raw JSON requests to the apiserver over aiohttp, on the event loop, for the calls made per object and per look.

Measured on the bench's apiserver (`make bench-operator`, #11): a ConfigMap create through the official
client costs ~0.9-1.5 ms of operator CPU (its pydantic `validate_call` wrapper, OpenAPI model
(de)serialization, urllib3 on a thread, the thread hand-off back to the loop) against ~0.35 ms here.
The FineTune controller makes four writes per new object, so its hot calls (read the FineTune, write
its status, create the ConfigMap and RayJob, post Events) come this way, as do a ModelDeployment's
(read it, write its status, read its RayService: every look of every Serving deployment); the rest of
`RealKube` (rare writes, deletes, lists) stays on the official client. Connection settings come from
the same `kubernetes.client.Configuration` (server, CA, client certificate, bearer token read per
request so a refreshed token is used, proxy), so both paths talk to the same apiserver as the same user.
A non-2xx answer raises the official client's `ApiException` (status, body), so callers tell 404/409
apart exactly as before.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from typing import Any

import aiohttp
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubernetes.client.rest import is_socks_proxy_url, should_bypass_proxies

# The official client sets no timeout at all; a create under a burst of hundreds takes seconds here.
TIMEOUT = aiohttp.ClientTimeout(total=60, sock_connect=10)
# `Configuration.auth_settings()` runs the kubeconfig/in-cluster refresh hook (~50 us, a seventh of a
# request here); tokens live minutes to hours, so the header is re-read at most this often.
AUTH_CACHE_SECONDS = 10.0


class ApiserverHttp:
    """JSON over HTTPS to one apiserver; one aiohttp session per event loop, at most `limit` connections."""

    def __init__(self, configuration: k8s.Configuration, limit: int = 16) -> None:
        self._config = configuration
        self._limit = limit
        self._host = configuration.host.rstrip("/")
        self._proxy: str | None = None
        if configuration.proxy and not should_bypass_proxies(configuration.host, configuration.no_proxy or ""):
            if is_socks_proxy_url(configuration.proxy):
                raise ValueError(f"a SOCKS proxy ({configuration.proxy}) is not supported for the apiserver; "
                                 "use an HTTP(S) proxy or none")
            self._proxy = configuration.proxy
        self._ssl = self._ssl_context(configuration)
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._auth: dict[str, str] = {}
        self._auth_read_at: float | None = None

    @staticmethod
    def _ssl_context(c: k8s.Configuration) -> ssl.SSLContext | bool:
        if not c.host.startswith("https"):
            return False
        if not c.verify_ssl:
            return False
        context = ssl.create_default_context(cafile=c.ssl_ca_cert)
        if c.assert_hostname is False:
            context.check_hostname = False
        if c.cert_file:
            context.load_cert_chain(c.cert_file, c.key_file)
        return context

    def _get_session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            # A session belongs to the loop it was made in (tests run the operator in several loops).
            self._session = aiohttp.ClientSession(
                timeout=TIMEOUT, connector=aiohttp.TCPConnector(ssl=self._ssl, limit=self._limit))
            self._loop = loop
        return self._session

    def _headers(self, content_type: str) -> dict[str, str]:
        now = time.monotonic()
        if self._auth_read_at is None or now - self._auth_read_at >= AUTH_CACHE_SECONDS:
            self._auth = {}
            for setting in self._config.auth_settings().values():
                auth: dict[str, Any] = dict(setting)  # type: ignore[call-overload]
                if auth.get("in") == "header":
                    self._auth[str(auth["key"])] = str(auth["value"])
            self._auth_read_at = now
        return {"Accept": "application/json", "Content-Type": content_type, **self._auth}

    async def request(self, method: str, path: str, body: Any = None,
                      content_type: str = "application/json") -> Any:
        """The decoded JSON answer; raises ApiException for a non-2xx answer, aiohttp/OS errors as they come."""
        data = None if body is None else json.dumps(body)
        kwargs: dict[str, Any] = {}
        if self._config.tls_server_name:
            kwargs["server_hostname"] = self._config.tls_server_name
        async with self._get_session().request(method, self._host + path, data=data, proxy=self._proxy,
                                               headers=self._headers(content_type), **kwargs) as resp:
            raw = await resp.read()
            if not 200 <= resp.status <= 299:
                raise ApiException(status=resp.status, reason=resp.reason, body=raw.decode(errors="replace"))
            return json.loads(raw) if raw else None

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None
