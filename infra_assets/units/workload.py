"""gpu-workload-aws: the match bucket, the workers' AWS identity (IAM role + Pod Identity), and
the SNS topic the infrastructure alerts go to.

The step pods run as the `gpu-analysis-worker` service account; EKS Pod Identity hands them
this unit's role, which reaches only the bucket's prefixes the workers use. That is the pods'
only way to AWS: the nodes' instance metadata keeps a hop limit of 1 (EC2NodeClass
metadataOptions in infra_assets/manifests.py), so a pod cannot borrow the node role. Keep it 1.

The alerts topic, "<cluster name>-alerts", is the staging profile's `alert_sink`
(infra_assets.alerts publishes drift findings and failed infra runs to it). It is encrypted with
the AWS-managed key alias/aws/sns and its policy lets only this account publish. Who hears the
alerts is the operators' business: subscribe an email, a pager or a queue to the topic yourself.
This unit neither creates nor removes subscriptions; teardown deletes the topic, and SNS deletes
its subscriptions with it.
"""

from __future__ import annotations

import json
import time
from typing import Any

from botocore.exceptions import ClientError

from infra_assets.aws_access import (
    backoff_seconds,
    error_code,
    is_not_found,
    is_owned,
    tag_dict,
    tag_list,
)
from infra_assets.aws_iam import (
    RoleSpec,
    delete_role,
    plan_role,
    plan_role_delete,
)
from infra_assets.idempotent import LOOKUPS_PER_ATTEMPT, create_or_adopt
from infra_assets.plan import Change, Plan, exact
from infra_assets.pod_identity import PodIdentityAssociation, cluster_ownership
from infra_assets.spec.aws import WorkloadSpec
from infra_assets.units.aws_unit import AwsUnit, PlanConflict, UpstreamMissing, diffs_of
from video_assets.layout import MatchLayout
from video_assets.pod_specs import WORKER_SERVICE_ACCOUNT

# S3 answers these for a bucket name held by another account (403) or by nobody (404).
_BUCKET_ELSEWHERE = ("403", "AccessDenied", "AllAccessDisabled")
# SNS answers a topic ARN that does not exist with NotFound (the API reference's
# NotFoundException, HTTP 404).
_TOPIC_NOT_FOUND = ("NotFound", "NotFoundException")
_BUCKET_KEPT = (
    "S3 bucket {bucket} still holds match data (incoming videos, results): kept; empty it (all "
    "versions) and tear down again to delete it"
)


def workload_spec(spec: Any) -> WorkloadSpec:
    # ClusterSpec.workload once the composition root carries it; the defaults until then.
    return getattr(spec, "workload", None) or WorkloadSpec()


def match_bucket_name(spec: Any) -> str:
    """The profile's `bucket`, else "<cluster name>-matches" (how staging names it)."""
    return workload_spec(spec).bucket or f"{spec.cluster_name}-matches"


def alerts_topic_name(spec: Any) -> str:
    """The SNS topic of the infrastructure alerts: "<cluster name>-alerts", the topic the staging
    profile's `alert_sink` names."""
    return f"{spec.cluster_name}-alerts"


def bucket_prefixes(bucket: str) -> dict[str, str]:
    """The key prefixes of the match layout (video_assets.layout owns them): incoming/, work/,
    results/."""
    layout = MatchLayout(f"s3://{bucket}")
    root = f"s3://{bucket}/"

    def key(uri: str) -> str:
        return uri.removeprefix(root).rstrip("/") + "/"

    return {
        "incoming": key(layout.incoming_uri),
        "work": key(layout.work_root_uri("m").rsplit("/", 1)[0]),
        "results": key(layout.results_uri),
    }


class WorkloadAwsUnit(AwsUnit):
    """The bucket the matches flow through, the role the step pods reach it with, and the topic
    the infrastructure alerts are published to."""

    name = "gpu-workload-aws"

    # --- the spec, as resources -------------------------------------------------------------

    @property
    def _workload(self) -> WorkloadSpec:
        return workload_spec(self.spec)

    @property
    def bucket(self) -> str:
        return match_bucket_name(self.spec)

    @property
    def namespace(self) -> str:
        # The restricted namespace the step pods run in (the profile's `namespace`); the infra
        # spec names it as Cilium's workload namespace.
        return self.spec.cilium.workload_namespaces[0]

    @property
    def service_account(self) -> str:
        return WORKER_SERVICE_ACCOUNT

    @property
    def association(self) -> PodIdentityAssociation:
        """The workers' Pod Identity association."""
        return PodIdentityAssociation(
            self.spec.cluster_name,
            self.namespace,
            self.service_account,
            self.tags("pod-identity/worker"),
        )

    @property
    def role_name(self) -> str:
        return f"{self._workload.worker_role_prefix}-{self.spec.cluster_name}"

    @property
    def topic_name(self) -> str:
        return alerts_topic_name(self.spec)

    def _role(self) -> RoleSpec:
        return RoleSpec(
            name=self.role_name,
            trusted_service="pods.eks.amazonaws.com",
            trust_actions=("sts:AssumeRole", "sts:TagSession"),
            inline_policies=(("MatchBucket", self._worker_policy()),),
            tags=tuple(self.tags("iam-role/worker").items()),
        )

    def _worker_policy(self) -> dict[str, Any]:
        """Least privilege on the match layout: read incoming/, read-write-delete work/ (a run's
        snapshot, shards, detections), write results/; list only those prefixes."""
        arn = f"arn:aws:s3:::{self.bucket}"
        prefixes = bucket_prefixes(self.bucket)
        incoming, work, results = prefixes["incoming"], prefixes["work"], prefixes["results"]
        return {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "ListMatchPrefixes",
                    "Effect": "Allow",
                    "Action": "s3:ListBucket",
                    "Resource": arn,
                    "Condition": {
                        "StringLike": {"s3:prefix": [f"{p}*" for p in (incoming, work, results)]}
                    },
                },
                {
                    "Sid": "ReadIncoming",
                    "Effect": "Allow",
                    "Action": "s3:GetObject",
                    "Resource": f"{arn}/{incoming}*",
                },
                {
                    "Sid": "ReadWriteWork",
                    "Effect": "Allow",
                    "Action": [
                        "s3:AbortMultipartUpload",
                        "s3:DeleteObject",
                        "s3:GetObject",
                        "s3:PutObject",
                    ],
                    "Resource": f"{arn}/{work}*",
                },
                {
                    "Sid": "WriteResults",
                    "Effect": "Allow",
                    "Action": ["s3:AbortMultipartUpload", "s3:PutObject"],
                    "Resource": f"{arn}/{results}*",
                },
            ],
        }

    def _bucket_desired(self) -> dict[str, Any]:
        workload = self._workload
        encryption: dict[str, Any] = {"SSEAlgorithm": workload.sse_algorithm}
        if workload.sse_algorithm == "aws:kms":
            encryption["BucketKeyEnabled"] = True
        return {
            "encryption": encryption,
            "public_access_block": {
                "BlockPublicAcls": True,
                "IgnorePublicAcls": True,
                "BlockPublicPolicy": True,
                "RestrictPublicBuckets": True,
            },
            "versioning": "Enabled",
            "lifecycle": self._lifecycle_rules(),
            "tags": self.tags("s3-bucket/matches"),
        }

    def _lifecycle_rules(self) -> list[dict[str, Any]]:
        workload = self._workload
        return [
            {
                "ID": "expire-work",
                "Filter": {"Prefix": bucket_prefixes(self.bucket)["work"]},
                "Status": "Enabled",
                "Expiration": {"Days": workload.work_expiration_days},
                "NoncurrentVersionExpiration": {"NoncurrentDays": 1},
                "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
            },
            {
                "ID": "expire-noncurrent-versions",
                "Filter": {"Prefix": ""},
                "Status": "Enabled",
                "NoncurrentVersionExpiration": {"NoncurrentDays": workload.noncurrent_version_days},
                "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
            },
        ]

    def _topic_desired(self, topic_arn: str) -> dict[str, Any]:
        # Keys are the SNS attribute names, so a drifted one is set back by its own name.
        return {
            "KmsMasterKeyId": self._workload.alerts_topic_kms_key,
            "Policy": exact(self._topic_policy(topic_arn)),
            "tags": self.tags("sns-topic/alerts"),
        }

    def _topic_policy(self, topic_arn: str) -> dict[str, Any]:
        """Publishing for principals of this account only (their IAM policies still decide which
        may), nobody else: no public or cross-account access. Managing the topic and its
        subscriptions needs no statement here: within one account IAM policies grant it."""
        return {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "PublishFromThisAccountOnly",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{self._account()}:root"},
                    "Action": "SNS:Publish",
                    "Resource": topic_arn,
                }
            ],
        }

    # --- observe ----------------------------------------------------------------------------

    def _bucket_state(self) -> str:
        """ "absent", "ours", "unowned" (in this account, without our tag) or "elsewhere"."""
        s3 = self.aws.client("s3")
        try:
            s3.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if is_not_found(exc) or error_code(exc) in ("404", "NoSuchBucket"):
                return "absent"
            if error_code(exc) in _BUCKET_ELSEWHERE:
                return "elsewhere"
            raise
        return "ours" if is_owned(self._bucket_tags(), self.stack) else "unowned"

    def _bucket_tags(self) -> dict[str, str]:
        try:
            return tag_dict(self.aws.client("s3").get_bucket_tagging(Bucket=self.bucket)["TagSet"])
        except ClientError as exc:
            if error_code(exc) == "NoSuchTagSet":
                return {}
            raise

    def _observe_bucket(self) -> dict[str, Any]:
        s3 = self.aws.client("s3")
        bucket = self.bucket

        def read(call, missing: str, default: Any) -> Any:
            try:
                return call()
            except ClientError as exc:
                if error_code(exc) == missing:
                    return default
                raise

        rules = read(
            lambda: s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"][
                "Rules"
            ],
            "ServerSideEncryptionConfigurationNotFoundError",
            [],
        )
        encryption = None
        if rules:
            default = rules[0].get("ApplyServerSideEncryptionByDefault", {})
            encryption = {"SSEAlgorithm": default.get("SSEAlgorithm")}
            if rules[0].get("BucketKeyEnabled"):
                encryption["BucketKeyEnabled"] = True
        lifecycle = read(
            lambda: s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"],
            "NoSuchLifecycleConfiguration",
            [],
        )
        return {
            "encryption": encryption,
            "public_access_block": read(
                lambda: s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"],
                "NoSuchPublicAccessBlockConfiguration",
                None,
            ),
            "versioning": s3.get_bucket_versioning(Bucket=bucket).get("Status", "Disabled"),
            "lifecycle": [self._comparable_rule(r) for r in lifecycle],
            "tags": self._bucket_tags(),
        }

    @staticmethod
    def _comparable_rule(rule: dict[str, Any]) -> dict[str, Any]:
        # S3 hands back the rules with its own defaults filled in; keep the fields we set.
        keys = (
            "ID",
            "Filter",
            "Status",
            "Expiration",
            "NoncurrentVersionExpiration",
            "AbortIncompleteMultipartUpload",
        )
        comparable = {k: rule[k] for k in keys if k in rule}
        if "Filter" in comparable:
            comparable["Filter"] = {"Prefix": comparable["Filter"].get("Prefix", "")}
        return comparable

    def _cluster_ownership(self) -> str:
        return cluster_ownership(self.aws.eks, self.spec.cluster_name, self.stack)

    def _association(self) -> dict[str, Any] | None:
        return self.association.observe(self.aws.eks)

    def _account(self) -> str:
        # One account per unit (its session's): asked once, not once per ARN.
        if getattr(self, "_account_id", None) is None:
            self._account_id = self.aws.client("sts").get_caller_identity()["Account"]
        return self._account_id

    def _role_arn(self) -> str:
        return f"arn:aws:iam::{self._account()}:role/{self.role_name}"

    def _topic_arn(self) -> str:
        return f"arn:aws:sns:{self.aws.region}:{self._account()}:{self.topic_name}"

    def _observe_topic(self, topic_arn: str) -> dict[str, Any] | None:
        """The topic's attributes we set and its tags, or None when there is no such topic."""
        sns = self.aws.client("sns")
        try:
            attributes = sns.get_topic_attributes(TopicArn=topic_arn)["Attributes"]
        except ClientError as exc:
            if error_code(exc) in _TOPIC_NOT_FOUND:
                return None
            raise
        policy = attributes.get("Policy")
        return {
            "KmsMasterKeyId": attributes.get("KmsMasterKeyId") or None,
            "Policy": json.loads(policy) if policy else None,
            "tags": tag_dict(sns.list_tags_for_resource(ResourceArn=topic_arn).get("Tags")),
        }

    # --- plan -------------------------------------------------------------------------------

    def plan(self) -> Plan:
        changes: list[Change] = []
        conflicts: list[str] = []
        warnings: list[str] = []

        state = self._bucket_state()
        if state == "elsewhere":
            conflicts.append(
                f"S3 bucket {self.bucket} belongs to another account; choose another bucket "
                "name in the profile (bucket names are global)"
            )
        elif state == "unowned":
            conflicts.append(
                f"S3 bucket {self.bucket} exists in this account but is not tagged as ours; "
                f"tag it {self.tags('s3-bucket/matches')} to adopt it, or choose another name"
            )
        else:
            changes.append(
                self.compare(
                    "s3-bucket",
                    self.bucket,
                    self._observe_bucket() if state == "ours" else None,
                    self._bucket_desired(),
                    f"arn:aws:s3:::{self.bucket}" if state == "ours" else None,
                )
            )

        change, conflict = plan_role(self.aws.iam, self._role(), self.stack, self.compare)
        if conflict is not None:
            conflicts.append(conflict)
        else:
            changes.append(change)

        association_name = self.association.name
        ownership = self._cluster_ownership()
        self._association_id = None
        if ownership == "foreign":
            conflicts.append(
                f"EKS cluster {self.spec.cluster_name} is not tagged as ours: no Pod Identity "
                "association is made in it"
            )
        elif ownership == "absent":
            warnings.append(
                f"EKS cluster {self.spec.cluster_name} does not exist yet: the workers' Pod "
                "Identity association waits for gpu_eks"
            )
            changes.append(Change("create", "pod-identity-association", association_name))
        else:
            association = self._association()
            if association is not None and not is_owned(association.get("tags"), self.stack):
                conflicts.append(
                    f"Pod Identity association {association_name} exists but is not ours"
                )
            else:
                if association is not None:
                    self._association_id = association["associationId"]
                changes.append(
                    self.association.plan_change(self.compare, association, self._role_arn())
                )

        topic_arn = self._topic_arn()
        topic = self._observe_topic(topic_arn)
        if topic is not None and not is_owned(topic["tags"], self.stack):
            conflicts.append(
                f"SNS topic {self.topic_name} exists but is not tagged as ours; tag it "
                f"{self.tags('sns-topic/alerts')} to adopt it, or remove it"
            )
        else:
            changes.append(
                self.compare(
                    "sns-topic",
                    self.topic_name,
                    topic,
                    self._topic_desired(topic_arn),
                    topic_arn if topic is not None else None,
                )
            )
        return Plan(self.name, tuple(changes), tuple(warnings), tuple(conflicts))

    # --- apply ------------------------------------------------------------------------------

    def _execute(self, change: Change) -> None:
        if change.kind == "s3-bucket":
            self._ensure_bucket(change)
        elif change.kind == "sns-topic":
            self._ensure_topic(change)
        elif change.kind == "iam-role":
            self.apply_role(self._role())
        elif change.kind == "pod-identity-association":
            if self._cluster_ownership() != "ours":
                raise UpstreamMissing(
                    f"{self.name}: EKS cluster {self.spec.cluster_name} does not exist; "
                    "materialize gpu_eks first"
                )
            role_arn = self._role_arn()
            if change.action == "create":
                self.association.create(self.aws, role_arn, self.stack, self.log)
            else:
                association_id = self._association_id or self._association()["associationId"]
                self.association.update(
                    self.aws.eks, association_id, role_arn, change, set(diffs_of(change))
                )

    def _ensure_topic(self, change: Change) -> None:
        topic_arn = self._topic_arn()
        desired = self._topic_desired(topic_arn)
        if change.action == "create":
            self._create_topic(topic_arn, desired)
            return
        sns = self.aws.client("sns")
        fields = diffs_of(change)
        for attribute in ("KmsMasterKeyId", "Policy"):
            if attribute in fields:
                sns.set_topic_attributes(
                    TopicArn=topic_arn,
                    AttributeName=attribute,
                    AttributeValue=_attribute_value(desired[attribute]),
                )
        if "tags" in fields:
            # Adds or overwrites our tags; tags an operator put on the topic stay.
            sns.tag_resource(ResourceArn=topic_arn, Tags=tag_list(desired["tags"]))

    def _create_topic(self, topic_arn: str, desired: dict[str, Any]) -> str:
        what = f"SNS topic {self.topic_name}"
        sns_once = self.aws.once("sns")

        def ours() -> str | None:
            found = self._observe_topic(topic_arn)
            return topic_arn if found is not None and is_owned(found["tags"], self.stack) else None

        def create() -> str:
            # CreateTopic is idempotent by name: "if the requester already owns a topic with the
            # specified name, that topic's ARN is returned without creating a new topic", and one
            # with other attributes or tags is refused with InvalidParameter (Amazon SNS API
            # Reference, CreateTopic: https://docs.aws.amazon.com/sns/latest/api/API_CreateTopic.html).
            # So re-sending it makes no second topic; the answer is still checked below.
            try:
                return sns_once.create_topic(
                    Name=self.topic_name,
                    Attributes={
                        name: _attribute_value(desired[name])
                        for name in ("KmsMasterKeyId", "Policy")
                    },
                    Tags=tag_list(desired["tags"]),
                )["TopicArn"]
            except ClientError as exc:
                if error_code(exc) == "InvalidParameter" and "already exists" in str(exc):
                    raise PlanConflict(
                        f"{self.name}: {what} was made by someone else since the plan ({exc}); "
                        "it is left alone: remove it, or tag it as ours, and apply again"
                    ) from exc
                raise

        create_or_adopt(what, create, ours, self.log)
        # The ARN CreateTopic answers may be a topic someone made between plan and apply (an
        # emulator does not refuse other tags as SNS does): adopt it only if it carries our tag.
        # Tags of a topic made a moment ago may take a moment to be listed.
        for lookup in range(1, LOOKUPS_PER_ATTEMPT + 1):
            if ours() is not None:
                return topic_arn
            if lookup < LOOKUPS_PER_ATTEMPT:
                time.sleep(backoff_seconds(lookup))
        raise PlanConflict(
            f"{self.name}: {what} exists but is not tagged as ours (made by someone else since "
            "the plan): it is left alone; remove it, or tag it as ours, and apply again"
        )

    def _ensure_bucket(self, change: Change) -> None:
        s3 = self.aws.client("s3")
        desired = self._bucket_desired()
        if change.action == "create":
            self._create_bucket()
            fields = set(desired)
        else:
            fields = set(diffs_of(change))
        if "tags" in fields:
            s3.put_bucket_tagging(Bucket=self.bucket, Tagging={"TagSet": tag_list(desired["tags"])})
        if "encryption" in fields:
            encryption = dict(desired["encryption"])
            bucket_key = encryption.pop("BucketKeyEnabled", False)
            s3.put_bucket_encryption(
                Bucket=self.bucket,
                ServerSideEncryptionConfiguration={
                    "Rules": [
                        {
                            "ApplyServerSideEncryptionByDefault": encryption,
                            "BucketKeyEnabled": bucket_key,
                        }
                    ]
                },
            )
        if "public_access_block" in fields:
            s3.put_public_access_block(
                Bucket=self.bucket, PublicAccessBlockConfiguration=desired["public_access_block"]
            )
        if "versioning" in fields:
            s3.put_bucket_versioning(
                Bucket=self.bucket, VersioningConfiguration={"Status": desired["versioning"]}
            )
        if "lifecycle" in fields:
            s3.put_bucket_lifecycle_configuration(
                Bucket=self.bucket, LifecycleConfiguration={"Rules": desired["lifecycle"]}
            )

    def _create_bucket(self) -> str:
        s3_once = self.aws.once("s3")
        region = self.aws.region

        def create() -> str:
            kwargs: dict[str, Any] = {"Bucket": self.bucket}
            if region != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
            s3_once.create_bucket(**kwargs)
            return self.bucket

        def find() -> str | None:
            # Tags come after CreateBucket (a separate call), so a create that succeeded behind
            # an error leaves an untagged, empty bucket of our name in this account: that one
            # is ours. One with objects or other tags is not adopted.
            if self._bucket_state() == "absent":
                return None
            tags = self._bucket_tags()
            if is_owned(tags, self.stack):
                return self.bucket
            if tags:
                return None
            listed = self.aws.client("s3").list_object_versions(Bucket=self.bucket, MaxKeys=1)
            empty = not listed.get("Versions") and not listed.get("DeleteMarkers")
            return self.bucket if empty else None

        return create_or_adopt(f"S3 bucket {self.bucket}", create, find, self.log)

    # --- destroy ----------------------------------------------------------------------------

    def destroy_plan(self) -> Plan:
        """What `destroy()` deletes, observed now; changes nothing.

        Only what carries this stack's tag: a bucket, role, topic or association of these names
        without it is listed as left alone. A bucket still holding match data is kept.
        """
        deletes: list[Change] = []
        warnings: list[str] = []
        if self._cluster_ownership() == "ours":
            association = self._association()
            if association is not None and is_owned(association.get("tags"), self.stack):
                deletes.append(self.association.delete_change(association))
            elif association is not None:
                warnings.append(f"{self.association.what} is not ours: left alone")

        change, warning = plan_role_delete(self.aws.iam, self.role_name, self.stack)
        if warning is not None:
            warnings.append(warning)
        elif change is not None:
            deletes.append(change)

        topic_arn = self._topic_arn()
        topic = self._observe_topic(topic_arn)
        if topic is not None:
            if is_owned(topic["tags"], self.stack):
                # Deleting the topic deletes its subscriptions; none is deleted otherwise.
                deletes.append(Change("delete", "sns-topic", self.topic_name, topic_arn))
            else:
                warnings.append(f"SNS topic {self.topic_name} is not ours: left alone")

        state = self._bucket_state()
        if state in ("unowned", "elsewhere"):
            warnings.append(f"S3 bucket {self.bucket} is not ours: left alone")
        elif state == "ours":
            if self._bucket_holds_data():
                warnings.append(_BUCKET_KEPT.format(bucket=self.bucket))
            else:
                deletes.append(
                    Change("delete", "s3-bucket", self.bucket, f"arn:aws:s3:::{self.bucket}")
                )
        return Plan(self.name, tuple(deletes), tuple(warnings))

    def destroy(self, plan: Plan | None = None) -> Plan:
        """Carry out a teardown plan (None: `destroy_plan()` now); returns what was deleted."""
        plan = self.destroy_plan() if plan is None else plan
        deleted: list[Change] = []
        warnings = list(plan.warnings)
        for change in plan.changes:
            self.log(f"{self.name}: {change}")
            if change.kind == "pod-identity-association":
                association = self._association()
                if association is None or association["associationArn"] != change.resource_id:
                    continue  # gone already
                self.association.delete(self.aws.eks, association["associationId"])
            elif change.kind == "iam-role":
                delete_role(self.aws.iam, change.name)
            elif change.kind == "sns-topic":
                self.aws.client("sns").delete_topic(TopicArn=change.resource_id)
            elif change.kind == "s3-bucket" and not self._delete_bucket_if_no_data():
                # Match data arrived since the plan: kept, as always.
                warnings.append(_BUCKET_KEPT.format(bucket=self.bucket))
                continue
            deleted.append(change)
        return Plan(self.name, tuple(deleted), tuple(warnings))

    def _bucket_holds_data(self) -> bool:
        s3 = self.aws.client("s3")
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=self.bucket):
            if page.get("Versions"):
                return True
        return False

    def _delete_bucket_if_no_data(self) -> bool:
        """Delete the bucket when no object version is left in it; data is never deleted here.

        Delete markers (what a delete leaves in a versioned bucket) are not data, but they keep
        S3 from deleting the bucket, so they go first.
        """
        s3 = self.aws.client("s3")
        markers = []
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=self.bucket):
            if page.get("Versions"):
                return False
            markers += [
                {"Key": m["Key"], "VersionId": m["VersionId"]}
                for m in page.get("DeleteMarkers", [])
            ]
        for start in range(0, len(markers), 1000):
            s3.delete_objects(
                Bucket=self.bucket, Delete={"Objects": markers[start : start + 1000], "Quiet": True}
            )
        s3.delete_bucket(Bucket=self.bucket)
        return True

    def outputs(self) -> dict[str, str]:
        association = self._association() if self._cluster_ownership() == "ours" else None
        return {
            "bucket": self.bucket,
            "bucket_uri": f"s3://{self.bucket}",
            "worker_role_arn": self._role_arn(),
            "worker_service_account": f"{self.namespace}/{self.service_account}",
            "pod_identity_association_id": (association or {}).get("associationId", ""),
            "alerts_topic_arn": self._topic_arn(),
        }


def _attribute_value(value: Any) -> str:
    # SNS attributes are strings; the policy is a JSON document.
    return value if isinstance(value, str) else json.dumps(value)
