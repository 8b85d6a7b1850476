"""YOLO exports through OnnxDetector: metadata, class choice, output layouts, task and input size.

The real-export cases replay what Ultralytics 8.4 exported (tests/engine/data/, written by
record_ultralytics_exports.py): the exact input/output shapes, metadata and output0 of
random-weight YOLOv8n, YOLO11n and YOLO26n models with four football classes, and the boxes
`ultralytics.utils.nms.non_max_suppression` kept from that same output0.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gpu_analysis.engine import steps
from gpu_analysis.engine.batching import FrameBatch, letterbox_geometry
from gpu_analysis.engine.errors import UserError
from gpu_analysis.engine.inference import OnnxDetector
from gpu_analysis.engine.records import InferParams, PreprocessParams
from gpu_analysis.engine.teams import Role
from tests.engine import onnx_models
from tests.engine.conftest import run_cli

DATA = Path(__file__).parent / "data"
EXPORTS = json.loads((DATA / "ultralytics_exports.json").read_text())
OUTPUTS = np.load(DATA / "ultralytics_outputs.npz")
FOOTBALL = {0: "ball", 1: "goalkeeper", 2: "player", 3: "referee"}
SOURCE_WH = (640, 360)  # letterboxed into the exports' 160x160: scale 0.25, 70 px bands


def _replay_export(tmp_path: Path, key: str, output0: np.ndarray | None = None) -> Path:
    export = EXPORTS[key]
    shapes = [o["shape"] for o in export["outputs"]]
    if output0 is None:
        output0 = OUTPUTS[key] if key in OUTPUTS else np.zeros(shapes[0], np.float32)
    return onnx_models.replay_model(
        tmp_path / f"{key}.onnx",
        output0,
        export["inputs"][0]["shape"],
        shapes,
        export["metadata"],
    )


def _frames(input_wh: tuple[int, int], source_wh: tuple[int, int] = SOURCE_WH) -> FrameBatch:
    g = letterbox_geometry(source_wh, input_wh)
    w, h = input_wh
    images = np.full((1, h, w, 3), 114, np.uint8)
    return FrameBatch(images, np.array([0]), np.array([0.0]), g)


def _player_feet(frame) -> np.ndarray:
    """The foot points of players and goalkeepers: a football model's referees are decoded too,
    to be counted as officials and kept out of the maps."""
    if frame.roles is None:
        return frame.foot_points_px
    return frame.foot_points_px[frame.roles != Role.OFFICIAL]


def _player_scores(frame) -> np.ndarray:
    return frame.scores if frame.roles is None else frame.scores[frame.roles != Role.OFFICIAL]


def _feet_input_px(boxes_xyxy: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
    return np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, boxes[:, 3]], axis=1)


@pytest.mark.parametrize(
    ("key", "layout"),
    [("yolov8n_raw", "raw"), ("yolo11n_raw", "raw"), ("yolo26n_end2end", "end-to-end")],
)
def test_real_exports_give_the_feet_ultralytics_keeps(tmp_path: Path, key: str, layout) -> None:
    post = EXPORTS[key]["postprocess"]
    kept = np.array(post["boxes_xyxy_score_class"], np.float64).reshape(-1, 6)
    assert len(kept) > 10 and post["classes"] == [1, 2]  # a real test: many boxes kept

    detector = OnnxDetector(_replay_export(tmp_path, key))
    assert detector.input_wh == (160, 160) and detector.threshold == post["conf_thres"]
    batch = _frames(detector.input_wh)
    (frame,) = detector.detect(batch)

    expected = batch.geometry.to_source_px(_feet_input_px(kept[:, :4]))
    assert _player_feet(frame).shape == expected.shape
    # Same boxes in the same order (strongest first); 1 source px = 0.25 input px here.
    assert np.abs(_player_feet(frame) - expected).max() < 1.0
    assert np.allclose(_player_scores(frame), kept[:, 4], atol=1e-3)
    assert detector.layout == layout
    assert detector.classes == (1, 2)  # goalkeeper and player, from the names in the metadata
    assert detector.describe()["classes"] == ["goalkeeper", "player"]


def _boxes_of_each_class() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Separate boxes (input pixels, 640x640): two balls, three players, a goalkeeper, a referee."""
    boxes = np.array(
        [
            [100, 100, 110, 110],
            [300, 500, 312, 512],
            [50, 200, 80, 280],
            [200, 200, 232, 290],
            [400, 100, 430, 180],
            [550, 300, 580, 390],
            [250, 400, 280, 470],
        ],
        np.float64,
    )
    classes = np.array([0, 0, 2, 2, 2, 1, 3])
    scores = np.array([0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65])
    return boxes, classes, scores


def _raw_output(boxes, classes, scores, num_classes: int, anchors: int = 32) -> np.ndarray:
    """(1, 4+C, A) as a raw export gives it, with a weak second-best class on every anchor;
    the anchors after the boxes score nothing (more anchors than rows, as in every real model)."""
    pred = np.zeros((4 + num_classes, anchors), np.float32)
    n = len(boxes)
    pred[0, :n] = (boxes[:, 0] + boxes[:, 2]) / 2
    pred[1, :n] = (boxes[:, 1] + boxes[:, 3]) / 2
    pred[2, :n] = boxes[:, 2] - boxes[:, 0]
    pred[3, :n] = boxes[:, 3] - boxes[:, 1]
    pred[4:] = 0.05
    pred[4 + classes, np.arange(len(boxes))] = scores
    return pred[None]


def _football_model(tmp_path: Path, names=FOOTBALL, name: str = "football.onnx") -> Path:
    boxes, classes, scores = _boxes_of_each_class()
    meta = onnx_models.ultralytics_metadata(names) if names is not None else None
    output0 = _raw_output(boxes, classes, scores, 4)
    return onnx_models.replay_model(
        tmp_path / name, output0, [1, 3, 640, 640], [list(output0.shape)], meta
    )


def _detected_classes(detector: OnnxDetector) -> list[int]:
    boxes, classes, _ = _boxes_of_each_class()
    (frame,) = detector.detect(_frames(detector.input_wh, (640, 640)))
    feet = _feet_input_px(boxes)
    return sorted(
        int(classes[np.argmin(np.hypot(*(feet - foot).T))]) for foot in frame.foot_points_px
    )


def test_football_detector_counts_players_and_goalkeepers_not_ball_or_referee(tmp_path) -> None:
    """Players and goalkeepers are the players; the referee is decoded too, marked an official
    (counted in report.json, in no map); the ball is not a person."""
    detector = OnnxDetector(_football_model(tmp_path))
    assert _detected_classes(detector) == [1, 2, 2, 2, 3]
    assert detector.classes == (1, 2) and detector.official_classes == (3,)
    (frame,) = detector.detect(_frames(detector.input_wh, (640, 640)))
    assert sorted(frame.roles.tolist()) == [Role.OUTFIELD] * 3 + [Role.GOALKEEPER, Role.OFFICIAL]
    assert detector.describe()["official_classes"] == ["referee"]


@pytest.mark.parametrize(
    ("requested", "ids", "found"),
    [("player", (2,), [2, 2, 2]), ("Goalkeeper,2", (1, 2), [1, 2, 2, 2]), ("3", (3,), [3])],
)
def test_classes_override_by_name_or_id(tmp_path: Path, requested, ids, found) -> None:
    detector = OnnxDetector(_football_model(tmp_path), classes=requested)
    assert detector.classes == ids and _detected_classes(detector) == found


def test_unknown_class_and_model_without_players_are_errors_naming_the_classes(tmp_path) -> None:
    with pytest.raises(UserError) as error:
        OnnxDetector(_football_model(tmp_path), classes="player,foo")
    assert str(error.value) == (
        "model football.onnx has no class 'foo'; "
        "its classes: 0=ball, 1=goalkeeper, 2=player, 3=referee"
    )
    vehicles = {0: "car", 1: "bus", 2: "truck", 3: "bike"}
    with pytest.raises(UserError, match=r"has no player class .*0=car, 1=bus.*--classes"):
        OnnxDetector(_football_model(tmp_path, vehicles, "vehicles.onnx"))
    buses = OnnxDetector(_football_model(tmp_path, vehicles, "v.onnx"), classes="bus")
    assert buses.classes == (1,) and buses.official_classes == ()


def test_model_without_metadata_counts_class_zero_as_today(tmp_path: Path) -> None:
    detector = OnnxDetector(_football_model(tmp_path, names=None))
    assert _detected_classes(detector) == [0, 0]
    assert detector.classes == (0,) and detector.layout == "raw"


def yolov5_reference(pred: np.ndarray, conf_thres: float, iou_thres: float, classes) -> np.ndarray:
    """ultralytics/yolov5 utils/general.py `non_max_suppression` (multi_label=False,
    agnostic=False, max_det=300) on one image's (A, 5+C) output, in numpy: candidates by
    objectness, score = objectness * class probability, best class, the class filter, then
    greedy per-class NMS (torchvision: a box goes when its IoU with a kept one is > iou_thres).
    Returns rows x1, y1, x2, y2, score, class, strongest first."""
    x = pred[pred[:, 4] > conf_thres].astype(np.float64)
    x[:, 5:] *= x[:, 4:5]
    half_w, half_h = x[:, 2] / 2, x[:, 3] / 2
    xyxy = np.column_stack([x[:, 0] - half_w, x[:, 1] - half_h, x[:, 0] + half_w, x[:, 1] + half_h])
    conf, j = x[:, 5:].max(1), x[:, 5:].argmax(1)
    rows = np.column_stack([xyxy, conf, j])[conf > conf_thres]
    rows = rows[np.isin(rows[:, 5], classes)]
    rows = rows[np.argsort(-rows[:, 4], kind="stable")]
    kept: list[np.ndarray] = []
    for row in rows:
        clash = False
        for other in kept:
            if other[5] != row[5]:
                continue
            iw = max(0.0, min(row[2], other[2]) - max(row[0], other[0]))
            ih = max(0.0, min(row[3], other[3]) - max(row[1], other[1]))
            inter = iw * ih
            union = (row[2] - row[0]) * (row[3] - row[1]) + (other[2] - other[0]) * (
                other[3] - other[1]
            )
            clash = clash or inter / (union - inter) > iou_thres
        if not clash:
            kept.append(row)
    return np.array(kept).reshape(-1, 6)[:300]


def test_yolov5_layout_matches_the_yolov5_reference(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    anchors, num_classes = 2000, 4
    # Clusters of overlapping boxes, as a detector gives around each player.
    centres = rng.uniform(60, 580, (40, 2))
    pick = rng.integers(0, len(centres), anchors)
    cxcy = centres[pick] + rng.normal(0, 6, (anchors, 2))
    wh = np.column_stack([rng.uniform(20, 40, anchors), rng.uniform(50, 90, anchors)])
    pred = np.zeros((anchors, 5 + num_classes), np.float32)
    pred[:, :2], pred[:, 2:4] = cxcy, wh
    pred[:, 4] = rng.uniform(0, 1, anchors)  # objectness
    pred[:, 5:] = rng.dirichlet(np.ones(num_classes) * 0.5, anchors)  # class probabilities
    # YOLOv5's export.py stores {'stride': 32, 'names': {...}} and nothing else.
    meta = {"stride": "32", "names": str(FOOTBALL)}
    model = onnx_models.replay_model(
        tmp_path / "v5.onnx", pred[None], [1, 3, 640, 640], [[1, anchors, 9]], meta
    )
    detector = OnnxDetector(model)
    reference = yolov5_reference(pred, 0.25, 0.45, [1, 2])
    assert len(reference) > 20
    batch = _frames((640, 640), (1280, 720))
    (frame,) = detector.detect(batch)
    expected = batch.geometry.to_source_px(_feet_input_px(reference[:, :4]))
    assert _player_feet(frame).shape == expected.shape
    assert np.abs(_player_feet(frame) - expected).max() < 1.0
    assert detector.layout == "yolov5" and detector.classes == (1, 2)


def _same_boxes_in(layout: str, boxes, classes, scores) -> tuple[np.ndarray, list]:
    raw = _raw_output(boxes, classes, scores, 4)[0]
    anchors = raw.shape[1]
    if layout == "raw":
        return raw[None], [1, 8, anchors]
    if layout == "raw-anchors-first":
        return raw.T[None], [1, anchors, 8]
    if layout == "yolov5":
        # objectness 1: the class probability is the score.
        v5 = np.column_stack([raw[:4].T, np.ones(anchors), raw[4:].T])
        return v5[None].astype(np.float32), [1, anchors, 9]
    rows = np.zeros((300, 6), np.float32)  # end-to-end: padded to K = 300 with zero rows
    rows[: len(boxes)] = np.column_stack([boxes, scores, classes])
    return rows[None], [1, 300, 6]


@pytest.mark.parametrize("layout", ["raw", "raw-anchors-first", "yolov5", "end-to-end"])
def test_every_layout_gives_the_same_foot_points(tmp_path: Path, layout: str) -> None:
    boxes, classes, scores = _boxes_of_each_class()
    output0, shape = _same_boxes_in(layout, boxes, classes, scores)
    meta = onnx_models.ultralytics_metadata(FOOTBALL, end2end=layout == "end-to-end")
    model = onnx_models.replay_model(tmp_path / "m.onnx", output0, [1, 3, 640, 640], [shape], meta)
    detector = OnnxDetector(model)
    batch = _frames((640, 640), (1920, 1080))
    (frame,) = detector.detect(batch)
    players = np.isin(classes, [1, 2])
    expected = batch.geometry.to_source_px(_feet_input_px(boxes[players]))
    assert _player_feet(frame).shape == expected.shape
    assert np.abs(_player_feet(frame) - expected).max() < 1e-3
    assert np.allclose(_player_scores(frame), scores[players])
    assert detector.layout == layout


@pytest.mark.parametrize(
    ("key", "task"),
    [
        ("yolov8n-seg", "segment"),
        ("yolov8n-pose", "pose"),
        ("yolov8n-cls", "classify"),
        ("yolov8n-obb", "obb"),
    ],
)
def test_non_detect_models_are_refused_naming_their_task(tmp_path: Path, key, task) -> None:
    with pytest.raises(UserError) as error:
        OnnxDetector(_replay_export(tmp_path, key))
    assert str(error.value) == (
        f"model {key}.onnx is a {task} model; gpu-analysis needs a detect model (boxes)"
    )


def _dynamic_model(tmp_path: Path, imgsz_hw=(384, 640), name: str = "dyn.onnx") -> Path:
    boxes, classes, scores = _boxes_of_each_class()
    return onnx_models.replay_model(
        tmp_path / name,
        _raw_output(boxes, classes, scores, 4),
        ["N", 3, "H", "W"],
        [["N", 8, "A"]],
        onnx_models.ultralytics_metadata(FOOTBALL, imgsz_hw=imgsz_hw),
    )


def test_dynamic_model_takes_its_exported_size_or_the_one_asked(tmp_path: Path) -> None:
    model = _dynamic_model(tmp_path)
    assert OnnxDetector(model).input_wh == (640, 384)  # Ultralytics stores imgsz as [h, w]
    assert OnnxDetector(model, input_size="800x448").input_wh == (800, 448)
    detector = OnnxDetector(model, input_size=(320, 192))
    assert detector.input_wh == (320, 192) and detector.layout == "raw"
    (frame,) = detector.detect(_frames((320, 192), (640, 384)))
    assert len(_player_feet(frame)) == 4  # decoded from the real output shape
    with pytest.raises(UserError, match=r"^--input-size 650x360: .*multiples of .* stride 32"):
        OnnxDetector(model, input_size="650x360")
    with pytest.raises(UserError, match=r"^--input-size must be WxH"):
        OnnxDetector(model, input_size="640")


def test_fixed_size_model_refuses_another_input_size(tmp_path: Path) -> None:
    model = _football_model(tmp_path)
    assert OnnxDetector(model, input_size="640x640").input_wh == (640, 640)
    with pytest.raises(UserError) as error:
        OnnxDetector(model, input_size="800x448")
    assert str(error.value) == (
        "model football.onnx has a fixed 640x640 input; --input-size 800x448 needs a model "
        "exported with dynamic=True"
    )


def _dynamic_football_model(tmp_path: Path) -> Path:
    # Players whose feet are on the pitch at 320x192, one ball and one referee beside them.
    feet = np.array([[100, 120], [160, 130], [220, 110], [130, 100], [190, 140]], np.float64)
    boxes = np.column_stack([feet[:, 0] - 5, feet[:, 1] - 20, feet[:, 0] + 5, feet[:, 1]])
    classes, scores = np.array([2, 2, 1, 0, 3]), np.full(5, 0.9)
    return onnx_models.replay_model(
        tmp_path / "football-dyn.onnx",
        _raw_output(boxes, classes, scores, 4),
        ["N", 3, "H", "W"],
        [["N", 8, "A"]],
        onnx_models.ultralytics_metadata(FOOTBALL),
    )


def test_cli_flags_choose_classes_and_input_size(short_clip, tmp_path: Path) -> None:
    model = _dynamic_football_model(tmp_path)
    out = tmp_path / "out"
    result = run_cli(
        "analyze", short_clip.video, "--calibration", short_clip.calibration, "--out", out,
        "--model", model, "--sample-fps", "2", "--quiet",
        "--classes", "player", "--input-size", "320x192",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["input_size"] == [320, 192]
    assert report["model"]["classes"] == ["player"] and report["model"]["layout"] == "raw"
    # Two players a frame: not the goalkeeper (left out by --classes), ball or referee.
    assert report["detections_total"] == 2 * report["sampled_frames"] == 8


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--classes", "foo"],
            "error: model football.onnx has no class 'foo'; "
            "its classes: 0=ball, 1=goalkeeper, 2=player, 3=referee",
        ),
        (
            ["--input-size", "320x320"],
            "error: model football.onnx has a fixed 640x640 input; --input-size 320x320 needs "
            "a model exported with dynamic=True",
        ),
    ],
)
def test_cli_errors_are_one_line(short_clip, tmp_path: Path, flags, message) -> None:
    model = _football_model(tmp_path)
    result = run_cli(
        "analyze", short_clip.video, "--calibration", short_clip.calibration,
        "--out", tmp_path / "out", "--model", model, *flags,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [message]


def test_cli_refuses_a_pose_model_in_one_line(short_clip, tmp_path: Path) -> None:
    model = _replay_export(tmp_path, "yolov8n-pose")
    result = run_cli(
        "analyze", short_clip.video, "--calibration", short_clip.calibration,
        "--out", tmp_path / "out", "--model", model,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: model yolov8n-pose.onnx is a pose model; gpu-analysis needs a detect model (boxes)"
    ]


def test_the_gpu_steps_take_classes_and_input_size_too(short_clip, tmp_path: Path) -> None:
    """The split T4 -> A10G path (Dagster's, the workers') honours --classes/--input-size as
    `analyze` does: they travel in the steps' parameter records."""
    model = str(_dynamic_football_model(tmp_path))
    pre = PreprocessParams(
        str(short_clip.video), str(tmp_path / "shards"), 2.0, model, input_size="320x192"
    )
    summary = steps.preprocess(
        pre.video_uri, pre.shards_uri, sample_fps=pre.sample_fps, model=pre.model,
        input_size=pre.input_size,
    )  # fmt: skip
    assert list(summary.input_size) == [320, 192]
    params = InferParams(
        pre.shards_uri, str(tmp_path / "det"), str(short_clip.calibration), model,
        classes="player", input_size="320x192",
    )  # fmt: skip
    inferred = steps.infer(
        params.shards_uri, params.detections_uri, model=params.model,
        calibration_path=params.calibration_uri, classes=params.classes,
        input_size=params.input_size,
    )  # fmt: skip
    assert inferred.model["classes"] == ["player"]
    assert inferred.detections_total == 2 * summary.sampled_frames


def test_a_football_detector_keeps_its_referee_out_of_the_maps(short_clip, tmp_path) -> None:
    out = tmp_path / "out"
    report = steps.analyze(
        short_clip.video, short_clip.calibration, out, sample_fps=2.0,
        model=str(_dynamic_football_model(tmp_path)), input_size="320x192",
    )  # fmt: skip
    frames = report["sampled_frames"]
    assert report["officials"] == {"detections": frames, "per_frame_mean": 1.0}
    # Two players and the goalkeeper a frame; the referee in no map, the ball not a person.
    assert report["players_per_frame_mean"] == 3.0
    assert (
        report["teams"]["team_0"]["goalkeeper_detections"]
        + report["teams"]["team_1"]["goalkeeper_detections"]
        == frames
    )
    assert report["model"]["official_classes"] == ["referee"]
