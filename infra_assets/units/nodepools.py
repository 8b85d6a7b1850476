"""gpu-karpenter-nodepools: the seed's node pools as Karpenter v1 NodePools and EC2NodeClasses."""

from __future__ import annotations

from typing import ClassVar

from infra_assets import manifests
from infra_assets.kube import apply_objects, plan_objects
from infra_assets.plan import Plan
from infra_assets.spec.kubernetes import nodepool_warnings
from infra_assets.units.kube_unit import KubeUnit


class NodePoolsUnit(KubeUnit):
    """The seed's three node pools (inference, preprocessing, coordination) and their classes."""

    name: ClassVar[str] = "gpu-karpenter-nodepools"

    def _objects(self) -> list[dict]:
        # Classes before pools: a NodePool referring to a missing class cannot launch nodes.
        return [
            *manifests.node_classes(self.spec, self.name),
            *manifests.nodepools(self.spec, self.name),
        ]

    def plan(self) -> Plan:
        warnings = self.cluster_warnings()
        warnings += nodepool_warnings(
            self.spec.nodepools,
            self.spec.karpenter_controller,
            self.spec.placement_group.availability_zone,
        )
        changes, conflicts = plan_objects(self.kube, self._objects(), self.spec.stack, self.name)
        return Plan(self.name, tuple(changes), tuple(warnings), tuple(conflicts))

    def _apply(self, plan: Plan) -> dict[str, str]:
        apply_objects(self.kube, self._objects(), list(plan.changes))
        return {
            "nodepools": ",".join(p.name for p in self.spec.nodepools),
            "ec2nodeclasses": ",".join(
                o["metadata"]["name"] for o in manifests.node_classes(self.spec, self.name)
            ),
        }

    def _owned_kinds(self) -> list[str]:
        # Pools first: Karpenter drains their nodes, which still need their class to terminate.
        return ["NodePool", "EC2NodeClass"]
