"""network_paths: the flows the cluster needs, held against the live security groups.

The cluster has three kinds of endpoints, each wearing security groups:
- the control plane: the EKS cluster security group plus the cluster's additional groups;
- the system nodes: the groups of their launch template, or the cluster security group when the
  template names none (what EKS does for managed node groups);
- the Karpenter nodes: the groups the EC2NodeClass selects by the discovery tag.
Pods use their node's groups (Cilium ENI mode attaches ENIs with the node's groups). A flow is
open when a group of the destination admits a group of the source (ingress) and a group of the
source lets it out (egress). The flows follow what Cilium needs between nodes (WireGuard, health,
Hubble), what EKS needs (EKS User Guide, "Amazon EKS security group requirements") and the rules
terraform-aws-eks v21 puts on its node security group.
"""

# No `from __future__ import annotations`: Dagster reads the check's context annotation.

import dataclasses
import ipaddress
from typing import Any

import dagster as dg
from botocore.exceptions import ClientError

from infra_assets.aws_access import AwsClients, is_not_found
from infra_assets.resources import InfraResource
from infra_assets.spec import ClusterSpec
from infra_assets.spec.kubernetes import KARPENTER_DISCOVERY_TAG

CONTROL_PLANE = "control plane"
SYSTEM_NODES = "system nodes"
KARPENTER_NODES = "karpenter nodes"
NODE_CLASSES = (SYSTEM_NODES, KARPENTER_NODES)


@dataclasses.dataclass(frozen=True)
class Flow:
    """One connection the cluster needs: from an endpoint class to a service on another."""

    source: str
    destination: str
    service: str
    protocol: str  # "tcp" | "udp"
    port: int
    from_pods: bool = False  # the source is the pods on those nodes, not the nodes themselves

    @property
    def name(self) -> str:
        source = f"pods on {self.source}" if self.from_pods else self.source
        return f"{source} -> {self.service} on {self.destination} {self.port}/{self.protocol}"


def required_flows() -> tuple[Flow, ...]:
    flows: list[Flow] = []
    for source in NODE_CLASSES:
        for destination in NODE_CLASSES:
            flows += [
                # Cilium transparent encryption (WireGuard), health checks and Hubble peers.
                Flow(source, destination, "WireGuard", "udp", 51871),
                Flow(source, destination, "Cilium health", "tcp", 4240),
                Flow(source, destination, "Hubble", "tcp", 4244),
                # CoreDNS runs on the system nodes first, and wherever it is rescheduled.
                Flow(source, destination, "CoreDNS", "udp", 53, from_pods=True),
                Flow(source, destination, "CoreDNS", "tcp", 53, from_pods=True),
            ]
    for nodes in NODE_CLASSES:
        flows += [
            Flow(CONTROL_PLANE, nodes, "kubelet", "tcp", 10250),
            Flow(CONTROL_PLANE, nodes, "webhooks", "tcp", 443),
            Flow(nodes, CONTROL_PLANE, "API server", "tcp", 443),
        ]
    return tuple(flows)


@dataclasses.dataclass(frozen=True)
class Topology:
    """Which security groups each endpoint class wears, and the groups themselves."""

    vpc_cidr: str
    groups_of: dict[str, tuple[str, ...]]
    groups: dict[str, dict[str, Any]]  # by id, as describe_security_groups returns them
    labels: dict[str, str]  # group id -> readable name ("cluster SG", "nodes SG")


@dataclasses.dataclass(frozen=True)
class PathsReport:
    checked: tuple[Flow, ...]
    missing: tuple[str, ...]  # one line per closed flow, naming the rule that is missing
    problems: tuple[str, ...] = ()  # what could not be observed

    @property
    def passed(self) -> bool:
        return not self.missing and not self.problems


def observe_topology(aws: AwsClients, spec: ClusterSpec) -> tuple[Topology | None, list[str]]:
    """The live security groups of the three endpoint classes (None with reasons if absent)."""
    try:
        cluster = aws.eks.describe_cluster(name=spec.cluster_name)["cluster"]
    except ClientError as exc:
        if is_not_found(exc):
            return None, [f"EKS cluster {spec.cluster_name} does not exist: apply gpu_eks"]
        raise
    vpc_config = cluster.get("resourcesVpcConfig", {})
    cluster_sg = vpc_config.get("clusterSecurityGroupId") or None
    extra = vpc_config.get("securityGroupIds", [])
    control_plane = tuple(dict.fromkeys([*([cluster_sg] if cluster_sg else []), *extra]))
    vpc_id = vpc_config.get("vpcId")
    vpcs = aws.ec2.describe_vpcs(VpcIds=[vpc_id])["Vpcs"] if vpc_id else []
    vpc_cidr = vpcs[0]["CidrBlock"] if vpcs else spec.vpc.cidr

    system = _system_node_groups(aws, spec)
    if not system and cluster_sg:
        system = (cluster_sg,)  # EKS puts the cluster SG on nodes whose template names none
    karpenter = tuple(
        g["GroupId"]
        for g in aws.ec2.describe_security_groups(
            Filters=[{"Name": f"tag:{KARPENTER_DISCOVERY_TAG}", "Values": [spec.cluster_name]}]
        )["SecurityGroups"]
    )
    groups_of = {CONTROL_PLANE: control_plane, SYSTEM_NODES: system, KARPENTER_NODES: karpenter}
    problems = [f"{name} wear no security group" for name, ids in groups_of.items() if not ids]
    ids = sorted({g for ids in groups_of.values() for g in ids})
    groups = (
        {g["GroupId"]: g for g in aws.ec2.describe_security_groups(GroupIds=ids)["SecurityGroups"]}
        if ids
        else {}
    )
    labels = {g: f"{g} ({groups[g].get('GroupName', '')})" for g in groups}
    if cluster_sg in labels:
        labels[cluster_sg] = f"{cluster_sg} (cluster SG)"
    return Topology(vpc_cidr, groups_of, groups, labels), problems


def _system_node_groups(aws: AwsClients, spec: ClusterSpec) -> tuple[str, ...]:
    group = spec.eks.system_node_group
    try:
        nodegroup = aws.eks.describe_nodegroup(
            clusterName=spec.cluster_name, nodegroupName=group.name
        )["nodegroup"]
    except ClientError as exc:
        if is_not_found(exc):
            return ()
        raise
    template = nodegroup.get("launchTemplate") or {}
    if not template.get("id") and not template.get("name"):
        return ()
    selector = (
        {"LaunchTemplateId": template["id"]}
        if template.get("id")
        else {"LaunchTemplateName": template["name"]}
    )
    data = aws.ec2.describe_launch_template_versions(
        **selector, Versions=[str(template.get("version") or "$Default")]
    )["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    ids = list(data.get("SecurityGroupIds", []))
    for interface in data.get("NetworkInterfaces", []):
        ids += interface.get("Groups", [])
    return tuple(dict.fromkeys(ids))


def _matches(permission: dict[str, Any], protocol: str, port: int) -> bool:
    proto = str(permission.get("IpProtocol"))
    if proto in ("-1", "all"):
        return True
    numbers = {"tcp": "6", "udp": "17"}
    if proto not in (protocol, numbers[protocol]):
        return False
    return permission.get("FromPort", 0) <= port <= permission.get("ToPort", 65535)


def _admits(permission: dict[str, Any], peers: tuple[str, ...], vpc_cidr: str) -> bool:
    """The rule names one of the peer groups, or a CIDR that holds every address of the VPC."""
    if any(p.get("GroupId") in peers for p in permission.get("UserIdGroupPairs", [])):
        return True
    vpc = ipaddress.ip_network(vpc_cidr)
    return any(
        ipaddress.ip_network(r["CidrIp"]).supernet_of(vpc) for r in permission.get("IpRanges", [])
    )


def _open(
    topology: Topology, owners: tuple[str, ...], peers: tuple[str, ...], direction: str, flow: Flow
) -> bool:
    key = "IpPermissions" if direction == "ingress" else "IpPermissionsEgress"
    return any(
        _matches(p, flow.protocol, flow.port) and _admits(p, peers, topology.vpc_cidr)
        for group in owners
        for p in topology.groups.get(group, {}).get(key, [])
    )


def evaluate(topology: Topology, flows: tuple[Flow, ...] = ()) -> PathsReport:
    """Each flow that no rule lets through, with the rule that would."""
    flows = flows or required_flows()
    missing = []
    for flow in flows:
        sources = topology.groups_of.get(flow.source, ())
        destinations = topology.groups_of.get(flow.destination, ())
        if not sources or not destinations:
            continue  # reported once as a problem of the topology
        names = ", ".join(topology.labels.get(g, g) for g in destinations)
        peers = ", ".join(topology.labels.get(g, g) for g in sources)
        if not _open(topology, destinations, sources, "ingress", flow):
            missing.append(
                f"{flow.name}: no ingress rule of {names} admits {flow.protocol} {flow.port} "
                f"from {peers}"
            )
        elif not _open(topology, sources, destinations, "egress", flow):
            missing.append(
                f"{flow.name}: no egress rule of {peers} lets {flow.protocol} {flow.port} "
                f"out to {names}"
            )
    return PathsReport(flows, tuple(missing))


def check_network_paths(aws: AwsClients, spec: ClusterSpec) -> PathsReport:
    topology, problems = observe_topology(aws, spec)
    if topology is None:
        # Nothing deployed (never applied, or torn down): no flow was looked at.
        return PathsReport((), (), tuple(problems))
    report = evaluate(topology)
    return dataclasses.replace(report, problems=tuple(problems))


@dg.asset_check(
    asset="gpu_eks",
    name="network_paths",
    description=(
        "The live security groups let through every flow the cluster needs: pods on every "
        "node class -> CoreDNS 53, control plane -> kubelet 10250 and webhooks 443, node <-> "
        "node WireGuard/health/Hubble, nodes -> API 443"
    ),
)
def network_paths_check(
    context: dg.AssetCheckExecutionContext, infra: InfraResource
) -> dg.AssetCheckResult:
    ctx = infra.unit_context(log=context.log)
    report = check_network_paths(AwsClients(ctx), ctx.spec)
    if not report.checked:
        # Like the drift checks after a teardown: a warning that nothing is there, not an
        # error about closed flows.
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            description="not deployed: " + "; ".join(report.problems),
            metadata={"state": "not deployed", "flows_checked": 0, "flows_closed": 0},
        )
    lines = [*report.problems, *report.missing]
    return dg.AssetCheckResult(
        passed=report.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(
            f"{len(report.checked)} flows open"
            if report.passed
            else f"{len(lines)} flows closed or unobservable:\n" + "\n".join(lines)
        ),
        metadata={
            "flows_checked": len(report.checked),
            "flows_closed": len(report.missing),
            "closed": dg.MetadataValue.md("\n".join(f"- {line}" for line in lines) or "none"),
        },
    )
