"""Garbage in is refused, not mapped: each case of issue 13 through `gpu-analysis analyze`.

A match whose map would be empty or meaningless exits 2 with one `error:` line; one whose
map is still useful but whose input was partly garbage succeeds with the warning in
report.json (and on the command's log).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from gpu_analysis.engine import sanity
from gpu_analysis.engine.calibration import load_calibration
from gpu_analysis.engine.errors import UserError
from tests.engine import onnx_models
from tests.engine.conftest import ffmpeg, run_cli
from tests.engine.test_analyze import _smoothed_correlation


def _error_line(result) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def _analyze(clip, tmp_path: Path, *, model: Path | str = "builtin", calibration=None, video=None):
    out = tmp_path / "out"
    result = run_cli(
        "analyze", video or clip.video, "--calibration", calibration or clip.calibration,
        "--out", out, "--model", model, "--sample-fps", "5",
    )  # fmt: skip
    return result, out


def _yolo_prediction(clip, extra_boxes: list[list[float]]) -> np.ndarray:
    """(5, A) YOLO boxes, input 640x640: ten players on the pitch of `clip` plus extra_boxes."""
    calibration = load_calibration(clip.calibration)
    spots_m = np.array([[20.0 + 7 * i, 20.0 + 3 * (i % 4)] for i in range(10)])
    feet_px = calibration.project_to_image(spots_m)
    assert ((feet_px > 0) & (feet_px < [640, 360])).all()
    pad_top = (640 - 360) / 2  # the 640x360 clip letterboxed into 640x640
    boxes = [[x, y + pad_top - 15, 10, 30, 0.9] for x, y in feet_px]
    return np.array(boxes + extra_boxes, np.float32).T


@pytest.mark.parametrize(
    "value, words",
    [
        (0.0, "the model found no players in any of the 10 sampled frames"),
        (float("nan"), "the model found no players in any of the 10 sampled frames"),
        (float("inf"), "more than 200 players on the pitch in 10 of 10 sampled frames"),
    ],
    ids=["nothing", "nan_heat", "inf_heat"],
)
def test_a_model_that_finds_nothing_or_everything_is_an_error(short_clip, tmp_path, value, words):
    model = onnx_models.constant_heatmap_model(tmp_path / "model.onnx", value)
    result, out = _analyze(short_clip, tmp_path, model=model)
    line = _error_line(result)
    assert words in line and "check" in line, line
    assert not out.exists()


def test_non_finite_boxes_are_an_error_when_they_are_most_of_the_output(short_clip, tmp_path):
    nan_boxes = [[float("nan"), 100.0, 10.0, 30.0, 0.9]] * 11
    prediction = _yolo_prediction(short_clip, nan_boxes)
    model = onnx_models.constant_yolo_model(tmp_path / "model.onnx", prediction)
    result, out = _analyze(short_clip, tmp_path, model=model)
    line = _error_line(result)
    assert "NaN or infinite coordinates for 110 detections in 10 of 10 sampled frames" in line
    assert not out.exists()


def test_a_few_non_finite_boxes_are_dropped_with_a_warning(short_clip, tmp_path):
    bad_boxes = [[float("nan"), 100.0, 10.0, 30.0, 0.9], [float("inf"), 200.0, 10.0, 30.0, 0.9]]
    prediction = _yolo_prediction(short_clip, bad_boxes)
    model = onnx_models.constant_yolo_model(tmp_path / "model.onnx", prediction)
    result, out = _analyze(short_clip, tmp_path, model=model)
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["detections_on_pitch"] == 100  # the ten real boxes in each of 10 frames
    [warning] = report["warnings"]
    assert "NaN or infinite coordinates for 20 detections in 10 of 10 sampled frames" in warning
    assert "dropped" in warning and f"warning: {warning}" in result.stderr.splitlines()
    assert abs(float(np.load(out / "temperature_map.npy").sum()) - 1.0) < 1e-5


def test_a_crowded_but_useful_map_succeeds_with_warnings(short_clip, models, tmp_path):
    # The crude kit-colour model finds shirts and pitch lines alike: ~89 "players" a frame,
    # 88 % of its detections off the pitch. Its map still follows the play: kept, flagged.
    result, out = _analyze(short_clip, tmp_path, model=models["kit"])
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    warnings = report["warnings"]
    crowded = "more than 30 players on the pitch in 10 of 10 sampled frames"
    assert any(crowded in w for w in warnings)
    assert any("land outside the pitch" in w and "check the calibration" in w for w in warnings)
    assert result.stderr.splitlines() == [f"warning: {w}" for w in warnings]


def test_a_homography_that_misses_the_pitch_is_an_error(short_clip, tmp_path):
    raw = json.loads(short_clip.calibration.read_text())
    raw["pitch_points"] = [[x + 300.0, y] for x, y in raw["pitch_points"]]
    calibration = tmp_path / "cal.json"
    calibration.write_text(json.dumps(raw))
    result, out = _analyze(short_clip, tmp_path, calibration=calibration)
    line = _error_line(result)
    assert "maps 0.0% of the 640x360 frame onto the pitch" in line and "check" in line, line
    assert not out.exists()


def test_a_1x1_video_is_an_error(short_clip, tmp_path):
    video = tmp_path / "tiny.mp4"
    ffmpeg(
        "-f", "lavfi", "-i", "color=c=green:s=2x2:r=25", "-frames:v", "25",
        "-vf", "scale=1:1", "-c:v", "libx264", "-pix_fmt", "yuv444p", str(video),
    )  # fmt: skip
    result, out = _analyze(short_clip, tmp_path, video=video)
    line = _error_line(result)
    assert "frames are 1x1 pixels; at least 64 on each side are needed" in line, line
    assert not out.exists()


def test_a_black_video_is_an_error_and_a_few_black_frames_a_warning(short_clip, tmp_path):
    black = tmp_path / "black.mp4"
    ffmpeg(
        "-f", "lavfi", "-i", "color=c=black:s=640x360:r=25", "-frames:v", "50",
        "-c:v", "libx264", "-pix_fmt", "yuv420p", str(black),
    )  # fmt: skip
    result, out = _analyze(short_clip, tmp_path, video=black)
    line = _error_line(result)
    assert "10 of 10 sampled frames are black; check the video" in line, line
    assert not out.exists()

    # The match, then the feed lost for 0.4 s: 2 of the 12 sampled frames are black.
    cut = tmp_path / "cut.mp4"
    ffmpeg(
        "-i", str(short_clip.video), "-f", "lavfi", "-t", "0.4", "-i",
        "color=c=black:s=640x360:r=25", "-filter_complex", "[0:v][1:v]concat=n=2:v=1[v]",
        "-map", "[v]", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(cut),
    )  # fmt: skip
    result, out = _analyze(short_clip, tmp_path, video=cut)
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["warnings"] == ["2 of 12 sampled frames are black; the map covers the others"]
    assert f"warning: {report['warnings'][0]}" in result.stderr.splitlines()


def test_a_calibration_for_another_resolution_is_refused_unless_it_says_to_scale(
    short_clip, tmp_path
):
    # The same camera view measured on a 1280x720 frame: every pixel twice the 640x360 one.
    raw = json.loads(short_clip.calibration.read_text())
    raw["image_points"] = [[2 * x, 2 * y] for x, y in raw["image_points"]]
    raw["image_size"] = [1280, 720]
    calibration = tmp_path / "cal.json"
    calibration.write_text(json.dumps(raw))
    result, out = _analyze(short_clip, tmp_path, calibration=calibration)
    line = _error_line(result)
    assert "made for 1280x720 video" in line and "this video is 640x360" in line, line
    assert 'rename "image_size" to "scale_from"' in line
    assert not out.exists()

    # Done as the message says, the points follow the video and the map is the true one.
    raw["scale_from"] = raw.pop("image_size")
    calibration.write_text(json.dumps(raw))
    result, out = _analyze(short_clip, tmp_path, calibration=calibration)
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["warnings"] == []
    overall = np.load(out / "temperature_map.npy")
    assert _smoothed_correlation(overall, short_clip.truth.occupancy_map(1.0)) >= 0.9


def test_a_calibration_that_names_this_videos_size_is_accepted(short_clip, tmp_path):
    raw = json.loads(short_clip.calibration.read_text())
    path = tmp_path / "cal.json"
    for size in ([640, 360], [640.0, 360.0]):
        path.write_text(json.dumps({**raw, "image_size": size}))
        calibration = load_calibration(path).for_video(640, 360, str(path))
        assert calibration.image_size_px == (640, 360)
    for bad in ([640], [0, 360], ["640", 360], [640.5, 360], True):
        path.write_text(json.dumps({**raw, "image_size": bad}))
        with pytest.raises(UserError, match=r'"image_size" must be \[width, height\]'):
            load_calibration(path)
    path.write_text(json.dumps({**raw, "image_size": [640, 360], "scale_from": [640, 360]}))
    with pytest.raises(UserError, match="not both"):
        load_calibration(path)


def _counts(per_frame, total=None, nonfinite=0, nonfinite_frames=0) -> sanity.DetectionCounts:
    per_frame = np.asarray(per_frame, np.int64)
    return sanity.DetectionCounts(
        sampled_frames=len(per_frame),
        detections_total=int(per_frame.sum()) + nonfinite if total is None else total,
        nonfinite=nonfinite,
        nonfinite_frames=nonfinite_frames,
        on_pitch_per_frame=per_frame,
    )


def test_check_detections_thresholds() -> None:
    # The built-in model on the demo clip: 17-20 a frame, none off the pitch. Nothing to say.
    assert sanity.check_detections(_counts([19] * 30)) == []
    # Black frames: a warning for a few, an error for most.
    [warning] = sanity.check_detections(dataclasses.replace(_counts([19] * 30), black_frames=3))
    assert warning == "3 of 30 sampled frames are black; the map covers the others"
    with pytest.raises(UserError, match="16 of 30 sampled frames are black"):
        sanity.check_detections(dataclasses.replace(_counts([19] * 30), black_frames=16))
    # A few absurd frames: kept, with a warning naming them.
    [warning] = sanity.check_detections(_counts([20] * 27 + [500] * 3))
    assert "more than 30 players on the pitch in 3 of 30 sampled frames" in warning
    # Absurd in most frames: an error naming the count.
    with pytest.raises(UserError, match="more than 200 players on the pitch in 16 of 30"):
        sanity.check_detections(_counts([20] * 14 + [1306] * 16))
    # Every detection off the pitch: the map would be empty.
    with pytest.raises(UserError, match="100% of the 40 detections land outside the pitch"):
        sanity.check_detections(_counts([0] * 10, total=40))
    # Most off the pitch: a warning naming the share.
    [warning] = sanity.check_detections(_counts([2] * 10, total=100))
    assert "80% of the 100 detections land outside the pitch (20 on it)" in warning
