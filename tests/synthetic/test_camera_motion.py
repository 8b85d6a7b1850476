"""Moving cameras in the renderer: pans, tilts, zooms, cuts and lens distortion, with the
per-frame truth (homographies, shot labels, lens) that camera tracking is tested against.

The renders are real encoded files decoded back; the truth is checked against the pixels
(the painted pitch lines sit where each frame's homography puts them), not against itself.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys

import cv2
import numpy as np
import pytest

from gpu_analysis.synthetic.camera import LensDistortion, preset_camera
from gpu_analysis.synthetic.camera_motion import (
    SHOT_CLOSEUP,
    SHOT_PITCH,
    CameraMotion,
    CameraPath,
    Cut,
    camera_path,
    parse_cuts,
)
from gpu_analysis.synthetic.clip import ClipTruth, MatchRenderer, generate_match_clip
from gpu_analysis.synthetic.look import default_look, random_look
from gpu_analysis.synthetic.motion import simulate_positions
from gpu_analysis.synthetic.render import Stadium
from tests.conftest import REPO_ROOT, subprocess_env

L_M, W_M = 105.0, 68.0


def _decode(path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame[..., ::-1])  # RGB
    cap.release()
    return frames


def _line_points_m() -> np.ndarray:
    """Points on the painted markings (metres): touchlines, goal lines, halfway line, centre
    circle, both penalty areas."""
    t = np.linspace(0.0, 1.0, 240)[:, None]
    cy = W_M / 2
    segments = [
        ((0, 0), (L_M, 0)), ((0, W_M), (L_M, W_M)), ((0, 0), (0, W_M)), ((L_M, 0), (L_M, W_M)),
        ((L_M / 2, 0), (L_M / 2, W_M)),
        ((16.5, cy - 20.16), (16.5, cy + 20.16)), ((0, cy - 20.16), (16.5, cy - 20.16)),
        ((0, cy + 20.16), (16.5, cy + 20.16)),
        ((L_M - 16.5, cy - 20.16), (L_M - 16.5, cy + 20.16)),
        ((L_M, cy - 20.16), (L_M - 16.5, cy - 20.16)),
        ((L_M, cy + 20.16), (L_M - 16.5, cy + 20.16)),
    ]  # fmt: skip
    pts = [np.asarray(a) + t * (np.asarray(b) - np.asarray(a)) for a, b in segments]
    angle = np.linspace(0, 2 * np.pi, 240, endpoint=False)
    pts.append(np.column_stack([L_M / 2 + 9.15 * np.cos(angle), cy + 9.15 * np.sin(angle)]))
    return np.concatenate(pts)


def _apply(h: np.ndarray, pts: np.ndarray) -> np.ndarray:
    homogeneous = np.c_[pts, np.ones(len(pts))] @ h.T
    return homogeneous[:, :2] / homogeneous[:, 2:3]


def _line_share(
    frame_rgb: np.ndarray,
    image_to_pitch: np.ndarray,
    truth: ClipTruth,
    i: int,
    lens: LensDistortion | None,
) -> tuple[float, int]:
    """Share of the marking points that land on line-coloured pixels, and how many counted.

    Points are placed with `image_to_pitch` (undistorted pixels), bent by `lens` if given;
    points under or next to a player (his body, his shadow) are not counted.
    """
    height, width = frame_rgb.shape[:2]
    px = _apply(np.linalg.inv(image_to_pitch), _line_points_m())
    if lens is not None:
        px = lens.distort_px(px)
    keep = (px[:, 0] >= 2) & (px[:, 0] < width - 2) & (px[:, 1] >= 2) & (px[:, 1] < height - 2)
    for (fx, fy), h_px in zip(truth.foot_points_px[i], truth.height_px[i], strict=True):
        near = (np.abs(px[:, 0] - fx) < 0.5 * h_px + 3) & (px[:, 1] > fy - 1.1 * h_px - 3)
        keep &= ~(near & (px[:, 1] < fy + 0.35 * h_px + 3))
    px = px[keep]
    # Line-coloured: brighter in every channel than the grass around it, and the grass is
    # there (its local median is green: crowd and boards are no pitch marking). A 3x3 max
    # absorbs sub-pixel rounding; a far line, thinner than a pixel and so fainter, counts as
    # long as it stands out.
    darkest = frame_rgb.min(axis=2)
    whiteness = cv2.dilate(darkest, np.ones((3, 3), np.uint8)).astype(int)
    around = cv2.medianBlur(frame_rgb, 15).astype(int)
    rows, cols = np.round(px[:, 1]).astype(int), np.round(px[:, 0]).astype(int)
    local = around[rows, cols]
    on_grass = (local[:, 1] - local[:, 0] > 30) & (local[:, 1] - local[:, 2] > 30)
    line = on_grass & (whiteness[rows, cols] - local.min(axis=1) > 25)
    return float(line.mean()) if len(line) else 0.0, len(line)


def _yaw_and_focal(image_to_pitch: np.ndarray, width: int, height: int) -> tuple[float, float]:
    """The camera's heading (degrees) and focal length (px) recovered from a ground homography.

    H = K [r1 r2 t] up to scale with K = [[f, 0, cx], [0, f, cy], [0, 0, 1]]: r1 and r2 are
    orthogonal and of equal length, which fixes f; the optical axis in the world is then the
    third row of [r1 r2 r1 x r2].
    """
    h = np.linalg.inv(image_to_pitch)
    a = h - np.outer([width / 2, height / 2, 0.0], h[2])
    a1, a2 = a[:, 0], a[:, 1]
    c = np.array([a1[0] * a2[0] + a1[1] * a2[1], a1[0] ** 2 + a1[1] ** 2 - a2[0] ** 2 - a2[1] ** 2])
    d = np.array([a1[2] * a2[2], a1[2] ** 2 - a2[2] ** 2])
    inv_f2 = -(c @ d) / (c @ c)
    f = 1.0 / math.sqrt(inv_f2)
    r1 = np.array([a1[0] / f, a1[1] / f, a1[2]])
    r2 = np.array([a2[0] / f, a2[1] / f, a2[2]])
    scale = np.linalg.norm(r1)
    r1, r2 = r1 / scale, r2 / scale
    # The pitch centre is in front of the camera: pick the sign that says so.
    centre_depth = r1[2] * L_M / 2 + r2[2] * W_M / 2 + a[2, 2] / scale
    if centre_depth < 0:
        r1, r2 = -r1, -r2
    r3 = np.cross(r1, r2)
    forward = np.array([r1[2], r2[2], r3[2]])
    return math.degrees(math.atan2(forward[1], forward[0])), f


# Broadcast size motion (issue 14's second acceptance case): +-30 degree pan, 2x zoom, a
# close-up and a crowd shot.
_BROADCAST = CameraMotion(
    pan_deg=30.0,
    tilt_deg=3.0,
    zoom_range=(1.0, 2.0),
    cuts=(Cut(1.0, 0.4, "closeup"), Cut(2.0, 0.3, "crowd")),
)


@pytest.fixture(scope="module")
def broadcast_clip(tmp_path_factory):
    out = tmp_path_factory.mktemp("moving") / "pan.mp4"
    truth = generate_match_clip(
        out, seed=11, duration_s=3.0, fps=25.0, width=960, height=540,
        camera_motion=_BROADCAST, goalkeepers=True, officials=True,
    )  # fmt: skip
    return out, truth, _decode(out)


@pytest.fixture(scope="module")
def distorted_clip(tmp_path_factory):
    out = tmp_path_factory.mktemp("lens") / "lens.mp4"
    motion = CameraMotion(pan_deg=5.0, tilt_deg=1.0, distortion=(-0.25, 0.05))
    truth = generate_match_clip(
        out, seed=12, duration_s=1.0, fps=25.0, width=960, height=540, camera_motion=motion
    )
    return out, truth, _decode(out)


def test_every_frames_homography_puts_the_pitch_lines_on_painted_pixels(broadcast_clip):
    _, truth, frames = broadcast_clip
    assert len(frames) == truth.frame_count == 75
    pitch_frames = np.flatnonzero(truth.shot == SHOT_PITCH)
    checked = pitch_frames[:: max(1, len(pitch_frames) // 8)]
    for i in checked:
        share, counted = _line_share(frames[i], truth.image_to_pitch[i], truth, i, None)
        assert counted >= 150, (i, counted)
        assert share >= 0.9, (i, share)
    # The check can tell: the reference frame's homography, kept for a frame the camera has
    # panned away from, lands off the lines (a stale homography is what the truth replaces).
    yaw = {
        i: _yaw_and_focal(truth.image_to_pitch[i], truth.width, truth.height)[0] for i in checked
    }
    far = max(checked, key=lambda i: abs(yaw[i] - yaw[checked[0]]))
    assert abs(yaw[far] - yaw[checked[0]]) > 10
    stale, _ = _line_share(frames[far], truth.image_to_pitch[checked[0]], truth, far, None)
    assert stale < 0.2, stale


def test_pans_and_zooms_have_the_asked_amplitude(broadcast_clip):
    # Exactly the asked swing on the camera path itself (no cuts: they would hide extremes).
    base = preset_camera("gantry", 960, 540)
    rng = np.random.default_rng(0)
    positions_m, team, _ = simulate_positions(rng, 250, 25.0, 10)
    motion = CameraMotion(pan_deg=10.0, tilt_deg=2.0, zoom_range=(0.8, 1.2))
    path = camera_path(base, motion, positions_m, team, 25.0, np.random.default_rng(1))
    homographies = path.image_to_pitch()
    recovered = np.array([_yaw_and_focal(h, 960, 540) for h in homographies])
    assert recovered[:, 0].max() - recovered[:, 0].min() == pytest.approx(20.0, abs=1e-6)
    np.testing.assert_allclose(recovered[:, 0], np.degrees(path.yaw_rad), atol=1e-6)
    focal_ratio = recovered[:, 1] / base.focal_px
    assert focal_ratio.min() == pytest.approx(0.8, rel=1e-6)
    assert focal_ratio.max() == pytest.approx(1.2, rel=1e-6)
    # Smooth like a camera operator: no jumps between frames.
    assert np.abs(np.diff(recovered[:, 0])).max() < 1.0

    # The rendered broadcast clip: the truth's homographies swing over (nearly) +-30 degrees
    # and a 2x zoom on the frames that show the pitch (the cuts may hide the very extremes).
    _, truth, _ = broadcast_clip
    pitch = truth.shot == SHOT_PITCH
    rec = np.array(
        [_yaw_and_focal(h, truth.width, truth.height) for h in truth.image_to_pitch[pitch]]
    )
    assert 0.85 * 60.0 <= rec[:, 0].max() - rec[:, 0].min() <= 60.0 + 1e-6
    ratio = rec[:, 1].max() / rec[:, 1].min()
    assert 1.7 <= ratio <= 2.0 + 1e-6
    # The player size follows the zoom: the same spot of the pitch looks bigger zoomed in.
    assert truth.height_px[pitch].max() > 1.5 * np.median(truth.height_px[pitch])


def test_cuts_are_labelled_have_no_homography_and_no_countable_players(broadcast_clip):
    _, truth, frames = broadcast_clip
    frame_s = np.arange(truth.frame_count) / truth.fps
    in_cut = ((frame_s >= 1.0) & (frame_s < 1.4)) | ((frame_s >= 2.0) & (frame_s < 2.3))
    np.testing.assert_array_equal(truth.shot == SHOT_CLOSEUP, in_cut)
    assert truth.shot.dtype == np.int8 and truth.image_to_pitch.dtype == np.float64
    assert np.isnan(truth.image_to_pitch[in_cut]).all()
    assert np.isfinite(truth.image_to_pitch[~in_cut]).all()
    assert not truth.visible[in_cut].any()
    assert truth.visible[~in_cut].mean() > 0.3
    # What the cuts show: the close-up is grass and big players, the crowd shot no grass.

    def grass_share(frame):
        r, g, b = (frame[..., k].astype(int) for k in range(3))
        return float(((g - r > 40) & (g - b > 40)).mean())

    closeup, crowd = frames[int(1.2 * 25)], frames[int(2.1 * 25)]
    assert grass_share(closeup) > 0.5 and grass_share(crowd) < 0.02
    assert grass_share(frames[0]) > 0.4
    # After the cuts the main camera is back: its homography keeps to the lines again.
    after = int(2.4 * 25)
    share, _ = _line_share(frames[after], truth.image_to_pitch[after], truth, after, None)
    assert share >= 0.9


def test_reference_calibration_is_frame_zeros_and_the_truth_round_trips(broadcast_clip, tmp_path):
    out, truth, _ = broadcast_clip
    cal = json.loads(out.with_name("pan.calibration.json").read_text())
    assert cal == truth.calibration and cal["reference_frame"] == 0 and "distortion" not in cal
    mapped = _apply(truth.image_to_pitch[0], np.array(cal["image_points"]))
    np.testing.assert_allclose(mapped, np.array(cal["pitch_points"]), atol=1e-3)
    truth.save(tmp_path / "t.npz")
    back = ClipTruth.load(tmp_path / "t.npz")
    np.testing.assert_array_equal(back.image_to_pitch, truth.image_to_pitch)
    np.testing.assert_array_equal(back.shot, truth.shot)
    assert back.distortion is None
    # Truth saved before cameras moved (no such arrays) still loads.
    with np.load(tmp_path / "t.npz") as z:
        old = {k: z[k] for k in z.files if k not in ("image_to_pitch", "shot", "distortion_json")}
    np.savez_compressed(tmp_path / "old.npz", **old)
    legacy = ClipTruth.load(tmp_path / "old.npz")
    assert legacy.image_to_pitch is None and legacy.shot is None and legacy.distortion is None


def test_lens_model_is_opencvs_and_round_trips():
    lens = LensDistortion(-0.25, 0.05, 830.0, (480.0, 270.0))
    ys, xs = np.mgrid[-40:580:7, -60:1020:9].astype(np.float64)
    ideal = np.stack([xs, ys], axis=-1).reshape(-1, 2)
    seen = lens.distort_px(ideal)
    np.testing.assert_allclose(lens.undistort_px(seen), ideal, atol=1e-6)
    # Same forward model as OpenCV's projectPoints with distCoeffs (k1, k2, 0, 0).
    rays = np.c_[(ideal - lens.centre_px) / lens.focal_px, np.ones(len(ideal))]
    projected, _ = cv2.projectPoints(
        rays, np.zeros(3), np.zeros(3), lens.camera_matrix, lens.coefficients
    )
    np.testing.assert_allclose(seen, projected.reshape(-1, 2), atol=1e-6)
    # And OpenCV's own inverse (iterated to convergence) agrees with ours.
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 200, 1e-14)
    back = cv2.undistortPoints(
        seen.reshape(-1, 1, 2), lens.camera_matrix, lens.coefficients, None,
        lens.camera_matrix, criteria=criteria,
    )  # fmt: skip
    np.testing.assert_allclose(back.reshape(-1, 2), ideal, atol=1e-3)


def test_distorted_frames_bend_the_lines_as_the_truth_says(distorted_clip):
    out, truth, frames = distorted_clip
    lens = truth.distortion
    assert lens is not None and (lens.k1, lens.k2) == (-0.25, 0.05)
    for i in (0, 12, 24):
        bent, counted = _line_share(frames[i], truth.image_to_pitch[i], truth, i, lens)
        assert counted >= 150 and bent >= 0.9, (i, bent, counted)
    # Without the lens the same homography misses the lines where distortion moves them.
    px = _apply(np.linalg.inv(truth.image_to_pitch[0]), _line_points_m())
    moved = np.linalg.norm(lens.distort_px(px) - px, axis=1) > 4
    assert moved.sum() > 100
    straight, _ = _line_share(frames[0], truth.image_to_pitch[0], truth, 0, None)
    assert straight < 0.7, straight
    # The calibration file gives the points as seen (distorted) and the lens to undo them.
    cal = json.loads(out.with_name("lens.calibration.json").read_text())
    assert cal["reference_frame"] == 0 and cal["distortion"] == lens.as_dict()
    assert len(cal["image_points"]) >= 4
    ideal = lens.undistort_px(np.array(cal["image_points"]))
    mapped = _apply(truth.image_to_pitch[0], ideal)
    np.testing.assert_allclose(mapped, np.array(cal["pitch_points"]), atol=0.01)
    # Foot points in the truth are where the lens put them, inside the frame when visible.
    fp = truth.foot_points_px[truth.visible]
    assert (fp[:, 0] >= 0).all() and (fp[:, 0] < truth.width).all()


def test_the_engine_reads_the_reference_calibration_of_a_distorted_clip(distorted_clip):
    """The file beside the clip is the engine's calibration format: loaded by the engine, it
    puts frame 0's true foot points (as seen through the lens) on their pitch positions."""
    from gpu_analysis.engine.calibration import load_calibration

    out, truth, _ = distorted_clip
    cal = load_calibration(out.with_name("lens.calibration.json"))
    seen = truth.visible[0]
    positions_m, on_pitch = cal.project_to_pitch(truth.foot_points_px[0][seen])
    assert on_pitch.all()
    error_m = np.linalg.norm(positions_m - truth.positions_m[0][seen], axis=1)
    # foot_points_px are float32: a few millimetres of rounding at most.
    assert error_m.max() < 0.05, error_m.max()


# sha256 over 3 raw frames, foot points, visibility, heights and the calibration of two
# static clips, recorded with the renderer of commit c88236e (before cameras moved). A static
# camera must keep giving exactly these: tests/engine's expectations rest on them.
_STATIC_DIGESTS = {
    ("broadcast", "default", 4): "9619d4b1c918cf63621099da295a57f085cff9b9aeb2110a796fda4e411c696d",
    ("tactical", "random", 9): "8fb7adc19cbf95d48ae297366208b3cca1014abfa73fa23ef4b12587680e6372",
}


@pytest.mark.parametrize("camera_name,look_name,seed", sorted(_STATIC_DIGESTS))
def test_a_static_camera_renders_exactly_the_old_clip(camera_name, look_name, seed):
    cam = preset_camera(camera_name, 320, 180)
    look = (
        default_look() if look_name == "default" else random_look(np.random.default_rng([seed, 2]))
    )
    renderer = MatchRenderer(
        seed=seed, n_frames=3, fps=25.0, camera=cam, look=look, goalkeepers=True, officials=True
    )
    digest = hashlib.sha256()
    for frame in renderer.frames():
        for a in (frame.image_rgb, frame.foot_points_px, frame.visible, frame.height_px):
            digest.update(np.ascontiguousarray(a).tobytes())
    digest.update(json.dumps(cam.calibration()).encode())
    assert digest.hexdigest() == _STATIC_DIGESTS[(camera_name, look_name, seed)]


def test_static_clip_truth_has_one_homography_and_all_pitch_shots(tmp_path):
    truth = generate_match_clip(tmp_path / "s.mp4", seed=2, duration_s=0.2, width=320, height=180)
    assert "reference_frame" not in truth.calibration
    assert (truth.shot == SHOT_PITCH).all() and truth.distortion is None
    assert np.allclose(truth.image_to_pitch, truth.image_to_pitch[0])
    mapped = _apply(truth.image_to_pitch[0], np.array(truth.calibration["image_points"]))
    np.testing.assert_allclose(mapped, np.array(truth.calibration["pitch_points"]), atol=1e-3)


@pytest.mark.parametrize("name", ["tactical", "behind_goal", "gantry"])
def test_the_fast_stadium_drawing_matches_the_exact_one_from_any_angle(name):
    """Each moving frame is drawn with whole-ROI warps and mipmapped grass; the static
    renderer's per-pixel ray casting is the reference: they agree but for plane edges and
    the far grass the reference aliases."""
    base = preset_camera(name, 640, 360)
    stadium = Stadium(default_look(), np.random.default_rng(1), base.position_m)
    forward = base.rotation[2]
    yaw0, down0 = math.atan2(forward[1], forward[0]), math.asin(-forward[2])
    for d_yaw, d_down, zoom in ((-30, 0, 1.0), (30, 5, 2.0), (45, -25, 0.5)):
        path = CameraPath(
            base, np.array([yaw0 + math.radians(d_yaw)]), np.array([down0 + math.radians(d_down)]),
            0.0, np.array([base.focal_px * zoom]), np.zeros(1, np.int8),
        )  # fmt: skip
        cam = path.camera(0)
        fast, exact = stadium.draw(cam), stadium.draw(cam, exact=True)
        differ = np.abs(fast.astype(int) - exact).max(axis=-1) > 40
        assert differ.mean() < 0.01, (name, d_yaw, d_down, zoom, differ.mean())


def test_bad_motion_is_refused_with_what_to_change():
    base = preset_camera("gantry", 320, 180)
    positions_m, team, _ = simulate_positions(np.random.default_rng(0), 25, 25.0, 3)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="falls in a cut"):
        camera_path(base, CameraMotion(cuts=(Cut(0.0, 0.2),)), positions_m, team, 25.0, rng)
    with pytest.raises(ValueError, match="does not fit"):
        camera_path(base, CameraMotion(cuts=(Cut(5.0, 0.2),)), positions_m, team, 25.0, rng)
    with pytest.raises(ValueError, match="zoom_range"):
        camera_path(base, CameraMotion(zoom_range=(2.0, 1.0)), positions_m, team, 25.0, rng)
    assert parse_cuts("8:2, 20:1.5:crowd") == (Cut(8.0, 2.0), Cut(20.0, 1.5, "crowd"))
    with pytest.raises(ValueError, match="kind"):
        parse_cuts("8:2:replay")


def test_cli_renders_a_moving_clip_and_refuses_bad_flags(tmp_path):
    out = tmp_path / "m.mp4"
    cmd = [sys.executable, "-m", "gpu_analysis", "synth-clip", str(out), "--seed", "3",
           "--duration", "0.8", "--width", "320", "--height", "180", "--pan-deg", "10",
           "--zoom", "0.8:1.2", "--cuts", "0.4:0.2:crowd",
           "--distortion", "-0.1", "0.01"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, env=subprocess_env())
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["pitch_view_share"] == pytest.approx(0.75)
    truth = ClipTruth.load(tmp_path / "m.truth.npz")
    assert truth.shot.tolist() == [0] * 10 + [1] * 5 + [0] * 5
    assert (truth.distortion.k1, truth.distortion.k2) == (-0.1, 0.01)
    assert len(_decode(out)) == 20
    refused = (
        ("--zoom", "2", "--zoom"),
        ("--cuts", "0.1:0.2:replay", "--cuts"),
        ("--cuts", "0:0.5", "falls in a cut"),
        ("--distortion", "-0.9 0.0", "folds over"),
    )
    for flag, value, problem in refused:
        bad = subprocess.run(
            [*cmd[:4], str(tmp_path / "bad.mp4"), flag, *value.split()],
            capture_output=True, text=True, cwd=REPO_ROOT, env=subprocess_env(),
        )  # fmt: skip
        assert bad.returncode == 2, (flag, bad.stderr)
        assert bad.stderr.startswith("error:") and problem in bad.stderr, bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "bad.mp4").exists()
