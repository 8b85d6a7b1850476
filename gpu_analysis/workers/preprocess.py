"""GPU step 1 as a Pipes worker: decode a match video into frame shards (T4 preprocessing pool)."""

from __future__ import annotations

import sys

from dagster_pipes import PipesContext

from gpu_analysis.engine import gpu_usage, storage
from gpu_analysis.engine.records import PreprocessParams, as_plain
from gpu_analysis.workers.reporting import (
    params_from_extras,
    plain_metadata,
    progress_reporter,
    run_worker,
    scratch_output,
)


def preprocess(pipes: PipesContext) -> None:
    from gpu_analysis.engine import steps  # the engine loads OpenCV and ONNX Runtime

    params = params_from_extras(PreprocessParams, pipes.extras)
    with scratch_output(params.shards_uri) as partial_uri, gpu_usage.measure() as usage:
        summary = steps.preprocess(
            params.video_uri,
            partial_uri,
            sample_fps=params.sample_fps,
            model=params.model,
            batch_size=params.batch_size,
            input_size=params.input_size,
            stream=params.stream,
            progress=progress_reporter(pipes, "preprocess"),
        )
        storage.replace_prefix(partial_uri, params.shards_uri)
    sampled = summary.sampled_frames
    metadata = {
        **plain_metadata(as_plain(summary)),
        "frames": summary.video.frame_count,
        "input_size": "x".join(str(n) for n in summary.input_size),
        "sampled_frames_per_s": round(sampled / summary.decode_s, 2) if summary.decode_s else 0.0,
        "shards_uri": params.shards_uri,
        # Decoding runs on the CPU (OpenCV): the step's GPU, if any, is measured, not used.
        "device": "CPU",
        **usage.metadata(),  # only what NVML measured: no GPU, no keys
    }
    pipes.log.info(
        f"preprocess: {sampled} frames in {summary.shards} shards, {summary.shard_bytes} bytes"
    )
    for warning in summary.warnings:
        pipes.log.warning(f"preprocess: {warning}")
    pipes.report_asset_materialization(metadata=metadata)


if __name__ == "__main__":
    sys.exit(run_worker(preprocess))
