"""Camera calibration (contracts section 1): load, validate, map image pixels to pitch metres."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re

import numpy as np

from gpu_analysis.engine import storage
from gpu_analysis.engine.errors import UserError
from gpu_analysis.engine.pitch_model import Distortion

DEFAULT_PITCH_M = (105.0, 68.0)
# IFAB Law 1 allows a pitch of at most 120 x 90 m; 10 m more each way leaves room for the run-off
# a calibration may include. The maps have a cell per square metre, so a typo like 1e6 m would
# otherwise ask for terabytes.
MAX_PITCH_M = (130.0, 100.0)
# A homography needs 4 pairs and a careful calibration uses a few dozen. Fitting costs memory
# quadratic in the pairs (the SVD of a 2K x 9 system: 6,000 pairs took 2.3 GB), so 500 pairs
# stay under 10 MB and still allow a dense grid of pitch markings.
MAX_POINT_PAIRS = 500
# 500 pairs printed with full precision and indentation take about 70 kB; 1 MiB leaves ample
# room and is checked before the file is read or parsed.
MAX_FILE_BYTES = 1 << 20
# The format nests 3 deep (object, list of pairs, pair); the JSON parser recurses once per level
# and fails with RecursionError near 1,000, so anything deeper than a few levels is refused first.
MAX_JSON_DEPTH = 8
# Optional [width, height] of the frames the image points were measured on. "image_size" must
# match the video; "scale_from" scales the points to whatever size the video has.
SIZE_KEY = "image_size"
SCALE_KEY = "scale_from"


@dataclasses.dataclass(frozen=True)
class Calibration:
    """A ground-plane homography from source-video pixels to pitch metres."""

    length_m: float
    width_m: float
    image_points_px: np.ndarray  # float64 (K, 2)
    pitch_points_m: np.ndarray  # float64 (K, 2)
    image_to_pitch: np.ndarray  # float64 (3, 3)
    # The frame size (width, height) the image points were measured on, if the file says so.
    image_size_px: tuple[int, int] | None = None
    # True when the file gave that size as "scale_from": the points follow any video's size.
    scales_to_video: bool = False
    # The frame the points were read on ("reference_frame", a frame index, or
    # "reference_time_s"): camera tracking starts from it. Neither given: the first frame.
    reference_frame: int | None = None
    reference_time_s: float | None = None
    # Radial lens distortion ("distortion"); image points are as seen (distorted), and the
    # homography maps undistorted pixels to the pitch.
    distortion: Distortion | None = None

    def undistort(self, points_px: np.ndarray) -> np.ndarray:
        points_px = np.asarray(points_px, dtype=np.float64).reshape(-1, 2)
        if self.distortion is None or self.distortion.is_identity:
            return points_px
        return self.distortion.undistort(points_px)

    def reference_frame_index(self, fps: float) -> int:
        """The reference frame's index in a video of `fps` frames per second."""
        if self.reference_frame is not None:
            return self.reference_frame
        if self.reference_time_s is not None:
            return round(self.reference_time_s * fps)
        return 0

    @property
    def pitch_to_image(self) -> np.ndarray:
        return np.linalg.inv(self.image_to_pitch)

    def project_to_pitch(
        self, points_px: np.ndarray, image_to_pitch: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Pitch positions (metres) of image points, and which of them land on the pitch.

        Points beyond the horizon (behind the camera's ground plane) come out with the wrong
        sign of w and are marked off the pitch like points outside its lines.
        `image_to_pitch` replaces the calibration's homography (a tracked frame's); its
        ground side is the one of the frame's bottom centre, which a pitch view always shows.
        """
        h, w_sign = self.image_to_pitch, self._w_sign
        if image_to_pitch is not None and not np.array_equal(image_to_pitch, h):
            h = image_to_pitch
            bottom = np.array([self.centre_x_px, self.bottom_y_px, 1.0])
            w_sign = float(np.sign((h @ bottom)[2])) or 1.0
        positions_m, in_front = _apply(h, self.undistort(points_px), w_sign)
        on_pitch = (
            in_front
            & (positions_m[:, 0] >= 0)
            & (positions_m[:, 0] <= self.length_m)
            & (positions_m[:, 1] >= 0)
            & (positions_m[:, 1] <= self.width_m)
        )
        return positions_m, on_pitch

    def project_to_image(self, positions_m: np.ndarray) -> np.ndarray:
        points_px, _ = _apply(self.pitch_to_image, positions_m, 0.0)
        if self.distortion is not None and not self.distortion.is_identity:
            points_px = self.distortion.distort(points_px)
        return points_px

    def px_per_m(self, points_px: np.ndarray) -> np.ndarray:
        """Image pixels per pitch metre across the view at each image point.

        A player stands upright, so their height in pixels is about their height in metres
        times this ground scale measured sideways (parallel to the image rows).
        """
        points_px = self.undistort(points_px)
        positions_m, _ = _apply(self.image_to_pitch, points_px, 0.0)
        shifted_m, _ = _apply(self.image_to_pitch, points_px + np.array([1.0, 0.0]), 0.0)
        metres_per_px = np.linalg.norm(shifted_m - positions_m, axis=1)
        with np.errstate(divide="ignore"):
            return np.where(metres_per_px > 0, 1.0 / metres_per_px, 0.0)

    @property
    def centre_x_px(self) -> float:
        if self.image_size_px is not None:
            return self.image_size_px[0] / 2
        return float(np.median(self.image_points_px[:, 0]))

    @property
    def bottom_y_px(self) -> float:
        if self.image_size_px is not None:
            return self.image_size_px[1] - 1.0
        return float(self.image_points_px[:, 1].max())

    @property
    def _w_sign(self) -> float:
        ideal = self.undistort(self.image_points_px)
        homogeneous = np.c_[ideal, np.ones(len(ideal))]
        return float(np.sign(np.median((homogeneous @ self.image_to_pitch.T)[:, 2])))

    def as_dict(self) -> dict:
        out = {
            "pitch": {"length_m": self.length_m, "width_m": self.width_m},
            "image_points": self.image_points_px.tolist(),
            "pitch_points": self.pitch_points_m.tolist(),
        }
        if self.image_size_px is not None:
            key = SCALE_KEY if self.scales_to_video else SIZE_KEY
            out[key] = list(self.image_size_px)
        if self.reference_frame is not None:
            out["reference_frame"] = self.reference_frame
        if self.reference_time_s is not None:
            out["reference_time_s"] = self.reference_time_s
        if self.distortion is not None:
            out["distortion"] = self.distortion.as_dict()
        return out

    def for_video(self, width: int, height: int, label: str = "calibration") -> Calibration:
        """This calibration for a video of width x height pixels.

        Without a frame size in the file it is taken as made for this video. With
        "image_size" the video must have that size; with "scale_from" the image points are
        scaled from that size to the video's (the same camera view, resized).
        """
        if self.image_size_px is None or self.image_size_px == (width, height):
            return self
        made_w, made_h = self.image_size_px
        if not self.scales_to_video:
            raise UserError(
                f'{label}: made for {made_w}x{made_h} video ("{SIZE_KEY}"), this video is '
                f"{width}x{height}; recalibrate on this video, or, if it is the same camera "
                f'view resized, rename "{SIZE_KEY}" to "{SCALE_KEY}" to scale the '
                "image_points to the video's size"
            )
        sx, sy = width / made_w, height / made_h
        image_pts = self.image_points_px * np.array([sx, sy])
        lens = None if self.distortion is None else self.distortion.scaled(sx, sy)
        ideal = image_pts if lens is None else lens.undistort(image_pts)
        h = _homography(ideal, self.pitch_points_m)
        return dataclasses.replace(
            self,
            image_points_px=image_pts,
            image_to_pitch=h,
            image_size_px=(width, height),
            distortion=lens,
        )


def _apply(h: np.ndarray, points: np.ndarray, w_sign: float) -> tuple[np.ndarray, np.ndarray]:
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    homogeneous = np.c_[points, np.ones(len(points))] @ h.T
    w = homogeneous[:, 2]
    valid = np.abs(w) > 1e-12
    if w_sign:
        valid &= np.sign(w) == w_sign
    with np.errstate(divide="ignore", invalid="ignore"):
        out = homogeneous[:, :2] / np.where(valid, w, 1.0)[:, None]
    return out, valid


def _collinear(points: np.ndarray) -> bool:
    centred = points - points.mean(axis=0)
    singular = np.linalg.svd(centred, compute_uv=False)
    return singular[0] == 0 or singular[1] / singular[0] < 1e-6


def _homography(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Direct linear transform on normalised points (Hartley), least squares over all pairs."""

    def normaliser(p: np.ndarray) -> np.ndarray:
        mean = p.mean(axis=0)
        spread = np.sqrt(((p - mean) ** 2).sum(axis=1)).mean() or 1.0
        s = math.sqrt(2) / spread
        return np.array([[s, 0, -s * mean[0]], [0, s, -s * mean[1]], [0, 0, 1]])

    t_src, t_dst = normaliser(src), normaliser(dst)
    a = np.c_[src, np.ones(len(src))] @ t_src.T
    b = np.c_[dst, np.ones(len(dst))] @ t_dst.T
    rows = []
    for (x, y, _), (u, v, _) in zip(a, b, strict=True):
        rows.append([-x, -y, -1, 0, 0, 0, u * x, u * y, u])
        rows.append([0, 0, 0, -x, -y, -1, v * x, v * y, v])
    _, _, vt = np.linalg.svd(np.asarray(rows))
    h = vt[-1].reshape(3, 3)
    h = np.linalg.inv(t_dst) @ h @ t_src
    return h / h[2, 2] if abs(h[2, 2]) > 1e-12 else h


def calibration_from_dict(raw: object, label: str = "calibration") -> Calibration:
    """Validate a parsed calibration file; every problem is a UserError naming it."""

    def fail(problem: str) -> UserError:
        return UserError(f"{label}: {problem}")

    if not isinstance(raw, dict):
        raise fail("expected a JSON object with pitch, image_points and pitch_points")
    for key in ("image_points", "pitch_points"):
        if key not in raw:
            raise fail(f"missing key {key!r}")
    pitch = raw.get("pitch", {"length_m": DEFAULT_PITCH_M[0], "width_m": DEFAULT_PITCH_M[1]})
    if not isinstance(pitch, dict):
        raise fail('\'pitch\' must be an object like {"length_m": 105, "width_m": 68}')
    try:
        length_m = float(pitch.get("length_m", DEFAULT_PITCH_M[0]))
        width_m = float(pitch.get("width_m", DEFAULT_PITCH_M[1]))
    except (TypeError, ValueError):
        raise fail("pitch length_m and width_m must be numbers") from None
    if not (math.isfinite(length_m) and math.isfinite(width_m) and length_m > 0 and width_m > 0):
        raise fail(f"pitch size must be positive metres, got {length_m} x {width_m}")
    if length_m > MAX_PITCH_M[0] or width_m > MAX_PITCH_M[1]:
        raise fail(
            f"pitch of {length_m:g} x {width_m:g} m; at most {MAX_PITCH_M[0]:g} x "
            f"{MAX_PITCH_M[1]:g} m (length along the touchline x width) is accepted"
        )

    arrays = {}
    for key in ("image_points", "pitch_points"):
        # Counted before converting, so an oversized list costs nothing more.
        if isinstance(raw[key], list) and len(raw[key]) > MAX_POINT_PAIRS:
            raise fail(f"{len(raw[key])} {key}; at most {MAX_POINT_PAIRS} point pairs are accepted")
        try:
            arr = np.asarray(raw[key], dtype=np.float64)
        except (TypeError, ValueError):
            raise fail(f"{key} must be a list of [x, y] number pairs") from None
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise fail(f"{key} must be a list of [x, y] pairs")
        if not np.isfinite(arr).all():
            raise fail(f"{key} contains NaN or infinite values")
        arrays[key] = arr
    image_pts, pitch_pts = arrays["image_points"], arrays["pitch_points"]
    if len(image_pts) != len(pitch_pts):
        raise fail(
            f"image_points and pitch_points differ in length ({len(image_pts)} vs "
            f"{len(pitch_pts)}); they must pair up"
        )
    if len(image_pts) < 4:
        raise fail(f"need at least 4 point pairs, got {len(image_pts)}")
    for key, arr in (("image_points", image_pts), ("pitch_points", pitch_pts)):
        if _collinear(arr):
            raise fail(f"{key} are all collinear; the homography needs points spread over a plane")
    lens = _distortion(raw, fail)
    ideal_pts = image_pts if lens is None else lens.undistort(image_pts)
    if not np.isfinite(ideal_pts).all():
        raise fail("the lens distortion does not invert at some image_points; check k1 and k2")
    h = _homography(ideal_pts, pitch_pts)
    if not np.isfinite(h).all() or abs(np.linalg.det(h)) < 1e-15 or np.linalg.cond(h) > 1e12:
        raise fail("the points give a degenerate homography; check the point pairs")
    reference_frame, reference_time_s = _reference(raw, fail)
    cal = Calibration(
        length_m, width_m, image_pts, pitch_pts, h, *_frame_size(raw, fail),
        reference_frame=reference_frame, reference_time_s=reference_time_s, distortion=lens,
    )  # fmt: skip
    # A consistent set reprojects onto itself; a wildly inconsistent one (swapped pairs) does not.
    projected, _ = _apply(h, ideal_pts, 0.0)
    error_m = float(np.max(np.linalg.norm(projected - pitch_pts, axis=1)))
    if not math.isfinite(error_m) or error_m > max(2.0, 0.05 * max(length_m, width_m)):
        raise fail(
            f"the point pairs disagree: reprojection error up to {error_m:.1f} m; "
            "check that image_points and pitch_points are in the same order"
        )
    return cal


def _reference(raw: dict, fail) -> tuple[int | None, float | None]:
    """The reference frame's index or time, if the file gives one (not both)."""
    frame, time_s = raw.get("reference_frame"), raw.get("reference_time_s")
    if frame is not None and time_s is not None:
        raise fail('give "reference_frame" or "reference_time_s", not both')
    if frame is not None:
        if isinstance(frame, bool) or not isinstance(frame, int) or frame < 0:
            raise fail(f'"reference_frame" must be a frame index (0 or more), got {frame!r}')
        return frame, None
    if time_s is not None:
        if (
            isinstance(time_s, bool)
            or not isinstance(time_s, int | float)
            or not math.isfinite(time_s)
            or time_s < 0
        ):
            raise fail(f'"reference_time_s" must be seconds (0 or more), got {time_s!r}')
        return None, float(time_s)
    return None, None


def _distortion(raw: dict, fail) -> Distortion | None:
    """The lens's radial distortion ("distortion": k1, k2, focal_px, centre_px)."""
    lens = raw.get("distortion")
    if lens is None:
        return None
    size = raw.get(SIZE_KEY, raw.get(SCALE_KEY))
    if not isinstance(lens, dict):
        raise fail('"distortion" must be an object like {"k1": -0.2, "k2": 0.05}')
    try:
        k1, k2 = float(lens.get("k1", 0.0)), float(lens.get("k2", 0.0))
        if "focal_px" in lens and "centre_px" in lens:
            focal_px = float(lens["focal_px"])
            cx, cy = (float(v) for v in lens["centre_px"])
        elif isinstance(size, list) and len(size) == 2:
            # Without the lens's focal length, radii are measured in half frame widths.
            focal_px = float(size[0]) / 2
            cx, cy = float(size[0]) / 2, float(size[1]) / 2
        else:
            raise fail(
                '"distortion" needs "focal_px" and "centre_px", or the calibration needs '
                f'"{SIZE_KEY}" (radii are then measured in half frame widths from the centre)'
            )
    except (TypeError, ValueError):
        raise fail(
            '"distortion" values must be numbers: k1, k2, focal_px, centre_px [x, y]'
        ) from None
    values = (k1, k2, focal_px, cx, cy)
    if not all(math.isfinite(v) for v in values) or focal_px <= 0 or abs(k1) > 2 or abs(k2) > 2:
        raise fail(f'"distortion" out of range: k1={k1}, k2={k2}, focal_px={focal_px}')
    return Distortion(k1, k2, focal_px, (cx, cy))


def _frame_size(raw: dict, fail) -> tuple[tuple[int, int] | None, bool]:
    """The frame size the file gives ("image_size" or "scale_from"), and whether it scales."""
    given = [key for key in (SIZE_KEY, SCALE_KEY) if key in raw]
    if not given:
        return None, False
    if len(given) == 2:
        raise fail(f'give "{SIZE_KEY}" or "{SCALE_KEY}", not both')
    key = given[0]
    size = raw[key]
    if not (
        isinstance(size, list)
        and len(size) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in size)
        and all(math.isfinite(v) and v >= 1 and v == int(v) for v in size)
    ):
        raise fail(f'"{key}" must be [width, height] in whole pixels, like [1920, 1080]')
    return (int(size[0]), int(size[1])), key == SCALE_KEY


def json_depth(payload: bytes) -> int:
    """How deep arrays and objects nest in a JSON document, counted without recursing."""
    # Brackets inside strings do not nest: blank the strings (escapes included) out first.
    bare = re.sub(rb'"[^"\\]*(?:\\.[^"\\]*)*"', b'""', payload)
    codes = np.frombuffer(bare, dtype=np.uint8)
    opens = (codes == ord("[")) | (codes == ord("{"))
    closes = (codes == ord("]")) | (codes == ord("}"))
    return int(np.cumsum(opens.astype(np.int64) - closes).max(initial=0))


def load_calibration(path: str | os.PathLike) -> Calibration:
    label = str(path)
    if not storage.is_s3(path) and not os.path.isfile(path):
        raise UserError(f"{label}: no such calibration file")
    payload = storage.read_bytes(path, max_bytes=MAX_FILE_BYTES)
    try:
        text = payload.decode("utf-8")
        depth = json_depth(payload)
        if depth > MAX_JSON_DEPTH:
            raise UserError(
                f"{label}: JSON nested {depth} levels deep; a calibration nests 3 and at most "
                f"{MAX_JSON_DEPTH} are accepted"
            )
        raw = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{label}: not valid JSON ({exc.__class__.__name__}: {exc})") from None
    return calibration_from_dict(raw, label)
