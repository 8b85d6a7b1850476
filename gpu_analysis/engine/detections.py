"""The detections value passed from inference to aggregation, and its file format."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from gpu_analysis.engine import storage


@dataclasses.dataclass(frozen=True)
class Detections:
    """Every detected player of every sampled frame, in source-video pixels.

    The sampled_* arrays list all frames that were looked at, with or without players, so the
    time a map covers is known even when a frame is empty.
    """

    frame_index: np.ndarray  # int64 (K,)
    timestamp_s: np.ndarray  # float64 (K,)
    foot_points_px: np.ndarray  # float32 (K, 2), source pixels
    positions_m: np.ndarray  # float32 (K, 2), pitch metres; NaN off the pitch or not projected
    scores: np.ndarray  # float32 (K,)
    torso_rgb: np.ndarray  # float32 (K, 3), mean shirt colour
    torso_valid: np.ndarray  # bool (K,)
    # int8 (K,): teams.Role the detector's class says (goalkeeper, referee, player), -1 if none
    detector_role: np.ndarray
    sampled_frame_index: np.ndarray  # int64 (M,)
    sampled_timestamp_s: np.ndarray  # float64 (M,)
    # Each sampled frame's homography, source pixels (undistorted) -> pitch metres, as camera
    # tracking found it: float64 (M, 3, 3), NaN where the frame was not covered (a cut, a
    # close-up) or where nothing was tracked (an untracked run: the calibration holds).
    # Built without them (code from before tracking): untracked, every frame covered.
    sampled_image_to_pitch: np.ndarray = None  # type: ignore[assignment]
    sampled_covered: np.ndarray = None  # type: ignore[assignment]  bool (M,): projected
    sampled_cut: np.ndarray = None  # type: ignore[assignment]  bool (M,): a cut just before

    def __post_init__(self) -> None:
        sampled = len(self.sampled_frame_index)
        defaults = {
            "sampled_image_to_pitch": np.full((sampled, 3, 3), np.nan),
            "sampled_covered": np.ones(sampled, bool),
            "sampled_cut": np.zeros(sampled, bool),
        }
        for name, value in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)

    def __len__(self) -> int:
        return len(self.frame_index)

    @classmethod
    def empty(cls) -> Detections:
        return cls(
            frame_index=np.zeros(0, np.int64),
            timestamp_s=np.zeros(0, np.float64),
            foot_points_px=np.zeros((0, 2), np.float32),
            positions_m=np.zeros((0, 2), np.float32),
            scores=np.zeros(0, np.float32),
            torso_rgb=np.zeros((0, 3), np.float32),
            torso_valid=np.zeros(0, bool),
            detector_role=np.zeros(0, np.int8),
            sampled_frame_index=np.zeros(0, np.int64),
            sampled_timestamp_s=np.zeros(0, np.float64),
            sampled_image_to_pitch=np.zeros((0, 3, 3), np.float64),
            sampled_covered=np.zeros(0, bool),
            sampled_cut=np.zeros(0, bool),
        )

    @classmethod
    def concat(cls, parts: Sequence[Detections]) -> Detections:
        if not parts:
            return cls.empty()
        return cls(
            **{
                f.name: np.concatenate([getattr(p, f.name) for p in parts])
                for f in dataclasses.fields(cls)
            }
        )

    def select(self, mask: np.ndarray) -> Detections:
        """The detections where mask is true; the list of sampled frames stays whole."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name, value in fields.items():
            if not name.startswith("sampled_"):
                fields[name] = value[mask]
        return Detections(**fields)

    def on_pitch(self) -> np.ndarray:
        """bool (K,): the detections projected onto the pitch."""
        return np.isfinite(self.positions_m).all(axis=1)

    def to_bytes(self) -> bytes:
        return storage.npz_bytes({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})

    @classmethod
    def from_bytes(cls, payload: bytes) -> Detections:
        arrays = dict(storage.load_npz(payload))
        # Detections stored before detectors' classes were read: the detector said nothing.
        arrays.setdefault("detector_role", np.full(len(arrays["frame_index"]), -1, np.int8))
        # Detections stored before cameras were tracked get the defaults: all covered.
        return cls(**{f.name: arrays[f.name] for f in dataclasses.fields(cls) if f.name in arrays})
