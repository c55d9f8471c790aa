"""In-memory stand-ins for OUR client interfaces (never for vendor SDKs or raw HTTP).

`Crasher` simulates the operator being killed: after the n-th mutating call has taken effect, the next
call raises `Killed`, which nothing in the operator catches, like a SIGKILL between two steps.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from tuneloop.api import constants
from tuneloop.api.results import JobResult
from tuneloop.operator.clients.errors import Unavailable
from tuneloop.operator.logic.plans import VersionInfo


class Killed(BaseException):
    """The operator process died here."""


class Crasher:
    def __init__(self, after: int | None = None) -> None:
        self.after = after
        self.count = 0

    def tick(self) -> None:
        if self.after is not None and self.count >= self.after:
            raise Killed(f"killed after {self.count} writes")
        self.count += 1


class FakeKube:
    def __init__(self, crasher: Crasher | None = None) -> None:
        self.finetunes: dict[tuple[str, str], dict[str, Any]] = {}
        self.rayjobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.configmaps: dict[tuple[str, str], dict[str, Any]] = {}
        self.rayjob_creates = 0
        self.status_writes = 0
        self.crasher = crasher or Crasher()

    async def get_finetune(self, namespace: str, name: str) -> dict[str, Any] | None:
        body = self.finetunes.get((namespace, name))
        return copy.deepcopy(body) if body else None

    async def write_finetune_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        assert status.get("phase"), f"a status without a phase: {status}"
        self.crasher.tick()
        self.finetunes[(namespace, name)]["status"] = copy.deepcopy(status)
        self.status_writes += 1

    async def ensure_configmap(self, body: dict[str, Any]) -> None:
        self.crasher.tick()
        self.configmaps.setdefault((body["metadata"]["namespace"], body["metadata"]["name"]), body)

    async def ensure_rayjob(self, body: dict[str, Any]) -> None:
        self.crasher.tick()
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        if key not in self.rayjobs:
            self.rayjob_creates += 1
            self.rayjobs[key] = copy.deepcopy(body)

    async def get_rayjob(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.rayjobs.get((namespace, name)))

    async def delete_rayjob(self, namespace: str, name: str) -> None:
        self.crasher.tick()
        self.rayjobs.pop((namespace, name), None)

    async def delete_children(self, namespace: str, label_selector: str, owner_uid: str) -> int:
        owned = [k for k, v in {**self.rayjobs, **self.configmaps}.items()
                 if v["metadata"]["ownerReferences"][0]["uid"] == owner_uid]
        for k in owned:
            self.rayjobs.pop(k, None)
            self.configmaps.pop(k, None)
        return len(owned)

    async def annotate_finetune(self, namespace: str, name: str, annotations: Mapping[str, str]) -> None:
        self.crasher.tick()
        body = self.finetunes.get((namespace, name))
        if body is not None:
            body["metadata"].setdefault("annotations", {}).update(annotations)

    def set_rayjob_status(self, **status: Any) -> None:
        for rj in self.rayjobs.values():
            rj["status"] = dict(status)


class FakeRay:
    def __init__(self, crasher: Crasher | None = None) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.submits = 0
        self.stopped: list[str] = []
        self.down = False
        self.lose_responses = False  # a submission reaches Ray, its response does not reach us
        self.crasher = crasher or Crasher()

    async def get_job(self, address: str, submission_id: str) -> dict[str, Any] | None:
        if self.down:
            raise Unavailable("ray is down", "ray")
        return copy.deepcopy(self.jobs.get(submission_id))

    async def submit_job(self, address: str, body: dict[str, Any]) -> None:
        if self.down:
            raise Unavailable("ray is down", "ray")
        self.crasher.tick()
        if body["submission_id"] not in self.jobs:
            self.submits += 1
            self.jobs[body["submission_id"]] = {"status": "PENDING", "entrypoint": body["entrypoint"]}
        if self.lose_responses:
            raise Unavailable("ray's response was lost", "ray")

    async def stop_job(self, address: str, submission_id: str) -> bool:
        if self.down:
            raise Unavailable("ray is down", "ray")
        self.stopped.append(submission_id)
        if submission_id in self.jobs:
            self.jobs[submission_id]["status"] = "STOPPED"
        return True


class FakeRegistry:
    def __init__(self, crasher: Crasher | None = None) -> None:
        self.results: dict[tuple[str, int, int], JobResult] = {}
        self.versions: list[VersionInfo] = []
        self.aliases: dict[str, str] = {}
        self.down = False
        self.crasher = crasher or Crasher()

    def _check(self) -> None:
        if self.down:
            raise Unavailable("MLflow could not connect: connection refused", "mlflow")

    def _with_aliases(self, v: VersionInfo) -> VersionInfo:
        return VersionInfo(v.name, v.version, v.run_id, v.source,
                           tuple(a for a, ver in self.aliases.items() if ver == v.version), v.tags)

    async def find_result(self, tracking_uri: str, experiment: str, uid: str, run: int, attempt: int):
        self._check()
        return self.results.get((uid, run, attempt))

    async def find_version(self, tracking_uri: str, model: str, uid: str, run: int) -> VersionInfo | None:
        self._check()
        for v in self.versions:
            if v.tags.get(constants.TAG_FINETUNE_UID) == uid and v.tags.get(constants.TAG_RUN_NUMBER) == str(run):
                return self._with_aliases(v)
        return None

    async def register_version(self, tracking_uri, model, source, run_id, tags, description) -> VersionInfo:
        self._check()
        existing = await self.find_version(tracking_uri, model, tags[constants.TAG_FINETUNE_UID],
                                           int(tags[constants.TAG_RUN_NUMBER]))
        if existing:
            return existing
        self.crasher.tick()
        v = VersionInfo(model, str(len(self.versions) + 1), run_id, source, (), dict(tags))
        self.versions.append(v)
        return v

    async def get_alias(self, tracking_uri: str, model: str, alias: str) -> VersionInfo | None:
        self._check()
        version = self.aliases.get(alias)
        found = next((v for v in self.versions if v.version == version), None)
        return self._with_aliases(found) if found else None

    async def set_alias(self, tracking_uri: str, model: str, alias: str, version: str) -> None:
        self._check()
        self.crasher.tick()
        self.aliases[alias] = version


class FakeEvents:
    """Posting an Event is a mutating call: the operator can be killed just before it."""

    def __init__(self, crasher: Crasher | None = None) -> None:
        self.events: list[tuple[str, str, str]] = []
        self.crasher = crasher or Crasher()

    async def emit(self, body: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self.crasher.tick()
        self.events.append((type_, reason, message))
