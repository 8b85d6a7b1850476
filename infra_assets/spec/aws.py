"""The AWS side of the declared cluster: VPC, placement group, EKS, Karpenter IAM (seed 000)."""

from __future__ import annotations

import dataclasses
from typing import Literal

SubnetTier = Literal["private", "public", "database"]


@dataclasses.dataclass(frozen=True)
class SubnetSpec:
    """One subnet: its tier, zone and CIDR. `name` is the stable name used in plans and tags."""

    tier: SubnetTier
    availability_zone: str
    cidr: str

    @property
    def name(self) -> str:
        return f"{self.tier}-{self.availability_zone}"


@dataclasses.dataclass(frozen=True)
class VpcSpec:
    """VPC 10.152.0.0/16 across three zones, as in the seed's network CIDR plan."""

    name: str = "gpu-analysis"
    cidr: str = "10.152.0.0/16"
    availability_zones: tuple[str, ...] = ("eu-west-3a", "eu-west-3b", "eu-west-3c")
    # One CIDR per zone, in the order of `availability_zones`.
    private_subnets: tuple[str, ...] = ("10.152.0.0/20", "10.152.16.0/20", "10.152.32.0/20")
    public_subnets: tuple[str, ...] = ("10.152.64.0/20", "10.152.80.0/20", "10.152.96.0/20")
    # Reserved for databases: created and routed inside the VPC only (no internet route).
    database_subnets: tuple[str, ...] = ("10.152.112.0/20", "10.152.128.0/20", "10.152.144.0/20")
    # One NAT gateway per zone, so losing a zone does not cut the others off the internet.
    one_nat_gateway_per_az: bool = True
    enable_dns_support: bool = True
    enable_dns_hostnames: bool = True
    # Load balancer discovery tags of the AWS Load Balancer Controller; Karpenter's discovery tag
    # (karpenter.sh/discovery = cluster name) is added to the private subnets by the unit.
    public_subnet_tags: tuple[tuple[str, str], ...] = (("kubernetes.io/role/elb", "1"),)
    private_subnet_tags: tuple[tuple[str, str], ...] = (("kubernetes.io/role/internal-elb", "1"),)
    # An S3 gateway endpoint on the private route tables: S3 traffic of the nodes (video, frames,
    # results) then bypasses the NAT gateways, which charge per GB processed; the endpoint is free.
    s3_gateway_endpoint: bool = True

    def __post_init__(self) -> None:
        zones = len(self.availability_zones)
        for tier in ("private", "public", "database"):
            cidrs = getattr(self, f"{tier}_subnets")
            if len(cidrs) != zones:
                raise ValueError(
                    f"VpcSpec.{tier}_subnets: need one CIDR per availability zone "
                    f"({zones}), got {len(cidrs)}"
                )

    @property
    def subnets(self) -> tuple[SubnetSpec, ...]:
        """All subnets, tier by tier, zone by zone (9 with the seed's values)."""
        return tuple(
            SubnetSpec(tier, az, cidr)
            for tier in ("private", "public", "database")
            for az, cidr in zip(
                self.availability_zones, getattr(self, f"{tier}_subnets"), strict=True
            )
        )

    def subnet(self, tier: SubnetTier, availability_zone: str) -> SubnetSpec:
        for subnet in self.subnets:
            if subnet.tier == tier and subnet.availability_zone == availability_zone:
                return subnet
        raise KeyError(f"no {tier} subnet in {availability_zone}")


@dataclasses.dataclass(frozen=True)
class PlacementGroupSpec:
    """The cluster placement group that keeps GPU preprocessing and inference nodes close.

    EC2 places a cluster placement group in the zone of its first instance; `availability_zone`
    is the zone the GPU node pools pin themselves to so that this is always eu-west-3a.
    """

    name: str = "gpu-analysis-gpu-cluster"
    strategy: Literal["cluster", "spread", "partition"] = "cluster"
    availability_zone: str = "eu-west-3a"


@dataclasses.dataclass(frozen=True)
class NodeGroupSpec:
    """The managed system node group that runs CoreDNS, kube-proxy and the Karpenter controller."""

    name: str = "system"
    instance_types: tuple[str, ...] = ("m6i.large",)
    ami_type: str = "BOTTLEROCKET_x86_64"
    # The Bottlerocket release (`releaseVersion`), pinned: without it EKS takes the latest and
    # every new release rolls all system nodes. Bump it deliberately; the plan shows the update.
    # Bottlerocket versions are not tied to the Kubernetes minor (1.34.0 runs aws-k8s-1.32).
    release_version: str = "1.34.0-18d04e52"
    capacity_type: Literal["ON_DEMAND", "SPOT"] = "ON_DEMAND"
    min_size: int = 2
    max_size: int = 3
    desired_size: int = 2
    # Bottlerocket keeps the OS on /dev/xvda and containers/images on the data volume /dev/xvdb;
    # both encrypted (seed: all EBS volumes encrypted at rest).
    os_volume_device: str = "/dev/xvda"
    os_volume_gib: int = 4
    os_volume_encrypted: bool = True
    data_volume_device: str = "/dev/xvdb"
    data_volume_gib: int = 50
    data_volume_type: str = "gp3"
    data_volume_encrypted: bool = True
    labels: tuple[tuple[str, str], ...] = (("gpu-analysis/node-role", "system"),)
    # (key, value, effect). Nodes start before Cilium (gpu-cilium comes after gpu-eks): Cilium's
    # EKS installation guide taints managed node groups with this, so application pods are only
    # scheduled once the Cilium agent runs on the node; the agent removes the taint itself.
    taints: tuple[tuple[str, str, str], ...] = (
        ("node.cilium.io/agent-not-ready", "true", "NO_EXECUTE"),
    )

    def __post_init__(self) -> None:
        if not self.min_size <= self.desired_size <= self.max_size:
            raise ValueError(
                f"NodeGroupSpec {self.name}: need min_size <= desired_size <= max_size, got "
                f"{self.min_size} <= {self.desired_size} <= {self.max_size}"
            )
        if not self.release_version or self.release_version == "latest":
            raise ValueError(
                f"NodeGroupSpec {self.name}: release_version must pin a Bottlerocket release "
                f"(e.g. 1.34.0-18d04e52), got {self.release_version!r}"
            )


@dataclasses.dataclass(frozen=True)
class EksSpec:
    """EKS 1.32 with a private API endpoint only."""

    version: str = "1.32"
    endpoint_private_access: bool = True
    endpoint_public_access: bool = False
    # API access entries, no aws-auth ConfigMap.
    authentication_mode: Literal["API", "API_AND_CONFIG_MAP", "CONFIG_MAP"] = "API"
    # Cilium (ENI mode) replaces the VPC CNI, so EKS must not install its default aws-node;
    # CoreDNS, kube-proxy and the Pod Identity agent come back as managed add-ons below.
    bootstrap_self_managed_addons: bool = False
    addons: tuple[str, ...] = ("coredns", "kube-proxy", "eks-pod-identity-agent")
    # Control-plane log types sent to CloudWatch Logs; the others are switched off.
    control_plane_logging: tuple[str, ...] = ("api", "audit", "authenticator")
    cluster_role_policies: tuple[str, ...] = ("arn:aws:iam::aws:policy/AmazonEKSClusterPolicy",)
    # No AmazonEKS_CNI_Policy: the nodes never touch ENIs; the Cilium operator does, with its own
    # Pod Identity role (below).
    node_role_policies: tuple[str, ...] = (
        "arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy",
        "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly",
        "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore",
    )
    # The service account of the Cilium operator (the chart's serviceAccounts.operator.name
    # default), in the Cilium release's namespace. In ENI mode it is the one Cilium component
    # that calls EC2; gpu-eks gives it a Pod Identity association before Cilium is installed,
    # because EKS injects credentials only when a pod is admitted.
    cilium_operator_service_account: str = "cilium-operator"
    # Kubernetes secrets are envelope-encrypted by EKS by default (1.28+); node volumes are
    # encrypted through the system node group's launch template.
    system_node_group: NodeGroupSpec = dataclasses.field(default_factory=NodeGroupSpec)


@dataclasses.dataclass(frozen=True)
class InterruptionRuleSpec:
    """One EventBridge rule feeding Karpenter's interruption queue."""

    name: str  # suffix of the rule name, e.g. "spot-interruption"
    source: str
    detail_type: str


def default_interruption_rules() -> tuple[InterruptionRuleSpec, ...]:
    return (
        InterruptionRuleSpec(
            "spot-interruption", "aws.ec2", "EC2 Spot Instance Interruption Warning"
        ),
        InterruptionRuleSpec("rebalance", "aws.ec2", "EC2 Instance Rebalance Recommendation"),
        InterruptionRuleSpec(
            "instance-state-change", "aws.ec2", "EC2 Instance State-change Notification"
        ),
        InterruptionRuleSpec("scheduled-change", "aws.health", "AWS Health Event"),
    )


@dataclasses.dataclass(frozen=True)
class KarpenterIamSpec:
    """What Karpenter needs from AWS: Pod Identity, its roles, and the interruption queue."""

    namespace: str = "kube-system"
    service_account: str = "karpenter"
    # Role and queue names get the cluster name appended, as the terraform karpenter module does.
    controller_role_prefix: str = "KarpenterController"
    node_role_prefix: str = "KarpenterNode"
    node_role_policies: tuple[str, ...] = (
        "arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy",
        "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly",
        "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore",
    )
    # Interruption messages are useless after a few minutes: a spot warning gives two.
    queue_message_retention_seconds: int = 300
    queue_sqs_managed_sse: bool = True
    interruption_rules: tuple[InterruptionRuleSpec, ...] = dataclasses.field(
        default_factory=default_interruption_rules
    )


@dataclasses.dataclass(frozen=True)
class WorkloadSpec:
    """What the match workers need from AWS: the match bucket and an identity to reach it, and
    the SNS topic the infrastructure alerts go to.

    The bucket's layout (incoming/, work/, results/) is video_assets.layout's; the workers'
    namespace and service account are the ones the step pods run as (video_assets.pod_specs).
    """

    # The match bucket: the profile's `bucket` (gpu_analysis/profiles/*.toml). Empty: the name
    # the staging profile follows, "<cluster name>-matches".
    bucket: str = ""
    # SSE-S3 costs nothing per request; "aws:kms" uses the account's aws/s3 key with an S3
    # Bucket Key (fewer KMS calls), which IAM principals of the account may use through S3.
    sse_algorithm: Literal["AES256", "aws:kms"] = "AES256"
    # A run's working files (input snapshot, shards, detections) are deleted on delivery; what a
    # failed or abandoned run leaves behind goes after this many days.
    work_expiration_days: int = 7
    # Versioning keeps overwritten and deleted objects; they go this long after being replaced.
    noncurrent_version_days: int = 30
    # Role name: prefix + cluster name, as the Karpenter roles.
    worker_role_prefix: str = "GpuAnalysisWorker"
    # The alerts topic (infra_assets.alerts publishes drift and failed infra runs to it) is
    # encrypted with the AWS-managed SNS key: no key to own or rotate, and its key policy lets
    # only this account's principals use it through SNS.
    alerts_topic_kms_key: str = "alias/aws/sns"

    def __post_init__(self) -> None:
        for name in ("work_expiration_days", "noncurrent_version_days"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"WorkloadSpec.{name}: need at least 1 day, got {getattr(self, name)}"
                )


@dataclasses.dataclass(frozen=True)
class DagsterAwsSpec:
    """What Dagster on the cluster needs from AWS: its image repository, its Postgres, its identity.

    The Postgres is an RDS instance in the VPC's reserved database subnets, reachable on 5432
    from the nodes' security group only (in Cilium ENI mode pods use their node's groups); its
    master password is generated and kept by RDS in Secrets Manager, never by us.
    """

    # Graviton burstable, 2 vCPU / 1 GiB: Dagster's run, event and schedule storage for a few
    # matches a day. db.t4g.small (2 GiB) when the event log grows.
    instance_class: str = "db.t4g.micro"
    allocated_storage_gib: int = 20  # the gp3 minimum for RDS PostgreSQL
    storage_type: Literal["gp3", "gp2"] = "gp3"
    # Pinned: RDS upgrades minor versions in the maintenance window only when asked
    # (auto_minor_version_upgrade below); a bump here is a plan line, applied in place.
    engine_version: str = "16.4"
    auto_minor_version_upgrade: bool = False
    db_name: str = "dagster"
    master_username: str = "dagster"
    # Automated backups (point-in-time recovery) this many days; 0 would switch them off.
    backup_retention_days: int = 7
    # Staging: one zone. A Multi-AZ standby doubles the instance and storage price.
    multi_az: bool = False
    # On: teardown keeps the instance (and its subnet group and security group) and says how to
    # switch it off. Off in staging, so that teardown removes what apply made.
    deletion_protection: bool = False
    # Teardown takes a final snapshot "<instance>-final-<UTC time>" first (the run history can be
    # restored from it; it bills per GB-month until deleted by hand).
    final_snapshot: bool = True
    # The ECR repository of the code-location/worker image (the profile's `image` names it).
    ecr_repository: str = "gpu-analysis"
    # Untagged images (superseded builds, failed pushes) expire after this many days; tagged
    # images are immutable and kept.
    untagged_image_expiry_days: int = 7
    # Where the Dagster pods run; empty: the cluster's workload namespace (the profile's
    # `namespace`, infra_assets.spec.kubernetes.CiliumSpec.workload_namespaces[0]).
    namespace: str = ""
    # The service account the Dagster chart's webserver, daemon and user-code pods run as.
    service_account: str = "dagster"
    # Role name: prefix + cluster name, as the worker and Karpenter roles.
    role_prefix: str = "GpuAnalysisDagster"

    def __post_init__(self) -> None:
        if self.allocated_storage_gib < 20:
            raise ValueError(
                "DagsterAwsSpec.allocated_storage_gib: RDS PostgreSQL on gp3 needs at least "
                f"20 GiB, got {self.allocated_storage_gib}"
            )
        if not 0 <= self.backup_retention_days <= 35:
            raise ValueError(
                "DagsterAwsSpec.backup_retention_days: RDS takes 0 to 35 days, got "
                f"{self.backup_retention_days}"
            )
        if self.untagged_image_expiry_days < 1:
            raise ValueError(
                "DagsterAwsSpec.untagged_image_expiry_days: need at least 1 day, got "
                f"{self.untagged_image_expiry_days}"
            )
