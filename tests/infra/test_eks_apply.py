"""gpu-eks on an account that behaves like AWS: IAM delay, ambiguous creates, what it sets."""

from __future__ import annotations

import json
import urllib.parse

import pytest

from infra_assets.aws_access import AwsClients, tag_dict
from infra_assets.spec import OWNER_TAG
from infra_assets.spec.aws import NodeGroupSpec
from infra_assets.units.aws_unit import NeedsReplacement
from infra_assets.units.eks import EksUnit, wait_for_nodegroup_active
from infra_assets.units.placement_group import PlacementGroupUnit
from infra_assets.units.vpc import VpcUnit


@pytest.fixture
def eks_ctx(aws_ctx, aws_server):
    """The VPC applied; the network plugin counted as running, so node groups turn ACTIVE."""
    aws_server.cni_ready = lambda _cluster: True
    VpcUnit(aws_ctx).apply()
    return aws_ctx


def owned(ec2, method: str, key: str, stack: str, **kwargs) -> list:
    return getattr(ec2, method)(Filters=[{"Name": f"tag:{OWNER_TAG}", "Values": [stack]}])[key]


def test_apply_waits_out_iam_propagation_and_converges(eks_ctx, aws_server):
    # EKS refuses a role for a while after CreateRole (IAM is eventually consistent).
    aws_server.configure(iam_propagation_s=3.0)

    EksUnit(eks_ctx).apply()

    eks = eks_ctx.aws.client("eks")
    name = eks_ctx.spec.cluster_name
    assert eks.describe_cluster(name=name)["cluster"]["roleArn"].endswith(f"{name}-cluster")
    assert eks.describe_nodegroup(clusterName=name, nodegroupName="system")["nodegroup"][
        "nodeRole"
    ].endswith(f"{name}-system-nodes")
    (association,) = eks.list_pod_identity_associations(clusterName=name)["associations"]
    assert (association["namespace"], association["serviceAccount"]) == (
        "kube-system",
        "cilium-operator",
    )
    assert not EksUnit(eks_ctx).plan().has_changes


def test_ambiguous_creates_leave_one_of_each(eks_ctx, aws_server):
    # Each create is carried out on the server, then answered 500 (the client sees a failure).
    for action in (
        "CreateSecurityGroup",
        "CreateLaunchTemplate",
        "CreateCluster",
        "CreatePodIdentityAssociation",
        "CreateNodegroup",
        "CreatePlacementGroup",
    ):
        aws_server.inject(action, "ambiguous")

    PlacementGroupUnit(eks_ctx).apply()
    EksUnit(eks_ctx).apply()

    ec2, eks = eks_ctx.aws.client("ec2"), eks_ctx.aws.client("eks")
    stack, name = eks_ctx.spec.stack, eks_ctx.spec.cluster_name
    assert eks.list_clusters()["clusters"] == [name]
    assert eks.list_nodegroups(clusterName=name)["nodegroups"] == ["system"]
    assert len(eks.list_pod_identity_associations(clusterName=name)["associations"]) == 1
    assert len(owned(ec2, "describe_security_groups", "SecurityGroups", stack)) == 1
    assert len(owned(ec2, "describe_launch_templates", "LaunchTemplates", stack)) == 1
    assert len(ec2.describe_placement_groups()["PlacementGroups"]) == 1
    assert not EksUnit(eks_ctx).plan().has_changes
    assert not PlacementGroupUnit(eks_ctx).plan().has_changes


def test_the_cilium_operator_gets_its_eni_permissions_through_pod_identity(eks_ctx):
    outputs = EksUnit(eks_ctx).apply().outputs

    iam, eks = eks_ctx.aws.client("iam"), eks_ctx.aws.client("eks")
    name = eks_ctx.spec.cluster_name
    association = eks.describe_pod_identity_association(
        clusterName=name, associationId=outputs["cilium_operator_association_id"]
    )["association"]
    role_name = association["roleArn"].rsplit("/", 1)[-1]
    role = iam.get_role(RoleName=role_name)["Role"]
    trust = role["AssumeRolePolicyDocument"]
    trust = json.loads(urllib.parse.unquote(trust)) if isinstance(trust, str) else trust
    (statement,) = trust["Statement"]
    assert statement["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    assert sorted(statement["Action"]) == ["sts:AssumeRole", "sts:TagSession"]
    (policy_name,) = iam.list_role_policies(RoleName=role_name)["PolicyNames"]
    document = iam.get_role_policy(RoleName=role_name, PolicyName=policy_name)["PolicyDocument"]
    document = json.loads(urllib.parse.unquote(document)) if isinstance(document, str) else document
    actions = {
        action
        for s in document["Statement"]
        for action in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    # Cilium docs, ENI IPAM, "Required Privileges".
    assert {
        "ec2:CreateNetworkInterface",
        "ec2:AttachNetworkInterface",
        "ec2:DeleteNetworkInterface",
        "ec2:ModifyNetworkInterfaceAttribute",
        "ec2:AssignPrivateIpAddresses",
        "ec2:UnassignPrivateIpAddresses",
        "ec2:CreateTags",
        "ec2:DescribeNetworkInterfaces",
        "ec2:DescribeSubnets",
        "ec2:DescribeVpcs",
        "ec2:DescribeSecurityGroups",
        "ec2:DescribeInstances",
        "ec2:DescribeInstanceTypes",
    } <= actions
    (tagging,) = [s for s in document["Statement"] if s["Action"] == "ec2:CreateTags"]
    assert tagging["Resource"].endswith(":network-interface/*")
    # Neither node role can touch ENIs: only the operator's pod can.
    for node_role in (f"{name}-system-nodes",):
        attached = iam.list_attached_role_policies(RoleName=node_role)["AttachedPolicies"]
        assert not any("CNI" in p["PolicyArn"] for p in attached)


def test_system_nodes_are_pinned_encrypted_and_share_the_nodes_security_group(eks_ctx):
    plan = EksUnit(eks_ctx).plan()
    (create,) = [c for c in plan.changes if c.kind == "eks-nodegroup"]
    assert ("release_version", "1.34.0-18d04e52") in [(d.path, d.desired) for d in create.diffs]
    EksUnit(eks_ctx).apply()

    ec2, eks = eks_ctx.aws.client("ec2"), eks_ctx.aws.client("eks")
    name = eks_ctx.spec.cluster_name
    group = eks.describe_nodegroup(clusterName=name, nodegroupName="system")["nodegroup"]
    assert group["releaseVersion"] == "1.34.0-18d04e52"
    template = ec2.describe_launch_template_versions(
        LaunchTemplateId=group["launchTemplate"]["id"], Versions=["$Default"]
    )["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    devices = {m["DeviceName"]: m["Ebs"] for m in template["BlockDeviceMappings"]}
    assert devices["/dev/xvda"]["Encrypted"] is True  # Bottlerocket's OS volume
    assert devices["/dev/xvdb"]["Encrypted"] is True  # its data volume
    (nodes_sg,) = ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [f"{name}-nodes"]}]
    )["SecurityGroups"]
    # The group Karpenter's nodes get (discovery tag): both node classes share one network.
    assert tag_dict(nodes_sg["Tags"])["karpenter.sh/discovery"] == name
    assert template["SecurityGroupIds"] == [nodes_sg["GroupId"]]

    with pytest.raises(ValueError, match="release_version must pin"):
        NodeGroupSpec(release_version="latest")


def test_control_plane_logging_is_enabled_and_drift_is_repaired(eks_ctx):
    EksUnit(eks_ctx).apply()
    eks = eks_ctx.aws.client("eks")
    name = eks_ctx.spec.cluster_name

    def enabled() -> list[str]:
        logging = eks.describe_cluster(name=name)["cluster"]["logging"]["clusterLogging"]
        return sorted(t for entry in logging if entry["enabled"] for t in entry["types"])

    assert enabled() == ["api", "audit", "authenticator"]

    # Someone switches audit logging off by hand.
    eks.update_cluster_config(
        name=name,
        logging={"clusterLogging": [{"types": ["api", "authenticator"], "enabled": True}]},
    )
    plan = EksUnit(eks_ctx).plan()
    (change,) = plan.pending
    assert (change.kind, change.action) == ("eks-cluster", "update")
    assert [(d.path, d.observed, d.desired) for d in change.diffs] == [
        ("logging", ["api", "authenticator"], ["api", "audit", "authenticator"])
    ]

    EksUnit(eks_ctx).apply()

    assert enabled() == ["api", "audit", "authenticator"]
    assert not EksUnit(eks_ctx).plan().has_changes


def _emulated_eks(ctx):
    """The emulator's EKS backend: AWS has no API to break a cluster, so the test does it."""
    from moto.eks.models import eks_backends

    account = ctx.aws.client("sts").get_caller_identity()["Account"]
    return eks_backends[account][ctx.spec.region].clusters[ctx.spec.cluster_name]


def test_status_and_health_are_observed_state(eks_ctx):
    EksUnit(eks_ctx).apply()
    wait_for_nodegroup_active(AwsClients(eks_ctx), eks_ctx.spec.cluster_name, "system")
    assert not EksUnit(eks_ctx).plan().has_changes

    cluster = _emulated_eks(eks_ctx)
    cluster.nodegroups["system"].status = "DEGRADED"
    plan = EksUnit(eks_ctx).plan()
    assert [(c.action, c.kind) for c in plan.pending] == [
        ("delete", "eks-nodegroup"),
        ("create", "eks-nodegroup"),
    ]

    cluster.status = "FAILED"
    plan = EksUnit(eks_ctx).plan()
    (change,) = [c for c in plan.pending if c.kind == "eks-cluster"]
    assert [(d.path, d.observed, d.desired) for d in change.diffs] == [
        ("status", "FAILED", "ACTIVE")
    ]
    assert any("is FAILED" in w and "infra_teardown" in w for w in plan.warnings)
    with pytest.raises(NeedsReplacement, match=r"FAILED.*run infra_teardown, then infra_apply"):
        EksUnit(eks_ctx).apply()


def test_a_new_release_or_template_version_is_drift_that_rolls_the_nodes(eks_ctx):
    EksUnit(eks_ctx).apply()
    wait_for_nodegroup_active(AwsClients(eks_ctx), eks_ctx.spec.cluster_name, "system")
    ec2 = eks_ctx.aws.client("ec2")

    # EKS moved the nodes to another Bottlerocket release (e.g. someone ran an upgrade).
    _emulated_eks(eks_ctx).nodegroups["system"].release_version = "1.35.0-d35b4c5a"
    # And someone made a launch template version without our security group the default.
    (template,) = ec2.describe_launch_templates(
        LaunchTemplateNames=[f"{eks_ctx.spec.cluster_name}-system"]
    )["LaunchTemplates"]
    data = ec2.describe_launch_template_versions(
        LaunchTemplateId=template["LaunchTemplateId"], Versions=["$Default"]
    )["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    data.pop("SecurityGroupIds")
    version = ec2.create_launch_template_version(
        LaunchTemplateId=template["LaunchTemplateId"], LaunchTemplateData=data
    )["LaunchTemplateVersion"]["VersionNumber"]
    ec2.modify_launch_template(
        LaunchTemplateId=template["LaunchTemplateId"], DefaultVersion=str(version)
    )

    plan = EksUnit(eks_ctx).plan()

    by_kind = {c.kind: c for c in plan.pending}
    assert set(by_kind) == {"launch-template", "eks-nodegroup"}
    assert [(d.path, d.observed, d.desired) for d in by_kind["launch-template"].diffs] == [
        ("security_groups", [], ["nodes"])
    ]
    # The template's fix is a third version; the nodes must be rolled onto it, and back onto
    # the pinned release, in the same apply.
    assert {(d.path, d.observed, d.desired) for d in by_kind["eks-nodegroup"].diffs} == {
        ("release_version", "1.35.0-d35b4c5a", "1.34.0-18d04e52"),
        ("launch_template_version", "1", "3"),
    }
    # EKS cannot roll a node group back to an older release: the plan says so, and apply rolls
    # the nodes onto the fixed template but leaves the newer release alone.
    assert any("cannot roll a node group back" in w for w in plan.warnings)
    EksUnit(eks_ctx).apply(plan)
    wait_for_nodegroup_active(AwsClients(eks_ctx), eks_ctx.spec.cluster_name, "system")
    after = EksUnit(eks_ctx).plan()
    assert {(c.kind, d.path) for c in after.pending for d in c.diffs} == {
        ("eks-nodegroup", "release_version")
    }
    nodegroup = eks_ctx.aws.client("eks").describe_nodegroup(
        clusterName=eks_ctx.spec.cluster_name, nodegroupName="system"
    )["nodegroup"]
    assert (nodegroup["releaseVersion"], nodegroup["launchTemplate"]["version"]) == (
        "1.35.0-d35b4c5a",
        "3",
    )
