"""Synthetic match clips with ground truth: render, encode to H.264, write the calibration."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from gpu_analysis.engine.teams import Role
from gpu_analysis.synthetic.camera import (
    PITCH_LENGTH_M,
    PITCH_WIDTH_M,
    Camera,
    LensDistortion,
    preset_camera,
)
from gpu_analysis.synthetic.camera_motion import SHOT_PITCH, CameraMotion, CameraPath, camera_path
from gpu_analysis.synthetic.look import Look, default_look, random_look
from gpu_analysis.synthetic.motion import simulate_positions
from gpu_analysis.synthetic.render import (
    Degrader,
    Stadium,
    draw_person,
    player_styles,
    render_background,
)

# A player counts as visible when at least this share of the silhouette is not hidden
# behind nearer players (below it he is, for any detector, fully occluded).
MIN_VISIBLE_SHARE = 0.25

_CONTAINERS = {".mp4": "mp4", ".mkv": "matroska", ".ts": "mpegts"}


def ffmpeg_exe() -> str:
    """The ffmpeg binary: the system one, else the one bundled with imageio-ffmpeg."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg
    except ImportError as exc:
        raise RuntimeError("ffmpeg not found: install it or `pip install imageio-ffmpeg`") from exc
    return imageio_ffmpeg.get_ffmpeg_exe()


class H264Writer:
    """Pipes raw RGB frames into ffmpeg/libx264 (yuv420p); the container follows the suffix."""

    def __init__(self, path: Path, width: int, height: int, fps: float, crf: int = 23):
        suffix = path.suffix.lower()
        if suffix not in _CONTAINERS:
            raise ValueError(f"{path}: unsupported suffix {suffix!r}; use .mp4, .mkv or .ts")
        if width % 2 or height % 2:
            raise ValueError(f"width and height must be even for yuv420p, got {width}x{height}")
        self.path = path
        self.frame_bytes = width * height * 3
        cmd = [
            ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
            "-framerate", f"{fps:g}", "-i", "-",
            "-an", "-c:v", "libx264", "-preset", "veryfast", "-crf", str(int(crf)),
            "-pix_fmt", "yuv420p", "-g", str(max(1, round(2 * fps))),
        ]  # fmt: skip
        if suffix == ".mp4":
            cmd += ["-movflags", "+faststart"]
        cmd += ["-f", _CONTAINERS[suffix], str(path)]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)

    def write(self, frame_rgb: np.ndarray) -> None:
        assert frame_rgb.dtype == np.uint8 and frame_rgb.nbytes == self.frame_bytes
        self._proc.stdin.write(np.ascontiguousarray(frame_rgb).tobytes())

    def close(self) -> None:
        self._proc.stdin.close()
        err = self._proc.stderr.read().decode(errors="replace")
        if self._proc.wait() != 0:
            raise RuntimeError(f"ffmpeg failed writing {self.path}: {err.strip()}")

    def __enter__(self) -> H264Writer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._proc.kill()
            self._proc.wait()


@dataclass
class ClipTruth:
    """Ground truth of a rendered clip. Players are indexed the same way in every array."""

    calibration: dict
    fps: float
    frame_count: int
    width: int
    height: int
    positions_m: np.ndarray  # float32 (frames, players, 2): pitch X (length), Y (width)
    foot_points_px: np.ndarray  # float32 (frames, players, 2): image x, y
    visible: np.ndarray  # bool (frames, players): foot in frame and not (nearly) fully hidden
    team: np.ndarray  # int8 (players,): 0 or 1, -1 for a match official
    height_px: np.ndarray  # float32 (frames, players): foot-to-head-top length in the image
    role: np.ndarray | None = None  # int8 (players,): Role (None: outfield and goalkeepers
    # not told apart, as in clips saved before roles existed)
    # float64 (frames, 3, 3): each frame's homography from UNDISTORTED image pixels to pitch
    # metres (apply distortion.undistort_px to a pixel first); NaN in frames that show no
    # measurable pitch (shot != 0). None only in truth saved before cameras moved.
    image_to_pitch: np.ndarray | None = None
    shot: np.ndarray | None = None  # int8 (frames,): 0 pitch view, 1 close-up / crowd shot
    distortion: LensDistortion | None = None  # the lens; None: a pinhole camera

    def save(self, path_npz: str | Path) -> None:
        np.savez_compressed(
            path_npz,
            calibration_json=np.array(json.dumps(self.calibration)),
            fps=np.array(self.fps),
            frame_count=np.array(self.frame_count),
            width=np.array(self.width),
            height=np.array(self.height),
            positions_m=self.positions_m,
            foot_points_px=self.foot_points_px,
            visible=self.visible,
            team=self.team,
            height_px=self.height_px,
            role=self.roles(),
            **({} if self.image_to_pitch is None else {"image_to_pitch": self.image_to_pitch}),
            **({} if self.shot is None else {"shot": self.shot}),
            distortion_json=np.array(
                json.dumps(None if self.distortion is None else self.distortion.as_dict())
            ),
        )

    def roles(self) -> np.ndarray:
        if self.role is not None:
            return self.role
        return np.where(self.team < 0, Role.OFFICIAL, Role.OUTFIELD).astype(np.int8)

    @classmethod
    def load(cls, path_npz: str | Path) -> ClipTruth:
        with np.load(path_npz) as z:
            return cls(
                calibration=json.loads(str(z["calibration_json"])),
                fps=float(z["fps"]),
                frame_count=int(z["frame_count"]),
                width=int(z["width"]),
                height=int(z["height"]),
                positions_m=z["positions_m"],
                foot_points_px=z["foot_points_px"],
                visible=z["visible"],
                team=z["team"],
                height_px=z["height_px"],
                role=z.get("role"),
                image_to_pitch=z.get("image_to_pitch"),
                shot=z.get("shot"),
                distortion=_distortion_from_json(str(z.get("distortion_json", "null"))),
            )

    def occupancy_map(self, res_m: float = 1.0, team: int | None = None) -> np.ndarray:
        """Share of visible player-frames per pitch cell; rows = Y bands, cols = X bands.

        Players only (goalkeepers included): match officials are in no map.
        """
        rows = math.ceil(PITCH_WIDTH_M / res_m)
        cols = math.ceil(PITCH_LENGTH_M / res_m)
        mask = self.visible & (self.team >= 0)[None, :]
        if team is not None:
            mask &= (self.team == team)[None, :]
        pts = self.positions_m[mask]
        grid = np.zeros((rows, cols), np.float64)
        if len(pts) == 0:
            return grid
        c = np.clip((pts[:, 0] / res_m).astype(int), 0, cols - 1)
        r = np.clip((pts[:, 1] / res_m).astype(int), 0, rows - 1)
        np.add.at(grid, (r, c), 1.0)
        return grid / grid.sum()


def _distortion_from_json(text: str) -> LensDistortion | None:
    raw = json.loads(text)
    return None if raw is None else LensDistortion.from_dict(raw)


@dataclass
class RenderedFrame:
    image_rgb: np.ndarray
    foot_points_px: np.ndarray  # (players, 2)
    visible: np.ndarray  # (players,)
    height_px: np.ndarray  # (players,)


def _lens_remap(
    lens: LensDistortion, width: int, height: int
) -> tuple[tuple[int, int], tuple[np.ndarray, np.ndarray]]:
    """Padding and cv2.remap maps that bend a padded pinhole picture through the lens.

    Each output pixel samples the ideal picture where its ray came from (undistort_px);
    barrel distortion reaches beyond the frame there, so the ideal picture is drawn padded
    by what the corners need. Maps are fixed-point (cv2.convertMaps): remap is then cheap.
    """
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    src = lens.undistort_px(np.stack([xs, ys], axis=-1))
    if not np.isfinite(src).all():
        raise ValueError(
            f"lens distortion k1={lens.k1}, k2={lens.k2} folds over inside the frame; "
            "use weaker coefficients"
        )
    pad_x = max(0, int(np.ceil(max(-src[..., 0].min(), src[..., 0].max() - (width - 1)))) + 2)
    pad_y = max(0, int(np.ceil(max(-src[..., 1].min(), src[..., 1].max() - (height - 1)))) + 2)
    if pad_x > width or pad_y > height:
        raise ValueError(
            f"lens distortion k1={lens.k1}, k2={lens.k2} needs a picture over 3x the frame; "
            "use weaker coefficients"
        )
    map_x = (src[..., 0] + pad_x).astype(np.float32)
    map_y = (src[..., 1] + pad_y).astype(np.float32)
    return (pad_x, pad_y), cv2.convertMaps(map_x, map_y, cv2.CV_16SC2)


class MatchRenderer:
    """Renders the frames of one match clip (no encoding): the building block of clips and
    of the model's training data."""

    def __init__(
        self,
        *,
        seed: int,
        n_frames: int,
        fps: float,
        camera: Camera,
        look: Look,
        players_per_team: int = 10,
        goalkeepers: bool = False,
        officials: bool = False,
        motion: CameraMotion | None = None,
    ):
        """`motion` None keeps `camera` still (the clips of before, bit for bit); a
        CameraMotion turns and zooms it about its position, frame by frame (self.path)."""
        rng = np.random.default_rng(seed)
        self.camera, self.look, self.fps, self.n_frames = camera, look, fps, n_frames
        self.positions_m, self.team, speed_m_s = simulate_positions(
            rng, n_frames, fps, players_per_team, goalkeepers, officials
        )
        self._speed_m_s = speed_m_s
        n_players = len(self.team)
        per_team = players_per_team + int(goalkeepers)
        is_gk = np.zeros(n_players, bool)
        if goalkeepers:
            is_gk[[0, per_team]] = True
        self.role = np.where(is_gk, Role.GOALKEEPER, Role.OUTFIELD).astype(np.int8)
        self.role[self.team < 0] = Role.OFFICIAL
        self.styles = player_styles(rng, look, self.team, is_gk)
        self._degrade = Degrader(
            look, camera.width, camera.height, np.random.default_rng([seed, 1])
        )
        self.path: CameraPath | None = None
        self.distortion: LensDistortion | None = None
        if motion is not None:
            self._init_moving(rng, seed, motion)
            return
        self.background = render_background(camera, look, rng)

        ground = np.concatenate(
            [self.positions_m.astype(np.float64), np.zeros((n_frames, n_players, 1))], axis=-1
        )
        heads = ground.copy()
        heads[..., 2] = np.array([s.height_m for s in self.styles])[None, :]
        self.foot_px = camera.project(ground)
        self.top_px = camera.project(heads)
        self.depth_m = camera.depth_m(ground)
        self.height_px = np.linalg.norm(self.top_px - self.foot_px, axis=-1)
        # Running animation: the gait phase follows the distance covered.
        dist = np.cumsum(speed_m_s / fps, axis=0)
        self.phase = 2 * np.pi * dist / 2.2 + rng.uniform(0, 2 * np.pi, n_players)
        self.stride = np.clip(speed_m_s / 6.0, 0.1, 1.0)
        # Side-on players look narrower: compare the running direction with the view.
        vel = (
            np.gradient(self.positions_m, axis=0)
            if n_frames > 1
            else np.zeros_like(self.positions_m)
        )
        fwd = camera.rotation[2, :2] / max(np.linalg.norm(camera.rotation[2, :2]), 1e-9)
        norm = np.linalg.norm(vel, axis=-1)
        cos_view = np.abs(vel @ fwd) / np.maximum(norm, 1e-9)
        self.facing = np.where(norm > 1e-3, cos_view, 0.7)

    def _init_moving(self, rng: np.random.Generator, seed: int, motion: CameraMotion) -> None:
        camera, n_frames, fps = self.camera, self.n_frames, self.fps
        self.path = camera_path(
            camera, motion, self.positions_m, self.team, fps, np.random.default_rng([seed, 3])
        )
        # The pitch texture is sampled up to ~2x finer than the static renderer's when the
        # camera zooms in, so lines stay crisp; more would cost memory for little.
        px_per_m = 16.0 if motion.zoom_range[1] <= 1.25 else 24.0
        self.stadium = Stadium(self.look, rng, camera.position_m, ground_px_per_m=px_per_m)
        self.pad_px = (0, 0)
        self._lens_map = None
        if motion.distortion is not None:
            k1, k2 = motion.distortion
            self.distortion = LensDistortion(
                k1, k2, camera.focal_px, (camera.width / 2.0, camera.height / 2.0)
            )
            self.pad_px, self._lens_map = _lens_remap(self.distortion, camera.width, camera.height)
        n_players = len(self.team)
        ground = np.concatenate(
            [self.positions_m.astype(np.float64), np.zeros((n_frames, n_players, 1))], axis=-1
        )
        heads = ground.copy()
        heads[..., 2] = np.array([s.height_m for s in self.styles])[None, :]
        # Drawn on a picture padded by pad_px (what the lens pulls in from beyond the frame),
        # then bent by the lens; the truth is where each foot lands after that.
        self.draw_foot_px = self.path.project(ground, self.pad_px)
        self.draw_top_px = self.path.project(heads, self.pad_px)
        pad = np.asarray(self.pad_px, np.float64)
        foot, top = self.draw_foot_px - pad, self.draw_top_px - pad
        if self.distortion is not None:
            foot, top = self.distortion.distort_px(foot), self.distortion.distort_px(top)
        self.foot_px, self.top_px = foot, top
        self.depth_m = self.path.depth_m(ground)
        self.height_px = np.linalg.norm(self.top_px - self.foot_px, axis=-1)
        dist = np.cumsum(self._speed_m_s / fps, axis=0)
        self.phase = 2 * np.pi * dist / 2.2 + rng.uniform(0, 2 * np.pi, n_players)
        self.stride = np.clip(self._speed_m_s / 6.0, 0.1, 1.0)
        vel = (
            np.gradient(self.positions_m, axis=0)
            if n_frames > 1
            else np.zeros_like(self.positions_m)
        )
        fwd = self.path.rotation[:, 2, :2]
        fwd = fwd / np.maximum(np.linalg.norm(fwd, axis=-1, keepdims=True), 1e-9)
        norm = np.linalg.norm(vel, axis=-1)
        cos_view = np.abs(np.einsum("fpk,fk->fp", vel, fwd)) / np.maximum(norm, 1e-9)
        self.facing = np.where(norm > 1e-3, cos_view, 0.7)

    def _render_moving(self, i: int) -> RenderedFrame:
        cam = self.camera
        canvas_cam = self.path.camera(i, self.pad_px)
        frame = self.stadium.draw(canvas_cam)
        n = len(self.team)
        foot_out = self.foot_px[i]
        labels = np.zeros(frame.shape[:2], np.uint8)
        order = np.argsort(-self.depth_m[i])
        drawn_px = np.zeros(n)
        for p in order:
            if self.depth_m[i, p] <= 0.5:
                continue
            args = (
                self.draw_foot_px[i, p], self.draw_top_px[i, p], self.styles[p],
                float(self.phase[i, p]), float(self.stride[i, p]), float(self.facing[i, p]),
                self.look,
            )  # fmt: skip
            draw_person(frame, None, 0, *args)
            draw_person(labels, labels, p + 1, *args)
            drawn_px[p] = self._own_pixels(labels, i, p)
        counts = np.bincount(labels.ravel(), minlength=n + 1)[1:]
        share = np.where(drawn_px > 0, counts / np.maximum(drawn_px, 1), 0.0)
        in_frame = (
            (foot_out[:, 0] >= 0) & (foot_out[:, 0] < cam.width) & (foot_out[:, 1] >= 0)
            & (foot_out[:, 1] < cam.height) & (self.depth_m[i] > 0.5)
        )  # fmt: skip
        # Players in a close-up are drawn (a detector finds them) but are not countable: no
        # pitch position can be measured there, so the truth says not visible.
        visible = in_frame & (share >= MIN_VISIBLE_SHARE) & (self.path.shot[i] == SHOT_PITCH)
        if self._lens_map is not None:
            frame = cv2.remap(frame, *self._lens_map, cv2.INTER_LINEAR)
        image = self._degrade(frame)
        return RenderedFrame(image, foot_out.astype(np.float32), visible, self.height_px[i])

    def render(self, i: int) -> RenderedFrame:
        if self.path is not None:
            return self._render_moving(i)
        cam = self.camera
        frame = self.background.copy()
        labels = np.zeros((cam.height, cam.width), np.uint8)
        n = len(self.team)
        order = np.argsort(-self.depth_m[i])  # far players first: painter's algorithm
        drawn_px = np.zeros(n)
        for p in order:
            if self.depth_m[i, p] <= 0.5:
                continue
            args = (
                self.foot_px[i, p], self.top_px[i, p], self.styles[p], float(self.phase[i, p]),
                float(self.stride[i, p]), float(self.facing[i, p]), self.look,
            )  # fmt: skip
            draw_person(frame, None, 0, *args)
            draw_person(labels, labels, p + 1, *args)
            drawn_px[p] = self._own_pixels(labels, i, p)
        counts = np.bincount(labels.ravel(), minlength=n + 1)[1:]
        share = np.where(drawn_px > 0, counts / np.maximum(drawn_px, 1), 0.0)
        foot = self.foot_px[i]
        in_frame = (
            (foot[:, 0] >= 0) & (foot[:, 0] < cam.width) & (foot[:, 1] >= 0)
            & (foot[:, 1] < cam.height) & (self.depth_m[i] > 0.5)
        )  # fmt: skip
        visible = in_frame & (share >= MIN_VISIBLE_SHARE)
        image = self._degrade(frame)
        return RenderedFrame(image, foot.astype(np.float32), visible, self.height_px[i])

    def _own_pixels(self, labels: np.ndarray, i: int, p: int) -> float:
        """Pixels of player p right after drawing him (nothing nearer drawn yet)."""
        if self.path is None:
            foot, top = self.foot_px[i, p], self.top_px[i, p]
            pad = 0.4 * self.height_px[i, p] + 3
        else:
            foot, top = self.draw_foot_px[i, p], self.draw_top_px[i, p]
            pad = 0.4 * float(np.hypot(*(top - foot))) + 3
        x0 = int(max(0, min(foot[0], top[0]) - pad))
        x1 = int(min(labels.shape[1], max(foot[0], top[0]) + pad + 1))
        y0 = int(max(0, min(foot[1], top[1]) - pad))
        y1 = int(min(labels.shape[0], max(foot[1], top[1]) + pad + 1))
        if x1 <= x0 or y1 <= y0:
            return 0.0
        return float(np.count_nonzero(labels[y0:y1, x0:x1] == p + 1))

    def frames(self) -> Iterator[RenderedFrame]:
        for i in range(self.n_frames):
            yield self.render(i)


def calibration_path_for(video_path: str | Path) -> Path:
    """`<stem>.calibration.json` beside the video."""
    p = Path(video_path)
    return p.with_name(p.stem + ".calibration.json")


def generate_match_clip(
    out_path: str | Path,
    *,
    seed: int = 0,
    duration_s: float = 10.0,
    fps: float = 25.0,
    width: int = 1280,
    height: int = 720,
    camera: str | Camera | None = None,
    players_per_team: int = 10,
    goalkeepers: bool = False,
    look: Look | str | None = None,
    officials: bool = False,
    camera_motion: CameraMotion | None = None,
) -> ClipTruth:
    """Render and encode a match clip; write its calibration beside it; return the truth.

    `camera` is a preset name (see CAMERA_PRESETS) or a Camera; None is "tactical", or
    "gantry" (the main-stand broadcast camera) when the camera moves. `look` is None (the
    stable default look), "random" (domain randomization from the seed) or a Look.
    `camera_motion` None keeps the camera still (the clips of before, bit for bit); a
    CameraMotion pans, tilts, zooms and cuts it, and the calibration written beside the clip
    is that of its reference frame (with "reference_frame" and, for a lens, "distortion").
    Deterministic for a given seed and arguments.
    """
    out_path = Path(out_path)
    n_frames = round(duration_s * fps)
    if n_frames < 1:
        raise ValueError(f"duration_s * fps must give at least one frame, got {duration_s}*{fps}")
    if camera is None:
        camera = "tactical" if camera_motion is None else "gantry"
    cam = preset_camera(camera, width, height) if isinstance(camera, str) else camera
    if (cam.width, cam.height) != (width, height):
        raise ValueError(f"camera is {cam.width}x{cam.height} but the clip is {width}x{height}")
    if look is None:
        look = default_look()
    elif look == "random":
        look = random_look(np.random.default_rng([seed, 2]))
    renderer = MatchRenderer(
        seed=seed, n_frames=n_frames, fps=fps, camera=cam, look=look,
        players_per_team=players_per_team, goalkeepers=goalkeepers, officials=officials,
        motion=camera_motion,
    )  # fmt: skip
    if renderer.path is None:
        calibration = cam.calibration()
        h = np.linalg.inv(cam.ground_homography())
        image_to_pitch = np.broadcast_to(h / h[2, 2], (n_frames, 3, 3)).copy()
        shot = np.zeros(n_frames, np.int8)
    else:
        ref = camera_motion.reference_frame
        calibration = renderer.path.camera(ref).calibration(renderer.distortion)
        calibration["reference_frame"] = ref
        image_to_pitch = renderer.path.image_to_pitch()
        shot = renderer.path.shot.copy()
    n_players = len(renderer.team)
    visible = np.zeros((n_frames, n_players), bool)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with H264Writer(out_path, width, height, fps, crf=look.crf) as writer:
        for i, rendered in enumerate(renderer.frames()):
            writer.write(rendered.image_rgb)
            visible[i] = rendered.visible
    calibration_path_for(out_path).write_text(json.dumps(calibration, indent=2) + "\n")
    return ClipTruth(
        calibration=calibration,
        fps=float(fps),
        frame_count=n_frames,
        width=width,
        height=height,
        positions_m=renderer.positions_m.astype(np.float32),
        foot_points_px=renderer.foot_px.astype(np.float32),
        visible=visible,
        team=renderer.team.astype(np.int8),
        height_px=renderer.height_px.astype(np.float32),
        role=renderer.role,
        image_to_pitch=image_to_pitch,
        shot=shot,
        distortion=renderer.distortion,
    )
