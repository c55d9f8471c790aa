"""The demo's one HTTP helper (`demo_loop.post`) and the burst's `demo.complete` on it, against a real local
HTTP server: an answer, a refusal with its body, and no server at all — each an answer, never an exception."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tuneloop.devenv import demo
from tuneloop.devenv import demo_loop as loop
from tuneloop.devenv.ports import free_port


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if body.get("prompt") == "refuse":
            payload, code = b'{"error": "prompt is refused"}', 400
        else:
            payload, code = json.dumps({"id": "r1", "model": "invoices-extractor/3",
                                        "choices": [{"text": body["prompt"].upper()}]}).encode(), 200
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_post_answers_refusals_and_silence(endpoint: str) -> None:
    assert loop.post(f"{endpoint}/v1/completions", {"prompt": "abc"}, 5)[:2] == (
        200, {"id": "r1", "model": "invoices-extractor/3", "choices": [{"text": "ABC"}]})
    status, body, error = loop.post(f"{endpoint}/v1/completions", {"prompt": "refuse"}, 5)
    assert (status, body) == (400, {}) and "prompt is refused" in error
    status, _, error = loop.post(f"http://127.0.0.1:{free_port()}/v1/completions", {"prompt": "abc"}, 5)
    assert status == 0 and ("Connection refused" in error or "URLError" in error), error


def test_complete_reports_the_version_or_the_failure(endpoint: str) -> None:
    answer = demo.complete(endpoint, "abc")
    assert answer.status == 200 and answer.version == "3" and answer.latency_ms > 0 and not answer.error
    refused = demo.complete(endpoint, "refuse")
    assert refused.status == 400 and "prompt is refused" in refused.error and refused.version is None
