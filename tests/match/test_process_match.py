"""`process_match` end to end on the local profile: a real instance, Pipes subprocess workers."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from gpu_analysis.profile import load_profile
from gpu_analysis.synthetic import generate_match_clip
from tests.conftest import REPO_ROOT
from tests.match.sensor_ticks import SensorDriver
from video_assets.definitions import build_definitions
from video_assets.resources import GpuWorkers

MAP_FILES = ["temperature_map.npy", "temperature_map_team_0.npy", "temperature_map_team_1.npy"]
CONTRACT_FILES = {*MAP_FILES, "temperature_map.png", "report.json"}
REPORT_KEYS = {
    "video",
    "sampled_frames",
    "detections_total",
    "players_per_frame_mean",
    "zones",
    "teams",
    "model",
    "timings",
}


class Pipeline:
    """One data root and one Dagster instance shared by the runs of this module."""

    def __init__(self, root: Path, clip: Path, model: Path):
        self.root = root
        self.clip = clip
        self.model = model
        home = root / "dagster_home"
        home.mkdir()
        shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
        self.instance = dg.DagsterInstance.from_config(str(home))
        self.results: dict[str, dg.ExecuteInProcessResult] = {}

    def drop(self, match_id: str, video_bytes: bytes | None = None) -> None:
        incoming = self.root / "data" / "incoming"
        incoming.mkdir(parents=True, exist_ok=True)
        video = incoming / f"{match_id}.mp4"
        if video_bytes is None:
            shutil.copy(self.clip, video)
        else:
            video.write_bytes(video_bytes)
        shutil.copy(
            self.clip.with_name(self.clip.stem + ".calibration.json"),
            incoming / f"{match_id}.calibration.json",
        )

    def run(self, match_id: str, *, via_sensor: bool = True) -> dg.ExecuteInProcessResult:
        """A sensor tick's run request for the match, then that run, as the daemon would; or,
        `via_sensor=False`, the partition's run as the UI launches it (no sensor tags)."""
        tags: dict[str, str] = {}
        if via_sensor:
            # Settle time 0 (local_env): the first tick takes a whole file.
            requests = SensorDriver(self.instance).tick()
            [request] = [r for r in requests if r.partition_key == match_id]
            tags = {**request.tags, "dagster/run_key": request.run_key}
        else:
            self.instance.add_dynamic_partitions("matches", [match_id])
        job = build_definitions(load_profile()).resolve_job_def("process_match")
        result = job.execute_in_process(
            instance=self.instance,
            partition_key=match_id,
            tags=tags,
            raise_on_error=False,
        )
        self.results[match_id] = result
        return result

    def delivery(self, match_id: str) -> Path:
        return self.root / "data" / "results" / match_id

    def work(self, match_id: str) -> Path:
        return self.root / "data" / "work" / match_id


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, heatmap_model) -> Pipeline:
    clip_dir = tmp_path_factory.mktemp("clip")
    clip = clip_dir / "sample.mp4"
    generate_match_clip(clip, seed=7, duration_s=6.0, fps=25.0, width=640, height=360)
    shared = Pipeline(tmp_path_factory.mktemp("pipeline"), clip, heatmap_model)
    yield shared
    shared.instance.dispose()


@pytest.fixture
def local_env(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> Pipeline:
    monkeypatch.setenv("GPU_ANALYSIS_DATA_ROOT", str(pipeline.root / "data"))
    monkeypatch.setenv("GPU_ANALYSIS_MODEL", str(pipeline.model))
    monkeypatch.setenv("GPU_ANALYSIS_SAMPLE_FPS", "5")
    # Files are copied in whole before the sensor looks: nothing to wait for.
    monkeypatch.setenv("GPU_ANALYSIS_INCOMING_SETTLE_S", "0")
    return pipeline


def clean_run(pipeline: Pipeline) -> dg.ExecuteInProcessResult:
    if "clean" not in pipeline.results:
        pipeline.drop("clean")
        pipeline.run("clean")
    return pipeline.results["clean"]


def materialization(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key.path == [asset]]
    return event.materialization.metadata


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_whole_partition_is_delivered_as_the_contract_says(local_env):
    result = clean_run(local_env)
    assert result.success
    out = local_env.delivery("clean")
    delivered = {p.name for p in out.iterdir() if p.is_file()}  # the files readers open
    assert delivered >= CONTRACT_FILES

    for name in MAP_FILES:
        grid = np.load(out / name)
        assert grid.dtype == np.float32 and grid.shape == (68, 105), name
        assert (grid >= 0).all() and grid.sum() == pytest.approx(1.0, abs=1e-4), name
    report = json.loads((out / "report.json").read_text())
    assert set(report) >= REPORT_KEYS
    assert delivered == {*report["files"], "manifest.json"}  # everything the engine wrote
    assert report["detections_total"] > 0
    assert (out / "temperature_map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["match_id"] == "clean"
    listed = {f["name"]: f for f in manifest["files"]}
    assert set(listed) == delivered - {"manifest.json"}
    for name, entry in listed.items():
        assert entry["size_bytes"] == (out / name).stat().st_size
        assert entry["sha256"] == sha256(out / name)
    manifest_written_ns = (out / "manifest.json").stat().st_mtime_ns
    assert all(manifest_written_ns >= (out / n).stat().st_mtime_ns for n in listed)


def test_each_materialization_carries_ui_metadata(local_env):
    result = clean_run(local_env)
    video = materialization(result, "match_video")
    assert video["resolution"].value == "640x360"
    assert video["frames"].value == 150
    assert len(video["sha256"].value) == 64
    # These come from the worker processes, reported back through Dagster Pipes.
    frames = materialization(result, "match_frames")
    assert frames["sampled_frames"].value == 30
    assert frames["shard_bytes"].value > 0
    # Shard bytes per sampled frame, as stored (JPEG): well under the raw 320x192x3 frame.
    assert 0 < frames["bytes_per_frame"].value < 320 * 192 * 3 / 5
    assert frames["bytes_per_frame"].value == pytest.approx(
        frames["shard_bytes"].value / 30, abs=0.1
    )
    detections = materialization(result, "match_detections")
    assert detections["detections_total"].value > 0
    assert detections["execution_provider"].value in {
        "CPUExecutionProvider",
        "CUDAExecutionProvider",
    }
    assert detections["frames_per_s"].value > 0
    maps = materialization(result, "match_temperature_map")
    # What report.json warns about (this stand-in model also finds pitch lines) is shown where
    # the analyst looks first, with the team split's reliability and the officials' count.
    report = maps["report"].value
    assert maps["warning_count"].value == len(report["warnings"])
    assert all(w in maps["warnings"].value for w in report["warnings"])
    assert maps["teams_reliable"].value == report["teams"]["split_reliable"]
    assert maps["officials_per_frame_mean"].value == report["officials"]["per_frame_mean"]
    # The calibration's pitch lines over the reference frame, to catch a wrong calibration.
    assert maps["calibration_preview"].value.startswith("![calibration preview](data:image/png")
    preview = maps["temperature_map"].value
    match = re.fullmatch(
        r"!\[temperature map\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", preview
    )
    assert match, preview[:80]
    png = base64.b64decode(match.group(1))
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) < 200_000
    logs = [
        e.message
        for e in local_env.instance.all_logs(result.run_id)
        if e.user_message and "preprocess:" in e.user_message
    ]
    assert logs, "no progress line from the preprocess worker came back through Pipes"


def test_killed_worker_is_retried_and_gives_identical_outputs(local_env, monkeypatch, tmp_path):
    clean = clean_run(local_env)
    assert clean.success
    marker = tmp_path / "killed-once"
    real_command = GpuWorkers.command

    def kill_once_command(self, step):
        if step != "preprocess":
            return real_command(self, step)
        return [sys.executable, "-m", "tests.match.kill_once_worker", step, str(marker)]

    monkeypatch.setattr(GpuWorkers, "command", kill_once_command)
    local_env.drop("killed")
    result = local_env.run("killed")

    assert marker.exists(), "the preprocess worker was never killed"
    assert result.success
    retries = [
        e
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY and e.step_key == "match_frames"
    ]
    assert len(retries) == 1
    for name in [*MAP_FILES, "temperature_map.png"]:
        assert sha256(local_env.delivery("killed") / name) == sha256(
            local_env.delivery("clean") / name
        ), name
    frames = [materialization(r, "match_frames") for r in (clean, result)]
    assert frames[0]["shard_bytes"].value == frames[1]["shard_bytes"].value > 0
    # Delivered: the run's working files (shards, the killed attempt's partial ones) are gone.
    assert list(local_env.work("killed").rglob("*")) == []


def test_corrupt_video_fails_with_the_engine_error_and_no_delivery(local_env):
    local_env.drop("corrupt", video_bytes=b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 500)
    # The sensor never submits a file that is not a whole MP4 (test_sensor_local); a run
    # launched by hand reads it all the same, and match_video must turn it away.
    assert not [r for r in SensorDriver(local_env.instance).tick() if r.partition_key == "corrupt"]
    result = local_env.run("corrupt", via_sensor=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert failure.step_key == "match_video"
    message = failure.step_failure_data.user_failure_data.description
    assert message.startswith("error: ") and "corrupt.mp4" in message
    assert "\n" not in message
    assert not local_env.delivery("corrupt").exists()
    retried = [
        e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY
    ]
    assert retried == []


def test_gpu_step_waits_for_a_free_slot_in_its_pool(local_env):
    """Another run holds the only gpu-t4 slot: this run's preprocessing waits, then goes."""
    storage = local_env.instance.event_log_storage
    storage.set_concurrency_slots("gpu-t4", 1)
    claim = storage.claim_concurrency_slot("gpu-t4", "another-run", "match_frames")
    assert claim.is_claimed
    local_env.drop("queued")
    outcome: dict[str, dg.ExecuteInProcessResult] = {}
    worker = threading.Thread(target=lambda: outcome.update(result=local_env.run("queued")))
    worker.start()
    try:
        deadline = time.monotonic() + 60
        while not _asset_done(local_env.instance, "match_video", "queued"):
            assert time.monotonic() < deadline, "match_video never finished"
            time.sleep(0.5)
        time.sleep(3)
        assert worker.is_alive()
        assert not _asset_done(local_env.instance, "match_frames", "queued")
    finally:
        storage.free_concurrency_slots_for_run("another-run")
        worker.join(timeout=120)
    assert outcome["result"].success


def _asset_done(instance: dg.DagsterInstance, asset: str, partition: str) -> bool:
    record = instance.get_latest_materialization_event(dg.AssetKey(asset))
    return record is not None and record.dagster_event.partition == partition
