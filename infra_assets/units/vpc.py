"""gpu-vpc: the VPC, its 9 subnets, internet gateway, one NAT gateway per zone and the routes."""

from __future__ import annotations

import dataclasses
from typing import Any

from botocore.exceptions import ClientError

from infra_assets.aws_access import (
    RESOURCE_TAG,
    WAIT_SHORT,
    error_code,
    is_not_found,
    is_owned,
    owner_filter,
    tag_dict,
    tag_specifications,
)
from infra_assets.plan import Change, Plan
from infra_assets.spec.aws import SubnetSpec
from infra_assets.spec.kubernetes import KARPENTER_DISCOVERY_TAG
from infra_assets.units.aws_unit import AwsUnit, NeedsReplacement, PlanConflict, diffs_of

INTERNET = "0.0.0.0/0"
IGW = "internet-gateway"
ACTIVE_NAT_STATES = ("pending", "available")


@dataclasses.dataclass
class VpcState:
    """What exists now, by the stable names of the spec (ids in `ids`)."""

    vpc: dict[str, Any] | None = None
    igw: dict[str, Any] | None = None
    subnets_by_cidr: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    eips: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # key: resource tag
    nats: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    route_tables: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    ids: dict[str, str] = dataclasses.field(default_factory=dict)  # "subnet/private-..." -> id


class VpcUnit(AwsUnit):
    """The network of seed 000: 10.152.0.0/16, private/public/database subnets in 3 zones."""

    name = "gpu-vpc"

    # --- the spec, as resources -------------------------------------------------------------

    @property
    def _vpc(self):
        return self.spec.vpc

    def _nat_zones(self) -> tuple[str, ...]:
        zones = self._vpc.availability_zones
        return zones if self._vpc.one_nat_gateway_per_az else zones[:1]

    def _nat_for(self, zone: str) -> str:
        zones = self._nat_zones()
        return f"nat-{zone if zone in zones else zones[0]}"

    def _subnet_tags(self, subnet: SubnetSpec) -> dict[str, str]:
        tags = self.tags(f"subnet/{subnet.name}", f"{self._vpc.name}-{subnet.name}")
        tags["gpu-analysis/tier"] = subnet.tier
        if subnet.tier == "public":
            tags.update(dict(self._vpc.public_subnet_tags))
        elif subnet.tier == "private":
            tags.update(dict(self._vpc.private_subnet_tags))
            tags[KARPENTER_DISCOVERY_TAG] = self.spec.cluster_name
        return tags

    def _route_tables(self) -> dict[str, dict[str, Any]]:
        """Desired route tables: one public, one private per zone, one for the database tier."""
        vpc = self._vpc
        tables: dict[str, dict[str, Any]] = {
            "public": {
                "routes": {INTERNET: IGW},
                "subnets": [s.name for s in vpc.subnets if s.tier == "public"],
            }
        }
        for zone in vpc.availability_zones:
            # Private subnets leave through the NAT gateway of their own zone.
            tables[f"private-{zone}"] = {
                "routes": {INTERNET: self._nat_for(zone)},
                "subnets": [vpc.subnet("private", zone).name],
            }
        # Database subnets are reserved and stay inside the VPC: no internet route at all.
        tables["database"] = {
            "routes": {},
            "subnets": [s.name for s in vpc.subnets if s.tier == "database"],
        }
        for name, table in tables.items():
            table["tags"] = self.tags(f"route-table/{name}", f"{vpc.name}-{name}")
        return tables

    # --- observe ----------------------------------------------------------------------------

    def observe(self) -> VpcState:
        ec2 = self.aws.ec2
        state = VpcState()
        vpcs = ec2.describe_vpcs(Filters=[owner_filter(self.stack)])["Vpcs"]
        if len(vpcs) > 1:
            ids = ", ".join(v["VpcId"] for v in vpcs)
            raise PlanConflict(
                f"gpu-vpc: {len(vpcs)} VPCs carry our tag for stack {self.stack!r} ({ids}); "
                "keep one and remove the tag from the others"
            )
        eips = ec2.describe_addresses(Filters=[owner_filter(self.stack)])["Addresses"]
        for eip in eips:
            key = tag_dict(eip.get("Tags")).get(RESOURCE_TAG, "")
            if key.startswith("elastic-ip/"):
                state.eips[key.split("/", 1)[1]] = eip
                state.ids[key] = eip["AllocationId"]
        if not vpcs:
            return state
        vpc = state.vpc = vpcs[0]
        vpc_id = vpc["VpcId"]
        state.ids["vpc"] = vpc_id
        for attribute in ("enableDnsSupport", "enableDnsHostnames"):
            answer = ec2.describe_vpc_attribute(VpcId=vpc_id, Attribute=attribute)
            vpc[attribute] = answer[attribute[0].upper() + attribute[1:]]["Value"]

        vpc_filter = {"Name": "vpc-id", "Values": [vpc_id]}
        for subnet in _all(ec2, "describe_subnets", "Subnets", Filters=[vpc_filter]):
            state.subnets_by_cidr[subnet["CidrBlock"]] = subnet
            if is_owned(tag_dict(subnet.get("Tags")), self.stack):
                spec = self._subnet_spec_for(subnet["CidrBlock"])
                if spec is not None:
                    state.ids[f"subnet/{spec.name}"] = subnet["SubnetId"]

        igws = ec2.describe_internet_gateways(Filters=[owner_filter(self.stack)])[
            "InternetGateways"
        ]
        for igw in igws:
            if is_owned(tag_dict(igw.get("Tags")), self.stack):
                state.igw = igw
                state.ids[IGW] = igw["InternetGatewayId"]
                break

        nats = _all(ec2, "describe_nat_gateways", "NatGateways", Filters=[vpc_filter])
        for nat in nats:
            key = tag_dict(nat.get("Tags")).get(RESOURCE_TAG, "")
            if (
                nat["State"] in ACTIVE_NAT_STATES
                and is_owned(tag_dict(nat.get("Tags")), self.stack)
                and key.startswith("nat-gateway/")
            ):
                state.nats[key.split("/", 1)[1]] = nat
                state.ids[key] = nat["NatGatewayId"]

        for table in _all(ec2, "describe_route_tables", "RouteTables", Filters=[vpc_filter]):
            tags = tag_dict(table.get("Tags"))
            key = tags.get(RESOURCE_TAG, "")
            if is_owned(tags, self.stack) and key.startswith("route-table/"):
                state.route_tables[key.split("/", 1)[1]] = table
                state.ids[key] = table["RouteTableId"]
        return state

    def find_vpc_and_subnets(self) -> tuple[str | None, dict[str, str]]:
        """Our VPC id and our subnet ids by spec name (two calls, for the units downstream)."""
        ec2 = self.aws.ec2
        vpcs = ec2.describe_vpcs(Filters=[owner_filter(self.stack)])["Vpcs"]
        if len(vpcs) != 1:
            return None, {}
        vpc_id = vpcs[0]["VpcId"]
        subnets = _all(
            ec2,
            "describe_subnets",
            "Subnets",
            Filters=[{"Name": "vpc-id", "Values": [vpc_id]}, owner_filter(self.stack)],
        )
        ids = {}
        for subnet in subnets:
            spec = self._subnet_spec_for(subnet["CidrBlock"])
            if spec is not None:
                ids[spec.name] = subnet["SubnetId"]
        return vpc_id, ids

    def _subnet_spec_for(self, cidr: str) -> SubnetSpec | None:
        return next((s for s in self._vpc.subnets if s.cidr == cidr), None)

    # --- plan -------------------------------------------------------------------------------

    def plan(self) -> Plan:
        return self._plan(self.observe())

    def _plan(self, state: VpcState) -> Plan:
        vpc = self._vpc
        changes: list[Change] = []
        conflicts: list[str] = []
        names_by_id = {v: k for k, v in state.ids.items()}

        observed_vpc = None
        if state.vpc is not None:
            observed_vpc = {
                "cidr": state.vpc["CidrBlock"],
                "enable_dns_support": state.vpc["enableDnsSupport"],
                "enable_dns_hostnames": state.vpc["enableDnsHostnames"],
                "tags": tag_dict(state.vpc.get("Tags")),
            }
        changes.append(
            self.compare(
                "vpc",
                vpc.name,
                observed_vpc,
                {
                    "cidr": vpc.cidr,
                    "enable_dns_support": vpc.enable_dns_support,
                    "enable_dns_hostnames": vpc.enable_dns_hostnames,
                    "tags": self.tags("vpc", vpc.name),
                },
                state.ids.get("vpc"),
            )
        )

        observed_igw = None
        if state.igw is not None:
            attached = [a["VpcId"] for a in state.igw.get("Attachments", [])]
            observed_igw = {
                "attached_to": "vpc" if state.ids.get("vpc") in attached else None,
                "tags": tag_dict(state.igw.get("Tags")),
            }
        changes.append(
            self.compare(
                "internet-gateway",
                IGW,
                observed_igw,
                {"attached_to": "vpc", "tags": self.tags(IGW, f"{vpc.name}-igw")},
                state.ids.get(IGW),
            )
        )

        for subnet in vpc.subnets:
            live = state.subnets_by_cidr.get(subnet.cidr)
            observed = None
            if live is not None:
                tags = tag_dict(live.get("Tags"))
                if not is_owned(tags, self.stack):
                    conflicts.append(
                        f"subnet {subnet.name}: {subnet.cidr} is taken in our VPC by "
                        f"{live['SubnetId']}, which is not tagged as ours; delete it, or tag it "
                        f"{_owner_hint(self.stack)} to adopt it"
                    )
                    continue
                observed = {"availability_zone": live["AvailabilityZone"], "tags": tags}
            changes.append(
                self.compare(
                    "subnet",
                    subnet.name,
                    observed,
                    {
                        "cidr": subnet.cidr,
                        "availability_zone": subnet.availability_zone,
                        "tags": self._subnet_tags(subnet),
                    }
                    if observed is None
                    else {
                        "availability_zone": subnet.availability_zone,
                        "tags": self._subnet_tags(subnet),
                    },
                    live["SubnetId"] if live else None,
                )
            )

        for zone in self._nat_zones():
            nat_name = f"nat-{zone}"
            eip = state.eips.get(nat_name)
            changes.append(
                self.compare(
                    "elastic-ip",
                    nat_name,
                    None if eip is None else {"tags": tag_dict(eip.get("Tags"))},
                    {"tags": self.tags(f"elastic-ip/{nat_name}", f"{vpc.name}-{nat_name}")},
                    eip["AllocationId"] if eip else None,
                )
            )
            nat = state.nats.get(nat_name)
            observed_nat = None
            if nat is not None:
                allocations = [a.get("AllocationId") for a in nat.get("NatGatewayAddresses", [])]
                observed_nat = {
                    "subnet": names_by_id.get(nat["SubnetId"], nat["SubnetId"]).split("/")[-1],
                    "elastic_ip": next(
                        (names_by_id[a].split("/")[-1] for a in allocations if a in names_by_id),
                        allocations[0] if allocations else None,
                    ),
                    "tags": tag_dict(nat.get("Tags")),
                }
            changes.append(
                self.compare(
                    "nat-gateway",
                    nat_name,
                    observed_nat,
                    {
                        "subnet": vpc.subnet("public", zone).name,
                        "elastic_ip": nat_name,
                        "tags": self.tags(f"nat-gateway/{nat_name}", f"{vpc.name}-{nat_name}"),
                    },
                    nat["NatGatewayId"] if nat else None,
                )
            )

        desired_tables = self._route_tables()
        for table_name, desired in desired_tables.items():
            live = state.route_tables.get(table_name)
            observed = None
            if live is not None:
                observed = {
                    "routes": self._observed_routes(live, state, names_by_id),
                    "subnets": sorted(
                        names_by_id.get(a["SubnetId"], a["SubnetId"]).split("/")[-1]
                        for a in live.get("Associations", [])
                        if a.get("SubnetId")
                    ),
                    "tags": tag_dict(live.get("Tags")),
                }
            changes.append(
                self.compare(
                    "route-table",
                    table_name,
                    observed,
                    desired,
                    live["RouteTableId"] if live else None,
                )
            )

        # Owned resources the spec no longer has (e.g. fewer zones): ours, so they go.
        wanted_nats = {f"nat-{z}" for z in self._nat_zones()}
        for name, nat in state.nats.items():
            if name not in wanted_nats:
                changes.append(Change("delete", "nat-gateway", name, nat["NatGatewayId"]))
        for name, eip in state.eips.items():
            if name not in wanted_nats:
                changes.append(Change("delete", "elastic-ip", name, eip["AllocationId"]))
        for name, table in state.route_tables.items():
            if name not in desired_tables:
                changes.append(Change("delete", "route-table", name, table["RouteTableId"]))
        wanted_cidrs = {s.cidr for s in vpc.subnets}
        for cidr, subnet in state.subnets_by_cidr.items():
            if cidr not in wanted_cidrs and is_owned(tag_dict(subnet.get("Tags")), self.stack):
                changes.append(Change("delete", "subnet", cidr, subnet["SubnetId"]))

        return Plan(self.name, tuple(changes), (), tuple(conflicts))

    @staticmethod
    def _observed_routes(
        table: dict[str, Any], state: VpcState, names_by_id: dict[str, str]
    ) -> dict[str, str]:
        routes = {}
        for route in table.get("Routes", []):
            destination = route.get("DestinationCidrBlock")
            target = route.get("NatGatewayId") or route.get("GatewayId")
            if not destination or target == "local":
                continue
            if target in names_by_id:
                label = names_by_id[target].split("/")[-1]
            else:
                label = f"{target} (not a live gateway of this stack)"
            if route.get("State") == "blackhole":
                label = f"{target} (blackhole)"
            routes[destination] = label
        return routes

    # --- apply ------------------------------------------------------------------------------

    # One observation per apply: the plan is computed from it and the ids it holds are kept up
    # to date as resources are created, so the outputs need no second look.
    def _plan_for_apply(self) -> Plan:
        self._state = self.observe()
        return self._plan(self._state)

    def _outputs_after_apply(self) -> dict[str, str]:
        return self._outputs(self._state)

    def _execute(self, change: Change) -> None:
        ec2 = self.aws.ec2
        state = self._state
        vpc = self._vpc
        diffs = diffs_of(change)

        if change.action == "delete":
            self._delete(change.kind, change.resource_id or "")
            return

        if change.kind == "vpc":
            if change.action == "create":
                vpc_id = ec2.create_vpc(
                    CidrBlock=vpc.cidr,
                    TagSpecifications=tag_specifications("vpc", self.tags("vpc", vpc.name)),
                )["Vpc"]["VpcId"]
                ec2.get_waiter("vpc_available").wait(VpcIds=[vpc_id], WaiterConfig=WAIT_SHORT)
                state.ids["vpc"] = vpc_id
                diffs = {"enable_dns_support": True, "enable_dns_hostnames": True}
            elif "cidr" in diffs:
                raise NeedsReplacement(
                    f"gpu-vpc: VPC {change.resource_id} has CIDR {diffs['cidr'].observed}, the "
                    f"spec wants {vpc.cidr}; a VPC's CIDR cannot change: run infra_teardown, "
                    "then infra_apply"
                )
            vpc_id = state.ids["vpc"]
            if "enable_dns_support" in diffs:
                ec2.modify_vpc_attribute(
                    VpcId=vpc_id, EnableDnsSupport={"Value": vpc.enable_dns_support}
                )
            if "enable_dns_hostnames" in diffs:
                ec2.modify_vpc_attribute(
                    VpcId=vpc_id, EnableDnsHostnames={"Value": vpc.enable_dns_hostnames}
                )
            if change.action == "update" and "tags" in diffs:
                self._tag(vpc_id, self.tags("vpc", vpc.name))

        elif change.kind == "internet-gateway":
            tags = self.tags(IGW, f"{vpc.name}-igw")
            if change.action == "create":
                igw_id = ec2.create_internet_gateway(
                    TagSpecifications=tag_specifications("internet-gateway", tags)
                )["InternetGateway"]["InternetGatewayId"]
                state.ids[IGW] = igw_id
                diffs = {"attached_to": True}
            igw_id = state.ids[IGW]
            if "attached_to" in diffs:
                ec2.attach_internet_gateway(InternetGatewayId=igw_id, VpcId=state.ids["vpc"])
            if change.action == "update" and "tags" in diffs:
                self._tag(igw_id, tags)

        elif change.kind == "subnet":
            subnet = next(s for s in vpc.subnets if s.name == change.name)
            tags = self._subnet_tags(subnet)
            if change.action == "create":
                subnet_id = ec2.create_subnet(
                    VpcId=state.ids["vpc"],
                    CidrBlock=subnet.cidr,
                    AvailabilityZone=subnet.availability_zone,
                    TagSpecifications=tag_specifications("subnet", tags),
                )["Subnet"]["SubnetId"]
                state.ids[f"subnet/{subnet.name}"] = subnet_id
                return
            if "availability_zone" in diffs:
                raise NeedsReplacement(
                    f"gpu-vpc: subnet {change.resource_id} ({subnet.cidr}) is in "
                    f"{diffs['availability_zone'].observed}, the spec wants "
                    f"{subnet.availability_zone}; delete the subnet and apply again"
                )
            self._tag(change.resource_id or "", tags)

        elif change.kind == "elastic-ip":
            tags = self.tags(f"elastic-ip/{change.name}", f"{vpc.name}-{change.name}")
            if change.action == "create":
                allocation = ec2.allocate_address(
                    Domain="vpc", TagSpecifications=tag_specifications("elastic-ip", tags)
                )["AllocationId"]
                state.ids[f"elastic-ip/{change.name}"] = allocation
            else:
                self._tag(change.resource_id or "", tags)

        elif change.kind == "nat-gateway":
            zone = change.name.removeprefix("nat-")
            tags = self.tags(f"nat-gateway/{change.name}", f"{vpc.name}-{change.name}")
            if change.action == "update" and not ({"subnet", "elastic_ip"} & diffs.keys()):
                self._tag(change.resource_id or "", tags)
                return
            if change.action == "update":
                # Subnet and address of a NAT gateway are fixed: replace it (ours, by tag).
                self._delete("nat-gateway", change.resource_id or "")
            nat_id = ec2.create_nat_gateway(
                SubnetId=state.ids[f"subnet/{vpc.subnet('public', zone).name}"],
                AllocationId=state.ids[f"elastic-ip/{change.name}"],
                TagSpecifications=tag_specifications("natgateway", tags),
            )["NatGateway"]["NatGatewayId"]
            ec2.get_waiter("nat_gateway_available").wait(
                NatGatewayIds=[nat_id], WaiterConfig=WAIT_SHORT
            )
            state.ids[f"nat-gateway/{change.name}"] = nat_id

        elif change.kind == "route-table":
            self._apply_route_table(change)

    def _apply_route_table(self, change: Change) -> None:
        ec2 = self.aws.ec2
        state = self._state
        desired = self._route_tables()[change.name]
        key = f"route-table/{change.name}"
        if change.action == "create":
            table_id = ec2.create_route_table(
                VpcId=state.ids["vpc"],
                TagSpecifications=tag_specifications("route-table", desired["tags"]),
            )["RouteTable"]["RouteTableId"]
            state.ids[key] = table_id
            live_routes: dict[str, str] = {}
        else:
            table_id = state.ids[key]
            table = state.route_tables[change.name]
            live_routes = {
                r["DestinationCidrBlock"]: r.get("NatGatewayId") or r.get("GatewayId") or ""
                for r in table.get("Routes", [])
                if r.get("DestinationCidrBlock")
            }
            self._tag(table_id, desired["tags"])

        for destination, target_name in desired["routes"].items():
            target_id = state.ids[IGW if target_name == IGW else f"nat-gateway/{target_name}"]
            target = {"GatewayId": target_id} if target_name == IGW else {"NatGatewayId": target_id}
            if destination not in live_routes:
                ec2.create_route(RouteTableId=table_id, DestinationCidrBlock=destination, **target)
            elif live_routes[destination] != target_id:
                ec2.replace_route(RouteTableId=table_id, DestinationCidrBlock=destination, **target)

        # Associate each desired subnet; a subnet already tied to another table is moved.
        wanted = {state.ids[f"subnet/{name}"] for name in desired["subnets"]}
        vpc_filter = {"Name": "vpc-id", "Values": [state.ids["vpc"]]}
        current: dict[str, tuple[str, str]] = {}  # subnet id -> (association id, table id)
        for table in _all(ec2, "describe_route_tables", "RouteTables", Filters=[vpc_filter]):
            for association in table.get("Associations", []):
                if association.get("SubnetId"):
                    current[association["SubnetId"]] = (
                        association["RouteTableAssociationId"],
                        table["RouteTableId"],
                    )
        for subnet_id in sorted(wanted):
            if subnet_id not in current:
                ec2.associate_route_table(RouteTableId=table_id, SubnetId=subnet_id)
            elif current[subnet_id][1] != table_id:
                ec2.replace_route_table_association(
                    AssociationId=current[subnet_id][0], RouteTableId=table_id
                )

    def _tag(self, resource_id: str, tags: dict[str, str]) -> None:
        # Only our keys are written; tags others added are left as they are.
        self.aws.ec2.create_tags(
            Resources=[resource_id], Tags=[{"Key": k, "Value": v} for k, v in tags.items()]
        )

    # --- destroy ----------------------------------------------------------------------------

    def _delete(self, kind: str, resource_id: str) -> None:
        """Delete one resource that observation found carrying our ownership tag."""
        ec2 = self.aws.ec2
        try:
            if kind == "nat-gateway":
                ec2.delete_nat_gateway(NatGatewayId=resource_id)
                ec2.get_waiter("nat_gateway_deleted").wait(
                    NatGatewayIds=[resource_id], WaiterConfig=WAIT_SHORT
                )
            elif kind == "elastic-ip":
                ec2.release_address(AllocationId=resource_id)
            elif kind == "route-table":
                table = ec2.describe_route_tables(RouteTableIds=[resource_id])["RouteTables"][0]
                for association in table.get("Associations", []):
                    if not association.get("Main"):
                        ec2.disassociate_route_table(
                            AssociationId=association["RouteTableAssociationId"]
                        )
                ec2.delete_route_table(RouteTableId=resource_id)
            elif kind == "subnet":
                ec2.delete_subnet(SubnetId=resource_id)
            elif kind == "internet-gateway":
                igw = ec2.describe_internet_gateways(InternetGatewayIds=[resource_id])[
                    "InternetGateways"
                ][0]
                for attachment in igw.get("Attachments", []):
                    ec2.detach_internet_gateway(
                        InternetGatewayId=resource_id, VpcId=attachment["VpcId"]
                    )
                ec2.delete_internet_gateway(InternetGatewayId=resource_id)
            elif kind == "vpc":
                ec2.delete_vpc(VpcId=resource_id)
        except ClientError as exc:
            if is_not_found(exc):
                return
            if error_code(exc) == "DependencyViolation":
                raise PlanConflict(
                    f"gpu-vpc: cannot delete {kind} {resource_id}: it still holds resources this "
                    f"stack does not own ({exc.response['Error'].get('Message', '')}); remove "
                    "them by hand, then run infra_teardown again"
                ) from exc
            raise

    def destroy(self) -> Plan:
        state = self.observe()
        deletes: list[Change] = []
        # Reverse of creation: routes, NAT gateways, addresses, subnets, gateway, VPC.
        for name, table in state.route_tables.items():
            deletes.append(Change("delete", "route-table", name, table["RouteTableId"]))
        for name, nat in state.nats.items():
            deletes.append(Change("delete", "nat-gateway", name, nat["NatGatewayId"]))
        for name, eip in state.eips.items():
            deletes.append(Change("delete", "elastic-ip", name, eip["AllocationId"]))
        left_alone = []
        for cidr, subnet in state.subnets_by_cidr.items():
            if is_owned(tag_dict(subnet.get("Tags")), self.stack):
                spec = self._subnet_spec_for(cidr)
                deletes.append(
                    Change("delete", "subnet", spec.name if spec else cidr, subnet["SubnetId"])
                )
            else:
                left_alone.append(f"subnet {subnet['SubnetId']} ({cidr}) is not ours: left alone")
        if state.igw is not None:
            deletes.append(Change("delete", "internet-gateway", IGW, state.ids[IGW]))
        if state.vpc is not None:
            deletes.append(Change("delete", "vpc", self._vpc.name, state.ids["vpc"]))
        for change in deletes:
            self.log(f"{self.name}: {change}")
            self._delete(change.kind, change.resource_id or "")
        return Plan(self.name, tuple(deletes), tuple(left_alone))

    def outputs(self) -> dict[str, str]:
        return self._outputs(self.observe())

    def _outputs(self, state: VpcState) -> dict[str, str]:
        out = {"vpc_id": state.ids.get("vpc", "")}
        for tier in ("private", "public", "database"):
            out[f"{tier}_subnet_ids"] = ",".join(
                state.ids.get(f"subnet/{s.name}", "") for s in self._vpc.subnets if s.tier == tier
            )
        out["nat_gateway_ids"] = ",".join(
            state.ids.get(f"nat-gateway/nat-{z}", "") for z in self._nat_zones()
        )
        return out


def _owner_hint(stack: str) -> str:
    from infra_assets.spec import OWNER_TAG

    return f"{OWNER_TAG}={stack}"


def _all(client: Any, method: str, key: str, **kwargs: Any) -> list[dict[str, Any]]:
    """Every page of a describe call."""
    paginator = client.get_paginator(method)
    return [item for page in paginator.paginate(**kwargs) for item in page[key]]
