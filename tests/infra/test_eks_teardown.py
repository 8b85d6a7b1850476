"""gpu-eks teardown: previewed first (deletes nothing), then it leaves nothing of ours."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from infra_assets.spec import OWNER_TAG
from infra_assets.units.eks import EksUnit
from infra_assets.units.placement_group import PlacementGroupUnit
from infra_assets.units.vpc import VpcUnit


@pytest.fixture
def applied(aws_ctx, aws_server):
    aws_server.cni_ready = lambda _cluster: True
    VpcUnit(aws_ctx).apply()
    PlacementGroupUnit(aws_ctx).apply()
    EksUnit(aws_ctx).apply()
    return aws_ctx


def test_teardown_preview_deletes_nothing_then_teardown_leaves_nothing_of_ours(applied):
    ctx = applied
    ec2, eks, iam = (ctx.aws.client(s) for s in ("ec2", "eks", "iam"))
    name = ctx.spec.cluster_name

    preview = EksUnit(ctx).destroy_plan()

    assert [(c.action, c.kind) for c in preview.changes] == [
        ("delete", "eks-nodegroup"),
        ("delete", "pod-identity-association"),
        ("delete", "eks-addon"),
        ("delete", "eks-addon"),
        ("delete", "eks-addon"),
        ("delete", "security-group-rules"),
        ("delete", "eks-cluster"),
        ("delete", "launch-template"),
        ("delete", "security-group"),
        ("delete", "iam-role"),
        ("delete", "iam-role"),
        ("delete", "iam-role"),
    ]
    assert eks.describe_cluster(name=name)["cluster"]["status"] == "ACTIVE"  # still there
    assert PlacementGroupUnit(ctx).destroy_plan().changes[0].kind == "placement-group"

    cluster_sg = eks.describe_cluster(name=name)["cluster"]["resourcesVpcConfig"][
        "clusterSecurityGroupId"
    ]
    (nodes_sg,) = [c.resource_id for c in preview.changes if c.kind == "security-group"]

    done = EksUnit(ctx).destroy()
    PlacementGroupUnit(ctx).destroy()

    assert done.changes == preview.changes
    assert eks.list_clusters()["clusters"] == []
    owned = [{"Name": f"tag:{OWNER_TAG}", "Values": [ctx.spec.stack]}]
    assert ec2.describe_launch_templates(Filters=owned)["LaunchTemplates"] == []
    assert [
        g["GroupName"]
        for g in ec2.describe_security_groups(Filters=owned)["SecurityGroups"]
        if g["GroupName"] != "default"
    ] == []
    assert ec2.describe_placement_groups()["PlacementGroups"] == []
    # EC2 refuses to delete a group another group's rule names (DependencyViolation), and EKS
    # then leaves its cluster SG behind: the rules between the two groups went first, so both
    # are gone.
    for group_id in (cluster_sg, nodes_sg):
        with pytest.raises(ClientError, match=r"InvalidGroup\.NotFound"):
            ec2.describe_security_groups(GroupIds=[group_id])
    roles = [r["RoleName"] for r in iam.list_roles()["Roles"] if r["RoleName"].startswith(name)]
    assert roles == []
