"""The MLflow tracking server and model registry: find a job's result, register a version once,
read and move aliases.

mlflow is imported lazily (it is large and the operator may never touch a registry), and its calls
are synchronous, so they run on a small thread pool with a deadline. Its own HTTP retries are bounded
by MLFLOW_HTTP_REQUEST_TIMEOUT / MLFLOW_HTTP_REQUEST_MAX_RETRIES, which `configure_http` sets from the
operator's settings before the first call. Versions are found again by their FineTune uid + run
tags (`search_model_versions`), never by remembering a version number in memory.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

from tuneloop.api import constants
from tuneloop.api.results import JobResult
from tuneloop.operator.clients.errors import ClientError, Rejected, Unavailable
from tuneloop.operator.clients.mlflow_rest import NOT_FOUND_CODES, REFUSED_CODES, SYSTEM, MlflowRest
from tuneloop.operator.clients.mlflow_rest import quote as _quote
from tuneloop.operator.logic.deploying import ModelLookup
from tuneloop.operator.logic.plans import VersionInfo

T = TypeVar("T")


class Registry(Protocol):
    """What the controller needs from MLflow."""

    async def find_result(self, tracking_uri: str, experiment: str, uid: str, run: int, attempt: int
                          ) -> JobResult | None: ...
    async def find_version(self, tracking_uri: str, model: str, uid: str, run: int) -> VersionInfo | None: ...
    async def register_version(self, tracking_uri: str, model: str, source: str, run_id: str | None,
                               tags: dict[str, str], description: str) -> VersionInfo: ...
    async def get_alias(self, tracking_uri: str, model: str, alias: str) -> VersionInfo | None: ...
    async def set_alias(self, tracking_uri: str, model: str, alias: str, version: str) -> None: ...


class ModelResolver(Protocol):
    """What the ModelDeployment controller needs from MLflow."""

    async def lookup_model(self, tracking_uri: str, model: str, alias: str | None, version: str | None
                           ) -> ModelLookup: ...


def configure_http(timeout_seconds: float, retries: int) -> None:
    """Bound mlflow's own HTTP retries (defaults: 120 s timeout, 7 retries with backoff: minutes)."""
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(max(int(timeout_seconds), 1))
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(retries)
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = "1"
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def version_filter(model: str, uid: str, run: int) -> str:
    """search_model_versions filter for the version of one run; dotted tag keys need backticks."""
    return (f"name = {_quote(model)} and tag.`{constants.TAG_FINETUNE_UID}` = {_quote(uid)} "
            f"and tag.`{constants.TAG_RUN_NUMBER}` = {_quote(str(run))}")


def run_filter(uid: str, run: int, attempt: int) -> str:
    return (f"tags.`{constants.TAG_FINETUNE_UID}` = {_quote(uid)} and tags.`{constants.TAG_RUN_NUMBER}` = "
            f"{_quote(str(run))} and tags.`{constants.TAG_RUN_ATTEMPT}` = {_quote(str(attempt))}")


def _info(mv: Any) -> VersionInfo:
    return VersionInfo(name=mv.name, version=str(mv.version), run_id=mv.run_id, source=mv.source,
                       aliases=tuple(getattr(mv, "aliases", None) or ()), tags=dict(mv.tags or {}))


def _translate(e: Exception, what: str) -> ClientError:
    code = getattr(e, "error_code", None)
    text = str(e)[:600]
    if code in REFUSED_CODES:
        return Rejected(f"MLflow refused to {what}: {text}", SYSTEM)
    return Unavailable(f"MLflow could not {what}: {text}", SYSTEM)


class MlflowRegistry:
    """`Registry` over the mlflow client, on its own threads, with a deadline per call. The reads repeated on
    every look (`get_alias`, `lookup_model`) of an http(s) tracking server go over REST instead
    (clients/mlflow_rest.py): the same answers for a fraction of the CPU, and no mlflow import."""

    def __init__(self, timeout_seconds: float = 10.0, retries: int = 2, threads: int = 4,
                 rest: bool = True, alias_snapshot_seconds: float = 0.0, version_cache_seconds: float = 0.0) -> None:
        configure_http(timeout_seconds, retries)
        self._deadline = timeout_seconds * (retries + 1) + 5
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tuneloop-mlflow")
        self._global_lock = threading.Lock()  # mlflow.register_model reads the global tracking URI
        self._rest = MlflowRest(timeout_seconds, retries, alias_snapshot_seconds,
                                version_cache_seconds) if rest else None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def aclose(self) -> None:
        if self._rest is not None:
            await self._rest.close()
        self.close()

    def _reads_rest(self, tracking_uri: str) -> MlflowRest | None:
        return self._rest if self._rest is not None and self._rest.handles(tracking_uri) else None

    async def _call(self, what: str, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(loop.run_in_executor(self._pool, fn), self._deadline)
        except TimeoutError as e:
            raise Unavailable(f"MLflow did not answer to {what} within {self._deadline:.0f}s", SYSTEM) from e
        except ClientError:
            raise
        except Exception as e:  # mlflow raises MlflowException, requests' and OS errors
            raise _translate(e, what) from e

    @staticmethod
    def _client(tracking_uri: str) -> Any:
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    @staticmethod
    def _none_if_missing(fn: Callable[[], T]) -> T | None:
        try:
            return fn()
        except Exception as e:
            if getattr(e, "error_code", None) in NOT_FOUND_CODES:
                return None
            raise

    async def find_result(self, tracking_uri: str, experiment: str, uid: str, run: int, attempt: int
                          ) -> JobResult | None:
        def find() -> JobResult | None:
            client = self._client(tracking_uri)
            exp = self._none_if_missing(lambda: client.get_experiment_by_name(experiment))
            if exp is None:
                return None
            runs = client.search_runs([exp.experiment_id], filter_string=run_filter(uid, run, attempt),
                                      order_by=["attributes.start_time DESC"], max_results=5)
            for found in runs:
                with tempfile.TemporaryDirectory(prefix="tuneloop-result-") as tmp:
                    path = self._none_if_missing(
                        lambda r=found, d=tmp: client.download_artifacts(r.info.run_id, constants.RESULT_ARTIFACT, d))
                    if path and Path(path).is_file():
                        return JobResult.model_validate(json.loads(Path(path).read_text()))
            return None

        return await self._call(f"find the result of run {run} attempt {attempt} in experiment {experiment!r}", find)

    async def find_version(self, tracking_uri: str, model: str, uid: str, run: int) -> VersionInfo | None:
        def find() -> VersionInfo | None:
            client = self._client(tracking_uri)
            found = self._none_if_missing(lambda: client.search_model_versions(version_filter(model, uid, run)))
            if not found:
                return None
            first = min(found, key=lambda mv: int(mv.version))  # a duplicate can only come from a race
            # search_model_versions leaves aliases out; get_model_version has them.
            return _info(client.get_model_version(model, first.version))

        return await self._call(f"search versions of {model!r} for run {run}", find)

    async def register_version(self, tracking_uri: str, model: str, source: str, run_id: str | None,
                               tags: dict[str, str], description: str) -> VersionInfo:
        existing = await self.find_version(tracking_uri, model, tags[constants.TAG_FINETUNE_UID],
                                           int(tags[constants.TAG_RUN_NUMBER]))
        if existing is not None:
            return existing

        def register() -> VersionInfo:
            import mlflow

            with self._global_lock:
                mlflow.set_tracking_uri(tracking_uri)
                mlflow.set_registry_uri(tracking_uri)
                # Tags are written with the version in one request: a crash cannot leave an untagged
                # version that a retry would fail to find and register again.
                mv = mlflow.register_model(source, model, await_registration_for=0, tags=tags)
            client = self._client(tracking_uri)
            client.update_model_version(model, mv.version, description=description)
            return _info(client.get_model_version(model, mv.version))

        return await self._call(f"register {source} as a version of {model!r}", register)

    @classmethod
    def _alias_or_none(cls, client: Any, model: str, alias: str) -> VersionInfo | None:
        """The version holding `alias`; None when the model or the alias does not exist."""
        try:
            mv = cls._none_if_missing(lambda: client.get_model_version_by_alias(model, alias))
        except Exception as e:
            # An alias nobody set yet is INVALID_PARAMETER_VALUE "... alias champion not found".
            if getattr(e, "error_code", None) == "INVALID_PARAMETER_VALUE" and "not found" in str(e):
                return None
            raise
        return _info(mv) if mv is not None else None

    async def get_alias(self, tracking_uri: str, model: str, alias: str) -> VersionInfo | None:
        if (rest := self._reads_rest(tracking_uri)) is not None:
            return await rest.get_alias(tracking_uri, model, alias)
        return await self._call(f"read alias {alias!r} of {model!r}",
                                lambda: self._alias_or_none(self._client(tracking_uri), model, alias))

    async def set_alias(self, tracking_uri: str, model: str, alias: str, version: str) -> None:
        await self._call(f"set alias {alias!r} of {model!r} to version {version}",
                         lambda: self._client(tracking_uri).set_registered_model_alias(model, alias, version))
        if self._rest is not None:
            self._rest.forget(tracking_uri)  # deployments following it see the move at their next look

    async def lookup_model(self, tracking_uri: str, model: str, alias: str | None, version: str | None
                           ) -> ModelLookup:
        """The version `alias` (or the pinned `version`) of `model` names, or — when there is none — which
        versions and aliases exist, for a message that says what to use instead. An alias that resolves
        costs one request (a Serving deployment re-reads it on every look); only a miss lists the rest."""
        if (rest := self._reads_rest(tracking_uri)) is not None:
            return await rest.lookup_model(tracking_uri, model, alias, version)

        def lookup() -> ModelLookup:
            client = self._client(tracking_uri)
            if alias is not None:
                held = self._alias_or_none(client, model, alias)
                if held is not None:
                    return ModelLookup(held, aliases=dict.fromkeys(held.aliases or (alias,), held.version))
            registered = self._none_if_missing(lambda: client.get_registered_model(model))
            if registered is None:
                return ModelLookup(None, model_exists=False)
            aliases = {str(a): str(v) for a, v in (getattr(registered, "aliases", None) or {}).items()}
            found: VersionInfo | None = None
            if alias is not None and alias in aliases:
                found = _info(client.get_model_version(model, aliases[alias]))
            elif alias is None and version is not None:
                mv = self._none_if_missing(lambda: client.get_model_version(model, version))
                found = _info(mv) if mv is not None else None
            if found is not None:
                return ModelLookup(found, aliases=aliases)
            versions = sorted((str(mv.version) for mv in client.search_model_versions(f"name = {_quote(model)}")),
                              key=int)
            return ModelLookup(None, versions=tuple(versions), aliases=aliases)

        what = f"alias {alias!r}" if alias is not None else f"version {version}"
        return await self._call(f"look up {what} of {model!r}", lookup)
