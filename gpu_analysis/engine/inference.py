"""Player detection with ONNX Runtime: the session factory and the heat-map and YOLO adapters."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Protocol

import numpy as np

from gpu_analysis.engine import cuda_check
from gpu_analysis.engine.batching import FrameBatch
from gpu_analysis.engine.errors import UserError

log = logging.getLogger("gpu_analysis.engine.inference")

BUILTIN_MODEL = Path(__file__).parent / "models" / "builtin.onnx"
THRESHOLD_KEY = "gpu_analysis.threshold"
DEFAULT_HEATMAP_THRESHOLD = 0.3
DEFAULT_YOLO_CONFIDENCE = 0.25
YOLO_IOU = 0.45
# A dynamic-size model gets this input width, and the height that keeps 16:9 on a multiple of 32.
DYNAMIC_INPUT_W = 640


@dataclasses.dataclass(frozen=True)
class FrameFeet:
    """One frame's detected players: foot points in source pixels, scores, height if known."""

    foot_points_px: np.ndarray  # float64 (K, 2), source-video pixels
    scores: np.ndarray  # float32 (K,)
    heights_px: np.ndarray  # float64 (K,), NaN where the detector does not see the body


class Detector(Protocol):
    """What the pipeline needs from a detector; the ONNX adapters and test doubles provide it."""

    name: str
    kind: str
    input_wh: tuple[int, int]
    execution_provider: str

    def detect(self, batch: FrameBatch) -> list[FrameFeet]: ...


def resolve_model(model: str | os.PathLike) -> Path:
    if str(model) == "builtin":
        if not BUILTIN_MODEL.is_file():
            raise UserError(
                f"the built-in model is not installed ({BUILTIN_MODEL} is missing); "
                "pass --model PATH.onnx or build it with `make train-model`"
            )
        return BUILTIN_MODEL
    path = Path(model)
    if not path.is_file():
        raise UserError(f"{path}: no such model file; pass --model builtin or a .onnx file")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: model file is empty (0 bytes)")
    return path


def create_session(model_path: Path, device: str = "auto", threads: int | None = None):
    """An ONNX Runtime session and its provider: (session, provider).

    `cuda` runs on CUDA or raises a UserError naming the missing piece (package, driver,
    device, library): on the cluster a CPU fallback would bill a GPU node for CPU work.
    `auto` takes CUDA when it really works and falls back to the CPU, logging why.
    """
    import onnxruntime as ort

    if device not in ("auto", "cpu", "cuda"):
        raise UserError(f"--device must be auto, cpu or cuda, got {device!r}")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads or max(1, os.cpu_count() or 1)
    # Idle pool threads sleep instead of spinning: the decode thread needs those cycles
    # (measured in benchmarks/engine_speed.py: faster end to end on a busy 2-core machine).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3

    providers: list = ["CPUExecutionProvider"]
    if device != "cpu":
        # onnxruntime-gpu lists CUDA even with no GPU, and asking it for a session then logs
        # loud errors before falling back: the pieces below the libraries are checked first.
        missing = cuda_check.missing_before_session(ort.get_available_providers())
        if missing and device == "cuda":
            raise UserError(f"device cuda: {missing}")
        if missing:  # expected on a machine without a GPU: no warning
            log.debug("onnxruntime: CUDA not used: %s", missing)
        else:
            cuda_check.preload_cuda_libraries()
            # cuDNN's exhaustive search may pick a different convolution algorithm run to run;
            # a fixed choice keeps a retried step's detections byte-identical.
            cuda = (cuda_check.CUDA_PROVIDER, {"cudnn_conv_algo_search": "DEFAULT"})
            providers = [cuda, "CPUExecutionProvider"]
    try:
        session = ort.InferenceSession(str(model_path), options, providers=providers)
    except Exception as exc:  # ORT raises its own pybind exception types
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{model_path}: not a model ONNX Runtime can load ({detail})") from None
    provider = session.get_providers()[0]
    if len(providers) > 1 and provider != cuda_check.CUDA_PROVIDER:
        # ONNX Runtime drops a CUDA provider that fails to load without raising.
        reason = cuda_check.cuda_dropped_reason()
        if device == "cuda":
            raise UserError(f"device cuda: {reason}")
        log.warning("onnxruntime: CUDA not used: %s", reason)
    return session, provider


def _input_wh(session, model_path: Path) -> tuple[tuple[int, int], int | None]:
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise UserError(f"{model_path}: expected one input image tensor, found {len(inputs)}")
    spec = inputs[0]
    shape = list(spec.shape)
    channels_ok = len(shape) == 4 and (shape[1] == 3 or not isinstance(shape[1], int))
    if spec.type != "tensor(float)" or not channels_ok:
        raise UserError(
            f"{model_path}: input {spec.name!r} is {spec.type} {shape}; "
            "expected float32 [N, 3, H, W] (RGB)"
        )
    batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
    h, w = shape[2], shape[3]
    if isinstance(h, int) and isinstance(w, int):
        if h < 32 or w < 32:
            raise UserError(f"{model_path}: input {spec.name!r} is {shape}; H and W must be >= 32")
        return (w, h), batch
    return (DYNAMIC_INPUT_W, 32 * round(DYNAMIC_INPUT_W * 9 / 16 / 32)), batch


def decode_heatmap(
    heat_hw: np.ndarray, threshold: float = DEFAULT_HEATMAP_THRESHOLD, nms_radius: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Peaks of one foot-point heat map, in cell coordinates, with their scores.

    A peak is a cell above `threshold` that is the maximum of its (2r+1)^2 neighbourhood; on a
    plateau the first cell in raster order is the peak. Its position is refined along each axis
    by a parabola through the log of the peak and its two neighbours (exact for Gaussians).
    Cell coordinate c is input pixel (c + 0.5) * stride, the convention the built-in model
    is trained to.
    Returns (points_cells_xy float64 (K, 2), scores float32 (K,)), strongest first.
    """
    from scipy.ndimage import maximum_filter

    heat = np.asarray(heat_hw, dtype=np.float32)
    if heat.ndim != 2:
        raise ValueError(f"heat map must be 2-D, got shape {heat.shape}")
    size = 2 * nms_radius + 1
    # A tie-breaker far below float32 resolution makes every value distinct, earlier cells
    # (raster order) winning: a strict local maximum then has no other peak within the radius,
    # which is the whole non-maximum suppression, with no loop over candidates.
    key = heat.astype(np.float64) - 1e-14 * np.arange(heat.size, dtype=np.float64).reshape(
        heat.shape
    )
    peaks = (key >= maximum_filter(key, size=size, mode="constant", cval=-np.inf)) & (
        heat > threshold
    )
    ys, xs = np.nonzero(peaks)
    if len(ys) == 0:
        return np.zeros((0, 2)), np.zeros((0,), dtype=np.float32)
    scores = heat[ys, xs]
    order = np.argsort(-scores, kind="stable")  # strongest first, ties in raster order
    ys, xs, scores = ys[order], xs[order], scores[order]

    padded = np.pad(heat, 1, mode="edge").astype(np.float64)
    centre = padded[ys + 1, xs + 1]
    dx = _log_parabola_offset(padded[ys + 1, xs], centre, padded[ys + 1, xs + 2])
    dy = _log_parabola_offset(padded[ys, xs + 1], centre, padded[ys + 2, xs + 1])
    points = np.stack([xs + dx, ys + dy], axis=1)
    return points, scores.astype(np.float32)


def _log_parabola_offset(before: np.ndarray, centre: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Sub-cell offset of a peak from its two neighbours along one axis.

    A parabola through the logarithms is exact for a Gaussian peak of any width (a plain
    weighted centroid pulls towards the cell centre); where a value is not positive, a
    centroid of the three values stands in.
    """
    tiny = 1e-12
    with np.errstate(divide="ignore", invalid="ignore"):
        lb, lc, la = (
            np.log(np.maximum(before, tiny)),
            np.log(np.maximum(centre, tiny)),
            np.log(np.maximum(after, tiny)),
        )
        curvature = lb - 2 * lc + la
        parabola = 0.5 * (lb - la) / curvature
        weights = np.clip(before, 0, None) + np.clip(centre, 0, None) + np.clip(after, 0, None)
        centroid = (np.clip(after, 0, None) - np.clip(before, 0, None)) / weights
    usable = (np.minimum(before, after) > tiny) & (curvature < 0) & np.isfinite(parabola)
    offset = np.where(usable, parabola, np.nan_to_num(centroid))
    return np.clip(offset, -0.5, 0.5)


def decode_yolo(
    prediction: np.ndarray,
    confidence: float = DEFAULT_YOLO_CONFIDENCE,
    iou: float = YOLO_IOU,
) -> tuple[np.ndarray, np.ndarray]:
    """Person boxes from one Ultralytics-format prediction (4+C, A): (boxes_xyxy, scores).

    Boxes are in input pixels, non-maximum suppressed, strongest first; class 0 is person.
    """
    pred = np.asarray(prediction, dtype=np.float32)
    scores = pred[4]
    if pred.shape[0] > 5:
        # A box belongs to the class it scores best in; only boxes whose best is person count.
        scores = np.where(pred[4:].argmax(axis=0) == 0, pred[4], 0.0)
    keep = scores > confidence
    cx, cy, w, h = pred[0][keep], pred[1][keep], pred[2][keep], pred[3][keep]
    scores = scores[keep]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1).astype(np.float64)
    order = np.argsort(-scores, kind="stable")
    boxes, scores = boxes[order], scores[order]
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(
        boxes[:, 3] - boxes[:, 1], 0, None
    )
    kept = np.ones(len(boxes), dtype=bool)
    for i in range(len(boxes)):
        if not kept[i]:
            continue
        rest = np.arange(i + 1, len(boxes))[kept[i + 1 :]]
        if len(rest) == 0:
            break
        x1 = np.maximum(boxes[i, 0], boxes[rest, 0])
        y1 = np.maximum(boxes[i, 1], boxes[rest, 1])
        x2 = np.minimum(boxes[i, 2], boxes[rest, 2])
        y2 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
        union = areas[i] + areas[rest] - inter
        overlap = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
        kept[rest[overlap > iou]] = False
    return boxes[kept], scores[kept].astype(np.float32)


class OnnxDetector:
    """An ONNX model behind the Detector interface; its format is read from its output shape."""

    def __init__(
        self, model: str | os.PathLike = "builtin", device: str = "auto", threads: int | None = None
    ):
        self.model_path = resolve_model(model)
        self.name = "builtin" if str(model) == "builtin" else self.model_path.name
        self.session, self.execution_provider = create_session(self.model_path, device, threads)
        self.input_wh, self.fixed_batch = _input_wh(self.session, self.model_path)
        # How many frames go into one session.run. On CPU one at a time: footnet-v1 ran at
        # 13-15 ms a frame alone against 18-29 ms in batches of 8 (its activations stay in
        # cache); a GPU gets the whole batch. A fixed-batch model gets its batch size.
        self.run_batch = self.fixed_batch or (
            1 if self.execution_provider == "CPUExecutionProvider" else None
        )
        self.input_name = self.session.get_inputs()[0].name
        outputs = self.session.get_outputs()
        shape = list(outputs[0].shape)
        if len(shape) == 4 and shape[1] == 1:
            self.kind = "heatmap"
        elif len(shape) == 3 and (not isinstance(shape[1], int) or shape[1] >= 5):
            self.kind = "yolo"
        else:
            raise UserError(
                f"{self.model_path}: output {outputs[0].name!r} has shape {shape}; expected a "
                "heat map [N, 1, h, w] or YOLO boxes [N, 4+C, A]"
            )
        meta = self.session.get_modelmeta().custom_metadata_map
        default = DEFAULT_HEATMAP_THRESHOLD if self.kind == "heatmap" else DEFAULT_YOLO_CONFIDENCE
        try:
            self.threshold = float(meta.get(THRESHOLD_KEY, default))
        except ValueError:
            self.threshold = default
        log.info(
            "onnxruntime: %s model %s (%dx%d) on %s",
            self.kind,
            self.name,
            *self.input_wh,
            self.execution_provider,
        )

    def describe(self) -> dict:
        return {
            "name": self.name,
            "format": self.kind,
            "input_size": list(self.input_wh),
            "execution_provider": self.execution_provider,
            "threshold": self.threshold,
        }

    def _run(self, tensor: np.ndarray) -> np.ndarray:
        n = tensor.shape[0]
        chunk = self.run_batch or n
        outs = []
        for start in range(0, n, chunk):
            part = tensor[start : start + chunk]
            if len(part) < chunk:
                # A fixed-batch model needs full batches; the padding rows are dropped below.
                fill = np.zeros((chunk - len(part), *part.shape[1:]), dtype=part.dtype)
                part = np.concatenate([part, fill])
            try:
                out = self.session.run(None, {self.input_name: part})[0]
            except Exception as exc:
                detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
                raise UserError(f"{self.model_path}: the model failed to run ({detail})") from None
            outs.append(out[: min(chunk, n - start)])
        return np.concatenate(outs)

    def detect(self, batch: FrameBatch) -> list[FrameFeet]:
        if batch.geometry.input_w != self.input_wh[0] or batch.geometry.input_h != self.input_wh[1]:
            raise UserError(
                f"frames were prepared for a {batch.geometry.input_w}x{batch.geometry.input_h} "
                f"input but {self.name} takes {self.input_wh[0]}x{self.input_wh[1]}; "
                "run preprocess with the same --model"
            )
        output = self._run(batch.model_input())
        results = []
        g = batch.geometry
        for frame_out in output:
            if self.kind == "heatmap":
                heat = frame_out[0]
                stride = (g.input_w / heat.shape[1], g.input_h / heat.shape[0])
                cells, scores = decode_heatmap(heat, self.threshold)
                feet_input = (cells + 0.5) * stride
                heights = np.full(len(scores), np.nan)
            else:
                pred = frame_out
                if pred.shape[0] > pred.shape[1]:
                    pred = pred.T  # some exports put anchors first
                boxes, scores = decode_yolo(pred, self.threshold)
                feet_input = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, boxes[:, 3]], axis=1)
                heights = (boxes[:, 3] - boxes[:, 1]) / (g.resized_h / g.source_h)
            results.append(FrameFeet(g.to_source_px(feet_input), scores, heights))
        return results
