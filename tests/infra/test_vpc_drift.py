"""gpu-vpc drift: extra live routes, spec keys removed, and status as part of observed state."""

from __future__ import annotations

import dataclasses

from infra_assets.aws_access import RESOURCE_TAG
from infra_assets.spec import OWNER_TAG
from infra_assets.unit import UnitContext
from infra_assets.units.vpc import VpcUnit


def route_table(ec2, stack: str, name: str) -> dict:
    (table,) = ec2.describe_route_tables(
        Filters=[
            {"Name": f"tag:{OWNER_TAG}", "Values": [stack]},
            {"Name": f"tag:{RESOURCE_TAG}", "Values": [f"route-table/{name}"]},
        ]
    )["RouteTables"]
    return table


def cidr_routes(table: dict) -> dict[str, str]:
    return {
        r["DestinationCidrBlock"]: r.get("NatGatewayId") or r.get("GatewayId")
        for r in table["Routes"]
        if r.get("DestinationCidrBlock")
    }


def igw_of(ec2, stack: str) -> str:
    (igw,) = ec2.describe_internet_gateways(
        Filters=[{"Name": f"tag:{OWNER_TAG}", "Values": [stack]}]
    )["InternetGateways"]
    return igw["InternetGatewayId"]


def only_change(plan, kind: str, name: str):
    (change,) = plan.pending
    assert (change.action, change.kind, change.name) == ("update", kind, name), plan.as_text()
    return change


def test_an_internet_route_added_to_the_database_table_is_drift_and_is_removed(aws_ctx):
    ec2 = aws_ctx.aws.client("ec2")
    stack = aws_ctx.spec.stack
    VpcUnit(aws_ctx).apply()
    table = route_table(ec2, stack, "database")
    igw = igw_of(ec2, stack)
    ec2.create_route(
        RouteTableId=table["RouteTableId"], DestinationCidrBlock="0.0.0.0/0", GatewayId=igw
    )

    change = only_change(VpcUnit(aws_ctx).plan(), "route-table", "database")
    assert [str(d) for d in change.diffs] == ["routes.0.0.0.0/0: internet-gateway -> (absent)"]

    VpcUnit(aws_ctx).apply()
    assert cidr_routes(route_table(ec2, stack, "database")) == {"10.152.0.0/16": "local"}
    assert not VpcUnit(aws_ctx).plan().has_changes


def test_a_half_internet_route_that_bypasses_the_nat_gateway_is_drift(aws_ctx):
    ec2 = aws_ctx.aws.client("ec2")
    stack = aws_ctx.spec.stack
    outputs = VpcUnit(aws_ctx).apply().outputs
    table = route_table(ec2, stack, "private-eu-west-3a")
    ec2.create_route(
        RouteTableId=table["RouteTableId"],
        DestinationCidrBlock="0.0.0.0/1",
        GatewayId=igw_of(ec2, stack),
    )

    change = only_change(VpcUnit(aws_ctx).plan(), "route-table", "private-eu-west-3a")
    assert [str(d) for d in change.diffs] == ["routes.0.0.0.0/1: internet-gateway -> (absent)"]

    VpcUnit(aws_ctx).apply()
    nat_a = outputs["nat_gateway_ids"].split(",")[0]
    assert cidr_routes(route_table(ec2, stack, "private-eu-west-3a")) == {
        "10.152.0.0/16": "local",
        "0.0.0.0/0": nat_a,
    }
    assert not VpcUnit(aws_ctx).plan().has_changes


def test_a_tag_the_spec_no_longer_sets_is_removed_and_tags_of_others_stay(aws_ctx):
    ec2 = aws_ctx.aws.client("ec2")
    outputs = VpcUnit(aws_ctx).apply().outputs
    public = outputs["public_subnet_ids"].split(",")
    ec2.create_tags(Resources=public, Tags=[{"Key": "team", "Value": "networking"}])
    spec = dataclasses.replace(
        aws_ctx.spec, vpc=dataclasses.replace(aws_ctx.spec.vpc, public_subnet_tags=())
    )
    ctx = UnitContext(spec=spec, aws=aws_ctx.aws)

    plan = VpcUnit(ctx).plan()
    changed = {c.name: [str(d) for d in c.diffs] for c in plan.pending}
    assert set(changed) == {"public-eu-west-3a", "public-eu-west-3b", "public-eu-west-3c"}
    assert "tags.kubernetes.io/role/elb: 1 -> (absent)" in changed["public-eu-west-3a"]

    VpcUnit(ctx).apply()
    for subnet in ec2.describe_subnets(SubnetIds=public)["Subnets"]:
        tags = {t["Key"]: t["Value"] for t in subnet["Tags"]}
        assert "kubernetes.io/role/elb" not in tags
        assert tags["team"] == "networking"
    assert not VpcUnit(ctx).plan().has_changes


def _set_nat_state(nat_id: str, state: str) -> None:
    # AWS marks a NAT gateway `failed` when it cannot come up (e.g. its subnet has no free
    # address; VPC User Guide, "Troubleshoot NAT gateways"); moto never does, so the test sets
    # the state in the emulator the test runs in this process.
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ec2.models import ec2_backends

    ec2_backends[DEFAULT_ACCOUNT_ID]["eu-west-3"].nat_gateways[nat_id].state = state


def test_a_failed_nat_gateway_is_not_in_sync_and_is_replaced(aws_ctx):
    ec2 = aws_ctx.aws.client("ec2")
    stack = aws_ctx.spec.stack
    old = VpcUnit(aws_ctx).apply().outputs["nat_gateway_ids"].split(",")[0]
    _set_nat_state(old, "failed")

    change = only_change(VpcUnit(aws_ctx).plan(), "nat-gateway", "nat-eu-west-3a")
    assert [str(d) for d in change.diffs] == ["state: failed -> available"]

    new = VpcUnit(aws_ctx).apply().outputs["nat_gateway_ids"].split(",")[0]
    assert new != old
    states = {n["NatGatewayId"]: n["State"] for n in ec2.describe_nat_gateways()["NatGateways"]}
    assert (states[old], states[new]) == ("deleted", "available")
    assert cidr_routes(route_table(ec2, stack, "private-eu-west-3a"))["0.0.0.0/0"] == new
    assert not VpcUnit(aws_ctx).plan().has_changes
