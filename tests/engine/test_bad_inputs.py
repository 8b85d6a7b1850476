"""Bad inputs through the CLI: exit 2, one `error:` line, nothing left in DIR."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.engine.conftest import ffmpeg, run_cli


def _video(kind: str, clip, folder: Path) -> Path:
    path = folder / "video.mp4"
    if kind == "missing":
        return folder / "nowhere.mp4"
    if kind == "zero_byte":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is a shopping list, not a video\n" * 50)
    elif kind == "truncated_mp4":
        # Index (moov) at the end, as a recorder writes it: cut in half, the index is gone.
        whole = folder / "whole.mp4"
        ffmpeg("-i", str(clip.video), "-c", "copy", str(whole))
        data = whole.read_bytes()
        assert data.find(b"moov") > len(data) // 2
        path.write_bytes(data[: len(data) // 2])
    elif kind == "zero_frames":
        # A video track whose presentation starts after its last frame: no frame to show.
        one = folder / "one.mp4"
        ffmpeg(
            "-f",
            "lavfi",
            "-i",
            "color=s=320x240:r=25",
            "-frames:v",
            "5",
            "-c:v",
            "libx264",
            str(one),
        )
        ffmpeg("-ss", "10", "-i", str(one), "-c", "copy", str(path))
    elif kind == "no_stream":
        ffmpeg(
            "-f",
            "lavfi",
            "-i",
            "color=s=320x240:r=25",
            "-frames:v",
            "0",
            "-c:v",
            "libx264",
            str(path),
        )
    else:
        shutil.copy(clip.video, path)
    return path


def _calibration(kind: str, clip, folder: Path) -> Path:
    raw = json.loads(clip.calibration.read_text())
    if kind == "three_points":
        raw["image_points"], raw["pitch_points"] = raw["image_points"][:3], raw["pitch_points"][:3]
    elif kind == "collinear":
        raw["image_points"] = [[100.0 * i, 50.0 * i + 10] for i in range(len(raw["image_points"]))]
    elif kind == "nan":
        raw["pitch_points"][1][0] = float("nan")
    path = folder / "cal.json"
    path.write_text(json.dumps(raw))  # json writes NaN as the literal NaN, as some tools do
    return path


CASES = {
    # case: (video kind, calibration kind, model kind, expected words in the message)
    "missing_file": ("missing", "ok", "ok", "no such file"),
    "zero_byte": ("zero_byte", "ok", "ok", "empty"),
    "text_as_mp4": ("text", "ok", "ok", "not a video"),
    "truncated_mp4": ("truncated_mp4", "ok", "ok", "truncated"),
    "zero_frames": ("zero_frames", "ok", "ok", "no decodable frames"),
    "no_video_stream": ("no_stream", "ok", "ok", "not a video"),
    "calibration_3_points": ("ok", "three_points", "ok", "at least 4 point pairs, got 3"),
    "calibration_collinear": ("ok", "collinear", "ok", "collinear"),
    "calibration_nan": ("ok", "nan", "ok", "NaN"),
    "unreadable_model": ("ok", "ok", "garbage", "not a model"),
    "wrong_input_shape": ("ok", "ok", "wrong_input", "expected float32 [N, 3, H, W]"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_exits_2_with_one_error_line(case: str, clip, models, tmp_path: Path) -> None:
    video_kind, cal_kind, model_kind, words = CASES[case]
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    video = _video(video_kind, clip, inputs)
    cal = _calibration(cal_kind, clip, inputs)
    model = {"ok": models["kit"], "wrong_input": models["wrong_input"]}.get(model_kind)
    if model_kind == "garbage":
        model = inputs / "model.onnx"
        model.write_bytes(bytes(range(256)) * 64)

    results = tmp_path / "results"
    out = results / "DIR"
    out.mkdir(parents=True)
    (out / "earlier.txt").write_text("left by someone else")

    result = run_cli("analyze", video, "--calibration", cal, "--out", out, "--model", model)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert words in lines[0]
    assert sorted(p.name for p in out.iterdir()) == ["earlier.txt"]
    assert sorted(p.name for p in results.iterdir()) == ["DIR"]  # no staging folder left


def test_failure_creates_no_output_folder(clip, tmp_path: Path) -> None:
    out = tmp_path / "never"
    result = run_cli(
        "analyze", tmp_path / "none.mp4", "--calibration", clip.calibration, "--out", out
    )
    assert result.returncode == 2
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == []
