"""Dagster definitions of the infrastructure area."""

from __future__ import annotations

import dagster as dg

from gpu_analysis.profile import Profile
from infra_assets.assets import infra_assets, infra_drift
from infra_assets.jobs import infra_apply, infra_reconcile, infra_teardown
from infra_assets.resources import InfraResource
from infra_assets.schedules import nightly_infra_reconcile


def build_definitions(profile: Profile) -> dg.Definitions:
    return dg.Definitions(
        assets=infra_assets,
        asset_checks=[infra_drift],
        jobs=[infra_apply, infra_reconcile, infra_teardown],
        schedules=[nightly_infra_reconcile],
        resources={"infra": InfraResource.from_profile(profile)},
    )
