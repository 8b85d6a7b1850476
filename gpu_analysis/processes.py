"""Whether a local process still runs: the test the GPU workers and the local run launcher share."""

from __future__ import annotations

import os
from pathlib import Path

_PROC = Path("/proc")
# /proc/<pid>/stat gives a start time in clock ticks after boot, and boot time in whole seconds:
# a start time read back from it can be this much late.
_START_TIME_SLACK_S = 2.0


def process_running(pid: int, *, started_by_epoch_s: float | None = None) -> bool:
    """True while process `pid` runs. A zombie (killed, not yet reaped by its parent) is dead.

    With `started_by_epoch_s`, a process that started later than that is another process that
    was given a reused pid, so it does not count (checked on Linux; elsewhere only the pid).
    """
    if pid <= 0:
        return False
    if not _PROC.joinpath("self", "stat").is_file():
        return _pid_exists(pid)
    try:
        after_name = _PROC.joinpath(str(pid), "stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state, start_ticks = after_name[0], int(after_name[19])  # fields 3 and 22 of proc(5)
    if state in ("Z", "X"):
        return False
    if started_by_epoch_s is not None:
        started_epoch_s = _boot_epoch_s() + start_ticks / os.sysconf("SC_CLK_TCK")
        if started_epoch_s > started_by_epoch_s + _START_TIME_SLACK_S:
            return False
    return True


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True


def _boot_epoch_s() -> float:
    for line in _PROC.joinpath("stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise RuntimeError("/proc/stat has no btime line; cannot tell when a process started")
