"""gpu-cilium: the Cilium CNI Helm release, workload namespaces and default-deny policies."""

from __future__ import annotations

from typing import ClassVar

from infra_assets import manifests
from infra_assets.helm import ReleaseSpec, apply_release, plan_release
from infra_assets.kube import apply_objects, owner_labels, plan_objects
from infra_assets.plan import Plan
from infra_assets.units.kube_unit import KubeUnit


class CiliumUnit(KubeUnit):
    """Cilium CNI (ENI, native routing, WireGuard, Hubble UI, bandwidth QoS) and default-deny."""

    name: ClassVar[str] = "gpu-cilium"

    def _release(self) -> ReleaseSpec:
        cilium = self.spec.cilium
        return ReleaseSpec(
            name=cilium.release,
            namespace=cilium.namespace,
            chart=cilium.chart,
            version=cilium.chart_version,
            values=manifests.cilium_values(self.spec),
            repo=cilium.repository,
        )

    def _objects(self) -> list[dict]:
        return manifests.cilium_objects(self.spec, self.name)

    def plan(self) -> Plan:
        release_change, release_conflict, _ = plan_release(
            self.kube, self._release(), self.spec.stack
        )
        changes, conflicts = plan_objects(self.kube, self._objects(), self.spec.stack, self.name)
        if release_change:
            changes.insert(0, release_change)
        if release_conflict:
            conflicts.insert(0, release_conflict)
        return Plan(self.name, tuple(changes), tuple(self.cluster_warnings()), tuple(conflicts))

    def _apply(self, plan: Plan) -> dict[str, str]:
        release = self._release()
        release_changes = [c for c in plan.changes if c.kind == "helm-release"]
        # The release first: the policies are Cilium custom resources.
        for change in release_changes:
            apply_release(self.helm, release, change, owner_labels(self.spec.stack, self.name))
        nodegroup_status = self.wait_for_system_nodes()
        object_changes = [c for c in plan.changes if c.kind != "helm-release"]
        apply_objects(self.kube, self._objects(), object_changes)
        policies = [o["metadata"]["name"] for o in self._objects() if o["kind"] != "Namespace"]
        return {
            "cilium_release": release.ref,
            "cilium_chart_version": release.version,
            "workload_namespaces": ",".join(self.spec.cilium.workload_namespaces),
            "network_policies": ",".join(policies),
            "system_nodegroup_status": nodegroup_status,
        }
