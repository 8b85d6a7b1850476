"""Small ONNX graphs with known outputs, standing in for real detectors in tests and benchmarks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# onnxruntime 1.31 reads IR version 10; newer onnx writes 14 by default.
IR_VERSION = 10
OPSET = 17


def _save(graph: onnx.GraphProto, path: Path, metadata: dict[str, str] | None = None) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def brightness_heatmap_model(
    path: Path,
    input_wh: tuple[int, int] = (640, 384),
    stride: int = 4,
    batch: int | str = "N",
    threshold: float | None = None,
) -> Path:
    """Heat = mean brightness pooled over stride x stride cells: bright spots become peaks."""
    w, h = input_wh
    images = helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, h, w])
    heat = helper.make_tensor_value_info(
        "heat", TensorProto.FLOAT, [batch, 1, h // stride, w // stride]
    )
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["grey"], axes=[1], keepdims=1),
        helper.make_node(
            "AveragePool",
            ["grey"],
            ["heat"],
            kernel_shape=[stride, stride],
            strides=[stride, stride],
        ),
    ]
    graph = helper.make_graph(nodes, "brightness_heatmap", [images], [heat])
    meta = {"gpu_analysis.threshold": str(threshold)} if threshold is not None else None
    return _save(graph, path, meta)


def conv_heatmap_model(
    path: Path, input_wh: tuple[int, int] = (640, 384), width: int = 32, depth: int = 6
) -> Path:
    """A stand-in of realistic cost: a small strided conv net ending in a sigmoid heat map."""
    w, h = input_wh
    rng = np.random.default_rng(0)
    images = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, h, w])
    heat = helper.make_tensor_value_info("heat", TensorProto.FLOAT, ["N", 1, h // 4, w // 4])
    nodes, inits = [], []
    prev, channels = "images", 3
    for i in range(depth):
        stride = 2 if i < 2 else 1
        out_ch = width
        weight = rng.normal(0, (2.0 / (channels * 9)) ** 0.5, (out_ch, channels, 3, 3)).astype(
            np.float32
        )
        inits.append(numpy_helper.from_array(weight, f"w{i}"))
        inits.append(numpy_helper.from_array(np.zeros(out_ch, np.float32), f"b{i}"))
        nodes.append(
            helper.make_node(
                "Conv",
                [prev, f"w{i}", f"b{i}"],
                [f"c{i}"],
                pads=[1, 1, 1, 1],
                strides=[stride, stride],
            )
        )
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        prev, channels = f"r{i}", out_ch
    head = rng.normal(0, 0.05, (1, channels, 1, 1)).astype(np.float32)
    inits.append(numpy_helper.from_array(head, "head"))
    inits.append(numpy_helper.from_array(np.array([-3.0], np.float32), "head_b"))
    nodes.append(helper.make_node("Conv", [prev, "head", "head_b"], ["logits"]))
    nodes.append(helper.make_node("Sigmoid", ["logits"], ["heat"]))
    graph = helper.make_graph(nodes, "conv_heatmap", [images], [heat], initializer=inits)
    return _save(graph, path)


def constant_yolo_model(
    path: Path, prediction: np.ndarray, input_wh: tuple[int, int] = (640, 640)
) -> Path:
    """A YOLO-format model that always predicts `prediction` (4+C, A) for every image."""
    w, h = input_wh
    pred = np.asarray(prediction, dtype=np.float32)[None]
    images = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, h, w])
    out = helper.make_tensor_value_info(
        "output0", TensorProto.FLOAT, ["N", pred.shape[1], pred.shape[2]]
    )
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["m"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Squeeze", ["m", "sq"], ["m3"]),
        helper.make_node("Mul", ["m3", "zero"], ["z"]),
        helper.make_node("Add", ["z", "pred"], ["output0"]),
    ]
    inits = [
        numpy_helper.from_array(np.array([3], np.int64), "sq"),
        numpy_helper.from_array(np.zeros((1, 1, 1), np.float32), "zero"),
        numpy_helper.from_array(pred, "pred"),
    ]
    graph = helper.make_graph(nodes, "constant_yolo", [images], [out], initializer=inits)
    return _save(graph, path)


def wrong_input_model(path: Path) -> Path:
    """A valid ONNX model whose input is a single-channel image: not one we can feed."""
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 1, 64, 64])
    y = helper.make_tensor_value_info("heat", TensorProto.FLOAT, [1, 1, 16, 16])
    node = helper.make_node(
        "AveragePool", ["images"], ["heat"], kernel_shape=[4, 4], strides=[4, 4]
    )
    return _save(helper.make_graph([node], "wrong_input", [x], [y]), path)


def kit_colour_heatmap_model(
    path: Path,
    input_wh: tuple[int, int] = (640, 384),
    stride: int = 4,
    gain: float = 8.0,
    threshold: float = 0.5,
) -> Path:
    """Heat where a pixel is far from grass green (red + blue - 1.4 green), pooled per cell.

    It finds shirts and white lines alike: a crude detector with a real, image-driven output.
    """
    w, h = input_wh
    images = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, h, w])
    heat = helper.make_tensor_value_info(
        "heat", TensorProto.FLOAT, ["N", 1, h // stride, w // stride]
    )
    weight = (gain * np.array([1.0, -1.4, 1.0], np.float32)).reshape(1, 3, 1, 1)
    nodes = [
        helper.make_node("Conv", ["images", "kit_w"], ["kit"]),
        helper.make_node("Relu", ["kit"], ["kit_pos"]),
        helper.make_node(
            "MaxPool",
            ["kit_pos"],
            ["pooled"],
            kernel_shape=[stride, stride],
            strides=[stride, stride],
        ),
        helper.make_node("Tanh", ["pooled"], ["heat"]),
    ]
    inits = [numpy_helper.from_array(weight, "kit_w")]
    graph = helper.make_graph(nodes, "kit_colour_heatmap", [images], [heat], initializer=inits)
    return _save(graph, path, {"gpu_analysis.threshold": str(threshold)})


def constant_heatmap_model(
    path: Path, value: float, input_wh: tuple[int, int] = (640, 384), stride: int = 4
) -> Path:
    """A heat-map model whose every cell is `value` for any image: 0 finds nothing, NaN gives
    NaN and +inf a peak in every cell (thousands of "players" a frame)."""
    w, h = input_wh
    images = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, h, w])
    heat = helper.make_tensor_value_info(
        "heat", TensorProto.FLOAT, ["N", 1, h // stride, w // stride]
    )
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["grey"], axes=[1], keepdims=1),
        helper.make_node(
            "AveragePool",
            ["grey"],
            ["pooled"],
            kernel_shape=[stride, stride],
            strides=[stride, stride],
        ),
        helper.make_node("Mul", ["pooled", "zero"], ["zeros"]),
        helper.make_node("Add", ["zeros", "value"], ["heat"]),
    ]
    inits = [
        numpy_helper.from_array(np.zeros((1, 1, 1, 1), np.float32), "zero"),
        numpy_helper.from_array(np.full((1, 1, 1, 1), value, np.float32), "value"),
    ]
    graph = helper.make_graph(nodes, "constant_heatmap", [images], [heat], initializer=inits)
    return _save(graph, path, {"gpu_analysis.threshold": "0.5"})


def ultralytics_metadata(
    names: dict[int, str] | None,
    imgsz_hw: tuple[int, int] = (640, 640),
    task: str = "detect",
    stride: int = 32,
    end2end: bool = False,
    **extra: object,
) -> dict[str, str]:
    """metadata_props as Ultralytics' exporter writes them: each value str() of a Python value."""
    meta = {
        "description": "Ultralytics YOLO model",
        "author": "Ultralytics",
        "stride": stride,
        "task": task,
        "batch": 1,
        "imgsz": list(imgsz_hw),
        "names": names,
        "args": {"batch": 1, "nms": None, "dynamic": False},
        "channels": 3,
        "end2end": end2end,
        **extra,
    }
    return {key: str(value) for key, value in meta.items() if value is not None}


def replay_model(
    path: Path,
    output0: np.ndarray,
    input_shape: list,
    output_shapes: list[list] | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """A model that gives `output0` (1, d1, d2) for every image, with the input and output
    shapes (ints, or names for dynamic dims) and the metadata of a real export. Outputs after
    the first (a segmentation model's mask prototypes) are zeros of their declared shape."""
    pred = np.asarray(output0, dtype=np.float32)
    output_shapes = output_shapes or [["N", *pred.shape[1:]]]
    images = helper.make_tensor_value_info("images", TensorProto.FLOAT, list(input_shape))
    outputs, nodes, inits = [], [], []
    nodes.append(helper.make_node("ReduceMean", ["images"], ["m"], axes=[1, 2, 3], keepdims=1))
    nodes.append(helper.make_node("Squeeze", ["m", "sq"], ["m3"]))
    nodes.append(helper.make_node("Mul", ["m3", "zero"], ["z"]))
    inits.append(numpy_helper.from_array(np.array([3], np.int64), "sq"))
    inits.append(numpy_helper.from_array(np.array([2], np.int64), "sq2"))
    inits.append(numpy_helper.from_array(np.zeros((1, 1, 1), np.float32), "zero"))
    for i, shape in enumerate(output_shapes):
        name = f"output{i}"
        value = pred if i == 0 else np.zeros([d if isinstance(d, int) else 1 for d in shape])
        value = value.astype(np.float32)
        if value.ndim == 3:
            nodes.append(helper.make_node("Add", ["z", f"value{i}"], [name]))
        elif value.ndim == 2:  # a classifier's (1, C)
            nodes.append(helper.make_node("Squeeze", ["z", "sq2"], [f"z{i}"]))
            nodes.append(helper.make_node("Add", [f"z{i}", f"value{i}"], [name]))
        else:  # e.g. (1, 32, h, w): broadcast the per-image zero over the extra dims
            nodes.append(helper.make_node("Unsqueeze", ["z", "sq"], [f"z{i}"]))
            nodes.append(helper.make_node("Add", [f"z{i}", f"value{i}"], [name]))
        inits.append(numpy_helper.from_array(value, f"value{i}"))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)))
    graph = helper.make_graph(nodes, "replay", [images], outputs, initializer=inits)
    return _save(graph, path, metadata)
