"""The retrain annotation on its own, as README and docs/gitops.md describe it, against the real
kube-apiserver with the operator as a real process: `tuneloop.io/retrain-request=<id>` on a Succeeded
FineTune (what a ModelDeployment writes; a person or a pipeline may write it too) starts one new run of
the same spec — the spec and its generation untouched — and the same id left in place starts no other.

The test acts as KubeRay (RayJob status) and as the training job (the MLflow run and its result) on
the session's real MLflow server. (tests/api/test_monitor_retrain.py covers the whole monitor loop that
writes the annotation; this story needs none of it.)
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.api.harness import finish_run, holds_for_looks, phase, wait_status
from tests.api.kube import Cluster, finetune
from tuneloop.api import constants
from tuneloop.operator.logic import naming

pytestmark = [pytest.mark.apiserver, pytest.mark.slow]


@pytest.fixture(scope="module")
def ns_prefix() -> str:
    return f"tlr{uuid.uuid4().hex[:6]}"


def rayjobs(cluster: Cluster, ft: dict[str, Any]) -> list[str]:
    """The FineTune's RayJobs, oldest run first."""
    uid, name = ft["metadata"]["uid"], ft["metadata"]["name"]
    wanted = [naming.rayjob_name(name, uid, run, attempt) for run in (1, 2, 3) for attempt in (1, 2)]
    have = {r["metadata"]["name"] for r in cluster.rayjobs()}
    return [job for job in wanted if job in have]


def run_is(number: int):
    return lambda st: (st.get("run") or {}).get("number") == number and bool((st.get("run") or {}).get("rayJobName"))


def test_the_retrain_annotation_starts_one_new_run_of_the_same_spec(shared_operator, cluster, mlflow_server):
    uri = mlflow_server.tracking_uri
    ft = cluster.create(finetune("loop", uri, model=f"m-{cluster.ns}"))
    wait_status(cluster, "loop", run_is(1), "run 1 launched")
    finish_run(cluster, uri, ft, 1)
    st = wait_status(cluster, "loop", phase("Succeeded"), "run 1 Succeeded")
    assert st["model"]["version"] == "1" and st["run"]["trigger"] == "spec"
    spec_before = cluster.get("loop")["spec"]

    cluster.annotate("loop", {constants.ANNOTATION_RETRAIN_REQUEST: "manual-1"})
    st = wait_status(cluster, "loop", run_is(2), "run 2 launched for the request")
    assert (st["run"]["trigger"], st["handledRetrainRequest"]) == ("retrain:manual-1", "manual-1"), st
    assert st["run"]["generation"] == 1 and st["run"]["attempt"] == 1
    now = cluster.get("loop")
    assert now["metadata"]["generation"] == 1 and now["spec"] == spec_before  # the spec is never touched
    assert rayjobs(cluster, ft) == [naming.rayjob_name("loop", ft["metadata"]["uid"], r, 1) for r in (1, 2)]

    finish_run(cluster, uri, ft, 2)
    st = wait_status(cluster, "loop", lambda s: s.get("phase") == "Succeeded" and s["run"]["number"] == 2,
                     "run 2 Succeeded")
    assert st["model"]["version"] == "2"
    # The same request id, still on the object, is handled: no third run however often the operator looks.
    holds_for_looks(shared_operator, cluster, "loop",
                    lambda: cluster.status("loop")["run"]["number"] == 2 and len(rayjobs(cluster, ft)) == 2, 3,
                    "one run per request id")
