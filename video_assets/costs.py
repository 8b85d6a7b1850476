"""Cost per match in Dagster: a run's step seconds priced on its delivery, summed per day.

The step seconds come from the run's own event log (each attempt from its step start to its
success, failure or retry), which Dagster writes for every step whatever the asset does: a
retried GPU attempt, billed on its node all the same, is counted, and a re-execution counts
only the steps it ran, so the daily sum counts each step once. The pricing is
`video_assets/match_cost.py`. (No `from __future__ import annotations`: Dagster reads the
`context` annotation of match_costs_daily as a type.)
"""

import datetime as dt
import time
from collections.abc import Iterable, Mapping

import dagster as dg
from dagster import AssetExecutionContext, DagsterEventType

from gpu_analysis.profile import Profile
from video_assets.match_cost import MatchCost, price_steps, profile_pool_prices
from video_assets.pod_specs import RUN_POD_CPU

COST_GROUP = "costs"
NODEPOOL_TAG = "gpu-analysis/nodepool"  # on a match asset: the role its GPU step runs on
DELIVERY_KEY = dg.AssetKey("match_delivery")  # the asset whose metadata carries the run's cost
# Metadata keys of the delivery (written here, read back by match_costs_daily).
GPU_S = "gpu_s"
CPU_S = "cpu_s"
COST_USD = "cost_usd_estimate"
COST_TABLE = "cost_per_step"
RUN_TAG_PREFIX = "gpu-analysis/"  # the run's tags repeat the figures so the runs list shows them

_ATTEMPT_STARTS = {DagsterEventType.STEP_START, DagsterEventType.STEP_RESTARTED}
_ATTEMPT_ENDS = {
    DagsterEventType.STEP_SUCCESS,
    DagsterEventType.STEP_FAILURE,
    DagsterEventType.STEP_UP_FOR_RETRY,
}


def run_step_seconds(
    instance: dg.DagsterInstance, run_id: str, now_s: float | None = None
) -> dict[str, float]:
    """Wall seconds per step key of one run, all attempts; a step still running counts to now."""
    now_s = time.time() if now_s is None else now_s
    records = instance.get_records_for_run(run_id, of_type=_ATTEMPT_STARTS | _ATTEMPT_ENDS).records
    started: dict[str, float] = {}
    seconds: dict[str, float] = {}
    for record in records:
        entry = record.event_log_entry
        step, event = entry.step_key, entry.dagster_event
        if step is None or event is None:
            continue
        if event.event_type in _ATTEMPT_STARTS:
            started[step] = entry.timestamp
            seconds.setdefault(step, 0.0)
        elif step in started:
            seconds[step] += entry.timestamp - started.pop(step)
    for step, start_s in started.items():
        seconds[step] += max(0.0, now_s - start_s)
    return seconds


def gpu_step_roles(assets: Iterable[dg.AssetsDefinition]) -> dict[str, str]:
    """Step key -> node pool role of the GPU steps: their assets name it in NODEPOOL_TAG."""
    roles: dict[str, str] = {}
    for asset in assets:
        for spec in asset.specs:
            if spec.tags.get(NODEPOOL_TAG):
                roles[asset.op.name] = spec.tags[NODEPOOL_TAG]
    return roles


def run_cost(
    context: AssetExecutionContext, gpu_roles: Mapping[str, str], profile: Profile
) -> MatchCost:
    """This run's steps priced so far; every step not in `gpu_roles` ran in the run pod."""
    seconds = run_step_seconds(context.instance, context.run.run_id)
    roles = {step: gpu_roles.get(step, profile.nodepool_cpu) for step in seconds}
    prices = profile_pool_prices(profile, run_pod_vcpus=float(RUN_POD_CPU))
    return price_steps(sorted(seconds.items()), roles, prices)


def record_run_cost(
    context: AssetExecutionContext, gpu_roles: Mapping[str, str], profile: Profile
) -> dict[str, object]:
    """The run's cost as delivery metadata; also logged and set as run tags for the run view.

    A profile whose pools the spec cannot price gets a warning, not a failed delivery: the
    results are already published when this runs.
    """
    try:
        cost = run_cost(context, gpu_roles, profile)
    except KeyError as exc:
        context.log.warning(f"no cost estimate: {exc.args[0]}")
        return {}
    figures = {
        GPU_S: round(cost.gpu_s, 3),
        CPU_S: round(cost.cpu_s, 3),
        COST_USD: round(cost.cost_usd, 6),
    }
    context.instance.add_run_tags(
        context.run.run_id, {RUN_TAG_PREFIX + key: str(value) for key, value in figures.items()}
    )
    context.log.info(
        f"estimated cost ${figures[COST_USD]:.4f}: {figures[GPU_S]:.1f} GPU s, "
        f"{figures[CPU_S]:.1f} CPU s at the staging cluster's prices"
    )
    return {**figures, COST_TABLE: dg.MetadataValue.md(cost.as_markdown())}


# UTC days, as AWS bills; the current day is a partition too, for a running total.
daily = dg.DailyPartitionsDefinition(start_date="2026-01-01", end_offset=1)


@dg.asset(group_name=COST_GROUP, partitions_def=daily, kinds={"python"})
def match_costs_daily(context: AssetExecutionContext) -> dg.MaterializeResult:
    """Matches delivered in one UTC day, their GPU and CPU seconds and estimated cost, summed
    from the cost metadata of that day's match_delivery materializations."""
    window = context.partition_time_window
    records_filter = dg.AssetRecordsFilter(
        asset_key=DELIVERY_KEY,
        after_timestamp=window.start.timestamp(),
        before_timestamp=window.end.timestamp(),
    )
    rows = ["| match | run | GPU s | CPU s | est. $ |", "|---|---|---:|---:|---:|"]
    totals = {GPU_S: 0.0, CPU_S: 0.0, COST_USD: 0.0}
    matches = 0
    without_estimate = 0
    cursor = None
    while True:
        page = context.instance.fetch_materializations(
            records_filter, limit=500, cursor=cursor, ascending=True
        )
        for record in page.records:
            metadata = record.asset_materialization.metadata
            if COST_USD not in metadata:
                without_estimate += 1  # delivered before estimates, or by an unpriced profile
                continue
            matches += 1
            values = {key: float(metadata[key].value) for key in totals}
            for key, value in values.items():
                totals[key] += value
            rows.append(
                f"| {record.partition_key} | {record.run_id[:8]} | {values[GPU_S]:.1f} "
                f"| {values[CPU_S]:.1f} | {values[COST_USD]:.4f} |"
            )
        if not page.has_more:
            break
        cursor = page.cursor
    context.log.info(
        f"{matches} matches on {context.partition_key}: ${totals[COST_USD]:.4f} estimated"
    )
    return dg.MaterializeResult(
        metadata={
            "matches": matches,
            GPU_S: round(totals[GPU_S], 3),
            CPU_S: round(totals[CPU_S], 3),
            COST_USD: round(totals[COST_USD], 6),
            "deliveries_without_estimate": without_estimate,
            "matches_table": dg.MetadataValue.md("\n".join(rows)),
        }
    )


match_costs_daily_job = dg.define_asset_job("match_costs_daily_job", selection=[match_costs_daily])


@dg.schedule(
    job=match_costs_daily_job,
    cron_schedule="30 0 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def nightly_match_costs(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Yesterday's sum, 30 minutes after the UTC day ends: a delivery lands on the day its
    materialization is written, so yesterday is complete by then."""
    day = (context.scheduled_execution_time - dt.timedelta(days=1)).strftime("%Y-%m-%d")
    return dg.RunRequest(run_key=day, partition_key=day)
