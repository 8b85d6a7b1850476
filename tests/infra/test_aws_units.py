"""The four AWS units against the moto server over HTTP: create, converge, own only what's ours."""

from __future__ import annotations

import boto3
import pytest

from infra_assets.spec import OWNER_TAG
from infra_assets.unit import UnitContext
from infra_assets.units import AWS_UNITS
from infra_assets.units.aws_unit import PlanConflict
from infra_assets.units.eks import EksUnit
from infra_assets.units.placement_group import PlacementGroupUnit
from infra_assets.units.vpc import VpcUnit


def apply_all(ctx: UnitContext) -> dict[str, dict[str, str]]:
    return {unit.name: unit(ctx).apply().outputs for unit in AWS_UNITS}


def owned(ec2, method: str, key: str, stack: str, **kwargs) -> list[dict]:
    filters = [{"Name": f"tag:{OWNER_TAG}", "Values": [stack]}, *kwargs.pop("Filters", [])]
    return getattr(ec2, method)(Filters=filters, **kwargs)[key]


def test_from_empty_apply_creates_the_spec_and_a_second_apply_changes_nothing(aws_ctx, aws_server):
    # The AWS units alone: nodes join as if gpu-cilium had installed the network plugin.
    aws_server.cni_ready = lambda cluster_name: True
    outputs = apply_all(aws_ctx)
    for unit in AWS_UNITS:
        plan = unit(aws_ctx).plan()
        assert not plan.has_changes, plan.as_text()
        assert not plan.conflicts

    ec2 = aws_ctx.aws.client("ec2")
    stack = aws_ctx.spec.stack
    vpc_id = outputs["gpu-vpc"]["vpc_id"]
    (vpc,) = owned(ec2, "describe_vpcs", "Vpcs", stack)
    assert (vpc["VpcId"], vpc["CidrBlock"]) == (vpc_id, "10.152.0.0/16")

    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Subnets"]
    assert len(subnets) == 9
    assert sorted(s["CidrBlock"] for s in subnets) == sorted(
        s.cidr for s in aws_ctx.spec.vpc.subnets
    )
    zone_of = {s["SubnetId"]: s["AvailabilityZone"] for s in subnets}
    cidr_of = {s["SubnetId"]: s["CidrBlock"] for s in subnets}

    nats = [
        n
        for n in owned(ec2, "describe_nat_gateways", "NatGateways", stack)
        if n["State"] == "available"
    ]
    assert len(nats) == 3
    assert sorted(zone_of[n["SubnetId"]] for n in nats) == [
        "eu-west-3a",
        "eu-west-3b",
        "eu-west-3c",
    ]
    assert all(cidr_of[n["SubnetId"]] in aws_ctx.spec.vpc.public_subnets for n in nats)
    nat_zone = {n["NatGatewayId"]: zone_of[n["SubnetId"]] for n in nats}

    # Routes per zone: each private subnet leaves through the NAT gateway of its own zone,
    # public subnets through the internet gateway, database subnets not at all.
    tables = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])[
        "RouteTables"
    ]
    default_route_of: dict[str, dict] = {}
    for table in tables:
        route = next(
            (r for r in table["Routes"] if r.get("DestinationCidrBlock") == "0.0.0.0/0"), {}
        )
        for association in table.get("Associations", []):
            if association.get("SubnetId"):
                default_route_of[association["SubnetId"]] = route
    assert set(default_route_of) == set(zone_of)
    for subnet_id, route in default_route_of.items():
        cidr = cidr_of[subnet_id]
        if cidr in aws_ctx.spec.vpc.private_subnets:
            assert nat_zone[route["NatGatewayId"]] == zone_of[subnet_id]
        elif cidr in aws_ctx.spec.vpc.public_subnets:
            assert route["GatewayId"].startswith("igw-")
        else:
            assert route == {}

    eks = aws_ctx.aws.client("eks")
    cluster = eks.describe_cluster(name=aws_ctx.spec.cluster_name)["cluster"]
    assert cluster["version"] == "1.32"
    assert cluster["resourcesVpcConfig"]["endpointPublicAccess"] is False
    assert cluster["resourcesVpcConfig"]["endpointPrivateAccess"] is True
    assert sorted(cluster["resourcesVpcConfig"]["subnetIds"]) == sorted(
        outputs["gpu-vpc"]["private_subnet_ids"].split(",")
    )
    nodegroup = eks.describe_nodegroup(
        clusterName=aws_ctx.spec.cluster_name, nodegroupName="system"
    )["nodegroup"]
    assert nodegroup["scalingConfig"] == {"minSize": 2, "maxSize": 3, "desiredSize": 2}
    assert (nodegroup["instanceTypes"], nodegroup["amiType"]) == (
        ["m6i.large"],
        "BOTTLEROCKET_x86_64",
    )
    # No pods on the system nodes before Cilium (the next unit) gives them a network.
    assert nodegroup["taints"] == [
        {"key": "node.cilium.io/agent-not-ready", "value": "true", "effect": "NO_EXECUTE"}
    ]
    assert sorted(eks.list_addons(clusterName=aws_ctx.spec.cluster_name)["addons"]) == [
        "coredns",
        "eks-pod-identity-agent",
        "kube-proxy",
    ]
    (group,) = ec2.describe_placement_groups(GroupNames=[aws_ctx.spec.placement_group.name])[
        "PlacementGroups"
    ]
    assert group["Strategy"] == "cluster"

    karpenter = outputs["gpu-karpenter-iam"]
    association = eks.describe_pod_identity_association(
        clusterName=aws_ctx.spec.cluster_name,
        associationId=karpenter["pod_identity_association_id"],
    )["association"]
    assert (association["namespace"], association["serviceAccount"]) == (
        "kube-system",
        "karpenter",
    )
    assert association["roleArn"] == karpenter["controller_role_arn"]
    events = aws_ctx.aws.client("events")
    rules = events.list_rules(NamePrefix=aws_ctx.spec.cluster_name)["Rules"]
    assert len(rules) == 4
    for rule in rules:
        (target,) = events.list_targets_by_rule(Rule=rule["Name"])["Targets"]
        assert target["Arn"] == karpenter["interruption_queue_arn"]

    # The wiring works: EventBridge delivers a spot interruption warning into the queue.
    aws_ctx.aws.client("events").put_events(
        Entries=[
            {
                "Source": "aws.ec2",
                "DetailType": "EC2 Spot Instance Interruption Warning",
                "Detail": '{"instance-id": "i-0123456789abcdef0"}',
            }
        ]
    )
    sqs = aws_ctx.aws.client("sqs")
    url = sqs.get_queue_url(QueueName=outputs["gpu-karpenter-iam"]["interruption_queue"])[
        "QueueUrl"
    ]
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    assert len(messages) == 1
    assert "i-0123456789abcdef0" in messages[0]["Body"]


def test_an_unowned_vpc_with_the_same_cidr_is_never_touched(aws_ctx):
    ec2 = aws_ctx.aws.client("ec2")
    theirs = ec2.create_vpc(
        CidrBlock="10.152.0.0/16",
        TagSpecifications=[
            {"ResourceType": "vpc", "Tags": [{"Key": "Name", "Value": "gpu-analysis"}]}
        ],
    )["Vpc"]["VpcId"]
    their_subnet = ec2.create_subnet(VpcId=theirs, CidrBlock="10.152.0.0/20")["Subnet"]

    # Only the VPC unit touches VPCs and subnets; the whole stack's teardown is in
    # test_infra_jobs.py.
    ours = VpcUnit(aws_ctx).apply().outputs["vpc_id"]
    assert ours != theirs
    assert not VpcUnit(aws_ctx).plan().has_changes
    VpcUnit(aws_ctx).destroy()

    (vpc,) = ec2.describe_vpcs(VpcIds=[theirs])["Vpcs"]
    assert vpc["CidrBlock"] == "10.152.0.0/16"
    assert {t["Key"]: t["Value"] for t in vpc["Tags"]} == {"Name": "gpu-analysis"}
    (subnet,) = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [theirs]}])["Subnets"]
    assert subnet["SubnetId"] == their_subnet["SubnetId"]
    assert not ec2.describe_vpcs(Filters=[{"Name": f"tag:{OWNER_TAG}", "Values": ["*"]}])["Vpcs"]


def test_a_foreign_subnet_in_our_vpc_is_a_conflict_not_a_change(aws_ctx):
    vpc_unit = VpcUnit(aws_ctx)
    vpc_unit.apply()
    ec2 = aws_ctx.aws.client("ec2")
    subnet_id = vpc_unit.outputs()["database_subnet_ids"].split(",")[0]
    ec2.delete_tags(Resources=[subnet_id], Tags=[{"Key": OWNER_TAG}])

    plan = vpc_unit.plan()
    assert [c for c in plan.conflicts if subnet_id in c and "not tagged as ours" in c]
    with pytest.raises(PlanConflict, match="refusing to apply"):
        VpcUnit(aws_ctx).apply()
    tags = {t["Key"] for t in ec2.describe_subnets(SubnetIds=[subnet_id])["Subnets"][0]["Tags"]}
    assert OWNER_TAG not in tags  # not adopted behind anyone's back


def test_eks_before_the_vpc_says_what_to_do(aws_ctx):
    plan = EksUnit(aws_ctx).plan()
    assert any("apply gpu_vpc first" in w for w in plan.warnings)
    PlacementGroupUnit(aws_ctx).apply()
    with pytest.raises(RuntimeError, match="materialize gpu_vpc first"):
        EksUnit(aws_ctx).apply()


def test_placement_groups_warn_that_the_pinned_karpenter_cannot_use_them(aws: boto3.Session):
    from infra_assets.spec import ClusterSpec

    plan = PlacementGroupUnit(UnitContext(spec=ClusterSpec(), aws=aws)).plan()
    (warning,) = plan.warnings
    assert "Karpenter 1.8.1" in warning and ">= 1.11" in warning


def test_a_foreign_cluster_with_our_name_is_neither_changed_nor_deleted(aws_ctx, aws_server):
    from infra_assets.units.karpenter_iam import KarpenterIamUnit

    # Someone else's cluster, made by hand: their role is usable at once (no IAM delay here).
    aws_server.configure(iam_propagation_s=0)
    VpcUnit(aws_ctx).apply()
    ec2, eks, iam = (aws_ctx.aws.client(s) for s in ("ec2", "eks", "iam"))
    role = iam.create_role(RoleName="theirs", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
    name = aws_ctx.spec.cluster_name
    eks.create_cluster(
        name=name,
        roleArn=role,
        resourcesVpcConfig={"subnetIds": [subnet], "endpointPublicAccess": True},
        tags={"team": "someone-else"},
    )

    for unit in (EksUnit, KarpenterIamUnit):
        plan = unit(aws_ctx).plan()
        assert any(f"EKS cluster {name}" in c and "not" in c for c in plan.conflicts), plan
        with pytest.raises(PlanConflict, match="refusing to apply"):
            unit(aws_ctx).apply()
    KarpenterIamUnit(aws_ctx).destroy()
    EksUnit(aws_ctx).destroy()

    cluster = eks.describe_cluster(name=name)["cluster"]
    assert cluster["resourcesVpcConfig"]["endpointPublicAccess"] is True
    assert cluster["tags"] == {"team": "someone-else"}
    assert eks.list_pod_identity_associations(clusterName=name)["associations"] == []
