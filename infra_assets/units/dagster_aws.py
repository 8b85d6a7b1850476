"""gpu-dagster-aws: what Dagster on the cluster needs from AWS: image, Postgres, roles, tunnel.

- The ECR repository of the code-location/worker image: tags immutable (a tag names one image
  forever, so the profile's tag is a pin), scanned on push, encrypted, untagged images expire.
- Dagster's Postgres on RDS in the VPC's reserved database subnets (gpu-vpc's `database-*`),
  encrypted, private, reachable on 5432 only from the nodes' security groups: the ones Karpenter
  and the system node group put on every node (the `karpenter.sh/discovery` tag gpu-eks gives
  them); in Cilium ENI mode pods use their node's groups, so that is every pod, and nothing else.
  Its master password is generated, kept and rotated by RDS in Secrets Manager
  (ManageMasterUserPassword): this unit never sees it, so no plan, log or metadata can carry it.
- The Dagster pods' IAM role and its Pod Identity association (`<namespace>/dagster`): read that
  one secret, put/get/list the compute-logs prefix of the match bucket, publish to the alerts
  topic, list the bucket's incoming/ prefix (the match sensor runs in the daemon); nothing else.
- The run pods' IAM role and its association (`<namespace>/gpu-analysis-run`,
  gpu_analysis.deploy.instance.RUN_SERVICE_ACCOUNT): the CPU steps of a match (input snapshot
  from incoming/, work/, the delivery's reads, copies and deletes under results/) and put/get of
  the compute-logs prefix; a role of their own, so the step pods (gpu-workload-aws's worker
  role) get neither results/ deletes nor the step logs.
- The EKS API tunnel instance the bootstrap's SSM port forward goes through
  (gpu_analysis.deploy.bootstrap; the endpoint is private-only): t4g.nano, Amazon Linux 2023
  arm64 (SSM Agent preinstalled; the AMI comes from AWS's public SSM parameter when the instance
  is launched and stays pinned on it: a newer one is a plan warning, not a change), in the first
  private subnet without a public IP, IMDSv2 only with hop limit 1, 8 GiB gp3 encrypted root.
  Its role and instance profile carry only AmazonSSMManagedInstanceCore; its security group has
  no inbound rule and sends out on 443 only; EKS's cluster security group gets one rule from
  this unit, 443 from the tunnel's group, and no other rule of that group is read or touched.
  Tagged with the owner tag and TUNNEL_ROLE_TAG=TUNNEL_ROLE, the tags the bootstrap finds it by.
  A stopped instance is not drift: the operator stops it between bootstraps to save its hours,
  and the bootstrap starts it. Drift repaired in place: inbound rules (revoked), IMDSv1 allowed
  or another hop limit, the instance profile or security group swapped, tags, an Elastic IP
  (disassociated, left allocated: the address is not ours). Replaced (terminate, launch; it
  holds no state): another AMI, type, subnet or root volume, or a public IP given at launch.
  Idle cost, eu-west-3: about $3.58 a month running ($0.0042/h in us-east-1 times cost.py's
  eu-west-3/us-east-1 ratio 1.167, 730 h) plus $0.74 for the volume (8 GiB x GP3_GB_MONTH
  $0.0928); stopped, the volume only.

Other units and the chart values read the endpoint, the secret and the image repository from
`DagsterAwsUnit.outputs()` or `dagster_db_connection(ctx)`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
import uuid
from typing import Any

from botocore.exceptions import ClientError, WaiterError

from gpu_analysis.deploy.bootstrap import TUNNEL_ROLE, TUNNEL_ROLE_TAG
from gpu_analysis.deploy.instance import COMPUTE_LOGS_PREFIX, RUN_SERVICE_ACCOUNT
from infra_assets.aws_access import (
    backoff_seconds,
    error_code,
    is_not_found,
    is_owned,
    owner_filter,
    tag_dict,
    tag_list,
    tag_specifications,
    wait_long,
    wait_short,
)
from infra_assets.aws_iam import RoleSpec, delete_role, plan_role, plan_role_delete
from infra_assets.idempotent import create_or_adopt
from infra_assets.plan import Change, Plan, exact
from infra_assets.pod_identity import PodIdentityAssociation, cluster_ownership
from infra_assets.spec.aws import DagsterAwsSpec
from infra_assets.spec.kubernetes import KARPENTER_DISCOVERY_TAG
from infra_assets.unit import UnitContext
from infra_assets.units.aws_unit import (
    AwsUnit,
    NeedsReplacement,
    UpstreamMissing,
    diffs_of,
)
from infra_assets.units.vpc import VpcUnit
from infra_assets.units.workload import alerts_topic_name, bucket_prefixes, match_bucket_name

POSTGRES_PORT = 5432
HTTPS_PORT = 443
# The run pods' role: prefix + cluster name, as the worker and Dagster roles.
RUN_ROLE_PREFIX = "GpuAnalysisRun"

# The EKS API tunnel instance (the bootstrap's SSM port forward, gpu_analysis.deploy.bootstrap):
# the smallest Graviton instance; the agent relays one TCP stream.
TUNNEL_INSTANCE_TYPE = "t4g.nano"
# AWS publishes the newest Amazon Linux 2023 AMI of each region as this public SSM parameter
# (Amazon Linux 2023 User Guide, "Launching AL2023 using the SSM parameter and AWS CLI"); AL2023
# AMIs come with the SSM Agent installed (Systems Manager User Guide, "Find AMIs with the SSM
# Agent preinstalled").
TUNNEL_AMI_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64"
# AL2023's root device name: a block device mapping on it sets the root volume (EC2 User Guide,
# "Block device mappings for volumes on Amazon EC2 instances").
TUNNEL_ROOT_DEVICE = "/dev/xvda"
TUNNEL_ROOT_VOLUME_GIB = 8
SSM_MANAGED_INSTANCE_CORE = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
# States of a tunnel instance that exists (a stopped one too: the bootstrap starts it).
_TUNNEL_STATES = ("pending", "running", "stopping", "stopped")
# Instance fields EC2 cannot change on a running instance: the tunnel holds no state, so apply
# replaces it (terminate, launch) instead of asking a person, as it must for the database.
_TUNNEL_FIXED = ("image_id", "instance_type", "subnet", "root_volume")
# How long a RunInstances is retried while a new instance profile is not yet visible to EC2.
PROFILE_PROPAGATION_TIMEOUT_S = 60.0

# Fields of a DB instance that ModifyDBInstance cannot change: the storage encryption, the engine,
# the initial database and the master user are set at creation (RDS User Guide, "Encrypting
# Amazon RDS resources": "You can't turn off encryption on an encrypted DB instance" and can
# only encrypt an unencrypted one through a snapshot copy; ModifyDBInstance has no parameter for
# the others).
_DB_FIXED = ("engine", "storage_encrypted", "db_name", "master_username")
# ECR: "You can't change the encryption settings for a repository after it's created" (Amazon
# ECR User Guide, "Encryption at rest").
_REPOSITORY_FIXED = ("encryption",)
# Statuses in which RDS says the instance needs a person (RDS User Guide, "Viewing Amazon RDS DB
# instance status").
_DB_TROUBLE = ("failed", "incompatible-network", "incompatible-parameters", "storage-full")


def dagster_aws_spec(spec: Any) -> DagsterAwsSpec:
    # ClusterSpec.dagster_aws once the composition root carries it; the defaults until then.
    return getattr(spec, "dagster_aws", None) or DagsterAwsSpec()


def dagster_namespace(spec: Any) -> str:
    """The namespace of the Dagster pods: the spec's, else the workload namespace (the profile's
    `namespace`)."""
    return dagster_aws_spec(spec).namespace or spec.cilium.workload_namespaces[0]


@dataclasses.dataclass(frozen=True)
class DagsterDb:
    """Where the Dagster Postgres is, and where its password is (never the password itself)."""

    instance_id: str
    hostname: str  # "" while the instance does not exist
    port: int
    db_name: str
    username: str
    secret_arn: str  # the RDS-managed secret: JSON {"username": ..., "password": ...}

    def postgres_config(self) -> dict[str, Any]:
        """The `postgres` argument of gpu_analysis.deploy.instance.cluster_instance.

        sslmode require: RDS for PostgreSQL 15 and later defaults rds.force_ssl to 1 and refuses
        clients without TLS (RDS User Guide, "Using SSL with a PostgreSQL DB instance").
        """
        return {
            "hostname": self.hostname,
            "port": self.port,
            "username": self.username,
            "db_name": self.db_name,
            "params": {"sslmode": "require"},
        }


def dagster_db_connection(ctx: UnitContext) -> DagsterDb:
    """The live Dagster database of the stack, as RDS describes it (no password)."""
    return DagsterAwsUnit(ctx).db_connection()


class DagsterAwsUnit(AwsUnit):
    """The image repository, the Postgres (subnet group, security group, instance), the Dagster
    and run pods' identities, and the EKS API tunnel instance of the bootstrap."""

    name = "gpu-dagster-aws"

    # --- the spec, as resources -------------------------------------------------------------

    @property
    def _dagster(self) -> DagsterAwsSpec:
        return dagster_aws_spec(self.spec)

    @property
    def repository(self) -> str:
        return self._dagster.ecr_repository

    @property
    def db_instance_id(self) -> str:
        return f"{self.spec.cluster_name}-dagster"

    @property
    def subnet_group_name(self) -> str:
        return f"{self.spec.cluster_name}-dagster"

    @property
    def db_sg_name(self) -> str:
        return f"{self.spec.cluster_name}-dagster-db"

    @property
    def role_name(self) -> str:
        return f"{self._dagster.role_prefix}-{self.spec.cluster_name}"

    @property
    def bucket(self) -> str:
        return match_bucket_name(self.spec)

    @property
    def association(self) -> PodIdentityAssociation:
        return PodIdentityAssociation(
            self.spec.cluster_name,
            dagster_namespace(self.spec),
            self._dagster.service_account,
            self.tags("pod-identity/dagster"),
        )

    @property
    def run_role_name(self) -> str:
        return f"{RUN_ROLE_PREFIX}-{self.spec.cluster_name}"

    @property
    def run_association(self) -> PodIdentityAssociation:
        """The run pods' association: K8sRunLauncher starts them in the Dagster namespace under
        gpu_analysis.deploy.instance.RUN_SERVICE_ACCOUNT."""
        return PodIdentityAssociation(
            self.spec.cluster_name,
            dagster_namespace(self.spec),
            RUN_SERVICE_ACCOUNT,
            self.tags("pod-identity/run"),
        )

    def _associations(self) -> list[tuple[PodIdentityAssociation, str]]:
        """Our associations with the role each one hands out."""
        return [
            (self.association, self._role_arn()),
            (self.run_association, self._run_role_arn()),
        ]

    def _database_subnet_names(self) -> list[str]:
        return sorted(s.name for s in self.spec.vpc.subnets if s.tier == "database")

    def _repository_desired(self) -> dict[str, Any]:
        return {
            "image_tag_mutability": "IMMUTABLE",
            "scan_on_push": True,
            # SSE with the S3-managed AES-256 keys: no key to own; ECR encrypts every layer.
            "encryption": {"encryptionType": "AES256"},
            "lifecycle_policy": exact(self._lifecycle_policy()),
            "tags": self.tags("ecr-repository/image", self.repository),
        }

    def _lifecycle_policy(self) -> dict[str, Any]:
        # Amazon ECR User Guide, "Lifecycle policy parameters": tagStatus untagged with
        # countType sinceImagePushed expires untagged images older than countNumber days.
        days = self._dagster.untagged_image_expiry_days
        return {
            "rules": [
                {
                    "rulePriority": 1,
                    "description": f"expire untagged images after {days} days",
                    "selection": {
                        "tagStatus": "untagged",
                        "countType": "sinceImagePushed",
                        "countUnit": "days",
                        "countNumber": days,
                    },
                    "action": {"type": "expire"},
                }
            ]
        }

    def _sg_desired(self, node_groups: dict[str, str]) -> dict[str, Any]:
        sources = sorted(node_groups.values()) or ["<the nodes' security groups (gpu-eks)>"]
        return {
            "ingress": [f"tcp {POSTGRES_PORT} from {name}" for name in sources],
            # No egress: RDS answers on connections made to it (security groups are stateful)
            # and opens none itself.
            "egress": [],
            "tags": self.tags("security-group/dagster-db", self.db_sg_name),
        }

    def _subnet_group_desired(self) -> dict[str, Any]:
        return {
            "subnets": self._database_subnet_names(),
            "tags": self.tags("db-subnet-group/dagster", self.subnet_group_name),
        }

    def _db_desired(self) -> dict[str, Any]:
        dagster = self._dagster
        return {
            "engine": "postgres",
            "engine_version": dagster.engine_version,
            "instance_class": dagster.instance_class,
            "allocated_storage_gib": dagster.allocated_storage_gib,
            "storage_type": dagster.storage_type,
            "storage_encrypted": True,
            "publicly_accessible": False,
            "multi_az": dagster.multi_az,
            "deletion_protection": dagster.deletion_protection,
            "backup_retention_days": dagster.backup_retention_days,
            "auto_minor_version_upgrade": dagster.auto_minor_version_upgrade,
            "copy_tags_to_snapshot": True,
            "subnet_group": self.subnet_group_name,
            "security_groups": [self.db_sg_name],
            "master_password": "managed by RDS in Secrets Manager",
            "db_name": dagster.db_name,
            "master_username": dagster.master_username,
            "tags": self.tags("rds-instance/dagster", self.db_instance_id),
        }

    def _role(self, secret_arn: str) -> RoleSpec:
        return RoleSpec(
            name=self.role_name,
            trusted_service="pods.eks.amazonaws.com",
            trust_actions=("sts:AssumeRole", "sts:TagSession"),
            inline_policies=(("DagsterAccess", self.dagster_policy(secret_arn)),),
            tags=tuple(self.tags("iam-role/dagster").items()),
        )

    def dagster_policy(self, secret_arn: str) -> dict[str, Any]:
        """Least privilege for the Dagster pods, each statement on the one resource it needs."""
        bucket_arn = f"arn:aws:s3:::{self.bucket}"
        incoming = bucket_prefixes(self.bucket)["incoming"]
        return {
            "Version": "2012-10-17",
            "Statement": [
                {
                    # The database password. GetSecretValue takes the secret's ARN as its
                    # resource (Secrets Manager User Guide, "Actions, resources, and condition
                    # keys for AWS Secrets Manager": resource type "Secret"). The RDS-managed
                    # secret is encrypted with the AWS managed key aws/secretsmanager, whose key
                    # policy lets principals of the account use it through Secrets Manager, so
                    # no kms:Decrypt is needed here (Secrets Manager User Guide, "Secret
                    # encryption and decryption").
                    "Sid": "ReadDatabaseSecret",
                    "Effect": "Allow",
                    "Action": "secretsmanager:GetSecretValue",
                    "Resource": secret_arn,
                },
                {
                    # S3ComputeLogManager uploads and reads step logs under its prefix. Object
                    # actions take the object ARN bucket/key (S3 User Guide, "Policy resources
                    # for Amazon S3"), so the prefix is the resource.
                    "Sid": "ComputeLogObjects",
                    "Effect": "Allow",
                    "Action": ["s3:GetObject", "s3:PutObject"],
                    "Resource": f"{bucket_arn}/{COMPUTE_LOGS_PREFIX}*",
                },
                {
                    # ListBucket takes the bucket ARN; the s3:prefix condition key limits which
                    # keys may be listed (S3 User Guide, "Example: Allow a user to list objects
                    # under a prefix"). Compute logs are listed by the log manager; incoming/ by
                    # the match sensor, which runs in the daemon and only lists (ETags are its
                    # versions: video_assets/sensors.py).
                    "Sid": "ListComputeLogsAndIncoming",
                    "Effect": "Allow",
                    "Action": "s3:ListBucket",
                    "Resource": bucket_arn,
                    "Condition": {
                        "StringLike": {"s3:prefix": [f"{COMPUTE_LOGS_PREFIX}*", f"{incoming}*"]}
                    },
                },
                {
                    # The infra alerts sensor publishes to the alerts topic. Publish takes the
                    # topic ARN (SNS Developer Guide, "Amazon SNS API permissions: Actions and
                    # resources reference"). The topic's key is the AWS managed alias/aws/sns,
                    # whose key policy allows any principal of the account to use it through
                    # SNS (kms:CallerAccount + kms:ViaService; AWS KMS Developer Guide, "AWS
                    # managed keys"): no KMS statement here.
                    "Sid": "PublishAlerts",
                    "Effect": "Allow",
                    "Action": "sns:Publish",
                    "Resource": self._topic_arn(),
                },
            ],
        }

    def _run_role(self) -> RoleSpec:
        return RoleSpec(
            name=self.run_role_name,
            trusted_service="pods.eks.amazonaws.com",
            trust_actions=("sts:AssumeRole", "sts:TagSession"),
            inline_policies=(("RunAccess", self.run_policy()),),
            tags=tuple(self.tags("iam-role/run").items()),
        )

    def run_policy(self) -> dict[str, Any]:
        """Least privilege for the run pods, which run the CPU steps of a match (the input
        snapshot, the temperature map, the delivery) and upload their step logs.

        A role of their own rather than the workers': the delivery reads, copies and deletes
        under results/ (it switches the published version and prunes old ones:
        video_assets/delivery.py), which the step pods must not; and the step pods get no
        compute-log access, which only the run pods need.
        """
        bucket_arn = f"arn:aws:s3:::{self.bucket}"
        prefixes = bucket_prefixes(self.bucket)
        incoming, work, results = prefixes["incoming"], prefixes["work"], prefixes["results"]
        read_write_delete = [
            "s3:AbortMultipartUpload",
            "s3:DeleteObject",
            "s3:GetObject",
            "s3:PutObject",
        ]
        return {
            "Version": "2012-10-17",
            "Statement": [
                {
                    # Prefix-scoped listing (S3 User Guide, "Example: Allow a user to list
                    # objects under a prefix"): the sensor's versions of incoming/, a run's
                    # work/ folder, the published versions under results/, the step logs.
                    "Sid": "ListMatchPrefixesAndComputeLogs",
                    "Effect": "Allow",
                    "Action": "s3:ListBucket",
                    "Resource": bucket_arn,
                    "Condition": {
                        "StringLike": {
                            "s3:prefix": [
                                f"{p}*" for p in (incoming, work, results, COMPUTE_LOGS_PREFIX)
                            ]
                        }
                    },
                },
                {
                    # The input snapshot copies the video and calibration from incoming/ into
                    # the run's work/ folder (CopyObject needs GetObject on the source, S3 API
                    # reference, CopyObject "Permissions"); nothing writes incoming/.
                    "Sid": "ReadIncoming",
                    "Effect": "Allow",
                    "Action": "s3:GetObject",
                    "Resource": f"{bucket_arn}/{incoming}*",
                },
                {
                    # The run's snapshot, shards and map; removed after the delivery.
                    "Sid": "ReadWriteWork",
                    "Effect": "Allow",
                    "Action": read_write_delete,
                    "Resource": f"{bucket_arn}/{work}*",
                },
                {
                    # Versions are written, copied to the published names, stale names deleted,
                    # the manifest read back, old versions pruned.
                    "Sid": "DeliverResults",
                    "Effect": "Allow",
                    "Action": read_write_delete,
                    "Resource": f"{bucket_arn}/{results}*",
                },
                {
                    # S3ComputeLogManager uploads the run's step logs (and reads them back).
                    "Sid": "ComputeLogObjects",
                    "Effect": "Allow",
                    "Action": ["s3:GetObject", "s3:PutObject"],
                    "Resource": f"{bucket_arn}/{COMPUTE_LOGS_PREFIX}*",
                },
            ],
        }

    # --- observe ----------------------------------------------------------------------------

    def _account(self) -> str:
        if getattr(self, "_account_id", None) is None:
            self._account_id = self.aws.client("sts").get_caller_identity()["Account"]
        return self._account_id

    def _topic_arn(self) -> str:
        return f"arn:aws:sns:{self.aws.region}:{self._account()}:{alerts_topic_name(self.spec)}"

    def _role_arn(self) -> str:
        return f"arn:aws:iam::{self._account()}:role/{self.role_name}"

    def _run_role_arn(self) -> str:
        return f"arn:aws:iam::{self._account()}:role/{self.run_role_name}"

    def repository_uri(self) -> str:
        return f"{self._account()}.dkr.ecr.{self.aws.region}.amazonaws.com/{self.repository}"

    def _network(self) -> tuple[str | None, dict[str, str], dict[str, str]]:
        """Our VPC id, the database subnets' ids by spec name, and the nodes' security groups
        ({id: name}): ours in that VPC with the cluster's Karpenter discovery tag."""
        vpc_id, subnets = VpcUnit(self.ctx).find_vpc_and_subnets()
        database = {n: subnets[n] for n in self._database_subnet_names() if n in subnets}
        node_groups: dict[str, str] = {}
        if vpc_id is not None:
            groups = self.aws.ec2.describe_security_groups(
                Filters=[
                    {"Name": "vpc-id", "Values": [vpc_id]},
                    owner_filter(self.stack),
                    {
                        "Name": f"tag:{KARPENTER_DISCOVERY_TAG}",
                        "Values": [self.spec.cluster_name],
                    },
                ]
            )["SecurityGroups"]
            node_groups = {g["GroupId"]: g["GroupName"] for g in groups}
        return vpc_id, database, node_groups

    def _repository(self) -> dict[str, Any] | None:
        ecr = self.aws.client("ecr")
        try:
            (repo,) = ecr.describe_repositories(repositoryNames=[self.repository])["repositories"]
        except ClientError as exc:
            if error_code(exc) == "RepositoryNotFoundException":
                return None
            raise
        return repo

    def _observe_repository(self, repo: dict[str, Any]) -> dict[str, Any]:
        ecr = self.aws.client("ecr")
        try:
            text = ecr.get_lifecycle_policy(repositoryName=self.repository)["lifecyclePolicyText"]
            lifecycle = json.loads(text)
        except ClientError as exc:
            if error_code(exc) != "LifecyclePolicyNotFoundException":
                raise
            lifecycle = None
        encryption = dict(repo.get("encryptionConfiguration") or {})
        return {
            "image_tag_mutability": repo.get("imageTagMutability"),
            "scan_on_push": (repo.get("imageScanningConfiguration") or {}).get("scanOnPush"),
            "encryption": encryption or None,
            "lifecycle_policy": lifecycle,
            "tags": self._repository_tags(repo["repositoryArn"]),
        }

    def _repository_tags(self, arn: str) -> dict[str, str]:
        return tag_dict(self.aws.client("ecr").list_tags_for_resource(resourceArn=arn).get("tags"))

    def _db_sg(self, vpc_id: str | None) -> dict[str, Any] | None:
        if vpc_id is None:
            return None
        groups = self.aws.ec2.describe_security_groups(
            Filters=[
                {"Name": "vpc-id", "Values": [vpc_id]},
                {"Name": "group-name", "Values": [self.db_sg_name]},
            ]
        )["SecurityGroups"]
        return groups[0] if groups else None

    def _observe_sg(self, group: dict[str, Any], node_groups: dict[str, str]) -> dict[str, Any]:
        return {
            "ingress": _rules(group.get("IpPermissions", []), node_groups, "from"),
            "egress": _rules(group.get("IpPermissionsEgress", []), node_groups, "to"),
            "tags": tag_dict(group.get("Tags")),
        }

    def _subnet_group(self) -> dict[str, Any] | None:
        try:
            return self.aws.client("rds").describe_db_subnet_groups(
                DBSubnetGroupName=self.subnet_group_name
            )["DBSubnetGroups"][0]
        except ClientError as exc:
            if error_code(exc) == "DBSubnetGroupNotFoundFault":
                return None
            raise

    def _rds_tags(self, arn: str) -> dict[str, str]:
        return tag_dict(
            self.aws.client("rds").list_tags_for_resource(ResourceName=arn).get("TagList")
        )

    def _observe_subnet_group(
        self, group: dict[str, Any], database_subnets: dict[str, str]
    ) -> dict[str, Any]:
        names = {v: k for k, v in database_subnets.items()}
        return {
            "subnets": sorted(
                names.get(s["SubnetIdentifier"], s["SubnetIdentifier"]) for s in group["Subnets"]
            ),
            "tags": self._rds_tags(group["DBSubnetGroupArn"]),
        }

    def _db(self) -> dict[str, Any] | None:
        try:
            return self.aws.client("rds").describe_db_instances(
                DBInstanceIdentifier=self.db_instance_id
            )["DBInstances"][0]
        except ClientError as exc:
            if error_code(exc) == "DBInstanceNotFound" or is_not_found(exc):
                return None
            raise

    def _observe_db(self, db: dict[str, Any], db_sg_id: str | None) -> dict[str, Any]:
        return {
            "engine": db.get("Engine"),
            "engine_version": db.get("EngineVersion"),
            "instance_class": db.get("DBInstanceClass"),
            "allocated_storage_gib": db.get("AllocatedStorage"),
            "storage_type": db.get("StorageType"),
            "storage_encrypted": db.get("StorageEncrypted"),
            "publicly_accessible": db.get("PubliclyAccessible"),
            "multi_az": db.get("MultiAZ"),
            "deletion_protection": db.get("DeletionProtection"),
            "backup_retention_days": db.get("BackupRetentionPeriod"),
            "auto_minor_version_upgrade": db.get("AutoMinorVersionUpgrade"),
            "copy_tags_to_snapshot": db.get("CopyTagsToSnapshot"),
            "subnet_group": (db.get("DBSubnetGroup") or {}).get("DBSubnetGroupName"),
            "security_groups": sorted(
                self.db_sg_name if g["VpcSecurityGroupId"] == db_sg_id else g["VpcSecurityGroupId"]
                for g in db.get("VpcSecurityGroups", [])
            ),
            # Whether RDS keeps the password, never the password: the unit does not read it.
            "master_password": (
                "managed by RDS in Secrets Manager"
                if db.get("MasterUserSecret")
                else "set by hand, not managed by RDS"
            ),
            "db_name": db.get("DBName"),
            "master_username": db.get("MasterUsername"),
            "tags": tag_dict(db.get("TagList")),
        }

    def _cluster_ownership(self) -> str:
        return cluster_ownership(self.aws.eks, self.spec.cluster_name, self.stack)

    # --- plan -------------------------------------------------------------------------------

    def plan(self) -> Plan:
        changes: list[Change] = []
        conflicts: list[str] = []
        warnings: list[str] = []

        repo = self._repository()
        if repo is not None and not is_owned(
            self._repository_tags(repo["repositoryArn"]), self.stack
        ):
            conflicts.append(
                f"ECR repository {self.repository} exists but is not tagged as ours; tag it "
                f"{self.tags('ecr-repository/image', self.repository)} to adopt it, or choose "
                "another DagsterAwsSpec.ecr_repository"
            )
        else:
            observed = self._observe_repository(repo) if repo else None
            change = self.compare(
                "ecr-repository",
                self.repository,
                observed,
                self._repository_desired(),
                repo["repositoryArn"] if repo else None,
            )
            changes.append(change)
            warnings += _replacement_warnings(change, _REPOSITORY_FIXED, "ECR repository")

        vpc_id, database_subnets, node_groups = self._network()
        missing = [n for n in self._database_subnet_names() if n not in database_subnets]
        if vpc_id is None or missing:
            warnings.append(
                f"the VPC's database subnets ({', '.join(missing) or 'all'}) do not exist yet: "
                "the Dagster Postgres waits for gpu_vpc"
            )
        if not node_groups:
            warnings.append(
                "the nodes' security group does not exist yet: 5432 is opened to it once "
                "gpu_eks has made it"
            )

        sg = self._db_sg(vpc_id)
        db_sg_id = None
        if sg is not None and not is_owned(tag_dict(sg.get("Tags")), self.stack):
            conflicts.append(
                f"security group {self.db_sg_name} ({sg['GroupId']}) exists but is not ours; "
                "remove it"
            )
        else:
            db_sg_id = sg["GroupId"] if sg else None
            changes.append(
                self.compare(
                    "security-group",
                    self.db_sg_name,
                    self._observe_sg(sg, node_groups) if sg else None,
                    self._sg_desired(node_groups),
                    db_sg_id,
                )
            )

        group = self._subnet_group()
        if group is not None and not is_owned(
            self._rds_tags(group["DBSubnetGroupArn"]), self.stack
        ):
            conflicts.append(
                f"DB subnet group {self.subnet_group_name} exists but is not ours; remove it"
            )
        else:
            changes.append(
                self.compare(
                    "db-subnet-group",
                    self.subnet_group_name,
                    self._observe_subnet_group(group, database_subnets) if group else None,
                    self._subnet_group_desired(),
                    group["DBSubnetGroupArn"] if group else None,
                )
            )

        db = self._db()
        secret_arn = None
        if db is not None and not is_owned(tag_dict(db.get("TagList")), self.stack):
            conflicts.append(
                f"RDS instance {self.db_instance_id} exists but is not ours; it is never "
                "touched: remove it or rename ours"
            )
        else:
            if db is not None:
                secret_arn = (db.get("MasterUserSecret") or {}).get("SecretArn")
                status = db.get("DBInstanceStatus")
                if status in _DB_TROUBLE:
                    warnings.append(
                        f"RDS instance {self.db_instance_id} is {status}: see its events "
                        "(aws rds describe-events --source-type db-instance) and fix that first"
                    )
            change = self.compare(
                "rds-instance",
                self.db_instance_id,
                self._observe_db(db, db_sg_id) if db else None,
                self._db_desired(),
                db["DBInstanceArn"] if db else None,
            )
            changes.append(change)
            warnings += _replacement_warnings(change, _DB_FIXED, "RDS instance")
            shrink = _storage_shrink(change)
            if shrink:
                warnings.append(shrink)

        role_secret = secret_arn or f"<the secret RDS makes for {self.db_instance_id}>"
        for role in (self._role(role_secret), self._run_role()):
            change, conflict = plan_role(self.aws.iam, role, self.stack, self.compare)
            if conflict is not None:
                conflicts.append(conflict)
            else:
                changes.append(change)

        ownership = self._cluster_ownership()
        if ownership == "foreign":
            conflicts.append(
                f"EKS cluster {self.spec.cluster_name} is not tagged as ours: no Pod Identity "
                "association is made in it"
            )
        elif ownership == "absent":
            warnings.append(
                f"EKS cluster {self.spec.cluster_name} does not exist yet: the Dagster and run "
                "pods' Pod Identity associations wait for gpu_eks"
            )
        for association, role_arn in self._associations() if ownership != "foreign" else []:
            if ownership == "absent":
                changes.append(Change("create", "pod-identity-association", association.name))
                continue
            observed = association.observe(self.aws.eks)
            if observed is not None and not is_owned(observed.get("tags"), self.stack):
                conflicts.append(f"{association.what} exists but is not ours")
            else:
                changes.append(association.plan_change(self.compare, observed, role_arn))
        self._plan_tunnel(changes, warnings, conflicts)
        return Plan(self.name, tuple(changes), tuple(warnings), tuple(conflicts))

    # --- apply ------------------------------------------------------------------------------

    def _execute(self, change: Change) -> None:
        if change.kind == "security-group" and change.name == self.tunnel_name:
            self._ensure_tunnel_sg(change)
        elif change.kind == "iam-role" and change.name == self.tunnel_name:
            self.apply_role(self._tunnel_role())
        elif change.kind == "instance-profile":
            self._ensure_profile(change)
        elif change.kind == "ec2-instance":
            self._ensure_tunnel(change)
        elif change.kind == "security-group-rule":
            self._ensure_cluster_rule(change)
        elif change.kind == "ecr-repository":
            self._ensure_repository(change)
        elif change.kind == "security-group":
            self._ensure_sg(change)
        elif change.kind == "db-subnet-group":
            self._ensure_subnet_group(change)
        elif change.kind == "rds-instance":
            self._ensure_db(change)
        elif change.kind == "iam-role" and change.name == self.run_role_name:
            self.apply_role(self._run_role())
        elif change.kind == "iam-role":
            db = self._db()
            secret_arn = ((db or {}).get("MasterUserSecret") or {}).get("SecretArn")
            if not secret_arn:
                raise UpstreamMissing(
                    f"{self.name}: RDS instance {self.db_instance_id} has no RDS-managed secret "
                    "yet, so the Dagster role cannot name it; apply gpu_dagster_aws again"
                )
            self.apply_role(self._role(secret_arn))
        elif change.kind == "pod-identity-association":
            if self._cluster_ownership() != "ours":
                raise UpstreamMissing(
                    f"{self.name}: EKS cluster {self.spec.cluster_name} does not exist; "
                    "materialize gpu_eks first"
                )
            association, role_arn = next(
                (a, arn) for a, arn in self._associations() if a.name == change.name
            )
            if change.action == "create":
                association.create(self.aws, role_arn, self.stack, self.log)
            else:
                association.update(
                    self.aws.eks,
                    association.observe(self.aws.eks)["associationId"],
                    role_arn,
                    change,
                    set(diffs_of(change)),
                )

    def _ensure_repository(self, change: Change) -> None:
        ecr = self.aws.client("ecr")
        desired = self._repository_desired()
        if change.action == "create":
            self._create_repository(desired)
            fields = {"lifecycle_policy"}  # the rest was set by CreateRepository
        else:
            fields = set(diffs_of(change))
            _refuse_replacement(self.name, change, _REPOSITORY_FIXED, "ECR repository")
        if "image_tag_mutability" in fields:
            ecr.put_image_tag_mutability(
                repositoryName=self.repository,
                imageTagMutability=desired["image_tag_mutability"],
            )
        if "scan_on_push" in fields:
            ecr.put_image_scanning_configuration(
                repositoryName=self.repository,
                imageScanningConfiguration={"scanOnPush": desired["scan_on_push"]},
            )
        if "lifecycle_policy" in fields:
            ecr.put_lifecycle_policy(
                repositoryName=self.repository,
                lifecyclePolicyText=json.dumps(desired["lifecycle_policy"]),
            )
        if "tags" in fields and change.resource_id:
            ecr.tag_resource(resourceArn=change.resource_id, tags=tag_list(desired["tags"]))

    def _create_repository(self, desired: dict[str, Any]) -> str:
        what = f"ECR repository {self.repository}"

        def find() -> str | None:
            repo = self._repository()
            if repo is None or not is_owned(
                self._repository_tags(repo["repositoryArn"]), self.stack
            ):
                return None
            return repo["repositoryArn"]

        def create() -> str:
            # CreateRepository carries no idempotency token: an unclear answer is followed by a
            # look-up, and "already exists" (RepositoryAlreadyExistsException, one of
            # idempotent.ALREADY_EXISTS_CODES) adopts ours only (create_or_adopt).
            return self.aws.once("ecr").create_repository(
                repositoryName=self.repository,
                imageTagMutability=desired["image_tag_mutability"],
                imageScanningConfiguration={"scanOnPush": desired["scan_on_push"]},
                encryptionConfiguration=desired["encryption"],
                tags=tag_list(desired["tags"]),
            )["repository"]["repositoryArn"]

        return create_or_adopt(what, create, find, self.log)

    def _ensure_sg(self, change: Change) -> None:
        ec2 = self.aws.ec2
        vpc_id, _, node_groups = self._network()
        if vpc_id is None:
            raise UpstreamMissing(f"{self.name}: the VPC does not exist; materialize gpu_vpc first")
        if not node_groups:
            raise UpstreamMissing(
                f"{self.name}: the nodes' security group does not exist; materialize gpu_eks first"
            )
        if change.action == "create":
            group_id = self._create_sg(vpc_id)
        else:
            group_id = change.resource_id
            if "tags" in diffs_of(change):
                tags = self._sg_desired(node_groups)["tags"]
                ec2.create_tags(Resources=[group_id], Tags=tag_list(tags))
        group = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
        wanted = set(self._sg_desired(node_groups)["ingress"])
        # Whatever is not the spec goes (our group: extra rules are drift), then what is missing
        # is added.
        extra = [
            p
            for p in group.get("IpPermissions", [])
            if not set(_rules([p], node_groups, "from")) <= wanted
        ]
        if extra:
            ec2.revoke_security_group_ingress(GroupId=group_id, IpPermissions=extra)
        if group.get("IpPermissionsEgress"):
            ec2.revoke_security_group_egress(
                GroupId=group_id, IpPermissions=group["IpPermissionsEgress"]
            )
        group = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
        live = set(_rules(group.get("IpPermissions", []), node_groups, "from"))
        by_name = {name: group_id for group_id, name in node_groups.items()}
        missing = [
            {
                "IpProtocol": "tcp",
                "FromPort": POSTGRES_PORT,
                "ToPort": POSTGRES_PORT,
                "UserIdGroupPairs": [
                    {
                        "GroupId": by_name[rule.rsplit(" from ", 1)[1]],
                        "Description": "Dagster pods to their Postgres",
                    }
                ],
            }
            for rule in sorted(wanted - live)
        ]
        if missing:
            ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=missing)

    def _create_sg(self, vpc_id: str) -> str:
        what = f"security group {self.db_sg_name}"

        def find() -> str | None:
            sg = self._db_sg(vpc_id)
            if sg is None or not is_owned(tag_dict(sg.get("Tags")), self.stack):
                return None
            return sg["GroupId"]

        def create() -> str:
            return self.aws.once("ec2").create_security_group(
                GroupName=self.db_sg_name,
                Description="Dagster Postgres: 5432 from the cluster's nodes only",
                VpcId=vpc_id,
                TagSpecifications=tag_specifications(
                    "security-group", self.tags("security-group/dagster-db", self.db_sg_name)
                ),
            )["GroupId"]

        return create_or_adopt(what, create, find, self.log)

    def _ensure_subnet_group(self, change: Change) -> None:
        rds = self.aws.client("rds")
        _, database_subnets, _ = self._network()
        missing = [n for n in self._database_subnet_names() if n not in database_subnets]
        if missing:
            raise UpstreamMissing(
                f"{self.name}: database subnets {', '.join(missing)} do not exist; materialize "
                "gpu_vpc first"
            )
        subnet_ids = [database_subnets[n] for n in self._database_subnet_names()]
        desired = self._subnet_group_desired()
        what = f"DB subnet group {self.subnet_group_name}"
        if change.action == "create":

            def find() -> str | None:
                group = self._subnet_group()
                if group is None or not is_owned(
                    self._rds_tags(group["DBSubnetGroupArn"]), self.stack
                ):
                    return None
                return group["DBSubnetGroupArn"]

            def create() -> str:
                return self.aws.once("rds").create_db_subnet_group(
                    DBSubnetGroupName=self.subnet_group_name,
                    DBSubnetGroupDescription="Dagster Postgres: the VPC's database subnets",
                    SubnetIds=subnet_ids,
                    Tags=tag_list(desired["tags"]),
                )["DBSubnetGroup"]["DBSubnetGroupArn"]

            create_or_adopt(what, create, find, self.log)
            return
        fields = diffs_of(change)
        if "subnets" in fields:
            rds.modify_db_subnet_group(
                DBSubnetGroupName=self.subnet_group_name, SubnetIds=subnet_ids
            )
        if "tags" in fields:
            rds.add_tags_to_resource(
                ResourceName=change.resource_id, Tags=tag_list(desired["tags"])
            )

    def _ensure_db(self, change: Change) -> None:
        rds = self.aws.client("rds")
        desired = self._db_desired()
        vpc_id, _, _ = self._network()
        sg = self._db_sg(vpc_id)
        if sg is None or self._subnet_group() is None:
            raise UpstreamMissing(
                f"{self.name}: the database's security group or subnet group is missing; "
                "apply gpu_dagster_aws again"
            )
        if change.action == "create":
            self._create_db(desired, sg["GroupId"])
        else:
            _refuse_replacement(self.name, change, _DB_FIXED, "RDS instance")
            shrink = _storage_shrink(change)
            if shrink:
                raise NeedsReplacement(f"{self.name}: {shrink}")
            fields = diffs_of(change)
            modify = _modify_arguments(desired, set(fields), sg["GroupId"])
            if modify:
                # ApplyImmediately: a repaired drift (a database made public, backups switched
                # off) must not wait for the next maintenance window (RDS User Guide, "Using the
                # schedule modifications setting").
                rds.modify_db_instance(
                    DBInstanceIdentifier=self.db_instance_id, ApplyImmediately=True, **modify
                )
            if "tags" in fields:
                rds.add_tags_to_resource(
                    ResourceName=change.resource_id, Tags=tag_list(desired["tags"])
                )
        self._wait_available()

    def _create_db(self, desired: dict[str, Any], sg_id: str) -> str:
        what = f"RDS instance {self.db_instance_id}"

        def find() -> str | None:
            db = self._db()
            if db is None or not is_owned(tag_dict(db.get("TagList")), self.stack):
                return None
            return db["DBInstanceArn"]

        def send() -> str:
            # CreateDBInstance has no idempotency token; the tags come with the create, so a
            # create that succeeded behind an unclear answer is found as ours by find().
            return self.aws.once("rds").create_db_instance(
                DBInstanceIdentifier=self.db_instance_id,
                Engine=desired["engine"],
                EngineVersion=desired["engine_version"],
                DBInstanceClass=desired["instance_class"],
                AllocatedStorage=desired["allocated_storage_gib"],
                StorageType=desired["storage_type"],
                StorageEncrypted=True,
                PubliclyAccessible=False,
                MultiAZ=desired["multi_az"],
                DeletionProtection=desired["deletion_protection"],
                BackupRetentionPeriod=desired["backup_retention_days"],
                AutoMinorVersionUpgrade=desired["auto_minor_version_upgrade"],
                CopyTagsToSnapshot=True,
                DBSubnetGroupName=self.subnet_group_name,
                VpcSecurityGroupIds=[sg_id],
                DBName=desired["db_name"],
                MasterUsername=desired["master_username"],
                # RDS generates the password, stores it in Secrets Manager and rotates it (every
                # 7 days by default): it never passes through this process (RDS User Guide,
                # "Password management with Amazon RDS and AWS Secrets Manager").
                ManageMasterUserPassword=True,
                Tags=tag_list(desired["tags"]),
            )["DBInstance"]["DBInstanceArn"]

        arn = create_or_adopt(what, send, find, self.log)
        self.log(f"{what}: creating (RDS takes several minutes); waiting until available")
        return arn

    def _wait_available(self) -> None:
        try:
            self.aws.client("rds").get_waiter("db_instance_available").wait(
                DBInstanceIdentifier=self.db_instance_id, WaiterConfig=wait_long()
            )
        except WaiterError as exc:
            status = ((exc.last_response or {}).get("DBInstances") or [{}])[0].get(
                "DBInstanceStatus", "unknown"
            )
            raise RuntimeError(
                f"{self.name}: RDS instance {self.db_instance_id} did not become available "
                f"(status {status}); see its events (aws rds describe-events --source-type "
                "db-instance) and apply again"
            ) from exc

    # --- destroy ----------------------------------------------------------------------------

    def destroy_plan(self) -> Plan:
        """What `destroy()` deletes, observed now; changes nothing.

        Only what carries this stack's tag. An ECR repository still holding images is kept, and
        so is a database with deletion protection on (with its subnet group and security group,
        which it still uses).
        """
        deletes: list[Change] = []
        warnings: list[str] = []
        self._tunnel_destroy_plan(deletes, warnings)
        for association, _ in self._associations() if self._cluster_ownership() == "ours" else []:
            observed = association.observe(self.aws.eks)
            if observed is not None and is_owned(observed.get("tags"), self.stack):
                deletes.append(association.delete_change(observed))
            elif observed is not None:
                warnings.append(f"{association.what} is not ours: left alone")

        for role_name in (self.role_name, self.run_role_name):
            change, warning = plan_role_delete(self.aws.iam, role_name, self.stack)
            if warning is not None:
                warnings.append(warning)
            elif change is not None:
                deletes.append(change)

        db = self._db()
        db_kept = False
        if db is not None and not is_owned(tag_dict(db.get("TagList")), self.stack):
            warnings.append(f"RDS instance {self.db_instance_id} is not ours: left alone")
            db_kept = True
        elif db is not None and db.get("DeletionProtection"):
            warnings.append(
                f"RDS instance {self.db_instance_id} has deletion protection on: kept, with its "
                f"subnet group and security group; set DagsterAwsSpec.deletion_protection to "
                "False, apply gpu_dagster_aws, and tear down again"
            )
            db_kept = True
        elif db is not None:
            snapshot = self._final_snapshot_id()
            deletes.append(
                Change(
                    "delete",
                    "rds-instance",
                    self.db_instance_id,
                    db["DBInstanceArn"],
                )
            )
            if snapshot:
                warnings.append(
                    f"RDS instance {self.db_instance_id}: a final snapshot {snapshot} is taken "
                    "first and kept (restore the run history from it; it bills per GB-month: "
                    f"aws rds delete-db-snapshot --db-snapshot-identifier {snapshot} when done)"
                )
            else:
                warnings.append(
                    f"RDS instance {self.db_instance_id}: no final snapshot "
                    "(DagsterAwsSpec.final_snapshot is False): the run history goes with it"
                )

        group = self._subnet_group()
        if group is not None:
            if not is_owned(self._rds_tags(group["DBSubnetGroupArn"]), self.stack):
                warnings.append(f"DB subnet group {self.subnet_group_name} is not ours: left alone")
            elif not db_kept:
                deletes.append(
                    Change(
                        "delete",
                        "db-subnet-group",
                        self.subnet_group_name,
                        group["DBSubnetGroupArn"],
                    )
                )

        vpc_id, _ = VpcUnit(self.ctx).find_vpc_and_subnets()
        sg = self._db_sg(vpc_id)
        if sg is not None:
            if not is_owned(tag_dict(sg.get("Tags")), self.stack):
                warnings.append(f"security group {sg['GroupId']} is not ours: left alone")
            elif not db_kept:
                deletes.append(Change("delete", "security-group", self.db_sg_name, sg["GroupId"]))

        repo = self._repository()
        if repo is not None:
            if not is_owned(self._repository_tags(repo["repositoryArn"]), self.stack):
                warnings.append(f"ECR repository {self.repository} is not ours: left alone")
            elif self._repository_images():
                warnings.append(self._repository_kept_message())
            else:
                deletes.append(
                    Change("delete", "ecr-repository", self.repository, repo["repositoryArn"])
                )
        return Plan(self.name, tuple(deletes), tuple(warnings))

    def destroy(self, plan: Plan | None = None) -> Plan:
        """Carry out a teardown plan (None: `destroy_plan()` now); returns what was deleted."""
        plan = self.destroy_plan() if plan is None else plan
        deleted: list[Change] = []
        warnings = list(plan.warnings)
        for change in plan.changes:
            self.log(f"{self.name}: {change}")
            if change.kind in ("ec2-instance", "security-group-rule", "instance-profile"):
                self._delete_tunnel_part(change)
            elif change.kind == "pod-identity-association":
                (association,) = [a for a, _ in self._associations() if a.name == change.name]
                observed = association.observe(self.aws.eks)
                if observed is None or observed["associationArn"] != change.resource_id:
                    continue  # gone already
                association.delete(self.aws.eks, observed["associationId"])
            elif change.kind == "iam-role":
                delete_role(self.aws.iam, change.name)
            elif change.kind == "rds-instance":
                self._delete_db()
            elif change.kind == "db-subnet-group":
                self._ignore_missing(
                    self.aws.client("rds").delete_db_subnet_group,
                    "DBSubnetGroupNotFoundFault",
                    DBSubnetGroupName=change.name,
                )
            elif change.kind == "security-group":
                self._ignore_missing(
                    self.aws.ec2.delete_security_group,
                    "InvalidGroup.NotFound",
                    GroupId=change.resource_id,
                )
            elif change.kind == "ecr-repository":
                if self._repository_images():
                    # Pushed since the plan: kept, as always.
                    warnings.append(self._repository_kept_message())
                    continue
                self._ignore_missing(
                    self.aws.client("ecr").delete_repository,
                    "RepositoryNotFoundException",
                    repositoryName=self.repository,
                )
            deleted.append(change)
        return Plan(self.name, tuple(deleted), tuple(warnings))

    def _final_snapshot_id(self) -> str | None:
        if not self._dagster.final_snapshot:
            return None
        if getattr(self, "_snapshot_id", None) is None:
            stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
            self._snapshot_id = f"{self.db_instance_id}-final-{stamp}"
        return self._snapshot_id

    def _delete_db(self) -> None:
        """Delete the instance (final snapshot per spec) and wait until it is gone: RDS refuses
        to delete a subnet group an instance still uses (DeleteDBSubnetGroup:
        InvalidDBSubnetGroupStateFault), and EC2 a security group its network interface wears."""
        rds = self.aws.client("rds")
        snapshot = self._final_snapshot_id()
        kwargs: dict[str, Any] = (
            {"FinalDBSnapshotIdentifier": snapshot} if snapshot else {"SkipFinalSnapshot": True}
        )
        db = self._db()
        if db is not None and db.get("DBInstanceStatus") != "deleting":
            rds.delete_db_instance(
                DBInstanceIdentifier=self.db_instance_id,
                # Automated backups go with the instance; the final snapshot is what is kept.
                DeleteAutomatedBackups=True,
                **kwargs,
            )
        try:
            rds.get_waiter("db_instance_deleted").wait(
                DBInstanceIdentifier=self.db_instance_id, WaiterConfig=wait_long()
            )
        except WaiterError as exc:
            raise RuntimeError(
                f"{self.name}: RDS instance {self.db_instance_id} is still being deleted; "
                "tear down again in a few minutes"
            ) from exc

    @staticmethod
    def _ignore_missing(call, code: str, **arguments: Any) -> None:
        # Gone already (a teardown run again after an interruption): nothing left to do.
        try:
            call(**arguments)
        except ClientError as exc:
            if error_code(exc) != code:
                raise

    def _repository_images(self) -> int:
        ecr = self.aws.client("ecr")
        count = 0
        for page in ecr.get_paginator("list_images").paginate(repositoryName=self.repository):
            count += len(page.get("imageIds", []))
        return count

    def _repository_kept_message(self) -> str:
        return (
            f"ECR repository {self.repository} still holds {self._repository_images()} image(s): "
            "kept; delete them (aws ecr batch-delete-image, or aws ecr delete-repository "
            f"--repository-name {self.repository} --force) and tear down again to delete it"
        )

    # --- the EKS API tunnel instance ---------------------------------------------------------

    @property
    def tunnel_name(self) -> str:
        """Name of the tunnel instance, its security group, role and instance profile."""
        return f"{self.spec.cluster_name}-{TUNNEL_ROLE}"

    @property
    def tunnel_rule_name(self) -> str:
        return f"eks-cluster-sg: tcp {HTTPS_PORT} from {self.tunnel_name}"

    def _tunnel_subnet_name(self) -> str:
        # One instance, one subnet: the first private subnet (a tunnel needs no second zone;
        # if that zone fails, replace it by hand in another).
        return sorted(s.name for s in self.spec.vpc.subnets if s.tier == "private")[0]

    def _tunnel_instance_tags(self) -> dict[str, str]:
        # The bootstrap finds the instance by the owner tag and this role tag.
        return {
            **self.tags("ec2-instance/eks-api-tunnel", self.tunnel_name),
            TUNNEL_ROLE_TAG: TUNNEL_ROLE,
        }

    def _tunnel_role(self) -> RoleSpec:
        return RoleSpec(
            name=self.tunnel_name,
            trusted_service="ec2.amazonaws.com",
            # What the SSM Agent needs to register and carry sessions, nothing else (Systems
            # Manager User Guide, "Configure instance permissions required for Systems Manager").
            managed_policies=(SSM_MANAGED_INSTANCE_CORE,),
            tags=tuple(self.tags("iam-role/eks-api-tunnel").items()),
        )

    def _tunnel_sg_desired(self) -> dict[str, Any]:
        return {
            # Session Manager needs no inbound port: the agent dials out to the SSM service.
            "ingress": [],
            # Out on 443 only: the SSM endpoints (through the NAT gateways) and the EKS private
            # endpoint, which the agent relays the session to.
            "egress": [f"tcp {HTTPS_PORT} to 0.0.0.0/0"],
            "tags": self.tags("security-group/eks-api-tunnel", self.tunnel_name),
        }

    def _profile_desired(self) -> dict[str, Any]:
        return {
            "roles": [self.tunnel_name],
            "tags": self.tags("instance-profile/eks-api-tunnel", self.tunnel_name),
        }

    def _tunnel_desired(self, image_id: str) -> dict[str, Any]:
        return {
            "image_id": image_id,
            "instance_type": TUNNEL_INSTANCE_TYPE,
            "subnet": self._tunnel_subnet_name(),
            "public_ip": False,
            # IMDSv2 only and one hop: nothing behind the instance can reach its credentials
            # (EC2 User Guide, "Configure the instance metadata options").
            "metadata": {"http_tokens": "required", "hop_limit": 1, "http_endpoint": "enabled"},
            "root_volume": {
                "size_gib": TUNNEL_ROOT_VOLUME_GIB,
                "type": "gp3",
                "encrypted": True,
            },
            "instance_profile": self.tunnel_name,
            "security_groups": [self.tunnel_name],
            "tags": self._tunnel_instance_tags(),
        }

    def latest_tunnel_ami(self) -> str:
        """The newest Amazon Linux 2023 arm64 AMI of the region, from AWS's public parameter."""
        if getattr(self, "_latest_ami", None) is None:
            try:
                self._latest_ami = self.aws.client("ssm").get_parameter(Name=TUNNEL_AMI_PARAMETER)[
                    "Parameter"
                ]["Value"]
            except ClientError as exc:
                raise UpstreamMissing(
                    f"{self.name}: cannot read the SSM parameter {TUNNEL_AMI_PARAMETER} in "
                    f"{self.aws.region} ({error_code(exc)}); allow ssm:GetParameter on it and "
                    "plan again"
                ) from exc
        return self._latest_ami

    def _tunnel_instances(self) -> list[dict[str, Any]]:
        """Our tunnel instances that are not terminating, the bootstrap's choice first (running
        first, then by id: gpu_analysis.deploy.bootstrap.tunnel_instance)."""
        reservations = self.aws.ec2.describe_instances(
            Filters=[
                owner_filter(self.stack),
                {"Name": f"tag:{TUNNEL_ROLE_TAG}", "Values": [TUNNEL_ROLE]},
                {"Name": "instance-state-name", "Values": list(_TUNNEL_STATES)},
            ]
        )["Reservations"]
        instances = [i for r in reservations for i in r["Instances"]]
        return sorted(instances, key=lambda i: (i["State"]["Name"] != "running", i["InstanceId"]))

    def _tunnel_sg(self, vpc_id: str | None) -> dict[str, Any] | None:
        if vpc_id is None:
            return None
        groups = self.aws.ec2.describe_security_groups(
            Filters=[
                {"Name": "vpc-id", "Values": [vpc_id]},
                {"Name": "group-name", "Values": [self.tunnel_name]},
            ]
        )["SecurityGroups"]
        return groups[0] if groups else None

    def _instance_profile(self) -> dict[str, Any] | None:
        try:
            return self.aws.iam.get_instance_profile(InstanceProfileName=self.tunnel_name)[
                "InstanceProfile"
            ]
        except ClientError as exc:
            if is_not_found(exc):
                return None
            raise

    def _profile_tags(self) -> dict[str, str]:
        # GetInstanceProfile carries the profile's tags (IAM API reference, InstanceProfile).
        return tag_dict((self._instance_profile() or {}).get("Tags"))

    def _cluster_sg_id(self) -> str | None:
        """EKS's cluster security group (on the control plane's ENIs), once the cluster is ours."""
        if self._cluster_ownership() != "ours":
            return None
        cluster = self.aws.eks.describe_cluster(name=self.spec.cluster_name)["cluster"]
        return (cluster.get("resourcesVpcConfig") or {}).get("clusterSecurityGroupId") or None

    def _rules_naming(self, group_id: str, peer_id: str) -> list[dict[str, Any]]:
        """The ingress permissions of `group_id` that name `peer_id`, narrowed to that pair: the
        only rules of a group this unit does not own that it reads or touches."""
        group = self.aws.ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
        naming = []
        for permission in group.get("IpPermissions", []):
            # The pairs as described (with their description): a revoke names the rule as it is.
            pairs = [
                pair
                for pair in permission.get("UserIdGroupPairs", [])
                if pair.get("GroupId") == peer_id
            ]
            if pairs:
                naming.append(
                    {
                        k: permission[k]
                        for k in ("IpProtocol", "FromPort", "ToPort")
                        if k in permission
                    }
                    | {"UserIdGroupPairs": pairs}
                )
        return naming

    def _observe_tunnel(
        self, instance: dict[str, Any], sg_id: str | None, subnets: dict[str, str]
    ) -> dict[str, Any]:
        names = {v: k for k, v in subnets.items()}
        primary = next(
            (
                n
                for n in instance.get("NetworkInterfaces", [])
                if (n.get("Attachment") or {}).get("DeviceIndex") == 0
            ),
            {},
        )
        root = None
        # The mapping on AL2023's root device name is the root volume we launched with.
        for mapping in instance.get("BlockDeviceMappings", []):
            if mapping.get("DeviceName") == TUNNEL_ROOT_DEVICE and "Ebs" in mapping:
                (volume,) = self.aws.ec2.describe_volumes(VolumeIds=[mapping["Ebs"]["VolumeId"]])[
                    "Volumes"
                ]
                root = {
                    "size_gib": volume.get("Size"),
                    "type": volume.get("VolumeType"),
                    "encrypted": volume.get("Encrypted"),
                }
        metadata = instance.get("MetadataOptions") or {}
        profile_arn = (instance.get("IamInstanceProfile") or {}).get("Arn", "")
        return {
            "image_id": instance.get("ImageId"),
            "instance_type": instance.get("InstanceType"),
            "subnet": names.get(instance.get("SubnetId"), instance.get("SubnetId")),
            "public_ip": bool(instance.get("PublicIpAddress")),
            "metadata": {
                "http_tokens": metadata.get("HttpTokens"),
                "hop_limit": metadata.get("HttpPutResponseHopLimit"),
                "http_endpoint": metadata.get("HttpEndpoint"),
            },
            "root_volume": root,
            "instance_profile": profile_arn.rsplit("/", 1)[-1] or None,
            "security_groups": sorted(
                self.tunnel_name if g["GroupId"] == sg_id else g["GroupId"]
                for g in primary.get("Groups", [])
            ),
            "tags": tag_dict(instance.get("Tags")),
        }

    def _plan_tunnel(
        self, changes: list[Change], warnings: list[str], conflicts: list[str]
    ) -> None:
        """The tunnel's security group, role, instance profile, instance and the one rule on
        EKS's cluster security group, in the order apply makes them."""
        vpc_id, subnets = VpcUnit(self.ctx).find_vpc_and_subnets()
        if self._tunnel_subnet_name() not in subnets:
            warnings.append(
                f"the private subnet {self._tunnel_subnet_name()} does not exist yet: the EKS "
                "API tunnel instance waits for gpu_vpc"
            )
        sg = self._tunnel_sg(vpc_id)
        sg_id = None
        if sg is not None and not is_owned(tag_dict(sg.get("Tags")), self.stack):
            conflicts.append(
                f"security group {self.tunnel_name} ({sg['GroupId']}) exists but is not ours; "
                "remove it"
            )
        else:
            sg_id = sg["GroupId"] if sg else None
            names = {sg_id: self.tunnel_name} if sg_id else {}
            observed = None
            if sg is not None:
                observed = {
                    "ingress": _rules(sg.get("IpPermissions", []), names, "from"),
                    "egress": _rules(sg.get("IpPermissionsEgress", []), names, "to"),
                    "tags": tag_dict(sg.get("Tags")),
                }
            changes.append(
                self.compare(
                    "security-group", self.tunnel_name, observed, self._tunnel_sg_desired(), sg_id
                )
            )

        change, conflict = plan_role(self.aws.iam, self._tunnel_role(), self.stack, self.compare)
        if conflict is not None:
            conflicts.append(conflict)
        else:
            changes.append(change)

        profile = self._instance_profile()
        if profile is not None and not is_owned(self._profile_tags(), self.stack):
            conflicts.append(
                f"IAM instance profile {self.tunnel_name} exists but is not ours; remove it"
            )
        else:
            observed = None
            if profile is not None:
                observed = {
                    "roles": sorted(r["RoleName"] for r in profile.get("Roles", [])),
                    "tags": self._profile_tags(),
                }
            changes.append(
                self.compare(
                    "instance-profile",
                    self.tunnel_name,
                    observed,
                    self._profile_desired(),
                    profile["Arn"] if profile else None,
                )
            )

        instances = self._tunnel_instances()
        instance = instances[0] if instances else None
        for extra in instances[1:]:
            warnings.append(
                f"a second tunnel instance {extra['InstanceId']} carries our tags; the bootstrap "
                f"uses {instance['InstanceId']}: terminate the other (aws ec2 "
                f"terminate-instances --instance-ids {extra['InstanceId']})"
            )
        latest = self.latest_tunnel_ami()
        # The AMI is pinned at launch: a running tunnel keeps its image, a new one gets the
        # newest AL2023 (a replacement, or an instance terminated by hand, moves it).
        pinned = instance["ImageId"] if instance else latest
        if instance is not None and pinned != latest:
            warnings.append(
                f"tunnel instance {instance['InstanceId']} runs {pinned}; a newer Amazon Linux "
                f"2023 AMI is published ({latest}): terminate the instance and apply to move"
            )
        change = self.compare(
            "ec2-instance",
            self.tunnel_name,
            self._observe_tunnel(instance, sg_id, subnets) if instance else None,
            self._tunnel_desired(pinned),
            instance["InstanceId"] if instance else None,
        )
        changes.append(change)
        replace = _tunnel_replacement(change)
        if replace:
            warnings.append(
                f"tunnel instance {change.resource_id}: {', '.join(replace)} cannot change in "
                "place: apply replaces it (terminate, launch from the newest AL2023 AMI; it holds "
                "no state)"
            )
        if change.action == "update" and "public_ip" in diffs_of(change):
            warnings.append(
                f"tunnel instance {change.resource_id} has a public IP: apply disassociates an "
                "Elastic IP (the address stays allocated, it is not ours: release it) or, for an "
                "address given at launch, replaces the instance"
            )

        cluster_sg_id = self._cluster_sg_id()
        desired_rule = {"ingress_from_tunnel": [f"tcp {HTTPS_PORT} from {self.tunnel_name}"]}
        if cluster_sg_id is None:
            warnings.append(
                "EKS's cluster security group does not exist yet: 443 from the tunnel is opened "
                "on it once gpu_eks has made the cluster"
            )
            changes.append(self.compare("security-group-rule", self.tunnel_rule_name, None, {}))
        else:
            naming = self._rules_naming(cluster_sg_id, sg_id) if sg_id else []
            observed = None
            if naming:
                observed = {
                    "ingress_from_tunnel": _rules(naming, {sg_id: self.tunnel_name}, "from")
                }
            changes.append(
                self.compare(
                    "security-group-rule",
                    self.tunnel_rule_name,
                    observed,
                    desired_rule,
                    cluster_sg_id,
                )
            )

    def _ensure_tunnel_sg(self, change: Change) -> None:
        ec2 = self.aws.ec2
        vpc_id, _ = VpcUnit(self.ctx).find_vpc_and_subnets()
        if vpc_id is None:
            raise UpstreamMissing(f"{self.name}: the VPC does not exist; materialize gpu_vpc first")
        desired = self._tunnel_sg_desired()
        if change.action == "create":
            what = f"security group {self.tunnel_name}"

            def find() -> str | None:
                sg = self._tunnel_sg(vpc_id)
                if sg is None or not is_owned(tag_dict(sg.get("Tags")), self.stack):
                    return None
                return sg["GroupId"]

            def create() -> str:
                return self.aws.once("ec2").create_security_group(
                    GroupName=self.tunnel_name,
                    Description="EKS API tunnel (SSM): no inbound, 443 out",
                    VpcId=vpc_id,
                    TagSpecifications=tag_specifications("security-group", desired["tags"]),
                )["GroupId"]

            group_id = create_or_adopt(what, create, find, self.log)
        else:
            group_id = change.resource_id
            if "tags" in diffs_of(change):
                ec2.create_tags(Resources=[group_id], Tags=tag_list(desired["tags"]))
        group = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
        # Every inbound rule is drift; outbound is exactly 443 (a new group comes with "all
        # out", which goes).
        if group.get("IpPermissions"):
            ec2.revoke_security_group_ingress(
                GroupId=group_id, IpPermissions=group["IpPermissions"]
            )
        names = {group_id: self.tunnel_name}
        extra = [
            p
            for p in group.get("IpPermissionsEgress", [])
            if not set(_rules([p], names, "to")) <= set(desired["egress"])
        ]
        if extra:
            ec2.revoke_security_group_egress(GroupId=group_id, IpPermissions=extra)
        group = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
        if not set(desired["egress"]) <= set(_rules(group["IpPermissionsEgress"], names, "to")):
            ec2.authorize_security_group_egress(
                GroupId=group_id,
                IpPermissions=[
                    {
                        "IpProtocol": "tcp",
                        "FromPort": HTTPS_PORT,
                        "ToPort": HTTPS_PORT,
                        "IpRanges": [
                            {"CidrIp": "0.0.0.0/0", "Description": "SSM endpoints, EKS API"}
                        ],
                    }
                ],
            )

    def _ensure_profile(self, change: Change) -> None:
        iam = self.aws.iam
        desired = self._profile_desired()
        if change.action == "create":
            what = f"IAM instance profile {self.tunnel_name}"

            def find() -> str | None:
                profile = self._instance_profile()
                if profile is None or not is_owned(self._profile_tags(), self.stack):
                    return None
                return profile["Arn"]

            def create() -> str:
                return self.aws.once("iam").create_instance_profile(
                    InstanceProfileName=self.tunnel_name, Tags=tag_list(desired["tags"])
                )["InstanceProfile"]["Arn"]

            create_or_adopt(what, create, find, self.log)
        elif "tags" in diffs_of(change):
            iam.tag_instance_profile(
                InstanceProfileName=self.tunnel_name, Tags=tag_list(desired["tags"])
            )
        profile = self._instance_profile() or {}
        roles = {r["RoleName"] for r in profile.get("Roles", [])}
        for other in sorted(roles - {self.tunnel_name}):
            iam.remove_role_from_instance_profile(
                InstanceProfileName=self.tunnel_name, RoleName=other
            )
        if self.tunnel_name not in roles:
            iam.add_role_to_instance_profile(
                InstanceProfileName=self.tunnel_name, RoleName=self.tunnel_name
            )

    def _ensure_tunnel(self, change: Change) -> None:
        if change.action == "create":
            self._launch_tunnel()
            return
        fields = diffs_of(change)
        ec2 = self.aws.ec2
        instance_id = change.resource_id
        if _tunnel_replacement(change):
            self._replace_tunnel(instance_id)
            return
        if "public_ip" in fields:
            addresses = ec2.describe_addresses(
                Filters=[{"Name": "instance-id", "Values": [instance_id]}]
            )["Addresses"]
            for address in addresses:
                # Disassociated, not released: the address is not ours to give back.
                ec2.disassociate_address(AssociationId=address["AssociationId"])
            (live,) = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0][
                "Instances"
            ]
            if live.get("PublicIpAddress"):
                # Given at launch, not an Elastic IP: a new instance without one.
                self._replace_tunnel(instance_id)
                return
        if "metadata" in fields:
            ec2.modify_instance_metadata_options(
                InstanceId=instance_id,
                HttpTokens="required",
                HttpPutResponseHopLimit=1,
                HttpEndpoint="enabled",
            )
        if "instance_profile" in fields:
            associations = ec2.describe_iam_instance_profile_associations(
                Filters=[{"Name": "instance-id", "Values": [instance_id]}]
            )["IamInstanceProfileAssociations"]
            live_association = next(
                (a for a in associations if a.get("State") in ("associating", "associated")), None
            )
            if live_association is None:
                ec2.associate_iam_instance_profile(
                    InstanceId=instance_id, IamInstanceProfile={"Name": self.tunnel_name}
                )
            else:
                ec2.replace_iam_instance_profile_association(
                    AssociationId=live_association["AssociationId"],
                    IamInstanceProfile={"Name": self.tunnel_name},
                )
        if "security_groups" in fields:
            vpc_id, _ = VpcUnit(self.ctx).find_vpc_and_subnets()
            sg = self._tunnel_sg(vpc_id)
            (live,) = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0][
                "Instances"
            ]
            primary = next(
                n
                for n in live["NetworkInterfaces"]
                if (n.get("Attachment") or {}).get("DeviceIndex") == 0
            )
            ec2.modify_network_interface_attribute(
                NetworkInterfaceId=primary["NetworkInterfaceId"], Groups=[sg["GroupId"]]
            )
        if "tags" in fields:
            ec2.create_tags(Resources=[instance_id], Tags=tag_list(self._tunnel_instance_tags()))

    def _replace_tunnel(self, instance_id: str) -> None:
        self.log(f"{self.name}: replacing tunnel instance {instance_id} (terminate, launch)")
        self._terminate_tunnel([instance_id])
        self._launch_tunnel()

    def _terminate_tunnel(self, instance_ids: list[str]) -> None:
        ec2 = self.aws.ec2
        ec2.terminate_instances(InstanceIds=instance_ids)
        # Its network interface holds the security group until the instance is gone.
        ec2.get_waiter("instance_terminated").wait(
            InstanceIds=instance_ids, WaiterConfig=wait_short()
        )

    def _launch_tunnel(self) -> str:
        vpc_id, subnets = VpcUnit(self.ctx).find_vpc_and_subnets()
        subnet_id = subnets.get(self._tunnel_subnet_name())
        sg = self._tunnel_sg(vpc_id)
        if subnet_id is None or sg is None or self._instance_profile() is None:
            raise UpstreamMissing(
                f"{self.name}: the private subnet {self._tunnel_subnet_name()}, the tunnel's "
                "security group or its instance profile is missing; apply gpu_vpc, then "
                "gpu_dagster_aws again"
            )
        desired = self._tunnel_desired(self.latest_tunnel_ami())
        what = f"tunnel instance {self.tunnel_name}"
        # One token for every send of this launch: EC2 answers a repeated RunInstances with the
        # same ClientToken with the first launch instead of a second instance (EC2 API
        # reference, "Ensuring idempotency of mutating API requests").
        token = uuid.uuid4().hex

        def send() -> str:
            return self.aws.once("ec2").run_instances(
                ImageId=desired["image_id"],
                InstanceType=desired["instance_type"],
                MinCount=1,
                MaxCount=1,
                ClientToken=token,
                NetworkInterfaces=[
                    {
                        "DeviceIndex": 0,
                        "SubnetId": subnet_id,
                        "Groups": [sg["GroupId"]],
                        # Explicit, whatever the subnet's MapPublicIpOnLaunch says.
                        "AssociatePublicIpAddress": False,
                        "DeleteOnTermination": True,
                    }
                ],
                IamInstanceProfile={"Name": self.tunnel_name},
                MetadataOptions={
                    "HttpTokens": "required",
                    "HttpPutResponseHopLimit": 1,
                    "HttpEndpoint": "enabled",
                },
                BlockDeviceMappings=[
                    {
                        "DeviceName": TUNNEL_ROOT_DEVICE,
                        "Ebs": {
                            "VolumeSize": TUNNEL_ROOT_VOLUME_GIB,
                            "VolumeType": "gp3",
                            "Encrypted": True,
                            "DeleteOnTermination": True,
                        },
                    }
                ],
                TagSpecifications=[
                    *tag_specifications("instance", desired["tags"]),
                    *tag_specifications(
                        "volume", self.tags("ebs-volume/eks-api-tunnel", self.tunnel_name)
                    ),
                ],
            )["Instances"][0]["InstanceId"]

        def create() -> str:
            # An instance profile made seconds ago is not yet visible to EC2, which answers
            # InvalidParameterValue naming iamInstanceProfile (IAM User Guide, "Changes that I
            # make are not always immediately visible"): wait that out, bounded.
            deadline = time.monotonic() + PROFILE_PROPAGATION_TIMEOUT_S
            attempt = 0
            while True:
                try:
                    return send()
                except ClientError as exc:
                    attempt += 1
                    if not _profile_not_visible(exc) or time.monotonic() > deadline:
                        raise
                    self.log(f"{what}: EC2 does not see the new instance profile yet; retrying")
                    time.sleep(backoff_seconds(attempt, cap_s=5.0))

        def find() -> str | None:
            instances = self._tunnel_instances()
            return instances[0]["InstanceId"] if instances else None

        instance_id = create_or_adopt(what, create, find, self.log)
        self.log(f"{what}: launched {instance_id}")
        return instance_id

    def _ensure_cluster_rule(self, change: Change) -> None:
        cluster_sg_id = self._cluster_sg_id()
        if cluster_sg_id is None:
            raise UpstreamMissing(
                f"{self.name}: EKS cluster {self.spec.cluster_name} (and its cluster security "
                "group) does not exist; materialize gpu_eks first"
            )
        vpc_id, _ = VpcUnit(self.ctx).find_vpc_and_subnets()
        sg = self._tunnel_sg(vpc_id)
        if sg is None:
            raise UpstreamMissing(
                f"{self.name}: the tunnel's security group is missing; apply gpu_dagster_aws again"
            )
        ec2 = self.aws.ec2
        names = {sg["GroupId"]: self.tunnel_name}
        wanted = f"tcp {HTTPS_PORT} from {self.tunnel_name}"
        naming = self._rules_naming(cluster_sg_id, sg["GroupId"])
        # Only rules naming our tunnel group are ours on EKS's group; every other rule stays.
        extra = [p for p in naming if _rules([p], names, "from") != [wanted]]
        if extra:
            ec2.revoke_security_group_ingress(GroupId=cluster_sg_id, IpPermissions=extra)
        if len(extra) == len(naming):
            ec2.authorize_security_group_ingress(
                GroupId=cluster_sg_id,
                IpPermissions=[
                    {
                        "IpProtocol": "tcp",
                        "FromPort": HTTPS_PORT,
                        "ToPort": HTTPS_PORT,
                        "UserIdGroupPairs": [
                            {
                                "GroupId": sg["GroupId"],
                                "Description": "EKS API tunnel (SSM port forward) to the API",
                            }
                        ],
                    }
                ],
            )

    def _tunnel_destroy_plan(self, deletes: list[Change], warnings: list[str]) -> None:
        for instance in self._tunnel_instances():
            deletes.append(
                Change("delete", "ec2-instance", self.tunnel_name, instance["InstanceId"])
            )
        vpc_id, _ = VpcUnit(self.ctx).find_vpc_and_subnets()
        sg = self._tunnel_sg(vpc_id)
        sg_ours = sg is not None and is_owned(tag_dict(sg.get("Tags")), self.stack)
        if sg is not None and not sg_ours:
            warnings.append(f"security group {sg['GroupId']} is not ours: left alone")
        cluster_sg_id = self._cluster_sg_id()
        if sg_ours and cluster_sg_id and self._rules_naming(cluster_sg_id, sg["GroupId"]):
            # Before the group: a group another group's rule names cannot be deleted.
            deletes.append(
                Change("delete", "security-group-rule", self.tunnel_rule_name, cluster_sg_id)
            )
        if sg_ours:
            deletes.append(Change("delete", "security-group", self.tunnel_name, sg["GroupId"]))
        profile = self._instance_profile()
        if profile is not None and is_owned(self._profile_tags(), self.stack):
            deletes.append(Change("delete", "instance-profile", self.tunnel_name, profile["Arn"]))
        elif profile is not None:
            warnings.append(f"IAM instance profile {self.tunnel_name} is not ours: left alone")
        change, warning = plan_role_delete(self.aws.iam, self.tunnel_name, self.stack)
        if warning is not None:
            warnings.append(warning)
        elif change is not None:
            deletes.append(change)

    def _delete_tunnel_part(self, change: Change) -> None:
        """Delete one tunnel resource of a teardown plan (gone already: nothing to do)."""
        if change.kind == "ec2-instance":
            live = {i["InstanceId"] for i in self._tunnel_instances()}
            if change.resource_id in live:
                self._terminate_tunnel([change.resource_id])
        elif change.kind == "security-group-rule":
            vpc_id, _ = VpcUnit(self.ctx).find_vpc_and_subnets()
            sg = self._tunnel_sg(vpc_id)
            naming = self._rules_naming(change.resource_id, sg["GroupId"]) if sg else []
            if naming:
                self.aws.ec2.revoke_security_group_ingress(
                    GroupId=change.resource_id, IpPermissions=naming
                )
        elif change.kind == "instance-profile":
            profile = self._instance_profile()
            if profile is None:
                return
            for role in profile.get("Roles", []):
                self.aws.iam.remove_role_from_instance_profile(
                    InstanceProfileName=self.tunnel_name, RoleName=role["RoleName"]
                )
            self._ignore_missing(
                self.aws.iam.delete_instance_profile,
                "NoSuchEntity",
                InstanceProfileName=self.tunnel_name,
            )

    # --- what others read -------------------------------------------------------------------

    def db_connection(self) -> DagsterDb:
        db = self._db()
        if db is not None and not is_owned(tag_dict(db.get("TagList")), self.stack):
            db = None  # someone else's instance of that name is not our database
        endpoint = (db or {}).get("Endpoint") or {}
        return DagsterDb(
            instance_id=self.db_instance_id,
            hostname=endpoint.get("Address", ""),
            port=int(endpoint.get("Port", POSTGRES_PORT)),
            db_name=self._dagster.db_name,
            username=self._dagster.master_username,
            secret_arn=((db or {}).get("MasterUserSecret") or {}).get("SecretArn", ""),
        )

    def outputs(self) -> dict[str, str]:
        db = self.db_connection()
        return {
            "ecr_repository_uri": self.repository_uri(),
            "db_instance_id": db.instance_id,
            "db_host": db.hostname,
            "db_port": str(db.port),
            "db_name": db.db_name,
            "db_username": db.username,
            "db_secret_arn": db.secret_arn,
            "dagster_role_arn": self._role_arn(),
            "dagster_service_account": self.association.name,
            "run_role_arn": self._run_role_arn(),
            "run_service_account": self.run_association.name,
            "compute_logs_uri": f"s3://{self.bucket}/{COMPUTE_LOGS_PREFIX}",
            "tunnel_instance_id": next((i["InstanceId"] for i in self._tunnel_instances()), ""),
        }


# --- helpers ----------------------------------------------------------------------------------


def _rules(permissions: list[dict[str, Any]], names: dict[str, str], word: str) -> list[str]:
    """Security group permissions as readable lines: "tcp 5432 from <group name>"."""
    lines = []
    for permission in permissions:
        protocol = permission.get("IpProtocol")
        if protocol == "-1":
            ports = "all"
        else:
            low, high = permission.get("FromPort"), permission.get("ToPort")
            ports = f"{protocol} {low}" if low == high else f"{protocol} {low}-{high}"
        for pair in permission.get("UserIdGroupPairs", []):
            lines.append(f"{ports} {word} {names.get(pair['GroupId'], pair['GroupId'])}")
        for block in permission.get("IpRanges", []):
            lines.append(f"{ports} {word} {block['CidrIp']}")
        for block in permission.get("Ipv6Ranges", []):
            lines.append(f"{ports} {word} {block['CidrIpv6']}")
        for prefix_list in permission.get("PrefixListIds", []):
            lines.append(f"{ports} {word} {prefix_list['PrefixListId']}")
    return sorted(lines)


def _tunnel_replacement(change: Change) -> list[str]:
    """The tunnel instance's fields that differ and need a new instance."""
    fields = diffs_of(change) if change.action == "update" else {}
    return [field for field in _TUNNEL_FIXED if field in fields]


def _profile_not_visible(exc: ClientError) -> bool:
    message = exc.response.get("Error", {}).get("Message", "").lower()
    return error_code(exc) == "InvalidParameterValue" and "iaminstanceprofile" in message


def _replacement_warnings(change: Change, fixed: tuple[str, ...], what: str) -> list[str]:
    fields = diffs_of(change) if change.action == "update" else {}
    return [
        f"{what} {change.name}: {field} differs ({fields[field]}) and cannot be changed in "
        "place; apply refuses: replace it by hand (snapshot, delete, apply) if that is meant"
        for field in fixed
        if field in fields
    ]


def _refuse_replacement(unit: str, change: Change, fixed: tuple[str, ...], what: str) -> None:
    warnings = _replacement_warnings(change, fixed, what)
    if warnings:
        raise NeedsReplacement(f"{unit}: {'; '.join(warnings)}")


def _storage_shrink(change: Change) -> str | None:
    diff = diffs_of(change).get("allocated_storage_gib") if change.action == "update" else None
    if diff is not None and (diff.observed or 0) > (diff.desired or 0):
        return (
            f"RDS instance {change.name}: allocated storage cannot shrink ({diff}); keep "
            f"allocated_storage_gib at {diff.observed} or more"
        )
    return None


# DB instance fields -> ModifyDBInstance parameters (RDS API reference, ModifyDBInstance).
_MODIFY = {
    "instance_class": "DBInstanceClass",
    "allocated_storage_gib": "AllocatedStorage",
    "storage_type": "StorageType",
    "engine_version": "EngineVersion",
    "publicly_accessible": "PubliclyAccessible",
    "multi_az": "MultiAZ",
    "deletion_protection": "DeletionProtection",
    "backup_retention_days": "BackupRetentionPeriod",
    "auto_minor_version_upgrade": "AutoMinorVersionUpgrade",
    "copy_tags_to_snapshot": "CopyTagsToSnapshot",
    "subnet_group": "DBSubnetGroupName",
}


def _modify_arguments(desired: dict[str, Any], fields: set[str], sg_id: str) -> dict[str, Any]:
    modify = {param: desired[field] for field, param in _MODIFY.items() if field in fields}
    if "security_groups" in fields:
        modify["VpcSecurityGroupIds"] = [sg_id]
    if "master_password" in fields:
        # Hand the password to RDS: it generates a new one and keeps it in Secrets Manager.
        modify["ManageMasterUserPassword"] = True
    if "EngineVersion" in modify:
        # A new major version (16 -> 17) must be asked for explicitly (ModifyDBInstance,
        # AllowMajorVersionUpgrade).
        modify["AllowMajorVersionUpgrade"] = True
    return modify
