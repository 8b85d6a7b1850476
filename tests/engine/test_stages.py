"""Stage by stage: sampling, letterbox geometry, calibration, maps, zones, decay, files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gpu_analysis.engine import storage
from gpu_analysis.engine.accumulate import (
    PitchGrid,
    PitchPositions,
    decay_weights,
    half_maps,
    temperature_map,
    zone_occupancy,
)
from gpu_analysis.engine.batching import letterbox, letterbox_geometry
from gpu_analysis.engine.calibration import calibration_from_dict, load_calibration
from gpu_analysis.engine.errors import UserError
from gpu_analysis.engine.video import DecodeStats, iter_sampled_frames, probe, sample_indices


def test_sample_indices_are_nearest_frames_at_the_target_rate() -> None:
    it = sample_indices(25.0, 5.0)
    assert [next(it) for _ in range(4)] == [0, 5, 10, 15]
    it = sample_indices(29.97, 5.0)
    assert [next(it) for _ in range(4)] == [0, 6, 12, 18]
    it = sample_indices(10.0, 25.0)  # faster than the video: every frame once
    assert [next(it) for _ in range(4)] == [0, 1, 2, 3]


def test_sampled_frames_carry_exact_indices_and_timestamps(clip) -> None:
    facts = probe(clip.video)
    stats = DecodeStats()
    frames = list(iter_sampled_frames(facts, 5.0, stats))
    assert [f.frame_index for f in frames] == list(range(0, 150, 5))
    assert [f.timestamp_s for f in frames] == [i / 25.0 for i in range(0, 150, 5)]
    assert frames[0].image_bgr.shape == (720, 1280, 3)
    assert stats.frames_decoded == 150 and stats.frames_lost == 0 and stats.sampled_frames == 30


def test_letterbox_round_trips_source_pixels() -> None:
    g = letterbox_geometry((1920, 1080), (640, 384))
    assert (g.resized_w, g.resized_h, g.pad_x, g.pad_y) == (640, 360, 0, 12)
    pts = np.array([[0.0, 0.0], [1920.0, 1080.0], [960.5, 333.25]])
    assert np.allclose(g.to_source_px(g.to_input_px(pts)), pts)
    image = np.zeros((1080, 1920, 3), np.uint8)
    image[..., 2] = 200  # red in BGR
    boxed = letterbox(image, g)
    assert boxed.shape == (384, 640, 3) and boxed.dtype == np.uint8
    assert (boxed[0] == 114).all() and (boxed[-1] == 114).all()  # grey bars top and bottom
    assert tuple(boxed[100, 100]) == (200, 0, 0)  # RGB order


def test_calibration_projects_the_synthetic_camera_exactly(clip) -> None:
    cal = load_calibration(clip.calibration)
    frame = 50
    seen = clip.truth.visible[frame]
    positions_m, on_pitch = cal.project_to_pitch(clip.truth.foot_points_px[frame][seen])
    assert on_pitch.all()
    assert np.abs(positions_m - clip.truth.positions_m[frame][seen]).max() < 0.05
    _, on_pitch = cal.project_to_pitch(np.array([[640.0, 100.0], [5.0, 715.0]]))  # stands, front
    assert not on_pitch.any()


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda raw: raw.pop("image_points"), "missing key 'image_points'"),
        (lambda raw: raw["pitch_points"].pop(), "differ in length"),
        (lambda raw: raw.update(pitch={"length_m": -1, "width_m": 68}), "positive"),
        (lambda raw: raw["image_points"][0].append(3), "list of [x, y]"),
        (lambda raw: raw["pitch_points"].reverse(), "disagree"),
    ],
)
def test_calibration_problems_are_named(clip, change, words) -> None:
    raw = json.loads(clip.calibration.read_text())
    change(raw)
    with pytest.raises(UserError, match=words.replace("[", r"\[").replace("]", r"\]")):
        calibration_from_dict(raw, "cal.json")


def test_calibration_file_that_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "cal.json"
    path.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        load_calibration(path)


def test_map_grid_shape_and_share_of_time() -> None:
    grid = PitchGrid(105.0, 68.0, 1.0)
    assert grid.shape == (68, 105) and PitchGrid(105.0, 68.0, 0.1).shape == (680, 1050)
    positions = np.array([[0.5, 0.5], [104.9, 67.9], [105.0, 68.0], [10.2, 20.7]])
    m = temperature_map(positions, grid)
    assert m.dtype == np.float32 and m.sum() == pytest.approx(1.0)
    assert m[0, 0] == pytest.approx(0.25) and m[67, 104] == pytest.approx(0.5)
    assert m[20, 10] == pytest.approx(0.25)  # row = Y band, column = X band
    assert temperature_map(np.zeros((0, 2)), grid).sum() == 0


def test_half_maps_turn_the_second_half_to_the_first_halfs_direction() -> None:
    grid = PitchGrid(105.0, 68.0)
    positions = PitchPositions(
        frame_index=np.array([0, 1]),
        timestamp_s=np.array([10.0, 3000.0]),
        positions_m=np.array([[20.5, 10.5], [84.5, 57.5]]),  # the same spot, ends swapped
        team=np.array([0, 0], np.int8),
    )
    first, second = half_maps(positions, grid, half_time_s=2700.0)
    assert np.array_equal(first, second) and first[10, 20] == 1.0


def test_decay_weights_halve_per_half_life() -> None:
    w = decay_weights(np.array([0.0, 60.0, 120.0]), half_life_s=60.0, now_s=120.0)
    assert np.allclose(w, [0.25, 0.5, 1.0])
    grid = PitchGrid(105.0, 68.0)
    live = temperature_map(np.array([[1.5, 1.5], [50.5, 30.5]]), grid, weights=w[:2])
    assert live[30, 50] == pytest.approx(2 / 3) and live[1, 1] == pytest.approx(1 / 3)


def test_zone_occupancy_thirds_by_channels() -> None:
    grid = PitchGrid(105.0, 68.0)
    zones = zone_occupancy(
        np.array([[10.0, 10.0], [50.0, 34.0], [100.0, 60.0], [100.0, 30.0]]), grid
    )
    assert zones["thirds"] == {"defensive": 0.25, "middle": 0.25, "attacking": 0.5}
    assert zones["channels"] == {"right": 0.25, "centre": 0.5, "left": 0.25}
    assert zones["grid"]["left"]["attacking"] == 0.25


def test_npz_bytes_depend_only_on_the_arrays(tmp_path: Path) -> None:
    arrays = {"b": np.arange(5), "a": np.eye(3, dtype=np.float32)}
    assert storage.npz_bytes(arrays) == storage.npz_bytes(dict(reversed(arrays.items())))
    loaded = storage.load_npz(storage.npz_bytes(arrays))
    assert np.array_equal(loaded["a"], arrays["a"]) and np.array_equal(loaded["b"], arrays["b"])
    target = tmp_path / "x" / "y.bin"
    storage.write_bytes(target, b"one")
    storage.write_bytes(target, b"two")
    assert target.read_bytes() == b"two" and [p.name for p in target.parent.iterdir()] == ["y.bin"]
