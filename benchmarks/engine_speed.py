"""Engine speed on a 1080p 25 fps H.264 match clip at --sample-fps 5, measured side by side.

Prints, from one run on the same clip: the decode floor (every frame decoded, no analysis),
the engine (`steps.analyze`: grab/retrieve sampling, batches, decode overlapped with inference,
maps and report), and the naive loop (read() every frame, resize, one session.run per sampled
frame, no batching, no overlap), with the real-time factors and the ratios between them.

    .venv/bin/python benchmarks/engine_speed.py [--model builtin|standin|PATH.onnx] [--seconds 20]
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

from benchmarks.engine_clips import match_clip, repeated_clip, standin_model  # noqa: E402
from gpu_analysis.engine import steps  # noqa: E402
from gpu_analysis.engine.batching import letterbox, letterbox_geometry  # noqa: E402
from gpu_analysis.engine.inference import BUILTIN_MODEL, OnnxDetector, decode_heatmap  # noqa: E402
from gpu_analysis.engine.records import DEFAULT_SAMPLE_FPS  # noqa: E402
from gpu_analysis.engine.video import DecodeStats, iter_sampled_frames, probe  # noqa: E402


def decode_floor(video: Path, sample_fps: float) -> tuple[float, int]:
    """Every frame decoded, the sampled ones converted to BGR: what any analysis must pay."""
    facts = probe(video)
    stats = DecodeStats()
    started = time.perf_counter()
    for _ in iter_sampled_frames(facts, sample_fps, stats):
        pass
    return time.perf_counter() - started, stats.frames_decoded


def model_alone(model: str, frames: int, batch_size: int = 8) -> float:
    """The model on grey batches of 8, fed to ONNX Runtime as the engine feeds it (one frame at
    a time on CPU), on every core, nothing else running: the inference floor."""
    detector = OnnxDetector(model, device="auto")
    w, h = detector.input_wh
    batch = np.full((batch_size, 3, h, w), 114 / 255, np.float32)
    detector._run(batch)  # warm-up: the first run plans memory
    started = time.perf_counter()
    for _ in range(0, frames, batch_size):
        detector._run(batch)
    return time.perf_counter() - started


def naive_loop(video: Path, model: str, sample_fps: float) -> tuple[float, int]:
    """The loop a first version would write: read() every frame, one session.run per sample."""
    import cv2
    import onnxruntime as ort

    detector = OnnxDetector(model, device="cpu")  # only for the input size and threshold
    # A session as a first version makes it: default options.
    session = ort.InferenceSession(str(detector.model_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    started = time.perf_counter()
    cap = cv2.VideoCapture(str(video))
    fps = cap.get(cv2.CAP_PROP_FPS)
    step = round(fps / sample_fps)
    geometry = None
    index = detections = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if index % step == 0:
            if geometry is None:
                geometry = letterbox_geometry((frame.shape[1], frame.shape[0]), detector.input_wh)
            image = letterbox(frame, geometry)
            tensor = image.transpose(2, 0, 1)[None].astype(np.float32) / 255.0
            heat = session.run(None, {name: tensor})[0][0, 0]
            detections += len(decode_heatmap(heat, detector.threshold)[1])
        index += 1
    cap.release()
    return time.perf_counter() - started, detections


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="auto", help="builtin, standin, a path, or auto")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the rendered clip")
    parser.add_argument("--repeat", type=int, default=3, help="play the clip this many times")
    parser.add_argument("--sample-fps", type=float, default=DEFAULT_SAMPLE_FPS)
    args = parser.parse_args()

    video, calibration = match_clip(1920, 1080, args.seconds)
    if args.repeat > 1:
        video, calibration = repeated_clip(video, args.repeat)
    model = args.model
    if model == "auto":
        model = "builtin" if BUILTIN_MODEL.is_file() else "standin"
    if model == "standin":
        model = str(standin_model())
    facts = probe(video)
    load = os.getloadavg()
    print(
        f"clip: {video.name} {facts.width}x{facts.height} {facts.fps:g} fps, {facts.duration_s:g} s"
    )
    print(
        f"model: {model}; sample fps {args.sample_fps:g}; cores {os.cpu_count()}; "
        f"load average before {load[0]:.1f}"
    )

    floor_s, decoded = decode_floor(video, args.sample_fps)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        report = steps.analyze(
            video, calibration, Path(tmp) / "out", sample_fps=args.sample_fps, model=model
        )
        engine_s = time.perf_counter() - started
    naive_s, _ = naive_loop(video, model, args.sample_fps)
    model_s = model_alone(model, report["sampled_frames"])
    floor2_s, _ = decode_floor(video, args.sample_fps)  # again, to see how the load drifted
    load_after = os.getloadavg()

    duration = facts.duration_s
    t = report["timings"]
    print(
        f"decode floor      : {floor_s:6.2f} s  ({decoded / floor_s:5.1f} frames/s)  "
        f"RTF {duration / floor_s:5.2f}x   (repeat after: {duration / floor2_s:.2f}x)"
    )
    print(
        f"engine (analyze)  : {engine_s:6.2f} s  RTF {duration / engine_s:5.2f}x  "
        f"(decode {t['decode_s']:.2f} s, infer {t['infer_s']:.2f} s, "
        f"aggregate {t['aggregate_s']:.2f} s, {report['model']['execution_provider']})"
    )
    print(
        f"model alone       : {model_s:6.2f} s  RTF {duration / model_s:5.2f}x  "
        f"({1000 * model_s / report['sampled_frames']:.0f} ms a frame, all cores)"
    )
    print(f"naive loop        : {naive_s:6.2f} s  RTF {duration / naive_s:5.2f}x")
    print(f"ratio engine/floor: {floor_s / engine_s:5.2f}  (1.0 = as fast as decoding alone)")
    print(
        f"ratio engine/(decode+model in series): {(floor_s + model_s) / engine_s:5.2f}  "
        "(> 1: the overlap pays)"
    )
    print(f"speed-up vs naive : {naive_s / engine_s:5.2f}x")
    print(f"load average after: {load_after[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
