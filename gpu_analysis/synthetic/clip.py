"""Synthetic match clips with ground truth: render, encode to H.264, write the calibration."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpu_analysis.engine.teams import Role
from gpu_analysis.synthetic.camera import (
    PITCH_LENGTH_M,
    PITCH_WIDTH_M,
    Camera,
    preset_camera,
)
from gpu_analysis.synthetic.look import Look, default_look, random_look
from gpu_analysis.synthetic.motion import simulate_positions
from gpu_analysis.synthetic.render import Degrader, draw_person, player_styles, render_background

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
                role=z["role"] if "role" in z else None,
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


@dataclass
class RenderedFrame:
    image_rgb: np.ndarray
    foot_points_px: np.ndarray  # (players, 2)
    visible: np.ndarray  # (players,)
    height_px: np.ndarray  # (players,)


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
    ):
        rng = np.random.default_rng(seed)
        self.camera, self.look, self.fps, self.n_frames = camera, look, fps, n_frames
        self.positions_m, self.team, speed_m_s = simulate_positions(
            rng, n_frames, fps, players_per_team, goalkeepers, officials
        )
        n_players = len(self.team)
        per_team = players_per_team + int(goalkeepers)
        is_gk = np.zeros(n_players, bool)
        if goalkeepers:
            is_gk[[0, per_team]] = True
        self.role = np.where(is_gk, Role.GOALKEEPER, Role.OUTFIELD).astype(np.int8)
        self.role[self.team < 0] = Role.OFFICIAL
        self.styles = player_styles(rng, look, self.team, is_gk)
        self.background = render_background(camera, look, rng)
        self._degrade = Degrader(
            look, camera.width, camera.height, np.random.default_rng([seed, 1])
        )

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

    def render(self, i: int) -> RenderedFrame:
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
        foot, top = self.foot_px[i, p], self.top_px[i, p]
        pad = 0.4 * self.height_px[i, p] + 3
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
    camera: str | Camera = "tactical",
    players_per_team: int = 10,
    goalkeepers: bool = False,
    look: Look | str | None = None,
    officials: bool = False,
) -> ClipTruth:
    """Render and encode a match clip; write its calibration beside it; return the truth.

    `camera` is a preset name (see CAMERA_PRESETS) or a Camera. `look` is None (the stable
    default look), "random" (domain randomization from the seed) or a Look. Deterministic
    for a given seed and arguments.
    """
    out_path = Path(out_path)
    n_frames = round(duration_s * fps)
    if n_frames < 1:
        raise ValueError(f"duration_s * fps must give at least one frame, got {duration_s}*{fps}")
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
    )  # fmt: skip
    n_players = len(renderer.team)
    visible = np.zeros((n_frames, n_players), bool)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with H264Writer(out_path, width, height, fps, crf=look.crf) as writer:
        for i, rendered in enumerate(renderer.frames()):
            writer.write(rendered.image_rgb)
            visible[i] = rendered.visible
    calibration = cam.calibration()
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
    )
