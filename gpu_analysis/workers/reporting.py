"""What both GPU workers share: typed parameters in; progress and errors back through Pipes."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dagster_pipes import PipesContext, open_dagster_pipes

from gpu_analysis.engine.errors import UserError
from gpu_analysis.engine.records import Record, from_plain

# Bad input (UserError) ends a worker with this status and one `error:` line in the error file,
# so the orchestrator fails the step at once instead of retrying it.
USER_ERROR_EXIT = 2
ERROR_FILE_ENV = "GPU_ANALYSIS_ERROR_FILE"
# Kubernetes reports this file's content as the container's termination message.
DEFAULT_ERROR_FILE = "/dev/termination-log"


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


def plain_metadata(facts: dict[str, Any]) -> dict[str, Any]:
    """The scalar entries of an engine summary, which Pipes sends as typed metadata."""
    return {k: v for k, v in facts.items() if isinstance(v, str | int | float | bool)}
