"""The S3 gateway endpoint of gpu-vpc: on the private route tables, owned, planned, torn down."""

from __future__ import annotations

import dataclasses

from infra_assets.aws_access import RESOURCE_TAG
from infra_assets.spec import OWNER_TAG
from infra_assets.unit import UnitContext
from infra_assets.units.vpc import VpcUnit


def table_ids(ec2, stack: str) -> dict[str, str]:
    tables = ec2.describe_route_tables(Filters=[{"Name": f"tag:{OWNER_TAG}", "Values": [stack]}])[
        "RouteTables"
    ]
    return {
        {t["Key"]: t["Value"] for t in table["Tags"]}[RESOURCE_TAG].split("/", 1)[1]: table[
            "RouteTableId"
        ]
        for table in tables
    }


def live_endpoints(ec2, stack: str) -> list[dict]:
    return [
        e
        for e in ec2.describe_vpc_endpoints(
            Filters=[{"Name": f"tag:{OWNER_TAG}", "Values": [stack]}]
        )["VpcEndpoints"]
        if e["State"].lower() not in ("deleting", "deleted")
    ]


def test_apply_puts_an_s3_gateway_endpoint_on_the_private_route_tables(aws_ctx):
    ec2 = aws_ctx.aws.client("ec2")
    stack = aws_ctx.spec.stack
    outputs = VpcUnit(aws_ctx).apply().outputs

    (endpoint,) = live_endpoints(ec2, stack)
    assert endpoint["VpcEndpointId"] == outputs["s3_endpoint_id"]
    assert (endpoint["ServiceName"], endpoint["VpcEndpointType"], endpoint["VpcId"]) == (
        "com.amazonaws.eu-west-3.s3",
        "Gateway",
        outputs["vpc_id"],
    )
    tables = table_ids(ec2, stack)
    assert sorted(endpoint["RouteTableIds"]) == sorted(
        tables[f"private-{z}"] for z in aws_ctx.spec.vpc.availability_zones
    )
    tags = {t["Key"]: t["Value"] for t in endpoint["Tags"]}
    assert (tags[OWNER_TAG], tags[RESOURCE_TAG]) == (stack, "vpc-endpoint/s3")
    plan = VpcUnit(aws_ctx).plan()
    assert not plan.has_changes, plan.as_text()
    assert [c.resource_id for c in plan.changes if c.kind == "vpc-endpoint"] == [
        endpoint["VpcEndpointId"]
    ]

    teardown = VpcUnit(aws_ctx).destroy()
    assert ("vpc-endpoint", endpoint["VpcEndpointId"]) in {
        (c.kind, c.resource_id) for c in teardown.changes
    }
    assert live_endpoints(ec2, stack) == []


def test_endpoint_route_tables_changed_by_hand_are_drift_and_are_put_back(aws_ctx):
    ec2 = aws_ctx.aws.client("ec2")
    stack = aws_ctx.spec.stack
    endpoint_id = VpcUnit(aws_ctx).apply().outputs["s3_endpoint_id"]
    tables = table_ids(ec2, stack)
    ec2.modify_vpc_endpoint(
        VpcEndpointId=endpoint_id,
        RemoveRouteTableIds=[tables["private-eu-west-3b"]],
        AddRouteTableIds=[tables["database"]],
    )

    (change,) = VpcUnit(aws_ctx).plan().pending
    assert (change.action, change.kind) == ("update", "vpc-endpoint")
    (diff,) = change.diffs
    assert diff.path == "route_tables"
    assert sorted(diff.observed) == ["database", "private-eu-west-3a", "private-eu-west-3c"]

    VpcUnit(aws_ctx).apply()
    (endpoint,) = live_endpoints(ec2, stack)
    assert sorted(endpoint["RouteTableIds"]) == sorted(
        tables[f"private-{z}"] for z in aws_ctx.spec.vpc.availability_zones
    )
    assert not VpcUnit(aws_ctx).plan().has_changes


def test_an_endpoint_the_spec_no_longer_wants_is_planned_for_deletion(aws_ctx):
    ec2 = aws_ctx.aws.client("ec2")
    endpoint_id = VpcUnit(aws_ctx).apply().outputs["s3_endpoint_id"]
    spec = dataclasses.replace(
        aws_ctx.spec, vpc=dataclasses.replace(aws_ctx.spec.vpc, s3_gateway_endpoint=False)
    )
    ctx = UnitContext(spec=spec, aws=aws_ctx.aws)

    (change,) = VpcUnit(ctx).plan().pending
    assert (change.action, change.kind, change.resource_id) == (
        "delete",
        "vpc-endpoint",
        endpoint_id,
    )
    VpcUnit(ctx).apply()
    assert live_endpoints(ec2, aws_ctx.spec.stack) == []
    assert not VpcUnit(ctx).plan().has_changes
