"""Subprocesses that lead their own session, so a test can end everything they started.

``start_group`` starts a command with ``start_new_session=True``: it leads a new session and process
group whose id is its pid, and whatever it starts (distilabel workers, vLLM's engine core, Ray) stays
in that group or session unless it leaves on purpose. The other helpers signal, wait for or reap that
group (``kill_group``, ``group_alive``, ``wait_group_gone``, ``stop_group``, ``communicate_or_kill``),
or every process of the session, found through Linux's /proc (``session_pids``, ``end_session``:
for Ray, whose processes may form groups of their own). Nothing else on the machine is touched.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

POLL_S = 0.5


def start_group(argv: Sequence[str | os.PathLike[str]], **popen_kwargs: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen(argv, **popen_kwargs)`` leading a new session (and process group) of its own."""
    if "start_new_session" in popen_kwargs or "process_group" in popen_kwargs:
        raise TypeError("start_group sets the session itself")
    return subprocess.Popen(list(argv), start_new_session=True, **popen_kwargs)


def group_alive(pgid: int) -> bool:
    """Whether any process is left in process group ``pgid`` (a zombie not yet reaped counts)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - a reused id owned by someone else
        return False
    return True


def kill_group(proc: subprocess.Popen[Any], sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to the whole process group ``proc`` leads (from ``start_group``); a group already
    gone is not an error."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def wait_group_gone(pgid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for process group ``pgid`` to empty; whether it did."""
    deadline = time.monotonic() + timeout
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    return not group_alive(pgid)


def stop_group(proc: subprocess.Popen[Any], timeout: float = 30, grace: float = 10) -> None:
    """SIGTERM the group ``proc`` leads, wait up to ``timeout`` s for ``proc`` and then up to ``grace`` s
    for the rest of its group (child processes shut down after their parent), SIGKILL whatever is left,
    and reap ``proc``."""
    pgid = proc.pid  # start_group: the process leads its own group
    if group_alive(pgid):
        kill_group(proc, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout)
    if not wait_group_gone(pgid, grace):
        kill_group(proc, signal.SIGKILL)
    proc.wait(timeout=timeout)


def communicate_or_kill(proc: subprocess.Popen[Any], timeout: float) -> tuple[Any, Any, bool]:
    """``proc.communicate(timeout=timeout)``; past the timeout, SIGKILL its whole group and collect what
    it wrote. Returns (stdout, stderr, timed_out)."""
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        return stdout, stderr, True
    return stdout, stderr, False


def session_pids(sid: int) -> list[int]:
    """Live (not zombie) processes in session ``sid``, from Linux's /proc; elsewhere none are found."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            state, _ppid, _pgrp, session = stat.read_text().rsplit(")", 1)[1].split()[:4]
            if int(session) == sid and state not in {"Z", "X"}:
                pids.append(int(stat.parent.name))
    return pids


def end_session(sid: int, grace: float) -> list[int]:
    """Wait up to ``grace`` s for session ``sid`` to empty; SIGKILL and return what is still in it."""
    deadline = time.monotonic() + grace
    while (left := session_pids(sid)) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return left
