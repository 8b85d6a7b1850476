"""Sanity checks: refuse a match whose inputs or results cannot mean anything, flag a doubtful one.

Each check is a plain function over the typed values of a match (video facts, calibration,
detection counts). A check raises UserError when no useful map can come out, and returns
warnings (for report.json) when the map is still useful but part of the input was garbage.
The thresholds and the figures they rest on are in docs/model.md, "What the engine refuses".
"""

from __future__ import annotations

import dataclasses

import numpy as np

from gpu_analysis.engine.batching import FrameBatch
from gpu_analysis.engine.calibration import Calibration
from gpu_analysis.engine.errors import UserError
from gpu_analysis.engine.records import VideoFacts

# A player is ~6 % of a wide view's height: below 64 px a frame shows no one the model can find.
MIN_FRAME_SIDE_PX = 64
# 22 players, 3 officials and a few substitutes warming up on the touchline: 30 on the pitch at
# once is already generous (the built-in model peaks at 20-23 on the 640x360 to 1280x720 test
# clips). More in a frame is a warning: the stand-in models of the tests find 90-100 there
# (shirts and pitch lines alike), the built-in model 55 on a 320x180 clip, and their maps still
# follow the play. More than ABSURD_PLAYERS_ON_PITCH in most frames is an error: no map.
MAX_PLAYERS_ON_PITCH = 30
ABSURD_PLAYERS_ON_PITCH = 200
# A fault that hits more than this share of the sampled frames makes the whole map garbage.
MOST_FRAMES = 0.5
# A model whose output is mostly NaN or infinite is broken, whatever the rest of it says.
MOST_DETECTIONS = 0.5
# The share of the frame that the calibration must put on the pitch (a coarse grid of points).
# The test clips' wide views put 35 % of the frame there, a close-up puts nearly all of it; a
# homography for another camera or another resolution often puts none.
MIN_FRAME_ON_PITCH = 0.02
# Detections off the pitch (crowd, bench, advertising boards) are dropped. The built-in model
# puts none there on the test clips, the crude stand-ins of the tests 89-99 %. Most of them off
# the pitch is a warning (check the calibration); none on it is an error (the map is empty).
WARN_OFF_PITCH = 0.5
# A frame whose mean brightness (0-255) is under this is black: a lost feed, a fade. The test
# clips average 85-92, their darkest look (brightness x 0.7) about 60; H.264 black averages 0-3.
BLACK_FRAME_MEAN = 10
# Points per frame side when measuring how much of the frame lands on the pitch.
FRAME_GRID = 24


@dataclasses.dataclass(frozen=True)
class DetectionCounts:
    """What the detect stage found, counted per sampled frame, for the checks of the map."""

    sampled_frames: int
    detections_total: int  # every detection the model returned, finite or not
    nonfinite: int  # detections with a NaN or infinite coordinate (dropped)
    nonfinite_frames: int  # sampled frames with at least one of them
    on_pitch_per_frame: np.ndarray  # int64 (sampled_frames,): detections on the pitch
    black_frames: int = 0  # sampled frames that were black

    @property
    def on_pitch(self) -> int:
        return int(self.on_pitch_per_frame.sum())


def check_video(facts: VideoFacts, label: str) -> None:
    """Refuse a video too small to show a player (a 1x1 stream decodes fine and means nothing)."""
    if min(facts.width, facts.height) < MIN_FRAME_SIDE_PX:
        raise UserError(
            f"{label}: frames are {facts.width}x{facts.height} pixels; at least "
            f"{MIN_FRAME_SIDE_PX} on each side are needed to see players (is this the match video?)"
        )


def frame_share_on_pitch(calibration: Calibration, width: int, height: int) -> float:
    """The share of the frame (a grid of points on it) that the calibration puts on the pitch."""
    xs = (np.arange(FRAME_GRID) + 0.5) * width / FRAME_GRID
    ys = (np.arange(FRAME_GRID) + 0.5) * height / FRAME_GRID
    grid_px = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
    _, on_pitch = calibration.project_to_pitch(grid_px)
    return float(on_pitch.mean())


def check_calibration_sees_pitch(calibration: Calibration, facts: VideoFacts, label: str) -> None:
    """Refuse a calibration that maps (nearly) none of the video's frame onto the pitch."""
    share = frame_share_on_pitch(calibration, facts.width, facts.height)
    if share < MIN_FRAME_ON_PITCH:
        raise UserError(
            f"{label}: the calibration maps {share:.1%} of the {facts.width}x{facts.height} "
            f"frame onto the pitch (at least {MIN_FRAME_ON_PITCH:.0%} needed); check that it "
            "was made for this camera and this video's resolution, and that pitch_points are "
            "metres from a corner of the pitch"
        )


def black_frames(batch: FrameBatch) -> int:
    """How many frames of a batch are black (the letterbox padding is not looked at)."""
    g = batch.geometry
    content = batch.images_rgb[:, g.pad_y : g.pad_y + g.resized_h, g.pad_x : g.pad_x + g.resized_w]
    means = content[:, ::4, ::4].reshape(len(batch), -1).mean(axis=1)
    return int((means < BLACK_FRAME_MEAN).sum())


def check_detections(counts: DetectionCounts) -> list[str]:
    """Refuse a map made of nothing or of garbage; return warnings for a partly doubtful one."""
    frames = counts.sampled_frames
    warnings: list[str] = []
    if counts.black_frames:
        line = f"{counts.black_frames} of {frames} sampled frames are black"
        if counts.black_frames > MOST_FRAMES * frames:
            raise UserError(f"{line}; check the video: a lost feed, a fade or the wrong stream")
        warnings.append(f"{line}; the map covers the others")
    if counts.nonfinite:
        line = (
            f"the model gave NaN or infinite coordinates for {counts.nonfinite} detections in "
            f"{counts.nonfinite_frames} of {frames} sampled frames"
        )
        if counts.nonfinite > MOST_DETECTIONS * counts.detections_total:
            raise UserError(
                f"{line}; check the model's export (precision, input normalisation) and "
                "run it on a few frames by hand"
            )
        warnings.append(f"{line}; they were dropped")
    finite = counts.detections_total - counts.nonfinite
    if finite == 0:
        raise UserError(
            f"the model found no players in any of the {frames} sampled frames, so the map "
            "would be empty; check that --model detects players in this footage (its "
            "threshold and classes) and that the video shows the match"
        )
    off_share = 1.0 - counts.on_pitch / finite
    off_line = (
        f"{off_share:.0%} of the {finite} detections land outside the pitch "
        f"({counts.on_pitch} on it)"
    )
    if counts.on_pitch == 0:
        raise UserError(
            f"{off_line}; check that the calibration belongs to this camera and video "
            "(its image_points are pixels of this video's frames)"
        )
    if off_share > WARN_OFF_PITCH:
        warnings.append(f"{off_line}; check the calibration")
    per_frame = counts.on_pitch_per_frame
    spread = f"up to {int(per_frame.max())}, median {np.median(per_frame):g}"
    absurd = int((per_frame > ABSURD_PLAYERS_ON_PITCH).sum())
    if absurd > MOST_FRAMES * frames:
        raise UserError(
            f"more than {ABSURD_PLAYERS_ON_PITCH} players on the pitch in {absurd} of {frames} "
            f"sampled frames ({spread}); the model finds things that are not players: check "
            "its threshold and classes"
        )
    crowded = int((per_frame > MAX_PLAYERS_ON_PITCH).sum())
    if crowded:
        warnings.append(
            f"more than {MAX_PLAYERS_ON_PITCH} players on the pitch in {crowded} of {frames} "
            f"sampled frames ({spread}); the model may be counting pitch lines or the crowd"
        )
    return warnings
