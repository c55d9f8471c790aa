from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama (2 layers, hidden 32) with its tokenizer, built from a config on CPU."""
    from tuneloop.devenv import tinymodel

    return tinymodel.build_model(tmp_path_factory.mktemp("tiny-llama"), hidden_size=32, layers=2, heads=2)
