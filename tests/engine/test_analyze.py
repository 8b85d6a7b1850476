"""`gpu-analysis analyze` end to end on a synthetic clip, and the step API's three steps."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from gpu_analysis.engine import steps, storage
from gpu_analysis.engine.errors import UserError
from gpu_analysis.engine.records import as_plain
from tests.engine.conftest import run_cli
from tests.engine.truth import TruthDetector

CONTRACT_FILES = {
    "temperature_map.npy",
    "temperature_map_team_0.npy",
    "temperature_map_team_1.npy",
    "temperature_map.png",
    "report.json",
}


def _smoothed_correlation(a: np.ndarray, b: np.ndarray, sigma_m: float = 2.0) -> float:
    a = gaussian_filter(a.astype(np.float64), sigma_m)
    b = gaussian_filter(b.astype(np.float64), sigma_m)
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def _truth_map(truth, players: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """Occupancy of some players over some frames, on the contract grid (rows Y, cols X)."""
    visible = truth.visible[np.ix_(frames, players)]
    pos = truth.positions_m[np.ix_(frames, players)][visible]
    grid = np.zeros((68, 105))
    np.add.at(
        grid, (np.clip(pos[:, 1].astype(int), 0, 67), np.clip(pos[:, 0].astype(int), 0, 104)), 1
    )
    return grid / grid.sum()


def test_exact_detections_give_the_true_maps(clip, tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = steps.analyze(
        clip.video,
        clip.calibration,
        out,
        sample_fps=5.0,
        detector=TruthDetector(clip.truth),
        live_half_life_s=1.0,
    )
    assert {p.name for p in out.iterdir()} >= CONTRACT_FILES
    overall = np.load(out / "temperature_map.npy")
    assert overall.dtype == np.float32 and overall.shape == (68, 105)
    assert abs(float(overall.sum()) - 1.0) < 1e-5

    # The truth's own occupancy covers every frame; ours the 5 fps samples of it.
    assert _smoothed_correlation(overall, clip.truth.occupancy_map(1.0)) >= 0.95

    frames = np.arange(0, clip.truth.frame_count, 5)
    team_maps = [np.load(out / f"temperature_map_team_{t}.npy") for t in (0, 1)]
    true_maps = [
        _truth_map(clip.truth, np.flatnonzero(clip.truth.team == t), frames) for t in (0, 1)
    ]
    straight = [_smoothed_correlation(team_maps[i], true_maps[i]) for i in (0, 1)]
    crossed = [_smoothed_correlation(team_maps[i], true_maps[1 - i]) for i in (0, 1)]
    best = straight if sum(straight) >= sum(crossed) else crossed
    assert min(best) >= 0.9, (straight, crossed)
    assert report["sampled_frames"] == len(frames)
    assert report["detections_total"] == int(clip.truth.visible[frames].sum())

    # The live map remembers the last seconds far better than the first ones.
    live = np.load(out / "temperature_map_live.npy")
    assert abs(float(live.sum()) - 1.0) < 1e-5
    everyone = np.arange(len(clip.truth.team))
    last = _smoothed_correlation(live, _truth_map(clip.truth, everyone, frames[-10:]))
    first = _smoothed_correlation(live, _truth_map(clip.truth, everyone, frames[:10]))
    assert last > 0.9 and last > first + 0.2, (last, first)


def test_cli_writes_every_contract_output(clip, models, tmp_path: Path) -> None:
    out = tmp_path / "new" / "dir"
    result = run_cli(
        "analyze", clip.video, "--calibration", clip.calibration, "--out", out,
        "--model", models["kit"], "--sample-fps", "5",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert {p.name for p in out.iterdir()} >= CONTRACT_FILES
    report = json.loads((out / "report.json").read_text())
    # stderr holds nothing but the report's warnings (this stand-in model also finds pitch
    # lines and the crowd), one `warning:` line each.
    assert result.stderr.splitlines() == [f"warning: {w}" for w in report["warnings"]]
    video = report["video"]
    assert (video["width"], video["height"], video["fps"], video["frame_count"]) == (
        1280,
        720,
        25.0,
        150,
    )
    assert video["codec"] == "h264" and video["duration_s"] == 6.0
    assert report["sampled_frames"] == 30
    assert report["detections_total"] > 0
    assert report["model"]["execution_provider"] == "CPUExecutionProvider"
    assert report["model"]["format"] == "heatmap" and report["model"]["input_size"] == [640, 384]
    for key in ("decode_s", "infer_s", "total_s", "frames_per_s"):
        assert report["timings"][key] > 0
    assert set(report["zones"]["thirds"]) == {"defensive", "middle", "attacking"}
    assert abs(sum(report["zones"]["thirds"].values()) - 1.0) < 1e-4
    assert {"team_0", "team_1"} <= set(report["teams"])
    for name in ("temperature_map.png", "temperature_map_team_0.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("temperature_map.npy", "temperature_map_team_0.npy", "temperature_map_team_1.npy"):
        m = np.load(out / name)
        assert m.shape == (68, 105) and m.min() >= 0 and abs(float(m.sum()) - 1) < 1e-5
    provider_lines = [line for line in result.stdout.splitlines() if "ExecutionProvider" in line]
    assert (
        provider_lines[0] == "onnxruntime: heatmap model kit.onnx (640x384) on CPUExecutionProvider"
    )


def test_cli_with_the_builtin_model_finds_the_true_maps(clip, tmp_path: Path) -> None:
    """The whole product: the built-in model through the command, against the truth.

    Lower bars than with exact detections. Before its fine-tune on pitch-marking hard negatives
    footnet-v1 took a corner arc for a player in every frame of this clip (0.91 overall, 0.85
    for that team); fine-tuned it measures 0.99 overall and 0.98 and 1.00 for the teams.
    """
    out = tmp_path / "out"
    result = run_cli("analyze", clip.video, "--calibration", clip.calibration, "--out", out)
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["name"] == "builtin" and report["model"]["input_size"] == [768, 432]
    frames = np.arange(0, clip.truth.frame_count, 5)
    overall = np.load(out / "temperature_map.npy")
    assert _smoothed_correlation(overall, clip.truth.occupancy_map(1.0)) >= 0.95
    team_maps = [np.load(out / f"temperature_map_team_{t}.npy") for t in (0, 1)]
    true_maps = [
        _truth_map(clip.truth, np.flatnonzero(clip.truth.team == t), frames) for t in (0, 1)
    ]
    straight = [_smoothed_correlation(team_maps[i], true_maps[i]) for i in (0, 1)]
    crossed = [_smoothed_correlation(team_maps[i], true_maps[1 - i]) for i in (0, 1)]
    assert min(max(straight, crossed, key=sum)) >= 0.9, (straight, crossed)
    # Most visible players are found, few phantoms.
    visible = int(clip.truth.visible[frames].sum())
    assert 0.85 * visible <= report["detections_on_pitch"] <= 1.1 * visible


def test_missing_builtin_model_is_a_clear_error(clip, tmp_path: Path, monkeypatch) -> None:
    from gpu_analysis.engine import inference

    monkeypatch.setattr(inference, "BUILTIN_MODEL", tmp_path / "models" / "builtin.onnx")
    with pytest.raises(UserError, match="the built-in model is not installed"):
        steps.analyze(clip.video, clip.calibration, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_split_steps_run_and_rerun_exactly(clip, models, tmp_path: Path) -> None:
    """preprocess -> shards -> infer -> detections -> aggregate delivers the maps, and a re-run
    of a step reproduces its outputs exactly. Their agreement with analyze's maps through the
    lossy shards is in test_shards.py, with the built-in model: this crude kit-colour model's
    thresholds flip on codec noise (overall map correlation 0.58 with analyze's)."""
    model = str(models["kit"])
    pre = steps.preprocess(str(clip.video), str(tmp_path / "shards"), model=model, batch_size=8)
    assert pre.sampled_frames == 30 and pre.shards == 4 and pre.frames_lost == 0
    # JPEG shards, not raw frames (the 10x goal is tested with the built-in model in test_shards)
    assert pre.bytes_per_frame * 5 <= 640 * 384 * 3
    assert as_plain(pre)["input_size"] == [640, 384]
    inf = steps.infer(
        str(tmp_path / "shards"),
        str(tmp_path / "det"),
        model=model,
        calibration_path=clip.calibration,
    )
    assert inf.detections_total > 0 and inf.execution_provider == "CPUExecutionProvider"
    first = (tmp_path / "det" / "detections.npz").read_bytes()
    steps.infer(
        str(tmp_path / "shards"),
        str(tmp_path / "det"),
        model=model,
        calibration_path=clip.calibration,
    )
    assert (tmp_path / "det" / "detections.npz").read_bytes() == first

    facts = steps.probe(clip.video)
    report = steps.aggregate(
        str(tmp_path / "det"), clip.calibration, tmp_path / "agg", video_facts=facts
    )
    for name in ("temperature_map.npy", "temperature_map_team_0.npy", "temperature_map_team_1.npy"):
        delivered = np.load(tmp_path / "agg" / name)
        assert delivered.shape == (68, 105) and abs(float(delivered.sum()) - 1.0) < 1e-5
    assert report["detections_total"] == inf.detections_total
    assert report["timings"]["decode_s"] > 0 and report["timings"]["infer_s"] > 0


def test_steps_read_and_write_s3(clip, models, moto_s3: str, tmp_path: Path, monkeypatch) -> None:
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_s3)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    # Local copies of s3:// inputs go to the temp folder: it must be empty again afterwards.
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="engine", CreateBucketConfiguration={"LocationConstraint": "eu-west-3"})
    s3.upload_file(str(clip.video), "engine", "incoming/m1.mp4")
    s3.upload_file(str(clip.calibration), "engine", "incoming/m1.calibration.json")
    model = str(models["kit"])

    pre = steps.preprocess("s3://engine/incoming/m1.mp4", "s3://engine/work/m1/frames", model=model)
    assert pre.video.path == "s3://engine/incoming/m1.mp4"
    steps.infer("s3://engine/work/m1/frames", "s3://engine/work/m1/det", model=model)
    report = steps.aggregate(
        "s3://engine/work/m1/det",
        "s3://engine/incoming/m1.calibration.json",
        "s3://engine/results/m1",
        video_facts=pre.video,
    )
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="engine", Prefix="results/m1/")["Contents"]}
    assert {f"results/m1/{name}" for name in CONTRACT_FILES} <= keys
    assert report["sampled_frames"] == 30
    with pytest.raises(UserError, match="no such object"):
        steps.preprocess("s3://engine/incoming/m2.mp4", "s3://engine/work/m2/frames", model=model)
    with storage.local_copy("s3://engine/incoming/m1.calibration.json") as calibration:
        assert Path(calibration).read_bytes() == clip.calibration.read_bytes()
    assert list(scratch.iterdir()) == []  # no downloaded copies, no empty file from m2


def test_outputs_join_an_existing_folder_without_touching_its_files(clip, models, tmp_path):
    out = tmp_path / "DIR"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    steps.analyze(clip.video, clip.calibration, out, model=str(models["kit"]), sample_fps=1.0)
    names = {p.name for p in out.iterdir()}
    assert names >= CONTRACT_FILES | {"notes.txt"}
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["DIR"]  # no staging folder left


def test_infer_refuses_shards_that_were_not_finished(models, tmp_path):
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "shard-000000.npz").write_bytes(b"half written")
    with pytest.raises(UserError, match="did not finish"):
        steps.infer(str(tmp_path / "shards"), str(tmp_path / "det"), model=str(models["kit"]))
