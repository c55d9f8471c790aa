"""Operator settings from TUNELOOP_* variables: defaults, parsing, errors naming the variable."""

from __future__ import annotations

import pytest

from tuneloop.operator.settings import SettingsError, config_problems, load_settings


def test_defaults_and_overrides() -> None:
    s = load_settings({"TUNELOOP_POLL_SECONDS": "1.5", "TUNELOOP_GPU_PRICES_USD_PER_HOUR": '{"A100": 3}',
                       "TUNELOOP_UNRELATED": "ignored", "TUNELOOP_METRICS_PORT": ""})
    assert s.poll_seconds == 1.5 and s.gpu_prices_usd_per_hour == {"A100": 3.0}
    assert s.metrics_port == 8080 and s.check_file_uris == "auto"


@pytest.mark.parametrize(("env", "variable"), [
    ({"TUNELOOP_POLL_SECONDS": "soon"}, "TUNELOOP_POLL_SECONDS"),
    ({"TUNELOOP_POLL_SECONDS": "0"}, "TUNELOOP_POLL_SECONDS"),
    ({"TUNELOOP_GPU_PRICES_USD_PER_HOUR": "{bad"}, "TUNELOOP_GPU_PRICES_USD_PER_HOUR"),
    ({"TUNELOOP_GPU_PRICES_USD_PER_HOUR": '{"A100": -1}'}, "TUNELOOP_GPU_PRICES_USD_PER_HOUR"),
    ({"TUNELOOP_CHECK_FILE_URIS": "sometimes"}, "TUNELOOP_CHECK_FILE_URIS"),
])
def test_bad_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        load_settings(env)


def test_a_missing_tracking_uri_is_a_config_problem_naming_the_variable_and_the_fix() -> None:
    [problem] = config_problems(load_settings({}))
    assert problem.setting == "TUNELOOP_MLFLOW_TRACKING_URI"
    assert "RegistryNotConfigured" in problem.message and "restart" in problem.message
    assert config_problems(load_settings({"TUNELOOP_MLFLOW_TRACKING_URI": "http://mlflow:5000"})) == []
