"""The pitch markings as geometry (IFAB Law 1), lens distortion, and the preview that draws
the markings over a frame with a calibration."""

from __future__ import annotations

import dataclasses
import itertools

import cv2
import numpy as np

# Law 1 dimensions in metres: they do not scale with the pitch's length and width.
PENALTY_AREA_DEPTH_M = 16.5
PENALTY_AREA_HALF_WIDTH_M = 20.16
GOAL_AREA_DEPTH_M = 5.5
GOAL_AREA_HALF_WIDTH_M = 9.16
CIRCLE_RADIUS_M = 9.15
PENALTY_SPOT_M = 11.0


def pitch_polylines_m(length_m: float, width_m: float) -> list[np.ndarray]:
    """Every painted line of the pitch as a polyline of (X, Y) metres."""
    cy = width_m / 2

    def rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        return np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)], np.float64)

    def arc(cx: float, cy_: float, r: float, a0_deg: float, a1_deg: float) -> np.ndarray:
        a = np.radians(np.linspace(a0_deg, a1_deg, max(8, int(abs(a1_deg - a0_deg) / 4))))
        return np.c_[cx + r * np.cos(a), cy_ + r * np.sin(a)]

    lines = [
        rect(0, 0, length_m, width_m),
        np.array([(length_m / 2, 0), (length_m / 2, width_m)], np.float64),
        arc(length_m / 2, cy, CIRCLE_RADIUS_M, 0, 360),
    ]
    half_arc = np.degrees(np.arccos((PENALTY_AREA_DEPTH_M - PENALTY_SPOT_M) / CIRCLE_RADIUS_M))
    for x0, sign in ((0.0, 1.0), (length_m, -1.0)):
        depth = x0 + sign * PENALTY_AREA_DEPTH_M
        lines.append(
            rect(min(x0, depth), cy - PENALTY_AREA_HALF_WIDTH_M,
                 max(x0, depth), cy + PENALTY_AREA_HALF_WIDTH_M)
        )  # fmt: skip
        goal = x0 + sign * GOAL_AREA_DEPTH_M
        lines.append(
            rect(min(x0, goal), cy - GOAL_AREA_HALF_WIDTH_M,
                 max(x0, goal), cy + GOAL_AREA_HALF_WIDTH_M)
        )  # fmt: skip
        facing = 0.0 if sign > 0 else 180.0
        lines.append(
            arc(x0 + sign * PENALTY_SPOT_M, cy, CIRCLE_RADIUS_M, facing - half_arc,
                facing + half_arc)
        )  # fmt: skip
    return lines


def pitch_line_samples_m(length_m: float, width_m: float, step_m: float = 0.5) -> np.ndarray:
    """Points every `step_m` along every painted line: float64 (N, 2) metres."""
    out = []
    for poly in pitch_polylines_m(length_m, width_m):
        for a, b in itertools.pairwise(poly):
            n = max(1, int(np.ceil(np.linalg.norm(b - a) / step_m)))
            t = np.arange(n)[:, None] / n
            out.append(a + t * (b - a))
    return np.concatenate(out)


@dataclasses.dataclass(frozen=True)
class Distortion:
    """Radial lens distortion: OpenCV's model with k1 and k2 only (p1 = p2 = k3 = 0).

    Pixels are normalised as (p - centre_px) / focal_px (the camera matrix of
    cv2.undistortPoints); an ideal (pinhole) point at radius r is seen at r (1 + k1 r^2 +
    k2 r^4). The calibration's homography maps undistorted pixels to the pitch.
    """

    k1: float
    k2: float
    focal_px: float
    centre_px: tuple[float, float]

    @property
    def is_identity(self) -> bool:
        return self.k1 == 0.0 and self.k2 == 0.0

    def scaled(self, sx: float, sy: float) -> Distortion:
        """The same lens on frames resized by (sx, sy) (the same view, so sx == sy)."""
        cx, cy = self.centre_px
        return Distortion(self.k1, self.k2, self.focal_px * sx, (cx * sx, cy * sy))

    def as_dict(self) -> dict:
        return {
            "k1": self.k1,
            "k2": self.k2,
            "focal_px": self.focal_px,
            "centre_px": list(self.centre_px),
        }

    def distort(self, points_px: np.ndarray) -> np.ndarray:
        centre = np.asarray(self.centre_px)
        u = (np.asarray(points_px, np.float64).reshape(-1, 2) - centre) / self.focal_px
        r2 = (u**2).sum(axis=1, keepdims=True)
        return u * (1 + self.k1 * r2 + self.k2 * r2**2) * self.focal_px + centre

    def undistort(self, points_px: np.ndarray) -> np.ndarray:
        """The inverse of `distort`: Newton on the radius (exact where the lens is monotonic)."""
        centre = np.asarray(self.centre_px)
        d = (np.asarray(points_px, np.float64).reshape(-1, 2) - centre) / self.focal_px
        r_d = np.linalg.norm(d, axis=1)
        r = r_d.copy()
        for _ in range(20):
            f = r * (1 + self.k1 * r**2 + self.k2 * r**4) - r_d
            df = 1 + 3 * self.k1 * r**2 + 5 * self.k2 * r**4
            r = r - f / np.where(np.abs(df) > 1e-9, df, 1e-9)
        with np.errstate(divide="ignore", invalid="ignore"):
            gain = np.where(r_d > 1e-12, r / r_d, 1.0)
        return d * gain[:, None] * self.focal_px + centre


def ground_side(image_to_pitch: np.ndarray, ground_px: tuple[float, float]) -> float:
    """+1 or -1: the sign of w that pitch_to_image gives points in front of the camera.

    A homography is known only up to scale, sign included; `ground_px` is a pixel that
    shows the ground (the bottom centre of a pitch view), whose side is the front.
    """
    w = (image_to_pitch @ np.array([ground_px[0], ground_px[1], 1.0]))[2]
    return 1.0 if w >= 0 else -1.0


def project_points(
    h: np.ndarray, points: np.ndarray, side: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Apply a homography; also returns which points have w on `side` (in front of the
    camera, for pitch -> image with the side from `ground_side`)."""
    p = np.c_[np.asarray(points, np.float64).reshape(-1, 2), np.ones(len(points))] @ h.T
    w = p[:, 2]
    ok = w * side > 1e-12
    with np.errstate(divide="ignore", invalid="ignore"):
        return p[:, :2] / np.where(ok, w, 1.0)[:, None], ok


def draw_pitch_lines(
    image_bgr: np.ndarray,
    image_to_pitch: np.ndarray,
    length_m: float,
    width_m: float,
    distortion: Distortion | None = None,
    colour_bgr: tuple[int, int, int] = (255, 0, 255),
    label: str | None = None,
) -> np.ndarray:
    """A copy of the frame with the pitch lines projected over it (magenta, 2 px)."""
    out = image_bgr.copy()
    pitch_to_image = np.linalg.inv(image_to_pitch)
    h, w = out.shape[:2]
    side = ground_side(image_to_pitch, (w / 2, h - 1))
    for poly in pitch_polylines_m(length_m, width_m):
        # Densify so that distortion bends the drawn lines as it bends the painted ones.
        dense = []
        for a, b in itertools.pairwise(poly):
            t = np.linspace(0, 1, 24, endpoint=False)[:, None]
            dense.append(a + t * (b - a))
        dense.append(poly[-1:])
        pts, front = project_points(pitch_to_image, np.concatenate(dense), side)
        if distortion is not None and not distortion.is_identity:
            pts = distortion.distort(pts)
        inside = front & (np.abs(pts) < 4 * max(h, w)).all(axis=1)
        # Draw each run of points in front of the camera as one polyline.
        run: list[np.ndarray] = []
        for p, ok in zip(pts, inside, strict=True):
            if ok:
                run.append(p)
            elif run:
                _polyline(out, run, colour_bgr)
                run = []
        if run:
            _polyline(out, run, colour_bgr)
    if label:
        cv2.putText(out, label, (12, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 0, 0), 4)
        cv2.putText(out, label, (12, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 1)
    return out


def _polyline(image: np.ndarray, run: list[np.ndarray], colour: tuple[int, int, int]) -> None:
    if len(run) >= 2:
        pts = np.round(np.asarray(run) * 16).astype(np.int32)
        cv2.polylines(image, [pts], False, colour, 2, cv2.LINE_AA, 4)


def png_bytes(image_bgr: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", image_bgr)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return encoded.tobytes()
