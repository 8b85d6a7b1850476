"""Dagster definitions of the infrastructure area."""

from __future__ import annotations

import dagster as dg

from gpu_analysis.profile import Profile
from infra_assets.alerts import InfraAlerts, infra_alerts
from infra_assets.assets import infra_assets, infra_drift_checks
from infra_assets.jobs import (
    infra_apply,
    infra_health_checks,
    infra_reconcile,
    infra_teardown,
    infra_teardown_preview,
)
from infra_assets.resources import InfraResource
from infra_assets.schedules import infra_drift_remediation, nightly_infra_reconcile


def build_definitions(profile: Profile) -> dg.Definitions:
    return dg.Definitions(
        assets=infra_assets,
        asset_checks=[*infra_drift_checks, *infra_health_checks],
        jobs=[infra_apply, infra_reconcile, infra_teardown, infra_teardown_preview],
        schedules=[nightly_infra_reconcile],
        sensors=[infra_alerts, infra_drift_remediation],
        resources={
            "infra": InfraResource.from_profile(profile),
            "alert_sink": InfraAlerts.from_profile(profile),
        },
    )
