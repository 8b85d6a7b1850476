"""network_paths: the flows the cluster needs, against the security groups gpu-eks leaves."""

from __future__ import annotations

import dagster as dg
import pytest

from infra_assets.aws_access import AwsClients
from infra_assets.network_paths import (
    CONTROL_PLANE,
    KARPENTER_NODES,
    SYSTEM_NODES,
    Topology,
    check_network_paths,
    evaluate,
    network_paths_check,
    required_flows,
)
from infra_assets.resources import InfraResource
from infra_assets.units.eks import EksUnit
from infra_assets.units.vpc import VpcUnit


@pytest.fixture
def eks_ctx(aws_ctx, aws_server):
    aws_server.cni_ready = lambda _cluster: True
    VpcUnit(aws_ctx).apply()
    return aws_ctx


def test_every_flow_is_open_after_gpu_eks(eks_ctx):
    EksUnit(eks_ctx).apply()

    report = check_network_paths(AwsClients(eks_ctx), eks_ctx.spec)

    assert report.problems == ()
    assert report.missing == ()
    assert len(report.checked) == len(required_flows())
    assert not EksUnit(eks_ctx).plan().has_changes


def test_security_group_islands_fail_and_name_the_missing_rule(aws_ctx):
    """The old layout: system nodes on the EKS cluster SG only, Karpenter's nodes on ours only,
    each group admitting only itself (and the control plane wearing both)."""
    ec2 = aws_ctx.aws.client("ec2")
    vpc_id = ec2.create_vpc(CidrBlock="10.152.0.0/16")["Vpc"]["VpcId"]
    ids = {}
    for name in ("eks-cluster-sg", "nodes"):
        ids[name] = ec2.create_security_group(GroupName=name, Description=name, VpcId=vpc_id)[
            "GroupId"
        ]
        ec2.authorize_security_group_ingress(
            GroupId=ids[name],
            IpPermissions=[{"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": ids[name]}]}],
        )
    groups = {
        g["GroupId"]: g
        for g in ec2.describe_security_groups(GroupIds=list(ids.values()))["SecurityGroups"]
    }
    topology = Topology(
        vpc_cidr="10.152.0.0/16",
        groups_of={
            CONTROL_PLANE: (ids["eks-cluster-sg"], ids["nodes"]),
            SYSTEM_NODES: (ids["eks-cluster-sg"],),
            KARPENTER_NODES: (ids["nodes"],),
        },
        groups=groups,
        labels={ids["eks-cluster-sg"]: f"{ids['eks-cluster-sg']} (cluster SG)"},
    )

    report = evaluate(topology)

    assert not report.passed
    closed = {line.split(":")[0] for line in report.missing}
    assert "pods on karpenter nodes -> CoreDNS on system nodes 53/udp" in closed
    assert "pods on system nodes -> CoreDNS on karpenter nodes 53/tcp" in closed
    assert "karpenter nodes -> WireGuard on system nodes 51871/udp" in closed
    assert "system nodes -> Cilium health on karpenter nodes 4240/tcp" in closed
    assert "system nodes -> Hubble on karpenter nodes 4244/tcp" in closed
    # Within one class, and with the control plane (it wears both groups), all is open.
    assert not any(line.startswith("system nodes -> WireGuard on system") for line in closed)
    assert not any("control plane" in line for line in closed)
    line = next(m for m in report.missing if m.startswith("pods on karpenter nodes -> CoreDNS"))
    assert line == (
        "pods on karpenter nodes -> CoreDNS on system nodes 53/udp: no ingress rule of "
        f"{ids['eks-cluster-sg']} (cluster SG) admits udp 53 from {ids['nodes']}"
    )


def evaluate_check(spec) -> dg.AssetCheckEvaluation:
    """The `network_paths` check run by Dagster, with gpu_eks stood in for (what the unit left
    in AWS is what the check reads)."""

    @dg.asset(name="gpu_eks")
    def gpu_eks_stand_in() -> None:
        """Stands in for the gpu_eks asset: the test set up AWS itself."""

    result = dg.materialize(
        [gpu_eks_stand_in, network_paths_check],
        resources={
            "infra": InfraResource(
                aws_region=spec.region, cluster_name=spec.cluster_name, environment="staging"
            )
        },
    )
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.check_name == "network_paths"
    return evaluation


def test_the_asset_check_runs_in_dagster(eks_ctx, no_kubeconfig):
    EksUnit(eks_ctx).apply()

    evaluation = evaluate_check(eks_ctx.spec)
    assert evaluation.passed, evaluation.description


def test_with_no_cluster_the_check_says_not_deployed_as_a_warning(aws_ctx, no_kubeconfig):
    """After a teardown (or before the first apply) nothing is there to check: a warning that
    says so, not an error about closed flows."""
    evaluation = evaluate_check(aws_ctx.spec)
    assert not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.WARN
    assert evaluation.description.startswith("not deployed: EKS cluster")
    assert evaluation.metadata["flows_checked"].value == 0
