"""`process_match` with staging storage (S3 on a moto server) and local Pipes workers."""

from __future__ import annotations

import hashlib
import json

import dagster as dg
import numpy as np
import pytest

from gpu_analysis.profile import load_profile
from gpu_analysis.synthetic import generate_match_clip
from tests.match.conftest import BUCKET
from tests.match.sensor_ticks import SensorDriver
from video_assets.definitions import build_definitions


def keys(client, prefix: str) -> dict[str, int]:
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for item in page.get("Contents", []):
            found[item["Key"][len(prefix) :]] = item["Size"]
    return found


def test_match_from_s3_incoming_is_delivered_to_s3_results(
    s3_staging, instance, heatmap_model, tmp_path, monkeypatch: pytest.MonkeyPatch
):
    # Staging storage, but the GPU steps as local processes instead of pods.
    monkeypatch.setenv("GPU_ANALYSIS_EXECUTION", "subprocess")
    # Staging refuses inference on the CPU (device cuda); this machine has no GPU.
    monkeypatch.setenv("GPU_ANALYSIS_DEVICE", "auto")
    monkeypatch.setenv("GPU_ANALYSIS_DATA_ROOT", str(tmp_path / "scratch"))
    monkeypatch.setenv("GPU_ANALYSIS_MODEL", str(heatmap_model))
    monkeypatch.setenv("GPU_ANALYSIS_SAMPLE_FPS", "2")  # few shards: moto stores every byte
    clip = tmp_path / "clip" / "s3match.mp4"
    generate_match_clip(clip, seed=11, duration_s=3.0, fps=25.0, width=640, height=360)
    s3_staging.upload_file(str(clip), BUCKET, "incoming/s3match.mp4")
    s3_staging.upload_file(
        str(clip.with_name("s3match.calibration.json")),
        BUCKET,
        "incoming/s3match.calibration.json",
    )

    [request] = SensorDriver(instance).tick()
    job = build_definitions(load_profile()).resolve_job_def("process_match")
    result = job.execute_in_process(
        instance=instance, partition_key=request.partition_key, raise_on_error=False
    )
    assert result.success

    delivered = [k for k in keys(s3_staging, "results/s3match/") if "/" not in k]
    manifest = json.loads(
        s3_staging.get_object(Bucket=BUCKET, Key="results/s3match/manifest.json")["Body"].read()
    )
    assert {f["name"] for f in manifest["files"]} == set(delivered) - {"manifest.json"}
    for entry in manifest["files"]:
        # Readable at results/<match_id>/<file> and, whole, at the manifest's version path.
        for key in (f"results/s3match/{entry['name']}", f"results/s3match/{entry['path']}"):
            body = s3_staging.get_object(Bucket=BUCKET, Key=key)["Body"].read()
            assert hashlib.sha256(body).hexdigest() == entry["sha256"], key
            assert len(body) == entry["size_bytes"]
    grid_path = tmp_path / "map.npy"
    s3_staging.download_file(BUCKET, "results/s3match/temperature_map.npy", str(grid_path))
    grid = np.load(grid_path)
    assert grid.shape == (68, 105) and grid.sum() == pytest.approx(1.0, abs=1e-4)

    # Delivered: the run's working objects (its video snapshot, shards) are removed.
    assert keys(s3_staging, "work/s3match/") == {}
    # Nothing large stays on the orchestrator's local disk once the run is done.
    assert not [p for p in (tmp_path / "scratch").rglob("*") if p.is_file()]
    frames = [
        e.materialization
        for e in result.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey("match_frames")
    ]
    run_id = result.run_id
    assert frames[0].metadata["shards_uri"].value == f"s3://{BUCKET}/work/s3match/{run_id}/shards"
