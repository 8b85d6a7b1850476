"""The interface every deployment unit implements: observe + plan, apply, destroy what it owns."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from infra_assets.plan import Plan

if TYPE_CHECKING:
    import boto3
    import kubernetes.client

    from infra_assets.spec import ClusterSpec


class NoClusterConfigured(RuntimeError):
    """A Kubernetes unit must change a cluster, but no kubeconfig or in-cluster config exists."""


@dataclasses.dataclass
class UnitContext:
    """What a unit needs to reach the world. Built once per run from the profile."""

    spec: ClusterSpec
    aws: boto3.Session  # endpoints from the standard boto3 config (AWS_ENDPOINT_URL in tests)
    kube: kubernetes.client.ApiClient | None = None  # None: no cluster configured
    helm_binary: str = "helm"
    log: Any = None  # a logging.Logger-like object (Dagster's context.log in assets)


@dataclasses.dataclass(frozen=True)
class ApplyResult:
    plan: Plan  # what was done
    outputs: dict[str, str]  # ids and endpoints others and people want: vpc_id, cluster_arn, ...


class DeploymentUnit(Protocol):
    """One of the seven units of the stack, in the stack order of seed 000."""

    name: ClassVar[str]  # "gpu-vpc", "gpu-placement-group", ... as in the seed

    def __init__(self, ctx: UnitContext) -> None: ...

    def plan(self) -> Plan:
        """Observe the live state and compare it with the spec. Changes nothing."""
        ...

    def apply(self, plan: Plan | None = None) -> ApplyResult:
        """Carry out `plan` (a value from `plan()`, shown to someone), or a fresh plan when None.

        The plan carried out is the plan given: a unit re-observes once (it needs the live ids
        anyway) and raises `infra_assets.plan.StalePlan` when the live state no longer plans the
        same changes, rather than doing something else than was shown. A second call plans and
        does nothing.
        """
        ...

    def destroy(self) -> Plan:
        """Delete what this stack owns (by ownership tag/label) and nothing else."""
        ...


class PreviewableTeardown(Protocol):
    """A unit whose teardown can be previewed (the `infra_teardown_preview` job).

    `destroy_plan()` observes and returns the Plan of "delete" changes that `destroy()` would
    carry out, in the order it would, changing nothing; warnings name what is left alone. A unit
    that has it should make `destroy()` carry out exactly that plan. Units without it are
    previewed from `plan()` (every live resource of the spec), which can miss owned extras.
    """

    def destroy_plan(self) -> Plan: ...


def has_destroy_plan(unit: object) -> bool:
    return callable(getattr(unit, "destroy_plan", None))
