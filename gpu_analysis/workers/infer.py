"""GPU step 2 as a Pipes worker: the heat-map model over every shard (A10G inference pool)."""

from __future__ import annotations

import sys

from dagster_pipes import PipesContext

from gpu_analysis import storage
from gpu_analysis.workers.reporting import (
    local_input,
    plain_metadata,
    progress_reporter,
    run_worker,
    scratch_prefix,
)


def infer(pipes: PipesContext) -> None:
    from gpu_analysis import steps  # the engine loads OpenCV and ONNX Runtime

    extras = pipes.extras
    detections_uri = extras["detections_uri"]
    partial_uri = scratch_prefix(detections_uri)
    storage.remove_prefix(partial_uri)
    with local_input(extras.get("calibration_uri")) as calibration_path:
        summary = steps.infer(
            extras["shards_uri"],
            partial_uri,
            model=extras["model"],
            device=extras["device"],
            calibration_path=calibration_path,
            progress=progress_reporter(pipes, "infer"),
        )
    storage.replace_prefix(partial_uri, detections_uri)
    facts = summary.as_dict()
    model = facts.get("model") or {}
    metadata = {
        **plain_metadata(facts),
        "model": str(model.get("name", extras["model"])),
        "input_size": "x".join(str(n) for n in model.get("input_size", [])),
        "detections_uri": detections_uri,
    }
    pipes.log.info(
        f"infer: {facts['detections_total']} detections on "
        f"{facts['execution_provider']} at {facts['frames_per_s']} frames/s"
    )
    pipes.report_asset_materialization(metadata=metadata)


if __name__ == "__main__":
    sys.exit(run_worker(infer))
