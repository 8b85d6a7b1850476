"""gpu-karpenter-iam on the emulated account: IAM delay, unclear answers, teardown leftovers."""

from __future__ import annotations

import time

import pytest
from botocore.exceptions import ClientError

import infra_assets.aws_iam
from infra_assets.spec import OWNER_TAG
from infra_assets.unit import UnitContext
from infra_assets.units.karpenter_iam import KarpenterIamUnit


def our_cluster(ctx: UnitContext) -> str:
    """An ACTIVE EKS cluster tagged as this stack's, made directly (gpu-eks is not under test).

    Its role is new, so EKS refuses it until IAM has propagated it (the emulator's delay): the
    helper waits that out as a caller must.
    """
    ec2, eks, iam = (ctx.aws.client(s) for s in ("ec2", "eks", "iam"))
    vpc = ec2.create_vpc(CidrBlock="10.99.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.99.0.0/24")["Subnet"]["SubnetId"]
    role = iam.create_role(RoleName="test-cluster-role", AssumeRolePolicyDocument="{}")["Role"]
    name = ctx.spec.cluster_name
    deadline = time.monotonic() + 30
    while True:
        try:
            eks.create_cluster(
                name=name,
                roleArn=role["Arn"],
                resourcesVpcConfig={"subnetIds": [subnet]},
                tags={OWNER_TAG: ctx.spec.stack},
            )
            break
        except ClientError as exc:
            if "InvalidParameter" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    while eks.describe_cluster(name=name)["cluster"]["status"] != "ACTIVE":
        assert time.monotonic() < deadline, "cluster never became ACTIVE"
        time.sleep(0.2)
    return name


def roles_of(ctx: UnitContext) -> list[str]:
    iam = ctx.aws.client("iam")
    return sorted(
        r["RoleName"]
        for page in iam.get_paginator("list_roles").paginate()
        for r in page["Roles"]
        if r["RoleName"].startswith("Karpenter")
    )


def test_association_and_access_entry_wait_for_iam_to_propagate_the_new_roles(aws_ctx):
    """The roles are created a moment before: EKS first refuses them, the apply retries."""
    our_cluster(aws_ctx)
    outputs = KarpenterIamUnit(aws_ctx).apply().outputs
    assert outputs["pod_identity_association_id"]
    eks = aws_ctx.aws.client("eks")
    entries = eks.list_access_entries(clusterName=aws_ctx.spec.cluster_name)["accessEntries"]
    assert entries == [
        outputs["controller_role_arn"].replace("KarpenterController", "KarpenterNode")
    ]
    assert not KarpenterIamUnit(aws_ctx).plan().has_changes


def test_a_role_that_never_becomes_visible_ends_in_a_clear_error(
    aws_ctx, aws_server, monkeypatch: pytest.MonkeyPatch
):
    our_cluster(aws_ctx)
    aws_server.configure(iam_propagation_s=3600)
    monkeypatch.setattr(infra_assets.aws_iam, "PRINCIPAL_PROPAGATION_TIMEOUT_S", 1.0, raising=False)
    started = time.monotonic()
    with pytest.raises(
        infra_assets.aws_iam.PrincipalNotVisible, match=r"EKS still refuses the IAM role after 1 s"
    ):
        KarpenterIamUnit(aws_ctx).apply()
    assert time.monotonic() - started < 30  # bounded: it gave up, it did not hang


@pytest.mark.parametrize(
    "action", ["CreateRole", "CreatePodIdentityAssociation", "CreateAccessEntry"]
)
def test_a_create_that_succeeded_behind_an_error_is_adopted_not_repeated(
    aws_ctx, aws_server, action
):
    our_cluster(aws_ctx)
    aws_server.inject(action, "ambiguous")
    KarpenterIamUnit(aws_ctx).apply()
    assert aws_server.pending_faults() == {}  # the fault was played

    assert roles_of(aws_ctx) == sorted(
        [
            KarpenterIamUnit(aws_ctx).controller_role_name,
            KarpenterIamUnit(aws_ctx).node_role_name,
        ]
    )
    eks = aws_ctx.aws.client("eks")
    name = aws_ctx.spec.cluster_name
    assert len(eks.list_pod_identity_associations(clusterName=name)["associations"]) == 1
    assert len(eks.list_access_entries(clusterName=name)["accessEntries"]) == 1
    assert not KarpenterIamUnit(aws_ctx).plan().has_changes


def make_profile(iam, name: str, tags: dict[str, str], role: str | None) -> None:
    iam.create_instance_profile(
        InstanceProfileName=name, Tags=[{"Key": k, "Value": v} for k, v in tags.items()]
    )
    if role:
        iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=role)


def test_teardown_deletes_the_instance_profiles_karpenter_made_for_this_cluster_only(aws_ctx):
    our_cluster(aws_ctx)
    unit = KarpenterIamUnit(aws_ctx)
    unit.apply()
    iam = aws_ctx.aws.client("iam")
    cluster = aws_ctx.spec.cluster_name

    def karpenter_tags(cluster: str, region: str = "eu-west-3") -> dict[str, str]:
        # What Karpenter v1 tags the instance profile of an EC2NodeClass with.
        return {
            f"kubernetes.io/cluster/{cluster}": "owned",
            "eks:eks-cluster-name": cluster,
            "topology.kubernetes.io/region": region,
            "karpenter.k8s.aws/ec2nodeclass": "gpu",
        }

    iam.create_role(RoleName="their-node-role", AssumeRolePolicyDocument="{}")
    make_profile(iam, f"{cluster}_111", karpenter_tags(cluster), unit.node_role_name)
    make_profile(iam, f"{cluster}_222", karpenter_tags(cluster), None)
    make_profile(iam, "other_333", karpenter_tags("other-cluster"), "their-node-role")
    make_profile(iam, "other_region_444", karpenter_tags(cluster, "us-east-1"), None)
    make_profile(iam, "hand_made", {}, "their-node-role")
    # Our cluster's tag alone, without Karpenter's node-class tag: not Karpenter's, not ours.
    only_cluster = {f"kubernetes.io/cluster/{cluster}": "owned", "eks:eks-cluster-name": cluster}
    make_profile(iam, "only_cluster_tag", only_cluster, None)

    plan = unit.destroy()

    left = {
        p["InstanceProfileName"]: [r["RoleName"] for r in p["Roles"]]
        for p in iam.list_instance_profiles()["InstanceProfiles"]
    }
    assert left == {
        "other_333": ["their-node-role"],
        "other_region_444": [],
        "hand_made": ["their-node-role"],
        "only_cluster_tag": [],
    }
    deleted = {c.name for c in plan.changes if c.kind == "iam-instance-profile"}
    assert deleted == {f"{cluster}_111", f"{cluster}_222"}
    assert roles_of(aws_ctx) == []
