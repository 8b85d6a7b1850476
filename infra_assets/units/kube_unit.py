"""What the three in-cluster units share: the cluster guard, refusing conflicts, Helm access."""

from __future__ import annotations

import abc
from typing import Any, ClassVar

from infra_assets.helm import Helm, ReleaseSpec, plan_release
from infra_assets.kube import (
    NO_CLUSTER_WARNING,
    Kube,
    ObjectRef,
    plan_owned_deletes,
    refuse_conflicts,
)
from infra_assets.plan import Change, Plan, plan_to_apply
from infra_assets.unit import ApplyResult, NoClusterConfigured, UnitContext


class KubeUnit(abc.ABC):
    """Base of the Kubernetes units: subclasses implement `plan()` and `_apply(plan)`, and
    declare what they own with `_objects()` (plain objects, in apply order) and/or `_release()`
    (their Helm release); teardown is derived from those.

    Without a cluster (no kubeconfig, no in-cluster config) a unit still plans, with a warning
    that says so; applying refuses with one line that says what to set, and teardown is a
    plan that changes nothing.
    """

    name: ClassVar[str]

    def __init__(self, ctx: UnitContext) -> None:
        self.ctx = ctx
        self.spec = ctx.spec
        self.stack = ctx.spec.stack
        self.kube = Kube(ctx.kube) if ctx.kube is not None else None

    @property
    def helm(self) -> Helm:
        return Helm(self.ctx.helm_binary, self.ctx.kube, self.ctx.log)

    def wait_for_system_nodes(self) -> str:
        """Wait until the system node group gpu-eks created is ACTIVE; say so if it failed.

        gpu-eks creates the group without waiting: its nodes stay NotReady until a network
        plugin runs on them, and EKS fails a group whose nodes never join. gpu-cilium waits
        here once Cilium is installed; the Karpenter controller, which runs beside gpu-cilium
        in the asset graph, waits here before its release (its pods need Ready nodes).
        """
        from botocore.exceptions import NoCredentialsError

        from infra_assets.aws_access import AwsClients
        from infra_assets.units.eks import wait_for_nodegroup_active

        group = self.spec.eks.system_node_group.name
        log = self.ctx.log
        try:
            nodegroup = wait_for_nodegroup_active(
                AwsClients(self.ctx), self.spec.cluster_name, group, log
            )
        except NoCredentialsError:
            if log is not None:
                log.warning(
                    f"{self.name}: no AWS credentials: cannot confirm that node group {group} "
                    "became ACTIVE"
                )
            return "unknown (no AWS credentials)"
        return str(nodegroup.get("status"))

    def cluster_warnings(self) -> list[str]:
        return [] if self.kube is not None else [NO_CLUSTER_WARNING]

    # What subclasses provide.
    @abc.abstractmethod
    def plan(self) -> Plan: ...

    @abc.abstractmethod
    def _apply(self, plan: Plan) -> dict[str, Any]:
        """Carry out `plan` (conflicts already refused); returns the unit's outputs."""

    def _owned_kinds(self) -> list[str]:
        """The kinds of plain objects the unit owns, in deletion order: the reverse of the
        apply order of `_objects()` (policies before their namespace, pools before classes)."""
        objects = getattr(self, "_objects", None)
        kinds = list(dict.fromkeys(o["kind"] for o in objects())) if objects else []
        return kinds[::-1]

    def _owned_release(self) -> ReleaseSpec | None:
        release = getattr(self, "_release", None)
        return release() if release else None

    # Shared behaviour.
    def apply(self, plan: Plan | None = None) -> ApplyResult:
        """Carry out `plan` as given (None: plan now and carry that out): an update sends the
        plan's own diffs. As the AWS units do, a given plan is first checked against a fresh
        observation and refused with StalePlan when the live state now plans other changes
        (someone changed something since the plan was shown): nothing is applied then."""
        if self.kube is None:
            raise NoClusterConfigured(
                f"error: {self.name}: {NO_CLUSTER_WARNING}; set KUBECONFIG or run in-cluster"
            )
        if plan is not None and plan.unit != self.name:
            raise ValueError(f"error: {self.name}: was given the plan of {plan.unit}")
        plan = plan_to_apply(self.name, plan, self.plan())
        refuse_conflicts(plan, self.stack)
        return ApplyResult(plan, self._apply(plan))

    def destroy_plan(self) -> Plan:
        """What `destroy()` would delete: our objects, then our Helm release. Deletes nothing.
        A release that is not ours is left alone, and the plan says so."""
        if self.kube is None:
            return Plan(self.name, (), (NO_CLUSTER_WARNING,))
        changes = plan_owned_deletes(self.kube, self._owned_kinds(), self.stack, self.name)
        warnings: list[str] = []
        release = self._owned_release()
        if release is not None:
            change, conflict, live = plan_release(self.kube, release, self.stack)
            if live is not None and change is None:
                warnings.append(f"left alone: {conflict}")
            elif live is not None:
                changes.append(Change("delete", "helm-release", release.ref, change.resource_id))
        return Plan(self.name, tuple(changes), tuple(warnings))

    def destroy(self, plan: Plan | None = None) -> Plan:
        """Carry out a teardown plan (None: `destroy_plan()` now); returns what was deleted."""
        if self.kube is None:
            return Plan(self.name, (), (NO_CLUSTER_WARNING,))
        plan = self.destroy_plan() if plan is None else plan
        if plan.unit != self.name or {c.action for c in plan.changes} - {"delete"}:
            raise ValueError(f"error: {self.name}: not a teardown plan of this unit: {plan.unit}")
        done: list[Change] = []
        for change in plan.changes:
            if change.kind == "helm-release":
                namespace, _, release = change.name.partition("/")
                self.helm.uninstall(release, namespace)
                done.append(change)
            elif self.kube.delete(ObjectRef.of_change(change)):
                done.append(change)
        return Plan(self.name, tuple(done), plan.warnings)
