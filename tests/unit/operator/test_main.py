"""The operator module's kopf wiring: the diff-base storage that it switches off stays unused."""

from __future__ import annotations

import kopf

from tuneloop.operator import main


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
