"""gpu-workload-aws on the emulated account: the match bucket, the worker role, Pod Identity."""

from __future__ import annotations

import json
import urllib.parse

import pytest

from gpu_analysis.profile import load_profile
from infra_assets.aws_access import RESOURCE_TAG, tag_dict
from infra_assets.resources import cluster_spec_for
from infra_assets.spec import OWNER_TAG
from infra_assets.units.aws_unit import PlanConflict
from infra_assets.units.workload import WorkloadAwsUnit, alerts_topic_name, match_bucket_name
from tests.infra.test_karpenter_iam_apply import our_cluster
from tests.infra.test_karpenter_iam_policy import evaluate
from video_assets.layout import MatchLayout
from video_assets.pod_specs import WORKER_SERVICE_ACCOUNT


@pytest.fixture
def applied(aws_ctx) -> WorkloadAwsUnit:
    our_cluster(aws_ctx)
    unit = WorkloadAwsUnit(aws_ctx)
    unit.apply()
    return unit


def test_the_bucket_and_identity_are_the_ones_the_staging_profile_and_pods_use():
    profile = load_profile("staging")
    spec = cluster_spec_for(profile.aws_region, profile.cluster_name, profile.name)
    assert match_bucket_name(spec) == profile.bucket
    unit = WorkloadAwsUnit.__new__(WorkloadAwsUnit)
    unit.spec = spec
    assert (unit.namespace, unit.service_account) == (profile.namespace, WORKER_SERVICE_ACCOUNT)


def test_the_alerts_topic_is_the_one_the_staging_profile_sends_alerts_to():
    profile = load_profile("staging")
    spec = cluster_spec_for(profile.aws_region, profile.cluster_name, profile.name)
    # arn:aws:sns:<region>:<account>:<name>
    _, _, _, region, account, name = profile.alert_sink.split(":")
    assert (name, region, account) == (
        alerts_topic_name(spec),
        profile.aws_region,
        profile.aws_account_id,
    )


def test_apply_makes_a_private_encrypted_versioned_bucket_and_the_workers_identity(
    aws_ctx, applied
):
    s3, iam, eks = (aws_ctx.aws.client(s) for s in ("s3", "iam", "eks"))
    bucket = applied.bucket
    assert bucket == f"{aws_ctx.spec.cluster_name}-matches"

    (rule,) = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True,
    }
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    rules = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
    assert rules["expire-work"]["Filter"]["Prefix"] == "work/"
    assert rules["expire-work"]["Expiration"]["Days"] == 7
    tags = tag_dict(s3.get_bucket_tagging(Bucket=bucket)["TagSet"])
    assert tags[OWNER_TAG] == aws_ctx.spec.stack

    role = iam.get_role(RoleName=applied.role_name)["Role"]
    trust = role["AssumeRolePolicyDocument"]
    if isinstance(trust, str):
        trust = json.loads(urllib.parse.unquote(trust))
    (statement,) = trust["Statement"]
    assert statement["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    assert sorted(statement["Action"]) == ["sts:AssumeRole", "sts:TagSession"]

    (summary,) = eks.list_pod_identity_associations(clusterName=aws_ctx.spec.cluster_name)[
        "associations"
    ]
    assert (summary["namespace"], summary["serviceAccount"]) == (
        "gpu-analysis",
        WORKER_SERVICE_ACCOUNT,
    )
    association = eks.describe_pod_identity_association(
        clusterName=aws_ctx.spec.cluster_name, associationId=summary["associationId"]
    )["association"]
    assert association["roleArn"] == role["Arn"]

    plan = WorkloadAwsUnit(aws_ctx).plan()
    assert not plan.has_changes, plan.as_text()


def test_the_worker_role_reaches_only_the_prefixes_of_the_match_layout(aws_ctx, applied):
    iam = aws_ctx.aws.client("iam")
    document = iam.get_role_policy(RoleName=applied.role_name, PolicyName="MatchBucket")[
        "PolicyDocument"
    ]
    if isinstance(document, str):
        document = json.loads(urllib.parse.unquote(document))
    layout = MatchLayout(f"s3://{applied.bucket}")

    def arn(uri: str) -> str:
        return "arn:aws:s3:::" + uri.removeprefix("s3://")

    def allowed(action: str, uri: str) -> bool:
        return evaluate(document, action, arn(uri), {})

    video = layout.video_uri("m1")
    shard = layout.work_uri("m1", "run-1", "shards", "000.npz")
    result = layout.delivery_uri("m1", "report.json")
    assert allowed("s3:GetObject", video)
    assert not allowed("s3:PutObject", video)
    assert not allowed("s3:DeleteObject", video)
    for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject"):
        assert allowed(action, shard), action
    assert allowed("s3:PutObject", result)
    assert not allowed("s3:DeleteObject", result)
    assert not allowed("s3:GetObject", f"s3://{applied.bucket}/elsewhere/secret")
    assert not allowed("s3:GetObject", "s3://another-bucket/incoming/m1.mp4")
    assert not allowed("s3:DeleteBucket", f"s3://{applied.bucket}")

    bucket_arn = f"arn:aws:s3:::{applied.bucket}"
    assert evaluate(document, "s3:ListBucket", bucket_arn, {"s3:prefix": "work/m1/run-1/"})
    assert not evaluate(document, "s3:ListBucket", bucket_arn, {"s3:prefix": ""})


def test_drift_on_the_bucket_is_named_and_repaired(aws_ctx, applied):
    s3 = aws_ctx.aws.client("s3")
    bucket = applied.bucket
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    s3.delete_public_access_block(Bucket=bucket)
    s3.delete_bucket_lifecycle(Bucket=bucket)

    plan = WorkloadAwsUnit(aws_ctx).plan()
    (change,) = [c for c in plan.changes if c.kind == "s3-bucket"]
    assert change.action == "update"
    assert {d.path.split(".")[0] for d in change.diffs} == {
        "versioning",
        "public_access_block",
        "lifecycle",
    }
    WorkloadAwsUnit(aws_ctx).apply()
    assert not WorkloadAwsUnit(aws_ctx).plan().has_changes
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"


def test_a_bucket_or_role_of_that_name_that_is_not_ours_is_never_touched(aws_ctx):
    our_cluster(aws_ctx)
    s3, iam = aws_ctx.aws.client("s3"), aws_ctx.aws.client("iam")
    unit = WorkloadAwsUnit(aws_ctx)
    s3.create_bucket(
        Bucket=unit.bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-3"}
    )
    s3.put_object(Bucket=unit.bucket, Key="theirs.txt", Body=b"x")
    iam.create_role(RoleName=unit.role_name, AssumeRolePolicyDocument="{}")

    plan = unit.plan()
    assert any(unit.bucket in c and "not tagged as ours" in c for c in plan.conflicts)
    assert any(unit.role_name in c and "not ours" in c for c in plan.conflicts)
    with pytest.raises(PlanConflict):
        WorkloadAwsUnit(aws_ctx).apply()
    WorkloadAwsUnit(aws_ctx).destroy()

    assert s3.get_object(Bucket=unit.bucket, Key="theirs.txt")["Body"].read() == b"x"
    with pytest.raises(s3.exceptions.ClientError, match="NoSuchLifecycleConfiguration"):
        s3.get_bucket_lifecycle_configuration(Bucket=unit.bucket)
    assert iam.get_role(RoleName=unit.role_name)["Role"].get("Tags", []) == []
    with pytest.raises(iam.exceptions.ClientError):
        s3.get_bucket_tagging(Bucket=unit.bucket)  # still untagged: nothing was written


def test_teardown_removes_identity_and_an_empty_bucket_but_keeps_match_data(aws_ctx, applied):
    s3, iam, eks = (aws_ctx.aws.client(s) for s in ("s3", "iam", "eks"))
    bucket = applied.bucket
    s3.put_object(Bucket=bucket, Key="results/m1/report.json", Body=b"{}")

    plan = WorkloadAwsUnit(aws_ctx).destroy()
    assert {c.kind for c in plan.changes} == {"pod-identity-association", "iam-role", "sns-topic"}
    assert any("still holds match data" in w for w in plan.warnings)
    assert s3.get_object(Bucket=bucket, Key="results/m1/report.json")["Body"].read() == b"{}"
    assert (
        eks.list_pod_identity_associations(clusterName=aws_ctx.spec.cluster_name)["associations"]
        == []
    )
    with pytest.raises(iam.exceptions.NoSuchEntityException):
        iam.get_role(RoleName=applied.role_name)

    # Emptied (a versioned delete leaves a marker and the old version): the bucket goes.
    for version in s3.list_object_versions(Bucket=bucket).get("Versions", []):
        s3.delete_object(Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"])
    s3.delete_object(Bucket=bucket, Key="results/m1/other.json")  # leaves a delete marker only
    plan = WorkloadAwsUnit(aws_ctx).destroy()
    assert [c.kind for c in plan.changes] == ["s3-bucket"]
    assert bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


@pytest.mark.parametrize("action", ["CreateRole", "CreatePodIdentityAssociation"])
def test_an_unclear_create_answer_leaves_one_role_and_one_association(aws_ctx, aws_server, action):
    our_cluster(aws_ctx)
    aws_server.inject(action, "ambiguous")
    WorkloadAwsUnit(aws_ctx).apply()
    assert aws_server.pending_faults() == {}
    eks = aws_ctx.aws.client("eks")
    associations = eks.list_pod_identity_associations(clusterName=aws_ctx.spec.cluster_name)
    assert len(associations["associations"]) == 1
    assert not WorkloadAwsUnit(aws_ctx).plan().has_changes


# --- the alerts topic -------------------------------------------------------------------------


def topic_arn(aws_ctx) -> str:
    account = aws_ctx.aws.client("sts").get_caller_identity()["Account"]
    return f"arn:aws:sns:eu-west-3:{account}:{alerts_topic_name(aws_ctx.spec)}"


def topic_policy(sns, arn: str) -> dict:
    return json.loads(sns.get_topic_attributes(TopicArn=arn)["Attributes"]["Policy"])


def subscribe_a_queue(aws_ctx, arn: str) -> str:
    """An operator's subscription (a queue standing for a pager); returns its ARN."""
    sqs = aws_ctx.aws.client("sqs")
    queue_url = sqs.create_queue(QueueName="ops-pager")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    sns = aws_ctx.aws.client("sns")
    return sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=queue_arn)["SubscriptionArn"]


def subscriptions(aws_ctx, arn: str) -> list[str]:
    listed = aws_ctx.aws.client("sns").list_subscriptions_by_topic(TopicArn=arn)
    return [s["SubscriptionArn"] for s in listed["Subscriptions"]]


def test_apply_makes_an_encrypted_tagged_alerts_topic_only_this_account_may_publish_to(
    aws_ctx, applied
):
    sns = aws_ctx.aws.client("sns")
    arn = topic_arn(aws_ctx)
    assert applied.outputs()["alerts_topic_arn"] == arn
    attributes = sns.get_topic_attributes(TopicArn=arn)["Attributes"]
    assert attributes["KmsMasterKeyId"] == "alias/aws/sns"
    tags = tag_dict(sns.list_tags_for_resource(ResourceArn=arn)["Tags"])
    assert tags[OWNER_TAG] == aws_ctx.spec.stack
    assert tags[RESOURCE_TAG] == "sns-topic/alerts"

    account = arn.split(":")[4]
    (statement,) = topic_policy(sns, arn)["Statement"]
    assert statement == {
        "Sid": "PublishFromThisAccountOnly",
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
        "Action": "SNS:Publish",
        "Resource": arn,
    }

    plan = WorkloadAwsUnit(aws_ctx).plan()
    (change,) = [c for c in plan.changes if c.kind == "sns-topic"]
    assert change.action == "keep", plan.as_text()


def test_drift_on_the_alerts_topic_is_named_and_repaired_and_subscriptions_stay(aws_ctx, applied):
    sns = aws_ctx.aws.client("sns")
    arn = topic_arn(aws_ctx)
    subscription = subscribe_a_queue(aws_ctx, arn)
    public = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": "*", "Action": "SNS:Publish", "Resource": arn}
        ],
    }
    sns.set_topic_attributes(TopicArn=arn, AttributeName="KmsMasterKeyId", AttributeValue="")
    sns.set_topic_attributes(
        TopicArn=arn, AttributeName="Policy", AttributeValue=json.dumps(public)
    )

    plan = WorkloadAwsUnit(aws_ctx).plan()
    (change,) = [c for c in plan.changes if c.kind == "sns-topic"]
    assert change.action == "update"
    assert {d.path.split(".")[0] for d in change.diffs} == {"KmsMasterKeyId", "Policy"}
    WorkloadAwsUnit(aws_ctx).apply()

    assert not WorkloadAwsUnit(aws_ctx).plan().has_changes
    assert sns.get_topic_attributes(TopicArn=arn)["Attributes"]["KmsMasterKeyId"] == "alias/aws/sns"
    (statement,) = topic_policy(sns, arn)["Statement"]
    assert statement["Principal"] != "*"
    assert subscriptions(aws_ctx, arn) == [subscription]


def test_an_alerts_topic_of_that_name_that_is_not_ours_is_never_touched(aws_ctx):
    our_cluster(aws_ctx)
    sns = aws_ctx.aws.client("sns")
    arn = sns.create_topic(Name=alerts_topic_name(aws_ctx.spec))["TopicArn"]
    subscription = subscribe_a_queue(aws_ctx, arn)
    policy_before = topic_policy(sns, arn)

    plan = WorkloadAwsUnit(aws_ctx).plan()
    assert any(
        alerts_topic_name(aws_ctx.spec) in c and "not tagged as ours" in c for c in plan.conflicts
    )
    with pytest.raises(PlanConflict):
        WorkloadAwsUnit(aws_ctx).apply()
    preview = WorkloadAwsUnit(aws_ctx).destroy_plan()
    assert "sns-topic" not in {c.kind for c in preview.changes}
    assert any(alerts_topic_name(aws_ctx.spec) in w for w in preview.warnings)
    WorkloadAwsUnit(aws_ctx).destroy()

    attributes = sns.get_topic_attributes(TopicArn=arn)["Attributes"]
    assert "KmsMasterKeyId" not in attributes
    assert topic_policy(sns, arn) == policy_before
    assert sns.list_tags_for_resource(ResourceArn=arn)["Tags"] == []
    assert subscriptions(aws_ctx, arn) == [subscription]


def test_teardown_deletes_our_alerts_topic_and_with_it_its_subscriptions(aws_ctx, applied):
    sns = aws_ctx.aws.client("sns")
    arn = topic_arn(aws_ctx)
    subscribe_a_queue(aws_ctx, arn)

    preview = WorkloadAwsUnit(aws_ctx).destroy_plan()
    assert ("delete", "sns-topic", arn) in {
        (c.action, c.kind, c.resource_id) for c in preview.changes
    }
    assert sns.get_topic_attributes(TopicArn=arn)  # the preview deleted nothing

    plan = WorkloadAwsUnit(aws_ctx).destroy()
    assert [c.resource_id for c in plan.changes if c.kind == "sns-topic"] == [arn]
    assert sns.list_topics()["Topics"] == []
    assert sns.list_subscriptions()["Subscriptions"] == []
