"""Composition root: the profile's resources merged with the infrastructure and match areas."""

from __future__ import annotations

import dagster as dg

import infra_assets.definitions
import video_assets.definitions
from gpu_analysis.profile import Profile, load_profile


def build_definitions(profile: Profile) -> dg.Definitions:
    return dg.Definitions.merge(
        infra_assets.definitions.build_definitions(profile),
        video_assets.definitions.build_definitions(profile),
    )


defs = build_definitions(load_profile())
