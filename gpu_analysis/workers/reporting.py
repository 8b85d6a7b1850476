"""What both GPU workers share: progress lines sent back through Pipes, local copies of inputs."""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from dagster_pipes import PipesContext, open_dagster_pipes

from gpu_analysis import storage
from gpu_analysis.errors import UserError

# Bad input (UserError) ends a worker with this status and one `error:` line in the error file,
# so the orchestrator fails the step at once instead of retrying it.
USER_ERROR_EXIT = 2
ERROR_FILE_ENV = "GPU_ANALYSIS_ERROR_FILE"
# Kubernetes reports this file's content as the container's termination message.
DEFAULT_ERROR_FILE = "/dev/termination-log"

# Fault injection for the retry test: the named worker step SIGKILLs itself once, half way, the
# way a spot reclaim ends a pod; the marker file makes the retry run to completion.
KILL_ONCE_ENV = "GPU_ANALYSIS_FAULT_KILL_ONCE"


def run_worker(body: Callable[[PipesContext], None]) -> int:
    """Run one step inside a Pipes session; exit status 0, or USER_ERROR_EXIT on bad input."""
    with open_dagster_pipes() as pipes:
        try:
            body(pipes)
        except UserError as exc:
            line = f"error: {exc}".splitlines()[0]
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


def progress_reporter(
    pipes: Any, step: str, *, every_s: float = 2.0
) -> Callable[[str, float], None]:
    """A `progress(message, fraction)` callback logging through Pipes about every `every_s`."""
    last_at = [-every_s]
    kill_marker = _kill_marker(step)

    def progress(message: str, fraction: float) -> None:
        now = time.monotonic()
        if fraction >= 1.0 or now - last_at[0] >= every_s:
            pipes.log.info(f"{step}: {message} ({fraction:.0%})")
            last_at[0] = now
        if kill_marker is not None and fraction >= 0.5 and not kill_marker.exists():
            kill_marker.write_text(f"{step} killed at {fraction:.0%}\n")
            os.kill(os.getpid(), signal.SIGKILL)

    return progress


def _kill_marker(step: str) -> Path | None:
    setting = os.environ.get(KILL_ONCE_ENV, "")
    name, _, marker = setting.partition(":")
    return Path(marker) if name == step and marker else None


@contextlib.contextmanager
def local_input(uri: str | None) -> Iterator[str | None]:
    """A local path for a small input (calibration) that the engine reads from disk; an
    s3:// object is copied to a private scratch folder, removed again on the way out."""
    if uri is None or not storage.is_s3(uri):
        yield uri
        return
    with tempfile.TemporaryDirectory(prefix="gpu-analysis-input-") as scratch:
        yield str(storage.fetch(uri, Path(scratch) / Path(storage.split_s3(uri)[1]).name))


def scratch_prefix(target_uri: str) -> str:
    """Where a step writes before moving its output into place (fixed, so a retry clears it)."""
    return target_uri.rstrip("/") + ".partial"


def plain_metadata(facts: dict[str, Any]) -> dict[str, Any]:
    """The scalar entries of an engine summary, which Pipes sends as typed metadata."""
    return {k: v for k, v in facts.items() if isinstance(v, str | int | float | bool)}
