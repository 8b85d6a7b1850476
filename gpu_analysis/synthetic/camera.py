"""Pinhole cameras looking at the pitch: presets, random setups, projection and calibration."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PITCH_LENGTH_M = 105.0
PITCH_WIDTH_M = 68.0

# Landmarks offered as calibration points, in order of preference: corners, centre-line
# ends, centre spot, penalty-area corners. Any with the camera in front of them qualify.
_LANDMARKS_M = [
    (0.0, 0.0),
    (PITCH_LENGTH_M, 0.0),
    (PITCH_LENGTH_M, PITCH_WIDTH_M),
    (0.0, PITCH_WIDTH_M),
    (PITCH_LENGTH_M / 2, 0.0),
    (PITCH_LENGTH_M / 2, PITCH_WIDTH_M),
    (PITCH_LENGTH_M / 2, PITCH_WIDTH_M / 2),
    (16.5, PITCH_WIDTH_M / 2 - 20.16),
    (16.5, PITCH_WIDTH_M / 2 + 20.16),
    (PITCH_LENGTH_M - 16.5, PITCH_WIDTH_M / 2 - 20.16),
    (PITCH_LENGTH_M - 16.5, PITCH_WIDTH_M / 2 + 20.16),
]


@dataclass(frozen=True)
class Camera:
    """A distortion-free pinhole camera. World frame: pitch metres, X length, Y width, Z up."""

    width: int
    height: int
    focal_px: float
    position_m: tuple[float, float, float]
    rotation: np.ndarray  # 3x3 world -> camera; rows = camera x (right), y (down), z (forward)

    @property
    def intrinsics(self) -> np.ndarray:
        return np.array(
            [
                [self.focal_px, 0.0, self.width / 2.0],
                [0.0, self.focal_px, self.height / 2.0],
                [0.0, 0.0, 1.0],
            ]
        )

    @property
    def translation(self) -> np.ndarray:
        return -self.rotation @ np.asarray(self.position_m, dtype=np.float64)

    def depth_m(self, points_xyz_m: np.ndarray) -> np.ndarray:
        """Distance along the optical axis; <= 0 means behind the camera."""
        pts = np.asarray(points_xyz_m, dtype=np.float64)
        return (pts - np.asarray(self.position_m)) @ self.rotation[2]

    def project(self, points_xyz_m: np.ndarray) -> np.ndarray:
        """World points (..., 3) in metres -> image points (..., 2) in pixels."""
        pts = np.asarray(points_xyz_m, dtype=np.float64)
        cam = pts @ self.rotation.T + self.translation
        img = cam @ self.intrinsics.T
        return img[..., :2] / img[..., 2:3]

    def ground_homography(self) -> np.ndarray:
        """The 3x3 map from pitch (X, Y, 1) on the ground plane to image pixels."""
        rt = np.column_stack([self.rotation[:, 0], self.rotation[:, 1], self.translation])
        h = self.intrinsics @ rt
        return h / h[2, 2]

    def calibration(self) -> dict:
        """The contract's calibration dict: landmarks in front of the camera, >= 4 of them."""
        landmarks = np.array(_LANDMARKS_M)
        ground = np.column_stack([landmarks, np.zeros(len(landmarks))])
        in_front = self.depth_m(ground) > 1.0
        chosen = landmarks[in_front][:8]
        if len(chosen) < 4:
            raise ValueError("camera sees fewer than 4 pitch landmarks in front of it")
        image = self.project(np.column_stack([chosen, np.zeros(len(chosen))]))
        return {
            "pitch": {"length_m": PITCH_LENGTH_M, "width_m": PITCH_WIDTH_M},
            "image_points": [[round(float(x), 4), round(float(y), 4)] for x, y in image],
            "pitch_points": [[float(x), float(y)] for x, y in chosen],
        }


def look_at(
    position_m: tuple[float, float, float],
    target_m: tuple[float, float, float],
    roll_rad: float = 0.0,
) -> np.ndarray:
    """World -> camera rotation for a camera at position_m looking at target_m."""
    forward = np.asarray(target_m, float) - np.asarray(position_m, float)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    if roll_rad:
        c, s = np.cos(roll_rad), np.sin(roll_rad)
        right, down = c * right + s * down, -s * right + c * down
    return np.vstack([right, down, forward])


def _fit_focal_px(
    width: int, height: int, position_m, rotation: np.ndarray, margin_m: float, fill: float
) -> float:
    """The focal length that fits the pitch (plus margin) inside `fill` of the frame."""
    corners = np.array(
        [
            [-margin_m, -margin_m, 0],
            [PITCH_LENGTH_M + margin_m, -margin_m, 0],
            [PITCH_LENGTH_M + margin_m, PITCH_WIDTH_M + margin_m, 0],
            [-margin_m, PITCH_WIDTH_M + margin_m, 0],
        ]
    )
    cam = (corners - np.asarray(position_m)) @ rotation.T
    xn = np.abs(cam[:, 0] / cam[:, 2]).max()
    yn = np.abs(cam[:, 1] / cam[:, 2]).max()
    return float(min(fill * width / 2 / xn, fill * height / 2 / yn))


def _fov_focal_px(width: int, horizontal_fov_deg: float) -> float:
    return width / 2 / np.tan(np.radians(horizontal_fov_deg) / 2)


# Named setups. "tactical" and "broadcast" are the common ones; "behind_goal" is an end-on
# view the built-in model never trains on (the held-out camera of its evaluation).
CAMERA_PRESETS = ("tactical", "broadcast", "behind_goal", "corner", "wide")


def preset_camera(name: str, width: int, height: int) -> Camera:
    """A fixed camera setup by name (see CAMERA_PRESETS)."""
    if name == "tactical":
        # High on the main stand at the halfway line; whole pitch in view.
        pos, target = (52.5, -32.0, 52.0), (52.5, 30.0, 0.0)
        rot = look_at(pos, target)
        focal = _fit_focal_px(width, height, pos, rot, margin_m=1.5, fill=0.97)
    elif name == "wide":
        # Higher and further back still: the smallest players of all presets.
        pos, target = (52.5, -70.0, 55.0), (52.5, 31.0, 0.0)
        rot = look_at(pos, target)
        focal = _fit_focal_px(width, height, pos, rot, margin_m=6.0, fill=0.98)
    elif name == "broadcast":
        # Lower, on the side, looking at the right half: part of the pitch.
        pos, target = (45.0, -22.0, 16.0), (68.0, 32.0, 0.0)
        rot = look_at(pos, target)
        focal = _fov_focal_px(width, 55.0)
    elif name == "behind_goal":
        pos, target = (-28.0, 34.0, 22.0), (38.0, 34.0, 0.0)
        rot = look_at(pos, target)
        focal = _fov_focal_px(width, 62.0)
    elif name == "corner":
        pos, target = (-18.0, -16.0, 26.0), (45.0, 38.0, 0.0)
        rot = look_at(pos, target)
        focal = _fov_focal_px(width, 58.0)
    else:
        raise ValueError(f"unknown camera {name!r}; choose one of {', '.join(CAMERA_PRESETS)}")
    return Camera(width, height, focal, tuple(float(v) for v in pos), rot)


def random_side_camera(rng: np.random.Generator, width: int, height: int) -> Camera:
    """A random camera on either long side: from high tactical to low broadcast, any zoom.

    Training samples from here; end-on views (behind a goal) are left out on purpose so that
    the evaluation has a camera family the model has never seen.
    """
    side = rng.choice([-1.0, 1.0])
    height_m = rng.uniform(8.0, 60.0)
    back_m = rng.uniform(12.0, 70.0)
    x_m = rng.uniform(20.0, 85.0)
    y_m = -back_m if side < 0 else PITCH_WIDTH_M + back_m
    pos = (x_m, y_m, height_m)
    if rng.random() < 0.4:
        target = (rng.uniform(40.0, 65.0), rng.uniform(26.0, 42.0), 0.0)
        rot = look_at(pos, target, roll_rad=rng.normal(0.0, 0.01))
        focal = _fit_focal_px(width, height, pos, rot, margin_m=rng.uniform(0, 8), fill=0.97)
    else:
        target = (rng.uniform(5.0, 100.0), rng.uniform(8.0, 60.0), 0.0)
        rot = look_at(pos, target, roll_rad=rng.normal(0.0, 0.01))
        focal = _fov_focal_px(width, rng.uniform(25.0, 75.0))
    return Camera(width, height, float(focal), tuple(float(v) for v in pos), rot)
