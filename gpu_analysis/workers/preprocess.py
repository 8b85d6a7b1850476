"""GPU step 1 as a Pipes worker: decode a match video into frame shards (T4 preprocessing pool)."""

from __future__ import annotations

import sys

from dagster_pipes import PipesContext

from gpu_analysis import storage
from gpu_analysis.workers.reporting import (
    plain_metadata,
    progress_reporter,
    run_worker,
    scratch_prefix,
)


def preprocess(pipes: PipesContext) -> None:
    from gpu_analysis import steps  # the engine loads OpenCV and ONNX Runtime

    extras = pipes.extras
    shards_uri = extras["shards_uri"]
    partial_uri = scratch_prefix(shards_uri)
    # A killed attempt may have left part of its shards here; start from nothing.
    storage.remove_prefix(partial_uri)
    summary = steps.preprocess(
        extras["video_uri"],
        partial_uri,
        sample_fps=float(extras["sample_fps"]),
        model=extras["model"],
        batch_size=int(extras["batch_size"]),
        progress=progress_reporter(pipes, "preprocess"),
    )
    storage.replace_prefix(partial_uri, shards_uri)
    facts = summary.as_dict()
    decode_s = float(facts.get("decode_s") or 0.0)
    sampled = int(facts.get("sampled_frames", 0))
    metadata = {
        **plain_metadata(facts),
        "frames": int(facts["video"]["frame_count"]),
        "input_size": "x".join(str(n) for n in facts["input_size"]),
        "sampled_frames_per_s": round(sampled / decode_s, 2) if decode_s > 0 else 0.0,
        "shards_uri": shards_uri,
    }
    pipes.log.info(
        f"preprocess: {sampled} frames in {facts['shards']} shards, {facts['shard_bytes']} bytes"
    )
    pipes.report_asset_materialization(metadata=metadata)


if __name__ == "__main__":
    sys.exit(run_worker(preprocess))
