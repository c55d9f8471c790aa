"""The warm-up completion: what the controller sends a candidate version before it takes the traffic,
and how a reader of the inference log knows one when it sees it.

One definition for both sides (the operator's Serve client sends it, `traffic_read` leaves it out of
the monitors' table), so the two cannot drift apart. Stdlib only: the operator imports it.

A warm-up is recognised by both its request id prefix and its exact prompt. The id alone is the
client's to choose (`x-request-id`), so a user sending that prefix would otherwise hide real traffic
from the monitors; with the prompt fixed too, all such a user can hide is the warm-up text itself.
The log keeps warm-ups (they were served, and an operator reading the log may want them); only the
table the drift and quality monitors start from leaves them out.
"""

from __future__ import annotations

from typing import Any

REQUEST_ID_PREFIX = "tuneloop-warmup-"
PROMPT = "tuneloop warm-up"


def request_id(model_id: str) -> str:
    """`tuneloop-warmup-<model>-<version>` for model id `<model>/<version>`."""
    return REQUEST_ID_PREFIX + model_id.replace("/", "-")


def body(model_id: str) -> dict[str, Any]:
    """The completion request: one token, deterministic."""
    return {"model": model_id, "prompt": PROMPT, "max_tokens": 1, "temperature": 0}


def is_warmup(request_id: object, prompt: object) -> bool:
    return isinstance(request_id, str) and request_id.startswith(REQUEST_ID_PREFIX) and prompt == PROMPT
