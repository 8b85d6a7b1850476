"""What the idle base of the stack costs per month, from what is running, next to the seed's figure.

Idle base = what bills with no GPU node running: EKS control plane, the system node group (with
its OS and data volumes), NAT gateways and their public IPv4 addresses. Prices are AWS
on-demand list prices for eu-west-3 in USD (they change: check https://aws.amazon.com/pricing
before budgeting); data transfer and NAT data processing depend on traffic and are not included.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from botocore.exceptions import ClientError

from infra_assets.aws_access import AwsClients, is_not_found, is_owned, owner_filter, tag_dict
from infra_assets.unit import UnitContext

HOURS_PER_MONTH = 730

# USD, eu-west-3 (Paris), on-demand list prices.
EKS_CONTROL_PLANE_HOURLY = 0.10
EKS_EXTENDED_SUPPORT_HOURLY = 0.60
INSTANCE_HOURLY = {"m6i.large": 0.112, "m6i.xlarge": 0.224, "m5.large": 0.112}
NAT_GATEWAY_HOURLY = 0.048
PUBLIC_IPV4_HOURLY = 0.005
GP3_GB_MONTH = 0.0928

# The node pools' instance types (infra_assets/spec/kubernetes.py), priced for the per-match
# estimate (video_assets/match_cost.py). USD per hour, us-east-1 on-demand Linux list prices;
# no eu-west-3 list for them was at hand, so POOL_INSTANCE_HOURLY scales them by the
# eu-west-3/us-east-1 ratio of m6i.xlarge (0.224 above / 0.192 in us-east-1 = 1.167). Check
# https://aws.amazon.com/ec2/pricing/on-demand/ (region Europe (Paris)) before budgeting.
POOL_INSTANCE_HOURLY_US_EAST_1 = {
    "g4dn.xlarge": 0.526,
    "g4dn.2xlarge": 0.752,
    "g4dn.4xlarge": 1.204,
    "g5.xlarge": 1.006,
    "g5.2xlarge": 1.212,
    "g5.4xlarge": 1.624,
    "c6i.xlarge": 0.170,
    "c6i.2xlarge": 0.340,
    "c6a.xlarge": 0.153,
    "c6a.2xlarge": 0.306,
    "m6i.xlarge": 0.192,
    "m6i.2xlarge": 0.384,
}
EU_WEST_3_OVER_US_EAST_1 = (
    INSTANCE_HOURLY["m6i.xlarge"] / POOL_INSTANCE_HOURLY_US_EAST_1["m6i.xlarge"]
)
POOL_INSTANCE_HOURLY = {
    name: round(hourly * EU_WEST_3_OVER_US_EAST_1, 4)
    for name, hourly in POOL_INSTANCE_HOURLY_US_EAST_1.items()
}
# vCPUs per instance (the same for every family here): a CPU step pays its run pod's share.
VCPUS_BY_SIZE = {"large": 2, "xlarge": 4, "2xlarge": 8, "4xlarge": 16}
# Spot price as a fraction of on-demand, per family. An assumption, not a list price (not
# checked from here): spot prices move every few minutes, and
# `aws ec2 describe-spot-price-history --region eu-west-3` gives the real ones to put here.
SPOT_PRICE_OF_ON_DEMAND = {"g4dn": 0.35, "g5": 0.40, "c6i": 0.40, "c6a": 0.40, "m6i": 0.40}


def instance_hourly_usd(instance_type: str, capacity_type: str = "on-demand") -> float:
    """USD per hour of one instance, on-demand or at the assumed spot fraction."""
    hourly = INSTANCE_HOURLY.get(instance_type, POOL_INSTANCE_HOURLY.get(instance_type))
    if hourly is None:
        raise KeyError(
            f"error: no price for instance type {instance_type!r}; add its on-demand price to "
            "POOL_INSTANCE_HOURLY_US_EAST_1 in infra_assets/cost.py"
        )
    if capacity_type == "on-demand":
        return hourly
    if capacity_type != "spot":
        raise ValueError(f"error: capacity type {capacity_type!r}; use on-demand or spot")
    family = instance_type.split(".")[0]
    if family not in SPOT_PRICE_OF_ON_DEMAND:
        raise KeyError(
            f"error: no spot fraction for family {family!r}; add it to SPOT_PRICE_OF_ON_DEMAND "
            "in infra_assets/cost.py"
        )
    return hourly * SPOT_PRICE_OF_ON_DEMAND[family]


def instance_vcpus(instance_type: str) -> int:
    size = instance_type.split(".")[-1]
    if size not in VCPUS_BY_SIZE:
        raise KeyError(
            f"error: no vCPU count for size {size!r} ({instance_type}); add it to VCPUS_BY_SIZE "
            "in infra_assets/cost.py"
        )
    return VCPUS_BY_SIZE[size]


# End of EKS standard support per Kubernetes minor version (EKS release calendar); after it the
# control plane bills at the extended-support rate until the cluster is upgraded.
EKS_STANDARD_SUPPORT_ENDS = {"1.31": dt.date(2025, 11, 26), "1.32": dt.date(2026, 3, 23)}

# Seed 000, "Cost Profile (staging estimate)": the idle base is ~$313/month.
SEED_MONTHLY_USD = {"EKS control plane": 73.0, "System nodes": 140.0, "NAT gateways": 100.0}
SEED_IDLE_BASE_USD = 313.0


@dataclasses.dataclass(frozen=True)
class CostLine:
    component: str
    running: str  # what was found, e.g. "2 x m6i.large"
    monthly_usd: float
    seed_monthly_usd: float | None = None


@dataclasses.dataclass(frozen=True)
class CostEstimate:
    lines: tuple[CostLine, ...]
    notes: tuple[str, ...] = ()

    @property
    def monthly_usd(self) -> float:
        return round(sum(line.monthly_usd for line in self.lines), 2)

    @property
    def seed_monthly_usd(self) -> float:
        return SEED_IDLE_BASE_USD

    def as_markdown(self) -> str:
        rows = [
            "| component | running | est. $/month | seed $/month |",
            "|---|---|---:|---:|",
        ]
        for line in self.lines:
            seed = "" if line.seed_monthly_usd is None else f"{line.seed_monthly_usd:.0f}"
            rows.append(f"| {line.component} | {line.running} | {line.monthly_usd:.2f} | {seed} |")
        rows.append(
            f"| **idle base** | | **{self.monthly_usd:.2f}** | **{self.seed_monthly_usd:.0f}** |"
        )
        text = "\n".join(rows)
        if self.notes:
            text += "\n\n" + "\n".join(f"- {note}" for note in self.notes)
        return text


def estimate_idle_base(ctx: UnitContext, today: dt.date | None = None) -> CostEstimate:
    """Price what the stack owns and runs now (nothing running: a zero line, not a guess)."""
    today = today or dt.date.today()
    aws = AwsClients(ctx)
    spec = ctx.spec
    lines: list[CostLine] = []
    notes: list[str] = []

    cluster = _owned_cluster(aws, spec.cluster_name, spec.stack)
    control_plane_hourly = EKS_CONTROL_PLANE_HOURLY
    if cluster is not None:
        version = cluster.get("version", "")
        ends = EKS_STANDARD_SUPPORT_ENDS.get(version)
        if ends is not None and today >= ends:
            control_plane_hourly = EKS_EXTENDED_SUPPORT_HOURLY
            notes.append(
                f"Kubernetes {version} left EKS standard support on {ends.isoformat()}: the "
                f"control plane bills at the extended-support rate (${control_plane_hourly}/h) "
                "until the cluster is upgraded"
            )
    lines.append(
        CostLine(
            "EKS control plane",
            f"1 cluster ({cluster.get('version')})" if cluster else "no cluster",
            round((control_plane_hourly * HOURS_PER_MONTH) if cluster else 0.0, 2),
            SEED_MONTHLY_USD["EKS control plane"],
        )
    )

    nodes_monthly = 0.0
    volume_monthly = 0.0
    running = "no node group"
    if cluster is not None:
        group = spec.eks.system_node_group
        try:
            nodegroup = aws.eks.describe_nodegroup(
                clusterName=spec.cluster_name, nodegroupName=group.name
            )["nodegroup"]
        except ClientError as exc:
            if not is_not_found(exc):
                raise
            nodegroup = None
        if nodegroup is not None:
            count = nodegroup.get("scalingConfig", {}).get("desiredSize", 0)
            instance_type = (nodegroup.get("instanceTypes") or ["?"])[0]
            hourly = INSTANCE_HOURLY.get(instance_type)
            if hourly is None:
                notes.append(f"no list price for {instance_type}: its nodes are counted as $0")
                hourly = 0.0
            nodes_monthly = count * hourly * HOURS_PER_MONTH
            # Bottlerocket's OS volume and the data volume, both gp3 (gpu-eks launch template).
            volume_monthly = count * (group.os_volume_gib + group.data_volume_gib) * GP3_GB_MONTH
            running = f"{count} x {instance_type} ({nodegroup.get('capacityType', '').lower()})"
    lines.append(
        CostLine("System nodes", running, round(nodes_monthly, 2), SEED_MONTHLY_USD["System nodes"])
    )
    if volume_monthly:
        lines.append(
            CostLine(
                "System node volumes (gp3)",
                f"{spec.eks.system_node_group.os_volume_gib} GiB OS + "
                f"{spec.eks.system_node_group.data_volume_gib} GiB data per node",
                round(volume_monthly, 2),
            )
        )

    nats = [
        nat
        for page in aws.ec2.get_paginator("describe_nat_gateways").paginate(
            Filters=[owner_filter(spec.stack)]
        )
        for nat in page["NatGateways"]
        if nat["State"] in ("pending", "available")
        and is_owned(tag_dict(nat.get("Tags")), spec.stack)
    ]
    zones = sorted({_zone_of(aws, nat["SubnetId"]) for nat in nats})
    lines.append(
        CostLine(
            "NAT gateways",
            f"{len(nats)} ({', '.join(zones)})" if nats else "none",
            round(len(nats) * NAT_GATEWAY_HOURLY * HOURS_PER_MONTH, 2),
            SEED_MONTHLY_USD["NAT gateways"],
        )
    )
    addresses = aws.ec2.describe_addresses(Filters=[owner_filter(spec.stack)])["Addresses"]
    if addresses:
        lines.append(
            CostLine(
                "Public IPv4 addresses (NAT)",
                str(len(addresses)),
                round(len(addresses) * PUBLIC_IPV4_HOURLY * HOURS_PER_MONTH, 2),
            )
        )
    notes.append(
        "not included: NAT data processing and data transfer (traffic-dependent), GPU and CPU "
        "node pools (Karpenter scales them to zero when idle)"
    )
    return CostEstimate(tuple(lines), tuple(notes))


def _owned_cluster(aws: AwsClients, name: str, stack: str) -> dict[str, Any] | None:
    try:
        cluster = aws.eks.describe_cluster(name=name)["cluster"]
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise
    return cluster if is_owned(cluster.get("tags"), stack) else None


def _zone_of(aws: AwsClients, subnet_id: str) -> str:
    subnets = aws.ec2.describe_subnets(SubnetIds=[subnet_id])["Subnets"]
    return subnets[0]["AvailabilityZone"] if subnets else "?"
