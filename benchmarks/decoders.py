"""PyAV (the engine's decoder) against OpenCV's capture, on the same clips, side by side.

For each clip (one 1080p 25 fps H.264 match, re-encoded as people's videos come: HEVC, VP9,
AV1, MPEG-2 TS, interlaced H.264, variable frame rate), both decoders sample it at 5 fps as
the engine does: every frame decoded, the sampled ones converted to BGR. OpenCV's side is the
engine's sampler as it was before PyAV (grab every frame, retrieve every k-th by count). Prints
what each got right (frames sampled, black frames, worst timestamp error against the frame's
real presentation time) and the time each took, with the ratio, measured in one run,
alternating the two decoders and keeping each one's best of `--rounds`. Each decoder runs in a
fresh process: both bundle an FFmpeg, and in one process the first one loaded changes how the
other behaves (OpenCV's interlaced frames stop being black once PyAV has decoded any).

    .venv/bin/python benchmarks/decoders.py [--seconds 10] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.engine_clips import CACHE, match_clip  # noqa: E402
from gpu_analysis.engine import video as engine_video  # noqa: E402  (also quiets OpenCV)
from gpu_analysis.engine.video import DecodeStats, iter_sampled_frames, probe  # noqa: E402

SAMPLE_FPS = 5.0
# A frame this dark on average is a decoding failure, not a match (a night game is ~40).
BLACK_MEAN = 10.0
# ffmpeg output options for each clip made from the H.264 original, by name.
ENCODINGS: dict[str, list[str]] = {
    "h264": ["-c", "copy"],
    "hevc": ["-c:v", "libx265", "-preset", "ultrafast", "-crf", "23", "-tag:v", "hvc1",
             "-x265-params", "log-level=none"],
    "vp9": ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-crf", "30",
            "-b:v", "0"],
    "av1": ["-c:v", "libsvtav1", "-preset", "12", "-crf", "35", "-svtav1-params", "log-level=0"],
    "mpeg2_ts": ["-c:v", "mpeg2video", "-q:v", "3", "-f", "mpegts"],
    # 1080i25 as broadcast carries it: two fields a frame, coded field-aware, top first.
    "interlaced": ["-vf", "fps=50,tinterlace=mode=interleave_top,setfield=tff", "-c:v",
                   "libx264", "-preset", "veryfast", "-flags", "+ilme+ildct", "-x264-params",
                   "tff=1"],
    # A phone's variable rate: 25 fps, then 12.5 fps in the middle third, each frame keeping
    # its own timestamp.
    "vfr": ["-vf", "select='if(between(t,{a},{b}),not(mod(n,2)),1)'", "-fps_mode",
            "passthrough", "-c:v", "libx264", "-preset", "veryfast"],
}  # fmt: skip
SUFFIX = {"vp9": ".webm", "mpeg2_ts": ".ts"}


def make_clip(source: Path, name: str, seconds: float) -> Path:
    out = CACHE / f"decoders_{name}_{seconds:g}s{SUFFIX.get(name, '.mp4')}"
    if not out.is_file():
        # imageio-ffmpeg's build: its encoders (libx265, libvpx-vp9, libsvtav1) are known.
        import imageio_ffmpeg

        options = [
            o.format(a=f"{seconds / 3:.3f}", b=f"{2 * seconds / 3:.3f}") for o in ENCODINGS[name]
        ]
        subprocess.run(
            [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i", str(source),
             "-t", f"{seconds:g}",
             "-an", *options, str(out)],
            check=True,
        )  # fmt: skip
    return out


def opencv_sampler(path: Path) -> list[tuple[int, float, float, float]]:
    """The engine's sampler before PyAV: (frame index, its claimed time, its real time, mean)."""
    import cv2

    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if not cap.isOpened():
        return []
    fps = cap.get(cv2.CAP_PROP_FPS)
    indices = engine_video.sample_indices(fps, SAMPLE_FPS)
    wanted = next(indices)
    sampled, index, first_ms = [], -1, None
    while cap.grab():
        index += 1
        real_ms = cap.get(cv2.CAP_PROP_POS_MSEC)
        first_ms = real_ms if first_ms is None else first_ms
        if index == wanted:
            ok, image = cap.retrieve()
            if ok:
                sampled.append((index, index / fps, (real_ms - first_ms) / 1000, image.mean()))
            wanted = next(indices)
    cap.release()
    return sampled


def pyav_sampler(path: Path) -> list[tuple[int, float, float, float]]:
    facts = probe(path)
    stats = DecodeStats()
    return [
        (f.frame_index, f.timestamp_s, f.timestamp_s, float(f.image_bgr.mean()))
        for f in iter_sampled_frames(facts, SAMPLE_FPS, stats)
    ]


def judge(sampled, duration_s: float) -> str:
    """What a sampler got right: samples, black ones, worst error of the times it claims
    against the instants k / 5 s it should have shown (the real presentation times)."""
    if not sampled:
        return "no frames (refused)"
    black = sum(1 for *_, mean in sampled if mean < BLACK_MEAN)
    claimed_error_s = max(abs(claimed - real) for _, claimed, real, _ in sampled)
    # The real instant each sample shows, against the evenly spaced instants it stands for.
    even_error_s = max(abs(real - k / SAMPLE_FPS) for k, (_, _, real, _) in enumerate(sampled))
    expected = math.ceil(duration_s * SAMPLE_FPS - 1e-9)
    return (
        f"{len(sampled):3d}/{expected} sampled, {black:3d} black, time claimed off by "
        f"{claimed_error_s:5.2f} s, instants off by {even_error_s:5.2f} s"
    )


SAMPLERS = {"opencv": opencv_sampler, "pyav": pyav_sampler}


def timed(label: str, path: Path) -> tuple[float, list]:
    """Run one sampler in a fresh process; its time is measured there, start-up excluded."""
    child = subprocess.run(
        [sys.executable, __file__, "--child", label, str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    answer = json.loads(child.stdout.strip().splitlines()[-1])
    return answer["elapsed_s"], answer["sampled"]


def child(label: str, path: Path) -> int:
    started = time.perf_counter()
    try:
        sampled = [[float(x) for x in row] for row in SAMPLERS[label](path)]
    except Exception as exc:  # a decoder that refuses the clip: shown, not fatal
        sampled = [["refused", str(exc).split(": ")[-1]]]
    print(json.dumps({"elapsed_s": time.perf_counter() - started, "sampled": sampled}))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each clip")
    parser.add_argument("--rounds", type=int, default=3, help="best of this many runs each")
    parser.add_argument("--only", nargs="*", default=list(ENCODINGS), choices=list(ENCODINGS))
    parser.add_argument("--child", nargs=2, metavar=("DECODER", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child[0], Path(args.child[1]))

    source, _ = match_clip(1920, 1080, 20.0)  # the clip engine_speed.py uses, cached
    print(
        f"clips: {args.seconds:g} s of {source.name}, re-encoded; sample fps {SAMPLE_FPS:g}; "
        f"cores {os.cpu_count()}; load average before {os.getloadavg()[0]:.1f}"
    )
    print(f"PyAV: {engine_video.DECODER_LIBRARY}; OpenCV {__import__('cv2').__version__}")
    ratios = []
    for name in args.only:
        path = make_clip(source, name, args.seconds)
        facts = probe(path)
        best = {"opencv": math.inf, "pyav": math.inf}
        results = {}
        for _ in range(args.rounds):
            for label in SAMPLERS:
                elapsed_s, results[label] = timed(label, path)
                best[label] = min(best[label], elapsed_s)
        print(f"\n{name} ({path.name}, {facts.frame_count} frames, {facts.codec})")
        for label in ("opencv", "pyav"):
            sampled = results[label]
            verdict = (
                f"refused: {sampled[0][1]}" if sampled and sampled[0][0] == "refused"
                else judge(sampled, facts.duration_s)
            )  # fmt: skip
            if not sampled or sampled[0][0] == "refused":
                print(f"  {label:6s} {verdict}")
                continue
            fps = facts.frame_count / best[label]
            print(f"  {label:6s} {best[label]:6.2f} s ({fps:6.1f} frames/s)  {verdict}")
        if all(results[label] and results[label][0][0] != "refused" for label in SAMPLERS):
            ratio = best["opencv"] / best["pyav"]
            ratios.append(ratio)
            print(f"  ratio opencv/pyav time: {ratio:.2f} (> 1: PyAV faster)")
    if ratios:
        mean_ratio = math.exp(np.mean(np.log(ratios)))
        print(f"\ngeometric mean ratio opencv/pyav over clips both decoded: {mean_ratio:.2f}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
