"""`make demo`'s program as a subprocess: sample match in, delivered temperature map out."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.conftest import REPO_ROOT, subprocess_env


def test_demo_runs_sensor_and_job_and_prints_where_results_are(tmp_path, heatmap_model):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    data_root = tmp_path / "data"
    result = subprocess.run(
        [sys.executable, "-m", "video_assets.demo", "--duration-s", "3"],
        cwd=REPO_ROOT,
        env=subprocess_env(
            DAGSTER_HOME=str(home),
            GPU_ANALYSIS_DATA_ROOT=str(data_root),
            GPU_ANALYSIS_MODEL=str(heatmap_model),
        ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "tick 1: run requested" in result.stdout  # moved in whole: no settle time
    png = re.search(r"temperature map: (\S+)", result.stdout).group(1)
    report = re.search(r"report: +(\S+)", result.stdout).group(1)
    delivery = data_root / "results" / "demo-match"
    assert Path(png) == delivery / "temperature_map.png" and Path(png).is_file()
    assert json.loads(Path(report).read_text())["sampled_frames"] == 15
    assert np.load(delivery / "temperature_map.npy").shape == (68, 105)
    assert (delivery / "manifest.json").is_file()
    assert "PreviewWarning" not in result.stderr


def test_demo_without_dagster_home_stops_with_one_line(tmp_path, heatmap_model):
    env = subprocess_env(
        GPU_ANALYSIS_DATA_ROOT=str(tmp_path), GPU_ANALYSIS_MODEL=str(heatmap_model)
    )
    env.pop("DAGSTER_HOME", None)
    result = subprocess.run(
        [sys.executable, "-m", "video_assets.demo"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: DAGSTER_HOME is not set")
    assert result.stderr.count("\n") == 1
    assert not (tmp_path / "incoming").exists()


def test_demo_with_a_missing_model_stops_before_any_work(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "video_assets.demo"],
        cwd=REPO_ROOT,
        env=subprocess_env(
            DAGSTER_HOME=str(home),
            GPU_ANALYSIS_DATA_ROOT=str(tmp_path / "data"),
            GPU_ANALYSIS_MODEL=str(tmp_path / "missing.onnx"),
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "missing.onnx" in result.stderr
    assert not (tmp_path / "data").exists()
