"""Streams cut mid-file: analysed up to the break with the lost frames counted, or refused."""

from __future__ import annotations

import json
from pathlib import Path

from tests.engine.conftest import ffmpeg, run_cli


def _analyze(video: Path, clip, models, out: Path):
    return run_cli(
        "analyze", video, "--calibration", clip.calibration, "--out", out, "--model", models["kit"]
    )


def test_faststart_mp4_cut_mid_file_is_analysed_up_to_the_break(
    clip, models, tmp_path: Path
) -> None:
    faststart = tmp_path / "faststart.mp4"
    ffmpeg("-i", str(clip.video), "-c", "copy", "-movflags", "+faststart", str(faststart))
    data = faststart.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")  # the index is at the front
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])

    result = _analyze(cut, clip, models, tmp_path / "out")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert 0 < report["frames_decoded"] < 150
    assert report["frames_lost"] == 150 - report["frames_decoded"]
    assert report["stream_complete"] is False
    assert f"{report['frames_lost']} frames lost" in result.stdout


def test_mpeg_ts_with_a_stretch_cut_out_counts_the_lost_frames(
    clip, models, tmp_path: Path
) -> None:
    ts = tmp_path / "match.ts"
    ffmpeg("-i", str(clip.video), "-c", "copy", str(ts))
    data = ts.read_bytes()
    third = len(data) // 3
    damaged = tmp_path / "damaged.ts"
    damaged.write_bytes(data[:third] + data[2 * third :])

    result = _analyze(damaged, clip, models, tmp_path / "out")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["frames_lost"] > 20
    # Every frame is either decoded or counted as lost (a damaged GOP may cost a few more).
    assert abs(report["frames_decoded"] + report["frames_lost"] - 150) <= 15
    assert report["sampled_frames"] < 30


def test_mpeg_ts_cut_at_the_middle_is_analysed_up_to_the_break(
    clip, models, tmp_path: Path
) -> None:
    ts = tmp_path / "match.ts"
    ffmpeg("-i", str(clip.video), "-c", "copy", str(ts))
    data = ts.read_bytes()
    cut = tmp_path / "cut.ts"
    cut.write_bytes(data[: len(data) // 2])

    result = _analyze(cut, clip, models, tmp_path / "out")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    # A transport stream announces no length: what is left is what there is.
    assert 40 <= report["frames_decoded"] <= 110
    assert report["sampled_frames"] == len(range(0, report["frames_decoded"], 5))
    assert report["frames_lost"] == 0
