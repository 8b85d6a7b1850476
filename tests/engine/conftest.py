"""Fixtures of the engine tests: one synthetic match clip with its truth, stand-in ONNX models."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, subprocess_env
from tests.engine import onnx_models


@dataclass(frozen=True)
class Clip:
    video: Path
    calibration: Path
    truth: object  # gpu_analysis.synthetic.ClipTruth


@pytest.fixture(scope="session")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Clip:
    """A 6 s 1280x720 25 fps H.264 match clip (tactical camera, 10 players a side)."""
    from gpu_analysis.synthetic import generate_match_clip

    folder = tmp_path_factory.mktemp("clip")
    video = folder / "match.mp4"
    truth = generate_match_clip(video, seed=3, duration_s=6.0, fps=25.0, width=1280, height=720)
    return Clip(video, folder / "match.calibration.json", truth)


@pytest.fixture(scope="session")
def short_clip(tmp_path_factory: pytest.TempPathFactory) -> Clip:
    """A 2 s 640x360 25 fps clip (50 frames): every frame of it analyses in a few seconds."""
    from gpu_analysis.synthetic import calibration_path_for, generate_match_clip

    video = tmp_path_factory.mktemp("short_clip") / "short.mp4"
    truth = generate_match_clip(video, seed=5, duration_s=2.0, fps=25.0, width=640, height=360)
    return Clip(video, calibration_path_for(video), truth)


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    return {
        "conv": onnx_models.conv_heatmap_model(folder / "conv.onnx"),
        "bright": onnx_models.brightness_heatmap_model(folder / "bright.onnx", threshold=0.6),
        "kit": onnx_models.kit_colour_heatmap_model(folder / "kit.onnx"),
        "wrong_input": onnx_models.wrong_input_model(folder / "wrong_input.onnx"),
    }


def ffmpeg(*args: str) -> None:
    """Run ffmpeg as the code finds it: the system binary, else the one imageio-ffmpeg ships."""
    from gpu_analysis.synthetic import ffmpeg_exe

    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", *args], check=True)


def run_cli(*args: str | Path, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gpu_analysis", *map(str, args)],
        env=subprocess_env(),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def moto_s3(local_aws_server) -> str:
    """The session's moto server (tests.emulators.aws) over HTTP: its endpoint URL."""
    return local_aws_server.endpoint_url


__all__ = ["Clip", "ffmpeg", "run_cli", "sys"]
