"""The Serve REST client's pure parts: reading ServeInstanceDetails and the whole-cluster PUT body."""

from __future__ import annotations

from tuneloop.operator.clients import serve

DETAILS = {
    "proxy_location": "HeadOnly", "http_options": {"host": "127.0.0.1", "port": 8123}, "target_capacity": None,
    "applications": {
        "a.mine": {"status": "RUNNING", "message": "", "last_deployed_time_s": 10.5,
                   "deployed_app_config": {"name": "a.mine", "v": 1},
                   "deployments": {"Generator": {"replicas": [{"state": "RUNNING"}, {"state": "STARTING"}]}}},
        "b.other": {"status": "DEPLOYING", "deployed_app_config": {"name": "b.other", "x": 2}, "deployments": {}},
        "c.gone": {"status": "DELETING", "deployed_app_config": {"name": "c.gone"}, "deployments": {}},
    },
}


def test_parse_state() -> None:
    state = serve.parse_state(DETAILS)
    mine = state.apps["a.mine"]
    assert (mine.status, mine.last_deployed_time_s, mine.ready_replicas) == ("RUNNING", 10.5, 1)
    assert (state.http_host, state.http_port, state.top_level) == ("127.0.0.1", 8123, {"proxy_location": "HeadOnly"})


def test_ready_replicas_of_the_vllm_engine_are_its_llm_servers() -> None:
    llm = {"status": "RUNNING", "deployments": {
        "LLMServer:inv": {"replicas": [{"state": "RUNNING"}, {"state": "RUNNING"}]},
        "OpenAiIngress": {"replicas": [{"state": "RUNNING"}]}}}
    assert serve.parse_state({"applications": {"a.llm": llm}}).apps["a.llm"].ready_replicas == 2


def test_serve_not_running_is_an_empty_state() -> None:
    state = serve.parse_state({"controller_info": {}, "proxies": {}, "applications": {}, "target_capacity": None})
    assert state.apps == {} and state.http_port is None


def test_put_body_keeps_other_live_applications_and_the_proxy_settings() -> None:
    state = serve.parse_state(DETAILS)
    body = serve.build_put_body(state, "a.mine", {"name": "a.mine", "v": 2}, "0.0.0.0", 8000)
    assert body == {"proxy_location": "HeadOnly", "http_options": {"host": "127.0.0.1", "port": 8123},
                    "applications": [{"name": "b.other", "x": 2}, {"name": "a.mine", "v": 2}]}
    removed = serve.build_put_body(state, "a.mine", None, "0.0.0.0", 8000)
    assert removed["applications"] == [{"name": "b.other", "x": 2}]


def test_first_put_on_a_cluster_without_serve_uses_the_operator_defaults() -> None:
    body = serve.build_put_body(serve.ServeState(), "a.mine", {"name": "a.mine"}, "0.0.0.0", 8000)
    assert body == {"http_options": {"host": "0.0.0.0", "port": 8000}, "applications": [{"name": "a.mine"}]}
