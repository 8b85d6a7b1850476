"""The engine's public steps: what the CLI, the Dagster assets and the GPU workers call.

A match flows video -> frame batches (preprocess) -> detections (infer) -> maps and report
(aggregate); `analyze` runs all three in one process with decoding overlapped with inference.
Locations are local paths or s3://bucket/prefix URIs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from gpu_analysis import calibration as _calibration
from gpu_analysis import shards, storage
from gpu_analysis import video as _video
from gpu_analysis.batching import FrameBatch, Letterbox, iter_batches, letterbox_geometry
from gpu_analysis.calibration import Calibration
from gpu_analysis.detections import Detections
from gpu_analysis.errors import UserError
from gpu_analysis.inference import Detector, OnnxDetector
from gpu_analysis.report import build_outputs
from gpu_analysis.teams import torso_colours
from gpu_analysis.video import DecodeStats, VideoFacts

Progress = Callable[[str, float], None]
INFER_SUMMARY = "infer.json"
DEFAULT_BATCH_SIZE = 8
# Batches waiting between the decode thread and the model: enough to ride out jitter,
# few enough that memory stays flat however long the match is.
QUEUE_BATCHES = 3
# Without calibration or boxes, assume a player is this fraction of the frame height tall.
FALLBACK_PLAYER_HEIGHT = 0.06
PLAYER_HEIGHT_M = 1.8

__all__ = [
    "Calibration",
    "Detections",
    "InferSummary",
    "PreprocessSummary",
    "VideoFacts",
    "aggregate",
    "analyze",
    "infer",
    "load_calibration",
    "preprocess",
    "probe",
]


def probe(video_path: str | os.PathLike) -> VideoFacts:
    """A video's facts; UserError if it is missing, empty, not a video or has no frames."""
    return _video.probe(video_path)


def load_calibration(path: str | os.PathLike) -> Calibration:
    """A validated calibration (contracts section 1); UserError naming the problem otherwise."""
    return _calibration.load_calibration(path)


@dataclasses.dataclass(frozen=True)
class PreprocessSummary:
    video: VideoFacts
    sample_fps: float
    sampled_frames: int
    frames_decoded: int
    frames_lost: int
    shards: int
    shard_bytes: int
    bytes_per_frame: float
    input_size: tuple[int, int]
    decode_s: float
    preprocess_s: float
    total_s: float

    def as_dict(self) -> dict:
        fields = dataclasses.asdict(self)
        fields["video"] = self.video.as_dict()
        fields["input_size"] = list(self.input_size)
        return fields


@dataclasses.dataclass(frozen=True)
class InferSummary:
    detections_total: int
    sampled_frames: int
    execution_provider: str
    model: dict
    infer_s: float
    frames_per_s: float
    total_s: float

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _report(progress: Progress | None, message: str, fraction: float) -> None:
    if progress is not None:
        progress(message, min(1.0, max(0.0, fraction)))


class _LocalVideo:
    """A video as a local file: itself, or an s3:// object downloaded to a temp file."""

    def __init__(self, uri: str | os.PathLike):
        self.uri = str(uri)
        self._tmp: str | None = None

    def __enter__(self) -> Path:
        if not storage.is_s3(self.uri):
            return Path(self.uri)
        suffix = Path(self.uri).suffix or ".mp4"
        fd, self._tmp = tempfile.mkstemp(prefix="gpu-analysis-video-", suffix=suffix)
        os.close(fd)
        try:
            storage.fetch(self.uri, Path(self._tmp))
        except BaseException:
            self.__exit__()  # a failed download leaves no empty file behind
            raise
        return Path(self._tmp)

    def __exit__(self, *exc) -> None:
        if self._tmp:
            Path(self._tmp).unlink(missing_ok=True)


def _model_input_wh(model: str) -> tuple[int, int]:
    # A CPU session is enough to read the input shape, and validates the file on the way.
    return OnnxDetector(model, device="cpu").input_wh


def _decoded_batches(
    facts: VideoFacts,
    geometry: Letterbox,
    sample_fps: float,
    batch_size: int,
    stats: DecodeStats,
    progress: Progress | None,
) -> Iterator[FrameBatch]:
    for batch in iter_batches(
        _video.iter_sampled_frames(facts, sample_fps, stats), geometry, batch_size
    ):
        _report(
            progress,
            f"decoded {stats.frames_decoded}/{facts.frame_count} frames",
            stats.frames_decoded / max(1, facts.frame_count),
        )
        yield batch


def preprocess(
    video_uri: str,
    shards_uri: str,
    *,
    sample_fps: float = 5.0,
    model: str = "builtin",
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress | None = None,
) -> PreprocessSummary:
    """Decode, sample, letterbox and batch a video into shards for `infer` (the T4 step)."""
    started = time.perf_counter()
    input_wh = _model_input_wh(model)
    with _LocalVideo(video_uri) as local_path:
        facts = dataclasses.replace(probe(local_path), path=str(video_uri))
        local_facts = dataclasses.replace(facts, path=str(local_path))
        geometry = letterbox_geometry((facts.width, facts.height), input_wh)
        stats = DecodeStats()
        count = shard_bytes = 0
        for batch in _decoded_batches(
            local_facts, geometry, sample_fps, batch_size, stats, progress
        ):
            shard_bytes += shards.write_shard(shards_uri, count, batch)
            count += 1
    if stats.sampled_frames == 0:
        raise UserError(f"{video_uri}: no frame could be decoded")
    total_s = time.perf_counter() - started
    summary = PreprocessSummary(
        video=facts,
        sample_fps=sample_fps,
        sampled_frames=stats.sampled_frames,
        frames_decoded=stats.frames_decoded,
        frames_lost=stats.frames_lost,
        shards=count,
        shard_bytes=shard_bytes,
        bytes_per_frame=round(shard_bytes / stats.sampled_frames, 1),
        input_size=input_wh,
        decode_s=round(stats.decode_s, 4),
        preprocess_s=round(total_s - stats.decode_s, 4),
        total_s=round(total_s, 4),
    )
    shards.write_manifest(
        shards_uri,
        {
            "video": facts.as_dict(),
            "geometry": geometry.as_dict(),
            "shards": count,
            "batch_size": batch_size,
            "model": str(model),
            "summary": summary.as_dict(),
        },
    )
    _report(progress, f"wrote {count} shards", 1.0)
    return summary


def _player_heights_input_px(
    feet_px: np.ndarray,
    heights_px: np.ndarray,
    geometry: Letterbox,
    calibration: Calibration | None,
) -> np.ndarray:
    """Each player's height in model-input pixels: from the detector's box, else from the
    calibration's ground scale at the feet, else a fixed share of the frame height."""
    heights = np.asarray(heights_px, dtype=np.float64).copy()
    missing = ~np.isfinite(heights)
    if missing.any() and calibration is not None:
        heights[missing] = calibration.px_per_m(feet_px[missing]) * PLAYER_HEIGHT_M
    missing = ~np.isfinite(heights) | (heights <= 0)
    heights[missing] = FALLBACK_PLAYER_HEIGHT * geometry.source_h
    return heights * (geometry.resized_h / geometry.source_h)


def detect_batch(
    detector: Detector, batch: FrameBatch, calibration: Calibration | None = None
) -> Detections:
    """Run a detector on one batch and read each player's shirt colour from the frames."""
    feet = detector.detect(batch)
    parts = []
    for i, frame_feet in enumerate(feet):
        k = len(frame_feet.scores)
        feet_px = np.asarray(frame_feet.foot_points_px, dtype=np.float64).reshape(-1, 2)
        heights = _player_heights_input_px(
            feet_px, frame_feet.heights_px, batch.geometry, calibration
        )
        # Shirts are read only for players on the pitch: the crowd is not a team, and the
        # colour reading is the costly part of this loop.
        on_pitch = (
            calibration.project_to_pitch(feet_px)[1]
            if calibration is not None
            else np.ones(k, bool)
        )
        rgb = np.zeros((k, 3), np.float32)
        valid = np.zeros(k, bool)
        rgb[on_pitch], valid[on_pitch] = torso_colours(
            batch.images_rgb[i], batch.geometry.to_input_px(feet_px[on_pitch]), heights[on_pitch]
        )
        parts.append(
            Detections(
                frame_index=np.full(k, batch.frame_index[i], dtype=np.int64),
                timestamp_s=np.full(k, batch.timestamp_s[i], dtype=np.float64),
                foot_points_px=feet_px.astype(np.float32),
                scores=np.asarray(frame_feet.scores, dtype=np.float32),
                torso_rgb=rgb,
                torso_valid=valid,
                sampled_frame_index=batch.frame_index[i : i + 1].astype(np.int64),
                sampled_timestamp_s=batch.timestamp_s[i : i + 1].astype(np.float64),
            )
        )
    return Detections.concat(parts)


def infer(
    shards_uri: str,
    detections_uri: str,
    *,
    model: str = "builtin",
    device: str = "auto",
    calibration_path: str | os.PathLike | None = None,
    progress: Progress | None = None,
) -> InferSummary:
    """Run the model over the shards and write `detections.npz` + `infer.json` (the A10G step)."""
    started = time.perf_counter()
    manifest = shards.read_manifest(shards_uri)
    calibration = load_calibration(calibration_path) if calibration_path is not None else None
    detector = OnnxDetector(model, device)
    parts = []
    infer_s = 0.0
    for sequence, batch in enumerate(shards.iter_shards(shards_uri, manifest)):
        t0 = time.perf_counter()
        parts.append(detect_batch(detector, batch, calibration))
        infer_s += time.perf_counter() - t0
        _report(
            progress,
            f"inferred shard {sequence + 1}/{manifest['shards']}",
            (sequence + 1) / max(1, manifest["shards"]),
        )
    detections = Detections.concat(parts)
    sampled = len(detections.sampled_frame_index)
    summary = InferSummary(
        detections_total=len(detections),
        sampled_frames=sampled,
        execution_provider=detector.execution_provider,
        model=detector.describe(),
        infer_s=round(infer_s, 4),
        frames_per_s=round(sampled / infer_s, 3) if infer_s > 0 else 0.0,
        total_s=round(time.perf_counter() - started, 4),
    )
    storage.write_bytes(storage.join(detections_uri, "detections.npz"), detections.to_bytes())
    body = {
        "summary": summary.as_dict(),
        "preprocess": manifest["summary"],
        "video": manifest["video"],
    }
    storage.write_bytes(
        storage.join(detections_uri, INFER_SUMMARY), json.dumps(body, indent=2).encode()
    )
    return summary


def commit_outputs(out_dir: str | os.PathLike, files: dict[str, bytes]) -> None:
    """Put all files into out_dir at once, as far as the storage allows.

    Locally they are written into a fresh folder beside out_dir and renamed into place, so a
    failure leaves out_dir as it was (files already there are only ever replaced by name).
    On S3 each object is one atomic PUT, and report.json goes last: its presence means done.
    """
    if storage.is_s3(out_dir):
        for name in sorted(files, key=lambda n: n == "report.json"):
            storage.write_bytes(storage.join(out_dir, name), files[name])
        return
    out = Path(out_dir).absolute()
    if out.exists() and not out.is_dir():
        raise UserError(f"{out_dir}: exists and is not a folder; choose another --out")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
        # mkdtemp makes a private folder; the output folder gets the usual permissions.
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)
    except OSError as exc:
        raise UserError(f"{out_dir}: cannot create the output folder ({exc.strerror})") from None
    try:
        for name, payload in files.items():
            (staging / name).write_bytes(payload)
        try:
            staging.rename(out)  # out did not exist: the whole folder appears at once
            return
        except OSError:
            pass
        # Report last, so a reader that sees a new report.json sees the maps beside it.
        for name in sorted(files, key=lambda n: n == "report.json"):
            os.replace(staging / name, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def aggregate(
    detections_uri: str,
    calibration_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    video_facts: VideoFacts,
    res_m: float = 1.0,
    live_half_life_s: float | None = None,
    progress: Progress | None = None,
) -> dict:
    """Project, split teams, build maps, PNGs and report.json into out_dir (the CPU step)."""
    started = time.perf_counter()
    calibration = load_calibration(calibration_path)
    detections = Detections.from_bytes(
        storage.read_bytes(storage.join(detections_uri, "detections.npz"))
    )
    meta_uri = storage.join(detections_uri, INFER_SUMMARY)
    meta = json.loads(storage.read_bytes(meta_uri)) if storage.exists(meta_uri) else {}
    pre = meta.get("preprocess", {})
    inf = meta.get("summary", {})
    _report(progress, "aggregating", 0.0)
    timings = {
        "decode_s": pre.get("decode_s", 0.0),
        "preprocess_s": pre.get("preprocess_s", 0.0),
        "infer_s": inf.get("infer_s", 0.0),
        "total_s": pre.get("total_s", 0.0)
        + inf.get("total_s", 0.0)
        + (time.perf_counter() - started),
    }
    decode = {
        "sample_fps": pre.get("sample_fps"),
        "frames_decoded": pre.get("frames_decoded"),
        "frames_lost": pre.get("frames_lost", 0),
    }
    files, report = build_outputs(
        detections,
        calibration,
        video_facts,
        res_m=res_m,
        live_half_life_s=live_half_life_s,
        model=inf.get("model", {}),
        timings=timings,
        decode=decode,
    )
    commit_outputs(out_dir, files)
    _report(progress, "done", 1.0)
    return report


class _Producer(threading.Thread):
    """Decodes and batches in the background, handing batches over through a bounded queue."""

    _DONE = object()

    def __init__(self, batches: Iterator[FrameBatch]):
        super().__init__(name="gpu-analysis-decode", daemon=True)
        self._batches = batches
        self.queue: queue.Queue = queue.Queue(maxsize=QUEUE_BATCHES)
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for batch in self._batches:
                while not self.stop.is_set():
                    try:
                        self.queue.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self.stop.is_set():
                    return
        except BaseException as exc:  # handed to the consumer, re-raised there
            self.error = exc
        finally:
            self._put_done()

    def _put_done(self) -> None:
        while not self.stop.is_set():
            try:
                self.queue.put(self._DONE, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[FrameBatch]:
        while True:
            item = self.queue.get()
            if item is self._DONE:
                if self.error is not None:
                    raise self.error
                return
            yield item


def analyze(
    video_path: str | os.PathLike,
    calibration_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    sample_fps: float = 5.0,
    model: str = "builtin",
    device: str = "auto",
    progress: Progress | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    res_m: float = 1.0,
    live_half_life_s: float | None = None,
    detector: Detector | None = None,
) -> dict:
    """The whole analysis in one process: what `gpu-analysis analyze` runs.

    Every input is checked before any work starts. Decoding runs in a thread that feeds a
    bounded queue while the model works on earlier batches. `detector` replaces the ONNX model
    (tests inject ground-truth detections this way).
    """
    started = time.perf_counter()
    if not sample_fps > 0:
        raise UserError(f"--sample-fps must be > 0, got {sample_fps}")
    with _LocalVideo(video_path) as local_path:
        facts = probe(local_path)
        calibration = load_calibration(calibration_path)
        if detector is None:
            # One core is left to the decode thread: on an otherwise idle 2-core machine that
            # ran 5.4 s against 6.9 s with the model on both (benchmarks/engine_choices.py).
            detector = OnnxDetector(model, device, threads=max(1, (os.cpu_count() or 1) - 1))
        geometry = letterbox_geometry((facts.width, facts.height), detector.input_wh)
        stats = DecodeStats()
        # Progress is reported from this thread, not the decode thread: callers' callbacks
        # (Dagster's logger, a Pipes context) need not be thread-safe.
        producer = _Producer(_decoded_batches(facts, geometry, sample_fps, batch_size, stats, None))
        producer.start()
        parts = []
        infer_s = 0.0
        detections_total = analysed = 0
        expected = max(1, math.ceil(facts.frame_count * min(1.0, sample_fps / facts.fps)))
        try:
            for batch in producer:
                t0 = time.perf_counter()
                found = detect_batch(detector, batch, calibration)
                detections_total += len(found)
                # Only detections on the pitch count in the maps; dropping the rest (the crowd,
                # the bench) now keeps memory proportional to players, not to false alarms.
                on_pitch = calibration.project_to_pitch(found.foot_points_px)[1]
                parts.append(found.select(on_pitch))
                infer_s += time.perf_counter() - t0
                analysed += len(batch)
                _report(progress, f"analysed {analysed}/{expected} frames", analysed / expected)
        finally:
            producer.stop.set()
            producer.join()
    if stats.sampled_frames == 0:
        raise UserError(f"{video_path}: no frame could be decoded")
    detections = Detections.concat(parts)
    facts = dataclasses.replace(facts, path=str(video_path))
    describe = getattr(detector, "describe", None)
    model_info = (
        describe()
        if describe
        else {
            "name": detector.name,
            "format": detector.kind,
            "input_size": list(detector.input_wh),
            "execution_provider": detector.execution_provider,
        }
    )
    _report(progress, "aggregating", 0.99)
    files, report = build_outputs(
        detections,
        calibration,
        facts,
        res_m=res_m,
        live_half_life_s=live_half_life_s,
        model=model_info,
        timings={
            "decode_s": round(stats.decode_s, 4),
            "infer_s": round(infer_s, 4),
            "total_s": time.perf_counter() - started,
        },
        decode={
            "sample_fps": sample_fps,
            "frames_decoded": stats.frames_decoded,
            "frames_lost": stats.frames_lost,
        },
        detections_total=detections_total,
    )
    commit_outputs(out_dir, files)
    _report(progress, "done", 1.0)
    return report
