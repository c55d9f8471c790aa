"""What deleting a FineTune must stop: `decide_cleanup(...) -> tuple[StopJob, ...]`.

Status records a launch only after the launch call returned. A submission whose response was lost
(Ray unreachable after it took the request, or the operator killed before the status write) runs on
an existing cluster with no record of it, and nothing owns it: RayJobs are deleted by label and owner,
Ray job submissions are not. Submission ids are predictable (`naming.submission_id(uid, run, attempt)`),
so deletion also stops the ids a lost launch may have used:

- the current run's attempts from 1 to the recorded attempt + 1 (a retry or resume is the recorded
  attempt + 1), leaving out attempts recorded as ended (their stop, when needed, went through before
  the record was written);
- attempt 1 of the next run, when one may have started since the status was written: no run recorded
  (unless an InvalidSpec verdict on this generation), a spec whose hash is not the recorded run's, or
  a retrain request not yet handled.

A Succeeded or Failed object with none of these needs no call to Ray, so deleting it never waits on a
Ray that is gone. Stopping an id Ray never had is a 404 the client answers with False.
"""

from __future__ import annotations

from tuneloop.api.finetune import FineTuneSpec, FineTuneStatus
from tuneloop.operator.logic import naming, reconciling
from tuneloop.operator.logic.plans import StopJob


def _new_run_possible(status: FineTuneStatus, spec: FineTuneSpec, generation: int,
                      retrain_request: str | None) -> bool:
    """Whether a run after the recorded one may have been launched (as `reconciling.wanted_trigger`
    would start one). Not the observed generation alone: a wait on Ray writes the new generation
    with the old run."""
    run = status.run
    if run is None:  # an InvalidSpec verdict on this generation launched nothing
        return status.phase != "Failed" or status.observed_generation != generation
    if run.spec_hash != naming.spec_hash(spec):
        return True
    return bool(retrain_request) and retrain_request != status.handled_retrain_request


def unrecorded_launches(status: FineTuneStatus, spec: FineTuneSpec, generation: int, retrain_request: str | None
                        ) -> tuple[tuple[int, int], ...]:
    """(run, attempt) pairs a launch may have used without status saying so, or saying it ended."""
    run = status.run
    out: list[tuple[int, int]] = []
    if run is not None and status.phase not in reconciling.TERMINAL_PHASES:
        ended = {a.attempt for a in status.attempts if a.run == run.number}
        out += [(run.number, a) for a in range(1, run.attempt + 2) if a not in ended]
    if _new_run_possible(status, spec, generation, retrain_request):
        out.append(((run.number if run else 0) + 1, 1))
    return tuple(out)


def decide_cleanup(status: FineTuneStatus, spec: FineTuneSpec | None, uid: str, generation: int,
                   retrain_request: str | None = None) -> tuple[StopJob, ...]:
    """The jobs to stop before the FineTune goes: the recorded active attempt, then (ExistingCluster
    mode) every predictable submission id a lost launch may have used."""
    run = status.run
    address = spec.ray.address if spec is not None else None
    stops: list[StopJob] = []
    if run is not None and status.phase in reconciling.ACTIVE_PHASES and run.attempt > 0:
        stops.append(StopJob(run.mode or "RayJob", run.number, run.attempt, run.ray_job_name, run.submission_id,
                             address))
    if spec is None or spec.ray.mode != "ExistingCluster" or not address:
        return tuple(stops)  # RayJobs are found by label and owner; without an address nothing can be stopped
    known = {s.submission_id for s in stops if s.mode == "ExistingCluster"}
    for number, attempt in unrecorded_launches(status, spec, generation, retrain_request):
        sid = naming.submission_id(uid, number, attempt)
        if sid not in known:
            stops.append(StopJob("ExistingCluster", number, attempt, None, sid, address))
    return tuple(stops)
