"""gpu-vpc with ambiguous creates and left-over duplicates: one of each, and teardown of all."""

from __future__ import annotations

import pytest

from infra_assets.aws_access import RESOURCE_TAG
from infra_assets.spec import OWNER_TAG
from infra_assets.units.vpc import VpcUnit

# Every create of the unit; each may succeed on the server and still answer 500.
CREATES = (
    "CreateVpc",
    "AllocateAddress",
    "CreateRouteTable",
    "CreateInternetGateway",
    "CreateSubnet",
    "CreateNatGateway",
    "AssociateRouteTable",
    "CreateRoute",
    "AttachInternetGateway",
    "CreateVpcEndpoint",
)


def owned(ec2, method: str, key: str, stack: str, **kwargs) -> list[dict]:
    filters = [{"Name": f"tag:{OWNER_TAG}", "Values": [stack]}, *kwargs.pop("Filters", [])]
    return getattr(ec2, method)(Filters=filters, **kwargs)[key]


def counts(ec2, stack: str) -> dict[str, int]:
    """How many of each kind carry our tag (NAT gateways and endpoints: not deleted)."""
    return {
        "vpc": len(owned(ec2, "describe_vpcs", "Vpcs", stack)),
        "subnet": len(owned(ec2, "describe_subnets", "Subnets", stack)),
        "internet-gateway": len(
            owned(ec2, "describe_internet_gateways", "InternetGateways", stack)
        ),
        "elastic-ip": len(owned(ec2, "describe_addresses", "Addresses", stack)),
        "nat-gateway": len(
            [
                n
                for n in ec2.describe_nat_gateways()["NatGateways"]
                if n["State"] not in ("deleting", "deleted")
                and {"Key": OWNER_TAG, "Value": stack} in n.get("Tags", [])
            ]
        ),
        "route-table": len(owned(ec2, "describe_route_tables", "RouteTables", stack)),
        "vpc-endpoint": len(
            [
                e
                for e in owned(ec2, "describe_vpc_endpoints", "VpcEndpoints", stack)
                if e["State"].lower() not in ("deleting", "deleted")
            ]
        ),
    }


# The seed's network: 1 VPC, 9 subnets, 1 internet gateway, 3 NAT gateways with an address
# each, 5 route tables (public, 3 private, database), the S3 gateway endpoint.
SEED = {
    "vpc": 1,
    "subnet": 9,
    "internet-gateway": 1,
    "elastic-ip": 3,
    "nat-gateway": 3,
    "route-table": 5,
    "vpc-endpoint": 1,
}


def someone_elses(ec2) -> dict[str, str]:
    """An unowned VPC, address and internet gateway, named like ours."""
    name = [{"Key": "Name", "Value": "gpu-analysis"}]
    vpc = ec2.create_vpc(
        CidrBlock="10.152.0.0/16", TagSpecifications=[{"ResourceType": "vpc", "Tags": name}]
    )["Vpc"]["VpcId"]
    eip = ec2.allocate_address(
        Domain="vpc", TagSpecifications=[{"ResourceType": "elastic-ip", "Tags": name}]
    )["AllocationId"]
    igw = ec2.create_internet_gateway(
        TagSpecifications=[{"ResourceType": "internet-gateway", "Tags": name}]
    )["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    return {"vpc": vpc, "eip": eip, "igw": igw}


def assert_untouched(ec2, theirs: dict[str, str]) -> None:
    (vpc,) = ec2.describe_vpcs(VpcIds=[theirs["vpc"]])["Vpcs"]
    assert vpc["Tags"] == [{"Key": "Name", "Value": "gpu-analysis"}]
    (eip,) = ec2.describe_addresses(AllocationIds=[theirs["eip"]])["Addresses"]
    assert eip["Tags"] == [{"Key": "Name", "Value": "gpu-analysis"}]
    (igw,) = ec2.describe_internet_gateways(InternetGatewayIds=[theirs["igw"]])["InternetGateways"]
    assert [a["VpcId"] for a in igw["Attachments"]] == [theirs["vpc"]]


@pytest.mark.parametrize("action", CREATES)
def test_an_ambiguous_create_converges_to_one_of_each_and_teardown_leaves_nothing(
    aws_ctx, aws_server, action
):
    ec2 = aws_ctx.aws.client("ec2")
    stack = aws_ctx.spec.stack
    theirs = someone_elses(ec2)
    aws_server.inject(action, "ambiguous")

    VpcUnit(aws_ctx).apply()

    assert aws_server.pending_faults() == {}, "the fault was played"
    assert counts(ec2, stack) == SEED
    plan = VpcUnit(aws_ctx).plan()
    assert not plan.has_changes, plan.as_text()
    assert not plan.conflicts and not plan.warnings

    VpcUnit(aws_ctx).destroy()
    assert set(counts(ec2, stack).values()) == {0}
    assert_untouched(ec2, theirs)


ISSUE_KINDS = ("vpc", "elastic-ip", "internet-gateway", "route-table")


@pytest.mark.parametrize(
    "action", ("CreateVpc", "AllocateAddress", "CreateRouteTable", "CreateInternetGateway")
)
def test_a_create_whose_error_reached_the_client_is_not_made_twice_by_the_rerun(
    aws_ctx, aws_server, action
):
    # More 500s than botocore's standard retries absorb: the error reaches the unit, as when
    # AWS is having a bad minute. The rerun must find what the first run made.
    ec2 = aws_ctx.aws.client("ec2")
    aws_server.inject(action, "ambiguous", times=11)

    for _run in range(3):
        try:
            VpcUnit(aws_ctx).apply()
            break
        except Exception:  # the rerun is the point; what is left after it is what counts
            continue

    found = counts(ec2, aws_ctx.spec.stack)
    assert {k: found[k] for k in ISSUE_KINDS} == {k: SEED[k] for k in ISSUE_KINDS}
    assert not VpcUnit(aws_ctx).plan().has_changes


def test_ambiguous_creates_everywhere_at_once_still_make_one_of_each(aws_ctx, aws_server):
    ec2 = aws_ctx.aws.client("ec2")
    for action in CREATES:
        aws_server.inject(action, "ambiguous", times=2)
        aws_server.inject(action, "throttle")

    VpcUnit(aws_ctx).apply()

    assert counts(ec2, aws_ctx.spec.stack) == SEED
    assert not VpcUnit(aws_ctx).plan().has_changes


def _tags(stack: str, resource: str) -> list[dict[str, str]]:
    return [{"Key": OWNER_TAG, "Value": stack}, {"Key": RESOURCE_TAG, "Value": resource}]


def _duplicates_by_hand(aws_ctx) -> dict[str, str]:
    """What an ambiguous create made before this fix: a second VPC, address, gateway, table."""
    ec2 = aws_ctx.aws.client("ec2")
    stack = aws_ctx.spec.stack
    vpc = ec2.create_vpc(
        CidrBlock="10.152.0.0/16",
        TagSpecifications=[{"ResourceType": "vpc", "Tags": _tags(stack, "vpc")}],
    )["Vpc"]["VpcId"]
    eip = ec2.allocate_address(
        Domain="vpc",
        TagSpecifications=[
            {"ResourceType": "elastic-ip", "Tags": _tags(stack, "elastic-ip/nat-eu-west-3a")}
        ],
    )["AllocationId"]
    igw = ec2.create_internet_gateway(
        TagSpecifications=[
            {"ResourceType": "internet-gateway", "Tags": _tags(stack, "internet-gateway")}
        ]
    )["InternetGateway"]["InternetGatewayId"]
    return {"vpc": vpc, "elastic-ip": eip, "internet-gateway": igw}


def test_duplicates_left_by_an_earlier_failure_are_planned_away_naming_the_one_kept(aws_ctx):
    ec2 = aws_ctx.aws.client("ec2")
    stack = aws_ctx.spec.stack
    ours = VpcUnit(aws_ctx).apply().outputs
    spares = _duplicates_by_hand(aws_ctx)
    our_vpc = ec2.describe_vpcs(VpcIds=[ours["vpc_id"]])["Vpcs"][0]["VpcId"]
    database_table = next(
        t
        for t in owned(ec2, "describe_route_tables", "RouteTables", stack)
        if {"Key": RESOURCE_TAG, "Value": "route-table/database"} in t["Tags"]
    )["RouteTableId"]
    spares["route-table"] = ec2.create_route_table(
        VpcId=our_vpc,
        TagSpecifications=[
            {"ResourceType": "route-table", "Tags": _tags(stack, "route-table/database")}
        ],
    )["RouteTable"]["RouteTableId"]

    plan = VpcUnit(aws_ctx).plan()

    assert not plan.conflicts, plan.as_text()
    deleted = {c.kind: c.resource_id for c in plan.pending if c.action == "delete"}
    assert deleted == spares
    assert [c.kind for c in plan.pending] == [
        "route-table",
        "elastic-ip",
        "internet-gateway",
        "vpc",
    ]
    notes = "\n".join(plan.warnings)
    assert f"keeping {our_vpc} (it holds 9 subnets" in notes
    assert f"keeping {database_table} (3 subnets associated)" in notes

    VpcUnit(aws_ctx).apply()

    assert counts(ec2, stack) == SEED
    assert not VpcUnit(aws_ctx).plan().has_changes
    assert VpcUnit(aws_ctx).outputs()["vpc_id"] == our_vpc


def test_teardown_removes_every_owned_duplicate_and_nothing_else(aws_ctx):
    ec2 = aws_ctx.aws.client("ec2")
    theirs = someone_elses(ec2)
    VpcUnit(aws_ctx).apply()
    _duplicates_by_hand(aws_ctx)

    plan = VpcUnit(aws_ctx).destroy()

    assert sum(c.kind == "vpc" for c in plan.changes) == 2
    assert set(counts(ec2, aws_ctx.spec.stack).values()) == {0}
    assert_untouched(ec2, theirs)


def test_downstream_units_find_the_vpc_that_holds_our_subnets_despite_a_spare(aws_ctx):
    ours = VpcUnit(aws_ctx).apply().outputs
    _duplicates_by_hand(aws_ctx)

    vpc_id, subnets = VpcUnit(aws_ctx).find_vpc_and_subnets()

    assert vpc_id == ours["vpc_id"]
    assert sorted(subnets.values()) == sorted(
        ",".join(ours[f"{t}_subnet_ids"] for t in ("private", "public", "database")).split(",")
    )


def test_two_owned_vpcs_that_both_hold_resources_are_a_conflict_naming_both(aws_ctx):
    ec2 = aws_ctx.aws.client("ec2")
    stack = aws_ctx.spec.stack
    ours = VpcUnit(aws_ctx).apply().outputs["vpc_id"]
    other = _duplicates_by_hand(aws_ctx)["vpc"]
    ec2.create_subnet(
        VpcId=other,
        CidrBlock="10.152.0.0/20",
        TagSpecifications=[{"ResourceType": "subnet", "Tags": _tags(stack, "subnet/x")}],
    )

    plan = VpcUnit(aws_ctx).plan()

    (conflict,) = plan.conflicts
    assert ours in conflict and other in conflict and "a person's decision" in conflict
    assert not [c for c in plan.pending if c.kind == "vpc"]
    VpcUnit(aws_ctx).destroy()  # teardown still removes both
    assert owned(ec2, "describe_vpcs", "Vpcs", stack) == []
