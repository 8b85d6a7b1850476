"""The layout's promises, checked: a Dagster-free engine, and no development code shipped."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
import tomllib

import gpu_analysis.engine
from tests.conftest import REPO_ROOT

# Modules the engine must never pull in: Dagster in any form, and the deployment profile
# (the engine takes its settings as arguments; only the Dagster side reads the profile).
FORBIDDEN = ("dagster", "dagster_pipes", "dagster_k8s", "dagster_aws", "gpu_analysis.profile")

PROBE = """
import importlib, pkgutil, sys
import gpu_analysis.engine as engine
for module in pkgutil.walk_packages(engine.__path__, "gpu_analysis.engine."):
    importlib.import_module(module.name)
print("\\n".join(sorted(sys.modules)))
"""


def engine_modules() -> list[str]:
    return [
        m.name for m in pkgutil.walk_packages(gpu_analysis.engine.__path__, "gpu_analysis.engine.")
    ]


def test_the_engine_imports_no_dagster_and_no_profile_in_a_fresh_interpreter():
    loaded = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.split()
    assert "gpu_analysis.engine.steps" in loaded  # the probe really imported the engine
    leaked = sorted(
        name for name in loaded if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)
    )
    assert leaked == [], f"engine imports what it must not: {leaked}"


def test_every_engine_module_is_covered_by_the_probe():
    names = engine_modules()
    for expected in ("steps", "video", "inference", "calibration", "report", "storage"):
        assert f"gpu_analysis.engine.{expected}" in names


def test_development_code_is_not_shipped():
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    shipped = config["tool"]["setuptools"]["packages"]["find"]["include"]
    for package in ("devtools", "tests", "training", "benchmarks"):
        assert not any(package.startswith(p.rstrip("*")) for p in shipped), package
    production = "\n".join(
        p.read_text()
        for package in ("gpu_analysis", "infra_assets", "video_assets")
        for p in (REPO_ROOT / package).rglob("*.py")
    )
    # Test-only fault hooks (a worker that kills itself on cue: tests/match/kill_once_worker.py)
    # and the local AWS server stay out of what ships.
    assert "GPU_ANALYSIS_FAULT" not in production and "kill_once" not in production.lower()
    assert "import devtools" not in production and "from devtools" not in production
    assert "import moto" not in production and "from moto" not in production
