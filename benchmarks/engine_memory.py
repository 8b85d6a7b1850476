"""Peak memory of `gpu-analysis analyze` on a 1 minute and a 10 minute clip: it must stay flat.

Each analysis runs in its own process (`python -m gpu_analysis analyze`); its peak resident set
comes from the kernel (ru_maxrss of the finished child). Prints both peaks and their ratio.

    .venv/bin/python benchmarks/engine_memory.py [--model kit|standin|builtin|PATH.onnx]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.engine_clips import CACHE, match_clip, repeated_clip, standin_model  # noqa: E402

_CHILD = """
import resource, sys
from gpu_analysis.engine.steps import analyze
analyze(sys.argv[1], sys.argv[2], sys.argv[3], model=sys.argv[4])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_rss_mib(video: Path, calibration: Path, model: str) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-c", _CHILD, str(video), str(calibration), f"{tmp}/out", model],
            cwd=REPO, capture_output=True, text=True, check=True,
        )  # fmt: skip
        elapsed = time.perf_counter() - started
    return int(result.stdout.split()[-1]) / 1024.0, elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="kit", help="kit (cheap), standin, builtin or a path")
    args = parser.parse_args()
    model = args.model
    if model == "kit":
        from tests.engine.onnx_models import kit_colour_heatmap_model

        model = str(kit_colour_heatmap_model(CACHE / "kit_768x432.onnx", input_wh=(768, 432)))
    elif model == "standin":
        model = str(standin_model())

    base, _ = match_clip(1280, 720, 20.0)
    one_min, cal = repeated_clip(base, 3)
    ten_min, _ = repeated_clip(base, 30)
    print(f"model: {model}; clips {one_min.name} (1 min) and {ten_min.name} (10 min), 720p 25 fps")
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    short_mib, short_s = peak_rss_mib(one_min, cal, model)
    long_mib, long_s = peak_rss_mib(ten_min, cal, model)
    print(f"1 min clip : peak RSS {short_mib:7.1f} MiB  ({short_s:.1f} s)")
    print(f"10 min clip: peak RSS {long_mib:7.1f} MiB  ({long_s:.1f} s)")
    print(f"ratio 10 min / 1 min: {long_mib / short_mib:.3f}  (goal < 1.3)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
