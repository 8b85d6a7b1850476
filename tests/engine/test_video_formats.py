"""Videos as people have them: each real file decodes to the original's frames at the
original's instants, and `gpu-analysis analyze` gives the original's map from it.

Every file is cut from one stamped 50 fps master (tests/engine/videos.py), so a decoded frame
says which instant it shows; the original is the progressive 25 fps H.264 MP4.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from gpu_analysis.engine.errors import UserError
from gpu_analysis.engine.video import DecodeStats, iter_sampled_frames, probe
from tests.engine import videos
from tests.engine.conftest import run_cli

VARIANTS = [
    "interlaced",
    "vfr",
    "hevc",
    "vp9",
    "av1",
    "mpeg2_ts",
    "fps50",
    "fps29_97",
    "rotated",
    "two_streams",
]
SAMPLE_FPS = 5.0
SAMPLES = round(videos.DURATION_S * SAMPLE_FPS)
# The bar of the acceptance: 1 - Pearson correlation of the two maps, each smoothed with a 2 m
# Gaussian (as test_analyze compares maps). The analyses sample 10 frames a second: at 5, the
# built-in model's answer to mere re-encoding noise already reaches 0.002-0.023 on 20 frames;
# at 10 it stays under 0.007 (docs/video.md). Every variant has a frame at each 0.1 s instant.
MAP_DISTANCE_MAX = 0.02
ANALYSIS_SAMPLE_FPS = 10.0


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, videos.Variant]:
    folder = tmp_path_factory.mktemp("video_formats")
    return videos.make_variants(videos.render_master(folder), folder)


@pytest.fixture(scope="module")
def original_frames(made) -> list:
    return list(iter_sampled_frames(probe(made["original"].path), SAMPLE_FPS))


@pytest.fixture(scope="module")
def original_map(made, tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    return _analyze(made["original"], tmp_path_factory.mktemp("original_out"))[1]


def _analyze(variant: videos.Variant, out: Path) -> tuple[dict, np.ndarray]:
    # Every variant is analysed with the original's calibration: it shows the same frame.
    calibration = videos.calibration_path_for(variant.path)
    result = run_cli(
        "analyze", variant.path, "--calibration", calibration, "--out", out,
        "--sample-fps", str(ANALYSIS_SAMPLE_FPS),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((out / "report.json").read_text())
    return report, np.load(out / "temperature_map.npy")


def _map_distance(a: np.ndarray, b: np.ndarray, sigma_m: float = 2.0) -> float:
    a = gaussian_filter(a.astype(np.float64), sigma_m)
    b = gaussian_filter(b.astype(np.float64), sigma_m)
    return 1.0 - float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def _mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


@pytest.mark.parametrize("name", VARIANTS)
def test_variant_decodes_to_the_originals_frames_at_its_instants(name, made, original_frames):
    variant = made[name]
    facts = probe(variant.path)
    assert (facts.width, facts.height) == (videos.WIDTH, videos.HEIGHT)  # upright size
    assert facts.codec == variant.codec
    # A variable rate's average depends on where the last frame is said to end: 2 % of slack.
    assert facts.fps == pytest.approx(variant.fps, rel=0.02)
    assert facts.duration_s == pytest.approx(videos.DURATION_S, abs=0.1)

    stats = DecodeStats()
    frames = list(iter_sampled_frames(facts, SAMPLE_FPS, stats))
    assert len(frames) == len(original_frames) == SAMPLES
    frame_s = 1.0 / variant.fps
    for k, (frame, original) in enumerate(zip(frames, original_frames, strict=True)):
        assert frame.image_bgr.shape == (videos.HEIGHT, videos.WIDTH, 3)
        # Sampled at the instants k / 5 s: the nearest frame, so within half a frame of it.
        assert abs(frame.timestamp_s - k / SAMPLE_FPS) <= frame_s / 2 + 1e-6, frame
        # And the frame shows what was there then: its stamp is the master frame it came from.
        shown_s = videos.read_stamp(frame.image_bgr) / videos.MASTER_FPS
        assert abs(shown_s - frame.timestamp_s) <= frame_s + 1e-6, (k, shown_s, frame)
        assert frame.image_bgr.mean() > 40  # not black
        assert _mean_abs_diff(frame.image_bgr, original.image_bgr) < 8, k
    assert stats.frames_lost == 0 and stats.sampled_frames == SAMPLES
    assert stats.stream_index == variant.stream_index
    assert stats.rotation_deg == variant.rotation_deg
    assert (stats.frames_deinterlaced == stats.frames_decoded) is variant.interlaced


def test_interlaced_frames_are_deinterlaced_not_woven(made, original_frames):
    """Woven fields of two instants comb every moving edge; bwdif halves the difference."""
    import av

    variant = made["interlaced"]
    frames = list(iter_sampled_frames(probe(variant.path), SAMPLE_FPS))
    with av.open(str(variant.path)) as container:
        woven = [
            frame.to_ndarray(format="bgr24")
            for index, frame in enumerate(container.decode(video=0))
            if index % 5 == 0 and frame.interlaced_frame
        ]
    assert len(woven) == len(frames)
    originals = [o.image_bgr for o in original_frames]
    ours = np.mean([_mean_abs_diff(f.image_bgr, o) for f, o in zip(frames, originals, strict=True)])
    weave = np.mean([_mean_abs_diff(w, o) for w, o in zip(woven, originals, strict=True)])
    assert ours < 0.75 * weave, (ours, weave)


def test_variable_frame_rate_is_sampled_evenly_in_time(made):
    """Frames come 50, 10 and 25 a second in turn: each third of the video gets its share."""
    frames = list(iter_sampled_frames(probe(made["vfr"].path), SAMPLE_FPS))
    thirds = np.bincount([int(f.timestamp_s // (videos.DURATION_S / 3)) for f in frames])
    assert thirds.tolist() == [7, 7, 6]
    stamps = [videos.read_stamp(f.image_bgr) for f in frames]
    assert stamps == [10 * k for k in range(SAMPLES)]  # 0.2 s apart in the master's 50 fps


def test_stream_parameter_picks_another_stream_and_refuses_a_missing_one(made):
    two = made["two_streams"].path
    stats = DecodeStats()
    facts = probe(two, stream=0)
    card = list(iter_sampled_frames(facts, SAMPLE_FPS, stats, stream=0))
    assert stats.stream_index == 0 and len(card) == SAMPLES
    match = list(iter_sampled_frames(probe(two), SAMPLE_FPS))
    assert _mean_abs_diff(card[0].image_bgr, match[0].image_bgr) > 30  # the test card
    with pytest.raises(UserError, match=r"--stream 2: the file has streams 0\.\.1; its video"):
        probe(two, stream=2)


def test_audio_first_file_uses_its_video_and_refuses_the_audio_stream(tmp_path: Path):
    path = videos.make_audio_first(tmp_path)
    stats = DecodeStats()
    assert len(list(iter_sampled_frames(probe(path), SAMPLE_FPS, stats))) == 5
    assert stats.stream_index == 1
    with pytest.raises(
        UserError, match=r"--stream 0 is audio, not video; its video streams are \[1\]"
    ):
        probe(path, stream=0)


def test_codec_without_a_decoder_is_named_in_one_error_line(tmp_path: Path):
    avs2 = videos.make_undecodable(tmp_path)
    with pytest.raises(UserError) as caught:
        probe(avs2)
    message = str(caught.value)
    assert "\n" not in message
    assert "avs2" in message and "cannot decode" in message and "FFmpeg" in message

    out = tmp_path / "out"
    cal = tmp_path / "cal.json"
    cal.write_text(
        json.dumps(
            {
                "image_points": [[0, 0], [640, 0], [640, 360], [0, 360]],
                "pitch_points": [[0, 0], [105, 0], [105, 68], [0, 68]],
            }
        )
    )
    result = run_cli("analyze", avs2, "--calibration", cal, "--out", out)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "avs2" in lines[0], lines


@pytest.mark.parametrize("name", VARIANTS)
def test_analyze_gives_the_originals_report_and_map(name, made, original_map, tmp_path):
    report, temperature_map = _analyze(made[name], tmp_path / "out")
    video = report["video"]
    assert (video["width"], video["height"], video["codec"]) == (
        videos.WIDTH,
        videos.HEIGHT,
        made[name].codec,
    )
    assert report["sampled_frames"] == round(videos.DURATION_S * ANALYSIS_SAMPLE_FPS)
    assert report["frames_lost"] == 0 and report["stream_complete"] is True
    distance = _map_distance(temperature_map, original_map)
    assert distance < MAP_DISTANCE_MAX, distance
