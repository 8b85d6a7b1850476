"""A broadcast camera that pans, tilts and zooms to follow the play, with cuts to close-ups.

The camera stays where it is mounted (the main-stand gantry of the "gantry" preset, or any
Camera) and only turns and zooms, as a broadcast camera does; its pictures of the ground
plane are then related by homographies, and every frame's is known exactly (the truth the
engine's camera tracking is tested against). Cuts show another view for a while (a close-up
of the play or a shot of the crowd) in which the pitch cannot be measured, then the main
camera comes back where its operator kept it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gpu_analysis.synthetic.camera import PITCH_WIDTH_M, Camera
from gpu_analysis.synthetic.motion import _ou_process

# Shot labels, one per frame: the pitch seen by the main camera, or a view in which it is not
# measurable (a close-up, a crowd shot).
SHOT_PITCH = 0
SHOT_CLOSEUP = 1

CUT_KINDS = ("closeup", "crowd")


@dataclass(frozen=True)
class Cut:
    """A cut away from the main camera, from `start_s` for `duration_s` seconds.

    "closeup" zooms onto the play (players large, a line or two at most); "crowd" shows the
    far stand (no pitch at all).
    """

    start_s: float
    duration_s: float
    kind: str = "closeup"


@dataclass(frozen=True)
class CameraMotion:
    """How the main camera moves over a clip.

    The pan (yaw) follows the players' centroid, smoothed like a camera operator's hand,
    scaled so that it swings over exactly +-pan_deg around the base camera's direction; the
    tilt does the same over +-tilt_deg following the centroid's distance; the focal length
    wanders smoothly over zoom_range (multiples of the base camera's focal length: (0.8,
    1.2) is +-20 %, (1, 2) a 2x zoom). `distortion` (k1, k2) adds radial lens distortion
    (camera.LensDistortion) to every frame, radii normalised by the base camera's focal
    length about the frame centre, the same while zooming. `reference_frame` is the frame whose
    calibration is written beside the clip; it must show the pitch.
    """

    pan_deg: float = 10.0
    tilt_deg: float = 2.0
    zoom_range: tuple[float, float] = (1.0, 1.0)
    cuts: tuple[Cut, ...] = ()
    distortion: tuple[float, float] | None = None
    reference_frame: int = 0
    follow_s: float = 1.0  # Gaussian smoothing of the followed centroid, seconds
    closeup_zoom: float = 6.0  # focal length of a close-up, times the base camera's

    def validate(self, n_frames: int, fps: float) -> None:
        if not 0.0 <= self.pan_deg <= 60.0:
            raise ValueError(f"pan_deg must be 0..60 degrees, got {self.pan_deg}")
        if not 0.0 <= self.tilt_deg <= 20.0:
            raise ValueError(f"tilt_deg must be 0..20 degrees, got {self.tilt_deg}")
        lo, hi = self.zoom_range
        if not 0.25 <= lo <= hi <= 8.0:
            raise ValueError(f"zoom_range must satisfy 0.25 <= low <= high <= 8, got {lo}, {hi}")
        if not 0 <= self.reference_frame < n_frames:
            raise ValueError(
                f"reference_frame {self.reference_frame} is not a frame of this clip "
                f"(0..{n_frames - 1})"
            )
        duration_s = n_frames / fps
        for cut in self.cuts:
            if cut.kind not in CUT_KINDS:
                raise ValueError(f"cut kind {cut.kind!r}; choose one of {', '.join(CUT_KINDS)}")
            if cut.duration_s <= 0 or cut.start_s < 0 or cut.start_s >= duration_s:
                raise ValueError(
                    f"cut at {cut.start_s} s for {cut.duration_s} s does not fit a clip of "
                    f"{duration_s:g} s"
                )


@dataclass
class CameraPath:
    """Every frame's camera: one position, per-frame orientation and focal length."""

    base: Camera
    yaw_rad: np.ndarray  # float64 (frames,): heading of the optical axis, from the pitch X axis
    depression_rad: np.ndarray  # float64 (frames,): how far the optical axis points down
    roll_rad: float
    focal_px: np.ndarray  # float64 (frames,)
    shot: np.ndarray  # int8 (frames,): SHOT_PITCH or SHOT_CLOSEUP

    def __len__(self) -> int:
        return len(self.yaw_rad)

    @property
    def rotation(self) -> np.ndarray:
        """World -> camera rotations (frames, 3, 3), rows right, down, forward (as look_at)."""
        y, p = self.yaw_rad, self.depression_rad
        forward = np.stack([np.cos(p) * np.cos(y), np.cos(p) * np.sin(y), -np.sin(p)], axis=-1)
        right = np.stack([np.sin(y), -np.cos(y), np.zeros_like(y)], axis=-1)
        down = np.cross(forward, right)
        if self.roll_rad:
            c, s = math.cos(self.roll_rad), math.sin(self.roll_rad)
            right, down = c * right + s * down, -s * right + c * down
        return np.stack([right, down, forward], axis=1)

    def camera(self, i: int, pad_px: tuple[int, int] = (0, 0)) -> Camera:
        """Frame i's camera; `pad_px` widens the picture on every side, same optical axis."""
        return Camera(
            self.base.width + 2 * pad_px[0],
            self.base.height + 2 * pad_px[1],
            float(self.focal_px[i]),
            self.base.position_m,
            self.rotation[i],
        )

    def _camera_coords(self, points_xyz_m: np.ndarray) -> np.ndarray:
        rel = np.asarray(points_xyz_m, np.float64) - np.asarray(self.base.position_m)
        return np.einsum("fij,fpj->fpi", self.rotation, rel)

    def depth_m(self, points_xyz_m: np.ndarray) -> np.ndarray:
        """(frames, n, 3) world points -> (frames, n) distance along each frame's axis."""
        return self._camera_coords(points_xyz_m)[..., 2]

    def project(self, points_xyz_m: np.ndarray, pad_px: tuple[int, int] = (0, 0)) -> np.ndarray:
        """(frames, n, 3) world points -> (frames, n, 2) pixels in each frame's picture."""
        cam = self._camera_coords(points_xyz_m)
        xy = cam[..., :2] / cam[..., 2:3] * self.focal_px[:, None, None]
        centre = np.array([self.base.width / 2.0 + pad_px[0], self.base.height / 2.0 + pad_px[1]])
        return xy + centre

    def image_to_pitch(self) -> np.ndarray:
        """Per-frame homographies (frames, 3, 3) from undistorted pixels to pitch metres.

        NaN where the frame is not a view of the pitch (close-ups, crowd shots): no
        homography there should be trusted, so none is given.
        """
        out = np.full((len(self), 3, 3), np.nan)
        for i in np.flatnonzero(self.shot == SHOT_PITCH):
            h = np.linalg.inv(self.camera(int(i)).ground_homography())
            out[i] = h / h[2, 2]
        return out


def _angles_of(rotation: np.ndarray) -> tuple[float, float, float]:
    """(yaw, depression, roll) in radians of a world -> camera rotation."""
    forward = rotation[2]
    yaw = math.atan2(forward[1], forward[0])
    depression = math.asin(float(np.clip(-forward[2], -1.0, 1.0)))
    right_level = np.array([math.sin(yaw), -math.cos(yaw), 0.0])
    down_level = np.cross(forward, right_level)
    roll = math.atan2(float(rotation[0] @ down_level), float(rotation[0] @ right_level))
    return yaw, depression, roll


def _smooth(signal: np.ndarray, sigma_frames: float) -> np.ndarray:
    """Gaussian smoothing with the ends held (no pull toward zero at the clip's edges)."""
    if sigma_frames <= 0 or len(signal) < 2:
        return signal.astype(np.float64)
    half = math.ceil(3 * sigma_frames)
    kernel = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma_frames) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(signal.astype(np.float64), half, mode="edge")
    return np.convolve(padded, kernel, mode="valid")


def _unit_swing(signal: np.ndarray) -> np.ndarray:
    """The signal rescaled to span exactly -1..1 (all zeros if it does not move)."""
    lo, hi = float(signal.min()), float(signal.max())
    if hi - lo < 1e-12:
        return np.zeros_like(signal)
    return (signal - lo) / (hi - lo) * 2.0 - 1.0


def camera_path(
    base: Camera,
    motion: CameraMotion,
    positions_m: np.ndarray,
    team: np.ndarray,
    fps: float,
    rng: np.random.Generator,
) -> CameraPath:
    """Every frame's camera for `motion` about `base`, following the players' centroid.

    positions_m (frames, people, 2) and team (people,) come from motion.simulate_positions;
    officials (team < 0) are not followed.
    """
    n_frames = len(positions_m)
    motion.validate(n_frames, fps)
    yaw0, depression0, roll0 = _angles_of(base.rotation)
    players = positions_m[:, team >= 0].astype(np.float64)
    centroid = players.mean(axis=1)
    cam_x, cam_y, cam_z = base.position_m
    bearing = np.unwrap(np.arctan2(centroid[:, 1] - cam_y, centroid[:, 0] - cam_x))
    ground_dist = np.hypot(centroid[:, 0] - cam_x, centroid[:, 1] - cam_y)
    sigma = motion.follow_s * fps
    # Panning toward the play: the camera is on the near side, so a larger bearing (to the
    # left of the camera) is a larger yaw. The tilt looks lower for play nearer the camera.
    yaw = yaw0 + math.radians(motion.pan_deg) * _unit_swing(_smooth(bearing, sigma))
    depression = depression0 + math.radians(motion.tilt_deg) * _unit_swing(
        _smooth(np.arctan2(cam_z, ground_dist), sigma)
    )
    lo, hi = motion.zoom_range
    wander = _smooth(_ou_process(rng, n_frames, 1, 1.0 / fps, 4.0, 1.0)[:, 0], sigma)
    zoom_share = (_unit_swing(wander) + 1.0) / 2.0
    focal = base.focal_px * lo * (hi / lo) ** zoom_share
    shot = np.zeros(n_frames, np.int8)
    frame_s = np.arange(n_frames) / fps
    for cut in motion.cuts:
        inside = (frame_s >= cut.start_s - 1e-9) & (frame_s < cut.start_s + cut.duration_s - 1e-9)
        shot[inside] = SHOT_CLOSEUP
        if cut.kind == "closeup":
            # Aimed straight at the play, no operator lag: what a second camera would show.
            yaw[inside] = bearing[inside]
            depression[inside] = np.arctan2(cam_z, ground_dist[inside])
            focal[inside] = base.focal_px * motion.closeup_zoom
        else:
            # The far stand, high up: seats and fans, no grass.
            far_y_m = PITCH_WIDTH_M + 27.0
            yaw[inside] = np.arctan2(far_y_m - cam_y, centroid[inside, 0] - cam_x)
            depression[inside] = -np.arctan2(
                14.0 - cam_z, np.hypot(centroid[inside, 0] - cam_x, far_y_m - cam_y)
            )
            focal[inside] = base.focal_px * 3.0
    if shot[motion.reference_frame] != SHOT_PITCH:
        raise ValueError(
            f"reference_frame {motion.reference_frame} falls in a cut; choose a frame that "
            "shows the pitch"
        )
    return CameraPath(base, yaw, depression, roll0, focal, shot)


def parse_cuts(text: str) -> tuple[Cut, ...]:
    """Cuts from "START:DURATION[:KIND],..." in seconds, e.g. "8:2,20:1.5:crowd"."""
    cuts = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        fields = item.split(":")
        if len(fields) not in (2, 3):
            raise ValueError(f"cut {item!r}: write START:DURATION or START:DURATION:KIND")
        try:
            start_s, duration_s = float(fields[0]), float(fields[1])
        except ValueError:
            raise ValueError(f"cut {item!r}: START and DURATION are seconds") from None
        kind = fields[2] if len(fields) == 3 else "closeup"
        if kind not in CUT_KINDS:
            raise ValueError(f"cut {item!r}: kind must be one of {', '.join(CUT_KINDS)}")
        cuts.append(Cut(start_s, duration_s, kind))
    return tuple(cuts)
