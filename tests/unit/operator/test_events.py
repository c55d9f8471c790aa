"""The Event the operator posts about a FineTune, built without an apiserver."""

from __future__ import annotations

from datetime import UTC, datetime

from tuneloop.operator.clients.kube import build_event


def test_event_names_its_object_and_is_bounded() -> None:
    body = {"apiVersion": "tuneloop.io/v1alpha1", "kind": "FineTune",
            "metadata": {"name": "ft", "namespace": "ns", "uid": "u-1"}}
    event = build_event(body, "Warning", "DataInvalid", "x" * 5000, datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert event["involvedObject"] == {"apiVersion": "tuneloop.io/v1alpha1", "kind": "FineTune", "name": "ft",
                                       "namespace": "ns", "uid": "u-1"}
    assert event["metadata"] == {"generateName": "ft.", "namespace": "ns"}
    assert (event["type"], event["reason"], event["count"]) == ("Warning", "DataInvalid", 1)
    assert event["firstTimestamp"] == event["lastTimestamp"] == "2026-01-02T03:04:05Z"
    assert len(event["message"]) == 1024 and event["message"].endswith("…(truncated)")
