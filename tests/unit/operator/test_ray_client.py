"""The Ray job API client against a real HTTP server on loopback that misbehaves on purpose."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from tuneloop.operator.clients.errors import Unavailable
from tuneloop.operator.clients.ray import HttpRayJobs


async def _with_server(handler, call):
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    client = HttpRayJobs(timeout_seconds=0.2, retries=1)
    try:
        return await call(client, f"http://127.0.0.1:{port}")
    finally:
        await client.close()
        await runner.cleanup()


def test_a_timeout_keeps_its_type_and_says_what_timed_out() -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1)
        return web.json_response({})

    async def call(client: HttpRayJobs, address: str) -> None:
        await client.submit_job(address, {"submission_id": "s1", "entrypoint": "true"})

    with pytest.raises(Unavailable) as caught:
        asyncio.run(_with_server(slow, call))
    message = str(caught.value)
    assert "failed after 2 tries: TimeoutError: no answer within 0.2s" in message, message
    assert isinstance(caught.value.__cause__, TimeoutError)


def test_a_server_error_keeps_its_text() -> None:
    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=503, text="dashboard restarting")

    async def call(client: HttpRayJobs, address: str) -> None:
        await client.get_job(address, "s1")

    with pytest.raises(Unavailable, match=r"HTTP 503\): dashboard restarting"):
        asyncio.run(_with_server(broken, call))
