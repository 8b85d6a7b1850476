"""The ways to run the stack: apply it, reconcile (check drift), preview a teardown, tear down."""

# No `from __future__ import annotations`: Dagster reads the context/config annotations.
from collections.abc import Iterator
from typing import Any

import dagster as dg

from infra_assets.assets import (
    GROUP,
    STATE_DESTROYED,
    infra_drift_checks,
    needs_kubernetes,
    plan_metadata,
)
from infra_assets.gpu_nodes import gpu_allocatable_check
from infra_assets.network_paths import network_paths_check
from infra_assets.plan import Change, Plan
from infra_assets.resources import InfraResource
from infra_assets.unit import DeploymentUnit, NoClusterConfigured, has_destroy_plan
from infra_assets.units import TEARDOWN_ORDER, asset_name

infra_apply = dg.define_asset_job(
    "infra_apply",
    selection=dg.AssetSelection.groups(GROUP),
    description="Apply the plan of every unit in stack order; the drift checks run after.",
)

# Checks of what works, besides what drifted: the security groups let the cluster's flows
# through; GPU nodes expose their GPUs to the scheduler.
infra_health_checks = [network_paths_check, gpu_allocatable_check]

infra_reconcile = dg.define_asset_job(
    "infra_reconcile",
    selection=dg.AssetSelection.checks(*infra_drift_checks, *infra_health_checks),
    description=(
        "Run the drift checks only (observe + plan); drift fails the run and raises an alert. "
        "With run config remediate: true (ops.infra_drift.config and "
        "ops.infra_drift_in_cluster.config) the infra_drift_remediation sensor then "
        "materializes exactly the drifted units' assets (an infra_apply run)."
    ),
)


class TeardownConfig(dg.Config):
    confirm_cluster_name: str = ""


@dg.op(description="Destroy what the stack owns, unit by unit in reverse stack order.")
def teardown_stack(
    context: dg.OpExecutionContext, config: TeardownConfig, infra: InfraResource
) -> Iterator[Any]:
    cluster = infra.cluster_name
    if config.confirm_cluster_name != cluster:
        given = config.confirm_cluster_name or "nothing"
        raise dg.Failure(
            description=(
                f"infra_teardown refused, nothing was touched: it deletes cluster {cluster!r} "
                f"and everything the stack owns; confirm with run config "
                f"ops.teardown_stack.config.confirm_cluster_name: {cluster} (got {given}). "
                "infra_teardown_preview lists what it would delete."
            ),
            allow_retries=False,
        )
    ctx = infra.unit_context(log=context.log)
    metadata: dict[str, dg.MetadataValue | str | int] = {}
    removed: list[str] = []
    # In-cluster units with no cluster to reach: their objects go with the EKS cluster.
    with_the_cluster: list[type[DeploymentUnit]] = []
    for unit_cls in TEARDOWN_ORDER:
        if needs_kubernetes(unit_cls) and ctx.kube is None:
            context.log.warning(f"{unit_cls.name}: no cluster configured, removed with it")
            with_the_cluster.append(unit_cls)
            continue
        try:
            plan = unit_cls(ctx).destroy()
        except NoClusterConfigured as exc:
            context.log.warning(f"{unit_cls.name}: {exc}")
            with_the_cluster.append(unit_cls)
            continue
        context.log.info(plan.as_text())
        removed += [f"{unit_cls.name}: {c.kind} {c.name}" for c in plan.changes]
        metadata[f"{unit_cls.name}"] = plan_metadata(plan)["plan"]
        # Recorded as each unit goes, so a teardown that stops half way says what it removed.
        yield _destroyed(unit_cls, plan, context.run_id)
        if unit_cls.name == "gpu-eks":
            for gone in with_the_cluster:
                note = f"removed with EKS cluster {cluster} (no kubeconfig to delete one by one)"
                yield _destroyed(gone, Plan(gone.name, (), (note,)), context.run_id)
            with_the_cluster = []
    metadata["removed"] = len(removed)
    yield dg.Output(removed, metadata=metadata)


def _destroyed(unit_cls: type[DeploymentUnit], plan: Plan, run_id: str) -> dg.AssetMaterialization:
    """The unit's asset recorded as destroyed, with what was deleted.

    A materialization, not a wipe: the asset's history (every plan it applied) stays, and the
    latest event says `state: destroyed`; its drift check then says "not deployed"."""
    deleted = [
        f"{c.kind} {c.name}" + (f" ({c.resource_id})" if c.resource_id else "")
        for c in plan.changes
    ]
    return dg.AssetMaterialization(
        asset_key=asset_name(unit_cls),
        description=f"{unit_cls.name}: destroyed by infra_teardown",
        metadata={
            "state": STATE_DESTROYED,
            "applied": False,
            "deleted_count": len(deleted),
            "deleted": dg.MetadataValue.md(plan.as_markdown()),
            **(
                {"notes": dg.MetadataValue.md("\n".join(f"- {w}" for w in plan.warnings))}
                if plan.warnings
                else {}
            ),
            "teardown_run": run_id,
        },
    )


@dg.job(description="Tear the stack down in reverse order; refuses unless the run names it.")
def infra_teardown() -> None:
    teardown_stack()


@dg.op(description="List what infra_teardown would delete, unit by unit; deletes nothing.")
def teardown_preview(context: dg.OpExecutionContext, infra: InfraResource) -> dg.Output[list[str]]:
    ctx = infra.unit_context(log=context.log)
    metadata: dict[str, Any] = {}
    would_delete: list[str] = []
    for unit_cls in TEARDOWN_ORDER:
        plan, how = destroy_preview(unit_cls(ctx))
        context.log.info(f"{plan.as_text()}\n  ({how})")
        would_delete += [
            f"{unit_cls.name}: {c.kind} {c.name}" + (f" ({c.resource_id})" if c.resource_id else "")
            for c in plan.changes
        ]
        metadata[unit_cls.name] = dg.MetadataValue.md(f"{plan.as_markdown()}\n\n_{how}_")
    metadata["would_delete"] = len(would_delete)
    return dg.Output(would_delete, metadata=metadata)


def destroy_preview(unit: DeploymentUnit) -> tuple[Plan, str]:
    """What destroying `unit` would delete, changing nothing, and how that was found."""
    if has_destroy_plan(unit):
        return unit.destroy_plan(), "from the unit's destroy_plan()"  # type: ignore[attr-defined]
    # Fallback: every resource of the spec that exists now; owned extras the plan does not see
    # are not listed, so the note says where this came from.
    plan = unit.plan()
    deletes = tuple(
        Change("delete", c.kind, c.name, c.resource_id)
        for c in plan.changes
        if c.action != "create"
    )
    return (
        Plan(plan.unit, deletes, plan.warnings),
        "from plan(): every live resource of the spec (the unit has no destroy_plan() yet)",
    )


@dg.job(description="Preview infra_teardown: list what it would delete per unit; deletes nothing.")
def infra_teardown_preview() -> None:
    teardown_preview()
