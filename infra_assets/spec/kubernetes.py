"""The in-cluster units of seed 000: Cilium, the Karpenter controller, node pools and classes."""

# Every number of the seed's Cilium box, Karpenter box and NodePool table lives here. Where the
# pinned versions cannot express a wish of the seed (spot percentages, placement groups before
# Karpenter 1.11, minAvailable in the 1.8.1 chart), the spec keeps the wish, says how it is
# approximated, and the `*_warnings()` functions turn it into a plan warning.

from __future__ import annotations

import dataclasses
import re

# Karpenter v1 durations: Go-style hours/minutes/seconds only, no `d` unit (see the CRD pattern).
KARPENTER_DURATION_PATTERN = r"^(([0-9]+(s|m|h))+|Never)$"

# The label that splits one role into a spot and an on-demand NodePool. Pods of the role carry
# a topologySpreadConstraint on it (maxSkew 1): with 10 values, 7 on the spot pool and 3 on the
# on-demand pool, the scheduler places 70% of them on spot nodes.
CAPACITY_SPREAD_LABEL = "capacity-spread"
CAPACITY_SPREAD_VALUES = tuple(str(n) for n in range(1, 11))

ROLE_LABEL = "gpu-analysis/role"  # node label: which seed pool (role) a node serves
# The first Karpenter with EC2NodeClass.placementGroupSelector; older controllers cannot launch
# into the group, so with an older pin the placement group asset warns instead of pretending.
PLACEMENT_GROUP_MIN_KARPENTER = "1.11.0"
# Karpenter finds the subnets and the security group for its nodes by this tag (= cluster name).
KARPENTER_DISCOVERY_TAG = "karpenter.sh/discovery"
# The node label Karpenter puts on every node it launches: the NodePool it belongs to.
NODEPOOL_LABEL = "karpenter.sh/nodepool"
# The extended resource the NVIDIA device plugin publishes in a GPU node's allocatable.
GPU_RESOURCE = "nvidia.com/gpu"
# Karpenter docs, Disruption, "Pod-Level Controls": a pod with this annotation blocks voluntary
# disruption (consolidation, drift, expiry) of its node, so 1-minute consolidation cannot evict
# a running step or run pod.
DO_NOT_DISRUPT_ANNOTATION = "karpenter.sh/do-not-disrupt"
# Cilium Bandwidth Manager: the pod annotation it enforces (egress, bits per second).
EGRESS_BANDWIDTH_ANNOTATION = "kubernetes.io/egress-bandwidth"
# The pod label that marks a pod carrying EGRESS_BANDWIDTH_ANNOTATION. Cilium docs (Bandwidth
# Manager, Limitations, 1.16): "Bandwidth enforcement currently does not work in combination
# with L7 Cilium Network Policies. In case they select the Pod at egress, then the bandwidth
# enforcement will be disabled for those Pods." The policies keep every L7 rule (the DNS
# visibility rule, and toFQDNs, which needs it) off pods with this label.
EGRESS_LIMITED_LABEL = "gpu-analysis/egress-limited"


@dataclasses.dataclass(frozen=True)
class CiliumSpec:
    """Cilium CNI: ENI IPAM, native routing, WireGuard, default-deny, Hubble UI, bandwidth QoS."""

    release: str = "cilium"
    namespace: str = "kube-system"
    chart: str = "cilium"
    repository: str = "https://helm.cilium.io/"
    chart_version: str = "1.16.5"
    ipam_mode: str = "eni"
    routing_mode: str = "native"
    encryption: str = "wireguard"
    hubble_ui: bool = True
    bandwidth_manager: bool = True
    # Default-deny covers every namespace except these: the system components (CoreDNS,
    # kube-proxy, Cilium, Hubble, Karpenter) live in kube-system and need the API server, AWS
    # APIs and each other; denying them would break the cluster before any workload runs.
    default_deny_exempt_namespaces: tuple[str, ...] = ("kube-system",)
    # Namespaces whose pods may talk to each other (the step pods of one match run).
    workload_namespaces: tuple[str, ...] = ("gpu-analysis",)
    # Egress the workloads need beyond the cluster: S3 (videos, results) and other AWS APIs.
    # Cilium's `*` does not cross a dot, hence one pattern per depth (bucket.s3.region...).
    allowed_egress_fqdn_patterns: tuple[str, ...] = (
        "*.amazonaws.com",
        "*.*.amazonaws.com",
        "*.*.*.amazonaws.com",
    )
    # The EKS Pod Identity agent: a hostNetwork DaemonSet on these link-local addresses. Pods
    # get their AWS credentials (no static keys) from it, so default-deny must let them reach it.
    pod_identity_agent_cidrs: tuple[str, ...] = ("169.254.170.23/32", "fd00:ec2::23/128")
    pod_identity_agent_port: int = 80
    # Bandwidth-limited pods (EGRESS_LIMITED_LABEL) cannot use toFQDNs (it needs the DNS proxy,
    # an L7 rule, which turns their bandwidth enforcement off). They reach AWS APIs over HTTPS
    # by address instead: anything outside the private ranges, so nothing inside the VPC.
    bandwidth_limited_https_except: tuple[str, ...] = (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
    )

    def helm_values(self, cluster_name: str) -> dict:
        return {
            "cluster": {"name": cluster_name},
            "eni": {"enabled": self.ipam_mode == "eni"},
            "ipam": {"mode": self.ipam_mode},
            # ENI mode with native routing: pod IPs are VPC IPs, only traffic leaving the VPC
            # through the node's ENIs is masqueraded.
            "routingMode": self.routing_mode,
            "egressMasqueradeInterfaces": "eth+",
            "encryption": {"enabled": self.encryption == "wireguard", "type": self.encryption},
            "bandwidthManager": {"enabled": self.bandwidth_manager},
            "hubble": {
                "enabled": True,
                "relay": {"enabled": self.hubble_ui},
                "ui": {"enabled": self.hubble_ui},
            },
            "policyEnforcementMode": "default",
        }


@dataclasses.dataclass(frozen=True)
class KarpenterControllerSpec:
    """The Karpenter controller Helm release: 2 replicas, a disruption budget, the SQS queue."""

    # Namespace and service account come from KarpenterIamSpec, where the Pod Identity
    # association for them is declared: one place, so they cannot disagree.
    release: str = "karpenter"
    chart: str = "oci://public.ecr.aws/karpenter/karpenter"
    chart_version: str = "1.8.1"
    replicas: int = 2
    # The seed asks for minAvailable=1. Chart 1.8.1 renders only podDisruptionBudget
    # .maxUnavailable, so with 2 replicas the same guarantee is maxUnavailable=1.
    pdb_min_available_wish: int = 1

    @property
    def pdb_max_unavailable(self) -> int:
        return self.replicas - self.pdb_min_available_wish

    def helm_values(self, cluster_name: str, interruption_queue: str, service_account: str) -> dict:
        return {
            "replicas": self.replicas,
            "podDisruptionBudget": {
                "name": self.release,
                "maxUnavailable": self.pdb_max_unavailable,
            },
            "serviceAccount": {"create": True, "name": service_account},
            "settings": {"clusterName": cluster_name, "interruptionQueue": interruption_queue},
        }


@dataclasses.dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: str = "NoSchedule"


# Cilium docs, "Installation on EKS" / Karpenter: nodes start with this taint so no pod lands
# before the Cilium agent runs there (a pod scheduled earlier gets no Cilium-managed address);
# the agent removes it when ready. As a startup taint, Karpenter expects it and pods need no
# toleration.
CILIUM_AGENT_NOT_READY_TAINT = Taint("node.cilium.io/agent-not-ready", "true", "NoExecute")


@dataclasses.dataclass(frozen=True)
class DisruptionBudget:
    """One entry of NodePool.spec.disruption.budgets; `schedule` is a cron in UTC."""

    nodes: str
    schedule: str | None = None
    duration: str | None = None
    reasons: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class NodeClassSpec:
    """One EC2NodeClass: Bottlerocket, encrypted gp3 data volume, discovery by tag."""

    name: str
    data_volume_size: str
    data_volume_iops: int
    data_volume_throughput_mibps: int
    # Karpenter's `family@version` alias. None: the Bottlerocket release the system nodes pin
    # (EksSpec.system_node_group.release_version), so one bump rolls every node, deliberately.
    # `@latest` is refused: each Bottlerocket release would drift and replace every node (the
    # CRD's own description: "not recommended for production environments").
    ami_alias: str | None = None
    os_volume_size: str = "4Gi"  # Bottlerocket's root (OS) volume; data lives on /dev/xvdb
    # The seed places GPU nodes in the stack's cluster placement group. Karpenter 1.8.1 has no
    # EC2NodeClass.placementGroupSelector (it arrives in 1.11): this records the wish, the plan
    # warns, and the pools pin to the placement group's zone instead.
    placement_group_wish: bool = False

    def __post_init__(self) -> None:
        if self.ami_alias is not None and self.ami_alias.endswith("@latest"):
            raise ValueError(
                f"error: EC2NodeClass {self.name}: ami_alias={self.ami_alias!r} replaces every "
                "node on each AMI release; pin a version (e.g. 'bottlerocket@v1.34.0') or leave "
                "it None to follow the system nodes' Bottlerocket release"
            )


@dataclasses.dataclass(frozen=True)
class NodePoolSpec:
    """One Karpenter NodePool. A seed role with a spot share is two of these (spot, on-demand)."""

    name: str  # the NodePool name, e.g. "gpu-preprocessing-spot"
    role: str  # the seed's pool and the profile's nodepool name, e.g. "gpu-preprocessing"
    node_class: NodeClassSpec  # pools of one role share one EC2NodeClass
    instance_types: tuple[str, ...]
    capacity_types: tuple[str, ...]  # ("on-demand",) or ("spot",)
    limit_cpu: str
    limit_memory: str
    consolidation_policy: str  # WhenEmpty | WhenEmptyOrUnderutilized
    consolidate_after: str
    expire_after: str
    budgets: tuple[DisruptionBudget, ...] = (DisruptionBudget(nodes="10%"),)
    # Empty: from the cluster spec, so a moved placement group or VPC moves the pools too: the
    # placement group's zone when the pool's class wants the placement group, else all zones.
    zones: tuple[str, ...] = ()
    taints: tuple[Taint, ...] = ()
    startup_taints: tuple[Taint, ...] = (CILIUM_AGENT_NOT_READY_TAINT,)
    gpu: str | None = None  # the GPU model, as a node label for people and dashboards
    capacity_spread: tuple[str, ...] = ()  # values of CAPACITY_SPREAD_LABEL this pool offers
    spot_share_wish: int = 0  # the seed's spot percentage for the whole role
    role_limit_cpu: str = ""  # the seed's limit for the whole role (both pools together)
    role_limit_memory: str = ""

    def __post_init__(self) -> None:
        for field in ("expire_after", "consolidate_after"):
            value = getattr(self, field)
            if not re.fullmatch(KARPENTER_DURATION_PATTERN, value):
                raise ValueError(
                    f"error: NodePool {self.name}: {field}={value!r} is not a Karpenter duration; "
                    "use hours, minutes or seconds (60 days = '1440h')"
                )
        if self.consolidation_policy not in ("WhenEmpty", "WhenEmptyOrUnderutilized"):
            raise ValueError(
                f"error: NodePool {self.name}: consolidation_policy="
                f"{self.consolidation_policy!r}; use WhenEmpty or WhenEmptyOrUnderutilized"
            )

    @property
    def labels(self) -> dict[str, str]:
        labels = {ROLE_LABEL: self.role}
        if self.gpu:
            labels["gpu-analysis/gpu"] = self.gpu.lower()
        return labels


# Paris business hours 08:00-19:00, Monday to Friday. Karpenter evaluates budget schedules in
# UTC and cannot follow daylight saving time, so the window is the union over the year:
# 06:00 UTC (08:00 CEST) for 12h to 18:00 UTC (19:00 CET). It always covers 08:00-19:00 Paris.
BUSINESS_HOURS_SCHEDULE_UTC = "0 6 * * 1-5"
BUSINESS_HOURS_DURATION = "12h"

GPU_TAINT = Taint("nvidia.com/gpu", "true", "NoSchedule")


NODE_CLASS_GPU_INFERENCE = NodeClassSpec(
    "gpu-inference", "300Gi", 10000, 750, placement_group_wish=True
)
NODE_CLASS_GPU_PREPROCESSING = NodeClassSpec(
    "gpu-preprocessing", "200Gi", 5000, 500, placement_group_wish=True
)
# gp3's baseline throughput (125 MiB/s) with the seed's 3000 IOPS.
NODE_CLASS_CPU_COORDINATION = NodeClassSpec("cpu-coordination", "50Gi", 3000, 125)


def node_classes(nodepools: tuple[NodePoolSpec, ...]) -> tuple[NodeClassSpec, ...]:
    """The EC2NodeClasses the pools reference, each once, in pool order."""
    seen: dict[str, NodeClassSpec] = {}
    for pool in nodepools:
        known = seen.setdefault(pool.node_class.name, pool.node_class)
        if known != pool.node_class:
            raise ValueError(
                f"error: two different EC2NodeClasses named {known.name!r}; "
                "give them distinct names"
            )
    return tuple(seen.values())


def _split(
    role: str,
    *,
    spot_share: int,
    limit_cpu: int,
    limit_memory_gi: int,
    **common,
) -> tuple[NodePoolSpec, NodePoolSpec]:
    """One seed role with `spot_share`% spot as a spot and an on-demand NodePool.

    The role's limits are split in the same ratio so both pools together never exceed the
    seed's maximum for the role.
    """
    spot_values = len(CAPACITY_SPREAD_VALUES) * spot_share // 100
    shares = {"spot": spot_share, "on-demand": 100 - spot_share}
    spreads = {
        "spot": CAPACITY_SPREAD_VALUES[:spot_values],
        "on-demand": CAPACITY_SPREAD_VALUES[spot_values:],
    }
    pools = []
    for capacity in ("spot", "on-demand"):
        pools.append(
            NodePoolSpec(
                name=f"{role}-{capacity}",
                role=role,
                capacity_types=(capacity,),
                capacity_spread=spreads[capacity],
                limit_cpu=str(limit_cpu * shares[capacity] // 100),
                limit_memory=f"{limit_memory_gi * shares[capacity] // 100}Gi",
                spot_share_wish=spot_share,
                role_limit_cpu=str(limit_cpu),
                role_limit_memory=f"{limit_memory_gi}Gi",
                **common,
            )
        )
    return pools[0], pools[1]


def default_nodepools() -> tuple[NodePoolSpec, ...]:
    """The seed's NodePool table as Karpenter v1 NodePools."""
    inference = NodePoolSpec(
        name="gpu-inference",
        role="gpu-inference",
        node_class=NODE_CLASS_GPU_INFERENCE,
        instance_types=("g5.xlarge", "g5.2xlarge", "g5.4xlarge"),
        capacity_types=("on-demand",),  # 0% spot: the inference SLA
        limit_cpu="100",
        limit_memory="400Gi",
        consolidation_policy="WhenEmpty",
        consolidate_after="5m",
        expire_after="1440h",  # 60 days
        budgets=(
            DisruptionBudget(nodes="10%"),
            DisruptionBudget(
                nodes="0", schedule=BUSINESS_HOURS_SCHEDULE_UTC, duration=BUSINESS_HOURS_DURATION
            ),
        ),
        taints=(GPU_TAINT,),
        gpu="A10G",
        role_limit_cpu="100",
        role_limit_memory="400Gi",
    )
    preprocessing = _split(
        "gpu-preprocessing",
        node_class=NODE_CLASS_GPU_PREPROCESSING,
        spot_share=70,
        limit_cpu=100,
        limit_memory_gi=400,
        instance_types=("g4dn.xlarge", "g4dn.2xlarge", "g4dn.4xlarge"),
        consolidation_policy="WhenEmptyOrUnderutilized",
        consolidate_after="3m",  # the seed's 180s
        expire_after="720h",  # 30 days
        taints=(GPU_TAINT,),
        gpu="T4",
    )
    coordination = _split(
        "cpu-coordination",
        node_class=NODE_CLASS_CPU_COORDINATION,
        spot_share=80,
        limit_cpu=100,
        limit_memory_gi=200,
        instance_types=tuple(
            f"{family}.{size}" for family in ("c6i", "c6a", "m6i") for size in ("xlarge", "2xlarge")
        ),
        consolidation_policy="WhenEmptyOrUnderutilized",
        consolidate_after="1m",
        expire_after="720h",
    )
    return (inference, *preprocessing, *coordination)


def nodepool_names(role: str, nodepools: tuple[NodePoolSpec, ...] | None = None) -> list[str]:
    """The NodePool names serving one seed role (the profile's nodepool name), for node affinity.

    Pods select them with `karpenter.sh/nodepool In <names>`, or simply by ROLE_LABEL = role.
    """
    pools = default_nodepools() if nodepools is None else nodepools
    names = [p.name for p in pools if p.role == role]
    if not names:
        known = sorted({p.role for p in pools})
        raise KeyError(f"error: no node pool serves role {role!r}; known roles: {known}")
    return names


def nodepool_warnings(
    nodepools: tuple[NodePoolSpec, ...],
    karpenter: KarpenterControllerSpec,
    placement_group_zone: str,
) -> list[str]:
    """What the seed asks of the pools that Karpenter cannot express, and the approximation."""
    warnings: list[str] = []
    for node_class in node_classes(nodepools):
        if node_class.placement_group_wish:
            warnings.append(
                f"EC2NodeClass {node_class.name}: the seed places these nodes in the cluster "
                f"placement group, but Karpenter {karpenter.chart_version} has no "
                f"placementGroupSelector (from {PLACEMENT_GROUP_MIN_KARPENTER}); its pools are "
                f"pinned to {placement_group_zone} by a zone requirement instead"
            )
    for pool in nodepools:
        if pool.spot_share_wish and "spot" in pool.capacity_types:
            warnings.append(
                f"{pool.role}: Karpenter v1 has no spot percentage; the seed's "
                f"{pool.spot_share_wish}% spot is a spot and an on-demand NodePool split on label "
                f"{CAPACITY_SPREAD_LABEL} ({len(pool.capacity_spread)} of "
                f"{len(CAPACITY_SPREAD_VALUES)} values on spot); it holds only for pods with a "
                f"topologySpreadConstraint on {CAPACITY_SPREAD_LABEL}, and the role's limits "
                f"(cpu {pool.role_limit_cpu}, memory {pool.role_limit_memory}) are split in the "
                "same ratio"
            )
    return warnings


def karpenter_controller_warnings(karpenter: KarpenterControllerSpec) -> list[str]:
    """What the seed asks of the controller release that chart 1.8.1 cannot express."""
    warnings: list[str] = []
    if karpenter.pdb_min_available_wish:
        warnings.append(
            f"Karpenter chart {karpenter.chart_version} renders only podDisruptionBudget"
            f".maxUnavailable; the seed's minAvailable={karpenter.pdb_min_available_wish} with "
            f"{karpenter.replicas} replicas is set as "
            f"maxUnavailable={karpenter.pdb_max_unavailable}"
        )
    return warnings
