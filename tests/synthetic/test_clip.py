"""The synthetic clip generator: real encoded files, exact calibration, deterministic truth."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from gpu_analysis.synthetic import ClipTruth, ffmpeg_exe, generate_match_clip
from tests.conftest import REPO_ROOT, subprocess_env


def _decode(path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


@pytest.fixture(scope="module")
def tactical_clip(tmp_path_factory):
    out = tmp_path_factory.mktemp("clip") / "match.mp4"
    truth = generate_match_clip(out, seed=3, duration_s=1.0, fps=25.0, camera="tactical")
    return out, truth


def test_clip_decodes_to_stated_frames_and_size(tactical_clip):
    out, truth = tactical_clip
    frames = _decode(out)
    assert len(frames) == truth.frame_count == 25
    assert frames[0].shape == (720, 1280, 3)
    assert truth.positions_m.shape == (25, 20, 2) and truth.positions_m.dtype == np.float32
    assert truth.foot_points_px.shape == (25, 20, 2)
    assert truth.visible.shape == (25, 20) and truth.visible.dtype == bool
    assert truth.team.dtype == np.int8 and sorted(set(truth.team.tolist())) == [0, 1]
    # The whole pitch is in a tactical view, so almost every player is visible.
    assert truth.visible.mean() > 0.9


def test_mp4_is_h264_yuv420p_with_index_in_front(tactical_clip):
    out, _ = tactical_clip
    data = out.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat"), "+faststart puts the index first"
    probe = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-i", str(out)], capture_output=True, text=True
    ).stderr
    assert "h264" in probe and "yuv420p" in probe


def test_calibration_homography_reprojects_truth_within_a_pixel(tactical_clip):
    out, truth = tactical_clip
    cal = json.loads(out.with_name("match.calibration.json").read_text())
    assert cal == truth.calibration
    assert cal["pitch"] == {"length_m": 105.0, "width_m": 68.0}
    assert len(cal["image_points"]) == len(cal["pitch_points"]) >= 4
    h, _ = cv2.findHomography(np.array(cal["pitch_points"]), np.array(cal["image_points"]))
    pts = truth.positions_m.reshape(-1, 1, 2).astype(np.float64)
    projected = cv2.perspectiveTransform(pts, h).reshape(truth.foot_points_px.shape)
    err = np.linalg.norm(projected - truth.foot_points_px, axis=-1)
    assert err.max() < 1.0


def test_players_are_drawn_where_the_truth_says(tactical_clip):
    """Kit pixels (red or blue) sit just above each visible foot point, not elsewhere."""
    out, truth = tactical_clip
    frame = _decode(out)[10][..., ::-1].astype(int)  # RGB
    r, g, b = frame[..., 0], frame[..., 1], frame[..., 2]
    kit = (r - g > 60) | ((b - g > 30) & (b - r > 30))
    near = np.zeros(kit.shape, bool)
    found = []
    for (x, y), h, vis in zip(
        truth.foot_points_px[10], truth.height_px[10], truth.visible[10], strict=True
    ):
        if vis:
            near[max(0, int(y - h)) : int(y + 2), max(0, int(x - h / 2)) : int(x + h / 2)] = True
            found.append(
                kit[max(0, int(y - h)) : int(y), int(x - h / 3) : int(x + h / 3) + 1].any()
            )
    # Chroma subsampling can wash out a 10 px player hidden behind another, hence not all.
    assert np.mean(found) >= 0.9
    # Elsewhere on the pitch (inside the projected touchlines) there is no kit colour.
    h, _ = cv2.findHomography(
        np.array(truth.calibration["pitch_points"]), np.array(truth.calibration["image_points"])
    )
    corners_m = np.array([[[1, 1]], [[104, 1]], [[104, 67]], [[1, 67]]], np.float64)
    corners_px = cv2.perspectiveTransform(corners_m, h).reshape(-1, 2)
    on_pitch = np.zeros(kit.shape, np.uint8)
    cv2.fillConvexPoly(on_pitch, np.round(corners_px).astype(np.int32), 1)
    on_pitch = on_pitch.astype(bool)
    assert kit[on_pitch & ~near].mean() < 0.002


def test_same_seed_same_clip_other_seed_other_clip(tmp_path):
    a = generate_match_clip(tmp_path / "a.mkv", seed=7, duration_s=0.4, camera="broadcast")
    b = generate_match_clip(tmp_path / "b.mkv", seed=7, duration_s=0.4, camera="broadcast")
    c = generate_match_clip(tmp_path / "c.mkv", seed=8, duration_s=0.4, camera="broadcast")
    np.testing.assert_array_equal(a.positions_m, b.positions_m)
    np.testing.assert_array_equal(a.visible, b.visible)
    assert not np.array_equal(a.positions_m, c.positions_m)
    fa, fb = _decode(tmp_path / "a.mkv"), _decode(tmp_path / "b.mkv")
    assert len(fa) == len(fb) == 10
    assert all(np.array_equal(x, y) for x, y in zip(fa, fb, strict=True))


def test_broadcast_view_shows_part_of_the_pitch(tmp_path):
    truth = generate_match_clip(tmp_path / "b.ts", seed=1, duration_s=2.0, camera="broadcast")
    assert 0.3 < truth.visible.mean() < 0.98
    assert truth.height_px[truth.visible].min() > 20  # closer than the tactical view
    assert len(_decode(tmp_path / "b.ts")) == 50


def test_motion_is_smooth_and_inside_the_pitch(tactical_clip):
    _, truth = tactical_clip
    pos = truth.positions_m
    assert (pos[..., 0] >= 0).all() and (pos[..., 0] <= 105).all()
    assert (pos[..., 1] >= 0).all() and (pos[..., 1] <= 68).all()
    speed_m_s = np.linalg.norm(np.diff(pos, axis=0), axis=-1) * truth.fps
    assert speed_m_s.max() <= 8.5


def test_occupancy_map_and_truth_roundtrip(tactical_clip, tmp_path):
    _, truth = tactical_clip
    occ = truth.occupancy_map()
    assert occ.shape == (68, 105) and occ.min() >= 0
    assert occ.sum() == pytest.approx(1.0)
    assert truth.occupancy_map(res_m=2.0).shape == (34, 53)
    # Cell of the first visible player-frame is occupied.
    f, p = np.argwhere(truth.visible)[0]
    x, y = truth.positions_m[f, p]
    assert occ[int(y), int(x)] > 0
    truth.save(tmp_path / "t.npz")
    back = ClipTruth.load(tmp_path / "t.npz")
    assert back.calibration == truth.calibration and back.frame_count == truth.frame_count
    np.testing.assert_array_equal(back.foot_points_px, truth.foot_points_px)
    np.testing.assert_array_equal(back.team, truth.team)


def test_cli_writes_clip_calibration_and_truth(tmp_path):
    out = tmp_path / "demo.mp4"
    proc = subprocess.run(
        [sys.executable, "-m", "gpu_analysis", "synth-clip", str(out), "--seed", "2",
         "--duration", "0.4", "--camera", "broadcast", "--width", "640", "--height", "360"],
        capture_output=True, text=True, cwd=REPO_ROOT, env=subprocess_env(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    truth = ClipTruth.load(tmp_path / "demo.truth.npz")
    assert (truth.width, truth.height, truth.frame_count) == (640, 360, 10)
    assert (tmp_path / "demo.calibration.json").exists()
    assert len(_decode(out)) == 10


def test_cli_rejects_bad_suffix(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "gpu_analysis", "synth-clip", str(tmp_path / "x.avi")],
        capture_output=True, text=True, cwd=REPO_ROOT, env=subprocess_env(),
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.startswith("error:") and not (tmp_path / "x.avi").exists()
