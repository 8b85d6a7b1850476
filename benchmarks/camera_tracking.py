"""Camera tracking's share of the engine's CPU time, on the 1080p benchmark clip at 5 fps.

One run measures both on the same clip: the process CPU time of the whole engine
(`steps.analyze`, tracking included) and that of camera tracking alone over the same
sampled, letterboxed frames; the ratio is tracking's share (issue 14's target: <= 25 %).
With --moving, the clip is a 1080p render whose camera pans +-10 degrees and zooms +-20 %
(tracking then refines every frame against the markings, its costly case).

    .venv/bin/python benchmarks/camera_tracking.py [--model builtin|standin|PATH] [--moving]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.engine_clips import CACHE, match_clip, standin_model  # noqa: E402
from gpu_analysis.engine import camera_tracking, steps  # noqa: E402
from gpu_analysis.engine.batching import iter_batches, letterbox_geometry  # noqa: E402
from gpu_analysis.engine.inference import BUILTIN_MODEL, OnnxDetector  # noqa: E402
from gpu_analysis.engine.video import DecodeStats, iter_sampled_frames  # noqa: E402


def cpu_s() -> float:
    """CPU seconds of this process, every thread (ONNX Runtime's and OpenCV's pools too)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def moving_clip(seconds: float) -> tuple[Path, Path]:
    from gpu_analysis.synthetic import calibration_path_for, generate_match_clip
    from gpu_analysis.synthetic.camera_motion import CameraMotion

    video = CACHE / f"moving_1920x1080_{seconds:g}s.mp4"
    if not video.is_file():
        motion = CameraMotion(pan_deg=10.0, tilt_deg=2.0, zoom_range=(0.8, 1.2))
        generate_match_clip(
            video, seed=7, duration_s=seconds, fps=25.0, width=1920, height=1080,
            camera_motion=motion,
        )  # fmt: skip
    return video, calibration_path_for(video)


def tracking_alone(video: Path, calibration_path: Path, sample_fps: float, input_wh) -> tuple:
    """CPU seconds of camera tracking over the clip's sampled frames (decoding not counted)."""
    facts = steps.probe(video)
    calibration = steps.load_calibration(calibration_path, facts)
    geometry = letterbox_geometry((facts.width, facts.height), input_wh)
    batches = list(iter_batches(iter_sampled_frames(facts, sample_fps, DecodeStats()), geometry, 8))
    tracker = camera_tracking.CameraTracker(calibration, geometry, calibration.distortion)
    tracker.set_reference(batches[0].images_rgb[0])
    started = cpu_s()
    for batch in batches:
        camera_tracking.track_batch(tracker, batch)
    return cpu_s() - started, tracker.summary()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="auto", help="builtin, standin, a path, or auto")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the clip")
    parser.add_argument("--sample-fps", type=float, default=5.0)
    parser.add_argument("--moving", action="store_true", help="a panning, zooming camera")
    args = parser.parse_args()

    video, calibration = (
        moving_clip(args.seconds) if args.moving else match_clip(1920, 1080, args.seconds)
    )
    model = args.model
    if model == "auto":
        model = "builtin" if BUILTIN_MODEL.is_file() else "standin"
    if model == "standin":
        model = str(standin_model())
    input_wh = OnnxDetector(model, device="cpu").input_wh
    print(f"clip: {video.name}; model {model} ({input_wh[0]}x{input_wh[1]}); "
          f"sample fps {args.sample_fps:g}")  # fmt: skip

    with tempfile.TemporaryDirectory() as tmp:
        started_cpu, started = cpu_s(), time.perf_counter()
        report = steps.analyze(
            video, calibration, Path(tmp) / "out", sample_fps=args.sample_fps, model=model
        )
        engine_cpu, engine_wall = cpu_s() - started_cpu, time.perf_counter() - started
    tracking_cpu, summary = tracking_alone(video, calibration, args.sample_fps, input_wh)
    frames = report["sampled_frames"]
    print(f"engine (analyze, tracking included): {engine_cpu:.2f} CPU s, {engine_wall:.2f} s wall, "
          f"{frames} frames; report camera: {report['camera']}")  # fmt: skip
    print(f"camera tracking alone: {tracking_cpu:.2f} CPU s "
          f"({1000 * tracking_cpu / max(1, frames):.1f} ms a frame); {summary}")  # fmt: skip
    share = tracking_cpu / engine_cpu
    print(f"camera tracking's share of the engine's CPU time: {share:.1%} (target <= 25 %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
