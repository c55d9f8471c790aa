"""clients.apiserver reads the bearer token through the kubernetes Configuration (so its refresh hook,
in-cluster or kubeconfig, still runs) but at most once per AUTH_CACHE_SECONDS, not on every request."""

from __future__ import annotations

from kubernetes import client as k8s

from tuneloop.operator.clients import apiserver


def test_the_token_is_read_through_the_refresh_hook_at_most_once_per_period() -> None:
    tokens = iter(["t1", "t2"])
    calls: list[str] = []

    def refresh(configuration: k8s.Configuration) -> None:
        calls.append("refresh")
        configuration.api_key["BearerToken"] = next(tokens)

    configuration = k8s.Configuration(host="https://apiserver.example:6443", api_key={"BearerToken": "t0"},
                                      api_key_prefix={"BearerToken": "Bearer"})
    configuration.verify_ssl = False
    configuration.refresh_api_key_hook = refresh
    http = apiserver.ApiserverHttp(configuration)

    first = http._headers("application/json")
    second = http._headers("application/json-patch+json")
    assert calls == ["refresh"]
    assert first == {"Accept": "application/json", "Content-Type": "application/json", "authorization": "Bearer t1"}
    assert second["authorization"] == "Bearer t1" and second["Content-Type"] == "application/json-patch+json"

    assert http._auth_read_at is not None
    http._auth_read_at -= apiserver.AUTH_CACHE_SECONDS  # the period has passed
    assert http._headers("application/json")["authorization"] == "Bearer t2"
    assert calls == ["refresh", "refresh"]


def test_no_credentials_no_authorization_header() -> None:
    configuration = k8s.Configuration(host="http://127.0.0.1:8080")
    assert apiserver.ApiserverHttp(configuration)._headers("application/json") == {
        "Accept": "application/json", "Content-Type": "application/json"}
