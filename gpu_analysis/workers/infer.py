"""GPU step 2 as a Pipes worker: the heat-map model over every shard (A10G inference pool)."""

from __future__ import annotations

import sys

from dagster_pipes import open_dagster_pipes

from gpu_analysis.workers import objects
from gpu_analysis.workers.reporting import local_input, progress_reporter, scratch_prefix


def main() -> int:
    with open_dagster_pipes() as pipes:
        from gpu_analysis import steps  # the engine loads OpenCV and ONNX Runtime

        extras = pipes.extras
        detections_uri = extras["detections_uri"]
        partial_uri = scratch_prefix(detections_uri)
        objects.remove_prefix(partial_uri)
        summary = steps.infer(
            extras["shards_uri"],
            partial_uri,
            model=extras["model"],
            device=extras["device"],
            calibration_path=local_input(extras.get("calibration_uri")),
            progress=progress_reporter(pipes, "infer"),
        )
        objects.replace_prefix(partial_uri, detections_uri)
        facts = summary.as_dict()
        model = facts.get("model") or {}
        metadata = {
            **{key: value for key, value in facts.items() if _plain(value)},
            "model": str(model.get("name", extras["model"])),
            "input_size": "x".join(str(n) for n in model.get("input_size", [])),
            "detections_uri": detections_uri,
        }
        pipes.log.info(
            f"infer: {facts.get('detections_total')} detections on "
            f"{facts.get('execution_provider')} at {facts.get('frames_per_s')} frames/s"
        )
        pipes.report_asset_materialization(metadata=metadata)
    return 0


def _plain(value: object) -> bool:
    return isinstance(value, str | int | float | bool)


if __name__ == "__main__":
    sys.exit(main())
