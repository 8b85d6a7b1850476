"""The ONNX adapters on small graphs whose outputs are known, and the heat-map decoder."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from gpu_analysis.engine.batching import FrameBatch, letterbox, letterbox_geometry
from gpu_analysis.engine.errors import UserError
from gpu_analysis.engine.inference import OnnxDetector, decode_heatmap, decode_yolo
from tests.engine import onnx_models


def test_decode_heatmap_finds_gaussian_peaks_to_a_tenth_of_a_cell() -> None:
    ys, xs = np.mgrid[0:96, 0:160]
    truth = [(20.3, 30.7), (100.0, 50.25), (140.6, 10.4)]
    heat = np.zeros((96, 160), np.float32)
    for x, y in truth:
        heat = np.maximum(heat, np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * 1.0**2)))
    points, scores = decode_heatmap(heat, threshold=0.3)
    assert len(points) == 3 and (scores > 0.8).all()
    for x, y in truth:
        assert np.min(np.hypot(points[:, 0] - x, points[:, 1] - y)) < 0.1


def test_decode_heatmap_keeps_one_point_per_plateau_and_respects_threshold() -> None:
    heat = np.zeros((20, 20), np.float32)
    heat[5, 5] = heat[5, 6] = 0.9  # a flat top two cells wide
    heat[12, 3:6] = 0.7  # and one three cells wide
    heat[15, 15] = 0.2  # below threshold
    points, scores = decode_heatmap(heat, threshold=0.3)
    assert points.shape == (2, 2) and list(scores) == pytest.approx([0.9, 0.7])
    assert abs(points[0, 0] - 5.5) < 1e-6 and abs(points[0, 1] - 5.0) < 1e-6
    assert 3 <= points[1, 0] <= 5 and points[1, 1] == 12


def test_decode_yolo_suppresses_overlaps_and_ignores_other_classes() -> None:
    # cx, cy, w, h, person, ball for four anchors.
    pred = np.array(
        [
            [100, 102, 300, 500],
            [200, 201, 150, 400],
            [20, 20, 30, 10],
            [40, 40, 60, 10],
            [0.9, 0.8, 0.7, 0.1],
            [0.0, 0.0, 0.95, 0.9],
        ],
        np.float32,
    )
    boxes, scores = decode_yolo(pred)
    assert len(boxes) == 1  # the second overlaps the first; the third is a ball
    assert np.allclose(boxes[0], [90, 180, 110, 220]) and scores[0] == pytest.approx(0.9)


def _batch_with_spots(source_wh, input_wh, spots_px) -> FrameBatch:
    w, h = source_wh
    image = np.zeros((h, w, 3), np.uint8)
    for x, y in spots_px:
        image[int(y) - 15 : int(y) + 15, int(x) - 15 : int(x) + 15] = 255
    g = letterbox_geometry(source_wh, input_wh)
    return FrameBatch(
        images_rgb=np.stack([letterbox(image, g)] * 3),
        frame_index=np.array([0, 5, 10]),
        timestamp_s=np.array([0.0, 0.2, 0.4]),
        geometry=g,
    )


@pytest.mark.parametrize("batch", [3, 1, "N"])
def test_heatmap_adapter_maps_peaks_back_to_source_pixels(tmp_path: Path, batch) -> None:
    model = onnx_models.brightness_heatmap_model(tmp_path / "m.onnx", (640, 384), 4, batch, 0.5)
    detector = OnnxDetector(model, device="auto")
    assert detector.kind == "heatmap" and detector.input_wh == (640, 384)
    assert detector.threshold == 0.5 and detector.execution_provider == "CPUExecutionProvider"
    spots = [(300.0, 200.0), (1500.0, 900.0)]
    result = detector.detect(_batch_with_spots((1920, 1080), (640, 384), spots))
    assert len(result) == 3
    for frame in result:
        assert len(frame.foot_points_px) == 2
        for x, y in spots:
            # A cell is 4 input pixels = 12 source pixels; the centroid lands well inside one.
            assert np.min(np.hypot(*(frame.foot_points_px - (x, y)).T)) < 6


def test_yolo_adapter_returns_bottom_centre_in_source_pixels(tmp_path: Path) -> None:
    pred = np.zeros((5, 8), np.float32)
    pred[:, 0] = [320, 300, 20, 60, 0.9]  # input pixels of a 640x640 letterbox of 1280x720
    model = onnx_models.constant_yolo_model(tmp_path / "y.onnx", pred, (640, 640))
    detector = OnnxDetector(model)
    assert detector.kind == "yolo"
    g = letterbox_geometry((1280, 720), (640, 640))
    batch = FrameBatch(
        np.full((2, 640, 640, 3), 114, np.uint8), np.array([0, 5]), np.array([0.0, 0.2]), g
    )
    frames = detector.detect(batch)
    # scale 0.5, pad_y (640 - 360) / 2 = 140: foot (320, 330) -> source (640, 380).
    assert np.allclose(frames[1].foot_points_px, [[640.0, 380.0]])
    assert np.allclose(frames[1].heights_px, [120.0])


def test_provider_choice_is_logged_in_one_line(tmp_path: Path, caplog) -> None:
    model = onnx_models.brightness_heatmap_model(tmp_path / "m.onnx")
    with caplog.at_level(logging.INFO, logger="gpu_analysis"):
        OnnxDetector(model, device="auto")
    lines = [r.getMessage() for r in caplog.records if "onnxruntime" in r.getMessage()]
    assert lines == ["onnxruntime: heatmap model m.onnx (640x384) on CPUExecutionProvider"]


def test_cuda_request_without_a_gpu_is_a_clear_error(tmp_path: Path) -> None:
    model = onnx_models.brightness_heatmap_model(tmp_path / "m.onnx")
    with pytest.raises(UserError, match=r"^device cuda: "):
        OnnxDetector(model, device="cuda")


def test_model_with_an_unusable_output_is_refused(tmp_path: Path) -> None:
    pred = np.zeros((3, 8), np.float32)  # fewer than 4 box values + 1 class
    model = onnx_models.constant_yolo_model(tmp_path / "bad.onnx", pred)
    with pytest.raises(UserError, match="expected a heat map"):
        OnnxDetector(model)
