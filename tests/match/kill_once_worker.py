"""A GPU worker that is SIGKILLed once half way, the way a spot reclaim ends a pod.

    python -m tests.match.kill_once_worker STEP MARKER

runs the real `gpu_analysis.workers.STEP`; the first attempt kills itself when its progress
passes 50 % and leaves MARKER behind, so the retry runs to completion.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from pathlib import Path


def main(step: str, marker: Path) -> int:
    worker = importlib.import_module(f"gpu_analysis.workers.{step}")
    real_reporter = worker.progress_reporter

    def reporter(pipes, name, **kwargs):
        progress = real_reporter(pipes, name, **kwargs)

        def progress_then_kill(message: str, fraction: float) -> None:
            progress(message, fraction)
            if fraction >= 0.5 and not marker.exists():
                marker.write_text(f"{name} killed at {fraction:.0%}\n")
                os.kill(os.getpid(), signal.SIGKILL)

        return progress_then_kill

    worker.progress_reporter = reporter
    return worker.run_worker(getattr(worker, step))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], Path(sys.argv[2])))
