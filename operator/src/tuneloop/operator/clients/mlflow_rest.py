"""The registry reads a long-lived operator makes over and over, as MLflow's REST API over aiohttp.

A Serving ModelDeployment asks "which version does alias X of model M name?" on every look (every
TUNELOOP_POLL_SECONDS, so an alias moved by hand in MLflow is followed within seconds), and a
finished FineTune re-reads its champion/challenger aliases on its slow look. Through the mlflow
client each such read cost ~5 ms of operator CPU (a new `MlflowClient`, its store and `requests`
session, entity objects, a thread hand-off) and importing mlflow cost ~126 MB of RSS; with 200
deployments it was most of an idle operator's CPU (`make bench-operator --idle`, #11). Here it is
one GET on a pooled connection, on the event loop, and mlflow is never imported for it.

Only these reads come this way: `get_alias` and `lookup_model`, the same answers as
`MlflowRegistry`'s (tests/api/test_mlflow_rest.py compares both on a real tracking server). Writes
(register, set alias) and result downloads stay on the mlflow client. Tracking URIs that are not
plain http(s) (databricks, file, sqlite) or that embed credentials, and environments that use a custom
MLflow auth provider (MLFLOW_TRACKING_AUTH), go to the mlflow client too (`MlflowRest.handles`).

With `alias_snapshot_seconds` set (the operator sets a fifth of TUNELOOP_POLL_SECONDS), `lookup_model` of an
alias reads one listing of the registry's aliases (`registered-models/search`, every model's aliases in
pages of 1,000) shared by every deployment for that long, instead of a GET per deployment per look, and
the version's details from its own earlier answer (kept `version_cache_seconds`, the operator's
TUNELOOP_MAX_POLL_SECONDS). An alias move is then seen within that many seconds more; an alias the
operator moves itself is seen at once (`forget`). A registry of more than `snapshot_pages` pages, a
model or alias the listing lacks, a version not yet read and a refused listing all take the per-model
path below.

Authentication and TLS follow the mlflow client's environment variables: MLFLOW_TRACKING_TOKEN
(bearer), MLFLOW_TRACKING_USERNAME/PASSWORD (basic), MLFLOW_TRACKING_INSECURE_TLS,
MLFLOW_TRACKING_SERVER_CERT_PATH, MLFLOW_TRACKING_CLIENT_CERT_PATH. They are read when the
session is made.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
import time
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from tuneloop.operator.clients.errors import Rejected, Unavailable
from tuneloop.operator.logic.deploying import ModelLookup
from tuneloop.operator.logic.plans import VersionInfo

SYSTEM = "mlflow"
NOT_FOUND_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"})
REFUSED_CODES = frozenset({"INVALID_PARAMETER_VALUE", "PERMISSION_DENIED", "UNAUTHENTICATED", "BAD_REQUEST"})
API = "/api/2.0/mlflow"
SEARCH_PAGE = 1000
VERSIONS_KEPT = 4096  # version details kept for the alias listing before expired ones are dropped


class _NotFound(Exception):
    """The model, version or alias asked for does not exist."""


def _version(mv: dict[str, Any]) -> VersionInfo:
    """A VersionInfo from the REST shape (tags as a list of key/value pairs), as `mlflow.MlflowClient`'s
    entity gives it (a field left out of the JSON is the proto default there: "" for run_id, source)."""
    return VersionInfo(name=str(mv.get("name", "")), version=str(mv.get("version", "")),
                       run_id=str(mv.get("run_id", "")), source=str(mv.get("source", "")),
                       aliases=tuple(str(a) for a in mv.get("aliases") or ()),
                       tags={str(t["key"]): str(t.get("value", "")) for t in mv.get("tags") or ()})


def quote(value: str) -> str:
    """A string literal in MLflow's search filter syntax."""
    return "'" + value.replace("'", "\\'") + "'"


class MlflowRest:
    """`get_alias` / `lookup_model` over MLflow's REST API, with a timeout per request and a few retries of
    connection failures and 5xx/429 answers (as the mlflow client retries, but bounded in seconds)."""

    def __init__(self, timeout_seconds: float = 10.0, retries: int = 2, alias_snapshot_seconds: float = 0.0,
                 version_cache_seconds: float = 0.0, snapshot_pages: int = 5, page_size: int = SEARCH_PAGE) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._retries = retries
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._snapshot_seconds, self._version_seconds = alias_snapshot_seconds, version_cache_seconds
        self._snapshot_pages, self._page_size = snapshot_pages, page_size
        # tracking URI → (when taken, model → alias → version, or None: too many models to list)
        self._snapshots: dict[str, tuple[float, dict[str, dict[str, str]] | None]] = {}
        self._listing: dict[str, asyncio.Future[dict[str, dict[str, str]] | None]] = {}
        # (tracking URI, model, version) → (when read, its details)
        self._versions: dict[tuple[str, str, str], tuple[float, VersionInfo]] = {}

    @staticmethod
    def handles(tracking_uri: str) -> bool:
        """Whether reads of this tracking server come here: plain http(s), without credentials in the URI and
        without a custom auth provider (those go through the mlflow client, which knows how to use them)."""
        parts = urlsplit(tracking_uri)
        return (parts.scheme in ("http", "https") and not parts.username and not parts.password
                and not os.environ.get("MLFLOW_TRACKING_AUTH"))

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    @staticmethod
    def _auth_headers() -> dict[str, str]:
        token = os.environ.get("MLFLOW_TRACKING_TOKEN")
        if token:
            return {"Authorization": f"Bearer {token}"}
        user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
        if user and password:
            return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
        return {}

    @staticmethod
    def _ssl() -> ssl.SSLContext | bool:
        if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() in ("true", "1"):
            return False
        context = ssl.create_default_context(cafile=os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or None)
        client_cert = os.environ.get("MLFLOW_TRACKING_CLIENT_CERT_PATH")
        if client_cert:
            context.load_cert_chain(client_cert)
        return context

    def _get_session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            # A session belongs to the loop it was made in (tests run the operator in several loops).
            self._session = aiohttp.ClientSession(timeout=self._timeout, headers=self._auth_headers(),
                                                  connector=aiohttp.TCPConnector(ssl=self._ssl(), limit=8))
            self._loop = loop
        return self._session

    async def _get(self, tracking_uri: str, path: str, params: dict[str, str], what: str) -> dict[str, Any]:
        """The JSON answer; raises _NotFound for RESOURCE_DOES_NOT_EXIST (and an alias nobody set, which
        MLflow answers INVALID_PARAMETER_VALUE "... not found"), Rejected for other refusals, Unavailable
        when the server does not answer."""
        url = tracking_uri.rstrip("/") + API + path
        last: Exception | None = None
        for attempt in range(self._retries + 1):
            if attempt:
                await asyncio.sleep(min(0.5 * 2 ** (attempt - 1), 5.0))
            try:
                async with self._get_session().get(url, params=params) as resp:
                    raw = await resp.read()
                    status = resp.status
            except (TimeoutError, aiohttp.ClientError, OSError) as e:
                last = e
                continue
            try:
                payload: Any = json.loads(raw) if raw else None
            except ValueError:
                payload = None
            if 200 <= status <= 299 and isinstance(payload, dict):
                return payload
            code = payload.get("error_code") if isinstance(payload, dict) else None
            message = str(payload.get("message", "")) if isinstance(payload, dict) else raw.decode(errors="replace")
            if code in NOT_FOUND_CODES or (code == "INVALID_PARAMETER_VALUE" and "not found" in message):
                raise _NotFound(message)
            if code in REFUSED_CODES or status in (400, 401, 403, 404):
                raise Rejected(f"MLflow refused to {what}: HTTP {status} {code or ''}: {message[:500]}", SYSTEM)
            last = Unavailable(f"HTTP {status}: {message[:300]}", SYSTEM)
            if status not in (429,) and status < 500:
                break
        raise Unavailable(f"MLflow could not {what} at {tracking_uri}: "
                          f"{type(last).__name__}: {last} (after {self._retries + 1} tries)", SYSTEM) from last

    async def _alias_or_none(self, tracking_uri: str, model: str, alias: str, what: str) -> VersionInfo | None:
        try:
            payload = await self._get(tracking_uri, "/registered-models/alias", {"name": model, "alias": alias}, what)
        except _NotFound:
            return None
        return _version(payload.get("model_version") or {})

    async def get_alias(self, tracking_uri: str, model: str, alias: str) -> VersionInfo | None:
        return await self._alias_or_none(tracking_uri, model, alias, f"read alias {alias!r} of {model!r}")

    async def registered_aliases(self, tracking_uri: str) -> dict[str, dict[str, str]] | None:
        """Every registered model's aliases (model → alias → version) from one listing of the registry; None
        when it holds more than `snapshot_pages` pages of models."""
        out: dict[str, dict[str, str]] = {}
        token: str | None = None
        for _ in range(self._snapshot_pages):
            params = {"max_results": str(self._page_size)}
            if token:
                params["page_token"] = token
            page = await self._get(tracking_uri, "/registered-models/search", params, "list registered models")
            for rm in page.get("registered_models") or ():
                out[str(rm.get("name", ""))] = {str(a["alias"]): str(a["version"]) for a in rm.get("aliases") or ()}
            token = page.get("next_page_token")
            if not token:
                return out
        return None

    def forget(self, tracking_uri: str) -> None:
        """Drop the alias listing of this server (the operator just moved an alias there)."""
        self._snapshots.pop(tracking_uri, None)

    async def _aliases_snapshot(self, tracking_uri: str) -> dict[str, dict[str, str]] | None:
        """The registry's aliases as listed at most `alias_snapshot_seconds` ago; one listing in flight per
        server, shared by every caller. None: not listable (too large, or the listing was refused)."""
        held = self._snapshots.get(tracking_uri)
        if held is not None and time.monotonic() - held[0] < self._snapshot_seconds:
            return held[1]
        listing = self._listing.get(tracking_uri)
        if listing is None or listing.get_loop() is not asyncio.get_running_loop():
            listing = asyncio.ensure_future(self._take_snapshot(tracking_uri))
            self._listing[tracking_uri] = listing
            listing.add_done_callback(lambda done: self._listing.pop(tracking_uri, None)
                                      if self._listing.get(tracking_uri) is done else None)
        return await asyncio.shield(listing)

    async def _take_snapshot(self, tracking_uri: str) -> dict[str, dict[str, str]] | None:
        taken = time.monotonic()
        try:
            aliases = await self.registered_aliases(tracking_uri)
        except Rejected:
            aliases = None  # e.g. not allowed to search: ask per model (a server that is down still raises)
        self._snapshots[tracking_uri] = (taken, aliases)
        return aliases

    async def _from_snapshot(self, tracking_uri: str, model: str, alias: str) -> ModelLookup | None:
        """The alias's version from the shared listing, with its details from an earlier answer; None when
        either is missing (then one GET answers, and says what exists when nothing does)."""
        snapshot = await self._aliases_snapshot(tracking_uri)
        held = (snapshot or {}).get(model) or {}
        version = held.get(alias)
        known = self._versions.get((tracking_uri, model, version)) if version is not None else None
        if version is None or known is None or time.monotonic() - known[0] >= self._version_seconds:
            return None
        aliases = tuple(a for a, v in held.items() if v == version)
        return ModelLookup(replace(known[1], aliases=aliases), aliases=dict.fromkeys(aliases, version))

    def _remember(self, tracking_uri: str, model: str, held: VersionInfo) -> None:
        now = time.monotonic()
        if len(self._versions) >= VERSIONS_KEPT:  # versions no deployment has asked for lately
            self._versions = {k: v for k, v in self._versions.items() if now - v[0] < self._version_seconds}
        self._versions[(tracking_uri, model, held.version)] = (now, held)

    async def lookup_model(self, tracking_uri: str, model: str, alias: str | None, version: str | None
                           ) -> ModelLookup:
        """As `MlflowRegistry.lookup_model`: one request when the alias resolves (none while the shared alias
        listing and an earlier answer say it all); a miss lists the rest."""
        what = f"look up {f'alias {alias!r}' if alias is not None else f'version {version}'} of {model!r}"
        if alias is not None:
            if self._snapshot_seconds > 0 and (known := await self._from_snapshot(tracking_uri, model, alias)):
                return known
            held = await self._alias_or_none(tracking_uri, model, alias, what)
            if held is not None:
                self._remember(tracking_uri, model, held)
                return ModelLookup(held, aliases=dict.fromkeys(held.aliases or (alias,), held.version))
        try:
            registered = (await self._get(tracking_uri, "/registered-models/get", {"name": model}, what)
                          ).get("registered_model") or {}
        except _NotFound:
            return ModelLookup(None, model_exists=False)
        aliases = {str(a["alias"]): str(a["version"]) for a in registered.get("aliases") or ()}
        pinned = aliases.get(alias) if alias is not None else version
        if pinned is not None:
            try:
                mv = (await self._get(tracking_uri, "/model-versions/get", {"name": model, "version": pinned}, what)
                      ).get("model_version") or {}
                return ModelLookup(_version(mv), aliases=aliases)
            except _NotFound:
                pass
        versions: list[str] = []
        token: str | None = None
        while True:
            params = {"filter": f"name = {quote(model)}", "max_results": str(SEARCH_PAGE)}
            if token:
                params["page_token"] = token
            page = await self._get(tracking_uri, "/model-versions/search", params, what)
            versions += [str(mv["version"]) for mv in page.get("model_versions") or ()]
            token = page.get("next_page_token")
            if not token:
                break
        return ModelLookup(None, versions=tuple(sorted(versions, key=int)), aliases=aliases)
