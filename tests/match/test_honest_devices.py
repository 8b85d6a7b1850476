"""Devices through the real workers: staging refuses the CPU, local falls back, both say so."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from gpu_analysis.engine.records import InferParams, PreprocessParams
from gpu_analysis.profile import load_profile
from video_assets.resources import GpuWorkers

GPU_KEYS = {"gpu_utilisation_pct_mean", "gpu_utilisation_pct_max", "gpu_memory_peak_mib"}


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from gpu_analysis.synthetic import generate_match_clip

    video = tmp_path_factory.mktemp("clip") / "m1.mp4"
    generate_match_clip(video, seed=3, duration_s=1.0, fps=25.0, width=640, height=360)
    return video


def _frames_then_detections(profile_name: str, clip: Path, model: Path, out: Path):
    """The two GPU steps of a match, each through its real worker, as the profile runs them."""
    # Local processes instead of pods; everything else (the device above all) as the profile says.
    profile = load_profile(profile_name, env={"GPU_ANALYSIS_EXECUTION": "subprocess"})
    workers = GpuWorkers.from_profile(profile)
    shards_uri, detections_uri = str(out / "shards"), str(out / "detections")

    @dg.asset
    def frames(context) -> dg.MaterializeResult:
        params = PreprocessParams(str(clip), shards_uri, sample_fps=5.0, model=str(model))
        return workers.run(context, "preprocess", params)

    @dg.asset(deps=[frames], retry_policy=dg.RetryPolicy(max_retries=3))
    def detections(context) -> dg.MaterializeResult:
        params = InferParams(shards_uri, detections_uri, model=str(model), device=profile.device)
        return workers.run(context, "infer", params)

    return profile, [frames, detections]


def _metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    [event] = result.asset_materializations_for_node(asset)
    return {key: value.value for key, value in event.metadata.items()}


def test_staging_fails_the_infer_step_on_a_machine_without_cuda(
    instance, clip, heatmap_model, tmp_path
):
    profile, assets = _frames_then_detections("staging", clip, heatmap_model, tmp_path)
    assert profile.device == "cuda"
    result = dg.materialize(assets, instance=instance, raise_on_error=False)

    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert failure.step_key == "detections"
    # This machine (like CI's and the developers') has onnxruntime-gpu but no NVIDIA driver.
    assert failure.step_failure_data.user_failure_data.description == (
        "error: device cuda: no NVIDIA driver is loaded (/proc/driver/nvidia/version is "
        "absent); run the step on a GPU node whose image has the NVIDIA driver (the EKS "
        "accelerated AMI)"
    )
    retries = [
        e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY
    ]
    assert retries == []
    assert not (tmp_path / "detections").exists()
    assert _metadata(result, "frames")["device"] == "CPU"  # decoding never needed the GPU


def test_local_falls_back_to_the_cpu_and_reports_it_without_gpu_figures(
    instance, clip, heatmap_model, tmp_path
):
    profile, assets = _frames_then_detections("local", clip, heatmap_model, tmp_path)
    assert profile.device == "auto"
    result = dg.materialize(assets, instance=instance)

    frames, detections = _metadata(result, "frames"), _metadata(result, "detections")
    assert detections["device"] == "CPUExecutionProvider"
    assert frames["device"] == "CPU"
    # NVML finds no GPU here: no figures at all, rather than zeros.
    assert not GPU_KEYS & set(detections) and not GPU_KEYS & set(frames)
