"""The demo's closed loop, after the champion serves: in-distribution traffic → injected drift → detection
→ guarded retrain on the labelled feedback → gate → promotion → rollout → recovery.

The demo acts as the users and the people who label: it sends invoices to the deployment's endpoint,
scores each answer against the truth with the training job's own `field_f1` (Q0 before the drift, Q1 on
the drifted layout served by the old champion, Q2 on new drifted invoices served by the retrained one),
and posts the truth as feedback for three of every four requests. Everything in between is the
operator's: the monitor checks, the breach streak, the retrain request on the FineTune (never its spec),
the new dataset version with the feedback, the gate, the alias move and the rollout.

The pure parts (`LoopAnswer`, `quality`, `summarize_loop`, `check_loop`) are table-tested; the rest talks to
the endpoint and the apiserver.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tuneloop.devenv.demo_progress import condition
from tuneloop.jobs import metrics

LABEL_EVERY = 4  # of every 4 requests, 3 get the truth as feedback: "labelled feedback for part of it"
# The drift must really hurt, and the retrain must win back most of it (issue #9's bar).
MIN_DROP, MIN_RECOVERED_SHARE = 0.2, 0.9


@dataclass(frozen=True)
class LoopAnswer:
    """One request of the loop: whether it was answered, by which version, and how well."""

    status: int
    version: str | None
    f1: float | None  # field F1 of the answer against the truth (None: not answered)
    labelled: bool = False
    latency_ms: float = 0.0


def quality(answers: Sequence[LoopAnswer], version: str | None = None) -> float | None:
    """Mean field F1 over the answered requests (of `version`, when given); None when there are none."""
    scores = [a.f1 if a.f1 is not None else 0.0 for a in answers
              if a.status == 200 and (version is None or a.version == version)]
    return round(sum(scores) / len(scores), 4) if scores else None


def recovery_target(q0: float, q1: float) -> float:
    """Q2 must reach Q1 + 0.9 (Q0 - Q1)."""
    return q1 + MIN_RECOVERED_SHARE * (q0 - q1)


def summarize_loop(phases: Mapping[str, Sequence[LoopAnswer]], versions: Mapping[str, str | None],
                   monitor: Mapping[str, Any], retrain: Mapping[str, Any]) -> dict[str, Any]:
    """The loop's figures: Q0/Q1/Q2 (each on the version that served that phase), requests per phase,
    drift share and quality as the monitor saw them before the drift and when it asked for the retrain,
    and what the retrain did."""
    q0 = quality(phases["inDistribution"], versions["before"])
    q1 = quality(phases["drifted"], versions["before"])
    q2 = quality(phases["recovery"], versions["after"])
    return {
        "q0": q0, "q1": q1, "q2": q2,
        "q2Target": None if q0 is None or q1 is None else round(recovery_target(q0, q1), 4),
        "requests": {k: len(v) for k, v in phases.items()},
        "failures": sum(a.status != 200 for v in phases.values() for a in v),
        "labelled": sum(a.labelled for v in phases.values() for a in v),
        "versions": dict(versions),
        "monitor": dict(monitor),
        "retrain": dict(retrain),
    }


def feedback_mix(examples: Iterable[Mapping[str, Any]], phases: Mapping[str, Sequence[Mapping[str, str]]]
                 ) -> dict[str, int]:
    """Where the retrain's feedback examples came from: how many have the prompt of a request sent in each
    phase (by phase name), and `other` for those matching none. A recovery miss is only reproducible with
    the window it trained on, and the window is set by request speed (its last N seconds), not by the demo."""
    prompts = {r["prompt"]: name for name, records in phases.items() for r in records}
    mix = dict.fromkeys([*phases, "other"], 0)
    for example in examples:
        mix[prompts.get(str(example.get("prompt")), "other")] += 1
    return mix


def check_loop(loop: Mapping[str, Any]) -> None:
    """The closed loop's promise; ValueError naming what broke."""
    q0, q1, q2 = loop["q0"], loop["q1"], loop["q2"]
    if q0 is None or q1 is None or q2 is None:
        raise ValueError(f"a phase had no answered request: Q0 {q0}, Q1 {q1}, Q2 {q2}")
    if loop["failures"]:
        raise ValueError(f"{loop['failures']} requests of the loop failed")
    if loop["versions"]["after"] == loop["versions"]["before"]:
        raise ValueError(f"the retrain did not replace version {loop['versions']['before']}")
    if q0 - q1 < MIN_DROP:
        raise ValueError(f"the drift did not hurt enough to prove anything: Q0 {q0} - Q1 {q1} < {MIN_DROP}")
    if q2 < recovery_target(q0, q1) - 1e-9:
        retrain = loop.get("retrain") or {}
        replay = (f"; the retrain added {retrain.get('feedbackMix')} feedback examples from {retrain['feedbackUri']} "
                  f"(replay them: bench/retrain_spread.py --feedback PATH)" if retrain.get("feedbackUri") else "")
        raise ValueError(f"quality did not recover: Q2 {q2} < Q1 + 0.9(Q0 - Q1) = {recovery_target(q0, q1):.4f}"
                         f"{replay}")


# --- talking to the endpoint ------------------------------------------------------------------------


def post(url: str, body: Mapping[str, Any], timeout: float) -> tuple[int, dict[str, Any], str]:
    """POST JSON; (HTTP status, JSON body, error text) — status 0 when no answer came, never an exception."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"{}"), ""
    except urllib.error.HTTPError as e:
        return e.code, {}, e.read().decode(errors="replace")[:300]
    except (OSError, ValueError) as e:
        return 0, {}, f"{type(e).__name__}: {e}"[:300]


def ask(endpoint: str, record: Mapping[str, str], label: bool, max_tokens: int, timeout: float) -> LoopAnswer:
    """One completion for an invoice; its answer scored against the truth; the truth sent as feedback
    when `label` (a person who checked the answer)."""
    base = endpoint.rstrip("/")
    started = time.monotonic()
    status, body, _ = post(f"{base}/v1/completions",
                            {"prompt": record["prompt"], "max_tokens": max_tokens, "temperature": 0}, timeout)
    latency = (time.monotonic() - started) * 1000
    if status != 200:
        return LoopAnswer(status, None, None, latency_ms=latency)
    text = str(((body.get("choices") or [{}])[0]).get("text") or "")
    version = str(body.get("model") or "").rsplit("/", 1)[-1] or None
    f1 = metrics.field_f1(text, record["completion"]) or 0.0
    labelled = False
    if label and body.get("id"):
        fb_status, _, _ = post(f"{base}/v1/feedback", {"request_id": body["id"], "label": record["completion"]},
                                timeout)
        labelled = fb_status in (200, 201, 202)
    return LoopAnswer(status, version, f1, labelled, latency)


def send(endpoint: str, records: Sequence[Mapping[str, str]], label: bool, max_tokens: int, timeout: float,
         on_answer: Callable[[list[LoopAnswer]], bool] | None = None) -> list[LoopAnswer]:
    """Send `records` one at a time (three of four labelled when `label`); `on_answer` sees the answers so
    far after each and stops the phase by returning True."""
    answers: list[LoopAnswer] = []
    for i, record in enumerate(records):
        answers.append(ask(endpoint, record, label and i % LABEL_EVERY != LABEL_EVERY - 1, max_tokens, timeout))
        if on_answer is not None and on_answer(answers):
            break
    return answers


def monitor_line(status: Mapping[str, Any]) -> str:
    """The last monitor check as a progress line."""
    last = status.get("lastMonitor") or {}
    if not last:
        return "monitor: no check yet"
    drift = last.get("driftShare")
    q = last.get("quality")
    parts = [f"monitor: {last.get('samples', 0)} requests in the window",
             "drift share " + ("-" if drift is None else f"{drift:.2f}"),
             "field_f1 " + ("-" if q is None else f"{q:.3f}"),
             f"breaches {status.get('consecutiveBreaches', 0)}"]
    if status.get("retrainInFlight"):
        parts.append(f"retrain {status['retrainInFlight']} requested")
    elif condition(status, "Retraining").get("reason") == "AwaitingFeedback":  # under minFeedbackExamples
        examples = (last.get("feedback") or {}).get("examples", 0)
        parts.append(f"retrain waits for labelled feedback ({examples} examples in the window)")
    return ", ".join(parts)
