"""Player detection with ONNX Runtime: the session factory and the heat-map and YOLO adapters.

The YOLO layouts, metadata and class choice live in yolo.py; this module runs the session.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from gpu_analysis.engine import cuda_check, yolo
from gpu_analysis.engine.batching import FrameBatch
from gpu_analysis.engine.errors import UserError
from gpu_analysis.engine.teams import ROLE_OF_CLASS_NAME, Role

log = logging.getLogger("gpu_analysis.engine.inference")

BUILTIN_MODEL = Path(__file__).parent / "models" / "builtin.onnx"
THRESHOLD_KEY = "gpu_analysis.threshold"
DEFAULT_HEATMAP_THRESHOLD = 0.3
DEFAULT_YOLO_CONFIDENCE = 0.25
YOLO_IOU = 0.45
# A dynamic-size model with no size in its metadata gets this input width, and the height that
# keeps 16:9 on a multiple of the stride.
DYNAMIC_INPUT_W = 640
DEFAULT_STRIDE = 32


@dataclasses.dataclass(frozen=True)
class FrameFeet:
    """One frame's detected players: foot points in source pixels, scores, height if known."""

    foot_points_px: np.ndarray  # float64 (K, 2), source-video pixels
    scores: np.ndarray  # float32 (K,)
    heights_px: np.ndarray  # float64 (K,), NaN where the detector does not see the body
    # int8 (K,): teams.Role of each detection's class; None when the detector has no such classes
    roles: np.ndarray | None = None


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


def parse_input_size(text: str) -> tuple[int, int]:
    """`--input-size WxH` as (w, h)."""
    parts = str(text).lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise UserError(f"--input-size must be WxH in pixels, e.g. 640x384; got {text!r}")
    w, h = (int(p) for p in parts)
    return w, h


def _input_wh(
    session,
    model_path: Path,
    requested_wh: tuple[int, int] | None = None,
    meta: yolo.YoloMetadata | None = None,
) -> tuple[tuple[int, int], int | None]:
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
        if requested_wh is not None and tuple(requested_wh) != (w, h):
            raise UserError(
                f"model {model_path.name} has a fixed {w}x{h} input; --input-size "
                f"{requested_wh[0]}x{requested_wh[1]} needs a model exported with dynamic=True"
            )
        return (w, h), batch
    stride = (meta.stride if meta else None) or DEFAULT_STRIDE
    if requested_wh is not None:
        rw, rh = requested_wh
        if rw < stride or rh < stride or rw % stride or rh % stride:
            raise UserError(
                f"--input-size {rw}x{rh}: width and height must be multiples of the model's "
                f"stride {stride}"
            )
        return (rw, rh), batch
    if meta is not None and meta.imgsz_hw is not None:
        ih, iw = meta.imgsz_hw  # Ultralytics stores [h, w]
        return (iw, ih), batch
    return (DYNAMIC_INPUT_W, stride * round(DYNAMIC_INPUT_W * 9 / 16 / stride)), batch


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
    """Person boxes from one raw Ultralytics prediction (4+C, A): (boxes_xyxy, scores).

    Boxes are in input pixels, non-maximum suppressed, strongest first; class 0 is person.
    """
    boxes, scores, _ = yolo.decode(prediction, yolo.RAW, (yolo.COCO_PERSON,), confidence, iou)
    return boxes, scores


class OnnxDetector:
    """An ONNX model behind the Detector interface; its format is read from its output shape."""

    def __init__(
        self,
        model: str | os.PathLike = "builtin",
        device: str = "auto",
        threads: int | None = None,
        classes: str | Sequence[str] | None = None,
        input_size: str | tuple[int, int] | None = None,
    ):
        """`classes`: the YOLO classes counted as players (names or ids; default: those named
        person, player or goalkeeper). `input_size`: (w, h) or "WxH" for a dynamic-size model."""
        self.model_path = resolve_model(model)
        self.name = "builtin" if str(model) == "builtin" else self.model_path.name
        requested_wh = parse_input_size(input_size) if isinstance(input_size, str) else input_size
        self.session, self.execution_provider = create_session(self.model_path, device, threads)
        meta_map = self.session.get_modelmeta().custom_metadata_map
        self.yolo_meta = yolo.read_metadata(meta_map)
        output_shapes = [list(o.shape) for o in self.session.get_outputs()]
        yolo.check_task(self.yolo_meta, output_shapes, self.name)
        self.input_wh, self.fixed_batch = _input_wh(
            self.session, self.model_path, requested_wh, self.yolo_meta
        )
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
        self.layout: str | None = None
        self.classes: tuple[int, ...] = ()
        # Classes decoded only to count and leave out of the maps (referees), and the role each
        # decoded class stands for; empty for a model whose classes say nothing of roles.
        self.official_classes: tuple[int, ...] = ()
        self.class_roles: dict[int, int] = {}
        if self.kind == "yolo":
            self.layout = yolo.output_layout(shape, self.yolo_meta, self.name)
            self.classes = yolo.select_classes(self.yolo_meta.names, classes, self.name)
            names = self.yolo_meta.names or {}
            self.class_roles = {
                i: int(ROLE_OF_CLASS_NAME[n.lower()])
                for i, n in names.items()
                if n.lower() in ROLE_OF_CLASS_NAME
            }
            if classes is None:
                self.official_classes = tuple(
                    i for i, role in sorted(self.class_roles.items()) if role == Role.OFFICIAL
                )
        elif classes is not None:
            raise UserError(f"--classes applies to YOLO models; {self.name} is a heat-map model")
        default = DEFAULT_HEATMAP_THRESHOLD if self.kind == "heatmap" else DEFAULT_YOLO_CONFIDENCE
        try:
            self.threshold = float(meta_map.get(THRESHOLD_KEY, default))
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
        described = {
            "name": self.name,
            "format": self.kind,
            "input_size": list(self.input_wh),
            "execution_provider": self.execution_provider,
            "threshold": self.threshold,
        }
        if self.kind == "yolo":
            names = self.yolo_meta.names or {}
            described["layout"] = self.layout
            described["classes"] = [names.get(i, str(i)) for i in self.classes]
            if self.official_classes:
                described["official_classes"] = [names[i] for i in self.official_classes]
        return described

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
            roles = None
            if self.kind == "heatmap":
                heat = frame_out[0]
                stride = (g.input_w / heat.shape[1], g.input_h / heat.shape[0])
                cells, scores = decode_heatmap(heat, self.threshold)
                feet_input = (cells + 0.5) * stride
                heights = np.full(len(scores), np.nan)
            else:
                layout = self.layout or yolo.output_layout(
                    (1, *frame_out.shape), self.yolo_meta, self.name, exact=True
                )
                boxes, scores, class_ids = yolo.decode(
                    frame_out,
                    layout,
                    self.classes + self.official_classes,
                    self.threshold,
                    YOLO_IOU,
                )
                feet_input = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, boxes[:, 3]], axis=1)
                heights = (boxes[:, 3] - boxes[:, 1]) / (g.resized_h / g.source_h)
                if self.class_roles:
                    roles = np.array(
                        [self.class_roles.get(int(c), Role.UNKNOWN) for c in class_ids], np.int8
                    )
            results.append(FrameFeet(g.to_source_px(feet_input), scores, heights, roles))
        return results
