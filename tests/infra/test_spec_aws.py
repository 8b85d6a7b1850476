"""The AWS half of the spec carries seed 000's values."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest

from infra_assets.spec import ClusterSpec
from infra_assets.spec.aws import NodeGroupSpec, VpcSpec


def test_vpc_has_the_seed_cidr_plan():
    vpc = ClusterSpec().vpc
    assert vpc.cidr == "10.152.0.0/16"
    assert vpc.availability_zones == ("eu-west-3a", "eu-west-3b", "eu-west-3c")
    by_tier = {
        tier: [s.cidr for s in vpc.subnets if s.tier == tier]
        for tier in ("private", "public", "database")
    }
    assert by_tier == {
        "private": ["10.152.0.0/20", "10.152.16.0/20", "10.152.32.0/20"],
        "public": ["10.152.64.0/20", "10.152.80.0/20", "10.152.96.0/20"],
        "database": ["10.152.112.0/20", "10.152.128.0/20", "10.152.144.0/20"],
    }
    network = ipaddress.ip_network(vpc.cidr)
    subnets = [ipaddress.ip_network(s.cidr) for s in vpc.subnets]
    assert all(s.subnet_of(network) for s in subnets)
    assert not any(a.overlaps(b) for i, a in enumerate(subnets) for b in subnets[i + 1 :])
    assert vpc.one_nat_gateway_per_az


def test_eks_placement_and_karpenter_iam_defaults():
    spec = ClusterSpec()
    assert (spec.eks.version, spec.eks.endpoint_private_access) == ("1.32", True)
    assert spec.eks.endpoint_public_access is False
    group = spec.eks.system_node_group
    assert (group.instance_types, group.min_size, group.max_size) == (("m6i.large",), 2, 3)
    assert group.ami_type.startswith("BOTTLEROCKET") and group.data_volume_encrypted
    assert (spec.placement_group.strategy, spec.placement_group.availability_zone) == (
        "cluster",
        "eu-west-3a",
    )
    rules = {r.detail_type for r in spec.karpenter_iam.interruption_rules}
    assert rules == {
        "EC2 Spot Instance Interruption Warning",
        "EC2 Instance Rebalance Recommendation",
        "EC2 Instance State-change Notification",
        "AWS Health Event",
    }


def test_inconsistent_values_are_refused_with_the_field_named():
    with pytest.raises(ValueError, match="private_subnets: need one CIDR per availability zone"):
        VpcSpec(private_subnets=("10.152.0.0/20",))
    with pytest.raises(ValueError, match="min_size <= desired_size <= max_size"):
        NodeGroupSpec(min_size=3, desired_size=2)


def test_the_profile_names_the_stack_and_can_move_its_region():
    from gpu_analysis.profile import load_profile
    from infra_assets.resources import InfraResource, cluster_spec_for

    profile = load_profile("staging")
    staging = InfraResource.from_profile(profile).cluster_spec()
    # The staging profile is exactly the seed's cluster, with the profile's match bucket.
    seed = ClusterSpec()
    assert staging.workload.bucket == profile.bucket
    assert staging == dataclasses.replace(
        seed, workload=dataclasses.replace(seed.workload, bucket=profile.bucket)
    )
    local = InfraResource.from_profile(load_profile("local")).cluster_spec()
    assert (local.stack, local.cluster_name) == ("local-gpu-analysis", "local-gpu-analysis")

    moved = cluster_spec_for("eu-west-1", "c", "test")
    assert moved.vpc.availability_zones == ("eu-west-1a", "eu-west-1b", "eu-west-1c")
    assert moved.placement_group.availability_zone == "eu-west-1a"
    assert moved.vpc.cidr == "10.152.0.0/16"
