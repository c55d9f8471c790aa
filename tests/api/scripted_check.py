"""A monitor check function for the operator under test (TUNELOOP_MONITOR_CHECK=tests.api.scripted_check:run_check).

A deployment with a file `<SCRIPT_DIR>/<deployment>.json` gets the answer written there (the test changes
it to script drift, recovery and flapping without waiting for Evidently); every other deployment gets
the real check (`tuneloop.monitoring.runner.run_check`). Each scripted call is appended to
`<deployment>.calls`, so a test can count the checks the operator ran."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

SCRIPT_DIR = "TUNELOOP_TEST_MONITOR_SCRIPT_DIR"


def answer_path(folder: Path, deployment: str) -> Path:
    return folder / f"{deployment}.json"


def run_check(request: dict[str, Any]) -> dict[str, Any]:
    path = answer_path(Path(os.environ[SCRIPT_DIR]), request["deployment"])
    if not path.exists():
        from tuneloop.monitoring import runner

        return runner.run_check(request)
    with open(path.with_suffix(".calls"), "a") as calls:
        calls.write(json.dumps(request) + "\n")
    return json.loads(path.read_text())
