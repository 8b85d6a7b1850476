"""The engine's public steps: what the CLI, the Dagster assets and the GPU workers call.

A match flows through the stages in `STAGES`, each tagged with the split step that runs it:
video -> frame batches (preprocess, the T4 step) -> detections (infer, the A10G step) -> maps
and report (aggregate, CPU). `preprocess`, `infer` and `aggregate` each run their step's stages
between storage; `analyze` runs all of them in one process, decoding overlapped with inference.
A new stage is one module with a `(value, MatchRun) -> value` function and one entry in
`STAGES`. Locations are local paths or s3://bucket/prefix URIs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import queue
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np

from gpu_analysis.engine import calibration as _calibration
from gpu_analysis.engine import camera_tracking, sanity, shards, storage
from gpu_analysis.engine import video as _video
from gpu_analysis.engine.batching import (
    FrameBatch,
    Letterbox,
    iter_batches,
    letterbox,
    letterbox_geometry,
)
from gpu_analysis.engine.calibration import Calibration
from gpu_analysis.engine.detections import Detections
from gpu_analysis.engine.errors import LASTING_OS_ERRORS, UserError, os_error_line
from gpu_analysis.engine.inference import Detector, OnnxDetector
from gpu_analysis.engine.records import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_DEVICE,
    DEFAULT_MODEL,
    DEFAULT_SAMPLE_FPS,
    InferSummary,
    PreprocessSummary,
    VideoFacts,
    as_plain,
    from_plain,
)
from gpu_analysis.engine.report import build_outputs, pitch_positions_m
from gpu_analysis.engine.teams import Role, torso_colours
from gpu_analysis.engine.video import DecodeStats

Progress = Callable[[str, float], None]
Step = Literal["preprocess", "infer", "aggregate"]
DETECTIONS_FILE = "detections.npz"
INFER_SUMMARY = "infer.json"
# Batches waiting between the decode thread and the model: enough to ride out jitter,
# few enough that memory stays flat however long the match is.
QUEUE_BATCHES = 3
# Without calibration or boxes, assume a player is this fraction of the frame height tall.
FALLBACK_PLAYER_HEIGHT = 0.06
PLAYER_HEIGHT_M = 1.8
log = logging.getLogger("gpu_analysis.engine.steps")

__all__ = [
    "STAGES",
    "Calibration",
    "Detections",
    "InferSummary",
    "MatchRun",
    "PreprocessSummary",
    "Stage",
    "VideoFacts",
    "aggregate",
    "analyze",
    "infer",
    "load_calibration",
    "preprocess",
    "probe",
]


def probe(video_path: str | os.PathLike, stream: int | None = None) -> VideoFacts:
    """A video's facts; UserError if it is missing, empty, not a video, has no frames or
    frames too small to show a player. `stream`: ffprobe's index of the video stream to use
    (default: the stream marked default, else the first video stream)."""
    facts = _video.probe(video_path, stream=stream)
    sanity.check_video(facts, str(video_path))
    return facts


def load_calibration(path: str | os.PathLike, facts: VideoFacts | None = None) -> Calibration:
    """A validated calibration (contracts section 1); UserError naming the problem otherwise.

    With the video's facts it is also fitted to the video's frame size and must map part of
    the frame onto the pitch.
    """
    calibration = _calibration.load_calibration(path)
    if facts is None:
        return calibration
    calibration = calibration.for_video(facts.width, facts.height, str(path))
    sanity.check_calibration_sees_pitch(calibration, facts, str(path))
    return calibration


@dataclasses.dataclass
class MatchRun:
    """What the stages of one analysis share: its inputs, settings and running counts.

    `facts.path` is a local file while decoding. `progress` is called only from the thread
    that runs `analyze` or the split step: callers' callbacks (Dagster's logger, a Pipes
    context) need not be thread-safe, so the decode stage reports only when it runs there.
    """

    facts: VideoFacts
    calibration: Calibration | None = None
    calibration_label: str = "calibration"
    sample_fps: float = DEFAULT_SAMPLE_FPS
    stream: int | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    detector: Detector | None = None
    geometry: Letterbox | None = None
    res_m: float = 1.0
    live_half_life_s: float | None = None
    progress: Progress | None = None
    decode_reports_progress: bool = True
    decode: DecodeStats = dataclasses.field(default_factory=DecodeStats)
    detections_total: int = 0
    # Detections the model gave with a NaN or infinite coordinate (dropped), and their frames.
    detections_nonfinite: int = 0
    frames_nonfinite: int = 0
    frames_black: int = 0
    infer_s: float = 0.0
    # Camera tracking (with a calibration): the tracker, the reference frame's letterboxed
    # image when it is not the first sampled frame, its seconds, and the preview PNGs.
    tracker: camera_tracking.CameraTracker | None = None
    reference_image_rgb: np.ndarray | None = None
    tracking_s: float = 0.0
    detections_skipped: int = 0  # detections in frames tracking skipped
    previews: dict[str, bytes] = dataclasses.field(default_factory=dict)
    camera: dict = dataclasses.field(default_factory=dict)
    # What report.json should tell the reader about how the run deviated from what was asked.
    warnings: list[str] = dataclasses.field(default_factory=list)
    model_info: dict = dataclasses.field(default_factory=dict)
    # Seconds spent before this process took over (the earlier split steps).
    timings: dict = dataclasses.field(default_factory=dict)
    started: float = dataclasses.field(default_factory=time.perf_counter)

    def report(self, message: str, fraction: float) -> None:
        if self.progress is not None:
            self.progress(message, min(1.0, max(0.0, fraction)))

    @property
    def expected_frames(self) -> int:
        rate = min(1.0, self.sample_fps / self.facts.fps)
        return max(1, math.ceil(self.facts.frame_count * rate))


@dataclasses.dataclass(frozen=True)
class MatchOutputs:
    """The delivered files (contract section 2) as bytes, and the report they include."""

    files: dict[str, bytes]
    report: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage of a match: its name, the split step that runs it, and its function."""

    name: str
    step: Step
    run: Callable[[Any, MatchRun], Any]


def decoding_facts(stats: DecodeStats) -> dict:
    """How the video was decoded, for report.json `decoding`."""
    return {
        "stream_index": stats.stream_index,
        "decoder": stats.decoder,
        "frames_deinterlaced": stats.frames_deinterlaced,
        "rotation_deg": stats.rotation_deg,
        "packets_damaged": stats.packets_damaged,
        "first_timestamp_s": stats.first_timestamp_s,
        "last_timestamp_s": stats.last_timestamp_s,
    }


def decode_frames(facts: VideoFacts, run: MatchRun) -> Iterator[FrameBatch]:
    """Video -> sampled, letterboxed frames in batches of `run.batch_size`."""
    assert run.geometry is not None
    stats = run.decode
    frames = _video.iter_sampled_frames(facts, run.sample_fps, stats, stream=run.stream)
    for batch in iter_batches(frames, run.geometry, run.batch_size):
        if run.decode_reports_progress:
            run.report(
                f"decoded {stats.frames_decoded}/{facts.frame_count} frames",
                stats.frames_decoded / max(1, facts.frame_count),
            )
        yield batch


def decoded_reference_image(
    facts: VideoFacts, calibration: Calibration, geometry: Letterbox, stream: int | None = None
):
    """The calibration's reference frame, letterboxed, when it is not the video's first frame
    (None otherwise: the first sampled frame is the reference). Decoding up to it costs one
    pass over the frames before it."""
    index = calibration.reference_frame_index(facts.fps)
    if index <= 0:
        return None
    if index >= facts.frame_count:
        raise UserError(
            f"calibration: reference_frame {index} is past the video's last frame "
            f"({facts.frame_count - 1}); give the frame the points were read on"
        )
    for frame in _video.iter_sampled_frames(facts, facts.fps, DecodeStats(), stream=stream):
        if frame.frame_index >= index:
            return letterbox(frame.image_bgr, geometry)
    raise UserError(f"{facts.path}: frame {index} (the calibration's reference) cannot be decoded")


def sampled_reference_image(
    shards_uri: str, manifest: dict, calibration: Calibration, fps: float
) -> np.ndarray | None:
    """The sampled frame nearest the calibration's reference frame, from the shards (the
    infer step has no video); None when that is the first sampled frame."""
    index = calibration.reference_frame_index(fps)
    if index <= 0:
        return None
    best, best_gap, first = None, None, True
    for batch in shards.iter_shards(shards_uri, manifest):
        for i, frame in enumerate(batch.frame_index):
            gap = abs(int(frame) - index)
            if best_gap is None or gap < best_gap:
                best, best_gap = batch.images_rgb[i].copy(), gap
                if first and i == 0 and gap == 0:
                    return None
            first = False
        if batch.frame_index[-1] > index:
            break
    return best


def detect_players(batches: Iterator[FrameBatch], run: MatchRun) -> Detections:
    """Frame batches -> each player's foot point, pitch position and shirt colour.

    With a calibration, only detections on the pitch are kept: the crowd and the bench are
    not players, and dropping them now keeps memory proportional to players, not to false
    alarms. `run.detections_total` still counts them all. Detections with a NaN or infinite
    coordinate are dropped too, and counted in `run.detections_nonfinite`.
    """
    assert run.detector is not None
    parts = []
    analysed = 0
    for batch in batches:
        homographies = track_camera(batch, run)
        t0 = time.perf_counter()
        found = detect_batch(run.detector, batch, run.calibration, homographies)
        run.detections_total += len(found)
        if homographies is not None:
            skipped = ~homographies.covered[np.searchsorted(batch.frame_index, found.frame_index)]
            run.detections_skipped += int(skipped.sum())
        run.frames_black += sanity.black_frames(batch)
        finite = np.isfinite(found.foot_points_px).all(axis=1)
        if not finite.all():
            run.detections_nonfinite += int((~finite).sum())
            run.frames_nonfinite += len(np.unique(found.frame_index[~finite]))
            found = found.select(finite)
        if run.calibration is not None:
            found = found.select(found.on_pitch())
        parts.append(found)
        run.infer_s += time.perf_counter() - t0
        analysed += len(batch)
        run.report(f"detected players in {analysed}/{run.expected_frames} frames",
                   analysed / run.expected_frames)  # fmt: skip
    if run.tracker is not None:
        run.camera = {
            **run.tracker.summary(),
            "tracking_s": round(run.tracking_s, 4),
            "detections_skipped": run.detections_skipped,
        }
    return Detections.concat(parts)


def track_camera(batch: FrameBatch, run: MatchRun) -> camera_tracking.BatchCameras | None:
    """Each frame's homography from camera tracking (with a calibration), previews on the way.

    The first frame starts the tracker: from the reference frame's image when the
    calibration names a later frame, else from this frame, which is then the reference. The
    reference view is checked against the calibration first (camera_tracking.check_reference).
    """
    if run.calibration is None or len(batch) == 0:
        return None
    started = time.perf_counter()
    if run.tracker is None:
        run.tracker = camera_tracking.CameraTracker(
            run.calibration, batch.geometry, run.calibration.distortion
        )
        reference = run.reference_image_rgb
        if reference is None:
            reference = batch.images_rgb[0]
        reference_index = run.calibration.reference_frame_index(run.facts.fps)
        camera_tracking.check_reference(
            run.tracker, reference, run.calibration_label, reference_index
        )
        run.tracker.set_reference(reference)
        run.previews[camera_tracking.PREVIEW_FILE] = camera_tracking.preview_png(
            reference, batch.geometry, run.calibration, run.calibration.image_to_pitch,
            "reference frame",
        )  # fmt: skip
    cameras = camera_tracking.track_batch(run.tracker, batch)
    for i in range(len(batch)):
        name = camera_tracking.periodic_preview_name(float(batch.timestamp_s[i]))
        if name is not None and name not in run.previews and cameras.covered[i]:
            run.previews[name] = camera_tracking.preview_png(
                batch.images_rgb[i], batch.geometry, run.calibration,
                cameras.image_to_pitch[i], f"t = {batch.timestamp_s[i]:.0f} s (tracked)",
            )  # fmt: skip
    run.tracking_s += time.perf_counter() - started
    return cameras


def build_match_outputs(detections: Detections, run: MatchRun) -> MatchOutputs:
    """Detections -> pitch positions, teams, maps, PNGs and report.json."""
    if run.calibration is None:
        raise UserError("aggregating needs the calibration")
    run.report("aggregating", 0.99)
    for warning in sanity.check_detections(detection_counts(detections, run)):
        log.warning("warning: %s", warning)
        run.warnings.append(warning)
    timings = dict(run.timings)
    timings["infer_s"] = round(timings.get("infer_s", 0.0) + run.infer_s, 4)
    timings["total_s"] = timings.get("total_s", 0.0) + (time.perf_counter() - run.started)
    files, report = build_outputs(
        detections,
        run.calibration,
        run.facts,
        res_m=run.res_m,
        live_half_life_s=run.live_half_life_s,
        model=run.model_info,
        timings=timings,
        decode={
            "sample_fps": run.sample_fps,
            "frames_decoded": run.decode.frames_decoded,
            "frames_lost": run.decode.frames_lost,
            "warnings": run.warnings,
            "decoding": decoding_facts(run.decode),
        },
        detections_total=run.detections_total,
        camera=run.camera,
        previews=run.previews,
    )
    return MatchOutputs(files, report)


def detection_counts(detections: Detections, run: MatchRun) -> sanity.DetectionCounts:
    """The counts the sanity checks judge a match's detections by."""
    assert run.calibration is not None
    _, on_pitch = pitch_positions_m(detections, run.calibration)
    sampled = np.sort(detections.sampled_frame_index)
    frame_of = np.searchsorted(sampled, detections.frame_index[on_pitch])
    return sanity.DetectionCounts(
        sampled_frames=len(sampled),
        # Players of frames camera tracking skipped (cuts, close-ups) were never projected:
        # they are neither on nor off the pitch.
        detections_total=max(
            run.detections_total - int(run.camera.get("detections_skipped", 0)), len(detections)
        ),
        nonfinite=run.detections_nonfinite,
        nonfinite_frames=run.frames_nonfinite,
        on_pitch_per_frame=np.bincount(frame_of, minlength=len(sampled)).astype(np.int64),
        black_frames=run.frames_black,
    )


# The stages of a match in order. Each split step runs its own, with storage in between.
STAGES: tuple[Stage, ...] = (
    Stage("decode", "preprocess", decode_frames),
    Stage("detect", "infer", detect_players),
    Stage("aggregate", "aggregate", build_match_outputs),
)


def run_stages(step: Step, value: Any, run: MatchRun) -> Any:
    """Pass `value` through the stages of `step`, in order."""
    for stage in STAGES:
        if stage.step == step:
            value = stage.run(value, run)
    return value


def _model_input_wh(model: str, input_size: str | None = None) -> tuple[int, int]:
    # A CPU session is enough to read the input shape, and validates the file on the way.
    return OnnxDetector(model, device="cpu", input_size=input_size).input_wh


def _sampled_rate(sample_fps: float, facts: VideoFacts, warnings: list[str]) -> float:
    """The rate a video is sampled at: as asked, or every frame when that asks for more.

    A higher rate is clamped rather than refused: the profile's one rate serves every match,
    and a video slower than it should still be analysed, frame by frame.
    """
    if sample_fps <= facts.fps:
        return sample_fps
    warning = (
        f"sample fps {sample_fps:g} is above the video's {facts.fps:g} fps; "
        f"every frame was analysed ({facts.fps:g} per second)"
    )
    log.warning(warning)
    warnings.append(warning)
    return facts.fps


def preprocess(
    video_uri: str,
    shards_uri: str,
    *,
    sample_fps: float = DEFAULT_SAMPLE_FPS,
    model: str = DEFAULT_MODEL,
    batch_size: int = DEFAULT_BATCH_SIZE,
    input_size: str | None = None,
    stream: int | None = None,
    progress: Progress | None = None,
) -> PreprocessSummary:
    """Decode, sample, letterbox and batch a video into shards for `infer` (the T4 step)."""
    started = time.perf_counter()
    _video.check_sample_fps(sample_fps)
    input_wh = _model_input_wh(model, input_size)
    with storage.local_copy(video_uri) as local_path:
        facts = dataclasses.replace(probe(local_path, stream), path=str(video_uri))
        geometry = letterbox_geometry((facts.width, facts.height), input_wh)
        warnings: list[str] = []
        sample_fps = _sampled_rate(sample_fps, facts, warnings)
        run = MatchRun(
            facts=dataclasses.replace(facts, path=str(local_path)),
            sample_fps=sample_fps,
            stream=stream,
            warnings=warnings,
            batch_size=batch_size,
            geometry=geometry,
            progress=progress,
        )
        with shards.ShardWriter(shards_uri) as writer:
            for batch in run_stages("preprocess", run.facts, run):
                writer.write(batch)
        count, shard_bytes = writer.shards, writer.bytes_written
    stats = run.decode
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
        warnings=tuple(run.warnings),
        decoding=decoding_facts(stats),
    )
    shards.write_manifest(
        shards_uri,
        {
            "geometry": as_plain(geometry),
            "shards": count,
            "batch_size": batch_size,
            "model": str(model),
            "summary": as_plain(summary),
        },
    )
    run.report(f"wrote {count} shards", 1.0)
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
    detector: Detector,
    batch: FrameBatch,
    calibration: Calibration | None = None,
    cameras: camera_tracking.BatchCameras | None = None,
) -> Detections:
    """Run a detector on one batch; project each foot to the pitch once (with a calibration)
    and read the shirt colour of each player on the pitch.

    With `cameras` (camera tracking), each frame is projected with its own homography, and
    a frame tracking did not cover projects nothing: a stale homography would put its
    players in the wrong place.
    """
    feet = detector.detect(batch)
    parts = []
    for i, frame_feet in enumerate(feet):
        k = len(frame_feet.scores)
        feet_px = np.asarray(frame_feet.foot_points_px, dtype=np.float64).reshape(-1, 2)
        heights = _player_heights_input_px(
            feet_px, frame_feet.heights_px, batch.geometry, calibration
        )
        if calibration is not None and cameras is not None and not cameras.covered[i]:
            positions_m, on_pitch = np.full((k, 2), np.nan), np.zeros(k, bool)
        elif calibration is not None:
            positions_m, on_pitch = calibration.project_to_pitch(
                feet_px, None if cameras is None else cameras.image_to_pitch[i]
            )
        else:
            positions_m, on_pitch = np.full((k, 2), np.nan), np.ones(k, bool)
        on_pitch &= np.isfinite(feet_px).all(axis=1)  # a NaN foot has no shirt to read
        # Shirts are read only for players on the pitch: the crowd is not a team, and the
        # colour reading is the costly part of this loop.
        rgb = np.zeros((k, 3), np.float32)
        valid = np.zeros(k, bool)
        rgb[on_pitch], valid[on_pitch] = torso_colours(
            batch.images_rgb[i], batch.geometry.to_input_px(feet_px[on_pitch]), heights[on_pitch]
        )
        positions_m = np.where(on_pitch[:, None], positions_m, np.nan)
        parts.append(
            Detections(
                frame_index=np.full(k, batch.frame_index[i], dtype=np.int64),
                timestamp_s=np.full(k, batch.timestamp_s[i], dtype=np.float64),
                foot_points_px=feet_px.astype(np.float32),
                positions_m=positions_m.astype(np.float32),
                scores=np.asarray(frame_feet.scores, dtype=np.float32),
                torso_rgb=rgb,
                torso_valid=valid,
                detector_role=(
                    np.full(k, Role.UNKNOWN, np.int8)
                    if frame_feet.roles is None
                    else np.asarray(frame_feet.roles, np.int8)
                ),
                sampled_frame_index=batch.frame_index[i : i + 1].astype(np.int64),
                sampled_timestamp_s=batch.timestamp_s[i : i + 1].astype(np.float64),
                **_sampled_camera(cameras, i),
            )
        )
    return Detections.concat(parts)


def _sampled_camera(cameras: camera_tracking.BatchCameras | None, i: int) -> dict:
    if cameras is None:
        return {}
    return {
        "sampled_image_to_pitch": cameras.image_to_pitch[i : i + 1],
        "sampled_covered": cameras.covered[i : i + 1],
        "sampled_cut": cameras.cut[i : i + 1],
    }


def infer(
    shards_uri: str,
    detections_uri: str,
    *,
    model: str = DEFAULT_MODEL,
    device: str = DEFAULT_DEVICE,
    calibration_path: str | os.PathLike | None = None,
    classes: str | None = None,
    input_size: str | None = None,
    progress: Progress | None = None,
) -> InferSummary:
    """Run the model over the shards and write `detections.npz` + `infer.json` (the A10G step)."""
    started = time.perf_counter()
    manifest = shards.read_manifest(shards_uri)
    pre = from_plain(PreprocessSummary, manifest["summary"])
    detector = OnnxDetector(model, device, classes=classes, input_size=input_size)
    calibration = (
        load_calibration(calibration_path, pre.video) if calibration_path is not None else None
    )
    run = MatchRun(
        facts=pre.video,
        calibration=calibration,
        calibration_label=str(calibration_path),
        sample_fps=pre.sample_fps,
        detector=detector,
        progress=progress,
        reference_image_rgb=(
            None
            if calibration is None
            else sampled_reference_image(shards_uri, manifest, calibration, pre.video.fps)
        ),
    )
    detections = run_stages("infer", shards.iter_shards(shards_uri, manifest), run)
    sampled = len(detections.sampled_frame_index)
    summary = InferSummary(
        detections_total=run.detections_total,
        sampled_frames=sampled,
        execution_provider=detector.execution_provider,
        model=detector.describe(),
        infer_s=round(run.infer_s, 4),
        frames_per_s=round(sampled / run.infer_s, 3) if run.infer_s > 0 else 0.0,
        total_s=round(time.perf_counter() - started, 4),
    )
    storage.write_bytes(storage.join(detections_uri, DETECTIONS_FILE), detections.to_bytes())
    for name, png in run.previews.items():
        storage.write_bytes(storage.join(detections_uri, name), png)
    body = {
        "summary": as_plain(summary),
        "preprocess": manifest["summary"],
        "camera": run.camera,
        "previews": sorted(run.previews),
    }
    storage.write_bytes(
        storage.join(detections_uri, INFER_SUMMARY), json.dumps(body, indent=2).encode()
    )
    return summary


def commit_outputs(out_dir: str | os.PathLike, files: dict[str, bytes]) -> None:
    """Put all files into out_dir at once, as far as the storage allows.

    Locally they are first written whole into a staging folder on out_dir's own file system,
    so a failure (a full disk) leaves out_dir as it was. A new out_dir is staged beside it and
    renamed into place: the whole folder appears at once. An existing one is staged inside
    itself, since it may be a mount point or a link to another disk, which nothing can be
    renamed over or across; its files are then replaced by name, report.json last.
    On S3 each object is one atomic PUT, and report.json goes last: its presence means done.
    """
    if storage.is_s3(out_dir):
        for name in sorted(files, key=lambda n: n == "report.json"):
            storage.write_bytes(storage.join(out_dir, name), files[name])
        return
    out = Path(out_dir).absolute()
    try:
        try:
            existing = os.stat(out)  # through links; a link loop is an error, not "missing"
        except FileNotFoundError:
            existing = None
        if existing is not None and not stat.S_ISDIR(existing.st_mode):
            raise UserError(f"{out_dir}: exists and is not a folder; choose another --out")
        if existing is None:
            out.parent.mkdir(parents=True, exist_ok=True)
        beside_or_inside = out.parent if existing is None else out
        staging = Path(
            tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=beside_or_inside)
        )
    except OSError as exc:
        raise UserError(
            f"{out_dir}: cannot create the output folder: {os_error_line(exc, with_paths=False)}"
        ) from None
    try:
        for name, payload in files.items():
            (staging / name).write_bytes(payload)
        if existing is None:
            # mkdtemp makes a private folder; the output folder gets the usual permissions.
            staging.chmod(0o777 & ~storage.umask())
            try:
                staging.rename(out)
                return
            except OSError:
                pass  # created meanwhile by someone else: put the files in by name
        # Report last, so a reader that sees a new report.json sees the maps beside it.
        for name in sorted(files, key=lambda n: n == "report.json"):
            os.replace(staging / name, out / name)
    except OSError as exc:
        if exc.errno not in LASTING_OS_ERRORS:
            raise  # a passing fault (an I/O error): a retried step may get past it
        raise UserError(
            f"{out_dir}: cannot write the outputs: {os_error_line(exc, with_paths=False)}"
        ) from None
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
    detections = Detections.from_bytes(
        storage.read_bytes(storage.join(detections_uri, DETECTIONS_FILE))
    )
    body = json.loads(storage.read_bytes(storage.join(detections_uri, INFER_SUMMARY)))
    pre = from_plain(PreprocessSummary, body["preprocess"])
    inf = from_plain(InferSummary, body["summary"])
    run = MatchRun(
        facts=video_facts,
        calibration=load_calibration(calibration_path, video_facts),
        calibration_label=str(calibration_path),
        camera=body.get("camera", {}),
        previews={
            name: storage.read_bytes(storage.join(detections_uri, name))
            for name in body.get("previews", [])
        },
        sample_fps=pre.sample_fps,
        res_m=res_m,
        live_half_life_s=live_half_life_s,
        progress=progress,
        decode=DecodeStats(
            frames_decoded=pre.frames_decoded,
            sampled_frames=pre.sampled_frames,
            frames_lost=pre.frames_lost,
            decode_s=pre.decode_s,
            **{
                key: value
                for key, value in (pre.decoding or {}).items()
                if key in {f.name for f in dataclasses.fields(DecodeStats)}
            },
        ),
        detections_total=inf.detections_total,
        warnings=list(pre.warnings),
        model_info=inf.model,
        timings={
            "decode_s": pre.decode_s,
            "preprocess_s": pre.preprocess_s,
            "infer_s": inf.infer_s,
            "total_s": pre.total_s + inf.total_s,
        },
        started=started,
    )
    outputs = run_stages("aggregate", detections, run)
    commit_outputs(out_dir, outputs.files)
    run.report("done", 1.0)
    return outputs.report


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
    sample_fps: float = DEFAULT_SAMPLE_FPS,
    model: str = DEFAULT_MODEL,
    device: str = DEFAULT_DEVICE,
    progress: Progress | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    res_m: float = 1.0,
    live_half_life_s: float | None = None,
    detector: Detector | None = None,
    classes: str | None = None,
    input_size: str | None = None,
    stream: int | None = None,
) -> dict:
    """The whole analysis in one process: what `gpu-analysis analyze` runs.

    Every input is checked before any work starts. The preprocess stages run in a thread that
    feeds a bounded queue while the model works on earlier batches. `detector` replaces the
    ONNX model (tests inject ground-truth detections this way); `classes` and `input_size` are
    the YOLO model's player classes and input size (`--classes`, `--input-size`).
    """
    started = time.perf_counter()
    _video.check_sample_fps(sample_fps)
    with storage.local_copy(video_path) as local_path:
        facts = probe(local_path, stream)
        calibration = load_calibration(calibration_path, facts)
        warnings: list[str] = []
        sample_fps = _sampled_rate(sample_fps, facts, warnings)
        if detector is None:
            # One core is left to the decode thread: on an otherwise idle 2-core machine that
            # ran 5.4 s against 6.9 s with the model on both (benchmarks/engine_choices.py).
            detector = OnnxDetector(
                model,
                device,
                threads=max(1, (os.cpu_count() or 1) - 1),
                classes=classes,
                input_size=input_size,
            )
        geometry = letterbox_geometry((facts.width, facts.height), detector.input_wh)
        run = MatchRun(
            facts=facts,
            calibration=calibration,
            calibration_label=str(calibration_path),
            reference_image_rgb=decoded_reference_image(facts, calibration, geometry, stream),
            sample_fps=sample_fps,
            stream=stream,
            batch_size=batch_size,
            detector=detector,
            geometry=geometry,
            res_m=res_m,
            live_half_life_s=live_half_life_s,
            progress=progress,
            decode_reports_progress=False,  # it runs in the decode thread
            model_info=_describe(detector),
            warnings=warnings,
            started=started,
        )
        producer = _Producer(run_stages("preprocess", facts, run))
        producer.start()
        try:
            detections = run_stages("infer", producer, run)
        finally:
            producer.stop.set()
            producer.join()
    if run.decode.sampled_frames == 0:
        raise UserError(f"{video_path}: no frame could be decoded")
    run.facts = dataclasses.replace(facts, path=str(video_path))
    run.timings = {"decode_s": round(run.decode.decode_s, 4)}
    outputs = run_stages("aggregate", detections, run)
    commit_outputs(out_dir, outputs.files)
    run.report("done", 1.0)
    return outputs.report


def _describe(detector: Detector) -> dict:
    describe = getattr(detector, "describe", None)
    if describe is not None:
        return describe()
    return {
        "name": detector.name,
        "format": detector.kind,
        "input_size": list(detector.input_wh),
        "execution_provider": detector.execution_provider,
    }
