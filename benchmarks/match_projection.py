"""Time and cost of a 90-minute match on the seed's cluster, from per-frame costs measured here.

Runs the three split steps (`preprocess`, `infer`, `aggregate`) of the engine on the cached
1080p benchmark clip on this machine's CPU, takes their seconds per video second and per
sampled frame and the shard bytes per frame, and scales them to a 90-minute 1080p match:
decode on the T4 pools, inference on the A10G pools, shards moved through S3 at an assumed
throughput, priced by `video_assets/match_cost.py`, with the parallelism the staging profile's
Dagster pools and the NodePool limits allow. Prints the Markdown for docs/benchmarks.md.

    .venv/bin/python benchmarks/match_projection.py
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.engine_clips import match_clip  # noqa: E402
from gpu_analysis.engine import steps  # noqa: E402
from gpu_analysis.engine.inference import resolve_model  # noqa: E402
from gpu_analysis.profile import load_profile  # noqa: E402
from infra_assets.cost import instance_vcpus  # noqa: E402
from infra_assets.spec.kubernetes import default_nodepools  # noqa: E402
from video_assets.match_cost import price_steps, profile_pool_prices  # noqa: E402
from video_assets.pod_specs import RUN_POD_CPU, run_pod_k8s_config  # noqa: E402

MATCH_S = 90 * 60.0
# A 90-minute 1080p broadcast file, as docs/benchmarks.md ("Incoming uploads") assumes.
MATCH_VIDEO_BYTES = 3e9
# One S3 stream from one instance: AWS's S3 performance guidelines give about 85-90 MB/s per
# request stream; not measured here (no AWS from this machine).
S3_MB_PER_S = 85.0
SHA256_MB_PER_S = 1163.0  # measured by benchmarks/incoming_checks.py


def _measure(model: str) -> dict[str, float]:
    video, calibration = match_clip(1920, 1080, 20.0)
    facts = steps.probe(video)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        pre = steps.preprocess(str(video), f"{tmp}/shards", model=model)
        preprocess_s = time.perf_counter() - started
        started = time.perf_counter()
        inf = steps.infer(f"{tmp}/shards", f"{tmp}/detections", model=model, device="cpu")
        infer_s = time.perf_counter() - started
        started = time.perf_counter()
        steps.aggregate(f"{tmp}/detections", calibration, f"{tmp}/maps", video_facts=facts)
        aggregate_s = time.perf_counter() - started
    return {
        "video_s": facts.duration_s,
        "fps": facts.fps,
        "sampled_frames": pre.sampled_frames,
        "sample_fps": pre.sample_fps,
        "preprocess_s_per_video_s": preprocess_s / facts.duration_s,
        "infer_s_per_frame": infer_s / pre.sampled_frames,
        "aggregate_s_per_frame": aggregate_s / pre.sampled_frames,
        "bytes_per_frame": pre.bytes_per_frame,
        "provider": inf.execution_provider,
    }


def _pool_nodes(role: str) -> int:
    """GPU nodes the role's NodePools may hold: each pool's CPU limit over its cheapest
    instance's vCPUs (a GPU step holds one whole node), summed over the spot/on-demand split."""
    from infra_assets.cost import instance_hourly_usd

    nodes = 0
    for pool in default_nodepools():
        if pool.role == role:
            instance = min(pool.instance_types, key=instance_hourly_usd)
            nodes += int(pool.limit_cpu) // instance_vcpus(instance)
    return nodes


def _run_pods(role: str) -> int:
    """Run pods (one per match) the coordination pools' CPU and memory limits hold."""
    requests = run_pod_k8s_config(load_profile("staging"))["container_config"]["resources"]
    cpu = float(requests["requests"]["cpu"])
    memory_gi = float(requests["requests"]["memory"].removesuffix("Gi"))
    total = 0
    for pool in default_nodepools():
        if pool.role == role:
            total += min(
                int(float(pool.limit_cpu) // cpu),
                int(float(pool.limit_memory.removesuffix("Gi")) // memory_gi),
            )
    return total


def main() -> int:
    load = os.getloadavg()[0]
    model = str(resolve_model("builtin"))
    m = _measure(model)
    profile = load_profile("staging")
    frames = MATCH_S * m["sample_fps"]
    shard_gb = frames * m["bytes_per_frame"] / 1e9
    transfer_s = frames * m["bytes_per_frame"] / (S3_MB_PER_S * 1e6)
    video_download_s = MATCH_VIDEO_BYTES / (S3_MB_PER_S * 1e6)
    seconds = {
        # Copy to the run folder (server-side on S3), then read once for probe and sha256.
        "match_video": video_download_s + MATCH_VIDEO_BYTES / (SHA256_MB_PER_S * 1e6),
        # The worker reads the video, decodes on the node's CPU, writes the shards to S3.
        "match_frames": video_download_s + m["preprocess_s_per_video_s"] * MATCH_S + transfer_s,
        # Reads the shards back, runs the model.
        "match_detections": transfer_s + m["infer_s_per_frame"] * frames,
        "match_temperature_map": m["aggregate_s_per_frame"] * frames,
        "match_delivery": 1.0,  # a few MB of maps and PNGs: about a second, not measured
    }
    roles = {
        "match_frames": profile.nodepool_gpu_preprocessing,
        "match_detections": profile.nodepool_gpu_inference,
    }
    roles = {step: roles.get(step, profile.nodepool_cpu) for step in seconds}
    cost = price_steps(seconds, roles, profile_pool_prices(profile, float(RUN_POD_CPU)))
    match_s = sum(seconds.values())

    t4_nodes = _pool_nodes(profile.nodepool_gpu_preprocessing)
    a10g_nodes = _pool_nodes(profile.nodepool_gpu_inference)
    run_pods = _run_pods(profile.nodepool_cpu)
    by_profile = min(profile.gpu_t4_pool_limit, profile.gpu_a10g_pool_limit, run_pods)
    by_nodepools = min(t4_nodes, a10g_nodes, run_pods)
    # Steady state: each GPU pool's slots turn over once per step; the slower pool sets the pace.
    per_hour = min(
        profile.gpu_t4_pool_limit * 3600 / seconds["match_frames"],
        profile.gpu_a10g_pool_limit * 3600 / seconds["match_detections"],
    )

    print(
        f"measured on this CPU (load average {load:.1f} -> {os.getloadavg()[0]:.1f}): "
        f"{m['video_s']:.0f} s 1080p clip, {m['sampled_frames']} frames at {m['sample_fps']:g} fps,"
        f" model on {m['provider']}"
    )
    print(
        f"- preprocess {m['preprocess_s_per_video_s']:.3f} s per video second; "
        f"infer {m['infer_s_per_frame'] * 1000:.1f} ms a frame; "
        f"aggregate {m['aggregate_s_per_frame'] * 1000:.2f} ms a frame; "
        f"shards {m['bytes_per_frame']:,.0f} bytes a frame"
    )
    print(
        f"- 90-minute match: {frames:,.0f} sampled frames, {shard_gb:.1f} GB of shards, "
        f"{transfer_s:.0f} s each way at {S3_MB_PER_S:g} MB/s; video "
        f"{MATCH_VIDEO_BYTES / 1e9:g} GB, {video_download_s:.0f} s to read"
    )
    print()
    print("| step | pool | wall (projected) | est. $ |")
    print("|---|---|---:|---:|")
    for step in cost.steps:
        print(
            f"| {step.step} | {step.price.role} ({step.price.instance_type}) "
            f"| {step.wall_s / 60:.1f} min | {step.cost_usd:.4f} |"
        )
    print(
        f"| **one match, alone** | | **{match_s / 60:.1f} min** "
        f"({match_s / MATCH_S:.2f}x the match) | **{cost.cost_usd:.3f}** |"
    )
    print()
    print(
        f"matches in parallel: {by_profile} with the staging profile's pools "
        f"(gpu_t4_pool_limit {profile.gpu_t4_pool_limit}, gpu_a10g_pool_limit "
        f"{profile.gpu_a10g_pool_limit}); {by_nodepools} if those are raised to the NodePool "
        f"limits ({t4_nodes} T4 nodes, {a10g_nodes} A10G nodes, {run_pods} run pods)"
    )
    print(
        f"throughput at the profile's pools: {per_hour:.1f} matches an hour "
        f"({math.floor(per_hour * 24)} a day), ${cost.cost_usd * per_hour:.2f} an hour of GPU "
        "and run-pod time"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
