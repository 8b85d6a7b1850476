"""The declared staging cluster of seed 000: every number of the stack, in this one package.

`aws.py` holds the AWS units (VPC, placement group, EKS, Karpenter IAM, the workload's bucket
and identity); `kubernetes.py` the
in-cluster units (Cilium, Karpenter controller, node pools). `ClusterSpec` composes them.
"""

from __future__ import annotations

import dataclasses

from infra_assets.spec.aws import (
    DagsterAwsSpec,
    EksSpec,
    KarpenterIamSpec,
    PlacementGroupSpec,
    VpcSpec,
    WorkloadSpec,
)
from infra_assets.spec.kubernetes import (
    CiliumSpec,
    KarpenterControllerSpec,
    NodePoolSpec,
    default_nodepools,
)

OWNER_TAG = "gpu-analysis/stack"  # tag key (AWS) / label key (Kubernetes) marking what we own


@dataclasses.dataclass(frozen=True)
class ClusterSpec:
    stack: str = "staging-eu-west-3-gpu-analysis"  # value of OWNER_TAG on everything we create
    environment: str = "staging"
    region: str = "eu-west-3"
    account_id: str = "222222222222"
    cluster_name: str = "staging-eu-west-3-gpu-analysis"
    vpc: VpcSpec = dataclasses.field(default_factory=VpcSpec)
    placement_group: PlacementGroupSpec = dataclasses.field(default_factory=PlacementGroupSpec)
    eks: EksSpec = dataclasses.field(default_factory=EksSpec)
    karpenter_iam: KarpenterIamSpec = dataclasses.field(default_factory=KarpenterIamSpec)
    workload: WorkloadSpec = dataclasses.field(default_factory=WorkloadSpec)
    dagster_aws: DagsterAwsSpec = dataclasses.field(default_factory=DagsterAwsSpec)
    cilium: CiliumSpec = dataclasses.field(default_factory=CiliumSpec)
    karpenter_controller: KarpenterControllerSpec = dataclasses.field(
        default_factory=KarpenterControllerSpec
    )
    nodepools: tuple[NodePoolSpec, ...] = dataclasses.field(default_factory=default_nodepools)

    @property
    def owner_tags(self) -> dict[str, str]:
        return {OWNER_TAG: self.stack}
