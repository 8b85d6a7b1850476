"""Dagster definitions of the match-analysis area."""

from __future__ import annotations

import dagster as dg

from gpu_analysis.profile import Profile


def build_definitions(profile: Profile) -> dg.Definitions:
    return dg.Definitions()
