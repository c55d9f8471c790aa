"""`decide_cleanup` as a table: which jobs deleting a FineTune stops, the recorded one and (ExistingCluster
mode) the predictable submission ids a launch whose response was lost may have used."""

from __future__ import annotations

from typing import Any

import pytest

from tuneloop.api.finetune import FineTuneSpec, FineTuneStatus
from tuneloop.operator.logic import naming
from tuneloop.operator.logic.deleting import decide_cleanup

UID = "11111111-2222-3333-4444-555555555555"
ADDRESS = "http://ray:8265"


def spec(mode: str = "ExistingCluster") -> FineTuneSpec:
    ray = {"mode": mode, "address": ADDRESS} if mode == "ExistingCluster" else {"mode": mode}
    return FineTuneSpec.model_validate({"baseModel": {"uri": "hf://m/x"}, "dataset": {"uri": "s3://b/d.jsonl"},
                                        "registry": {"modelName": "m"}, "ray": ray})


def sid(run: int, attempt: int) -> str:
    return naming.submission_id(UID, run, attempt)


def run(number: int = 1, attempt: int = 1, mode: str = "ExistingCluster", spec_hash: str | None = None
        ) -> dict[str, Any]:
    out: dict[str, Any] = {"number": number, "generation": 1, "attempt": attempt, "mode": mode,
                           "specHash": spec_hash or naming.spec_hash(spec(mode))}
    if attempt:
        out["submissionId"] = sid(number, attempt)
        if mode == "RayJob":
            out["rayJobName"] = f"ft-r{number}a{attempt}"
    return out


def ended(number: int, attempt: int, outcome: str = "Failed") -> dict[str, Any]:
    return {"run": number, "attempt": attempt, "id": sid(number, attempt), "outcome": outcome}


# name: (status, generation, retrain request, spec mode, expected [(mode, submission id or RayJob name)])
CASES: dict[str, tuple[dict[str, Any], int, str | None, str, list[tuple[str, str]]]] = {
    "never written (killed between submit and the first status write)": ({}, 1, None, "ExistingCluster",
                                                                         [("ExistingCluster", sid(1, 1))]),
    "first launch's response lost: Pending without a run": (
        {"phase": "Pending", "observedGeneration": 1}, 1, None, "ExistingCluster", [("ExistingCluster", sid(1, 1))]),
    "running: the recorded attempt, and a retry whose response was lost": (
        {"phase": "Running", "observedGeneration": 1, "run": run()}, 1, None, "ExistingCluster",
        [("ExistingCluster", sid(1, 1)), ("ExistingCluster", sid(1, 2))]),
    "attempt 1 recorded as ended is not stopped again": (
        {"phase": "Launching", "observedGeneration": 1, "run": run(attempt=2), "attempts": [ended(1, 1)]}, 1, None,
        "ExistingCluster", [("ExistingCluster", sid(1, 2)), ("ExistingCluster", sid(1, 3))]),
    "pending after a world wait between attempts": (
        {"phase": "Pending", "observedGeneration": 1, "run": run(attempt=1), "attempts": [ended(1, 1)]}, 1, None,
        "ExistingCluster", [("ExistingCluster", sid(1, 2))]),
    "suspended: the stopped attempt is recorded, the resume may be lost": (
        {"phase": "Suspended", "observedGeneration": 1, "run": run(), "attempts": [ended(1, 1, "Stopped")]}, 1,
        None, "ExistingCluster", [("ExistingCluster", sid(1, 2))]),
    "succeeded, nothing since: no call to Ray": (
        {"phase": "Succeeded", "observedGeneration": 1, "run": run(), "attempts": [ended(1, 1, "Succeeded")]}, 1,
        None, "ExistingCluster", []),
    "succeeded, then a spec change whose launch was lost (killed before the status write)": (
        {"phase": "Succeeded", "observedGeneration": 1, "run": run(spec_hash="old"),
         "attempts": [ended(1, 1, "Succeeded")]}, 2, None, "ExistingCluster", [("ExistingCluster", sid(2, 1))]),
    "a spec change whose launch was lost while Ray was unreachable (the wait wrote the new generation)": (
        {"phase": "Pending", "observedGeneration": 2, "run": run(spec_hash="old"),
         "attempts": [ended(1, 1, "Succeeded")]}, 2, None, "ExistingCluster",
        [("ExistingCluster", sid(1, 2)), ("ExistingCluster", sid(2, 1))]),
    "invalid spec, then a fixed spec whose launch was lost": (
        {"phase": "Failed", "observedGeneration": 1}, 2, None, "ExistingCluster", [("ExistingCluster", sid(1, 1))]),
    "succeeded, then a retrain request whose launch was lost": (
        {"phase": "Succeeded", "observedGeneration": 1, "handledRetrainRequest": "a", "run": run(),
         "attempts": [ended(1, 1, "Succeeded")]}, 1, "b", "ExistingCluster", [("ExistingCluster", sid(2, 1))]),
    "a handled retrain request starts nothing": (
        {"phase": "Succeeded", "observedGeneration": 1, "handledRetrainRequest": "a", "run": run(),
         "attempts": [ended(1, 1, "Succeeded")]}, 1, "a", "ExistingCluster", []),
    "invalid spec, never launched": ({"phase": "Failed", "observedGeneration": 1}, 1, None, "ExistingCluster", []),
    "RayJob mode: the recorded RayJob only (the rest are found by label)": (
        {"phase": "Running", "observedGeneration": 1, "run": run(mode="RayJob")}, 1, None, "RayJob",
        [("RayJob", "ft-r1a1")]),
    "RayJob mode, first launch lost: found by label, nothing to stop": (
        {"phase": "Pending", "observedGeneration": 1}, 1, None, "RayJob", []),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_decide_cleanup(case: str) -> None:
    status, generation, retrain, mode, expected = CASES[case]
    stops = decide_cleanup(FineTuneStatus.model_validate(status), spec(mode), UID, generation, retrain)
    assert [(s.mode, s.rayjob_name or s.submission_id) for s in stops] == expected
    assert all(s.address == ADDRESS for s in stops if s.mode == "ExistingCluster")


def test_unparseable_spec_stops_what_is_recorded_only() -> None:
    status = FineTuneStatus.model_validate({"phase": "Running", "observedGeneration": 1, "run": run(mode="RayJob")})
    stops = decide_cleanup(status, None, UID, 1)
    assert [(s.mode, s.rayjob_name) for s in stops] == [("RayJob", "ft-r1a1")]
