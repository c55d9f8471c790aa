"""Finding every process a test started, however it got there — shared by the tests that prove nothing
the dev services or `make demo` start outlives them.

Three independent ways, none of them through `tuneloop.devenv.processes` (the code under test): an
environment marker every descendant inherits, the parent links while everything runs, and the sessions
those processes belong to (Ray's agents rewrite their environment with setproctitle; its job drivers start
sessions of their own). Zombies count as gone: PID 1 in these containers does not reap them.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

MARKER_VAR = "TUNELOOP_TEST_MARKER"


@dataclass(frozen=True)
class Proc:
    pid: int
    start_ticks: int
    state: str
    ppid: int
    sid: int
    cmdline: str


def read_proc(pid: int) -> Proc | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, ValueError):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return Proc(pid, int(fields[19]), fields[0], int(fields[1]), int(fields[3]), cmdline.strip()[:160])


def all_procs() -> list[Proc]:
    found = (read_proc(int(entry)) for entry in os.listdir("/proc") if entry.isdigit())
    return [p for p in found if p is not None]


def carries_marker(pid: int, marker: str) -> bool:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"{MARKER_VAR}={marker}".encode() in environ.split(b"\0")


def family(root_pid: int, marker: str, sessions: set[int]) -> dict[tuple[int, int], Proc]:
    """Every live process descended from `root_pid`, carrying `marker`, or in one of `sessions`
    (which grows with the sessions found), keyed by (pid, start time) so a reused pid never counts."""
    table = [p for p in all_procs() if p.state != "Z" and p.pid != os.getpid()]
    own_session = os.getsid(0)
    found = {p.pid: p for p in table if p.pid == root_pid or carries_marker(p.pid, marker)}
    grew = True
    while grew:
        sessions |= {p.sid for p in found.values() if p.sid != own_session}
        more = [p for p in table if p.pid not in found and (p.ppid in found or p.sid in sessions)]
        found.update((p.pid, p) for p in more)
        grew = bool(more)
    return {(p.pid, p.start_ticks): p for p in found.values()}


def still_alive(snapshot: dict[tuple[int, int], Proc], marker: str, sessions: set[int]) -> list[Proc]:
    now = {(p.pid, p.start_ticks): p for p in all_procs() if p.state != "Z"}
    survivors = {key: now[key] for key in snapshot if key in now}
    for p in now.values():
        if p.pid != os.getpid() and (p.sid in sessions or carries_marker(p.pid, marker)):
            survivors[(p.pid, p.start_ticks)] = p
    return list(survivors.values())


def wait_until_gone(snapshot: dict[tuple[int, int], Proc], marker: str, sessions: set[int],
                    timeout_seconds: float) -> list[Proc]:
    """The processes of `snapshot` (or carrying the marker, or in `sessions`) still alive after up to
    `timeout_seconds`; empty when all are gone."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        survivors = still_alive(snapshot, marker, sessions)
        if not survivors or time.monotonic() > deadline:
            return survivors
        time.sleep(0.5)


def kill_all(snapshot: dict[tuple[int, int], Proc], marker: str, sessions: set[int]) -> None:
    """SIGKILL whatever is left, so a failing test leaks nothing."""
    import contextlib
    import signal

    for p in still_alive(snapshot, marker, sessions):
        current = read_proc(p.pid)
        if current is not None and current.start_ticks == p.start_ticks:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p.pid, signal.SIGKILL)
