"""Architecture rules that must not rot: the decide/act layering (import-linter contracts in
pyproject.toml) and the `operator` stdlib trap."""

from __future__ import annotations

import importlib
import operator
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_import_linter_contracts_hold():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe, "import-linter is not installed: run `make setup`"
    proc = subprocess.run([exe], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_operator_folder_is_not_a_package_and_stdlib_operator_is_intact():
    assert not (REPO_ROOT / "operator" / "__init__.py").exists()
    assert hasattr(operator, "itemgetter"), "the stdlib operator module is shadowed"
    assert importlib.import_module("tuneloop.operator").__name__ == "tuneloop.operator"


def test_tuneloop_is_one_namespace_across_the_source_folders():
    import tuneloop

    roots = {Path(p).resolve() for p in tuneloop.__path__}
    assert {REPO_ROOT / "operator/src/tuneloop", REPO_ROOT / "jobs/src/tuneloop"} <= roots
