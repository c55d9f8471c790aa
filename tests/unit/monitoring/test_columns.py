"""The drift columns a ModelDeployment may name are exactly the ones the monitors compute, and the
API's default is the monitors' default."""

from __future__ import annotations

import typing

from tuneloop.api import deployment
from tuneloop.monitoring import columns


def test_the_api_offers_exactly_the_columns_the_monitors_compute() -> None:
    assert set(typing.get_args(deployment.DriftColumn)) == set(columns.CATALOGUE)


def test_the_api_default_is_the_monitors_default() -> None:
    assert tuple(deployment.DriftSpec().columns) == columns.DEFAULT_COLUMNS


def test_every_column_has_an_explicit_method_whose_score_direction_is_known() -> None:
    for column in columns.CATALOGUE.values():
        assert column.score_kind in {"p_value", "distance"}, column
        assert 0 < column.threshold < 1


def test_schema_inference_keeps_keys_every_answer_has_with_their_types() -> None:
    assert columns.infer_schema(['{"a": "x", "b": 1}', '{"a": "y", "b": 2.5, "c": 1}', "not json", None]) == {
        "a": str, "b": object}
    assert columns.infer_schema(["plain", "[1, 2]"]) is None
