"""The renderer's CPU time per frame with a moving camera, as a ratio to a still one, one run.

    .venv/bin/python benchmarks/render_speed.py [--frames 100]

1280x720, one OpenCV thread, the gantry camera: still; panning +-10 degrees with +-20 % zoom
and two cuts; panning +-30 degrees with a 2x zoom, a cut and lens distortion. Rendering only
(no encoding). A 30 s clip is 750 frames.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2

from gpu_analysis.synthetic.camera import preset_camera
from gpu_analysis.synthetic.camera_motion import CameraMotion, Cut
from gpu_analysis.synthetic.clip import MatchRenderer
from gpu_analysis.synthetic.look import default_look

CASES = {
    "still": None,
    "pan 10, zoom 0.8-1.2, 2 cuts": CameraMotion(
        pan_deg=10, zoom_range=(0.8, 1.2), cuts=(Cut(2, 0.5), Cut(3, 0.4, "crowd"))
    ),
    "pan 30, zoom 1-2, cut, lens": CameraMotion(
        pan_deg=30, zoom_range=(1, 2), cuts=(Cut(2, 0.5),), distortion=(-0.2, 0.05)
    ),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100, help="at least 90 (the cuts)")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    per_frame = {}
    for name, motion in CASES.items():
        renderer = MatchRenderer(
            seed=1, n_frames=args.frames, fps=25, camera=preset_camera("gantry", 1280, 720),
            look=default_look(), motion=motion,
        )  # fmt: skip
        started = time.process_time()
        for i in range(args.frames):
            renderer.render(i)
        per_frame[name] = (time.process_time() - started) / args.frames
    still = per_frame["still"]
    for name, seconds in per_frame.items():
        print(
            f"{name:30s} {1e3 * seconds:6.1f} ms CPU a frame, {seconds / still:4.2f}x still, "
            f"750 frames {750 * seconds:5.1f} s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
