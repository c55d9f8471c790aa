"""Canary analysis of an alias move on a real Ray head, real MLflow server and the operator as a real process
(the stack of test_model_deployment, built afresh for this module).

One story, in order, with a client sending requests that name no model throughout: a ModelDeployment with
`spec.serving.canary` whose p95 bound (1 ms) the tiny model can never meet serves version 1; `champion`
moves to version 2, which takes a share of the requests and — on the figures the serving application
counted for it — is rolled back by itself after `threshold` failed checks (condition, Event and
rolloutHistory say so); the same version is not tried again until the spec changes; relaxing the bound
(a new generation) tries it again and it is promoted step by step. No request fails and no replica
restarts at any point.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.api.kube import wait_for
from tests.e2e.test_model_deployment import Stack, complete, cond, serving, stack  # noqa: F401 (the fixture)
from tests.e2e.test_serving_runtime import MODEL_NAME
from tuneloop.api import constants

pytestmark = pytest.mark.e2e
NAME = "canary"
CANARY = {"intervalSeconds": 5, "threshold": 2, "stepWeight": 25, "maxWeight": 50, "maxErrorRate": 0,
          "maxP95LatencyMs": 1, "minRequests": 2}


class Client:
    """Sends completions naming no model, one at a time, and keeps (status, model answered, time)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.results: list[tuple[int, str, float]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            status, answer = complete(self.url, max_tokens=4)
            model = answer.get("model") if isinstance(answer, dict) else str(answer)[:200]
            self.results.append((status, str(model), time.monotonic()))

    def failed(self) -> list[tuple[int, str, float]]:
        return [r for r in self.results if r[0] != 200]

    def models_since(self, t: float) -> set[str]:
        return {m for _, m, at in self.results if at > t}


def replicas(on: Stack) -> dict[str, set[str]]:
    deployments = on.apps()[f"{on.ns}.{NAME}"]["deployments"]
    return {name: {r["replica_id"] for r in d.get("replicas", [])} for name, d in deployments.items()}


def ingress_config(on: Stack) -> dict[str, Any]:
    config = on.apps()[f"{on.ns}.{NAME}"]["deployed_app_config"]
    return {d["name"]: d for d in config["deployments"]}["Ingress"]["user_config"]


def event_reasons(on: Stack) -> list[str]:
    events = on.core.list_namespaced_event(on.ns, field_selector=f"involvedObject.name={NAME}").items
    return [e.reason for e in events]


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[Client]:  # noqa: F811
    v1, _ = stack.versions
    stack.set_champion(v1)
    stack.create(NAME, {"alias": "champion"}, canary=CANARY)
    st = stack.wait(NAME, serving(v1), "serving version 1")
    c = Client(st["endpoint"])
    c.thread.start()
    wait_for(lambda: len(c.results) >= 3, 120, "requests before the move")
    yield c
    c.stop.set()
    c.thread.join(timeout=120)


def test_a_canary_over_its_p95_bound_rolls_back_by_itself(stack: Stack, client: Client) -> None:  # noqa: F811
    v1, v2 = stack.versions
    before = replicas(stack)
    stack.set_champion(v2)
    moved = time.monotonic()
    stack.wait(NAME, lambda s: (s.get("canary") or {}).get("phase") == "Progressing", "the canary started",
               timeout=240)
    st = stack.wait(NAME, lambda s: (s.get("canary") or {}).get("phase") == "RolledBack", "the rollback",
                    timeout=300)
    rolled_back = time.monotonic()
    print(f"FIGURE alias move to rollback: {rolled_back - moved:.1f}s; checks: {st['canary']['failedChecks']}")
    assert st["servedVersion"] == v1 and st["phase"] == "Degraded"
    assert cond(st, "Ready")["status"] == "True"
    rolling = cond(st, "RollingOut")
    assert (rolling["status"], rolling["reason"]) == ("False", "CanaryRolledBack")
    assert "maxP95LatencyMs 1" in rolling["message"]
    record = st["rolloutHistory"][-1]
    assert (record["outcome"], record["version"], record["candidateVersion"]) == ("RolledBack", v1, v2)
    assert "p95" in record["message"] and "requests" in record["message"]
    check = st["canary"]["lastCheck"]
    # The figures are the serving app's own: the candidate answered requests, every one slower than 1 ms.
    assert check["passed"] is False and check["requests"] >= CANARY["minRequests"] and check["p95LatencyMs"] > 1
    assert check["errors"] == 0 and check["stableRequests"] > 0
    assert "CanaryStarted" in event_reasons(stack) and "CanaryRolledBack" in event_reasons(stack)
    assert ingress_config(stack) == {"default_model_id": f"{MODEL_NAME}/{v1}"}
    answered = {m for _, m, at in client.results if moved < at <= rolled_back}
    assert f"{MODEL_NAME}/{v2}" in answered, "the candidate never took a share of the requests"
    # Not tried again while the spec stays: only the stable version answers from here on.
    settle = time.monotonic()
    time.sleep(3 * CANARY["intervalSeconds"])
    assert client.models_since(settle + 1) == {f"{MODEL_NAME}/{v1}"}
    assert stack.status(NAME)["canary"]["phase"] == "RolledBack"
    assert not client.failed(), client.failed()[:5]
    assert replicas(stack) == before, "the canary restarted replicas"


def test_a_relaxed_bound_tries_again_and_promotes(stack: Stack, client: Client) -> None:  # noqa: F811
    v1, v2 = stack.versions
    before = replicas(stack)
    patch = {"spec": {"serving": {"canary": {"maxP95LatencyMs": 600000}}}}
    stack.api.patch_namespaced_custom_object(constants.GROUP, constants.VERSION, stack.ns, constants.DEPLOYMENT_PLURAL,
                                             NAME, patch)
    changed = time.monotonic()
    st = stack.wait(NAME, serving(v2), "version 2 promoted", timeout=300)
    print(f"FIGURE spec change to promotion: {time.monotonic() - changed:.1f}s")
    record = st["rolloutHistory"][-1]
    assert (record["outcome"], record["version"], record["previousVersion"]) == ("Promoted", v2, v1)
    assert "promoting" in record["message"]
    assert st.get("canary") is None and st["phase"] == "Serving"
    assert ingress_config(stack) == {"default_model_id": f"{MODEL_NAME}/{v2}"}
    reasons = event_reasons(stack)
    assert "CanaryWeight" in reasons and "CanaryPromoting" in reasons
    seen = len(client.results)
    wait_for(lambda: len(client.results) >= seen + 5, 120, "requests after the promotion")
    assert {m for _, m, _ in client.results[seen:]} == {f"{MODEL_NAME}/{v2}"}
    print(f"FIGURE requests during the canaries: {len(client.results)}, failed: {len(client.failed())}")
    assert not client.failed(), client.failed()[:5]
    assert replicas(stack) == before, "the promotion restarted replicas"
