"""The seven units as Dagster assets (materialize = apply the plan shown) and their drift checks."""

# No `from __future__ import annotations`: Dagster reads the context/config annotations.
import inspect
import json
from collections.abc import Iterator
from typing import Any

import dagster as dg

from infra_assets.cost import estimate_idle_base
from infra_assets.plan import Plan, StalePlan
from infra_assets.resources import InfraResource
from infra_assets.unit import ApplyResult, DeploymentUnit, NoClusterConfigured, UnitContext
from infra_assets.units import AWS_UNITS, DEPENDS_ON, UNITS, asset_name, unit_by_name

GROUP = "infrastructure"
DRIFT_CHECK = "drift"
# The first words of the failure of a drift check step that found drift and nothing worse.
DRIFT_FOUND = "drift found"
# The `state` metadata of a unit's materializations: applied by infra_apply, or destroyed by a
# confirmed infra_teardown (a record of what was deleted; the drift check then says NOT_DEPLOYED).
STATE_APPLIED = "applied"
STATE_DESTROYED = "destroyed"
NOT_DEPLOYED = "not deployed"
NO_CLUSTER = (
    "no Kubernetes cluster is configured (no kubeconfig, no in-cluster config): "
    "plan only, nothing applied"
)


def needs_kubernetes(unit: type[DeploymentUnit]) -> bool:
    return unit not in AWS_UNITS


def plan_metadata(plan: Plan) -> dict[str, Any]:
    counts = plan.counts()
    metadata: dict[str, Any] = {
        "plan": dg.MetadataValue.md(plan.as_markdown()),
        "summary": plan.summary(),
        **{f"to_{action}" if action != "keep" else "unchanged": n for action, n in counts.items()},
    }
    if plan.warnings:
        metadata["warnings"] = dg.MetadataValue.md("\n".join(f"- {w}" for w in plan.warnings))
    if plan.conflicts:
        metadata["conflicts"] = dg.MetadataValue.md("\n".join(f"- {c}" for c in plan.conflicts))
    return metadata


def _asset_for(unit_cls: type[DeploymentUnit]) -> dg.AssetsDefinition:
    deps = [asset_name(unit_by_name(d)) for d in DEPENDS_ON[unit_cls.name]]
    description = (unit_cls.__doc__ or unit_cls.name).strip().splitlines()[0]
    in_cluster = needs_kubernetes(unit_cls)

    @dg.asset(
        name=asset_name(unit_cls),
        group_name=GROUP,
        deps=deps,
        description=f"{unit_cls.name}: {description}",
        kinds={"kubernetes"} if in_cluster else {"aws"},
        # An in-cluster unit with no cluster to apply to records no materialization: the step
        # logs an observation with the plan instead (and the units after it are skipped).
        output_required=not in_cluster,
    )
    def _unit_asset(
        context: dg.AssetExecutionContext, infra: InfraResource
    ) -> Iterator[dg.MaterializeResult]:
        ctx = infra.unit_context(log=context.log)
        unit = unit_cls(ctx)
        if in_cluster and ctx.kube is None:
            _record_nothing_applied(context, unit.plan())
            return
        plan = unit.plan()
        context.log.info(f"plan to apply:\n{plan.as_text()}")
        try:
            result = apply_plan(unit, plan, context.log)
        except NoClusterConfigured:
            _record_nothing_applied(context, unit.plan())
            return
        for warning in result.plan.warnings:
            context.log.warning(f"{unit_cls.name}: {warning}")
        metadata = {
            **plan_metadata(result.plan),
            "state": STATE_APPLIED,
            "applied": True,
            **result.outputs,
        }
        if unit_cls.name == "gpu-eks":
            metadata.update(_cost_metadata(ctx))
        yield dg.MaterializeResult(metadata=metadata)

    return _unit_asset


def apply_plan(unit: DeploymentUnit, plan: Plan, log: Any) -> ApplyResult:
    """Apply the plan that was shown; once re-planned (and logged) if the live state moved on.

    A unit whose `apply` takes no plan yet re-plans itself (the older interface)."""
    if "plan" not in inspect.signature(unit.apply).parameters:
        return unit.apply()
    try:
        return unit.apply(plan)
    except StalePlan as exc:
        log.warning(f"{exc}\napplying the new plan instead; the materialization shows it")
        return unit.apply(unit.plan())


def _record_nothing_applied(context: dg.AssetExecutionContext, plan: Plan) -> None:
    context.log.warning(f"{plan.unit}: {NO_CLUSTER}\n{plan.as_text()}")
    context.log_event(
        dg.AssetObservation(
            asset_key=context.asset_key,
            description=f"{plan.unit}: {NO_CLUSTER}",
            metadata={**plan_metadata(plan), "applied": False, "status": NO_CLUSTER},
        )
    )


def _cost_metadata(ctx: UnitContext) -> dict[str, Any]:
    estimate = estimate_idle_base(ctx)
    return {
        "idle_base_usd_per_month": estimate.monthly_usd,
        "seed_idle_base_usd_per_month": estimate.seed_monthly_usd,
        "idle_base_cost": dg.MetadataValue.md(estimate.as_markdown()),
    }


infra_assets = [_asset_for(unit) for unit in UNITS]


def _drift_check(
    name: str, units: tuple[type[DeploymentUnit], ...], which: str
) -> dg.AssetChecksDefinition:
    # Two check steps, not one: in a run that applies, a step waits for all of its assets, and
    # an in-cluster asset with no cluster records nothing, so its check step is skipped; the
    # AWS units' checks must still run after them.
    @dg.multi_asset_check(
        name=name,
        specs=[
            dg.AssetCheckSpec(
                DRIFT_CHECK,
                asset=asset_name(unit),
                description=f"{unit.name}: the live state matches the spec (observe + plan)",
            )
            for unit in units
        ],
        can_subset=True,
        config_schema={
            "remediate": dg.Field(
                bool,
                default_value=False,
                description=(
                    "Have each drifted unit's asset materialized (applied) after the checks: "
                    "the infra_drift_remediation sensor starts an infra_apply run of exactly "
                    "those assets. The checks themselves never change anything."
                ),
            )
        },
        description=f"Observe every selected {which} unit and plan; drift fails the step.",
    )
    def _check(
        context: dg.AssetCheckExecutionContext, infra: InfraResource
    ) -> Iterator[dg.AssetCheckResult]:
        remediate = bool(context.op_execution_context.op_config["remediate"])
        ctx = infra.unit_context(log=context.log)
        selected = {key.asset_key for key in context.selected_asset_check_keys}
        drifted: list[str] = []
        unobservable: list[str] = []
        for unit_cls in units:
            key = dg.AssetKey(asset_name(unit_cls))
            if key not in selected:
                continue
            result = _drift_result(context, unit_cls, ctx, remediate)
            if _meta_value(result.metadata, "drifted") is True:
                drifted.append(unit_cls.name)
            elif not result.passed and result.severity == dg.AssetCheckSeverity.ERROR:
                unobservable.append(unit_cls.name)
            yield result
        # A run that finds drift is not a green run: the step fails (after every result is
        # recorded) and the infra_alerts sensor sends one alert per drift finding.
        if drifted or unobservable:
            what = []
            if drifted:
                what.append(f"{DRIFT_FOUND} in {', '.join(drifted)}")
            if unobservable:
                what.append(f"could not observe {', '.join(unobservable)}")
            raise dg.Failure(
                description="; ".join(what)
                + (
                    ": remediation requested (infra_drift_remediation applies them)"
                    if remediate and drifted
                    else ": see the drift checks; run infra_reconcile with remediate: true "
                    "or infra_apply to repair"
                ),
                allow_retries=False,
            )

    return _check


infra_drift = _drift_check("infra_drift", AWS_UNITS, "AWS")
infra_drift_in_cluster = _drift_check(
    "infra_drift_in_cluster", tuple(u for u in UNITS if needs_kubernetes(u)), "in-cluster"
)
infra_drift_checks = [infra_drift, infra_drift_in_cluster]


def _drift_result(
    context: dg.AssetCheckExecutionContext,
    unit_cls: type[DeploymentUnit],
    ctx: UnitContext,
    remediate: bool,
) -> dg.AssetCheckResult:
    key = dg.AssetKey(asset_name(unit_cls))
    unit = unit_cls(ctx)
    if needs_kubernetes(unit_cls) and ctx.kube is None:
        return dg.AssetCheckResult(
            asset_key=key,
            check_name=DRIFT_CHECK,
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"{unit_cls.name}: cannot observe, {NO_CLUSTER}",
            metadata=plan_metadata(unit.plan()),
        )
    try:
        plan = unit.plan()
    except Exception as exc:  # one unit that cannot be observed must not hide the others
        context.log.exception(f"{unit_cls.name}: observing failed")
        return dg.AssetCheckResult(
            asset_key=key,
            check_name=DRIFT_CHECK,
            passed=False,
            description=f"{unit_cls.name}: could not observe: {type(exc).__name__}: {exc}",
        )
    drifted = plan.has_changes or bool(plan.conflicts)
    if not drifted:
        return dg.AssetCheckResult(
            asset_key=key,
            check_name=DRIFT_CHECK,
            passed=True,
            description=plan.summary(),
            metadata=plan_metadata(plan),
        )
    if plan.absent and not plan.conflicts:
        last_state = _last_recorded_state(context.instance, key)
        if last_state != STATE_APPLIED:
            # Torn down (or never applied) on purpose: not deployed is the truth, not drift.
            why = "torn down" if last_state == STATE_DESTROYED else "never applied here"
            return dg.AssetCheckResult(
                asset_key=key,
                check_name=DRIFT_CHECK,
                passed=False,
                severity=dg.AssetCheckSeverity.WARN,
                description=f"{NOT_DEPLOYED} ({why}): {plan.summary()}",
                metadata={**plan_metadata(plan), "state": NOT_DEPLOYED, "drifted": False},
            )
    remediation = "requested" if remediate else "not requested"
    title = f"{NOT_DEPLOYED}, but was applied: " if plan.absent else "drift: "
    context.log.warning(f"{title}{plan.as_text()}")
    return dg.AssetCheckResult(
        asset_key=key,
        check_name=DRIFT_CHECK,
        passed=False,
        severity=dg.AssetCheckSeverity.ERROR,
        description=f"{title}{plan.as_text()}",
        metadata={
            **plan_metadata(plan),
            "drifted": True,
            "diff": dg.MetadataValue.json(_jsonable(plan.field_diffs())),
            "remediation": remediation,
        },
    )


def _last_recorded_state(instance: dg.DagsterInstance, key: dg.AssetKey) -> str | None:
    """ "applied" or "destroyed" from the asset's latest materialization; None: never."""
    event = instance.get_latest_materialization_event(key)
    materialization = event.asset_materialization if event else None
    if materialization is None:
        return None
    state = _meta_value(materialization.metadata, "state")
    # Materializations from before `state` existed were applies.
    return state if isinstance(state, str) else STATE_APPLIED


def _meta_value(metadata: Any, key: str) -> Any:
    value = (metadata or {}).get(key)
    return getattr(value, "value", value)


def _jsonable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return json.loads(json.dumps(rows, default=str))
