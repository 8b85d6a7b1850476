"""GPU step 2 as a Pipes worker: the heat-map model over every shard (A10G inference pool)."""

from __future__ import annotations

import sys

from dagster_pipes import PipesContext

from gpu_analysis.engine import gpu_usage, storage
from gpu_analysis.engine.records import InferParams, as_plain
from gpu_analysis.workers.reporting import (
    params_from_extras,
    plain_metadata,
    progress_reporter,
    run_worker,
    scratch_output,
)


def infer(pipes: PipesContext) -> None:
    from gpu_analysis.engine import steps  # the engine loads OpenCV and ONNX Runtime

    params = params_from_extras(InferParams, pipes.extras)
    with (
        scratch_output(params.detections_uri) as partial_uri,
        storage.local_copy(params.calibration_uri) as calibration_path,
        gpu_usage.measure() as usage,
    ):
        summary = steps.infer(
            params.shards_uri,
            partial_uri,
            model=params.model,
            device=params.device,
            classes=params.classes,
            input_size=params.input_size,
            calibration_path=calibration_path,
            progress=progress_reporter(pipes, "infer"),
        )
        storage.replace_prefix(partial_uri, params.detections_uri)
    model = summary.model
    metadata = {
        **plain_metadata(as_plain(summary)),
        "model": str(model.get("name", params.model)),
        "input_size": "x".join(str(n) for n in model.get("input_size", [])),
        "detections_uri": params.detections_uri,
        "device": gpu_usage.device_label(summary.execution_provider, usage.device_name),
        **usage.metadata(),  # only what NVML measured: no GPU, no keys
    }
    pipes.log.info(
        f"infer: {summary.detections_total} detections on "
        f"{summary.execution_provider} at {summary.frames_per_s} frames/s"
    )
    pipes.report_asset_materialization(metadata=metadata)


if __name__ == "__main__":
    sys.exit(run_worker(infer))
