"""The seven units as Dagster assets (materialize = apply the plan) and their drift checks."""

# No `from __future__ import annotations`: Dagster reads the context/config annotations.
from collections.abc import Iterator
from typing import Any

import dagster as dg

from infra_assets.cost import estimate_idle_base
from infra_assets.plan import Plan
from infra_assets.resources import InfraResource
from infra_assets.unit import DeploymentUnit, NoClusterConfigured, UnitContext
from infra_assets.units import AWS_UNITS, DEPENDS_ON, UNITS, asset_name, unit_by_name

GROUP = "infrastructure"
DRIFT_CHECK = "drift"
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

    @dg.asset(
        name=asset_name(unit_cls),
        group_name=GROUP,
        deps=deps,
        description=f"{unit_cls.name}: {description}",
        kinds={"kubernetes"} if needs_kubernetes(unit_cls) else {"aws"},
    )
    def _unit_asset(
        context: dg.AssetExecutionContext, infra: InfraResource
    ) -> dg.MaterializeResult:
        ctx = infra.unit_context(log=context.log)
        unit = unit_cls(ctx)
        try:
            result = unit.apply()
        except NoClusterConfigured:
            plan = unit.plan()
            context.log.warning(f"{unit_cls.name}: {NO_CLUSTER}")
            return dg.MaterializeResult(
                metadata={**plan_metadata(plan), "applied": False, "status": NO_CLUSTER}
            )
        for warning in result.plan.warnings:
            context.log.warning(f"{unit_cls.name}: {warning}")
        metadata = {**plan_metadata(result.plan), "applied": True, **result.outputs}
        if unit_cls.name == "gpu-eks":
            metadata.update(_cost_metadata(ctx))
        return dg.MaterializeResult(metadata=metadata)

    return _unit_asset


def _cost_metadata(ctx: UnitContext) -> dict[str, Any]:
    estimate = estimate_idle_base(ctx)
    return {
        "idle_base_usd_per_month": estimate.monthly_usd,
        "seed_idle_base_usd_per_month": estimate.seed_monthly_usd,
        "idle_base_cost": dg.MetadataValue.md(estimate.as_markdown()),
    }


infra_assets = [_asset_for(unit) for unit in UNITS]


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec(
            DRIFT_CHECK,
            asset=asset_name(unit),
            description=f"{unit.name}: the live state matches the spec (observe + plan)",
        )
        for unit in UNITS
    ],
    can_subset=True,
    config_schema={
        "remediate": dg.Field(
            bool,
            default_value=False,
            description="Apply the plan of every drifted unit (in stack order), then re-check.",
        )
    },
)
def infra_drift(
    context: dg.AssetCheckExecutionContext, infra: InfraResource
) -> Iterator[dg.AssetCheckResult]:
    """Observe every selected unit and plan; fail a unit's check when its plan is not empty."""
    remediate = bool(context.op_execution_context.op_config["remediate"])
    ctx = infra.unit_context(log=context.log)
    selected = {key.asset_key for key in context.selected_asset_check_keys}
    for unit_cls in UNITS:
        key = dg.AssetKey(asset_name(unit_cls))
        if key in selected:
            yield _drift_result(context, unit_cls, ctx, remediate)


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
    if not remediate:
        context.log.warning(f"drift found:\n{plan.as_text()}")
        return dg.AssetCheckResult(
            asset_key=key,
            check_name=DRIFT_CHECK,
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            description=f"drift: {plan.as_text()}",
            metadata={**plan_metadata(plan), "remediated": False},
        )
    context.log.info(f"remediating:\n{plan.as_text()}")
    try:
        unit.apply()
        after = unit_cls(ctx).plan()
    except Exception as exc:
        context.log.exception(f"{unit_cls.name}: remediation failed")
        return dg.AssetCheckResult(
            asset_key=key,
            check_name=DRIFT_CHECK,
            passed=False,
            description=(
                f"drift: {plan.as_text()}\nremediation failed: {type(exc).__name__}: {exc}"
            ),
            metadata={**plan_metadata(plan), "remediated": False},
        )
    return dg.AssetCheckResult(
        asset_key=key,
        check_name=DRIFT_CHECK,
        passed=not (after.has_changes or after.conflicts),
        description=f"remediated: {plan.as_text()}\nnow: {after.summary()}",
        metadata={
            **plan_metadata(after),
            "remediated": True,
            "drift_before": dg.MetadataValue.md(plan.as_markdown()),
        },
    )
