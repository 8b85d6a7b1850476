"""The three ways to run the stack: apply it, reconcile (check drift, optionally fix), tear down."""

# No `from __future__ import annotations`: Dagster reads the context/config annotations.
import dagster as dg

from infra_assets.assets import GROUP, infra_drift, plan_metadata
from infra_assets.resources import InfraResource
from infra_assets.unit import NoClusterConfigured
from infra_assets.units import TEARDOWN_ORDER

infra_apply = dg.define_asset_job(
    "infra_apply",
    selection=dg.AssetSelection.groups(GROUP),
    description="Apply the plan of every unit in stack order; the drift checks run after.",
)

infra_reconcile = dg.define_asset_job(
    "infra_reconcile",
    selection=dg.AssetSelection.checks(infra_drift),
    description=(
        "Run the drift checks only (observe + plan). Report-only by default; with run config "
        "ops.infra_drift.config.remediate: true it applies the plans of the drifted units."
    ),
)


class TeardownConfig(dg.Config):
    confirm_cluster_name: str = ""


@dg.op(description="Destroy what the stack owns, unit by unit in reverse stack order.")
def teardown_stack(
    context: dg.OpExecutionContext, config: TeardownConfig, infra: InfraResource
) -> dg.Output[list[str]]:
    cluster = infra.cluster_name
    if config.confirm_cluster_name != cluster:
        given = config.confirm_cluster_name or "nothing"
        raise dg.Failure(
            description=(
                f"infra_teardown refused, nothing was touched: it deletes cluster {cluster!r} "
                f"and everything the stack owns; confirm with run config "
                f"ops.teardown_stack.config.confirm_cluster_name: {cluster} (got {given})"
            ),
            allow_retries=False,
        )
    ctx = infra.unit_context(log=context.log)
    metadata: dict[str, dg.MetadataValue | str | int] = {}
    removed: list[str] = []
    for unit_cls in TEARDOWN_ORDER:
        try:
            plan = unit_cls(ctx).destroy()
        except NoClusterConfigured as exc:
            # Without a cluster there is nothing in-cluster to remove; the AWS units still go.
            context.log.warning(f"{unit_cls.name}: {exc}")
            continue
        context.log.info(plan.as_text())
        removed += [f"{unit_cls.name}: {c.kind} {c.name}" for c in plan.changes]
        metadata[f"{unit_cls.name}"] = plan_metadata(plan)["plan"]
    metadata["removed"] = len(removed)
    return dg.Output(removed, metadata=metadata)


@dg.job(description="Tear the stack down in reverse order; refuses unless the run names it.")
def infra_teardown() -> None:
    teardown_stack()
