"""Bytes per frame of the shard format, against lossless compressions of the same frames.

Runs `steps.preprocess` on the 1080p benchmark clip and prints the measured bytes per frame,
then encodes the same letterboxed frames with zlib and PNG to show what compression would buy.

    .venv/bin/python benchmarks/engine_shards.py
"""

from __future__ import annotations

import sys
import tempfile
import time
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402

from benchmarks.engine_clips import match_clip, standin_model  # noqa: E402
from gpu_analysis.engine import shards, steps  # noqa: E402


def main() -> int:
    video, _ = match_clip(1920, 1080, 20.0)
    with tempfile.TemporaryDirectory() as tmp:
        summary = steps.preprocess(str(video), f"{tmp}/shards", model=str(standin_model()))
        manifest = shards.read_manifest(f"{tmp}/shards")
        images = [
            img
            for batch in shards.iter_shards(f"{tmp}/shards", manifest)
            for img in batch.images_rgb
        ]
    w, h = summary.input_size
    print(
        f"clip {video.name}: {summary.sampled_frames} frames at {w}x{h} in {summary.shards} shards"
    )
    print(f"shard format (raw uint8 .npz): {summary.bytes_per_frame:10,.0f} bytes a frame")
    for name, encode in (
        ("zlib level 1", lambda img: zlib.compress(img.tobytes(), 1)),
        ("PNG level 1", lambda img: cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 1])[1]),
        ("PNG level 3", lambda img: cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 3])[1]),
    ):
        started = time.perf_counter()
        total = sum(len(encode(img)) for img in images)
        ms = 1000 * (time.perf_counter() - started) / len(images)
        print(
            f"{name:29s}: {total / len(images):10,.0f} bytes a frame "
            f"({summary.bytes_per_frame * len(images) / total:.2f}x smaller, {ms:.0f} ms a frame)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
