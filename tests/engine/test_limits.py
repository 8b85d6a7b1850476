"""Unbounded inputs through the CLI: refused at once with one `error:` line, or clamped."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from gpu_analysis.engine.calibration import calibration_from_dict
from tests.engine.conftest import run_cli

# Each refusal comes before any work that grows with the input, so the time is the process's
# start (about a second; more on a busy machine).
REFUSED_WITHIN_S = 10.0


def _one_error_line(result) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_sample_fps_above_the_video_is_clamped_with_a_warning(short_clip, tmp_path):
    video, calibration = short_clip.video, short_clip.calibration
    out = tmp_path / "out"
    # Before, the sampler stepped 2.5e-8 frames at a time and never finished.
    args = ("analyze", video, "--calibration", calibration, "--out", out, "--sample-fps", "1e9")
    result = run_cli(*args, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["sample_fps"] == 25.0
    assert report["sampled_frames"] == report["video"]["frame_count"] == 50
    [warning] = report["warnings"]
    assert "1e+09" in warning and "25 fps" in warning and "every frame" in warning
    assert result.stderr.splitlines() == [f"warning: {warning}"]


def test_infinite_sample_fps_is_refused_at_once(short_clip, tmp_path):
    video, calibration = short_clip.video, short_clip.calibration
    out = tmp_path / "out"
    started = time.monotonic()
    args = ("analyze", video, "--calibration", calibration, "--out", out, "--sample-fps", "inf")
    result = run_cli(*args, timeout=60)
    assert time.monotonic() - started < REFUSED_WITHIN_S
    line = _one_error_line(result)
    assert "--sample-fps must be a finite number" in line and "got inf" in line
    assert not out.exists()


def _consistent_points(raw: dict, count: int) -> dict:
    """`count` true point pairs: pitch points spread over the pitch and their image points."""
    calibration = calibration_from_dict(raw)
    pitch_m = np.random.default_rng(0).uniform((0, 0), (105, 68), size=(count, 2))
    image_px = calibration.project_to_image(pitch_m)
    # Centimetres and hundredths of a pixel keep 10,000 pairs well inside the size limit.
    return dict(
        raw, image_points=image_px.round(2).tolist(), pitch_points=pitch_m.round(2).tolist()
    )


def _oversized_calibration(raw: dict) -> str:
    # A valid calibration in every other way: only its size is wrong.
    return json.dumps(dict(raw, notes="x" * (1 << 20)))


CALIBRATIONS = {
    # case: (how the file is made from a valid one, words of the error)
    # The fit's memory grows with the square of the pairs: 6,000 took 2.3 GB, 20,000 asked
    # for 11.9 GiB.
    "10000_points": (
        lambda raw: json.dumps(_consistent_points(raw, 10_000)),
        "10000 image_points; at most 500 point pairs are accepted",
    ),
    # A 1e6 m pitch asked for a 7.28 TiB map and ended in a MemoryError traceback.
    "huge_pitch": (
        lambda raw: json.dumps(dict(raw, pitch={"length_m": 1e6, "width_m": 1e6})),
        "pitch of 1e+06 x 1e+06 m; at most 130 x 100 m",
    ),
    # Deep nesting ended in a RecursionError traceback inside json.loads.
    "deep_json": (
        lambda raw: '{"image_points": ' + "[" * 100_000 + "]" * 100_000 + "}",
        "JSON nested 100001 levels deep",
    ),
    # Was read and parsed whole, however large.
    "oversized_file": (_oversized_calibration, "bytes; at most 1,048,576 are accepted"),
}


@pytest.mark.parametrize("case", sorted(CALIBRATIONS))
def test_oversized_calibration_is_refused_before_any_work(case, short_clip, tmp_path):
    video, calibration = short_clip.video, short_clip.calibration
    make, words = CALIBRATIONS[case]
    cal = tmp_path / "cal.json"
    cal.write_text(make(json.loads(calibration.read_text())))
    out = tmp_path / "out"

    started = time.monotonic()
    result = run_cli("analyze", video, "--calibration", cal, "--out", out, timeout=120)
    elapsed_s = time.monotonic() - started

    line = _one_error_line(result)
    assert line.startswith(f"error: {cal}: ") and words in line
    assert elapsed_s < REFUSED_WITHIN_S, f"{elapsed_s:.1f} s"
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["cal.json"]
