"""When the stack is looked at without anyone asking: a nightly drift report, and remediation
of what a reconcile run found drifted when that run asked for it."""

# No `from __future__ import annotations`: Dagster reads the sensor's context annotation.
from typing import Any

import dagster as dg

from infra_assets.alerts import drifted_assets
from infra_assets.jobs import infra_apply, infra_reconcile

REMEDIATES_TAG = "gpu-analysis/remediates-run"

nightly_infra_reconcile = dg.ScheduleDefinition(
    name="nightly_infra_reconcile",
    job=infra_reconcile,
    cron_schedule="0 2 * * *",
    execution_timezone="Europe/Paris",
    # Report-only: the checks fail on drift, an alert goes out, and nobody's stack changes at
    # 2 a.m.
    run_config={
        "ops": {
            "infra_drift": {"config": {"remediate": False}},
            "infra_drift_in_cluster": {"config": {"remediate": False}},
        }
    },
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every night at 02:00 Paris time: observe every unit and report drift.",
)


def remediation_requested(run_config: dict[str, Any]) -> bool:
    ops = (run_config or {}).get("ops", {})
    return any(
        bool((ops.get(op) or {}).get("config", {}).get("remediate"))
        for op in ("infra_drift", "infra_drift_in_cluster")
    )


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.FAILURE,
    name="infra_drift_remediation",
    request_job=infra_apply,
    description=(
        "After an infra_reconcile run with remediate: true found drift: materialize exactly the "
        "drifted units' assets (an infra_apply run), so every repair is a materialization that "
        "shows the plan it applied."
    ),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
)
def infra_drift_remediation(context: dg.RunStatusSensorContext):
    run = context.dagster_run
    if run.job_name != infra_reconcile.name:
        return dg.SkipReason(f"run {run.run_id}: not an infra_reconcile run")
    if not remediation_requested(run.run_config):
        return dg.SkipReason(f"run {run.run_id}: report-only (remediate: false)")
    drifted = drifted_assets(context.instance, run.run_id)
    if not drifted:
        return dg.SkipReason(f"run {run.run_id}: failed, but found no drift to repair")
    context.log.info(
        f"remediating {', '.join(k.to_user_string() for k in drifted)} found by run {run.run_id}"
    )
    return dg.RunRequest(
        run_key=f"remediate-{run.run_id}",
        asset_selection=drifted,
        tags={REMEDIATES_TAG: run.run_id},
    )
