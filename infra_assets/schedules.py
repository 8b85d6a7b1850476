"""When the stack is checked without anyone asking: a nightly drift report."""

from __future__ import annotations

import dagster as dg

from infra_assets.jobs import infra_reconcile

nightly_infra_reconcile = dg.ScheduleDefinition(
    name="nightly_infra_reconcile",
    job=infra_reconcile,
    cron_schedule="0 2 * * *",
    execution_timezone="Europe/Paris",
    # Report-only: the checks fail on drift and nobody's stack changes at 2 a.m.
    run_config={"ops": {"infra_drift": {"config": {"remediate": False}}}},
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every night at 02:00 Paris time: observe every unit and report drift.",
)
