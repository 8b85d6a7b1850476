"""Dagster definitions of the match-analysis area, built from the profile."""

from __future__ import annotations

import time
from collections.abc import Callable

import dagster as dg
from dagster_aws.s3 import S3Resource

from gpu_analysis.profile import Profile
from video_assets.assets import build_assets
from video_assets.costs import match_costs_daily, match_costs_daily_job, nightly_match_costs
from video_assets.jobs import build_process_match
from video_assets.resources import AnalysisSettings, GpuWorkers, MatchStorage
from video_assets.sensors import build_match_video_sensor


def build_resources(profile: Profile) -> dict[str, object]:
    s3 = S3Resource(region_name=profile.aws_region)
    return {
        "storage": MatchStorage(
            root_uri=profile.storage_root_uri, scratch_dir=str(profile.scratch_dir), s3=s3
        ),
        "settings": AnalysisSettings(
            sample_fps=profile.sample_fps,
            model=profile.model,
            device=profile.device,
            batch_size=profile.batch_size,
        ),
        "gpu_workers": GpuWorkers.from_profile(profile),
    }


def build_definitions(
    profile: Profile, *, clock: Callable[[], float] = time.time
) -> dg.Definitions:
    """The area's definitions; `clock` is the sensor's wall clock (tests step it by hand)."""
    local_files = profile.storage == "local"
    process_match = build_process_match(profile)
    sensor = build_match_video_sensor(
        process_match.name,
        settle_s=profile.incoming_settle_s,
        interval_s=15 if local_files else 30,
        clock=clock,
    )
    return dg.Definitions(
        assets=[*build_assets(profile), match_costs_daily],
        jobs=[process_match, match_costs_daily_job],
        sensors=[sensor],
        schedules=[nightly_match_costs],
        resources=build_resources(profile),
    )
