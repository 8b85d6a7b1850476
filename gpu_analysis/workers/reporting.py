"""What both GPU workers share: progress lines sent back through Pipes, local copies of inputs."""

from __future__ import annotations

import os
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpu_analysis.workers import objects

# Fault injection for the retry test: the named worker step SIGKILLs itself once, half way, the
# way a spot reclaim ends a pod; the marker file makes the retry run to completion.
KILL_ONCE_ENV = "GPU_ANALYSIS_FAULT_KILL_ONCE"


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


def local_input(uri: str | None) -> str | None:
    """A local path for a small input (calibration) that the engine reads from disk."""
    if uri is None or not objects.is_s3(uri):
        return uri
    scratch = Path(tempfile.mkdtemp(prefix="gpu-analysis-input-"))
    return str(objects.fetch(uri, scratch / Path(objects.split_s3(uri)[1]).name))


def scratch_prefix(target_uri: str) -> str:
    """Where a step writes before moving its output into place (fixed, so a retry clears it)."""
    return target_uri.rstrip("/") + ".partial"
