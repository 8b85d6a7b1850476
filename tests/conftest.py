"""Shared fixtures: every test runs with its own data root and Dagster home."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

# Fixture modules of the emulators (moto server, Kubernetes API emulator), added by each area.
pytest_plugins: list[str] = ["tests.emulators.kube_api", "tests.emulators.aws"]

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def subprocess_env(**overrides: str) -> dict[str, str]:
    """The environment for a child process: this venv first on PATH, the repo importable."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(REPO_ROOT)
    env.update(overrides)
    return env


@pytest.fixture(autouse=True)
def _isolated_data_root(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    root = tmp_path_factory.mktemp("data_root")
    monkeypatch.setenv("GPU_ANALYSIS_DATA_ROOT", str(root))
    monkeypatch.delenv("GPU_ANALYSIS_PROFILE", raising=False)
    yield root
