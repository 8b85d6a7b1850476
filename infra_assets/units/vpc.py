"""gpu-vpc: the VPC, its 9 subnets, internet gateway, NAT gateways, routes and S3 endpoint."""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from botocore.exceptions import ClientError

from infra_assets.aws_access import (
    RESOURCE_TAG,
    error_code,
    is_not_found,
    is_owned,
    owner_filter,
    tag_dict,
    tag_specifications,
    wait_short,
)
from infra_assets.idempotent import create_or_adopt
from infra_assets.plan import Change, FieldDiff, Plan
from infra_assets.spec import OWNER_TAG
from infra_assets.spec.aws import SubnetSpec
from infra_assets.spec.kubernetes import KARPENTER_DISCOVERY_TAG
from infra_assets.units.aws_unit import AwsUnit, NeedsReplacement, PlanConflict, diffs_of

INTERNET = "0.0.0.0/0"
IGW = "internet-gateway"
S3_ENDPOINT = "s3"
# NAT gateways in these states are gone or going; any other state is observed and compared.
GONE_NAT_STATES = ("deleting", "deleted")
# The tag keys (besides ownership and identity) this unit set on a resource, so that a key the
# spec no longer sets is removed, while keys others added are left alone.
TAG_KEYS_TAG = "gpu-analysis/tag-keys"
_OURS_PREFIX = "gpu-analysis/"


@dataclasses.dataclass
class VpcState:
    """What exists now, by the stable names of the spec (ids in `ids`).

    Where an earlier ambiguous create left two of a resource, one is kept (in the fields by
    name) and the others are `spares`, as (kind, name, id, why) for the plan to delete;
    `notes` say which one was kept and why, `conflicts` what needs a person.
    """

    vpc: dict[str, Any] | None = None
    igw: dict[str, Any] | None = None
    subnets_by_cidr: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    eips: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # key: NAT name
    nats: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    route_tables: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    endpoints: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    ids: dict[str, str] = dataclasses.field(default_factory=dict)  # "subnet/private-..." -> id
    spares: list[tuple[str, str, str, str]] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    conflicts: list[str] = dataclasses.field(default_factory=list)


# Order in which owned resources are deleted (teardown, and spares in a plan): what holds a
# resource goes before it.
_DELETE_ORDER = (
    "vpc-endpoint",
    "route-table",
    "nat-gateway",
    "elastic-ip",
    "subnet",
    "internet-gateway",
    "vpc",
)


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

    def _tags(
        self, resource: str, name: str, extra: dict[str, str] | None = None
    ) -> dict[str, str]:
        """Our tags of one resource, with the record of which keys we set."""
        tags = self.tags(resource, name)
        tags.update(extra or {})
        tags[TAG_KEYS_TAG] = ",".join(
            sorted(k for k in tags if k not in (OWNER_TAG, RESOURCE_TAG, TAG_KEYS_TAG))
        )
        return tags

    def _subnet_tags(self, subnet: SubnetSpec) -> dict[str, str]:
        extra = {"gpu-analysis/tier": subnet.tier}
        if subnet.tier == "public":
            extra.update(dict(self._vpc.public_subnet_tags))
        elif subnet.tier == "private":
            extra.update(dict(self._vpc.private_subnet_tags))
            extra[KARPENTER_DISCOVERY_TAG] = self.spec.cluster_name
        return self._tags(f"subnet/{subnet.name}", f"{self._vpc.name}-{subnet.name}", extra)

    def _nat_tags(self, nat_name: str) -> dict[str, str]:
        return self._tags(f"nat-gateway/{nat_name}", f"{self._vpc.name}-{nat_name}")

    def _eip_tags(self, nat_name: str) -> dict[str, str]:
        return self._tags(f"elastic-ip/{nat_name}", f"{self._vpc.name}-{nat_name}")

    def _endpoint_tags(self) -> dict[str, str]:
        return self._tags(f"vpc-endpoint/{S3_ENDPOINT}", f"{self._vpc.name}-s3")

    def _s3_service(self) -> str:
        return f"com.amazonaws.{self.aws.region}.s3"

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
            table["tags"] = self._tags(f"route-table/{name}", f"{vpc.name}-{name}")
        return tables

    def _endpoint_route_tables(self) -> list[str]:
        # S3 traffic of the nodes goes through the gateway endpoint (free) instead of the NAT
        # gateways (charged per GB processed); only private subnets send it to the NAT.
        return sorted(f"private-{zone}" for zone in self._vpc.availability_zones)

    # --- observe ----------------------------------------------------------------------------

    def observe(self) -> VpcState:
        ec2 = self.aws.ec2
        state = VpcState()
        owned = [owner_filter(self.stack)]
        vpcs = ec2.describe_vpcs(Filters=owned)["Vpcs"]
        igws = ec2.describe_internet_gateways(Filters=owned)["InternetGateways"]
        eips = ec2.describe_addresses(Filters=owned)["Addresses"]
        self._choose_vpc(state, vpcs)
        vpc_id = state.ids.get("vpc")

        nats: list[dict[str, Any]] = []
        if vpc_id is not None:
            vpc = state.vpc
            assert vpc is not None
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
            nats = [
                nat
                for nat in _all(ec2, "describe_nat_gateways", "NatGateways", Filters=[vpc_filter])
                if nat["State"] not in GONE_NAT_STATES
                and is_owned(tag_dict(nat.get("Tags")), self.stack)
            ]
            tables = [
                table
                for table in _all(
                    ec2, "describe_route_tables", "RouteTables", Filters=[vpc_filter, *owned]
                )
                if is_owned(tag_dict(table.get("Tags")), self.stack)
            ]
            endpoints = [
                endpoint
                for endpoint in _all(
                    ec2, "describe_vpc_endpoints", "VpcEndpoints", Filters=[vpc_filter]
                )
                if is_owned(tag_dict(endpoint.get("Tags")), self.stack)
                and endpoint.get("State", "").lower() not in ("deleting", "deleted")
            ]
            self._choose_route_tables(state, tables)
            self._choose_endpoints(state, endpoints)

        self._choose_igw(state, igws)
        self._choose_nats(state, nats)
        self._choose_eips(state, eips, nats)
        return state

    def _choose_vpc(self, state: VpcState, vpcs: list[dict[str, Any]]) -> None:
        """One VPC is ours; spare ones (an ambiguous CreateVpc's twin) that hold nothing go."""
        if not vpcs:
            return
        if len(vpcs) == 1:
            kept = vpcs[0]
        else:
            holdings = {v["VpcId"]: self._holdings(v["VpcId"]) for v in vpcs}

            def held(vpc: dict[str, Any]) -> str:
                counts = holdings[vpc["VpcId"]]
                return ", ".join(f"{n} {kind}{'s' if n > 1 else ''}" for kind, n in counts.items())

            # The one holding most is the one the earlier applies built on.
            ranked = sorted(vpcs, key=lambda v: (-sum(holdings[v["VpcId"]].values()), v["VpcId"]))
            holding = [v for v in ranked if holdings[v["VpcId"]]]
            kept = ranked[0]
            ids = ", ".join(sorted(v["VpcId"] for v in vpcs))
            if len(holding) > 1:
                state.conflicts.append(
                    f"vpc: {len(vpcs)} VPCs carry our tag for stack {self.stack!r} ({ids}) and "
                    "more than one holds resources ("
                    + "; ".join(f"{v['VpcId']} holds {held(v)}" for v in holding)
                    + "); which one to keep is a person's decision: remove the tag "
                    f"{_owner_hint(self.stack)} from the other(s) and delete them by hand, or "
                    "run infra_teardown (it removes all of them)"
                )
            else:
                why = f"it holds {held(kept)}" if holding else "none holds anything; first by id"
                for vpc in ranked[1:]:
                    state.spares.append(
                        ("vpc", self._vpc.name, vpc["VpcId"], "a duplicate holding nothing")
                    )
                state.notes.append(
                    f"vpc: {len(vpcs)} VPCs carry our tag ({ids}), left by an ambiguous create; "
                    f"keeping {kept['VpcId']} ({why}), deleting the others, which hold nothing"
                )
        state.vpc = kept
        state.ids["vpc"] = kept["VpcId"]

    def _holdings(self, vpc_id: str) -> dict[str, int]:
        """What a VPC holds besides what AWS makes with it, by kind; empty: nothing."""
        ec2 = self.aws.ec2
        vpc_filter = [{"Name": "vpc-id", "Values": [vpc_id]}]
        counts = {
            "subnet": len(_all(ec2, "describe_subnets", "Subnets", Filters=vpc_filter)),
            "route table": sum(
                1
                for t in _all(ec2, "describe_route_tables", "RouteTables", Filters=vpc_filter)
                if not any(a.get("Main") for a in t.get("Associations", []))
            ),
            "internet gateway": len(
                ec2.describe_internet_gateways(
                    Filters=[{"Name": "attachment.vpc-id", "Values": [vpc_id]}]
                )["InternetGateways"]
            ),
            "endpoint": len(
                [
                    e
                    for e in _all(ec2, "describe_vpc_endpoints", "VpcEndpoints", Filters=vpc_filter)
                    if e.get("State", "").lower() not in ("deleting", "deleted")
                ]
            ),
        }
        return {kind: n for kind, n in counts.items() if n}

    def _choose_igw(self, state: VpcState, igws: list[dict[str, Any]]) -> None:
        vpc_id = state.ids.get("vpc")
        ours = [g for g in igws if is_owned(tag_dict(g.get("Tags")), self.stack)]
        if not ours:
            return

        def attached_to(igw: dict[str, Any]) -> list[str]:
            return [a["VpcId"] for a in igw.get("Attachments", [])]

        ours.sort(key=lambda g: (vpc_id not in attached_to(g), bool(attached_to(g)), _id(g)))
        kept = ours[0]
        state.igw = kept
        state.ids[IGW] = kept["InternetGatewayId"]
        spare_vpcs = {s[2] for s in state.spares if s[0] == "vpc"}
        for igw in ours[1:]:
            elsewhere = [v for v in attached_to(igw) if v not in spare_vpcs]
            if elsewhere:
                state.notes.append(
                    f"internet-gateway: {igw['InternetGatewayId']} carries our tag but is "
                    f"attached to {', '.join(elsewhere)}, not our VPC: left alone"
                )
                continue
            state.spares.append(
                (
                    "internet-gateway",
                    IGW,
                    igw["InternetGatewayId"],
                    "a duplicate attached to no VPC of ours",
                )
            )
        if len(ours) > 1:
            state.notes.append(
                f"internet-gateway: {len(ours)} carry our tag; keeping "
                f"{kept['InternetGatewayId']} "
                f"({'attached to our VPC' if vpc_id in attached_to(kept) else 'the first by id'})"
            )

    def _choose_nats(self, state: VpcState, nats: list[dict[str, Any]]) -> None:
        rank = {"available": 0, "pending": 1}
        for key, group in _by_key(nats, "nat-gateway/").items():
            group.sort(key=lambda n: (rank.get(n["State"], 2), str(n.get("CreateTime")), _id(n)))
            kept, *spares = group
            state.nats[key] = kept
            state.ids[f"nat-gateway/{key}"] = kept["NatGatewayId"]
            for nat in spares:
                state.spares.append(
                    ("nat-gateway", key, nat["NatGatewayId"], f"a duplicate of {_id(kept)}")
                )
            if spares:
                state.notes.append(
                    f"nat-gateway {key}: {len(group)} carry our tag; keeping {_id(kept)} "
                    f"({kept['State']}), deleting {', '.join(_id(n) for n in spares)}"
                )

    def _choose_eips(
        self, state: VpcState, eips: list[dict[str, Any]], nats: list[dict[str, Any]]
    ) -> None:
        def allocations(gateways: Iterable[dict[str, Any]]) -> set[str]:
            return {
                a.get("AllocationId", "")
                for n in gateways
                for a in n.get("NatGatewayAddresses", [])
            }

        used_by_kept = allocations(state.nats.values())
        kept_nat_ids = {n["NatGatewayId"] for n in state.nats.values()}
        # Addresses of the spare NAT gateways are freed when those go (earlier in the plan).
        used_by_spares = allocations(n for n in nats if n["NatGatewayId"] not in kept_nat_ids)
        for key, group in _by_key(eips, "elastic-ip/").items():
            group.sort(
                key=lambda e: (
                    e["AllocationId"] not in used_by_kept,
                    bool(e.get("AssociationId")),
                    e["AllocationId"],
                )
            )
            kept, *others = group
            state.eips[key] = kept
            state.ids[f"elastic-ip/{key}"] = kept["AllocationId"]
            deleted = []
            for eip in others:
                holder = eip.get("NetworkInterfaceId") or eip.get("InstanceId")
                if eip.get("AssociationId") and eip["AllocationId"] not in used_by_spares:
                    state.notes.append(
                        f"elastic-ip {key}: {eip['AllocationId']} carries our tag but is in use "
                        f"by {holder}, which is not a NAT gateway of ours: left alone"
                    )
                    continue
                state.spares.append(
                    ("elastic-ip", key, eip["AllocationId"], "a duplicate holding no NAT gateway")
                )
                deleted.append(eip["AllocationId"])
            if deleted:
                used = " (used by our NAT gateway)" if kept["AllocationId"] in used_by_kept else ""
                state.notes.append(
                    f"elastic-ip {key}: {len(group)} carry our tag; keeping "
                    f"{kept['AllocationId']}{used}, releasing {', '.join(deleted)}"
                )

    def _choose_route_tables(self, state: VpcState, tables: list[dict[str, Any]]) -> None:
        for key, group in _by_key(tables, "route-table/").items():
            group.sort(key=lambda t: (-len(_subnet_associations(t)), _id(t)))
            kept, *spares = group
            state.route_tables[key] = kept
            state.ids[f"route-table/{key}"] = kept["RouteTableId"]
            for table in spares:
                state.spares.append(
                    ("route-table", key, table["RouteTableId"], f"a duplicate of {_id(kept)}")
                )
            if spares:
                state.notes.append(
                    f"route-table {key}: {len(group)} carry our tag; keeping {_id(kept)} "
                    f"({len(_subnet_associations(kept))} subnets associated), deleting "
                    f"{', '.join(_id(t) for t in spares)} (their subnets move to the kept one)"
                )

    def _choose_endpoints(self, state: VpcState, endpoints: list[dict[str, Any]]) -> None:
        for key, group in _by_key(endpoints, "vpc-endpoint/").items():
            group.sort(key=lambda e: (e.get("State", "").lower() != "available", _id(e)))
            kept, *spares = group
            state.endpoints[key] = kept
            state.ids[f"vpc-endpoint/{key}"] = kept["VpcEndpointId"]
            for endpoint in spares:
                state.spares.append(
                    ("vpc-endpoint", key, endpoint["VpcEndpointId"], f"a duplicate of {_id(kept)}")
                )

    def find_vpc_and_subnets(self) -> tuple[str | None, dict[str, str]]:
        """Our VPC id and our subnet ids by spec name (for the units downstream)."""
        ec2 = self.aws.ec2
        vpcs = ec2.describe_vpcs(Filters=[owner_filter(self.stack)])["Vpcs"]
        if not vpcs:
            return None, {}
        subnets = _all(
            ec2,
            "describe_subnets",
            "Subnets",
            Filters=[
                {"Name": "vpc-id", "Values": [v["VpcId"] for v in vpcs]},
                owner_filter(self.stack),
            ],
        )
        # With a spare VPC (an ambiguous create's twin, empty), ours is the one with subnets.
        holding = {s["VpcId"] for s in subnets}
        if len(vpcs) > 1 and len(holding) != 1:
            return None, {}
        vpc_id = holding.pop() if len(vpcs) > 1 else vpcs[0]["VpcId"]
        ids = {}
        for subnet in subnets:
            spec = self._subnet_spec_for(subnet["CidrBlock"])
            if spec is not None and subnet["VpcId"] == vpc_id:
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
        conflicts: list[str] = list(state.conflicts)
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
            self._compare(
                "vpc",
                vpc.name,
                observed_vpc,
                {
                    "cidr": vpc.cidr,
                    "enable_dns_support": vpc.enable_dns_support,
                    "enable_dns_hostnames": vpc.enable_dns_hostnames,
                    "tags": self._tags("vpc", vpc.name),
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
            self._compare(
                "internet-gateway",
                IGW,
                observed_igw,
                {"attached_to": "vpc", "tags": self._tags(IGW, f"{vpc.name}-igw")},
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
                self._compare(
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
                self._compare(
                    "elastic-ip",
                    nat_name,
                    None if eip is None else {"tags": tag_dict(eip.get("Tags"))},
                    {"tags": self._eip_tags(nat_name)},
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
                    # Status is observed state: a failed gateway routes nothing.
                    "state": nat["State"],
                    "tags": tag_dict(nat.get("Tags")),
                }
            changes.append(
                self._compare(
                    "nat-gateway",
                    nat_name,
                    observed_nat,
                    {
                        "subnet": vpc.subnet("public", zone).name,
                        "elastic_ip": nat_name,
                        "state": "available",
                        "tags": self._nat_tags(nat_name),
                    },
                    nat["NatGatewayId"] if nat else None,
                )
            )

        # Routes an endpoint adds (prefix list -> vpce-) belong to the endpoint, spares included.
        endpoint_ids = {e["VpcEndpointId"] for e in state.endpoints.values()} | {
            resource_id for kind, _, resource_id, _ in state.spares if kind == "vpc-endpoint"
        }
        desired_tables = self._route_tables()
        for table_name, desired in desired_tables.items():
            live = state.route_tables.get(table_name)
            observed = None
            if live is not None:
                observed = {
                    "routes": self._observed_routes(live, names_by_id, endpoint_ids),
                    "subnets": sorted(
                        names_by_id.get(a["SubnetId"], a["SubnetId"]).split("/")[-1]
                        for a in _subnet_associations(live)
                    ),
                    "tags": tag_dict(live.get("Tags")),
                }
            changes.append(
                self._compare(
                    "route-table",
                    table_name,
                    observed,
                    desired,
                    live["RouteTableId"] if live else None,
                )
            )

        endpoint = state.endpoints.get(S3_ENDPOINT)
        if vpc.s3_gateway_endpoint:
            observed_endpoint = None
            if endpoint is not None:
                observed_endpoint = {
                    "service": endpoint["ServiceName"],
                    "type": endpoint.get("VpcEndpointType"),
                    "route_tables": sorted(
                        names_by_id.get(t, t).split("/")[-1]
                        for t in endpoint.get("RouteTableIds", [])
                    ),
                    "state": endpoint.get("State", "").lower(),
                    "tags": tag_dict(endpoint.get("Tags")),
                }
            changes.append(
                self._compare(
                    "vpc-endpoint",
                    S3_ENDPOINT,
                    observed_endpoint,
                    {
                        "service": self._s3_service(),
                        "type": "Gateway",
                        "route_tables": self._endpoint_route_tables(),
                        "state": "available",
                        "tags": self._endpoint_tags(),
                    },
                    endpoint["VpcEndpointId"] if endpoint else None,
                )
            )

        # Owned resources the spec no longer has (e.g. fewer zones, no endpoint): ours, so they
        # go; and the spares an ambiguous create left.
        deletes: list[Change] = []
        wanted_nats = {f"nat-{z}" for z in self._nat_zones()}
        for name, nat in state.nats.items():
            if name not in wanted_nats:
                deletes.append(Change("delete", "nat-gateway", name, nat["NatGatewayId"]))
        for name, eip in state.eips.items():
            if name not in wanted_nats:
                deletes.append(Change("delete", "elastic-ip", name, eip["AllocationId"]))
        for name, table in state.route_tables.items():
            if name not in desired_tables:
                deletes.append(Change("delete", "route-table", name, table["RouteTableId"]))
        for name, found in state.endpoints.items():
            if name != S3_ENDPOINT or not vpc.s3_gateway_endpoint:
                deletes.append(Change("delete", "vpc-endpoint", name, found["VpcEndpointId"]))
        wanted_cidrs = {s.cidr for s in vpc.subnets}
        for cidr, subnet in state.subnets_by_cidr.items():
            if cidr not in wanted_cidrs and is_owned(tag_dict(subnet.get("Tags")), self.stack):
                deletes.append(Change("delete", "subnet", cidr, subnet["SubnetId"]))
        for kind, name, resource_id, why in state.spares:
            deletes.append(
                Change(
                    "delete",
                    kind,
                    f"{name} (spare)",
                    resource_id,
                    (FieldDiff("duplicate", why, None),),
                )
            )
        deletes.sort(key=lambda c: _DELETE_ORDER.index(c.kind))
        changes.extend(deletes)

        return Plan(self.name, tuple(changes), tuple(state.notes), tuple(conflicts))

    def _compare(
        self,
        kind: str,
        name: str,
        observed: dict[str, Any] | None,
        desired: dict[str, Any],
        resource_id: str | None = None,
    ) -> Change:
        """`compare`, plus what is live but no longer in the spec: routes, and tag keys we set."""
        change = self.compare(kind, name, observed, desired, resource_id)
        if observed is None:
            return change
        extra: list[FieldDiff] = []
        if "routes" in desired:
            for destination, target in sorted(observed.get("routes", {}).items()):
                if destination not in desired["routes"]:
                    extra.append(FieldDiff(f"routes.{destination}", target, None))
        if "tags" in desired:
            for key, value in sorted(observed.get("tags", {}).items()):
                if key not in desired["tags"] and key in _managed_tag_keys(observed["tags"]):
                    extra.append(FieldDiff(f"tags.{key}", value, None))
        seen = {d.path for d in change.diffs}
        diffs = change.diffs + tuple(d for d in extra if d.path not in seen)
        return Change("update" if diffs else "keep", kind, name, resource_id, diffs)

    @staticmethod
    def _observed_routes(
        table: dict[str, Any], names_by_id: dict[str, str], endpoint_ids: set[str]
    ) -> dict[str, str]:
        """Every route but the local one and our endpoint's, by destination -> target label."""
        routes = {}
        for route in table.get("Routes", []):
            destination = (
                route.get("DestinationCidrBlock")
                or route.get("DestinationIpv6CidrBlock")
                or route.get("DestinationPrefixListId")
            )
            target = (
                route.get("NatGatewayId")
                or route.get("GatewayId")
                or route.get("TransitGatewayId")
                or route.get("VpcPeeringConnectionId")
                or route.get("NetworkInterfaceId")
                or route.get("InstanceId")
                or route.get("EgressOnlyInternetGatewayId")
                or route.get("VpcEndpointId")
                or ""
            )
            if not destination or target == "local" or target in endpoint_ids:
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

    def _live(self) -> VpcState:
        # A plan handed in from outside (apply(plan)) comes without our observation: take one.
        if getattr(self, "_state", None) is None:
            self._state = self.observe()
        return self._state

    def _outputs_after_apply(self) -> dict[str, str]:
        outputs = self._outputs(self._live())
        self._state = None
        return outputs

    def _execute(self, change: Change) -> None:
        ec2 = self.aws.ec2
        state = self._live()
        vpc = self._vpc
        diffs = diffs_of(change)

        if change.action == "delete":
            self._delete(change.kind, change.resource_id or "")
            return

        if change.kind == "vpc":
            tags = self._tags("vpc", vpc.name)
            if change.action == "create":
                vpc_id = self._create(
                    "vpc",
                    lambda: self.aws.once("ec2").create_vpc(
                        CidrBlock=vpc.cidr, TagSpecifications=tag_specifications("vpc", tags)
                    )["Vpc"]["VpcId"],
                    lambda: self._find_tagged("describe_vpcs", "Vpcs", "VpcId", "vpc"),
                )
                ec2.get_waiter("vpc_available").wait(VpcIds=[vpc_id], WaiterConfig=wait_short())
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
                self._tag(vpc_id, tags, change)

        elif change.kind == "internet-gateway":
            tags = self._tags(IGW, f"{vpc.name}-igw")
            if change.action == "create":
                state.ids[IGW] = self._create(
                    "internet-gateway",
                    lambda: self.aws.once("ec2").create_internet_gateway(
                        TagSpecifications=tag_specifications("internet-gateway", tags)
                    )["InternetGateway"]["InternetGatewayId"],
                    lambda: self._find_tagged(
                        "describe_internet_gateways",
                        "InternetGateways",
                        "InternetGatewayId",
                        IGW,
                        unattached_or=state.ids["vpc"],
                    ),
                )
                diffs = {"attached_to": True}
            igw_id = state.ids[IGW]
            if "attached_to" in diffs:
                self._attach_igw(igw_id, state.ids["vpc"])
            if change.action == "update" and "tags" in diffs:
                self._tag(igw_id, tags, change)

        elif change.kind == "subnet":
            subnet = next(s for s in vpc.subnets if s.name == change.name)
            tags = self._subnet_tags(subnet)
            if change.action == "create":
                vpc_id = state.ids["vpc"]
                state.ids[f"subnet/{subnet.name}"] = self._create(
                    f"subnet {subnet.name}",
                    lambda: self.aws.once("ec2").create_subnet(
                        VpcId=vpc_id,
                        CidrBlock=subnet.cidr,
                        AvailabilityZone=subnet.availability_zone,
                        TagSpecifications=tag_specifications("subnet", tags),
                    )["Subnet"]["SubnetId"],
                    lambda: self._find_tagged(
                        "describe_subnets",
                        "Subnets",
                        "SubnetId",
                        f"subnet/{subnet.name}",
                        [
                            {"Name": "vpc-id", "Values": [vpc_id]},
                            {"Name": "cidr-block", "Values": [subnet.cidr]},
                        ],
                    ),
                )
                return
            if "availability_zone" in diffs:
                raise NeedsReplacement(
                    f"gpu-vpc: subnet {change.resource_id} ({subnet.cidr}) is in "
                    f"{diffs['availability_zone'].observed}, the spec wants "
                    f"{subnet.availability_zone}; delete the subnet and apply again"
                )
            self._tag(change.resource_id or "", tags, change)

        elif change.kind == "elastic-ip":
            tags = self._eip_tags(change.name)
            if change.action == "create":
                state.ids[f"elastic-ip/{change.name}"] = self._create(
                    f"elastic-ip {change.name}",
                    lambda: self.aws.once("ec2").allocate_address(
                        Domain="vpc", TagSpecifications=tag_specifications("elastic-ip", tags)
                    )["AllocationId"],
                    lambda: self._find_tagged(
                        "describe_addresses",
                        "Addresses",
                        "AllocationId",
                        f"elastic-ip/{change.name}",
                        paginated=False,
                    ),
                )
            else:
                self._tag(change.resource_id or "", tags, change)

        elif change.kind == "nat-gateway":
            self._apply_nat_gateway(change)

        elif change.kind == "route-table":
            self._apply_route_table(change)

        elif change.kind == "vpc-endpoint":
            self._apply_s3_endpoint(change)

    def _apply_nat_gateway(self, change: Change) -> None:
        ec2 = self.aws.ec2
        state = self._live()
        diffs = diffs_of(change)
        zone = change.name.removeprefix("nat-")
        tags = self._nat_tags(change.name)
        observed_state = diffs["state"].observed if "state" in diffs else None
        replace = change.action == "update" and (
            bool({"subnet", "elastic_ip"} & diffs.keys())
            or (observed_state is not None and observed_state not in ("pending", "available"))
        )
        if change.action == "update" and not replace:
            if observed_state == "pending":
                ec2.get_waiter("nat_gateway_available").wait(
                    NatGatewayIds=[change.resource_id], WaiterConfig=wait_short()
                )
            if "tags" in diffs:
                self._tag(change.resource_id or "", tags, change)
            return
        if replace:
            # Subnet and address of a NAT gateway are fixed, and a failed one routes nothing:
            # replace it (ours, by tag).
            self._delete("nat-gateway", change.resource_id or "")
        subnet_id = state.ids[f"subnet/{self._vpc.subnet('public', zone).name}"]
        allocation_id = state.ids[f"elastic-ip/{change.name}"]
        # The token makes a re-sent create return the same gateway; a replacement gets its own.
        token = self._client_token(
            "nat-gateway", change.name, subnet_id, allocation_id, change.resource_id or ""
        )
        nat_id = self._create(
            f"nat-gateway {change.name}",
            lambda: self.aws.once("ec2").create_nat_gateway(
                SubnetId=subnet_id,
                AllocationId=allocation_id,
                ClientToken=token,
                TagSpecifications=tag_specifications("natgateway", tags),
            )["NatGateway"]["NatGatewayId"],
            lambda: self._find_nat(change.name),
        )
        ec2.get_waiter("nat_gateway_available").wait(
            NatGatewayIds=[nat_id], WaiterConfig=wait_short()
        )
        state.ids[f"nat-gateway/{change.name}"] = nat_id
        if replace:
            # Routes through the old gateway now lead nowhere: point them at its replacement.
            for table in state.route_tables.values():
                for route in table.get("Routes", []):
                    if route.get("NatGatewayId") == change.resource_id:
                        ec2.replace_route(
                            RouteTableId=table["RouteTableId"],
                            DestinationCidrBlock=route["DestinationCidrBlock"],
                            NatGatewayId=nat_id,
                        )
                        route["NatGatewayId"] = nat_id

    def _apply_route_table(self, change: Change) -> None:
        ec2 = self.aws.ec2
        state = self._live()
        desired = self._route_tables()[change.name]
        key = f"route-table/{change.name}"
        if change.action == "create":
            vpc_id = state.ids["vpc"]
            token = self._client_token("route-table", change.name, vpc_id)
            table_id = self._create(
                f"route-table {change.name}",
                lambda: self.aws.once("ec2").create_route_table(
                    VpcId=vpc_id,
                    ClientToken=token,
                    TagSpecifications=tag_specifications("route-table", desired["tags"]),
                )["RouteTable"]["RouteTableId"],
                lambda: self._find_tagged(
                    "describe_route_tables",
                    "RouteTables",
                    "RouteTableId",
                    key,
                    [{"Name": "vpc-id", "Values": [vpc_id]}],
                ),
            )
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
            if "tags" in diffs_of(change):
                self._tag(table_id, desired["tags"], change)

        # Routes live but not in the spec (an internet route added by hand, a 0.0.0.0/1 that
        # bypasses the NAT gateway) are drift: the plan names them, and they go.
        for diff in change.diffs:
            if diff.path.startswith("routes.") and diff.desired is None:
                self._delete_route(table_id, diff.path.removeprefix("routes."))

        for destination, target_name in desired["routes"].items():
            target_id = state.ids[IGW if target_name == IGW else f"nat-gateway/{target_name}"]
            target = {"GatewayId": target_id} if target_name == IGW else {"NatGatewayId": target_id}
            if destination not in live_routes:
                self._create_route(change.name, table_id, destination, target)
            elif live_routes[destination] != target_id:
                ec2.replace_route(RouteTableId=table_id, DestinationCidrBlock=destination, **target)

        # Associate each desired subnet; a subnet already tied to another table is moved, and
        # one tied to this table that belongs elsewhere is let go.
        wanted = {state.ids[f"subnet/{name}"] for name in desired["subnets"]}
        current = self._subnet_associations(state.ids["vpc"])
        for subnet_id, (association_id, associated_table) in current.items():
            if associated_table == table_id and subnet_id not in wanted:
                ec2.disassociate_route_table(AssociationId=association_id)
        for subnet_id in sorted(wanted):
            if subnet_id not in current:
                self._create(
                    f"association of {subnet_id} with route-table {change.name}",
                    lambda s=subnet_id: self.aws.once("ec2").associate_route_table(
                        RouteTableId=table_id, SubnetId=s
                    )["AssociationId"],
                    lambda s=subnet_id: self._find_association(s, table_id),
                )
            elif current[subnet_id][1] != table_id:
                ec2.replace_route_table_association(
                    AssociationId=current[subnet_id][0], RouteTableId=table_id
                )

    def _apply_s3_endpoint(self, change: Change) -> None:
        ec2 = self.aws.ec2
        state = self._live()
        diffs = diffs_of(change)
        tags = self._endpoint_tags()
        key = f"vpc-endpoint/{S3_ENDPOINT}"
        wanted_tables = [state.ids[f"route-table/{t}"] for t in self._endpoint_route_tables()]
        observed_state = diffs["state"].observed if "state" in diffs else None
        broken = observed_state is not None and observed_state not in ("pending", "available")
        if change.action == "update" and not ({"service", "type"} & diffs.keys() or broken):
            if "route_tables" in diffs:
                endpoint = ec2.describe_vpc_endpoints(VpcEndpointIds=[change.resource_id])[
                    "VpcEndpoints"
                ][0]
                live_tables = set(endpoint.get("RouteTableIds", []))
                add = sorted(set(wanted_tables) - live_tables)
                remove = sorted(live_tables - set(wanted_tables))
                ec2.modify_vpc_endpoint(
                    VpcEndpointId=change.resource_id,
                    **({"AddRouteTableIds": add} if add else {}),
                    **({"RemoveRouteTableIds": remove} if remove else {}),
                )
            if "tags" in diffs:
                self._tag(change.resource_id or "", tags, change)
            return
        if change.action == "update":
            self._delete("vpc-endpoint", change.resource_id or "")
        vpc_id = state.ids["vpc"]
        token = self._client_token("vpc-endpoint", S3_ENDPOINT, vpc_id, change.resource_id or "")
        state.ids[key] = self._create(
            "vpc-endpoint s3",
            lambda: self.aws.once("ec2").create_vpc_endpoint(
                VpcEndpointType="Gateway",
                VpcId=vpc_id,
                ServiceName=self._s3_service(),
                RouteTableIds=wanted_tables,
                ClientToken=token,
                TagSpecifications=tag_specifications("vpc-endpoint", tags),
            )["VpcEndpoint"]["VpcEndpointId"],
            lambda: self._find_tagged(
                "describe_vpc_endpoints",
                "VpcEndpoints",
                "VpcEndpointId",
                key,
                [{"Name": "vpc-id", "Values": [vpc_id]}],
            ),
        )

    # --- creates that adopt, look-ups -------------------------------------------------------

    def _create(self, what: str, create: Callable[[], str], find: Callable[[], str | None]) -> str:
        return create_or_adopt(f"{self.name}: {what}", create, find, log=self.log)

    def _client_token(self, *parts: str) -> str:
        # Idempotency tokens: at most 64 ASCII characters. One per create attempt (the same
        # token on every re-send of that request), never reused by a later create: EC2 keeps
        # a token's answer after the resource is gone, so a deterministic token would hand a
        # re-create the deleted resource back (EC2 "Ensuring idempotency"). A later run finds
        # what an earlier one made by its tags instead.
        attempt = uuid.uuid4().hex
        return hashlib.sha256("|".join((self.stack, *parts, attempt)).encode()).hexdigest()[:48]

    def _find_tagged(
        self,
        method: str,
        key: str,
        id_field: str,
        resource: str,
        filters: list[dict[str, Any]] | None = None,
        *,
        unattached_or: str | None = None,
        paginated: bool = True,
    ) -> str | None:
        """The id of our resource carrying the resource tag `resource`, or None."""
        ec2 = self.aws.ec2
        query = [
            owner_filter(self.stack),
            {"Name": f"tag:{RESOURCE_TAG}", "Values": [resource]},
            *(filters or []),
        ]
        found = (
            _all(ec2, method, key, Filters=query)
            if paginated
            else getattr(ec2, method)(Filters=query)[key]
        )
        if unattached_or is not None:
            found = [
                f
                for f in found
                if all(a["VpcId"] == unattached_or for a in f.get("Attachments", []))
            ]
        found = [
            f
            for f in found
            if is_owned(tag_dict(f.get("Tags")), self.stack)
            and tag_dict(f.get("Tags")).get(RESOURCE_TAG) == resource
        ]
        return sorted(f[id_field] for f in found)[0] if found else None

    def _find_nat(self, nat_name: str) -> str | None:
        nats = _all(
            self.aws.ec2,
            "describe_nat_gateways",
            "NatGateways",
            Filters=[{"Name": "vpc-id", "Values": [self._live().ids["vpc"]]}],
        )
        for nat in nats:
            tags = tag_dict(nat.get("Tags"))
            if (
                nat["State"] in ("pending", "available")
                and is_owned(tags, self.stack)
                and tags.get(RESOURCE_TAG) == f"nat-gateway/{nat_name}"
            ):
                return nat["NatGatewayId"]
        return None

    def _create_route(
        self, table_name: str, table_id: str, destination: str, target: dict[str, str]
    ) -> None:
        def create() -> str:
            self.aws.once("ec2").create_route(
                RouteTableId=table_id, DestinationCidrBlock=destination, **target
            )
            return destination

        def find() -> str | None:
            table = self.aws.ec2.describe_route_tables(RouteTableIds=[table_id])["RouteTables"][0]
            for route in table.get("Routes", []):
                if route.get("DestinationCidrBlock") == destination and all(
                    route.get(k) == v for k, v in target.items()
                ):
                    return destination
            return None

        self._create(f"route {destination} in route-table {table_name}", create, find)

    def _subnet_associations(self, vpc_id: str) -> dict[str, tuple[str, str]]:
        """subnet id -> (association id, route table id), for the whole VPC."""
        current: dict[str, tuple[str, str]] = {}
        vpc_filter = {"Name": "vpc-id", "Values": [vpc_id]}
        for table in _all(
            self.aws.ec2, "describe_route_tables", "RouteTables", Filters=[vpc_filter]
        ):
            for association in _subnet_associations(table):
                current[association["SubnetId"]] = (
                    association["RouteTableAssociationId"],
                    table["RouteTableId"],
                )
        return current

    def _find_association(self, subnet_id: str, table_id: str) -> str | None:
        found = self._subnet_associations(self._live().ids["vpc"]).get(subnet_id)
        return found[0] if found and found[1] == table_id else None

    def _attach_igw(self, igw_id: str, vpc_id: str) -> None:
        def attached() -> str | None:
            igw = self.aws.ec2.describe_internet_gateways(InternetGatewayIds=[igw_id])[
                "InternetGateways"
            ][0]
            return igw_id if any(a["VpcId"] == vpc_id for a in igw.get("Attachments", [])) else None

        def attach() -> str:
            self.aws.once("ec2").attach_internet_gateway(InternetGatewayId=igw_id, VpcId=vpc_id)
            return igw_id

        self._create(f"attachment of {igw_id} to {vpc_id}", attach, attached)

    def _delete_route(self, table_id: str, destination: str) -> None:
        if destination.startswith("pl-"):
            target = {"DestinationPrefixListId": destination}
        elif ":" in destination:
            target = {"DestinationIpv6CidrBlock": destination}
        else:
            target = {"DestinationCidrBlock": destination}
        try:
            self.aws.ec2.delete_route(RouteTableId=table_id, **target)
        except ClientError as exc:
            if not (is_not_found(exc) or error_code(exc) == "InvalidRoute.NotFound"):
                raise

    def _tag(self, resource_id: str, tags: dict[str, str], change: Change | None = None) -> None:
        # Only our keys are written, and only keys we once set are removed; tags others added
        # are left as they are.
        ec2 = self.aws.ec2
        ec2.create_tags(
            Resources=[resource_id], Tags=[{"Key": k, "Value": v} for k, v in tags.items()]
        )
        removed = [
            d.path.removeprefix("tags.")
            for d in (change.diffs if change else ())
            if d.path.startswith("tags.") and d.desired is None
        ]
        if removed:
            ec2.delete_tags(Resources=[resource_id], Tags=[{"Key": k} for k in removed])

    # --- destroy ----------------------------------------------------------------------------

    def _delete(self, kind: str, resource_id: str) -> None:
        """Delete one resource that observation found carrying our ownership tag."""
        ec2 = self.aws.ec2
        try:
            if kind == "nat-gateway":
                ec2.delete_nat_gateway(NatGatewayId=resource_id)
                ec2.get_waiter("nat_gateway_deleted").wait(
                    NatGatewayIds=[resource_id], WaiterConfig=wait_short()
                )
            elif kind == "elastic-ip":
                ec2.release_address(AllocationId=resource_id)
            elif kind == "vpc-endpoint":
                ec2.delete_vpc_endpoints(VpcEndpointIds=[resource_id])
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

    def destroy_plan(self) -> Plan:
        """What teardown deletes: everything carrying our tag, duplicates included."""
        ec2 = self.aws.ec2
        owned = [owner_filter(self.stack)]
        deletes: list[Change] = []
        left_alone: list[str] = []
        vpcs = ec2.describe_vpcs(Filters=owned)["Vpcs"]
        vpc_ids = [v["VpcId"] for v in vpcs]
        vpc_filter = [{"Name": "vpc-id", "Values": vpc_ids}]
        named = {s.cidr: s.name for s in self._vpc.subnets}

        def add(kind: str, items: Iterable[dict[str, Any]], id_field: str) -> None:
            for item in sorted(items, key=lambda i: i[id_field]):
                tags = tag_dict(item.get("Tags"))
                if not is_owned(tags, self.stack):
                    continue
                name = tags.get(RESOURCE_TAG, "").split("/", 1)[-1] or item[id_field]
                if kind == "subnet":
                    name = named.get(item["CidrBlock"], item["CidrBlock"])
                deletes.append(Change("delete", kind, name, item[id_field]))

        if vpc_ids:
            add(
                "vpc-endpoint",
                (
                    e
                    for e in _all(ec2, "describe_vpc_endpoints", "VpcEndpoints", Filters=vpc_filter)
                    if e.get("State", "").lower() not in ("deleting", "deleted")
                ),
                "VpcEndpointId",
            )
            add(
                "route-table",
                (
                    t
                    for t in _all(ec2, "describe_route_tables", "RouteTables", Filters=vpc_filter)
                    if not any(a.get("Main") for a in t.get("Associations", []))
                ),
                "RouteTableId",
            )
            add(
                "nat-gateway",
                (
                    n
                    for n in _all(ec2, "describe_nat_gateways", "NatGateways", Filters=vpc_filter)
                    if n["State"] not in GONE_NAT_STATES
                ),
                "NatGatewayId",
            )
        add("elastic-ip", ec2.describe_addresses(Filters=owned)["Addresses"], "AllocationId")
        if vpc_ids:
            for subnet in _all(ec2, "describe_subnets", "Subnets", Filters=vpc_filter):
                if not is_owned(tag_dict(subnet.get("Tags")), self.stack):
                    left_alone.append(
                        f"subnet {subnet['SubnetId']} ({subnet['CidrBlock']}) is not ours: "
                        "left alone"
                    )
            add("subnet", _all(ec2, "describe_subnets", "Subnets", Filters=vpc_filter), "SubnetId")
        add(
            "internet-gateway",
            ec2.describe_internet_gateways(Filters=owned)["InternetGateways"],
            "InternetGatewayId",
        )
        for vpc in sorted(vpcs, key=lambda v: v["VpcId"]):
            deletes.append(Change("delete", "vpc", self._vpc.name, vpc["VpcId"]))
        return Plan(self.name, tuple(deletes), tuple(left_alone))

    def destroy(self, plan: Plan | None = None) -> Plan:
        """Delete what `plan` (by default `destroy_plan()`) lists, in its order."""
        plan = plan or self.destroy_plan()
        for change in plan.pending:
            self.log(f"{self.name}: {change}")
            self._delete(change.kind, change.resource_id or "")
        return plan

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
        out["s3_endpoint_id"] = state.ids.get(f"vpc-endpoint/{S3_ENDPOINT}", "")
        return out


def _owner_hint(stack: str) -> str:
    return f"{OWNER_TAG}={stack}"


def _id(resource: dict[str, Any]) -> str:
    # Route tables, NAT gateways and endpoints carry a VpcId too: their own id comes first.
    for field in (
        "NatGatewayId",
        "RouteTableId",
        "VpcEndpointId",
        "AllocationId",
        "InternetGatewayId",
        "SubnetId",
        "VpcId",
    ):
        if field in resource:
            return resource[field]
    return ""


def _by_key(resources: Iterable[dict[str, Any]], prefix: str) -> dict[str, list[dict[str, Any]]]:
    """Resources grouped by the name in their resource tag ("nat-gateway/nat-a" -> "nat-a")."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for resource in resources:
        key = tag_dict(resource.get("Tags")).get(RESOURCE_TAG, "")
        if key.startswith(prefix):
            groups.setdefault(key.removeprefix(prefix), []).append(resource)
    return groups


def _subnet_associations(table: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for a in table.get("Associations", []) if a.get("SubnetId")]


def _managed_tag_keys(tags: dict[str, str]) -> set[str]:
    """Tag keys this unit set on a resource: our namespace, and those its record lists."""
    recorded = {k for k in tags.get(TAG_KEYS_TAG, "").split(",") if k}
    return recorded | {k for k in tags if k.startswith(_OURS_PREFIX)}


def _all(client: Any, method: str, key: str, **kwargs: Any) -> list[dict[str, Any]]:
    """Every page of a describe call."""
    paginator = client.get_paginator(method)
    return [item for page in paginator.paginate(**kwargs) for item in page[key]]
