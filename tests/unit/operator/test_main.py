"""The operator module's kopf wiring: the diff-base storage that it switches off stays unused, and
start-up says what the configuration lacks."""

from __future__ import annotations

import logging

import kopf

from tuneloop.operator import main
from tuneloop.operator.metrics import Metrics
from tuneloop.operator.settings import load_settings


def test_no_handler_needs_kopf_change_detection() -> None:
    # NoDiffBase makes kopf see no change in any event: an on.create/update/resume/field handler
    # would silently never run. Only deletion (detected from deletionTimestamp) may be handled.
    changing = kopf.get_default_registry()._changing.get_all_handlers()
    assert {h.id for h in changing} == {"cleanup"}
    assert all(h.reason == kopf.Reason.DELETE for h in changing)


def test_configure_kopf_stores_no_diff_base() -> None:
    settings = kopf.OperatorSettings()
    main.configure_kopf(settings, "tuneloop")
    assert isinstance(settings.persistence.diffbase_storage, main.NoDiffBase)
    body = kopf.Body({"metadata": {"name": "a", "annotations": {"x": "1"}}, "spec": {"a": 1}})
    assert settings.persistence.diffbase_storage.fetch(body=body) == {}
    assert settings.persistence.diffbase_storage.build(body=body) == {}


def test_config_problems_are_said_once_at_start_up_as_a_log_line_and_a_metric(caplog) -> None:
    metrics = Metrics.disabled()
    logger = logging.getLogger("tuneloop.test.startup")
    with caplog.at_level(logging.WARNING, logger=logger.name):
        main.report_config_problems(load_settings({}), metrics, logger)
    [record] = caplog.records
    assert "TUNELOOP_MLFLOW_TRACKING_URI" in record.getMessage() and "RegistryNotConfigured" in record.getMessage()
    sample = {"setting": "TUNELOOP_MLFLOW_TRACKING_URI"}
    assert metrics.registry.get_sample_value("tuneloop_operator_config_problem", sample) == 1
    main.report_config_problems(load_settings({"TUNELOOP_MLFLOW_TRACKING_URI": "http://m"}), metrics, logger)
    assert metrics.registry.get_sample_value("tuneloop_operator_config_problem", sample) == 0
