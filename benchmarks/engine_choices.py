"""The engine's design choices, each measured against its alternative in one run.

    .venv/bin/python benchmarks/engine_choices.py [--model standin|builtin|PATH.onnx]

On the 20 s 1080p benchmark clip: decoding (read() every frame vs grab() with retrieve() for
sampled frames; FFmpeg decoder threads), letterboxing (INTER_AREA vs 2x2 averaging + bilinear),
the model's batch size, and whole `analyze` runs with ONNX Runtime's pool spinning or sleeping
and with 1 or all cores. Variants alternate, so a change in machine load hits both sides.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import onnxruntime as ort  # noqa: E402

from benchmarks.engine_clips import match_clip, standin_model  # noqa: E402
from gpu_analysis.engine import batching, inference, steps  # noqa: E402


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def best_of(fn, runs: int = 3) -> float:
    return min(timed(fn) for _ in range(runs))


def decode(video: Path, every: int, retrieve_only_sampled: bool, threads: int | None) -> None:
    params = [] if threads is None else [cv2.CAP_PROP_N_THREADS, threads]
    cap = cv2.VideoCapture(str(video), cv2.CAP_FFMPEG, params)
    index = 0
    while True:
        if retrieve_only_sampled:
            if not cap.grab():
                break
            if index % every == 0:
                cap.retrieve()
        elif not cap.read()[0]:
            break
        index += 1
    cap.release()


def analyze_with(video: Path, calibration: Path, model: str, spinning: bool, threads: int) -> float:
    original = ort.InferenceSession

    def session(path, options, providers):
        options.add_session_config_entry(
            "session.intra_op.allow_spinning", "1" if spinning else "0"
        )
        options.intra_op_num_threads = threads
        return original(path, options, providers=providers)

    ort.InferenceSession = session
    try:
        with tempfile.TemporaryDirectory() as tmp:
            return timed(lambda: steps.analyze(video, calibration, Path(tmp) / "out", model=model))
    finally:
        ort.InferenceSession = original


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="standin")
    args = parser.parse_args()
    model = str(standin_model()) if args.model == "standin" else args.model
    ort.set_default_logger_severity(3)  # overriding the spinning setting is meant here
    video, calibration = match_clip(1920, 1080, 20.0)
    frames = 500
    print(
        f"clip {video.name}, model {model}, cores {os.cpu_count()}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )

    print("decode, 500 frames, sampling every 5th (best of 2):")
    for label, kwargs in (
        ("read() every frame", {"retrieve_only_sampled": False, "threads": None}),
        ("grab() + retrieve() sampled", {"retrieve_only_sampled": True, "threads": None}),
        ("  same, 1 decoder thread", {"retrieve_only_sampled": True, "threads": 1}),
        ("  same, 2 decoder threads", {"retrieve_only_sampled": True, "threads": 2}),
    ):
        s = best_of(lambda kw=kwargs: decode(video, 5, **kw), runs=2)
        print(f"  {label:32s} {s:6.2f} s  {frames / s:6.1f} frames/s")

    cap = cv2.VideoCapture(str(video))
    frame = cap.read()[1]
    cap.release()
    geometry = batching.letterbox_geometry((1920, 1080), (768, 432))
    area = best_of(
        lambda: [cv2.resize(frame, (768, 432), interpolation=cv2.INTER_AREA) for _ in range(20)]
    )
    ours = best_of(lambda: [batching.letterbox(frame, geometry) for _ in range(20)])
    print("letterbox a 1080p frame to 768x432 (best of 3 x 20):")
    print(f"  cv2.INTER_AREA in one go        {1000 * area / 20:6.1f} ms")
    print(f"  2x2 averaging + bilinear (ours) {1000 * ours / 20:6.1f} ms   ({area / ours:.1f}x)")

    detector = inference.OnnxDetector(model)
    w, h = detector.input_wh
    print("model alone, 32 frames, ms a frame (best of 2):")
    for batch in (1, 4, 8, 16):
        tensor = np.full((batch, 3, h, w), 0.45, np.float32)
        detector.session.run(None, {detector.input_name: tensor})
        s = best_of(lambda t=tensor, b=batch: [
            detector.session.run(None, {detector.input_name: t}) for _ in range(32 // b)
        ], runs=2)  # fmt: skip
        print(f"  batch {batch:2d}: {1000 * s / 32:6.1f} ms")

    print("analyze, whole clip (3 rounds, variants alternating; mean):")
    cores = os.cpu_count() or 1
    variants = {
        f"pool spinning, {cores} threads": (True, cores),
        f"pool sleeping, {cores} threads (ours)": (False, cores),
        "pool sleeping, 1 thread": (False, 1),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(3):
        for name, (spinning, threads) in variants.items():
            times[name].append(analyze_with(video, calibration, model, spinning, threads))
    for name, values in times.items():
        print(f"  {name:36s} {np.mean(values):6.2f} s  ({', '.join(f'{v:.2f}' for v in values)})")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
