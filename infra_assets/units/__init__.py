"""The seven deployment units of seed 000, then the workload's AWS side and Dagster on the
cluster (its AWS side, its release), in stack order, and who depends on whom."""

from __future__ import annotations

from infra_assets.unit import DeploymentUnit
from infra_assets.units.cilium import CiliumUnit
from infra_assets.units.dagster_aws import DagsterAwsUnit
from infra_assets.units.dagster_release import DagsterReleaseUnit
from infra_assets.units.eks import EksUnit
from infra_assets.units.karpenter_controller import KarpenterControllerUnit
from infra_assets.units.karpenter_iam import KarpenterIamUnit
from infra_assets.units.nodepools import NodePoolsUnit
from infra_assets.units.placement_group import PlacementGroupUnit
from infra_assets.units.vpc import VpcUnit
from infra_assets.units.workload import WorkloadAwsUnit

# Stack order: each unit comes after everything it depends on (seed 000, "Deployment Stack").
UNITS: tuple[type[DeploymentUnit], ...] = (
    VpcUnit,
    PlacementGroupUnit,
    EksUnit,
    CiliumUnit,
    KarpenterIamUnit,
    WorkloadAwsUnit,
    KarpenterControllerUnit,
    NodePoolsUnit,
    DagsterAwsUnit,
    DagsterReleaseUnit,
)

DEPENDS_ON: dict[str, tuple[str, ...]] = {
    "gpu-vpc": (),
    "gpu-placement-group": ("gpu-vpc",),
    "gpu-eks": ("gpu-placement-group",),
    "gpu-cilium": ("gpu-eks",),
    "gpu-karpenter-iam": ("gpu-eks",),
    # After the seed's seven: the match bucket and the workers' identity (needs the cluster for
    # the Pod Identity association).
    "gpu-workload-aws": ("gpu-eks",),
    "gpu-karpenter-controller": ("gpu-karpenter-iam",),
    "gpu-karpenter-nodepools": ("gpu-karpenter-controller",),
    # Dagster on the cluster: its AWS side (image repository, Postgres, identity), then the
    # release itself, which needs the node pools its pods run on.
    "gpu-dagster-aws": ("gpu-workload-aws",),
    "gpu-dagster": ("gpu-dagster-aws", "gpu-karpenter-nodepools"),
}

# The units that talk to AWS only (the others need a Kubernetes cluster).
AWS_UNITS: tuple[type[DeploymentUnit], ...] = (
    VpcUnit,
    PlacementGroupUnit,
    EksUnit,
    KarpenterIamUnit,
    WorkloadAwsUnit,
    DagsterAwsUnit,
)

TEARDOWN_ORDER: tuple[type[DeploymentUnit], ...] = tuple(reversed(UNITS))


def asset_name(unit: type[DeploymentUnit]) -> str:
    """ "gpu-karpenter-iam" -> "gpu_karpenter_iam", the Dagster asset of the unit."""
    return unit.name.replace("-", "_")


def unit_by_name(name: str) -> type[DeploymentUnit]:
    for unit in UNITS:
        if unit.name == name or asset_name(unit) == name:
            return unit
    raise KeyError(f"no deployment unit {name!r}; known: {', '.join(u.name for u in UNITS)}")
