"""What both GPU workers share: typed parameters in; progress and errors back through Pipes."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from dagster_pipes import PipesContext, open_dagster_pipes

from gpu_analysis.engine import storage
from gpu_analysis.engine.errors import UserError, as_user_error
from gpu_analysis.engine.records import Record, from_plain
from gpu_analysis.processes import process_running

# Bad input (UserError), and what a retry cannot cure (a full disk, a denied path or S3 object),
# ends a worker with this status and one `error:` line in the error file, so the orchestrator
# fails the step at once instead of retrying it.
USER_ERROR_EXIT = 2
ERROR_FILE_ENV = "GPU_ANALYSIS_ERROR_FILE"
# Kubernetes reports this file's content as the container's termination message.
DEFAULT_ERROR_FILE = "/dev/termination-log"
# GpuWorkers names the processes whose death means nobody wants this worker's result any more:
# its step's process and the run's. Both, because Dagster's multiprocess executor runs each step
# in a child of the run process, and that child lives on when the run process is killed.
OWNER_PIDS_ENV = "GPU_ANALYSIS_OWNER_PIDS"
OWNER_GONE_EXIT = 3
OWNER_POLL_S = 1.0
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def run_worker(body: Callable[[PipesContext], None]) -> int:
    """Run one step inside a Pipes session; exit status 0, or USER_ERROR_EXIT on bad input."""
    _exit_with_owners()
    with open_dagster_pipes() as pipes:
        try:
            body(pipes)
        except Exception as exc:
            error = as_user_error(exc)
            if error is None:
                raise  # a bug or a passing fault: the traceback goes back, the step may retry
            line = f"error: {error}".splitlines()[0]
            pipes.log.error(line)
            _write_error_line(line)
            return USER_ERROR_EXIT
    return 0


def _write_error_line(line: str) -> None:
    given = os.environ.get(ERROR_FILE_ENV)
    # The kubelet creates the termination log; never create one outside a pod.
    path = Path(given) if given else Path(DEFAULT_ERROR_FILE)
    if given or path.is_file():
        with contextlib.suppress(OSError):  # the Pipes log line still carries the message
            path.write_text(line + "\n")


def _exit_with_owners() -> None:
    """End this worker within OWNER_POLL_S of the death of a process named in OWNER_PIDS_ENV.

    A watchdog thread polls them (what Dagster's own watch_orphans.py does for its log tails):
    it works on every OS and sees the run process, which is not this worker's parent. On Linux
    the kernel also kills the worker the instant its parent dies (PR_SET_PDEATHSIG), even if
    the interpreter is wedged. Without a name in OWNER_PIDS_ENV (a worker started by hand),
    nothing is watched.
    """
    owner_pids = [int(pid) for pid in os.environ.get(OWNER_PIDS_ENV, "").split()]
    if not owner_pids:
        return
    if os.getppid() in owner_pids:
        _die_with_parent()
    _exit_if_an_owner_is_gone(owner_pids)  # it may have died before the signal was armed
    watchdog = threading.Thread(
        target=_watch_owners, args=(owner_pids,), name="owner-watchdog", daemon=True
    )
    watchdog.start()


def _die_with_parent() -> None:
    # The signal comes when the parent *thread* that started us ends: GpuWorkers starts the
    # worker from the step's own thread, which waits for it.
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):  # the watchdog thread still covers it
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _watch_owners(owner_pids: list[int]) -> None:
    while True:
        time.sleep(OWNER_POLL_S)
        _exit_if_an_owner_is_gone(owner_pids)


def _exit_if_an_owner_is_gone(owner_pids: list[int]) -> None:
    gone = [pid for pid in owner_pids if not process_running(pid)]
    if gone:
        # os.write and os._exit: the main thread may hold any lock, and the step's partial
        # output is cleared by whoever runs the step next.
        with contextlib.suppress(OSError):
            os.write(2, f"worker: process {gone[0]} of its run is gone; stopping\n".encode())
        os._exit(OWNER_GONE_EXIT)


def progress_reporter(
    pipes: Any, step: str, *, every_s: float = 2.0
) -> Callable[[str, float], None]:
    """A `progress(message, fraction)` callback logging through Pipes about every `every_s`."""
    last_at = [-every_s]

    def progress(message: str, fraction: float) -> None:
        now = time.monotonic()
        if fraction >= 1.0 or now - last_at[0] >= every_s:
            pipes.log.info(f"{step}: {message} ({fraction:.0%})")
            last_at[0] = now

    return progress


def params_from_extras(cls: type[Record], extras: dict[str, Any]) -> Record:
    """The step's typed parameters from the Pipes extras; bad ones are the caller's error."""
    try:
        return from_plain(cls, dict(extras))
    except (TypeError, ValueError) as exc:
        raise UserError(f"step parameters: {exc}") from None


def scratch_prefix(target_uri: str) -> str:
    """Where a step writes before moving its output into place (fixed, so a retry clears it)."""
    return target_uri.rstrip("/") + ".partial"


@contextlib.contextmanager
def scratch_output(target_uri: str) -> Iterator[str]:
    """The step's scratch prefix for `target_uri`, emptied first and removed if the step fails.

    A killed attempt may have left part of its output there; a failed one removes its own, so
    a full disk gets its space back and nobody mistakes the part for a result.
    """
    partial_uri = scratch_prefix(target_uri)
    storage.remove_prefix(partial_uri)
    try:
        yield partial_uri
    except BaseException:
        with contextlib.suppress(Exception):  # the step's own error is the one to report
            storage.remove_prefix(partial_uri)
        raise


def plain_metadata(facts: dict[str, Any]) -> dict[str, Any]:
    """The scalar entries of an engine summary, which Pipes sends as typed metadata."""
    return {k: v for k, v in facts.items() if isinstance(v, str | int | float | bool)}
