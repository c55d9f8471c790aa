"""The registry reads over REST (clients/mlflow_rest.py) give the very answers the mlflow client gives, on a
real MLflow tracking server: every case the ModelDeployment and FineTune controllers meet (alias held,
alias never set, model missing, pinned version present or not, a version with tags, source, run and
several aliases), plus an unreachable server and one that refuses the credentials. The unit tests'
`FakeRegistry` answers in these shapes, so this is also what makes that fake honest.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from tuneloop.operator.clients.errors import Rejected, Unavailable
from tuneloop.operator.clients.mlflow import MlflowRegistry
from tuneloop.operator.clients.mlflow_rest import MlflowRest

MODEL = "rest-reads"


@pytest.fixture(scope="module")
def registry_model(mlflow_server: Any) -> Iterator[str]:
    """A model with 3 versions: 1 plain, 2 with tags/run and aliases champion+stable, 3 challenger."""
    from mlflow.tracking import MlflowClient

    uri = mlflow_server.tracking_uri
    client = MlflowClient(uri, registry_uri=uri)
    client.create_registered_model(MODEL)
    client.create_model_version(MODEL, "s3://models/rest/v1")
    client.create_model_version(MODEL, "s3://models/rest/v2", tags={"tuneloop.io/base": "tiny", "k": "v"})
    client.create_model_version(MODEL, "s3://models/rest/v3")
    client.set_registered_model_alias(MODEL, "champion", "2")
    client.set_registered_model_alias(MODEL, "stable", "2")
    client.set_registered_model_alias(MODEL, "challenger", "3")
    client.create_registered_model(MODEL + "-empty")
    yield uri


CASES = [  # (alias, version)
    ("champion", None), ("stable", None), ("challenger", None), ("never-set", None),
    (None, "1"), (None, "2"), (None, "99"),
]


def both(coro_fn: Any) -> tuple[Any, Any]:
    async def run() -> tuple[Any, Any]:
        mlflow_client, rest = MlflowRegistry(rest=False), MlflowRegistry()
        try:
            return await coro_fn(mlflow_client), await coro_fn(rest)
        finally:
            await mlflow_client.aclose()
            await rest.aclose()

    return asyncio.run(run())


@pytest.mark.parametrize(("alias", "version"), CASES)
@pytest.mark.parametrize("model", [MODEL, MODEL + "-empty", "no-such-model"])
def test_lookup_model_answers_as_the_mlflow_client_does(registry_model: str, model: str, alias: str | None,
                                                         version: str | None) -> None:
    via_client, via_rest = both(lambda r: r.lookup_model(registry_model, model, alias, version))
    assert via_rest == via_client


def test_a_held_alias_carries_the_version_details(registry_model: str) -> None:
    _, lookup = both(lambda r: r.lookup_model(registry_model, MODEL, "champion", None))
    assert lookup.version is not None
    assert (lookup.version.version, lookup.version.source) == ("2", "s3://models/rest/v2")
    assert lookup.version.tags == {"tuneloop.io/base": "tiny", "k": "v"}
    assert set(lookup.version.aliases) == {"champion", "stable"}
    assert lookup.aliases == {"champion": "2", "stable": "2"}


def test_a_missing_alias_lists_what_exists(registry_model: str) -> None:
    _, lookup = both(lambda r: r.lookup_model(registry_model, MODEL, "never-set", None))
    assert lookup.version is None and lookup.model_exists
    assert lookup.versions == ("1", "2", "3")
    assert lookup.aliases == {"champion": "2", "stable": "2", "challenger": "3"}


@pytest.mark.parametrize("alias", ["champion", "challenger", "never-set"])
@pytest.mark.parametrize("model", [MODEL, "no-such-model"])
def test_get_alias_answers_as_the_mlflow_client_does(registry_model: str, model: str, alias: str) -> None:
    via_client, via_rest = both(lambda r: r.get_alias(registry_model, model, alias))
    assert via_rest == via_client


def test_the_rest_path_is_taken_for_http_only() -> None:
    assert MlflowRest.handles("http://mlflow:5000") and MlflowRest.handles("https://mlflow.example/")
    assert not MlflowRest.handles("databricks") and not MlflowRest.handles("sqlite:///x.db")
    assert not MlflowRest.handles("file:///tmp/mlruns")
    assert not MlflowRest.handles("https://user:secret@mlflow.example/")  # the mlflow client reads the URI's


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_server_is_unavailable_within_the_deadline() -> None:
    async def run() -> None:
        rest = MlflowRest(timeout_seconds=2, retries=1)
        try:
            with pytest.raises(Unavailable, match="after 2 tries"):
                await rest.lookup_model(f"http://127.0.0.1:{free_port()}", MODEL, "champion", None)
        finally:
            await rest.close()

    asyncio.run(run())


def test_a_refused_request_is_rejected_not_retried(registry_model: str) -> None:
    async def run() -> None:
        rest = MlflowRest(timeout_seconds=5, retries=2)
        try:  # max_results over the server's limit: INVALID_PARAMETER_VALUE, not a "not found"
            with pytest.raises(Rejected, match="INVALID_PARAMETER_VALUE"):
                await rest._get(registry_model, "/model-versions/search",
                                {"filter": f"name = '{MODEL}'", "max_results": "1000000"}, "search")
        finally:
            await rest.close()

    asyncio.run(run())


# --- the shared alias listing (a Serving deployment's look without a GET) -------------------------------


class Counting(MlflowRest):
    """Counts the requests by path (our own wrapper's one call site)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls: list[str] = []

    async def _get(self, tracking_uri: str, path: str, params: dict[str, str], what: str) -> dict[str, Any]:
        self.calls.append(path)
        return await super()._get(tracking_uri, path, params, what)


def test_the_listing_is_every_models_aliases_across_pages(registry_model: str) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(registry_model, registry_uri=registry_model)
    expected = {m.name: dict(m.aliases) for m in client.search_registered_models(max_results=1000)}
    assert expected[MODEL] == {"champion": "2", "stable": "2", "challenger": "3"} and expected[MODEL + "-empty"] == {}

    async def run(page_size: int, pages: int) -> tuple[Any, list[str]]:
        rest = Counting(page_size=page_size, snapshot_pages=pages)
        try:
            return await rest.registered_aliases(registry_model), rest.calls
        finally:
            await rest.close()

    listed, calls = asyncio.run(run(1000, 5))
    assert listed == expected and calls == ["/registered-models/search"]
    listed, calls = asyncio.run(run(1, len(expected)))  # one model a page: every page followed
    assert listed == expected and len(calls) == len(expected)
    listed, _ = asyncio.run(run(1, len(expected) - 1))  # more models than pages allowed: not listable
    assert listed is None


def test_looks_share_one_listing_and_answer_as_a_get_does(registry_model: str) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(registry_model, registry_uri=registry_model)

    async def run() -> None:
        rest = Counting(alias_snapshot_seconds=2, version_cache_seconds=60)
        plain = MlflowRest()
        try:
            first = await rest.lookup_model(registry_model, MODEL, "champion", None)
            assert rest.calls == ["/registered-models/search", "/registered-models/alias"]  # details not known yet
            assert first == await plain.lookup_model(registry_model, MODEL, "champion", None)
            rest.calls.clear()
            # Twenty looks of two deployments at once, within the listing's 2 s: no request, a GET's answer.
            answers = await asyncio.gather(*(rest.lookup_model(registry_model, MODEL, alias, None)
                                             for alias in ("champion", "stable") * 10))
            assert rest.calls == []
            assert {a.version.version for a in answers if a.version} == {"2"}
            assert answers[0].aliases == first.aliases and set(answers[0].version.aliases) == {"champion", "stable"}
            assert answers[0].version.tags == first.version.tags
            # The alias moves by hand: seen once the listing is older than its 2 s, with one listing for
            # looks that come at once.
            client.set_registered_model_alias(MODEL, "stable", "1")
            await asyncio.sleep(2.1)
            rest.calls.clear()
            moved, again = await asyncio.gather(*(rest.lookup_model(registry_model, MODEL, "stable", None)
                                                  for _ in range(2)))
            assert moved == again == await plain.lookup_model(registry_model, MODEL, "stable", None)
            assert moved.version is not None and moved.version.version == "1"
            assert rest.calls.count("/registered-models/search") == 1  # (then a GET each: v1 not known yet)
            # A missing alias or model still answers with what exists.
            assert await rest.lookup_model(registry_model, MODEL, "never-set", None) == await plain.lookup_model(
                registry_model, MODEL, "never-set", None)
            assert (await rest.lookup_model(registry_model, "no-such-model", "champion", None)).model_exists is False
        finally:
            client.set_registered_model_alias(MODEL, "stable", "2")
            await rest.close()
            await plain.close()

    asyncio.run(run())


def test_an_alias_the_operator_moves_is_seen_at_once(registry_model: str) -> None:
    async def run() -> None:
        registry = MlflowRegistry(alias_snapshot_seconds=3600, version_cache_seconds=3600)
        try:
            assert (await registry.lookup_model(registry_model, MODEL, "challenger", None)).version.version == "3"
            await registry.lookup_model(registry_model, MODEL, "challenger", None)  # from the listing now
            await registry.set_alias(registry_model, MODEL, "challenger", "1")
            assert (await registry.lookup_model(registry_model, MODEL, "challenger", None)).version.version == "1"
        finally:
            await registry.set_alias(registry_model, MODEL, "challenger", "3")
            await registry.aclose()

    asyncio.run(run())
