"""`make setup` leaves the venv's heavy packages compiled to bytecode. Where PYTHONDONTWRITEBYTECODE is set
(as on our machines and CI) Python never writes a .pyc itself, so without it every process — the operator,
each Ray job driver and Train worker — compiles torch, transformers, peft and ray from source on import:
17.9 s instead of 6.4 s for torch + transformers + peft, most of a training job's fixed start-up."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

# What every training process imports (the driver, each Train worker, the evaluation, the Serve replica).
HEAVY = ["torch", "transformers", "peft", "ray", "mlflow", "accelerate"]


@pytest.mark.parametrize("package", HEAVY)
def test_installed_packages_are_compiled(package: str) -> None:
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.origin is not None, f"{package} is not installed"
    source = Path(spec.origin)
    compiled = Path(importlib.util.cache_from_source(str(source)))
    assert compiled.exists(), (
        f"{package} has no bytecode ({compiled} is missing): run `make setup` (it compiles the venv once), or "
        f"`{sys.executable} -m compileall -q -j 0 {source.parent.parent}`")
    # Every module of the package, not only its __init__: a sample of its own source files.
    modules = sorted(source.parent.rglob("*.py"))[:200]
    missing = [m for m in modules if not Path(importlib.util.cache_from_source(str(m))).exists()]
    assert len(missing) <= len(modules) // 20, f"{len(missing)} of {len(modules)} {package} modules not compiled"
