"""The Ray job API (`/api/jobs/`) of an existing cluster, over aiohttp.

Ray's `JobSubmissionClient` sends requests without a timeout and imports all of Ray (hundreds of MB in
an operator that otherwise never needs it), so this speaks the same documented REST API directly:
POST /api/jobs/ to submit, GET /api/jobs/{id} to read, POST /api/jobs/{id}/stop to stop. Submission
is idempotent: the submission id is deterministic and an existing job with that id is adopted, never
submitted again (Ray refuses a reused id anyway).
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import aiohttp

from tuneloop.operator.clients.errors import Rejected, Unavailable

SYSTEM = "ray"


class RayJobs(Protocol):
    """What the controller needs from a Ray cluster's job API."""

    async def get_job(self, address: str, submission_id: str) -> dict[str, Any] | None: ...
    async def submit_job(self, address: str, body: dict[str, Any]) -> None: ...
    async def stop_job(self, address: str, submission_id: str) -> bool: ...


class HttpRayJobs:
    """`RayJobs` over HTTP with a timeout per request and a few retries of connection failures."""

    def __init__(self, timeout_seconds: float = 10.0, retries: int = 2, token: str | None = None) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._retries = retries
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout, headers=self._headers)
        return self._session

    async def _request(self, method: str, url: str, json_body: dict[str, Any] | None = None) -> tuple[int, Any]:
        last: Exception | None = None
        for attempt in range(self._retries + 1):
            try:
                async with self._get_session().request(method, url, json=json_body) as resp:
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
        err = Unavailable(f"Ray job API {method} {url} failed after {self._retries + 1} tries: {cause}", SYSTEM)
        raise err from last

    async def get_job(self, address: str, submission_id: str) -> dict[str, Any] | None:
        url = f"{address.rstrip('/')}/api/jobs/{submission_id}"
        status, payload = await self._request("GET", url)
        if status == 404:
            return None
        if status != 200 or not isinstance(payload, dict):
            raise _refused("read", url, status, payload)
        return payload

    async def submit_job(self, address: str, body: dict[str, Any]) -> None:
        submission_id = body["submission_id"]
        if await self.get_job(address, submission_id) is not None:
            return  # submitted before (by us, perhaps before a restart)
        url = f"{address.rstrip('/')}/api/jobs/"
        status, payload = await self._request("POST", url, body)
        if status == 200:
            return
        if await self.get_job(address, submission_id) is not None:
            return  # a lost response to an earlier POST: the job exists
        raise _refused("submit", url, status, payload)

    async def stop_job(self, address: str, submission_id: str) -> bool:
        url = f"{address.rstrip('/')}/api/jobs/{submission_id}/stop"
        status, payload = await self._request("POST", url)
        if status == 404:
            return False
        if status != 200:
            raise _refused("stop", url, status, payload)
        return bool(isinstance(payload, dict) and payload.get("stopped"))


def describe(error: BaseException, timeout_seconds: float | None) -> str:
    """The error's type and text; a timeout's text is empty (asyncio.TimeoutError()), so say what timed out."""
    text = str(error).strip()
    if isinstance(error, TimeoutError) and not text:
        text = f"no answer within {timeout_seconds:g}s" if timeout_seconds else "timed out"
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _refused(verb: str, url: str, status: int, payload: Any) -> Exception:
    text = str(payload)[:500]
    if status in (401, 403):
        return Rejected(f"Ray job API refused to {verb} ({url}: HTTP {status}): set TUNELOOP_RAY_AUTH_TOKEN "
                        f"to the cluster's token or disable token auth. {text}", SYSTEM)
    if status >= 500:
        return Unavailable(f"Ray job API could not {verb} ({url}: HTTP {status}): {text}", SYSTEM)
    return Rejected(f"Ray job API refused to {verb} ({url}: HTTP {status}): {text}", SYSTEM)
