"""Exporting a trained FootNet checkpoint as the shipped ONNX model, with its metadata.

python -m training.export --checkpoint /tmp/footnet.pt --summary /tmp/footnet-train.json
python -m training.export --checkpoint /tmp/footnet-ft.pt \
    --finetune-summary /tmp/footnet-ft-train.json --finetune-data-meta /tmp/footnet-ft/meta.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from gpu_analysis.engine.inference import BUILTIN_MODEL
from training.data import INPUT_WH
from training.net import ExportedFootNet, FootNet

NAME = "footnet-v1"
# Chosen by `python -m training.evaluate --sweep` (best F1 on the validation clips, whose
# seeds are in neither the training nor the held-out set): 0.35 of 0.2..0.5.
THRESHOLD = 0.35


def export(checkpoint: Path, out: Path, threshold: float = THRESHOLD) -> Path:
    net = FootNet()
    net.load_state_dict(torch.load(checkpoint, map_location="cpu"))
    model = ExportedFootNet(net).eval()
    w, h = INPUT_WH
    example = torch.zeros(1, 3, h, w)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model,
        example,
        str(out),
        input_names=["images"],
        output_names=["heatmap"],
        opset_version=17,
        dynamic_axes={"images": {0: "batch"}, "heatmap": {0: "batch"}},
        dynamo=False,
    )
    proto = onnx.load(str(out))
    # onnx writes its newest IR version; onnxruntime 1.31 reads up to 10.
    proto.ir_version = 10
    meta = {
        "gpu_analysis.format": "heatmap",
        "gpu_analysis.name": NAME,
        "gpu_analysis.stride": str(FootNet.stride),
        "gpu_analysis.threshold": str(threshold),
    }
    del proto.metadata_props[:]
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))

    # The exported graph must agree with torch and load in onnxruntime.
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = torch.rand(2, 3, h, w)
    with torch.no_grad():
        expected = model(x).numpy()
    got = session.run(None, {"images": x.numpy()})[0]
    assert got.shape == (2, 1, h // FootNet.stride, w // FootNet.stride), got.shape
    np.testing.assert_allclose(got, expected, atol=1e-4)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("/tmp/footnet.pt"))
    parser.add_argument("--summary", type=Path, default=Path("/tmp/footnet-train.json"))
    parser.add_argument("--data-meta", type=Path, default=Path("/tmp/footnet-data/meta.json"))
    parser.add_argument("--finetune-summary", type=Path, default=None)
    parser.add_argument("--finetune-data-meta", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=BUILTIN_MODEL)
    args = parser.parse_args()
    path = export(args.checkpoint, args.out)
    card = {
        "name": NAME,
        "input": {"name": "images", "shape": ["N", 3, INPUT_WH[1], INPUT_WH[0]]},
        "output": {"name": "heatmap", "stride": FootNet.stride},
        "threshold": THRESHOLD,
        "bytes": path.stat().st_size,
    }
    if args.summary.exists():
        card["training"] = json.loads(args.summary.read_text())
    if args.data_meta.exists():
        card["data"] = json.loads(args.data_meta.read_text())
    # The second stage (docs/model.md): fine-tuned from the first run's weights.
    finetune = {}
    if args.finetune_summary is not None and args.finetune_summary.exists():
        finetune["training"] = json.loads(args.finetune_summary.read_text())
    if args.finetune_data_meta is not None and args.finetune_data_meta.exists():
        finetune["data"] = json.loads(args.finetune_data_meta.read_text())
    if finetune:
        card["finetune"] = finetune
    path.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps({"model": str(path), "bytes": card["bytes"]}))


if __name__ == "__main__":
    main()
