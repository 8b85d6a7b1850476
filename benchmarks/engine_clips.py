"""Benchmark inputs, made once and cached under var/bench/: synthetic clips, a stand-in model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / "var" / "bench"
sys.path.insert(0, str(REPO))


def match_clip(width: int, height: int, seconds: float, seed: int = 7) -> tuple[Path, Path]:
    """A broadcast-camera synthetic match clip at 25 fps; returns (video, calibration)."""
    from gpu_analysis.synthetic import generate_match_clip

    video = CACHE / f"match_{width}x{height}_{seconds:g}s.mp4"
    calibration = video.with_name(video.stem + ".calibration.json")
    if not (video.is_file() and calibration.is_file()):
        generate_match_clip(
            video, seed=seed, duration_s=seconds, fps=25.0, width=width, height=height,
            camera="broadcast",
        )  # fmt: skip
    return video, calibration


def repeated_clip(video: Path, times: int) -> tuple[Path, Path]:
    """`video` played `times` over (stream copy, no re-encode): a long match made quickly."""
    out = video.with_name(f"{video.stem}_x{times}.mp4")
    calibration = video.with_name(video.stem + ".calibration.json")
    out_calibration = out.with_name(out.stem + ".calibration.json")
    if not out.is_file():
        from gpu_analysis.synthetic import ffmpeg_exe

        listing = out.with_suffix(".txt")
        listing.write_text("".join(f"file '{video.name}'\n" for _ in range(times)))
        subprocess.run(
            [ffmpeg_exe(), "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing),
             "-c", "copy", str(out)],
            check=True,
        )  # fmt: skip
        listing.unlink()
    out_calibration.write_bytes(calibration.read_bytes())
    return out, out_calibration


def standin_model() -> Path:
    """A conv net with a heat-map output at the built-in model's input size and similar cost
    (about 0.6 GMAC per frame), for when the built-in model is not there yet."""
    from tests.engine.onnx_models import conv_heatmap_model

    path = CACHE / "standin_768x432.onnx"
    if not path.is_file():
        conv_heatmap_model(path, input_wh=(768, 432), width=32, depth=4)
    return path
