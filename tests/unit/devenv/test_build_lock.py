"""The hack/ build scripts take a lock per cached binary: a second caller started while a build runs
waits for it and reuses its binary instead of building into the same temporary file.

Each script runs for real with an empty cache; `go`, `apt-get` and `dpkg-deb` on its PATH are stand-ins
that record being called and fail, so a test fails if the script starts building at all."""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import time
from pathlib import Path

import pytest

HACK = Path(__file__).resolve().parents[3] / "hack"
ENV = {"KUBE_VERSION": "1.33.13", "HELM_VERSION": "9.9.9", "HELM_KUBE_VERSION": "1.33.0",
       "PROMETHEUS_DEB_VERSION": "0.0-test"}


def argocd_key() -> str:
    src = HACK / "argocd-health"
    files = [src / "go.mod", src / "go.sum", *sorted(src.glob("*.go"))]  # bash sorts its glob the same way
    return hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()[:16]


def cached_binary(script: str, cache: Path) -> Path:
    return {
        "build-kube-apiserver.sh": cache / "kube-apiserver" / "v1.33.13" / "kube-apiserver",
        "build-helm.sh": cache / "helm" / "v9.9.9-k1.33" / "helm",
        "build-argocd-health.sh": cache / "argocd-health" / argocd_key() / "argocd-health",
        "get-promtool.sh": cache / "promtool" / "0.0-test" / "promtool",
    }[script]


@pytest.mark.parametrize("script", ["build-kube-apiserver.sh", "build-helm.sh", "build-argocd-health.sh",
                                    "get-promtool.sh"])
def test_a_second_caller_waits_for_the_build_and_reuses_it(script: str, tmp_path: Path) -> None:
    fakes, marker = tmp_path / "bin", tmp_path / "built"
    fakes.mkdir()
    for tool in ("go", "apt-get", "dpkg-deb"):
        (fakes / tool).write_text(f"#!/bin/sh\necho {tool} >> '{marker}'\nexit 1\n")
        (fakes / tool).chmod(0o755)
    out = cached_binary(script, tmp_path / "cache")
    out.parent.mkdir(parents=True)
    env = {**os.environ, **ENV, "TUNELOOP_CACHE": str(tmp_path / "cache"),
           "PATH": f"{fakes}:{os.environ['PATH']}"}
    with open(f"{out}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a build in progress
        proc = subprocess.Popen(["bash", str(HACK / script)], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)
        assert proc.poll() is None, f"{script} did not wait for the running build: {proc.communicate()}"
        out.write_text("#!/bin/sh\n")
        out.chmod(0o755)  # the first build finishes ...
        fcntl.flock(lock, fcntl.LOCK_UN)  # ... and lets go
        stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert stdout.strip() == str(out)
    assert not marker.exists(), f"{script} started a build of its own: {marker.read_text()}"
