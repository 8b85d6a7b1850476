"""Profiles load from their files, take env overrides, and reject bad values by name."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gpu_analysis.engine.records import DEFAULT_SAMPLE_FPS
from gpu_analysis.profile import ProfileError, load_profile
from tests.conftest import REPO_ROOT, subprocess_env
from video_assets.layout import MatchLayout


def test_local_is_the_default_and_data_root_is_overridable(tmp_path):
    profile = load_profile(env={"GPU_ANALYSIS_DATA_ROOT": str(tmp_path)})
    assert profile.name == "local"
    assert profile.storage == "local" and profile.execution == "subprocess"
    assert profile.data_root == tmp_path.resolve()
    layout = MatchLayout(profile.storage_root_uri)
    assert layout.incoming_uri == str(tmp_path.resolve() / "incoming")
    assert profile.sample_fps == DEFAULT_SAMPLE_FPS


def test_staging_is_the_eu_west_3_cluster_of_the_seed():
    profile = load_profile(env={"GPU_ANALYSIS_PROFILE": "staging"})
    assert profile.aws_region == "eu-west-3"
    assert profile.cluster_name == "staging-eu-west-3-gpu-analysis"
    assert profile.execution == "k8s"
    layout = MatchLayout(profile.storage_root_uri)
    assert layout.incoming_uri == "s3://staging-eu-west-3-gpu-analysis-matches/incoming"


def test_unknown_profile_names_the_bad_value_and_the_choices():
    with pytest.raises(ProfileError, match=r"GPU_ANALYSIS_PROFILE='nope'.*local, staging"):
        load_profile(env={"GPU_ANALYSIS_PROFILE": "nope"})


@pytest.mark.parametrize(
    ("env_name", "value", "message"),
    [
        ("GPU_ANALYSIS_SAMPLE_FPS", "fast", r"'sample_fps'.*not a valid float"),
        ("GPU_ANALYSIS_SAMPLE_FPS", "0", r"'sample_fps'.*must be above 0 and at most 60, got 0"),
        # Each of these once held the T4 slot for good: the sampler never got past frame 0.
        ("GPU_ANALYSIS_SAMPLE_FPS", "inf", r"'sample_fps'.*at most 60, got inf"),
        ("GPU_ANALYSIS_SAMPLE_FPS", "1e9", r"'sample_fps'.*at most 60, got 1000000000"),
        ("GPU_ANALYSIS_INCOMING_SETTLE_S", "-1", r"'incoming_settle_s'.*>= 0 seconds, got -1"),
        ("GPU_ANALYSIS_INCOMING_SETTLE_S", "nan", r"'incoming_settle_s'.*finite"),
        ("GPU_ANALYSIS_BATCH_SIZE", "2.5", r"'batch_size'.*not a valid int"),
        ("GPU_ANALYSIS_DEVICE", "tpu", r"'device'.*not one of auto, cpu, cuda"),
        ("GPU_ANALYSIS_STORAGE", "ftp", r"'storage'.*not one of local, s3"),
    ],
)
def test_bad_settings_fail_at_load_naming_the_setting(env_name, value, message):
    with pytest.raises(ProfileError, match=message):
        load_profile(env={env_name: value})


def test_s3_storage_without_bucket_is_rejected():
    with pytest.raises(ProfileError, match=r"'bucket'.*no bucket"):
        load_profile(env={"GPU_ANALYSIS_PROFILE": "staging", "GPU_ANALYSIS_BUCKET": ""})


def test_demo_with_bad_profile_fails_fast_with_one_line():
    result = subprocess.run(
        [sys.executable, "-m", "video_assets.demo"],
        cwd=REPO_ROOT,
        env=subprocess_env(GPU_ANALYSIS_PROFILE="nope"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "'nope'" in lines[0]


def test_cli_prints_the_active_profile():
    result = subprocess.run(
        [sys.executable, "-m", "gpu_analysis", "profile", "staging"],
        cwd=REPO_ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert '"bucket": "staging-eu-west-3-gpu-analysis-matches"' in result.stdout
