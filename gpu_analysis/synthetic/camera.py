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
# More marked points, for calibrations that must use what the frame shows (a distorted
# frame: the lens model only holds inside the picture): penalty spots, goal-area corners,
# the centre circle on the halfway line, where the box lines meet the goal lines.
_MARKED_POINTS_M = [
    *_LANDMARKS_M,
    (11.0, PITCH_WIDTH_M / 2),
    (PITCH_LENGTH_M - 11.0, PITCH_WIDTH_M / 2),
    (PITCH_LENGTH_M / 2, PITCH_WIDTH_M / 2 - 9.15),
    (PITCH_LENGTH_M / 2, PITCH_WIDTH_M / 2 + 9.15),
    (5.5, PITCH_WIDTH_M / 2 - 9.16),
    (5.5, PITCH_WIDTH_M / 2 + 9.16),
    (PITCH_LENGTH_M - 5.5, PITCH_WIDTH_M / 2 - 9.16),
    (PITCH_LENGTH_M - 5.5, PITCH_WIDTH_M / 2 + 9.16),
    (0.0, PITCH_WIDTH_M / 2 - 20.16),
    (0.0, PITCH_WIDTH_M / 2 + 20.16),
    (PITCH_LENGTH_M, PITCH_WIDTH_M / 2 - 20.16),
    (PITCH_LENGTH_M, PITCH_WIDTH_M / 2 + 20.16),
    (0.0, PITCH_WIDTH_M / 2 - 9.16),
    (0.0, PITCH_WIDTH_M / 2 + 9.16),
    (PITCH_LENGTH_M, PITCH_WIDTH_M / 2 - 9.16),
    (PITCH_LENGTH_M, PITCH_WIDTH_M / 2 + 9.16),
]


@dataclass(frozen=True)
class LensDistortion:
    """Radial lens distortion, OpenCV's model with k1, k2 only (p1 = p2 = k3 = 0).

    Pixel coordinates are normalised as (p - centre_px) / focal_px, the camera matrix
    [[focal_px, 0, cx], [0, focal_px, cy], [0, 0, 1]] of cv2.undistortPoints; an ideal
    (pinhole) point at radius r moves to r * (1 + k1 r^2 + k2 r^4). k1 < 0 is barrel
    distortion, the wide-angle kind.
    """

    k1: float
    k2: float
    focal_px: float
    centre_px: tuple[float, float]

    @property
    def camera_matrix(self) -> np.ndarray:
        cx, cy = self.centre_px
        return np.array([[self.focal_px, 0.0, cx], [0.0, self.focal_px, cy], [0.0, 0.0, 1.0]])

    @property
    def coefficients(self) -> np.ndarray:
        """OpenCV's distCoeffs (k1, k2, p1, p2)."""
        return np.array([self.k1, self.k2, 0.0, 0.0])

    def _gain(self, r2: np.ndarray) -> np.ndarray:
        return 1.0 + self.k1 * r2 + self.k2 * r2 * r2

    def distort_px(self, points_px: np.ndarray) -> np.ndarray:
        """Ideal (pinhole) pixel points (..., 2) -> where the lens puts them."""
        pts = np.asarray(points_px, dtype=np.float64)
        centre = np.asarray(self.centre_px)
        n = (pts - centre) / self.focal_px
        return centre + n * self._gain((n * n).sum(-1))[..., None] * self.focal_px

    def undistort_px(self, points_px: np.ndarray) -> np.ndarray:
        """Distorted pixel points (..., 2) -> ideal ones; NaN where the model does not invert.

        Newton on the radius (cv2.undistortPoints stops after 5 fixed-point steps, which
        leaves pixels of error near the corners of a strongly distorted frame).
        """
        pts = np.asarray(points_px, dtype=np.float64)
        centre = np.asarray(self.centre_px)
        n = (pts - centre) / self.focal_px
        r_d = np.linalg.norm(n, axis=-1)
        r = r_d.copy()
        # Past a fold-over Newton runs away; those points come out NaN, quietly.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for _ in range(20):
                r2 = r * r
                f = r * self._gain(r2) - r_d
                slope = 1.0 + 3.0 * self.k1 * r2 + 5.0 * self.k2 * r2 * r2
                r = r - f / np.where(slope > 1e-6, slope, 1e-6)
            r2 = r * r
            ok = (np.abs(r * self._gain(r2) - r_d) < 1e-9 * np.maximum(1.0, r_d)) & (
                1.0 + 3.0 * self.k1 * r2 + 5.0 * self.k2 * r2 * r2 > 0
            )
        scale = np.where(r_d > 0, r / np.where(r_d > 0, r_d, 1.0), 1.0)
        out = centre + n * scale[..., None] * self.focal_px
        return np.where(ok[..., None], out, np.nan)

    def as_dict(self) -> dict:
        return {
            "k1": float(self.k1),
            "k2": float(self.k2),
            "focal_px": float(self.focal_px),
            "centre_px": [float(self.centre_px[0]), float(self.centre_px[1])],
        }

    @classmethod
    def from_dict(cls, raw: dict) -> LensDistortion:
        cx, cy = raw["centre_px"]
        return cls(float(raw["k1"]), float(raw["k2"]), float(raw["focal_px"]), (cx, cy))


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

    def calibration(self, distortion: LensDistortion | None = None) -> dict:
        """The contract's calibration dict: landmarks in front of the camera, >= 4 of them.

        With a lens `distortion`, the image points are where the marked points appear in
        the distorted frame (what a user clicks), only points inside the frame (the lens
        model holds there), and the file carries the distortion to undo before fitting.
        """
        if distortion is not None:
            return self._distorted_calibration(distortion)
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

    def _distorted_calibration(self, distortion: LensDistortion) -> dict:
        marked = np.array(_MARKED_POINTS_M)
        ground = np.column_stack([marked, np.zeros(len(marked))])
        ideal = self.project(ground)
        seen = distortion.distort_px(ideal)
        margin_px = 2.0
        inside = (
            (self.depth_m(ground) > 1.0)
            & (seen[:, 0] >= margin_px)
            & (seen[:, 0] <= self.width - 1 - margin_px)
            & (seen[:, 1] >= margin_px)
            & (seen[:, 1] <= self.height - 1 - margin_px)
        )
        # The lens model must map these back to where they came from; far outside the
        # frame a barrel polynomial folds over and they would not.
        back = distortion.undistort_px(seen)
        inside &= np.isfinite(back).all(axis=1)
        inside &= np.linalg.norm(np.nan_to_num(back) - ideal, axis=1) < 1e-6
        chosen = marked[inside]
        if len(chosen) < 4:
            raise ValueError(
                f"the reference frame shows {len(chosen)} marked pitch points; need 4 to "
                "calibrate a distorted view (zoom out or aim at the pitch)"
            )
        return {
            "pitch": {"length_m": PITCH_LENGTH_M, "width_m": PITCH_WIDTH_M},
            "image_points": [[round(float(x), 4), round(float(y), 4)] for x, y in seen[inside]],
            "pitch_points": [[float(x), float(y)] for x, y in chosen],
            "distortion": distortion.as_dict(),
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
CAMERA_PRESETS = ("tactical", "broadcast", "behind_goal", "corner", "wide", "gantry")


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
    elif name == "gantry":
        # The main broadcast camera: the gantry of the main stand at the halfway line, framing
        # about half the pitch; the camera that pans, tilts and zooms (camera_motion.py).
        pos, target = (52.5, -30.0, 22.0), (52.5, 30.0, 0.0)
        rot = look_at(pos, target)
        focal = _fov_focal_px(width, 50.0)
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
