"""YOLO exports: the metadata Ultralytics stores, the output layouts, and which classes are players.

Ultralytics writes `names`, `imgsz`, `stride` and `task` (and `end2end`, `args`) into an ONNX
model's metadata_props as Python literals. A detector's output0 comes in one of four layouts:

- raw (N, 4+C, A): cx, cy, w, h in input pixels, then one score per class (YOLOv8, 11, 12);
- raw, anchors first (N, A, 4+C): the same, transposed by some converters;
- end-to-end (N, K, 6): x1, y1, x2, y2, score, class, already suppressed, padded with zero
  rows (`nms=True` exports, YOLOv10, YOLO26's NMS-free head);
- YOLOv5 (N, A, 5+C): cx, cy, w, h, objectness, class probabilities (score = obj * prob).

The decoders reproduce `ultralytics.utils.nms.non_max_suppression` (best class per box, then the
class filter, then per-class NMS through class offsets, at most 300 boxes) and, for YOLOv5, the
same function in ultralytics/yolov5 utils/general.py; tests/engine/test_yolo_formats.py checks
them against what Ultralytics itself kept on real exports.
"""

from __future__ import annotations

import ast
import dataclasses
import logging
from collections.abc import Mapping, Sequence

import numpy as np

from gpu_analysis.engine.errors import UserError

log = logging.getLogger("gpu_analysis.engine.yolo")

# Names of the classes a football map counts, compared case-insensitively. COCO's `person`
# covers a stock detector; a fine-tuned one has `player` and `goalkeeper` (and `ball` and
# `referee`, which are not players).
PLAYER_CLASS_NAMES = ("person", "player", "goalkeeper")
COCO_PERSON = 0
DETECT_TASK = "detect"
# Ultralytics' limits: per-class NMS offsets boxes by class * MAX_WH; at most MAX_NMS boxes enter
# the suppression and MAX_DET leave it.
MAX_WH = 7680
MAX_NMS = 30000
MAX_DET = 300

RAW = "raw"
RAW_ANCHORS_FIRST = "raw-anchors-first"
END_TO_END = "end-to-end"
YOLOV5 = "yolov5"


@dataclasses.dataclass(frozen=True)
class YoloMetadata:
    """What an export says about itself; None where it says nothing (or nothing readable)."""

    names: dict[int, str] | None = None
    imgsz_hw: tuple[int, int] | None = None
    stride: int | None = None
    task: str | None = None
    end_to_end: bool = False
    keypoints: bool = False


def _literal(props: Mapping[str, str], key: str):
    text = props.get(key)
    if text is None:
        return None
    try:
        return ast.literal_eval(text)  # never eval: the file may come from anywhere
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        log.warning("model metadata %r is not a Python literal; ignored", key)
        return None


def read_metadata(props: Mapping[str, str]) -> YoloMetadata:
    names = _literal(props, "names")
    if isinstance(names, Sequence) and not isinstance(names, str):
        names = dict(enumerate(names))
    if not (isinstance(names, dict) and all(isinstance(k, int) for k in names)):
        names = None
    else:
        names = {int(k): str(v) for k, v in names.items()}
    imgsz = _literal(props, "imgsz")
    if isinstance(imgsz, int):
        imgsz = (imgsz, imgsz)
    if not (
        isinstance(imgsz, Sequence) and len(imgsz) == 2 and all(isinstance(v, int) for v in imgsz)
    ):
        imgsz = None
    stride = _literal(props, "stride")
    args = _literal(props, "args")
    nms_export = isinstance(args, dict) and args.get("nms") is True
    return YoloMetadata(
        names=names,
        imgsz_hw=(int(imgsz[0]), int(imgsz[1])) if imgsz else None,
        stride=stride if isinstance(stride, int) and stride > 0 else None,
        task=props.get("task"),
        end_to_end=props.get("end2end") == "True" or nms_export,
        keypoints="kpt_shape" in props,
    )


def check_task(meta: YoloMetadata, output_shapes: Sequence[Sequence], model_name: str) -> None:
    """A UserError unless the model finds boxes: segmentation, pose, classification and oriented
    boxes give outputs that look like boxes but are not what the map needs."""
    task = meta.task
    if task is None and meta.keypoints:
        task = "pose"
    if task is None and len(output_shapes) == 2 and len(output_shapes[1]) == 4:
        task = "segment"  # its second output is the mask prototypes
    if task is not None and task != DETECT_TASK:
        raise UserError(
            f"model {model_name} is a {task} model; gpu-analysis needs a detect model (boxes)"
        )


def _class_list(names: dict[int, str]) -> str:
    return ", ".join(f"{i}={name}" for i, name in sorted(names.items()))


def select_classes(
    names: dict[int, str] | None, requested: str | Sequence[str] | None, model_name: str
) -> tuple[int, ...]:
    """The class ids counted as players: `requested` (names or ids), else those named like
    players, else COCO's person for a model that names no classes."""
    if requested is not None:
        items = requested.split(",") if isinstance(requested, str) else list(requested)
        items = [str(item).strip() for item in items if str(item).strip()]
        if not items:
            raise UserError("--classes: give class names or ids, e.g. --classes player,goalkeeper")
        by_name = {name.lower(): i for i, name in (names or {}).items()}
        chosen: list[int] = []
        for item in items:
            if item.lower() in by_name:
                class_id = by_name[item.lower()]
            elif item.isdigit() and (names is None or int(item) in names):
                class_id = int(item)
            elif names is None:
                raise UserError(
                    f"model {model_name} stores no class names; pass class ids to --classes "
                    f"(got {item!r})"
                )
            else:
                raise UserError(
                    f"model {model_name} has no class {item!r}; its classes: {_class_list(names)}"
                )
            if class_id not in chosen:
                chosen.append(class_id)
        return tuple(chosen)
    if names is None:
        return (COCO_PERSON,)
    players = tuple(i for i, name in sorted(names.items()) if name.lower() in PLAYER_CLASS_NAMES)
    if not players:
        raise UserError(
            f"model {model_name} has no player class (person, player or goalkeeper); its "
            f"classes: {_class_list(names)}; choose with --classes NAME[,NAME]"
        )
    return players


def output_layout(
    shape: Sequence, meta: YoloMetadata, model_name: str, exact: bool = False
) -> str | None:
    """The layout of one output0 shape (N, d1, d2); dims may be names (dynamic). None when a
    dynamic dim leaves it open and `exact` is false; with `exact`, the shape is a real output's."""
    if len(shape) != 3:
        raise UserError(f"model {model_name}: output0 has shape {list(shape)}; expected 3 dims")
    d1, d2 = (d if isinstance(d, int) and d > 0 else None for d in shape[1:])
    if meta.end_to_end:
        if d2 in (6, None):
            return END_TO_END
        raise UserError(
            f"model {model_name}: an end-to-end export should give [N, K, 6]; output0 has "
            f"shape {list(shape)}"
        )
    if meta.names is None:
        # Nothing says how many classes: boxes first unless there are more rows than columns.
        if d1 is None or d2 is None:
            return None
        return RAW_ANCHORS_FIRST if d1 > d2 else RAW
    classes = len(meta.names)
    if d1 == 4 + classes:
        return RAW
    if d2 == 4 + classes:
        return RAW_ANCHORS_FIRST
    if d2 == 5 + classes:
        return YOLOV5
    if d2 == 6:
        return END_TO_END
    if (d1 is None or d2 is None) and not exact:
        return None
    raise UserError(
        f"model {model_name}: output0 has shape {list(shape)}, which fits no YOLO layout for its "
        f"{classes} classes: [N, {4 + classes}, A], [N, A, {5 + classes}] or [N, K, 6]"
    )


def _xywh_to_xyxy(xywh: np.ndarray) -> np.ndarray:
    cx, cy, w, h = xywh.T.astype(np.float64)
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def _nms(boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by class-aware NMS, strongest first: Ultralytics' offset trick (boxes of
    different classes are moved MAX_WH apart, so they never overlap) with torchvision's rule
    (a box goes when its IoU with a stronger kept box is above `iou`)."""
    order = np.argsort(-scores, kind="stable")[:MAX_NMS]
    shifted = boxes[order] + class_ids[order, None] * MAX_WH
    areas = np.clip(shifted[:, 2] - shifted[:, 0], 0, None) * np.clip(
        shifted[:, 3] - shifted[:, 1], 0, None
    )
    kept = np.ones(len(order), dtype=bool)
    for i in range(len(order)):
        if not kept[i]:
            continue
        rest = np.arange(i + 1, len(order))[kept[i + 1 :]]
        if len(rest) == 0:
            break
        x1 = np.maximum(shifted[i, 0], shifted[rest, 0])
        y1 = np.maximum(shifted[i, 1], shifted[rest, 1])
        x2 = np.minimum(shifted[i, 2], shifted[rest, 2])
        y2 = np.minimum(shifted[i, 3], shifted[rest, 3])
        inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
        union = areas[i] + areas[rest] - inter
        overlap = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
        kept[rest[overlap > iou]] = False
    return order[kept][:MAX_DET]


def _best_class_boxes(
    boxes_xyxy: np.ndarray,
    class_scores: np.ndarray,
    classes: Sequence[int],
    confidence: float,
    iou: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A box belongs to the class it scores best in; only boxes whose best class is a player
    class, above `confidence`, go on to NMS."""
    if class_scores.shape[1] == 0:
        empty = np.zeros((0,), np.float32)
        return np.zeros((0, 4)), empty, empty.astype(np.int64)
    best = class_scores.argmax(axis=1)
    score = class_scores[np.arange(len(best)), best]
    keep = (score > confidence) & np.isin(best, classes)
    boxes, score, best = boxes_xyxy[keep], score[keep], best[keep]
    kept = _nms(boxes, score, best, iou)
    return boxes[kept], score[kept].astype(np.float32), best[kept]


def decode(
    prediction: np.ndarray,
    layout: str,
    classes: Sequence[int] = (COCO_PERSON,),
    confidence: float = 0.25,
    iou: float = 0.45,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Player boxes from one frame's output0 in `layout`: (boxes_xyxy float64 (K, 4) in input
    pixels, scores float32 (K,), class ids (K,)), strongest first."""
    pred = np.asarray(prediction, dtype=np.float32)
    if layout == END_TO_END:
        # Already suppressed by the model: Ultralytics only filters by score and class here.
        rows = pred[(pred[:, 4] > confidence) & np.isin(pred[:, 5], classes)][:MAX_DET]
        return rows[:, :4].astype(np.float64), rows[:, 4].copy(), rows[:, 5].astype(np.int64)
    if layout == RAW_ANCHORS_FIRST:
        pred = pred.T
        layout = RAW
    if layout == RAW:
        return _best_class_boxes(_xywh_to_xyxy(pred[:4].T), pred[4:].T, classes, confidence, iou)
    if layout == YOLOV5:
        candidates = pred[pred[:, 4] > confidence]
        class_scores = candidates[:, 5:] * candidates[:, 4:5]
        return _best_class_boxes(
            _xywh_to_xyxy(candidates[:, :4]), class_scores, classes, confidence, iou
        )
    raise ValueError(f"unknown YOLO layout {layout!r}")
