"""gpu-karpenter-controller: the Karpenter Helm release (2 replicas, PDB, interruption queue)."""

from __future__ import annotations

from typing import ClassVar

from infra_assets import manifests
from infra_assets.helm import ReleaseSpec, apply_release, plan_release
from infra_assets.kube import ObjectRef, owner_labels
from infra_assets.plan import Change, FieldDiff, Plan
from infra_assets.spec.kubernetes import karpenter_controller_warnings
from infra_assets.units.kube_unit import KubeUnit


class KarpenterControllerUnit(KubeUnit):
    """The Karpenter 1.8.1 controller: 2 replicas, a disruption budget, the interruption queue."""

    name: ClassVar[str] = "gpu-karpenter-controller"

    def _release(self) -> ReleaseSpec:
        karpenter = self.spec.karpenter_controller
        return ReleaseSpec(
            name=karpenter.release,
            namespace=self.spec.karpenter_iam.namespace,
            chart=karpenter.chart,
            version=karpenter.chart_version,
            values=manifests.karpenter_values(self.spec),
        )

    def _live_objects(self, release: ReleaseSpec) -> list[Change]:
        """The chart's Deployment and PDB as they run: edits made behind Helm's back (kubectl
        scale, edit) do not show in the release, only here."""
        karpenter = self.spec.karpenter_controller
        # The chart names both after the release (its fullname for release == chart name).
        checks = [
            ("Deployment", "spec.replicas", karpenter.replicas),
            ("PodDisruptionBudget", "spec.maxUnavailable", karpenter.pdb_max_unavailable),
        ]
        changes = []
        for kind, path, want in checks:
            ref = ObjectRef(kind, release.name, release.namespace)
            live = self.kube.get(ref)
            if live is None:
                changes.append(
                    Change("update", kind, str(ref), None, (FieldDiff(path, None, want),))
                )
                continue
            have = live
            for key in path.split("."):
                have = (have or {}).get(key)
            uid = live["metadata"].get("uid")
            diffs = () if have == want else (FieldDiff(path, have, want),)
            changes.append(Change("update" if diffs else "keep", kind, str(ref), uid, diffs))
        return changes

    def plan(self) -> Plan:
        release = self._release()
        warnings = [
            *self.cluster_warnings(),
            *karpenter_controller_warnings(self.spec.karpenter_controller),
        ]
        change, conflict, live = plan_release(self.kube, release, self.spec.stack)
        if conflict:
            return Plan(self.name, (), tuple(warnings), (conflict,))
        changes = [change]
        if live is not None:
            changes += self._live_objects(release)
        return Plan(self.name, tuple(changes), tuple(warnings))

    def _apply(self, plan: Plan) -> dict[str, str]:
        release = self._release()
        release_change = plan.changes[0]
        if release_change.action == "keep" and plan.has_changes:
            # Only the running objects drifted: an upgrade to the same chart and values puts
            # them back (Helm 3 three-way merge against the live state).
            release_change = Change("update", "helm-release", release.ref)
        if release_change.action != "keep":
            self.wait_for_system_nodes()
        apply_release(self.helm, release, release_change, owner_labels(self.stack, self.name))
        return {
            "karpenter_release": release.ref,
            "karpenter_chart_version": release.version,
            "karpenter_replicas": str(self.spec.karpenter_controller.replicas),
            "interruption_queue": manifests.karpenter_interruption_queue_name(self.spec),
        }
