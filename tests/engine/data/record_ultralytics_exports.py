"""Records what real Ultralytics ONNX exports look like, for tests/engine/test_yolo_formats.py.

Not run by the tests: it needs ultralytics and torch, which the project does not install.
    python3.11 -m venv /tmp/ulvenv
    /tmp/ulvenv/bin/pip install torch ultralytics onnx onnxruntime
    /tmp/ulvenv/bin/python tests/engine/data/record_ultralytics_exports.py
Models are built from their YAML with random weights (no download) at imgsz 160. The detect
models get 4 football classes and class biases that give a few hundred candidate boxes, so
Ultralytics' own post-processing has real work to do. Written here: ultralytics_exports.json
(metadata and input/output shapes of each export; for detect models the thresholds and the
boxes `ultralytics.utils.nms.non_max_suppression` keeps) and ultralytics_outputs.npz (each
detect export's output0 for one fixed input). The ONNX files themselves are not kept.
An `nms=True` export needs torchvision, whose wheel did not match the local CPU torch; YOLO26's
end-to-end export (`nms=False`, the NMS-free head) has the same (N, 300, 6) output.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from ultralytics import YOLO
from ultralytics.engine.exporter import Exporter
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils.nms import non_max_suppression

HERE = Path(__file__).parent
FOOTBALL = {0: "ball", 1: "goalkeeper", 2: "player", 3: "referee"}
PLAYER_CLASSES = [1, 2]
CONF, IOU = 0.25, 0.45
IMGSZ = 160


def _export(model, path: Path, **kwargs) -> Path:
    args = {"format": "onnx", "imgsz": IMGSZ, "batch": 1, "simplify": False, "mode": "export"}
    exported = Path(
        Exporter(overrides={**args, "data": None, "device": None, **kwargs})(model=model)
    )
    exported.rename(path)
    return path


def _image() -> np.ndarray:
    """A fixed input with structure at the scale of the detection grid (noise averages out)."""
    low = np.random.default_rng(0).random((1, 3, 10, 10)).astype(np.float32)
    image = torch.nn.functional.interpolate(
        torch.from_numpy(low), size=(IMGSZ, IMGSZ), mode="bilinear"
    )
    return image.numpy()


def _football_model(yaml: str, image: np.ndarray) -> DetectionModel:
    """Random weights whose outputs vary over the image: a default-initialised YOLO's features
    fade to nothing by the head, so every anchor would score the same. Convolutions get He
    initialisation (the DFL's fixed one kept) and each head's last convolution is scaled to what
    reaches it: class logits of spread 1.5 around -2.5, box logits of spread 1."""
    torch.manual_seed(0)
    model = YOLO(yaml)
    detection = DetectionModel(model.model.yaml, nc=len(FOOTBALL), verbose=False)
    detection.names = dict(FOOTBALL)
    detection.args, detection.task = model.model.args, model.model.task
    for module in detection.modules():
        if isinstance(module, torch.nn.Conv2d) and module.weight.requires_grad:
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    detection.eval()
    head = detection.model[-1]
    lasts = [
        (branch[-1], spread, bias)
        for name, spread, bias in (
            ("cv3", 1.5, -2.5),
            ("one2one_cv3", 1.5, -2.5),
            ("cv2", 1.0, 0.0),
            ("one2one_cv2", 1.0, 0.0),
        )
        for branch in (getattr(head, name, None) or [])
    ]
    seen = {}
    hooks = [
        conv.register_forward_hook(lambda m, i, o: seen.__setitem__(m, i[0].detach()))
        for conv, _, _ in lasts
    ]
    with torch.no_grad():
        detection(torch.from_numpy(image))
    for hook in hooks:
        hook.remove()
    with torch.no_grad():
        for conv, spread, bias in lasts:
            x = seen[conv]
            mean = x.mean(dim=(2, 3), keepdim=True)
            x_std = float((x - mean).std()) + 1e-12
            conv.weight.normal_(0, spread / (x_std * conv.weight[0].numel() ** 0.5))
            conv.bias.normal_(bias, 0.3)
            k = conv.kernel_size
            conv.bias -= torch.nn.functional.conv2d(mean.expand(-1, -1, *k), conv.weight).flatten()
    return detection


def _describe(onnx_path: Path) -> dict:
    proto = onnx.load(str(onnx_path))
    meta = {p.key: p.value for p in proto.metadata_props}
    meta.pop("date", None)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return {
        "metadata": meta,
        "inputs": [{"name": i.name, "shape": list(i.shape)} for i in session.get_inputs()],
        "outputs": [{"name": o.name, "shape": list(o.shape)} for o in session.get_outputs()],
    }


def main() -> None:
    exports: dict[str, dict] = {}
    outputs: dict[str, np.ndarray] = {}
    image = _image()
    with tempfile.TemporaryDirectory() as tmp:
        detect = {
            "yolov8n_raw": ("yolov8n.yaml", {}),
            "yolo11n_raw": ("yolo11n.yaml", {}),
            "yolo26n_end2end": ("yolo26n.yaml", {"nms": False}),
        }
        for key, (yaml, extra) in detect.items():
            target = _export(_football_model(yaml, image), Path(tmp) / f"{key}.onnx", **extra)
            entry = _describe(target)
            session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
            out0 = session.run(None, {session.get_inputs()[0].name: image})[0]
            end2end = entry["metadata"].get("end2end") == "True"
            kept = non_max_suppression(
                torch.from_numpy(out0), CONF, IOU, classes=PLAYER_CLASSES, end2end=end2end
            )[0].numpy()
            entry["postprocess"] = {
                "function": "ultralytics.utils.nms.non_max_suppression",
                "conf_thres": CONF,
                "iou_thres": IOU,
                "classes": PLAYER_CLASSES,
                "end2end": end2end,
                "candidates_above_conf": int((out0[0, 4:].max(0) > CONF).sum())
                if not end2end and out0.shape[-1] != 6
                else int((out0[0, :, 4] > CONF).sum()),
                "boxes_xyxy_score_class": kept.round(4).tolist(),
            }
            exports[key] = entry
            outputs[key] = out0.astype(np.float32)
        for task_yaml in (
            "yolov8n-seg.yaml",
            "yolov8n-pose.yaml",
            "yolov8n-cls.yaml",
            "yolov8n-obb.yaml",
        ):
            target = _export(YOLO(task_yaml).model, Path(tmp) / f"{Path(task_yaml).stem}.onnx")
            exports[Path(task_yaml).stem] = _describe(target)
    (HERE / "ultralytics_exports.json").write_text(json.dumps(exports, indent=1, sort_keys=True))
    np.savez_compressed(HERE / "ultralytics_outputs.npz", **outputs)


if __name__ == "__main__":
    main()
