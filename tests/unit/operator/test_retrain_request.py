"""A retrain request as the FineTune controller sees it: the annotation starts a new run of the same spec
whose status names the request (`run.trigger`) and, when the reason annotation speaks of that request,
who asked, when and why (`run.triggerReason`); a reason left from another request is not copied."""

from __future__ import annotations

import pytest

from tests.unit.operator.test_reconciler import NS, World
from tuneloop.api import constants


@pytest.mark.parametrize(("reason", "recorded"), [
    ("retrain-2-X: requested by ModelDeployment ns/md at T: exact_match 0.2 < 0.5", True),
    ("retrain-1-X: requested by ModelDeployment ns/md at T: an older request", False),
    (None, False),
], ids=["reason-of-this-request", "stale-reason", "no-reason"])
def test_a_retrain_request_starts_run_2_and_records_its_reason(reason: str | None, recorded: bool) -> None:
    w = World()
    w.reconcile()
    w.job_succeeds()
    w.reconcile()
    assert w.status["phase"] == "Succeeded" and w.status["run"]["number"] == 1
    annotations = w.body["metadata"]["annotations"]
    if reason is not None:
        annotations[constants.ANNOTATION_RETRAIN_REASON] = reason
    annotations[constants.ANNOTATION_RETRAIN_REQUEST] = "retrain-2-X"
    spec = dict(w.body["spec"])
    w.reconcile()
    run = w.status["run"]
    assert run["number"] == 2 and run["trigger"] == "retrain:retrain-2-X" and run["attempt"] == 1
    assert w.status["handledRetrainRequest"] == "retrain-2-X" and w.body["spec"] == spec
    assert run.get("triggerReason") == (reason if recorded else None)
    w.reconcile()
    assert w.status["run"]["number"] == 2  # handled once


@pytest.mark.parametrize("mode", ["ExistingCluster", "RayJob"])
@pytest.mark.parametrize(("data", "added"), [
    ("retrain-2-X: file:///traffic/ns/feedback-sets/ns.md/abc.jsonl", "file:///traffic/ns/feedback-sets/ns.md/abc.jsonl"),
    ("retrain-1-X: file:///old.jsonl", None),
    (None, None),
], ids=["data-of-this-request", "stale-data", "no-data"])
def test_the_retrains_feedback_goes_to_the_job_as_extra_data_and_the_spec_stays(data: str | None, added: str | None,
                                                                                  mode: str) -> None:
    w = World(mode=mode)

    def entrypoint() -> str:
        run = w.status["run"]
        if mode == "ExistingCluster":
            return str(w.ray.jobs[run["submissionId"]]["entrypoint"])
        return str(w.kube.rayjobs[(NS, run["rayJobName"])]["spec"]["entrypoint"])

    w.reconcile()
    assert "--extra-data" not in entrypoint()
    w.job_succeeds()
    w.reconcile()
    annotations = w.body["metadata"]["annotations"]
    if data is not None:
        annotations[constants.ANNOTATION_RETRAIN_DATA] = data
    annotations[constants.ANNOTATION_RETRAIN_REQUEST] = "retrain-2-X"
    spec = dict(w.body["spec"])
    w.reconcile()
    run = w.status["run"]
    assert run["number"] == 2 and run.get("addedData") == added and w.body["spec"] == spec
    assert (f"--extra-data {added}" in entrypoint()) if added else ("--extra-data" not in entrypoint())
