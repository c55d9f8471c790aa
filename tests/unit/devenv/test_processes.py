"""The stop machinery the local services share, on plain `sleep` processes (seconds, no services):
stop_group reaches processes that left the group and the session, and exit_on_signals turns SIGTERM
and SIGHUP into an orderly exit that stops what was started, even with no `running()` around it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from tuneloop.devenv import processes


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_gone(pids: list[int], timeout_seconds: float = 10) -> list[int]:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


def test_stop_group_kills_descendants_in_their_own_group_and_session(tmp_path):
    """Like a Ray worker (own group) and a Ray job driver (own session) under `ray start`."""
    pids = tmp_path / "pids"
    # set -m: each background job gets a group of its own; the second also starts a session.
    script = (
        f"set -m; sleep 600 & echo $! >> {pids}; "
        f"setsid -w sh -c 'echo $$ >> {pids}; exec sleep 600' & exec sleep 600"
    )
    proc = processes.start_group(["bash", "-c", script], tmp_path / "log")
    deadline = time.monotonic() + 10
    while (not pids.exists() or len(pids.read_text().split()) < 2) and time.monotonic() < deadline:
        time.sleep(0.05)
    children = [int(p) for p in pids.read_text().split()]
    assert all(os.getpgid(p) != proc.pid for p in children), "the test children should have left the group"
    assert os.getsid(children[1]) != proc.pid, "the second should have left the session"

    processes.stop_group(proc, grace_seconds=1)

    assert wait_gone([proc.pid, *children]) == []


def test_stop_group_never_kills_a_reused_pid(tmp_path):
    proc = processes.start_group(["sleep", "600"], tmp_path / "log")
    (member,) = [p for p in processes.tree(proc.pid) if p.pid == proc.pid]
    processes.stop_group(proc, grace_seconds=1)
    # The same pid with another start time is another process: _kill_if_same must leave it alone.
    other = subprocess.Popen(["sleep", "600"])
    try:
        processes._kill_if_same(processes._Process(other.pid, 0, 0, 0, member.start_ticks - 1))
        assert alive(other.pid)
    finally:
        other.kill()
        other.wait()


PARENT = textwrap.dedent(
    """
    import contextlib, signal, sys
    from pathlib import Path
    from tuneloop.devenv import processes

    with contextlib.suppress(KeyboardInterrupt), processes.exit_on_signals():
        proc = processes.start_group(["sleep", "600"], Path(sys.argv[1]))
        print(proc.pid, flush=True)
        signal.pause()
    print("stopped", flush=True)
    """
)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda s: s.name)
def test_a_stop_signal_unwinds_and_stops_what_was_started(tmp_path, signum):
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(tmp_path / "log")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert alive(child)
        parent.send_signal(signum)
        out, _ = parent.communicate(timeout=20)
        assert parent.returncode == 0
        assert out.strip() == "stopped"
        assert wait_gone([child]) == []
    finally:
        parent.kill()
        parent.wait()


def test_the_previous_handlers_come_back():
    before = {sig: signal.getsignal(sig) for sig in processes.STOP_SIGNALS}
    with processes.exit_on_signals():
        assert signal.getsignal(signal.SIGTERM) is not before[signal.SIGTERM]
    assert {sig: signal.getsignal(sig) for sig in processes.STOP_SIGNALS} == before


def test_a_service_started_from_a_short_lived_thread_outlives_that_thread(tmp_path):
    """Linux sends the parent-death signal when the forking *thread* exits; tests and the demo start
    services from threads that end right after."""
    started: list[subprocess.Popen[bytes]] = []
    thread = threading.Thread(target=lambda: started.append(processes.start_group(["sleep", "600"], tmp_path / "log")))
    thread.start()
    thread.join()
    try:
        time.sleep(0.5)
        assert alive(started[0].pid)
    finally:
        processes.stop_group(started[0], grace_seconds=1)


KILLED_PARENT = textwrap.dedent(
    """
    import signal, sys, threading
    from pathlib import Path
    from tuneloop.devenv import processes

    def start():
        print(processes.start_group(["sleep", "600"], Path(sys.argv[1])).pid, flush=True)

    for _ in range(2):
        threading.Thread(target=start).start()
    signal.pause()
    """
)


def test_services_go_with_a_parent_killed_outright(tmp_path):
    parent = subprocess.Popen(
        [sys.executable, "-c", KILLED_PARENT, str(tmp_path / "log")], stdout=subprocess.PIPE, text=True
    )
    children: list[int] = []
    try:
        assert parent.stdout is not None
        children = [int(parent.stdout.readline()) for _ in range(2)]
        assert all(alive(c) for c in children)
        parent.kill()
        parent.wait()
        assert wait_gone(children) == []
    finally:
        parent.kill()
        parent.wait()
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
