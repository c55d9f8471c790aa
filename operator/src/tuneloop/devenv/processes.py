"""Starting and stopping the local services (control plane, MLflow, Ray head) so that nothing is left
running: on success, on failure, on Ctrl-C, on SIGTERM or SIGHUP, and (best effort) when the parent
is killed outright. Also the scratch folders they run in.

- `start_group()` starts each service as the leader of its own session and process group
  (`start_new_session=True`): a Ctrl-C in the terminal reaches only the Python parent, which then
  stops the services in order.
- `exit_on_signals()` turns SIGTERM and SIGHUP (a process supervisor, a closed terminal) into
  `StopRequested`, a `KeyboardInterrupt`, like SIGINT, so every `with running()` block unwinds and
  stops its service. Without it SIGTERM ends Python without running a single `finally`. Further
  signals during the unwinding are ignored: a supervisor repeating its SIGTERM must not cut it short.
- `stop_group()` kills the service's whole tree, not only its group: Ray puts each worker in its own
  process group and each job driver in its own session, reachable only through parent links that are
  gone once `ray start` dies — so the tree is read from /proc before the first signal.
- Each leader gets PR_SET_PDEATHSIG=SIGTERM, so a parent killed with SIGKILL still takes the
  service leaders down (they stop their own children). Linux sends that signal when the *thread*
  that forked exits, and tests and the demo start services from short-lived threads, so one
  long-lived thread forks them all.

Linux only, like the binaries these services run.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopRequested(KeyboardInterrupt):
    """A stop signal (SIGINT, SIGTERM or SIGHUP) arrived; raised in the main thread by `exit_on_signals`.

    A `KeyboardInterrupt`, so code that already treats Ctrl-C as "stop" treats SIGTERM alike, and no
    `except Exception` swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# Leaders started by start_group() and not yet stopped: exit_on_signals() stops any of them left over.
_live: set[subprocess.Popen[bytes]] = set()
# The one thread that forks every service (see the module docstring), with its work queue.
_Request = tuple[Callable[[], "subprocess.Popen[bytes]"], "Future[subprocess.Popen[bytes]]"]
_requests: queue.Queue[_Request] = queue.Queue()
_spawner: threading.Thread | None = None
_spawner_lock = threading.Lock()


def _ignore(signum: int, frame: Any) -> None:
    """Later stop signals while the services are being stopped (a Python no-op, not SIG_IGN, which
    children would inherit)."""


def _on_stop_signal(signum: int, frame: Any) -> None:
    for sig in STOP_SIGNALS:
        signal.signal(sig, _ignore)
    raise StopRequested(signum)


@contextlib.contextmanager
def exit_on_signals() -> Iterator[None]:
    """Inside this block SIGINT, SIGTERM and SIGHUP raise `StopRequested`; on leaving it, any service
    started by `start_group` and still running is stopped. Use it outermost, in the main thread:

        with contextlib.suppress(KeyboardInterrupt), processes.exit_on_signals(), running() as svc:
            signal.pause()
    """
    previous = {sig: signal.signal(sig, _on_stop_signal) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        try:
            # A safety net: every `running()` stops its own service, unless the signal came while
            # its leader was being forked. Such a leader is in _live once the queue is done.
            _requests.join()
            for proc in list(_live):
                stop_group(proc, grace_seconds=3)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


@functools.cache
def _parent_death_signal() -> Callable[[], None] | None:
    """A preexec_fn setting PR_SET_PDEATHSIG=SIGTERM, or None where prctl is unavailable."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.restype = ctypes.c_int
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    pr_set_pdeathsig = 1

    def set_in_child() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)

    return set_in_child


def _spawn_forever() -> None:
    while True:
        make, future = _requests.get()
        try:
            if future.set_running_or_notify_cancel():
                try:
                    proc = make()
                except BaseException as e:
                    future.set_exception(e)
                else:
                    _live.add(proc)  # before the caller sees it, which a signal may prevent
                    future.set_result(proc)
        finally:
            _requests.task_done()


def start_group(argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start `argv` as a new session and process group leader, stdout and stderr appended to `log_path`."""
    global _spawner

    def make() -> subprocess.Popen[bytes]:
        with open(log_path, "ab") as log:  # the child holds its own descriptor
            return subprocess.Popen(
                list(argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                start_new_session=True,
                # Only a prctl call runs between fork and exec: safe with other threads around.
                preexec_fn=_parent_death_signal(),
            )

    with _spawner_lock:
        if _spawner is None or not _spawner.is_alive():
            _spawner = threading.Thread(target=_spawn_forever, name="tuneloop-spawner", daemon=True)
            _spawner.start()
    future: Future[subprocess.Popen[bytes]] = Future()
    _requests.put((make, future))
    return future.result()


@dataclass(frozen=True)
class _Process:
    pid: int
    ppid: int
    pgid: int
    sid: int
    start_ticks: int  # with the pid, names one process even after its pid is reused


def _read_process(pid: int) -> _Process | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    # The command name (field 2) is in parentheses and may itself contain spaces or ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return _Process(pid, int(fields[1]), int(fields[2]), int(fields[3]), int(fields[19]))


def _all_processes() -> list[_Process]:
    found = (_read_process(int(entry)) for entry in os.listdir("/proc") if entry.isdigit())
    return [p for p in found if p is not None]


def tree(leader_pid: int) -> list[_Process]:
    """The processes in `leader_pid`'s session or group, and all their descendants."""
    table = _all_processes()
    children: dict[int, list[_Process]] = {}
    for p in table:
        children.setdefault(p.ppid, []).append(p)
    found = {p.pid: p for p in table if leader_pid in (p.pid, p.pgid, p.sid)}
    pending = list(found.values())
    while pending:
        for child in children.get(pending.pop().pid, []):
            if child.pid not in found:
                found[child.pid] = child
                pending.append(child)
    found.pop(os.getpid(), None)
    return list(found.values())


def _kill_if_same(p: _Process) -> None:
    current = _read_process(p.pid)
    if current is not None and current.start_ticks == p.start_ticks:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p.pid, signal.SIGKILL)


def stop_group(proc: subprocess.Popen[bytes], grace_seconds: float) -> None:
    """SIGTERM the process group, wait up to `grace_seconds` for its leader, then SIGKILL the group and
    whatever is left of the tree it had (the services' state is thrown away, so the grace is short)."""
    _live.discard(proc)
    members = tree(proc.pid)  # before any signal: the parent links go when the leader dies
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_seconds)
    # Members may outlive a leader that exited on its own; the group id is the leader's pid.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    for member in [*members, *tree(proc.pid)]:
        _kill_if_same(member)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


@contextlib.contextmanager
def scratch_dir(workdir: Path | None, prefix: str) -> Iterator[Path]:
    """`workdir` as given, or a fresh folder under /tmp (short: Ray's socket paths have a length limit)
    that is removed afterwards."""
    if workdir is not None:
        yield workdir
        return
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
