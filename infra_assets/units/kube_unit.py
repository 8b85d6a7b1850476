"""What the three in-cluster units share: the cluster guard, refusing conflicts, Helm access."""

from __future__ import annotations

import abc
from typing import Any, ClassVar

from infra_assets.helm import Helm
from infra_assets.kube import NO_CLUSTER_WARNING, Kube, refuse_conflicts
from infra_assets.plan import Plan
from infra_assets.unit import ApplyResult, NoClusterConfigured, UnitContext


class KubeUnit(abc.ABC):
    """Base of the Kubernetes units: subclasses implement `plan()`, `_apply(plan)`, `_destroy()`.

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

    def cluster_warnings(self) -> list[str]:
        return [] if self.kube is not None else [NO_CLUSTER_WARNING]

    # What subclasses provide.
    @abc.abstractmethod
    def plan(self) -> Plan: ...

    @abc.abstractmethod
    def _apply(self, plan: Plan) -> dict[str, Any]:
        """Carry out `plan` (conflicts already refused); returns the unit's outputs."""

    @abc.abstractmethod
    def _destroy(self) -> Plan: ...

    # Shared behaviour.
    def apply(self) -> ApplyResult:
        if self.kube is None:
            raise NoClusterConfigured(
                f"error: {self.name}: {NO_CLUSTER_WARNING}; set KUBECONFIG or run in-cluster"
            )
        plan = self.plan()
        refuse_conflicts(plan, self.stack)
        return ApplyResult(plan, self._apply(plan))

    def destroy(self) -> Plan:
        if self.kube is None:
            return Plan(self.name, (), (NO_CLUSTER_WARNING,))
        return self._destroy()
