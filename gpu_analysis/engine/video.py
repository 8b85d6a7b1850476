"""Open a match video, read its facts, and yield frames sampled at a target rate."""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path

# FFmpeg inside OpenCV prints decoder complaints about damaged streams straight to stderr;
# our own one-line errors say what matters, so keep the library quiet.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
os.environ.setdefault("OPENCV_LOG_LEVEL", "SILENT")

import cv2
import numpy as np

from gpu_analysis.engine.errors import UserError
from gpu_analysis.engine.records import VideoFacts

# The environment above only counts if cv2 was not imported yet; this covers the other case.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)

_CODEC_NAMES = {
    "avc1": "h264",
    "h264": "h264",
    "x264": "h264",
    "hevc": "hevc",
    "hev1": "hevc",
    "hvc1": "hevc",
    "h265": "hevc",
    "vp09": "vp9",
    "vp90": "vp9",
    "av01": "av1",
    "mp4v": "mpeg4",
    "fmp4": "mpeg4",
    "mjpg": "mjpeg",
}


@dataclasses.dataclass(frozen=True)
class SampledFrame:
    """One decoded frame picked by the sampler, in the source resolution (BGR, as decoded)."""

    frame_index: int
    timestamp_s: float
    image_bgr: np.ndarray


@dataclasses.dataclass
class DecodeStats:
    """What the sampler saw; filled in while frames are being yielded."""

    frames_decoded: int = 0
    sampled_frames: int = 0
    frames_lost: int = 0
    decode_s: float = 0.0


def _codec_name(fourcc: float) -> str:
    code = int(fourcc)
    text = "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4)).strip("\x00 ").lower()
    return _CODEC_NAMES.get(text, text or "unknown")


def _open(path: Path, threads: int | None = None) -> cv2.VideoCapture:
    # None lets FFmpeg pick its decoder thread count (one per core).
    params = [] if threads is None else [cv2.CAP_PROP_N_THREADS, threads]
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, params)
    if not cap.isOpened():
        cap.release()
        raise UserError(
            f"{path}: not a video that can be opened (corrupt, truncated without its index, "
            "or not a video file); check the file"
        )
    return cap


def probe(video_path: str | os.PathLike) -> VideoFacts:
    """Read a video's facts and check that at least its first frame decodes."""
    path = Path(video_path)
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if not path.is_file():
        raise UserError(f"{path}: not a file")
    size_bytes = path.stat().st_size
    if size_bytes == 0:
        raise UserError(f"{path}: file is empty (0 bytes)")
    cap = _open(path)
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        frame_count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        codec = _codec_name(cap.get(cv2.CAP_PROP_FOURCC))
        if width <= 0 or height <= 0:
            raise UserError(f"{path}: has no video stream; check the file")
        if not math.isfinite(fps) or fps <= 0:
            raise UserError(f"{path}: the video stream has no frame rate; re-encode it")
        if frame_count <= 0 or not cap.grab():
            raise UserError(f"{path}: the video has no decodable frames")
    finally:
        cap.release()
    return VideoFacts(
        path=str(path),
        fps=fps,
        frame_count=frame_count,
        duration_s=frame_count / fps,
        width=width,
        height=height,
        codec=codec,
        size_bytes=size_bytes,
    )


def check_sample_fps(sample_fps: float) -> None:
    if not (math.isfinite(sample_fps) and sample_fps > 0):
        raise UserError(
            f"--sample-fps must be a finite number of frames per second above 0, got {sample_fps}"
        )


def sample_indices(fps: float, sample_fps: float) -> Iterator[int]:
    """Source frame indices nearest to the instants k / sample_fps, each used at most once.

    Asking for more than the video's own rate gives every frame once.
    """
    check_sample_fps(sample_fps)
    # A step under one frame would only repeat indices: at 1e9 fps, 4e7 of them per frame.
    step = max(1.0, fps / sample_fps)
    last = -1
    k = 0
    while True:
        index = math.floor(k * step + 0.5)
        k += 1
        if index > last:
            last = index
            yield index


def iter_sampled_frames(
    facts: VideoFacts,
    sample_fps: float,
    stats: DecodeStats | None = None,
    decoder_threads: int | None = None,
) -> Iterator[SampledFrame]:
    """Decode `facts.path` once, front to back, yielding the frames picked by `sample_indices`.

    Frames in between are only grabbed (decoded, never converted to BGR), which is most of the
    saving over reading every frame. Frame numbers follow the presentation timestamps, so a
    stretch missing from a damaged stream is counted as lost and later frames keep their true
    numbers. A stream that breaks off ends the iteration; `stats` then says how many frames
    were lost: the gaps, plus those the container announced but could not be decoded.
    """
    stats = stats if stats is not None else DecodeStats()
    wanted = sample_indices(facts.fps, sample_fps)
    next_index = next(wanted)
    cap = _open(Path(facts.path), decoder_threads)
    index = -1
    first_pts_ms: float | None = None
    try:
        # Read until the decoder stops rather than to the announced count: stream containers
        # (MPEG-TS) only estimate their frame count.
        while True:
            started = time.perf_counter()
            if not cap.grab():
                stats.decode_s += time.perf_counter() - started
                break
            index += 1
            pts_ms = cap.get(cv2.CAP_PROP_POS_MSEC)
            if math.isfinite(pts_ms):
                first_pts_ms = pts_ms if first_pts_ms is None else first_pts_ms
                from_pts = round((pts_ms - first_pts_ms) * facts.fps / 1000.0)
                if from_pts > index:
                    stats.frames_lost += from_pts - index
                    index = from_pts
            while next_index < index:
                next_index = next(wanted)
            image = None
            if index == next_index:
                ok, image = cap.retrieve()
                if not ok:
                    image = None
            stats.decode_s += time.perf_counter() - started
            stats.frames_decoded += 1
            if image is not None:
                stats.sampled_frames += 1
                next_index = next(wanted)
                yield SampledFrame(index, index / facts.fps, image)
    finally:
        cap.release()
    stats.frames_lost += max(0, facts.frame_count - (index + 1))
