"""CPU speed of a heat-map model at its own input size, batch 8 against batch 1, in one run.

Measures the engine's own ONNX Runtime session (`inference.create_session`) and a one-thread
session on the same input, and prints frames/s, the batch-8/batch-1 ratio and the margin over
the rate the engine needs for its goal (real-time factor 4 on 25 fps video sampled at 5 fps:
20 model frames/s), with the load average before and after.

    .venv/bin/python benchmarks/model_speed.py [--model gpu_analysis/engine/models/builtin.onnx]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


NEEDED_FRAMES_PER_S = 4 * 5.0  # real-time factor 4 at --sample-fps 5


def frames_per_s(session, shape: tuple[int, int, int, int], seconds: float) -> float:
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    session.run(None, {"images": x})  # warm-up: allocations, kernel choice
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds or runs < 3:
        session.run(None, {"images": x})
        runs += 1
    return runs * shape[0] / (time.perf_counter() - started)


def main() -> None:
    import onnxruntime as ort

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", type=Path, default=REPO / "gpu_analysis/engine/models/builtin.onnx"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="per measurement")
    args = parser.parse_args()

    # The engine's own session (its threading and spinning settings), and a one-thread one.
    from gpu_analysis.engine.inference import create_session

    engine_session, provider = create_session(args.model, "cpu")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    single = ort.InferenceSession(str(args.model), options, providers=["CPUExecutionProvider"])
    _, _, h, w = engine_session.get_inputs()[0].shape
    load_before = os.getloadavg()[0]
    result = {"model": args.model.name, "input_wh": [w, h], "provider": provider}
    for label, session in (("engine_session", engine_session), ("one_thread", single)):
        batch1 = frames_per_s(session, (1, 3, h, w), args.seconds)
        batch8 = frames_per_s(session, (8, 3, h, w), args.seconds)
        result[label] = {
            "frames_per_s_batch1": round(batch1, 1),
            "frames_per_s_batch8": round(batch8, 1),
            "batch8_over_batch1": round(batch8 / batch1, 2),
            "batch8_over_needed": round(batch8 / NEEDED_FRAMES_PER_S, 2),
        }
    result["needed_frames_per_s"] = NEEDED_FRAMES_PER_S
    result["cpus"] = os.cpu_count()
    result["load_average_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
