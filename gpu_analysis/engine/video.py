"""Open a match video, read its facts, and yield frames sampled by presentation time.

Decoding goes through PyAV (FFmpeg's own bindings) rather than OpenCV's capture: OpenCV gives
no presentation timestamps worth trusting for variable-frame-rate files, no field flags to
deinterlace by, no stream choice, no display matrix, and its bundled FFmpeg has no software
AV1 decoder. benchmarks/decoders.py measures both on the same clips (docs/video.md).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

# OpenCV is no longer the decoder, but other engine modules (containers, batching) still use
# it, and containers imports this module to keep OpenCV's FFmpeg quiet on damaged files.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
os.environ.setdefault("OPENCV_LOG_LEVEL", "SILENT")

import av
import av.error
import av.filter
import av.logging
import cv2
import numpy as np

from gpu_analysis.engine.errors import UserError
from gpu_analysis.engine.records import VideoFacts

# The environment above only counts if cv2 was not imported yet; this covers the other case.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)

DECODER_LIBRARY = f"FFmpeg {av.ffmpeg_version_info} (PyAV {av.__version__})"

# A gap between two frames of a constant-rate stream is a loss once it holds a whole missing
# frame; half a frame more than one interval is the midpoint between "no frame" and "one frame"
# missing. A variable-rate phone video slows down in the dark to about 15 fps, sometimes
# lower, by design: only a gap no camera would choose (here 0.25 s, 4 fps) counts as a loss.
_CFR_LOSS_INTERVALS = 1.5
_VFR_LOSS_GAP_S = Fraction(1, 4)
# Streams whose average rate is within this share of their base rate are constant-rate.
_CFR_RATE_TOLERANCE = 0.01


@dataclasses.dataclass(frozen=True)
class SampledFrame:
    """One decoded frame picked by the sampler, upright (display matrix applied), BGR.

    `frame_index` counts frames in presentation order from the first, lost ones included;
    `timestamp_s` is the frame's presentation time in seconds from the stream's start.
    """

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
    # Which stream of the file was decoded, and how: for report.json.
    stream_index: int = -1
    decoder: str = ""
    # Frames the stream flagged as interlaced, each deinterlaced (bwdif) before sampling.
    frames_deinterlaced: int = 0
    # Counter-clockwise rotation applied to show frames the right way up (display matrix).
    rotation_deg: int = 0
    # Packets the decoder refused (damage inside a stream that kept going).
    packets_damaged: int = 0
    # Presentation times of the first and last decoded frame, seconds from the stream start.
    first_timestamp_s: float | None = None
    last_timestamp_s: float | None = None


def _open(path: Path) -> av.container.InputContainer:
    try:
        # Tag values in odd encodings must not stop a video from being analysed.
        return av.open(str(path), metadata_errors="ignore")
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise UserError(
            f"{path}: not a video that can be opened (corrupt, truncated without its index, "
            "or not a video file); check the file"
        ) from exc


def _is_picture(stream: av.stream.Stream) -> bool:
    # Cover art and thumbnails are stored as one-frame video streams marked attached_pic.
    return bool(stream.disposition & av.stream.Disposition.attached_pic)


def _video_stream(container, path: Path, stream: int | None) -> av.video.stream.VideoStream:
    """The stream to analyse: `stream` (a container stream index, as ffprobe numbers them) if
    given, else the video stream marked default, else the first video stream."""
    if stream is not None:
        if not 0 <= stream < len(container.streams):
            raise UserError(
                f"{path}: --stream {stream}: the file has streams 0..{len(container.streams) - 1}"
                f"; its video streams are {_video_indices(container) or 'none'}"
            )
        chosen = container.streams[stream]
        if chosen.type != "video" or _is_picture(chosen):
            kind = "a still picture" if chosen.type == "video" else chosen.type
            raise UserError(
                f"{path}: --stream {stream} is {kind}, not video; its video streams are "
                f"{_video_indices(container) or 'none'}"
            )
        return chosen
    videos = [s for s in container.streams.video if not _is_picture(s)]
    if not videos:
        raise UserError(f"{path}: has no video stream, so it is not a video to analyse")
    defaults = [s for s in videos if s.disposition & av.stream.Disposition.default]
    return (defaults or videos)[0]


def _video_indices(container) -> list[int]:
    return [s.index for s in container.streams.video if not _is_picture(s)]


def _missing_decoder_name(container, index: int) -> str:
    """The codec FFmpeg names a stream without a decoder (PyAV exposes no codec then; the
    format dump, which FFmpeg writes only at log level info, still names it)."""
    level = av.logging.get_level()
    av.logging.set_level(av.logging.INFO)
    try:
        dump = container.dumps_format()
    finally:
        av.logging.set_level(level)
    found = re.search(rf"Stream #0:{index}\b[^:]*: Video: ([\w-]+)(?: \(([^)]*)\))?", dump)
    if not found:
        return "an unknown codec"
    return found.group(1) + (f" ({found.group(2)})" if found.group(2) else "")


def _decoder(container, stream, path: Path):
    context = stream.codec_context
    if context is None:
        name = _missing_decoder_name(container, stream.index)
        raise UserError(
            f"{path}: video stream #{stream.index} is {name}, which the decoder "
            f"({DECODER_LIBRARY}) cannot decode; re-encode it, e.g. "
            f"ffmpeg -i {path.name} -c:v libx264 -crf 18 out.mp4"
        )
    return context


def _rate(stream) -> Fraction | None:
    """Frames per second on average: the container's own average, else FFmpeg's guess."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and rate > 0:
            return Fraction(rate)
    return None


def _is_constant_rate(stream) -> bool:
    average, base = stream.average_rate, stream.base_rate
    if not average or not base:
        return True
    return abs(float(base) - float(average)) <= _CFR_RATE_TOLERANCE * float(average)


def _rotation_quarters(frame) -> int:
    """Counter-clockwise quarter turns that show `frame` the right way up.

    FFmpeg's display matrix angle is the counter-clockwise rotation to apply for display;
    phones store only multiples of 90 degrees, and other angles are rounded to one.
    """
    try:
        degrees = float(frame.rotation)
    except (AttributeError, TypeError, ValueError):
        return 0
    if not math.isfinite(degrees):
        return 0
    return round(degrees / 90.0) % 4


def _decoded_frames(container, stream, context, stats: DecodeStats) -> Iterator:
    """Every frame the decoder gives, in presentation order; damaged packets are skipped and
    counted, and a read error (a file cut short) ends the stream as its end would."""
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except (av.error.FFmpegError, OSError):
            packet = None  # broken off: flush what the decoder still holds
        try:
            frames = context.decode(packet)
        except av.error.EOFError:
            return
        except av.error.FFmpegError:
            stats.packets_damaged += 1
            continue
        yield from frames
        if packet is None:
            return


class _Deinterlacer:
    """bwdif over the frames flagged interlaced; progressive frames pass unchanged.

    One frame out per frame in (send_frame): the sampler keeps the source's frame times.
    bwdif needs the next frame to rebuild the current one, so output lags by one frame.
    """

    def __init__(self, frame, time_base: Fraction):
        self.graph = av.filter.Graph()
        source = self.graph.add_buffer(
            width=frame.width, height=frame.height, format=frame.format, time_base=time_base
        )
        bwdif = self.graph.add("bwdif", "mode=send_frame:parity=auto:deint=interlaced")
        sink = self.graph.add("buffersink")
        source.link_to(bwdif)
        bwdif.link_to(sink)
        self.graph.configure()

    def push(self, frame) -> list:
        self.graph.push(frame)
        out = []
        while True:
            try:
                out.append(self.graph.pull())
            except (av.error.BlockingIOError, av.error.EOFError):
                return out


def _upright_frames(container, stream, context, stats: DecodeStats) -> Iterator:
    """Decoded frames, deinterlaced from the first interlaced one on."""
    deinterlacer: _Deinterlacer | None = None
    for frame in _decoded_frames(container, stream, context, stats):
        stats.frames_decoded += 1
        if frame.interlaced_frame:
            stats.frames_deinterlaced += 1
            if deinterlacer is None:
                deinterlacer = _Deinterlacer(frame, stream.time_base)
        if deinterlacer is None:
            yield frame
        else:
            yield from deinterlacer.push(frame)
    if deinterlacer is not None:
        yield from deinterlacer.push(None)


def probe(video_path: str | os.PathLike, stream: int | None = None) -> VideoFacts:
    """Read a video's facts and check that at least its first frame decodes.

    `stream` picks a stream by its index in the file (as ffprobe numbers them); by default the
    video stream marked default, else the first. Width and height are as displayed (a phone
    video stored sideways with a 90-degree display matrix reports its upright size).
    """
    path = Path(video_path)
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if not path.is_file():
        raise UserError(f"{path}: not a file")
    size_bytes = path.stat().st_size
    if size_bytes == 0:
        raise UserError(f"{path}: file is empty (0 bytes)")
    with _open(path) as container:
        chosen = _video_stream(container, path, stream)
        context = _decoder(container, chosen, path)
        codec = context.codec.canonical_name
        first = next(_decoded_frames(container, chosen, context, DecodeStats()), None)
        if first is None:
            raise UserError(
                f"{path}: the video has no decodable frames ({codec}, stream #{chosen.index})"
            )
        fps = _rate(chosen)
        if fps is None:
            raise UserError(f"{path}: the video stream has no frame rate; re-encode it")
        duration_s = _duration_s(container, chosen)
        frame_count = chosen.frames or (round(duration_s * fps) if duration_s else 0)
        if frame_count <= 0:
            raise UserError(f"{path}: the video has no decodable frames (its length is unknown)")
        if not duration_s:
            duration_s = float(frame_count / fps)
        width, height = first.width, first.height
        if _rotation_quarters(first) % 2:
            width, height = height, width
    return VideoFacts(
        path=str(path),
        fps=float(fps),
        frame_count=int(frame_count),
        duration_s=float(duration_s),
        width=int(width),
        height=int(height),
        codec=codec,
        size_bytes=size_bytes,
    )


def _duration_s(container, stream) -> float:
    if stream.duration is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return 0.0


def check_sample_fps(sample_fps: float) -> None:
    if not (math.isfinite(sample_fps) and sample_fps > 0):
        raise UserError(
            f"--sample-fps must be a finite number of frames per second above 0, got {sample_fps}"
        )


def sample_indices(fps: float, sample_fps: float) -> Iterator[int]:
    """Frame indices nearest to the instants k / sample_fps in a constant-rate stream, each
    used at most once (what `iter_sampled_frames` picks when no frame is missing).

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


def _has_instant(after_s: Fraction | None, upto_s: Fraction, sample_fps: Fraction) -> bool:
    """Whether some sampling instant k / sample_fps (k >= 0) lies in (after_s, upto_s]."""
    if upto_s < 0:
        return False
    if after_s is None or after_s < 0:
        return True
    return math.floor(upto_s * sample_fps) > math.floor(after_s * sample_fps)


@dataclasses.dataclass
class _TimedFrame:
    frame: av.VideoFrame
    time_s: Fraction  # presentation time from the stream's start
    index: int  # frames before it in presentation order, lost ones included
    sampled: bool = False


def _timed_frames(stream, frames: Iterator, fps: Fraction, stats: DecodeStats) -> Iterator:
    """Each frame with its presentation time and number; gaps in the timeline count as lost.

    Times are exact fractions: an instant k / sample_fps and a frame time compare without
    rounding, so a 25 fps stream sampled at 5 fps gets frames 0, 5, 10... and no neighbour.
    """
    if _is_constant_rate(stream):
        loss_gap_s = _CFR_LOSS_INTERVALS / fps
    else:
        loss_gap_s = max(_CFR_LOSS_INTERVALS / fps, _VFR_LOSS_GAP_S)
    stream_time_base = Fraction(stream.time_base)
    origin_s: Fraction | None = None
    last: _TimedFrame | None = None
    for frame in frames:
        # bwdif halves the time base it hands on: each frame says its own.
        time_base = Fraction(frame.time_base or stream_time_base)
        if origin_s is None:
            if stream.start_time is not None:
                origin_s = stream.start_time * stream_time_base
            else:
                origin_s = (frame.pts or 0) * time_base
        if frame.pts is None:  # raw streams without timestamps: the nominal rate
            time_s = last.time_s + 1 / fps if last else Fraction(0)
        else:
            time_s = frame.pts * time_base - origin_s
        if last is None:
            # A stream whose first frames are missing starts late: those count as lost.
            index = max(0, round(time_s * fps)) if time_s > loss_gap_s else 0
            stats.frames_lost += index
            stats.first_timestamp_s = float(time_s)
        elif time_s <= last.time_s:
            continue  # a damaged stream repeating or reordering a frame
        else:
            gap_s = time_s - last.time_s
            missing = max(0, round(gap_s * fps) - 1) if gap_s > loss_gap_s else 0
            stats.frames_lost += missing
            index = last.index + 1 + missing
        stats.last_timestamp_s = float(time_s)
        last = _TimedFrame(frame, time_s, index)
        yield last
    if stream.frames:  # the container's index announced this many: those never seen are lost
        stats.frames_lost += max(0, stream.frames - (last.index + 1 if last else 0))


def _nearest_frames(timed: Iterator, sample_fps: float, fps: Fraction) -> Iterator:
    """For each instant k / sample_fps, the frame presented nearest to it, each at most once.

    A frame is the nearest for the instants between the midpoints to its neighbours, so it is
    known once the next frame shows; the last frame also stands for half a frame after it.
    """
    per_s = Fraction(sample_fps)
    held: _TimedFrame | None = None
    for current in timed:
        mid_s = (held.time_s + current.time_s) / 2 if held else None
        if held is not None and not held.sampled and _has_instant(held.time_s, mid_s, per_s):
            yield held
        current.sampled = _has_instant(mid_s, current.time_s, per_s)
        if current.sampled:
            yield current
        held = current
    if held is not None and not held.sampled:
        half_frame_s = 1 / (2 * fps)
        if _has_instant(held.time_s, held.time_s + half_frame_s, per_s):
            yield held


def iter_sampled_frames(
    facts: VideoFacts,
    sample_fps: float,
    stats: DecodeStats | None = None,
    decoder_threads: int | None = None,
    stream: int | None = None,
) -> Iterator[SampledFrame]:
    """Decode `facts.path` once, front to back, yielding for each instant k / sample_fps the
    frame presented nearest to it (each frame at most once).

    Instants are presentation times from the stream's start, so a variable-frame-rate video
    is sampled evenly in time; asking for more than the video's own rate gives every frame.
    Frames in between are decoded but never converted. Interlaced frames are deinterlaced,
    and frames are turned upright by the display matrix. A stretch missing from a damaged
    stream is counted as lost and later frames keep their true numbers and times. A stream
    that breaks off ends the iteration; `stats` then says how many frames were lost: the
    gaps, plus those the container's index announced but could not be decoded.
    `stream` picks the stream as `probe` does.
    """
    check_sample_fps(sample_fps)
    stats = stats if stats is not None else DecodeStats()
    path = Path(facts.path)
    clock = time.perf_counter()
    with _open(path) as container:
        chosen = _video_stream(container, path, stream)
        context = _decoder(container, chosen, path)
        # FFmpeg's default is one thread; None asks it for one per core.
        context.thread_type = "AUTO"
        context.thread_count = 0 if decoder_threads is None else int(decoder_threads)
        stats.stream_index = chosen.index
        stats.decoder = context.codec.name
        fps = Fraction(facts.fps).limit_denominator(1_000_000)
        timed = _timed_frames(
            chosen, _upright_frames(container, chosen, context, stats), fps, stats
        )
        picked = timed if sample_fps >= facts.fps else _nearest_frames(timed, sample_fps, fps)
        quarters: int | None = None
        for pick in picked:
            if quarters is None:
                quarters = _rotation_quarters(pick.frame)
                stats.rotation_deg = 90 * quarters
            image = pick.frame.to_ndarray(format="bgr24")
            if quarters:
                image = np.ascontiguousarray(np.rot90(image, quarters))
            stats.sampled_frames += 1
            stats.decode_s += time.perf_counter() - clock
            yield SampledFrame(pick.index, float(pick.time_s), image)
            clock = time.perf_counter()
    stats.decode_s += time.perf_counter() - clock
