"""GPU speed of the built-in model: frames/s at batch 1-64 and the infer step end to end.

Runs on whichever GPU runtime works here, and prints which:
- ONNX Runtime's CUDA provider (`inference.create_session(..., "cuda")`, the engine's own
  session and `steps.infer`, exactly what the A10G step runs), where onnxruntime-gpu starts;
- else the same network through PyTorch CUDA: training/net.py's FootNet with the weights of
  gpu_analysis/engine/models/builtin.onnx loaded into it (the export folded batch norm into
  the convolutions: each conv gets the folded weight and its batch norm passes the folded bias
  through). Before measuring, its heat maps are checked against ONNX Runtime's on the CPU;
  the infer step then runs the engine's own stages with this network in place of the session.

Baseline in the same run: ONNX Runtime's CPU provider, the engine's session, at batch 1 (what
the engine feeds a CPU) and through the same infer step. Timed figures include the copies to
and from the GPU, as the engine pays them (numpy in, numpy out).

Without a GPU it measures nothing: it prints one line, `error: no GPU was used (...)`, naming
why for each runtime, and exits 1. After measuring it checks again that the runtime really ran
on CUDA, and refuses the same way if not. GPU utilisation and peak memory come from NVML
(`gpu_analysis/engine/gpu_usage.py`) when it is there.

    .venv/bin/python benchmarks/gpu_speed.py [--seconds 3] [--clip-seconds 20 --repeat 3]

The clip is the Engine section's 1080p 25 fps synthetic match (20 s played 3 times, 60 s) at
--sample-fps 5, made once under var/bench/. About 3-5 minutes on a fresh GPU machine, most
of it rendering the clip.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)
SAMPLE_FPS = 5.0
# The staging profile's batch size: how the preprocess step cuts the shards the A10G step reads.
SHARD_BATCH_SIZE = 16
# The torch network must reproduce the ONNX model's heat maps (values 0..1) to this.
MAX_HEAT_DIFFERENCE = 1e-3


class NoGpuUsed(Exception):
    """Nothing ran on a GPU: the reason goes into the one `error:` line."""


# --- the two GPU runtimes -------------------------------------------------------------------


def onnxruntime_cuda(model_path: Path):
    """The engine's own session on CUDA, or NoGpuUsed with the engine's reason."""
    from gpu_analysis.engine.errors import UserError
    from gpu_analysis.engine.inference import create_session

    try:
        session, provider = create_session(model_path, "cuda")
    except UserError as exc:
        raise NoGpuUsed(f"ONNX Runtime: {exc}") from None
    return session, provider


def torch_footnet(model_path: Path, device: str):
    """training/net.py's network with the ONNX model's weights, in eval mode on `device`."""
    import onnx
    import torch
    from onnx import numpy_helper
    from torch import nn

    from training.net import ExportedFootNet, FootNet

    graph = onnx.load(str(model_path)).graph
    weights = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    onnx_convs = [node for node in graph.node if node.op_type == "Conv"]
    width = weights[onnx_convs[0].input[1]].shape[0] // 16
    net = ExportedFootNet(FootNet(width=width)).eval()

    # The convolutions in the order they run, as the export traced them.
    order: list[nn.Conv2d] = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: order.append(m))
        for m in net.modules()
        if isinstance(m, nn.Conv2d)
    ]
    _, _, h, w = (d.dim_value for d in graph.input[0].type.tensor_type.shape.dim)
    with torch.no_grad():
        net(torch.zeros(1, 3, h, w))
    for hook in hooks:
        hook.remove()
    norm_after = {}
    for seq in net.modules():
        if isinstance(seq, nn.Sequential):
            for first, second in zip(seq, list(seq)[1:], strict=False):
                if isinstance(first, nn.Conv2d) and isinstance(second, nn.BatchNorm2d):
                    norm_after[first] = second
    if len(order) != len(onnx_convs):
        raise SystemExit(
            f"error: {model_path.name} has {len(onnx_convs)} convolutions, training/net.py's "
            f"network {len(order)}: they are not the same network"
        )
    with torch.no_grad():
        for conv, node in zip(order, onnx_convs, strict=True):
            weight = torch.from_numpy(weights[node.input[1]].copy())
            bias = torch.from_numpy(weights[node.input[2]].copy()) if len(node.input) > 2 else None
            if weight.shape != conv.weight.shape:
                raise SystemExit(
                    f"error: {model_path.name}: convolution {node.name} is {tuple(weight.shape)}, "
                    f"training/net.py's is {tuple(conv.weight.shape)}"
                )
            conv.weight.copy_(weight)
            norm = norm_after.get(conv)
            if norm is not None:  # folded: the norm becomes identity plus the folded bias
                norm.weight.fill_(1.0)
                norm.running_mean.zero_()
                norm.running_var.fill_(1.0 - norm.eps)
                norm.bias.copy_(bias if bias is not None else torch.zeros_like(norm.bias))
            elif bias is not None:
                conv.bias.copy_(bias)
    return net.to(device)


def torch_cuda(model_path: Path):
    """The torch network on CUDA, checked against ONNX Runtime's CPU output; or NoGpuUsed."""
    try:
        import torch
    except ImportError:
        raise NoGpuUsed("PyTorch: not installed") from None
    if not torch.cuda.is_available():
        raise NoGpuUsed(f"PyTorch {torch.__version__}: torch.cuda.is_available() is False")
    net = torch_footnet(model_path, "cuda")
    run = _torch_runner(net, "cuda")
    difference = heat_difference(run, model_path)
    if difference > MAX_HEAT_DIFFERENCE:
        raise SystemExit(
            f"error: the PyTorch network does not reproduce {model_path.name} "
            f"(max heat difference {difference:.2g} > {MAX_HEAT_DIFFERENCE:g}); fix the loading"
        )
    return net, run, difference


def _torch_runner(net, device: str) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = net(torch.from_numpy(batch).to(device))
            if out.device.type != device:
                raise NoGpuUsed(f"PyTorch: the output came back on {out.device}, not {device}")
            return out.cpu().numpy()  # the copy back waits for the GPU

    return run


def heat_difference(run: Callable[[np.ndarray], np.ndarray], model_path: Path) -> float:
    """Largest difference between `run`'s heat maps and ONNX Runtime's CPU ones, 2 frames."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    spec = session.get_inputs()[0]
    _, c, h, w = spec.shape
    x = np.random.default_rng(1).random((2, c, h, w), dtype=np.float32)
    expected = session.run(None, {spec.name: x})[0]
    return float(np.abs(run(x) - expected).max())


# --- measurements --------------------------------------------------------------------------


def frames_per_s(run: Callable[[np.ndarray], np.ndarray], shape, seconds: float) -> float:
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    for _ in range(3):  # warm-up: allocations, kernel and algorithm choice
        run(x)
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds or runs < 3:
        run(x)
        runs += 1
    return runs * shape[0] / (time.perf_counter() - started)


def session_runner(session) -> Callable[[np.ndarray], np.ndarray]:
    name = session.get_inputs()[0].name
    return lambda batch: session.run(None, {name: batch})[0]


def make_shards(work: Path, clip_seconds: float, repeat: int) -> tuple[str, dict]:
    """The benchmark clip cut into shards by the real preprocess step (CPU, not timed here)."""
    from benchmarks.engine_clips import match_clip, repeated_clip
    from gpu_analysis.engine import steps

    video, _ = match_clip(1920, 1080, clip_seconds)
    if repeat > 1:
        video, _ = repeated_clip(video, repeat)
    shards_uri = str(work / "shards")
    summary = steps.preprocess(
        str(video), shards_uri, sample_fps=SAMPLE_FPS, model="builtin", batch_size=SHARD_BATCH_SIZE
    )
    return shards_uri, {
        "clip": video.name,
        "duration_s": summary.video.duration_s,
        "sampled_frames": summary.sampled_frames,
        "shards": summary.shards,
        "preprocess_s": summary.total_s,
    }


def infer_step_onnxruntime(shards_uri: str, out: Path, device: str) -> dict:
    """`steps.infer` as the A10G step runs it; its summary's frames/s and provider."""
    from gpu_analysis.engine import steps

    summary = steps.infer(shards_uri, str(out), model="builtin", device=device)
    return {
        "provider": summary.execution_provider,
        "sampled_frames": summary.sampled_frames,
        "model_frames_per_s": summary.frames_per_s,
        "step_s": summary.total_s,
        "step_frames_per_s": round(summary.sampled_frames / summary.total_s, 1),
    }


def infer_step_torch(shards_uri: str, run: Callable[[np.ndarray], np.ndarray]) -> dict:
    """The infer step's own stages (shards -> batches -> model -> foot points) with torch."""
    from gpu_analysis.engine import shards, steps
    from gpu_analysis.engine.inference import OnnxDetector
    from gpu_analysis.engine.records import PreprocessSummary, from_plain

    class TorchDetector(OnnxDetector):
        """The engine's detector (input size, threshold, peak decoding) on the torch network."""

        def _run(self, tensor: np.ndarray) -> np.ndarray:
            return run(tensor)

    started = time.perf_counter()
    manifest = shards.read_manifest(shards_uri)
    pre = from_plain(PreprocessSummary, manifest["summary"])
    detector = TorchDetector("builtin", device="cpu")  # the session is only for its metadata
    detector.execution_provider = "torch CUDA"
    match_run = steps.MatchRun(facts=pre.video, sample_fps=pre.sample_fps, detector=detector)
    detections = steps.run_stages("infer", shards.iter_shards(shards_uri, manifest), match_run)
    step_s = time.perf_counter() - started
    sampled = len(detections.sampled_frame_index)
    return {
        "provider": detector.execution_provider,
        "sampled_frames": sampled,
        "model_frames_per_s": round(sampled / match_run.infer_s, 1),
        "step_s": round(step_s, 3),
        "step_frames_per_s": round(sampled / step_s, 1),
    }


def main(args: argparse.Namespace) -> int:
    from gpu_analysis.engine import gpu_usage
    from gpu_analysis.engine.inference import BUILTIN_MODEL, create_session

    model = BUILTIN_MODEL
    reasons = []
    runtime = None
    try:
        session, provider = onnxruntime_cuda(model)
        runtime = ("onnxruntime", provider, session_runner(session), None)
    except NoGpuUsed as exc:
        reasons.append(str(exc))
        try:
            _, run, difference = torch_cuda(model)
            runtime = ("torch", "torch CUDA", run, difference)
        except NoGpuUsed as exc2:
            reasons.append(str(exc2))
    if runtime is None:
        print(f"error: no GPU was used ({'; '.join(reasons)})")
        return 1
    name, provider, run, difference = runtime
    print(f"provider: {provider}", flush=True)

    cpu_session, cpu_provider = create_session(model, "cpu")
    _, c, h, w = cpu_session.get_inputs()[0].shape
    result: dict = {
        "model": "builtin (footnet-v1)",
        "input_wh": [w, h],
        "runtime": name,
        "provider": provider,
        "not_used": reasons,
        "torch_vs_onnx_max_heat_difference": difference,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load_average_1min": [round(os.getloadavg()[0], 2)],
    }
    with gpu_usage.measure() as usage:
        model_fps = {
            str(b): round(frames_per_s(run, (b, c, h, w), args.seconds), 1) for b in BATCH_SIZES
        }
    result["gpu"] = usage.device_name
    result["model_frames_per_s"] = model_fps
    result["model_gpu_usage"] = usage.metadata()
    cpu_fps = frames_per_s(session_runner(cpu_session), (1, c, h, w), args.seconds)
    result["baseline_cpu_frames_per_s_batch1"] = round(cpu_fps, 1)
    result["best_gpu_over_cpu"] = round(max(model_fps.values()) / cpu_fps, 1)

    with tempfile.TemporaryDirectory(prefix="gpu-speed-") as tmp:
        work = Path(tmp)
        shards_uri, result["clip"] = make_shards(work, args.clip_seconds, args.repeat)
        with gpu_usage.measure() as usage:
            if name == "onnxruntime":
                step = infer_step_onnxruntime(shards_uri, work / "detections-gpu", "cuda")
            else:
                step = infer_step_torch(shards_uri, run)
        step["gpu_usage"] = usage.metadata()
        baseline = infer_step_onnxruntime(shards_uri, work / "detections-cpu", "cpu")
    result["infer_step"] = step
    result["baseline_infer_step_cpu"] = baseline
    result["infer_step_gpu_over_cpu"] = round(
        step["step_frames_per_s"] / baseline["step_frames_per_s"], 2
    )
    result["load_average_1min"].append(round(os.getloadavg()[0], 2))

    # The figures above count only if the GPU runtime really ran on CUDA to the end.
    if name == "onnxruntime" and step["provider"] != "CUDAExecutionProvider":
        print(f"error: no GPU was used (the infer step ran on {step['provider']})")
        return 1
    if cpu_provider != "CPUExecutionProvider":
        print(f"error: the CPU baseline ran on {cpu_provider}")
        return 1
    print(json.dumps(result, indent=2))
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per model measurement")
    parser.add_argument("--clip-seconds", type=float, default=20.0, help="the rendered clip")
    parser.add_argument("--repeat", type=int, default=3, help="clip played this many times")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(main(parse_args()))
