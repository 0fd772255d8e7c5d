"""Pid files that know their process: the servers `label-studio start` and `up` leave running.

A pid file notes the process's id and its start time as the kernel counts it. A process id is
reused once its process is gone, so a pid file left behind by a crash or a reboot may name an
unrelated process: a process whose start time is not the noted one is not ours, and is never
signalled. Standard library only: Label Studio's own environment imports this too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path


def started_at(pid: int) -> str | None:
    """When process `pid` started, as the kernel counts it; None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return None  # Linux, and the process is gone
        ps = subprocess.run(["ps", "-o", "lstart=", "-p", str(pid)], capture_output=True, text=True, check=False)
        return ps.stdout.strip() or None
    except OSError:
        return None
    # Field 22 of /proc/PID/stat; the command name before it, in parentheses, may hold spaces.
    return stat.rsplit(")", 1)[1].split()[19]


def note(pid_file: Path, pid: int) -> None:
    """Writes the pid file of a process just started."""
    pid_file.write_text(f"{pid} {started_at(pid) or ''}\n")


def noted(pid_file: Path) -> int | None:
    """The process id a pid file names, whatever runs under it now; None without one."""
    try:
        return int(pid_file.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None


def running(pid_file: Path) -> int | None:
    """The process group a pid file names, while the very process it noted leads it (the group of
    a server started in a session of its own); None when it is gone or the id now names another."""
    try:
        pid_text, started = pid_file.read_text().split()
        pid = int(pid_text)
    except (FileNotFoundError, ValueError):
        return None  # no pid file, or one without a start time: nothing to prove the process ours
    if started_at(pid) != started:
        return None
    try:
        os.killpg(pid, 0)
    except (ProcessLookupError, PermissionError):
        return None
    return pid


def stop_noted(pid_file: Path, grace_s: float = 10.0) -> bool:
    """Stops the process group a pid file names, if it is still the one noted, and removes the
    file; whether it ran."""
    pid = running(pid_file)
    if pid is not None:
        stop_group(pid, grace_s)
    pid_file.unlink(missing_ok=True)
    return pid is not None


def stop_group(pid: int, grace_s: float = 10.0) -> None:
    """SIGTERM to the process group, SIGKILL after the grace period."""
    try:
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            _reap(pid)
            os.killpg(pid, 0)
            time.sleep(0.2)
        os.killpg(pid, signal.SIGKILL)
        _reap(pid)
    except ProcessLookupError:
        pass


def _reap(pid: int) -> None:
    """A server this process started stays in its group as a zombie until it is waited for: without
    this, every stop of one would wait out the whole grace period."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
