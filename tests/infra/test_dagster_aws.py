"""gpu-dagster-aws on the emulated account: ECR repository, RDS Postgres, the Dagster pods' role.

Driven directly, as tests/infra/test_workload_aws.py drives its unit: moto's server over HTTP
with devtools.local_aws's additions (RDS instances take `db_instance_transition_s` to become
available and to go away; faults reach RDS and ECR).
"""

from __future__ import annotations

import dataclasses
import json
import time
import urllib.parse

import pytest

from gpu_analysis.deploy import bootstrap
from gpu_analysis.deploy.instance import COMPUTE_LOGS_PREFIX as INSTANCE_COMPUTE_LOGS_PREFIX
from gpu_analysis.deploy.instance import RUN_SERVICE_ACCOUNT
from gpu_analysis.profile import load_profile
from infra_assets.aws_access import RESOURCE_TAG, tag_dict
from infra_assets.plan import Plan
from infra_assets.spec import OWNER_TAG, ClusterSpec
from infra_assets.spec.aws import DagsterAwsSpec
from infra_assets.spec.kubernetes import KARPENTER_DISCOVERY_TAG
from infra_assets.unit import UnitContext
from infra_assets.units.dagster_aws import (
    COMPUTE_LOGS_PREFIX,
    SSM_MANAGED_INSTANCE_CORE,
    TUNNEL_AMI_PARAMETER,
    DagsterAwsUnit,
    dagster_db_connection,
)
from infra_assets.units.eks import EksUnit
from infra_assets.units.vpc import VpcUnit
from infra_assets.units.workload import WorkloadAwsUnit, alerts_topic_name, match_bucket_name
from tests.infra.test_karpenter_iam_policy import evaluate
from video_assets.layout import MatchLayout

ACCOUNT = "123456789012"  # moto's account
REGION = "eu-west-3"


class Said:
    """A logger that keeps every line the unit logs."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str, *args: object) -> None:
        self.lines.append(message % args if args else message)

    warning = error = debug = info


def upstream(ctx: UnitContext) -> dict[str, str]:
    """What gpu-vpc and gpu-eks leave for this unit, made directly with their own names and tags:
    our VPC with its reserved database subnets and its private subnets, the nodes' security
    group, the cluster in the private subnets (with the cluster security group EKS makes, and
    gpu-eks's rule on it: 443 from the nodes). Returns the subnets' ids by spec name, the nodes
    group id under "nodes" and the cluster security group's under "cluster-sg"."""
    ec2 = ctx.aws.client("ec2")
    vpc_unit, eks_unit = VpcUnit(ctx), EksUnit(ctx)
    vpc_tags = [{"Key": OWNER_TAG, "Value": ctx.spec.stack}]
    vpc_id = ec2.create_vpc(
        CidrBlock=ctx.spec.vpc.cidr,
        TagSpecifications=[{"ResourceType": "vpc", "Tags": vpc_tags}],
    )["Vpc"]["VpcId"]
    ids = {}
    for subnet in ctx.spec.vpc.subnets:
        if subnet.tier not in ("database", "private"):
            continue
        tags = vpc_unit._subnet_tags(subnet)
        ids[subnet.name] = ec2.create_subnet(
            VpcId=vpc_id,
            CidrBlock=subnet.cidr,
            AvailabilityZone=subnet.availability_zone,
            TagSpecifications=[
                {
                    "ResourceType": "subnet",
                    "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
                }
            ],
        )["Subnet"]["SubnetId"]
    ids["nodes"] = ec2.create_security_group(
        GroupName=eks_unit._sg_name,
        Description="nodes",
        VpcId=vpc_id,
        TagSpecifications=[
            {
                "ResourceType": "security-group",
                "Tags": [{"Key": k, "Value": v} for k, v in eks_unit._sg_tags().items()],
            }
        ],
    )["GroupId"]
    ids["cluster-sg"] = cluster_in(ctx, [v for k, v in ids.items() if k.startswith("private-")])
    # gpu-eks's own rule on EKS's group: this unit must never touch it.
    ec2.authorize_security_group_ingress(
        GroupId=ids["cluster-sg"],
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 443,
                "ToPort": 443,
                "UserIdGroupPairs": [{"GroupId": ids["nodes"]}],
            }
        ],
    )
    return ids


def cluster_in(ctx: UnitContext, subnet_ids: list[str]) -> str:
    """Our ACTIVE EKS cluster in those subnets, made directly (gpu-eks is not under test); returns
    the id of the cluster security group EKS made for it. Its role is new, so EKS refuses it
    until IAM has propagated it (the emulator's delay), which is waited out as a caller must."""
    eks, iam = ctx.aws.client("eks"), ctx.aws.client("iam")
    role = iam.create_role(RoleName="test-cluster-role", AssumeRolePolicyDocument="{}")["Role"]
    name = ctx.spec.cluster_name
    deadline = time.monotonic() + 30
    while True:
        try:
            eks.create_cluster(
                name=name,
                roleArn=role["Arn"],
                resourcesVpcConfig={"subnetIds": subnet_ids},
                tags={OWNER_TAG: ctx.spec.stack},
            )
            break
        except eks.exceptions.InvalidParameterException:
            assert time.monotonic() < deadline, "EKS never accepted the new role"
            time.sleep(0.2)
    while (cluster := eks.describe_cluster(name=name)["cluster"])["status"] != "ACTIVE":
        assert time.monotonic() < deadline, "cluster never became ACTIVE"
        time.sleep(0.2)
    return cluster["resourcesVpcConfig"]["clusterSecurityGroupId"]


@pytest.fixture
def said(aws_ctx) -> Said:
    aws_ctx.log = Said()
    return aws_ctx.log


@pytest.fixture
def applied(aws_ctx, said) -> DagsterAwsUnit:
    upstream(aws_ctx)
    unit = DagsterAwsUnit(aws_ctx)
    unit.apply()
    return unit


def policy_of(iam, role: str) -> dict:
    document = iam.get_role_policy(RoleName=role, PolicyName="DagsterAccess")["PolicyDocument"]
    return json.loads(urllib.parse.unquote(document)) if isinstance(document, str) else document


def secret_arn(aws_ctx, unit: DagsterAwsUnit) -> str:
    rds = aws_ctx.aws.client("rds")
    db = rds.describe_db_instances(DBInstanceIdentifier=unit.db_instance_id)["DBInstances"][0]
    return db["MasterUserSecret"]["SecretArn"]


def tunnel_of(aws_ctx) -> dict:
    """The one live tunnel instance, found by the tags the bootstrap uses."""
    reservations = aws_ctx.aws.client("ec2").describe_instances(
        Filters=[
            {"Name": f"tag:{bootstrap.TUNNEL_ROLE_TAG}", "Values": [bootstrap.TUNNEL_ROLE]},
            {"Name": "instance-state-name", "Values": ["pending", "running", "stopped"]},
        ]
    )["Reservations"]
    (instance,) = [i for r in reservations for i in r["Instances"]]
    return instance


def tunnel_sg_id(instance: dict) -> str:
    (group,) = instance["NetworkInterfaces"][0]["Groups"]
    return group["GroupId"]


def rules_naming(ec2, group_id: str, peer_id: str) -> list[tuple]:
    group = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
    return sorted(
        (p["IpProtocol"], p.get("FromPort"), p.get("ToPort"))
        for p in group["IpPermissions"]
        if any(pair["GroupId"] == peer_id for pair in p.get("UserIdGroupPairs", []))
    )


def flat_rules(group: dict) -> set[tuple]:
    """Ingress rules one source at a time (EC2 groups sources of the same ports together)."""
    return {
        (p["IpProtocol"], p.get("FromPort"), p.get("ToPort"), source)
        for p in group["IpPermissions"]
        for source in [pair["GroupId"] for pair in p.get("UserIdGroupPairs", [])]
        + [r["CidrIp"] for r in p.get("IpRanges", [])]
    }


# --- names the other parts of the project use ------------------------------------------------


def test_names_match_the_staging_profile_the_eks_nodes_and_the_instance_config():
    profile = load_profile("staging")
    spec = ClusterSpec()
    # The profile's image lives in this repository (registry/<repository>:<tag>).
    repository = profile.image.split("/", 1)[1].rsplit(":", 1)[0].split("@")[0]
    assert repository == DagsterAwsSpec().ecr_repository
    assert COMPUTE_LOGS_PREFIX == INSTANCE_COMPUTE_LOGS_PREFIX
    # The database may be reached from the nodes' group gpu-eks makes: it carries the discovery
    # tag this unit selects it by.
    eks = EksUnit.__new__(EksUnit)
    eks.spec, eks.stack = spec, spec.stack
    assert eks._sg_tags()[KARPENTER_DISCOVERY_TAG] == spec.cluster_name


# --- plan, apply, idempotency -----------------------------------------------------------------


def test_the_plan_on_an_empty_account_lists_every_create_and_what_it_waits_for(aws_ctx):
    plan = DagsterAwsUnit(aws_ctx).plan()
    assert [(c.action, c.kind) for c in plan.changes] == [
        ("create", "ecr-repository"),
        ("create", "security-group"),
        ("create", "db-subnet-group"),
        ("create", "rds-instance"),
        ("create", "iam-role"),
        ("create", "iam-role"),
        ("create", "pod-identity-association"),
        ("create", "pod-identity-association"),
        # The EKS API tunnel: its group, role, profile, instance, and the rule on EKS's group.
        ("create", "security-group"),
        ("create", "iam-role"),
        ("create", "instance-profile"),
        ("create", "ec2-instance"),
        ("create", "security-group-rule"),
    ]
    tunnel = {d.path: d.desired for d in plan.changes[11].diffs}
    # The AMI is AWS's newest AL2023 arm64, read from the public parameter at plan time.
    ssm = aws_ctx.aws.client("ssm")
    assert tunnel["image_id"] == ssm.get_parameter(Name=TUNNEL_AMI_PARAMETER)["Parameter"]["Value"]
    assert tunnel["image_id"].startswith("ami-")
    assert tunnel["metadata"] == {
        "http_tokens": "required",
        "hop_limit": 1,
        "http_endpoint": "enabled",
    }
    assert tunnel["public_ip"] is False
    rds = {d.path: d.desired for d in plan.changes[3].diffs}
    assert rds["storage_encrypted"] is True
    assert rds["publicly_accessible"] is False
    assert rds["instance_class"] == "db.t4g.micro"
    assert rds["master_password"] == "managed by RDS in Secrets Manager"
    text = plan.as_text()
    assert "database subnets" in text and "gpu_vpc" in text
    assert "gpu_eks" in text
    assert "cluster security group does not exist yet" in text
    assert not plan.conflicts


def test_apply_converges_waits_for_the_database_and_a_second_apply_does_nothing(
    aws_ctx, aws_server, said
):
    # Longer than what follows the database in the apply (role, association): a unit that did
    # not wait would leave it `creating`.
    # IAM takes 2 s to show EC2 a new instance profile: far longer than the few calls between
    # CreateInstanceProfile and RunInstances, so the launch is refused first and retried.
    aws_server.configure(db_instance_transition_s=5.0, iam_propagation_s=2.0)
    ids = upstream(aws_ctx)
    unit = DagsterAwsUnit(aws_ctx)
    unit.apply()
    ecr, rds, ec2, iam, eks = (aws_ctx.aws.client(s) for s in ("ecr", "rds", "ec2", "iam", "eks"))

    (repo,) = ecr.describe_repositories(repositoryNames=["gpu-analysis"])["repositories"]
    assert repo["imageTagMutability"] == "IMMUTABLE"
    assert repo["imageScanningConfiguration"] == {"scanOnPush": True}
    assert repo["encryptionConfiguration"]["encryptionType"] == "AES256"
    (rule,) = json.loads(
        ecr.get_lifecycle_policy(repositoryName="gpu-analysis")["lifecyclePolicyText"]
    )["rules"]
    assert rule["selection"]["tagStatus"] == "untagged"
    assert rule["action"] == {"type": "expire"}
    tags = tag_dict(ecr.list_tags_for_resource(resourceArn=repo["repositoryArn"])["tags"])
    assert tags[OWNER_TAG] == aws_ctx.spec.stack
    assert tags[RESOURCE_TAG] == "ecr-repository/image"

    db = rds.describe_db_instances(DBInstanceIdentifier=unit.db_instance_id)["DBInstances"][0]
    # The apply waited: the instance is available, not still creating.
    assert db["DBInstanceStatus"] == "available"
    assert (db["Engine"], db["DBInstanceClass"]) == ("postgres", "db.t4g.micro")
    assert db["StorageEncrypted"] is True and db["PubliclyAccessible"] is False
    assert db["MultiAZ"] is False and db["BackupRetentionPeriod"] == 7
    assert db["MasterUserSecret"]["SecretArn"]
    group = db["DBSubnetGroup"]
    assert sorted(s["SubnetIdentifier"] for s in group["Subnets"]) == sorted(
        v for k, v in ids.items() if k.startswith("database-")
    )
    (db_sg,) = db["VpcSecurityGroups"]
    sg = ec2.describe_security_groups(GroupIds=[db_sg["VpcSecurityGroupId"]])["SecurityGroups"][0]
    (permission,) = sg["IpPermissions"]
    assert (permission["FromPort"], permission["ToPort"], permission["IpProtocol"]) == (
        5432,
        5432,
        "tcp",
    )
    assert [p["GroupId"] for p in permission["UserIdGroupPairs"]] == [ids["nodes"]]
    assert permission.get("IpRanges", []) == []
    assert sg["IpPermissionsEgress"] == []

    # Each service account gets its own role: the Dagster pods', the run pods'.
    summaries = eks.list_pod_identity_associations(clusterName=aws_ctx.spec.cluster_name)[
        "associations"
    ]
    roles = {
        (s["namespace"], s["serviceAccount"]): eks.describe_pod_identity_association(
            clusterName=aws_ctx.spec.cluster_name, associationId=s["associationId"]
        )["association"]["roleArn"]
        for s in summaries
    }
    assert roles == {
        ("gpu-analysis", "dagster"): iam.get_role(RoleName=unit.role_name)["Role"]["Arn"],
        ("gpu-analysis", RUN_SERVICE_ACCOUNT): iam.get_role(RoleName=unit.run_role_name)["Role"][
            "Arn"
        ],
    }

    again = DagsterAwsUnit(aws_ctx)
    assert not again.plan().has_changes, again.plan().as_text()
    result = again.apply()
    assert not result.plan.has_changes
    assert aws_server.calls("CreateDBInstance") == 1
    assert any("does not see the new instance profile yet" in line for line in said.lines)
    tunnel_of(aws_ctx)  # one instance for all the sends

    outputs = result.outputs
    endpoint = db["Endpoint"]
    assert outputs["db_host"] == endpoint["Address"]
    assert outputs["db_secret_arn"] == db["MasterUserSecret"]["SecretArn"]
    assert outputs["ecr_repository_uri"] == repo["repositoryUri"]
    assert (
        outputs["compute_logs_uri"]
        == f"s3://{match_bucket_name(aws_ctx.spec)}/dagster/compute-logs/"
    )
    connection = dagster_db_connection(aws_ctx)
    assert connection.postgres_config() == {
        "hostname": endpoint["Address"],
        "port": endpoint["Port"],
        "username": "dagster",
        "db_name": "dagster",
        "params": {"sslmode": "require"},
    }


def test_the_tunnel_instance_is_what_the_bootstrap_needs_and_the_bootstrap_finds_it(
    aws_ctx, applied
):
    ec2, iam, ssm = (aws_ctx.aws.client(s) for s in ("ec2", "iam", "ssm"))
    instance = tunnel_of(aws_ctx)
    assert instance["InstanceType"] == "t4g.nano"
    latest = ssm.get_parameter(Name=TUNNEL_AMI_PARAMETER)["Parameter"]["Value"]
    assert instance["ImageId"] == latest
    assert not instance.get("PublicIpAddress")
    _, subnets = VpcUnit(aws_ctx).find_vpc_and_subnets()
    private = sorted(s.name for s in aws_ctx.spec.vpc.subnets if s.tier == "private")
    assert instance["SubnetId"] == subnets[private[0]]
    metadata = instance["MetadataOptions"]
    assert (metadata["HttpTokens"], metadata["HttpPutResponseHopLimit"]) == ("required", 1)
    (root,) = [m for m in instance["BlockDeviceMappings"] if m["DeviceName"] == "/dev/xvda"]
    (volume,) = ec2.describe_volumes(VolumeIds=[root["Ebs"]["VolumeId"]])["Volumes"]
    assert (volume["Size"], volume["VolumeType"], volume["Encrypted"]) == (8, "gp3", True)
    tags = tag_dict(instance["Tags"])
    assert tags[OWNER_TAG] == aws_ctx.spec.stack
    assert tags[bootstrap.TUNNEL_ROLE_TAG] == bootstrap.TUNNEL_ROLE

    # The instance's only rights: the SSM Agent's managed policy.
    profile_name = instance["IamInstanceProfile"]["Arn"].rsplit("/", 1)[1]
    assert profile_name == applied.tunnel_name
    (role,) = iam.get_instance_profile(InstanceProfileName=profile_name)["InstanceProfile"]["Roles"]
    attached = iam.list_attached_role_policies(RoleName=role["RoleName"])["AttachedPolicies"]
    assert [p["PolicyArn"] for p in attached] == [SSM_MANAGED_INSTANCE_CORE]
    assert iam.list_role_policies(RoleName=role["RoleName"])["PolicyNames"] == []
    trust = role["AssumeRolePolicyDocument"]
    trust = json.loads(urllib.parse.unquote(trust)) if isinstance(trust, str) else trust
    assert [s["Principal"] for s in trust["Statement"]] == [{"Service": "ec2.amazonaws.com"}]

    # No way in; out on 443 only; EKS's cluster group admits 443 from it, and keeps its own rules.
    sg_id = tunnel_sg_id(instance)
    group = ec2.describe_security_groups(GroupIds=[sg_id])["SecurityGroups"][0]
    assert group["IpPermissions"] == []
    (egress,) = group["IpPermissionsEgress"]
    assert (egress["IpProtocol"], egress["FromPort"], egress["ToPort"]) == ("tcp", 443, 443)
    assert [r["CidrIp"] for r in egress["IpRanges"]] == ["0.0.0.0/0"]
    cluster = aws_ctx.aws.client("eks").describe_cluster(name=aws_ctx.spec.cluster_name)
    cluster_sg = cluster["cluster"]["resourcesVpcConfig"]["clusterSecurityGroupId"]
    assert rules_naming(ec2, cluster_sg, sg_id) == [("tcp", 443, 443)]
    nodes = applied._network()[2]
    assert rules_naming(ec2, cluster_sg, next(iter(nodes))) == [("tcp", 443, 443)]
    assert rules_naming(ec2, cluster_sg, cluster_sg) == [("-1", None, None)]

    # What the bootstrap looks up is what the unit made.
    assert bootstrap.tunnel_instance(aws_ctx.aws, aws_ctx.spec.stack) == instance["InstanceId"]
    assert applied.outputs()["tunnel_instance_id"] == instance["InstanceId"]

    # Stopped between bootstraps is not drift; the bootstrap starts it again.
    ec2.stop_instances(InstanceIds=[instance["InstanceId"]])
    assert not DagsterAwsUnit(aws_ctx).plan().has_changes
    assert bootstrap.tunnel_instance(aws_ctx.aws, aws_ctx.spec.stack) == instance["InstanceId"]
    assert tunnel_of(aws_ctx)["State"]["Name"] == "running"

    # A field EC2 cannot change in place: the instance is replaced, and said so in the plan.
    ec2.modify_instance_attribute(
        InstanceId=instance["InstanceId"], InstanceType={"Value": "t4g.small"}
    )
    plan = DagsterAwsUnit(aws_ctx).plan()
    (change,) = plan.pending
    assert (change.kind, [d.path for d in change.diffs]) == ("ec2-instance", ["instance_type"])
    assert any("apply replaces it" in w for w in plan.warnings)
    DagsterAwsUnit(aws_ctx).apply(plan)
    replaced = tunnel_of(aws_ctx)
    assert replaced["InstanceId"] != instance["InstanceId"]
    assert replaced["InstanceType"] == "t4g.nano"
    old = ec2.describe_instances(InstanceIds=[instance["InstanceId"]])["Reservations"][0]
    assert old["Instances"][0]["State"]["Name"] == "terminated"
    assert not DagsterAwsUnit(aws_ctx).plan().has_changes


def test_drift_is_planned_field_by_field_and_repaired(aws_ctx, applied):
    ecr, rds, ec2 = (aws_ctx.aws.client(s) for s in ("ecr", "rds", "ec2"))
    ecr.put_image_tag_mutability(repositoryName="gpu-analysis", imageTagMutability="MUTABLE")
    ecr.put_image_scanning_configuration(
        repositoryName="gpu-analysis", imageScanningConfiguration={"scanOnPush": False}
    )
    rds.modify_db_instance(
        DBInstanceIdentifier=applied.db_instance_id, PubliclyAccessible=True, ApplyImmediately=True
    )
    sg_id = rds.describe_db_instances(DBInstanceIdentifier=applied.db_instance_id)["DBInstances"][
        0
    ]["VpcSecurityGroups"][0]["VpcSecurityGroupId"]
    ec2.authorize_security_group_ingress(
        GroupId=sg_id,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 5432,
                "ToPort": 5432,
                "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
            }
        ],
    )

    # The tunnel: a way in, IMDSv1 and a second hop, an Elastic IP, our rule on EKS's group
    # gone; and someone else's rule on EKS's group, which is not ours to judge.
    tunnel = tunnel_of(aws_ctx)
    tunnel_id, tunnel_sg = tunnel["InstanceId"], tunnel_sg_id(tunnel)
    ec2.authorize_security_group_ingress(
        GroupId=tunnel_sg,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 22,
                "ToPort": 22,
                "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
            }
        ],
    )
    ec2.modify_instance_metadata_options(
        # HttpEndpoint given as it is: moto clears an option the call leaves out.
        InstanceId=tunnel_id,
        HttpTokens="optional",
        HttpPutResponseHopLimit=2,
        HttpEndpoint="enabled",
    )
    address = ec2.allocate_address(Domain="vpc")
    ec2.associate_address(AllocationId=address["AllocationId"], InstanceId=tunnel_id)
    cluster = aws_ctx.aws.client("eks").describe_cluster(name=aws_ctx.spec.cluster_name)
    cluster_sg = cluster["cluster"]["resourcesVpcConfig"]["clusterSecurityGroupId"]
    ours = applied._rules_naming(cluster_sg, tunnel_sg)
    ec2.revoke_security_group_ingress(GroupId=cluster_sg, IpPermissions=ours)
    theirs = {
        "IpProtocol": "tcp",
        "FromPort": 8443,
        "ToPort": 8443,
        "IpRanges": [{"CidrIp": "10.0.0.0/8"}],
    }
    ec2.authorize_security_group_ingress(GroupId=cluster_sg, IpPermissions=[theirs])

    plan = DagsterAwsUnit(aws_ctx).plan()
    by_kind = {(c.kind, c.name): c for c in plan.pending}
    tunnel_name = applied.tunnel_name
    assert set(by_kind) == {
        ("ecr-repository", "gpu-analysis"),
        ("rds-instance", applied.db_instance_id),
        ("security-group", applied.db_sg_name),
        ("security-group", tunnel_name),
        ("ec2-instance", tunnel_name),
        ("security-group-rule", applied.tunnel_rule_name),
    }
    assert {d.path for d in by_kind["ecr-repository", "gpu-analysis"].diffs} == {
        "image_tag_mutability",
        "scan_on_push",
    }
    assert {d.path for d in by_kind["rds-instance", applied.db_instance_id].diffs} == {
        "publicly_accessible"
    }
    (ingress,) = by_kind["security-group", applied.db_sg_name].diffs
    assert ingress.path == "ingress" and "tcp 5432 from 0.0.0.0/0" in ingress.observed
    (ingress,) = by_kind["security-group", tunnel_name].diffs
    assert (ingress.observed, ingress.desired) == (["tcp 22 from 0.0.0.0/0"], [])
    assert {d.path for d in by_kind["ec2-instance", tunnel_name].diffs} == {
        "metadata.http_tokens",
        "metadata.hop_limit",
        "public_ip",
    }
    assert any("has a public IP" in w for w in plan.warnings)
    assert by_kind["security-group-rule", applied.tunnel_rule_name].action == "create"

    DagsterAwsUnit(aws_ctx).apply(plan)
    assert not DagsterAwsUnit(aws_ctx).plan().has_changes
    # Repaired in place: the same instance, IMDSv2 only, one hop, no public address.
    repaired = tunnel_of(aws_ctx)
    assert repaired["InstanceId"] == tunnel_id
    metadata = repaired["MetadataOptions"]
    assert (metadata["HttpTokens"], metadata["HttpPutResponseHopLimit"]) == ("required", 1)
    assert not repaired.get("PublicIpAddress")
    (left,) = ec2.describe_addresses(AllocationIds=[address["AllocationId"]])["Addresses"]
    assert "AssociationId" not in left  # disassociated; not released, it is not ours
    assert (
        ec2.describe_security_groups(GroupIds=[tunnel_sg])["SecurityGroups"][0]["IpPermissions"]
        == []
    )
    assert rules_naming(ec2, cluster_sg, tunnel_sg) == [("tcp", 443, 443)]
    cluster_rules = ec2.describe_security_groups(GroupIds=[cluster_sg])["SecurityGroups"][0]
    assert any(
        p.get("FromPort") == 8443 and p.get("IpRanges") for p in cluster_rules["IpPermissions"]
    )
    (repo,) = ecr.describe_repositories(repositoryNames=["gpu-analysis"])["repositories"]
    assert repo["imageTagMutability"] == "IMMUTABLE"
    assert repo["imageScanningConfiguration"] == {"scanOnPush": True}
    db = rds.describe_db_instances(DBInstanceIdentifier=applied.db_instance_id)["DBInstances"][0]
    assert db["PubliclyAccessible"] is False
    sg = ec2.describe_security_groups(GroupIds=[sg_id])["SecurityGroups"][0]
    assert all(not p.get("IpRanges") for p in sg["IpPermissions"])


@pytest.mark.parametrize(
    ("action", "fault"),
    [
        ("CreateRepository", "ambiguous"),
        ("CreateSecurityGroup", "ambiguous"),
        ("CreateDBSubnetGroup", "ambiguous"),
        ("CreateDBInstance", "ambiguous"),
        ("CreateDBInstance", "throttle"),
        ("CreateRole", "ambiguous"),
        ("CreatePodIdentityAssociation", "ambiguous"),
        ("RunInstances", "ambiguous"),
        ("RunInstances", "throttle"),
        ("CreateInstanceProfile", "ambiguous"),
    ],
)
def test_an_unclear_or_throttled_create_leaves_one_of_each(aws_ctx, aws_server, action, fault):
    upstream(aws_ctx)
    aws_server.inject(action, fault)
    DagsterAwsUnit(aws_ctx).apply()
    assert aws_server.pending_faults() == {}
    ecr, rds, ec2, eks = (aws_ctx.aws.client(s) for s in ("ecr", "rds", "ec2", "eks"))
    unit = DagsterAwsUnit(aws_ctx)
    assert len(ecr.describe_repositories()["repositories"]) == 1
    assert len(rds.describe_db_instances()["DBInstances"]) == 1
    assert len(rds.describe_db_subnet_groups()["DBSubnetGroups"]) == 1
    groups = ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [unit.db_sg_name]}]
    )["SecurityGroups"]
    assert len(groups) == 1
    associations = eks.list_pod_identity_associations(clusterName=aws_ctx.spec.cluster_name)
    assert len(associations["associations"]) == 2  # the Dagster pods', the run pods'
    tunnel_of(aws_ctx)  # exactly one
    profiles = aws_ctx.aws.client("iam").list_instance_profiles()["InstanceProfiles"]
    assert [p["InstanceProfileName"] for p in profiles] == [unit.tunnel_name]
    assert not unit.plan().has_changes


# --- least privilege, and the password ---------------------------------------------------------


def test_the_dagster_role_reaches_its_secret_compute_logs_and_alerts_topic_and_nothing_else(
    aws_ctx, applied
):
    iam = aws_ctx.aws.client("iam")
    policy = policy_of(iam, applied.role_name)
    secret = secret_arn(aws_ctx, applied)
    bucket = f"arn:aws:s3:::{match_bucket_name(aws_ctx.spec)}"
    topic = f"arn:aws:sns:{REGION}:{ACCOUNT}:{alerts_topic_name(aws_ctx.spec)}"
    log_key = f"{bucket}/dagster/compute-logs/storage/run-1/compute_logs/step.err"

    def allowed(action: str, resource: str, **context: str) -> bool:
        return evaluate(policy, action, resource, context)

    assert allowed("secretsmanager:GetSecretValue", secret)
    other_secret = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:rds!db-other-AbCdEf"
    assert not allowed("secretsmanager:GetSecretValue", other_secret)
    assert not allowed("secretsmanager:PutSecretValue", secret)
    assert not allowed("secretsmanager:DeleteSecret", secret)

    assert allowed("s3:PutObject", log_key) and allowed("s3:GetObject", log_key)
    assert not allowed("s3:DeleteObject", log_key)
    for elsewhere in ("results/m1/report.json", "incoming/m1.mp4", "work/m1/run/x.npz"):
        for action in ("s3:GetObject", "s3:PutObject"):
            assert not allowed(action, f"{bucket}/{elsewhere}"), (action, elsewhere)
    assert allowed("s3:ListBucket", bucket, **{"s3:prefix": "dagster/compute-logs/storage/"})
    assert allowed("s3:ListBucket", bucket, **{"s3:prefix": "incoming/"})
    assert not allowed("s3:ListBucket", bucket, **{"s3:prefix": ""})
    assert not allowed("s3:ListBucket", bucket, **{"s3:prefix": "results/"})
    assert not allowed("s3:ListBucket", "arn:aws:s3:::another-bucket", **{"s3:prefix": "incoming/"})

    assert allowed("sns:Publish", topic)
    assert not allowed("sns:Publish", f"arn:aws:sns:{REGION}:{ACCOUNT}:another-topic")
    assert not allowed("sns:Subscribe", topic)

    granted = {
        action
        for statement in policy["Statement"]
        for action in (
            [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
        )
    }
    assert granted == {
        "secretsmanager:GetSecretValue",
        "s3:GetObject",
        "s3:PutObject",
        "s3:ListBucket",
        "sns:Publish",
    }
    assert all(s["Effect"] == "Allow" and s["Resource"] != "*" for s in policy["Statement"])


def test_the_run_pods_role_reaches_the_match_layout_and_their_step_logs_and_nothing_else(
    aws_ctx, applied
):
    """Run pods (RUN_SERVICE_ACCOUNT) run the CPU steps: the input snapshot, the map, the
    delivery (video_assets/delivery.py reads, copies and deletes under results/), and upload
    their step logs. Their role is not the workers' (which cannot read or delete results/) nor
    the Dagster pods' (which cannot touch the match layout)."""
    iam = aws_ctx.aws.client("iam")
    document = iam.get_role_policy(RoleName=applied.run_role_name, PolicyName="RunAccess")[
        "PolicyDocument"
    ]
    policy = json.loads(urllib.parse.unquote(document)) if isinstance(document, str) else document
    bucket = f"arn:aws:s3:::{match_bucket_name(aws_ctx.spec)}"
    layout = MatchLayout(f"s3://{match_bucket_name(aws_ctx.spec)}")

    def allowed(action: str, uri_or_arn: str, **context: str) -> bool:
        arn = "arn:aws:s3:::" + uri_or_arn.removeprefix("s3://")
        return evaluate(
            policy, action, arn if uri_or_arn.startswith("s3://") else uri_or_arn, context
        )

    video = layout.video_uri("m1")
    snapshot = layout.work_uri("m1", "run-1", "input", "video.mp4")
    published = layout.delivery_uri("m1", "report.json")
    log_key = f"{bucket}/{COMPUTE_LOGS_PREFIX}storage/run-1/compute_logs/step.out"
    # The snapshot: read incoming/, write work/ (CopyObject); never write or delete incoming/.
    assert allowed("s3:GetObject", video)
    assert not allowed("s3:PutObject", video) and not allowed("s3:DeleteObject", video)
    for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject"):
        assert allowed(action, snapshot), action
        # The delivery switches and prunes versions under results/.
        assert allowed(action, published), action
    assert allowed("s3:PutObject", log_key) and allowed("s3:GetObject", log_key)
    assert not allowed("s3:DeleteObject", log_key)
    for prefix in ("incoming/", "work/m1/run-1/", "results/m1/", "dagster/compute-logs/"):
        assert allowed("s3:ListBucket", bucket, **{"s3:prefix": prefix}), prefix
    assert not allowed("s3:ListBucket", bucket, **{"s3:prefix": ""})
    assert not allowed("s3:GetObject", f"{bucket}/elsewhere/secret")
    assert not allowed("s3:GetObject", "arn:aws:s3:::another-bucket/incoming/m1.mp4")
    assert not allowed("s3:DeleteBucket", bucket)
    assert not allowed("s3:PutBucketPolicy", bucket)
    assert not allowed("secretsmanager:GetSecretValue", secret_arn(aws_ctx, applied))
    assert not allowed("sns:Publish", f"arn:aws:sns:{REGION}:{ACCOUNT}:anything")
    assert all(s["Effect"] == "Allow" and s["Resource"] != "*" for s in policy["Statement"])

    # The other two roles stay as narrow: no step logs for the step pods (the worker policy
    # gpu-workload-aws applies), no match data for the Dagster pods.
    worker = WorkloadAwsUnit(aws_ctx)._worker_policy()
    assert not evaluate(worker, "s3:PutObject", log_key, {})
    dagster = policy_of(iam, applied.role_name)
    assert not evaluate(dagster, "s3:GetObject", "arn:aws:s3:::" + published[5:], {})


def test_the_database_password_appears_in_no_plan_log_output_or_policy(aws_ctx, aws_server, said):
    upstream(aws_ctx)
    aws_server.inject("CreateDBInstance", "ambiguous")  # the adopt path logs too
    unit = DagsterAwsUnit(aws_ctx)
    result = unit.apply()
    secrets = aws_ctx.aws.client("secretsmanager")
    password = json.loads(
        secrets.get_secret_value(SecretId=secret_arn(aws_ctx, unit))["SecretString"]
    )["password"]
    assert len(password) >= 8

    aws_ctx.aws.client("rds").modify_db_instance(
        DBInstanceIdentifier=unit.db_instance_id, PubliclyAccessible=True, ApplyImmediately=True
    )
    drift = DagsterAwsUnit(aws_ctx).plan()
    preview = DagsterAwsUnit(aws_ctx).destroy_plan()
    seen: list[str] = [*said.lines, json.dumps(result.outputs)]
    for plan in (result.plan, drift, preview):
        seen += [plan.as_text(), plan.as_markdown(), json.dumps(plan.field_diffs(), default=str)]
        seen += [repr(c) for c in plan.changes]
    seen.append(json.dumps(policy_of(aws_ctx.aws.client("iam"), unit.role_name)))
    assert said.lines, "the apply logged nothing: this test would prove nothing"
    assert all(password not in text for text in seen)


# --- teardown ---------------------------------------------------------------------------------


def push_an_image(ecr) -> None:
    config = {
        "mediaType": "application/vnd.docker.container.image.v1+json",
        "digest": "sha256:" + "a" * 64,
        "size": 1,
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": config,
        "layers": [],
    }
    ecr.put_image(repositoryName="gpu-analysis", imageManifest=json.dumps(manifest), imageTag="v1")


def test_teardown_removes_all_but_keeps_a_repository_with_images_and_a_final_snapshot(
    aws_ctx, applied
):
    ecr, rds, ec2, iam, eks = (aws_ctx.aws.client(s) for s in ("ecr", "rds", "ec2", "iam", "eks"))
    push_an_image(ecr)
    secret = secret_arn(aws_ctx, applied)

    tunnel = tunnel_of(aws_ctx)
    tunnel_sg = tunnel_sg_id(tunnel)
    cluster = eks.describe_cluster(name=aws_ctx.spec.cluster_name)["cluster"]
    cluster_sg = cluster["resourcesVpcConfig"]["clusterSecurityGroupId"]
    before = ec2.describe_security_groups(GroupIds=[cluster_sg])["SecurityGroups"][0]

    preview = DagsterAwsUnit(aws_ctx).destroy_plan()
    assert [c.kind for c in preview.changes] == [
        "ec2-instance",
        "security-group-rule",
        "security-group",
        "instance-profile",
        "iam-role",
        "pod-identity-association",
        "pod-identity-association",
        "iam-role",
        "iam-role",
        "rds-instance",
        "db-subnet-group",
        "security-group",
    ]
    assert rds.describe_db_instances()["DBInstances"]  # a preview deletes nothing

    plan = DagsterAwsUnit(aws_ctx).destroy()
    assert isinstance(plan, Plan)
    assert [c.kind for c in plan.changes] == [c.kind for c in preview.changes]
    (kept,) = [w for w in plan.warnings if "gpu-analysis" in w and "ECR" in w]
    assert "still holds 1 image" in kept and "batch-delete-image" in kept
    assert rds.describe_db_instances()["DBInstances"] == []
    assert rds.describe_db_subnet_groups()["DBSubnetGroups"] == []
    assert not ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [applied.db_sg_name]}]
    )["SecurityGroups"]
    for role_name in (applied.role_name, applied.run_role_name):
        with pytest.raises(iam.exceptions.NoSuchEntityException):
            iam.get_role(RoleName=role_name)
    # The tunnel: instance, group, profile and role gone; of EKS's group only our rule went.
    gone = ec2.describe_instances(InstanceIds=[tunnel["InstanceId"]])["Reservations"][0]
    assert gone["Instances"][0]["State"]["Name"] == "terminated"
    assert not ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [applied.tunnel_name]}]
    )["SecurityGroups"]
    assert iam.list_instance_profiles()["InstanceProfiles"] == []
    with pytest.raises(iam.exceptions.NoSuchEntityException):
        iam.get_role(RoleName=applied.tunnel_name)
    after = ec2.describe_security_groups(GroupIds=[cluster_sg])["SecurityGroups"][0]
    assert flat_rules(after) == flat_rules(before) - {("tcp", 443, 443, tunnel_sg)}
    assert ("tcp", 443, 443, tunnel_sg) in flat_rules(before)
    assert (
        eks.list_pod_identity_associations(clusterName=aws_ctx.spec.cluster_name)["associations"]
        == []
    )
    (snapshot,) = rds.describe_db_snapshots()["DBSnapshots"]
    assert snapshot["DBSnapshotIdentifier"].startswith(f"{applied.db_instance_id}-final-")
    assert any(snapshot["DBSnapshotIdentifier"] in w for w in plan.warnings)
    with pytest.raises(aws_ctx.aws.client("secretsmanager").exceptions.ResourceNotFoundException):
        aws_ctx.aws.client("secretsmanager").describe_secret(SecretId=secret)
    assert ecr.list_images(repositoryName="gpu-analysis")["imageIds"]

    ecr.batch_delete_image(repositoryName="gpu-analysis", imageIds=[{"imageTag": "v1"}])
    plan = DagsterAwsUnit(aws_ctx).destroy()
    assert [c.kind for c in plan.changes] == ["ecr-repository"]
    assert ecr.describe_repositories()["repositories"] == []


@dataclasses.dataclass(frozen=True)
class SpecWithDagster(ClusterSpec):
    """ClusterSpec with the `dagster_aws` field the composition root is to carry."""

    dagster_aws: DagsterAwsSpec = dataclasses.field(default_factory=DagsterAwsSpec)


def test_deletion_protection_keeps_the_database_and_says_how_to_remove_it(aws, said):
    ctx = UnitContext(
        spec=SpecWithDagster(dagster_aws=DagsterAwsSpec(deletion_protection=True)), aws=aws
    )
    ctx.log = said
    upstream(ctx)
    DagsterAwsUnit(ctx).apply()
    rds = aws.client("rds")
    plan = DagsterAwsUnit(ctx).destroy()
    assert {c.kind for c in plan.changes} == {
        "pod-identity-association",
        "iam-role",
        "ecr-repository",
        # The tunnel goes; only the database and what it uses stay.
        "ec2-instance",
        "security-group-rule",
        "security-group",
        "instance-profile",
    }
    assert [c.name for c in plan.changes if c.kind == "security-group"] == [
        DagsterAwsUnit(ctx).tunnel_name
    ]
    (warning,) = [w for w in plan.warnings if "deletion protection" in w]
    assert "DagsterAwsSpec.deletion_protection" in warning
    assert rds.describe_db_instances()["DBInstances"][0]["DeletionProtection"] is True
    assert rds.describe_db_subnet_groups()["DBSubnetGroups"]


# --- the local RDS ----------------------------------------------------------------------------


def test_the_local_rds_creates_and_deletes_over_time_and_keeps_what_an_instance_uses(
    aws_ctx, aws_server
):
    """devtools.local_aws: `creating` before `available`, `deleting` before gone (RDS User
    Guide, DB instance status), and the subnet group and security group stay in use meanwhile."""
    aws_server.configure(db_instance_transition_s=1.0)
    ids = upstream(aws_ctx)
    rds, ec2 = aws_ctx.aws.client("rds"), aws_ctx.aws.client("ec2")
    sg = ec2.create_security_group(
        GroupName="db", Description="db", VpcId=ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    )["GroupId"]
    rds.create_db_subnet_group(
        DBSubnetGroupName="g",
        DBSubnetGroupDescription="g",
        SubnetIds=[v for k, v in ids.items() if k.startswith("database-")],
    )
    rds.create_db_instance(
        DBInstanceIdentifier="db",
        Engine="postgres",
        DBInstanceClass="db.t4g.micro",
        AllocatedStorage=20,
        DBSubnetGroupName="g",
        VpcSecurityGroupIds=[sg],
        MasterUsername="u",
        ManageMasterUserPassword=True,
    )

    def status() -> str:
        return rds.describe_db_instances(DBInstanceIdentifier="db")["DBInstances"][0][
            "DBInstanceStatus"
        ]

    assert status() == "creating"
    time.sleep(1.1)
    assert status() == "available"

    rds.delete_db_instance(DBInstanceIdentifier="db", SkipFinalSnapshot=True)
    assert status() == "deleting"
    with pytest.raises(rds.exceptions.ClientError, match="InvalidDBSubnetGroupStateFault"):
        rds.delete_db_subnet_group(DBSubnetGroupName="g")
    with pytest.raises(ec2.exceptions.ClientError, match="DependencyViolation"):
        ec2.delete_security_group(GroupId=sg)
    with pytest.raises(rds.exceptions.ClientError, match="InvalidDBInstanceState"):
        rds.delete_db_instance(DBInstanceIdentifier="db", SkipFinalSnapshot=True)
    time.sleep(1.1)
    assert rds.describe_db_instances()["DBInstances"] == []
    rds.delete_db_subnet_group(DBSubnetGroupName="g")
    ec2.delete_security_group(GroupId=sg)
