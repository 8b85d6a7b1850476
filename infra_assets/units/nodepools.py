"""gpu-karpenter-nodepools: the seed's node pools as Karpenter v1 NodePools and EC2NodeClasses."""

from __future__ import annotations

from typing import ClassVar

from infra_assets import manifests
from infra_assets.kube import (
    NO_CLUSTER_WARNING,
    Kube,
    apply_objects,
    delete_owned,
    plan_objects,
    refuse_conflicts,
)
from infra_assets.plan import Plan
from infra_assets.spec.kubernetes import nodepool_warnings
from infra_assets.unit import ApplyResult, NoClusterConfigured, UnitContext


class NodePoolsUnit:
    """The seed's three node pools (inference, preprocessing, coordination) and their classes."""

    name: ClassVar[str] = "gpu-karpenter-nodepools"

    def __init__(self, ctx: UnitContext) -> None:
        self.ctx = ctx
        self.spec = ctx.spec
        self.kube = Kube(ctx.kube) if ctx.kube is not None else None

    def _objects(self) -> list[dict]:
        # Classes before pools: a NodePool referring to a missing class cannot launch nodes.
        return [
            *manifests.node_classes(self.spec, self.name),
            *manifests.nodepools(self.spec, self.name),
        ]

    def plan(self) -> Plan:
        warnings = [] if self.kube else [NO_CLUSTER_WARNING]
        warnings += nodepool_warnings(
            self.spec.nodepools,
            self.spec.karpenter_controller,
            self.spec.placement_group.availability_zone,
        )
        changes, conflicts = plan_objects(self.kube, self._objects(), self.spec.stack, self.name)
        return Plan(self.name, tuple(changes), tuple(warnings), tuple(conflicts))

    def apply(self) -> ApplyResult:
        if self.kube is None:
            raise NoClusterConfigured(
                f"error: {self.name}: {NO_CLUSTER_WARNING}; set KUBECONFIG or run in-cluster"
            )
        plan = self.plan()
        refuse_conflicts(plan, self.spec.stack)
        apply_objects(self.kube, self._objects(), list(plan.changes))
        return ApplyResult(
            plan,
            {
                "nodepools": ",".join(p.name for p in self.spec.nodepools),
                "ec2nodeclasses": ",".join(
                    o["metadata"]["name"] for o in manifests.node_classes(self.spec, self.name)
                ),
            },
        )

    def destroy(self) -> Plan:
        if self.kube is None:
            return Plan(self.name, (), (NO_CLUSTER_WARNING,))
        # Pools first: Karpenter drains their nodes, which still need their class to terminate.
        changes = delete_owned(self.kube, ["NodePool", "EC2NodeClass"], self.spec.stack, self.name)
        return Plan(self.name, tuple(changes))
