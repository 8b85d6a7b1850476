"""What the sensor pays to accept a local upload: its sha256 and the whole-container check.

    .venv/bin/python benchmarks/incoming_checks.py [--repeat 30]

On the 20 s 720p demo clip, and on that clip played `--repeat` times over (stream copy), each
way of telling a whole MP4 from a cut one is timed against `ffmpeg -c copy -f null`, which reads
every packet in a separate process: our box walk plus OpenCV packet walk
(gpu_analysis.engine.containers), and OpenCV seeking to the last frame and decoding it. The
sha256 of the same file gives the hashing cost. Each figure is the best of 5 runs; the file is
in the page cache, as it is when the sensor checks a copy that has just settled.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402

from benchmarks.engine_clips import match_clip, repeated_clip  # noqa: E402
from gpu_analysis.engine import containers, storage  # noqa: E402
from gpu_analysis.synthetic import ffmpeg_exe  # noqa: E402


def best_of(fn, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def ffmpeg_copy(path: Path) -> None:
    cmd = [ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", "0:v:0", "-c", "copy"]
    subprocess.run([*cmd, "-f", "null", "-"], check=True, capture_output=True)


def opencv_last_frame(path: Path) -> None:
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    cap.set(cv2.CAP_PROP_POS_FRAMES, int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) - 1)
    assert cap.grab()
    cap.release()


def measure(label: str, video: Path) -> None:
    size_mb = video.stat().st_size / 1e6
    cap = cv2.VideoCapture(str(video), cv2.CAP_FFMPEG)
    frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    assert containers.incomplete_mp4_reason(video) is None
    baseline_s = best_of(lambda: ffmpeg_copy(video))
    ours_s = best_of(lambda: containers.incomplete_mp4_reason(video))
    boxes_s = best_of(lambda: containers._box_layout_problem(video))
    last_s = best_of(lambda: opencv_last_frame(video))
    sha_s = best_of(lambda: storage.sha256_file(video))
    print(f"{label}: {size_mb:.1f} MB, {frames} frames")
    rows = [
        ("ffmpeg -c copy -f null (baseline)", baseline_s),
        ("box walk + OpenCV packet walk (ours)", ours_s),
        ("  of which the box walk", boxes_s),
        ("OpenCV seek + decode the last frame", last_s),
        ("sha256 of the file", sha_s),
    ]
    for name, seconds in rows:
        print(f"  {name:38s} {1000 * seconds:8.2f} ms  {seconds / baseline_s:5.2f} x baseline")
    print(
        f"  sha256 rate: {size_mb / sha_s:.0f} MB/s; OpenCV last frame misses cuts (containers.py)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30, help="how often the long clip repeats")
    args = parser.parse_args()
    video, _ = match_clip(1280, 720, 20)
    measure("20 s 720p clip", video)
    long_video, _ = repeated_clip(video, args.repeat)
    measure(f"the clip x{args.repeat}", long_video)
    return 0


if __name__ == "__main__":
    sys.exit(main())
