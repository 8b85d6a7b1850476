"""gpu-karpenter-iam: Karpenter's roles, Pod Identity, node access entry and interruption queue."""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError

from infra_assets.aws_access import is_not_found, is_owned
from infra_assets.aws_iam import (
    RoleSpec,
    canonical_policy,
    create_after_principal_propagates,
    delete_instance_profile,
    delete_role,
    instance_profiles_tagged,
    plan_role,
    plan_role_delete,
)
from infra_assets.manifests import karpenter_interruption_queue_name, karpenter_node_role_name
from infra_assets.plan import Change, Plan
from infra_assets.pod_identity import PodIdentityAssociation, cluster_ownership
from infra_assets.spec.aws import InterruptionRuleSpec
from infra_assets.units.aws_unit import AwsUnit, UpstreamMissing, diffs_of


class KarpenterIamUnit(AwsUnit):
    """What the terraform karpenter module creates, declared for the Karpenter 1.8 controller."""

    name = "gpu-karpenter-iam"

    # --- the spec, as resources -------------------------------------------------------------

    @property
    def _karpenter(self):
        return self.spec.karpenter_iam

    @property
    def queue_name(self) -> str:
        return karpenter_interruption_queue_name(self.spec)

    @property
    def controller_role_name(self) -> str:
        return f"{self._karpenter.controller_role_prefix}-{self.spec.cluster_name}"

    @property
    def node_role_name(self) -> str:
        return karpenter_node_role_name(self.spec)

    def rule_name(self, rule: InterruptionRuleSpec) -> str:
        return f"{self.spec.cluster_name}-{rule.name}"

    @property
    def association(self) -> PodIdentityAssociation:
        """The controller's Pod Identity association."""
        return PodIdentityAssociation(
            self.spec.cluster_name,
            self._karpenter.namespace,
            self._karpenter.service_account,
            self.tags("pod-identity/karpenter"),
        )

    def _roles(self, account: str, region: str) -> dict[str, RoleSpec]:
        return {
            "controller": RoleSpec(
                name=self.controller_role_name,
                trusted_service="pods.eks.amazonaws.com",
                trust_actions=("sts:AssumeRole", "sts:TagSession"),
                inline_policies=(
                    ("KarpenterController", self._controller_policy(account, region)),
                ),
                tags=tuple(self.tags("iam-role/karpenter-controller").items()),
            ),
            "node": RoleSpec(
                name=self.node_role_name,
                trusted_service="ec2.amazonaws.com",
                managed_policies=self._karpenter.node_role_policies,
                tags=tuple(self.tags("iam-role/karpenter-node").items()),
            ),
        }

    def _controller_policy(self, account: str, region: str) -> dict[str, Any]:
        """Karpenter 1.x controller permissions, scoped to this cluster's tags.

        Statement by statement what terraform-aws-eks v21.15.1 `modules/karpenter/policy.tf`
        grants (tests/infra/test_karpenter_iam_policy.py holds the two side by side): Karpenter
        may launch only instances, fleets and launch templates that it tags for this cluster
        and a NodePool as it creates them, tag only those, and terminate or delete only what
        carries those tags; instance profiles likewise. Karpenter v1 sets these tags itself on
        everything it creates (`kubernetes.io/cluster/<cluster>: owned`,
        `eks:eks-cluster-name`, `karpenter.sh/nodepool`, `karpenter.sh/nodeclaim`,
        `karpenter.k8s.aws/ec2nodeclass`; karpenter.sh/docs/concepts/nodeclasses "spec.tags"),
        which is why the EC2NodeClass CRD refuses them in `spec.tags` (its CEL rules "tag
        contains a restricted tag matching ..."). EC2 reads are regional: Describe* accepts no
        resource or tag condition.
        """
        cluster = self.spec.cluster_name
        cluster_tag = f"kubernetes.io/cluster/{cluster}"
        queue_arn = f"arn:aws:sqs:{region}:{account}:{self.queue_name}"
        node_role_arn = f"arn:aws:iam::{account}:role/{self.node_role_name}"
        ec2 = f"arn:aws:ec2:{region}"
        instance_profiles = f"arn:aws:iam::{account}:instance-profile/*"
        launched = [
            f"{ec2}:*:fleet/*",
            f"{ec2}:*:instance/*",
            f"{ec2}:*:volume/*",
            f"{ec2}:*:network-interface/*",
            f"{ec2}:*:launch-template/*",
            f"{ec2}:*:spot-instances-request/*",
        ]
        request_tags_for_cluster = {
            f"aws:RequestTag/{cluster_tag}": "owned",
            "aws:RequestTag/eks:eks-cluster-name": cluster,
        }
        resource_tagged_for_cluster = {
            "StringEquals": {f"aws:ResourceTag/{cluster_tag}": "owned"},
            "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"},
        }
        return {
            "Version": "2012-10-17",
            "Statement": [
                {
                    # What an instance is launched from: AMIs, subnets, SGs are not ours to tag.
                    "Sid": "AllowScopedEC2InstanceAccessActions",
                    "Effect": "Allow",
                    "Action": ["ec2:RunInstances", "ec2:CreateFleet"],
                    "Resource": [
                        f"arn:aws:ec2:{region}::image/*",
                        f"arn:aws:ec2:{region}::snapshot/*",
                        f"{ec2}:*:security-group/*",
                        f"{ec2}:*:subnet/*",
                        f"{ec2}:*:capacity-reservation/*",
                    ],
                },
                {
                    "Sid": "AllowScopedEC2LaunchTemplateAccessActions",
                    "Effect": "Allow",
                    "Action": ["ec2:RunInstances", "ec2:CreateFleet"],
                    "Resource": f"{ec2}:*:launch-template/*",
                    "Condition": resource_tagged_for_cluster,
                },
                {
                    "Sid": "AllowScopedEC2InstanceActionsWithTags",
                    "Effect": "Allow",
                    "Action": ["ec2:RunInstances", "ec2:CreateFleet", "ec2:CreateLaunchTemplate"],
                    "Resource": [*launched, f"{ec2}:*:capacity-reservation/*"],
                    "Condition": {
                        "StringEquals": request_tags_for_cluster,
                        "StringLike": {"aws:RequestTag/karpenter.sh/nodepool": "*"},
                    },
                },
                {
                    "Sid": "AllowScopedResourceCreationTagging",
                    "Effect": "Allow",
                    "Action": "ec2:CreateTags",
                    "Resource": launched,
                    "Condition": {
                        "StringEquals": {
                            **request_tags_for_cluster,
                            "ec2:CreateAction": [
                                "RunInstances",
                                "CreateFleet",
                                "CreateLaunchTemplate",
                            ],
                        },
                        "StringLike": {"aws:RequestTag/karpenter.sh/nodepool": "*"},
                    },
                },
                {
                    # After launch Karpenter only names its instances and their NodeClaims.
                    "Sid": "AllowScopedResourceTagging",
                    "Effect": "Allow",
                    "Action": "ec2:CreateTags",
                    "Resource": f"{ec2}:*:instance/*",
                    "Condition": {
                        **resource_tagged_for_cluster,
                        "StringEqualsIfExists": {"aws:RequestTag/eks:eks-cluster-name": cluster},
                        "ForAllValues:StringEquals": {
                            "aws:TagKeys": [
                                "eks:eks-cluster-name",
                                "karpenter.sh/nodeclaim",
                                "Name",
                            ]
                        },
                    },
                },
                {
                    "Sid": "AllowScopedDeletion",
                    "Effect": "Allow",
                    "Action": ["ec2:TerminateInstances", "ec2:DeleteLaunchTemplate"],
                    "Resource": [f"{ec2}:*:instance/*", f"{ec2}:*:launch-template/*"],
                    "Condition": resource_tagged_for_cluster,
                },
                {
                    "Sid": "AllowRegionalReadActions",
                    "Effect": "Allow",
                    "Action": [
                        "ec2:DescribeAvailabilityZones",
                        "ec2:DescribeCapacityReservations",
                        "ec2:DescribeImages",
                        "ec2:DescribeInstances",
                        "ec2:DescribeInstanceTypeOfferings",
                        "ec2:DescribeInstanceTypes",
                        "ec2:DescribeLaunchTemplates",
                        "ec2:DescribeSecurityGroups",
                        "ec2:DescribeSpotPriceHistory",
                        "ec2:DescribeSubnets",
                    ],
                    "Resource": "*",
                    "Condition": {"StringEquals": {"aws:RequestedRegion": region}},
                },
                {
                    "Sid": "AllowSSMReadActions",
                    "Effect": "Allow",
                    "Action": "ssm:GetParameter",
                    "Resource": f"arn:aws:ssm:{region}::parameter/aws/service/*",
                },
                {
                    "Sid": "AllowPricingReadActions",
                    "Effect": "Allow",
                    "Action": "pricing:GetProducts",
                    "Resource": "*",
                },
                {
                    "Sid": "AllowInterruptionQueueActions",
                    "Effect": "Allow",
                    "Action": ["sqs:DeleteMessage", "sqs:GetQueueUrl", "sqs:ReceiveMessage"],
                    "Resource": queue_arn,
                },
                {
                    "Sid": "AllowPassingInstanceRole",
                    "Effect": "Allow",
                    "Action": "iam:PassRole",
                    "Resource": node_role_arn,
                    "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
                },
                {
                    "Sid": "AllowScopedInstanceProfileCreationActions",
                    "Effect": "Allow",
                    "Action": "iam:CreateInstanceProfile",
                    "Resource": instance_profiles,
                    "Condition": {
                        "StringEquals": {
                            **request_tags_for_cluster,
                            "aws:RequestTag/topology.kubernetes.io/region": region,
                        },
                        "StringLike": {"aws:RequestTag/karpenter.k8s.aws/ec2nodeclass": "*"},
                    },
                },
                {
                    "Sid": "AllowScopedInstanceProfileTagActions",
                    "Effect": "Allow",
                    "Action": "iam:TagInstanceProfile",
                    "Resource": instance_profiles,
                    "Condition": {
                        "StringEquals": {
                            f"aws:ResourceTag/{cluster_tag}": "owned",
                            "aws:ResourceTag/topology.kubernetes.io/region": region,
                            **request_tags_for_cluster,
                            "aws:RequestTag/topology.kubernetes.io/region": region,
                        },
                        "StringLike": {
                            "aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass": "*",
                            "aws:RequestTag/karpenter.k8s.aws/ec2nodeclass": "*",
                        },
                    },
                },
                {
                    "Sid": "AllowScopedInstanceProfileActions",
                    "Effect": "Allow",
                    "Action": [
                        "iam:AddRoleToInstanceProfile",
                        "iam:RemoveRoleFromInstanceProfile",
                        "iam:DeleteInstanceProfile",
                    ],
                    "Resource": instance_profiles,
                    "Condition": {
                        "StringEquals": {
                            f"aws:ResourceTag/{cluster_tag}": "owned",
                            "aws:ResourceTag/topology.kubernetes.io/region": region,
                        },
                        "StringLike": {"aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass": "*"},
                    },
                },
                {
                    "Sid": "AllowInstanceProfileReadActions",
                    "Effect": "Allow",
                    "Action": "iam:GetInstanceProfile",
                    "Resource": instance_profiles,
                },
                {
                    "Sid": "AllowUnscopedInstanceProfileListAction",
                    "Effect": "Allow",
                    "Action": "iam:ListInstanceProfiles",
                    "Resource": "*",
                },
                {
                    "Sid": "AllowAPIServerEndpointDiscovery",
                    "Effect": "Allow",
                    "Action": "eks:DescribeCluster",
                    "Resource": f"arn:aws:eks:{region}:{account}:cluster/{cluster}",
                },
            ],
        }

    def _queue_policy(self, queue_arn: str) -> dict[str, Any]:
        return {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "EventBridgeAndSqsSend",
                    "Effect": "Allow",
                    "Principal": {"Service": ["events.amazonaws.com", "sqs.amazonaws.com"]},
                    "Action": "sqs:SendMessage",
                    "Resource": queue_arn,
                },
                {
                    "Sid": "DenyHTTP",
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "sqs:*",
                    "Resource": queue_arn,
                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                },
            ],
        }

    def _queue_attributes(self, queue_arn: str) -> dict[str, str]:
        return {
            "MessageRetentionPeriod": str(self._karpenter.queue_message_retention_seconds),
            "SqsManagedSseEnabled": str(self._karpenter.queue_sqs_managed_sse).lower(),
            "Policy": json.dumps(self._queue_policy(queue_arn)),
        }

    def _comparable_queue_attributes(self, attributes: dict[str, str]) -> dict[str, Any]:
        # SQS hands the policy back re-serialised; compare its meaning, not its bytes.
        comparable: dict[str, Any] = {
            k: attributes.get(k) for k in ("MessageRetentionPeriod", "SqsManagedSseEnabled")
        }
        policy = attributes.get("Policy")
        comparable["Policy"] = canonical_policy(json.loads(policy)) if policy else None
        return comparable

    @staticmethod
    def _event_pattern(rule: InterruptionRuleSpec) -> dict[str, Any]:
        return {"source": [rule.source], "detail-type": [rule.detail_type]}

    # --- observe ----------------------------------------------------------------------------

    def _account_region(self) -> tuple[str, str]:
        account = self.aws.client("sts").get_caller_identity()["Account"]
        return account, self.aws.region

    def _queue(self) -> dict[str, Any] | None:
        try:
            url = self.aws.sqs.get_queue_url(QueueName=self.queue_name)["QueueUrl"]
        except ClientError as exc:
            if is_not_found(exc) or "NonExistentQueue" in str(exc):
                return None
            raise
        attributes = self.aws.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])[
            "Attributes"
        ]
        tags = self.aws.sqs.list_queue_tags(QueueUrl=url).get("Tags", {})
        return {"url": url, "attributes": attributes, "tags": tags}

    def _rule(self, rule: InterruptionRuleSpec) -> dict[str, Any] | None:
        events = self.aws.events
        try:
            live = events.describe_rule(Name=self.rule_name(rule))
        except ClientError as exc:
            if is_not_found(exc):
                return None
            raise
        targets = events.list_targets_by_rule(Rule=self.rule_name(rule))["Targets"]
        tags = events.list_tags_for_resource(ResourceARN=live["Arn"]).get("Tags", [])
        return {
            "arn": live["Arn"],
            "event_pattern": json.loads(live.get("EventPattern") or "{}"),
            "state": live.get("State"),
            "targets": sorted(t["Arn"] for t in targets),
            "tags": {t["Key"]: t["Value"] for t in tags},
        }

    def _cluster_ownership(self) -> str:
        return cluster_ownership(self.aws.eks, self.spec.cluster_name, self.stack)

    def _cluster_exists(self) -> bool:
        """Our cluster exists: the only one we add associations and access entries to."""
        return self._cluster_ownership() == "ours"

    def _access_entry(self, principal: str) -> dict[str, Any] | None:
        try:
            return self.aws.eks.describe_access_entry(
                clusterName=self.spec.cluster_name, principalArn=principal
            )["accessEntry"]
        except ClientError as exc:
            if is_not_found(exc):
                return None
            raise

    # --- plan -------------------------------------------------------------------------------

    def plan(self) -> Plan:
        account, region = self._account_region()
        changes: list[Change] = []
        conflicts: list[str] = []
        warnings: list[str] = []
        self._ids: dict[str, str] = {}

        for role in self._roles(account, region).values():
            change, conflict = plan_role(self.aws.iam, role, self.stack, self.compare)
            if conflict is not None:
                conflicts.append(conflict)
            else:
                changes.append(change)

        queue_arn = f"arn:aws:sqs:{region}:{account}:{self.queue_name}"
        queue = self._queue()
        desired_attributes = self._comparable_queue_attributes(self._queue_attributes(queue_arn))
        observed_queue = None
        if queue is not None:
            if not is_owned(queue["tags"], self.stack):
                conflicts.append(f"SQS queue {self.queue_name} exists but is not ours")
            else:
                observed_queue = {
                    "attributes": self._comparable_queue_attributes(queue["attributes"]),
                    "tags": queue["tags"],
                }
                self._ids["queue_url"] = queue["url"]
        changes.append(
            self.compare(
                "sqs-queue",
                self.queue_name,
                observed_queue,
                {"attributes": desired_attributes, "tags": self.tags("sqs-queue/interruption")},
                queue_arn if queue else None,
            )
        )

        for rule in self._karpenter.interruption_rules:
            live = self._rule(rule)
            if live is not None and not is_owned(live["tags"], self.stack):
                conflicts.append(f"EventBridge rule {self.rule_name(rule)} exists but is not ours")
                continue
            changes.append(
                self.compare(
                    "eventbridge-rule",
                    self.rule_name(rule),
                    None
                    if live is None
                    else {k: live[k] for k in ("event_pattern", "state", "targets", "tags")},
                    {
                        "event_pattern": self._event_pattern(rule),
                        "state": "ENABLED",
                        "targets": [queue_arn],
                        "tags": self.tags(f"eventbridge-rule/{rule.name}"),
                    },
                    live["arn"] if live else None,
                )
            )

        node_role_arn = f"arn:aws:iam::{account}:role/{self.node_role_name}"
        controller_role_arn = f"arn:aws:iam::{account}:role/{self.controller_role_name}"
        association = self.association
        ownership = self._cluster_ownership()
        if ownership == "foreign":
            conflicts.append(
                f"EKS cluster {self.spec.cluster_name} is not tagged as ours: no Pod Identity "
                "association or access entry is made in it"
            )
        elif ownership == "absent":
            warnings.append(
                f"EKS cluster {self.spec.cluster_name} does not exist yet: the Pod Identity "
                "association and the node access entry wait for gpu_eks"
            )
            changes.append(Change("create", "pod-identity-association", association.name))
            changes.append(Change("create", "eks-access-entry", self.node_role_name))
        else:
            observed = association.observe(self.aws.eks)
            if observed is not None:
                self._ids["association_id"] = observed["associationId"]
            changes.append(association.plan_change(self.compare, observed, controller_role_arn))
            entry = self._access_entry(node_role_arn)
            changes.append(
                self.compare(
                    "eks-access-entry",
                    self.node_role_name,
                    None if entry is None else {"type": entry.get("type")},
                    {"type": "EC2_LINUX"},
                    entry.get("accessEntryArn") if entry else None,
                )
            )
        self._account, self._region = account, region
        return Plan(self.name, tuple(changes), tuple(warnings), tuple(conflicts))

    # --- apply ------------------------------------------------------------------------------

    def _execute(self, change: Change) -> None:
        account, region = self._account, self._region
        queue_arn = f"arn:aws:sqs:{region}:{account}:{self.queue_name}"
        diffs = diffs_of(change)
        eks = self.aws.eks

        if change.kind == "iam-role":
            self.apply_role(
                next(r for r in self._roles(account, region).values() if r.name == change.name)
            )

        elif change.kind == "sqs-queue":
            attributes = self._queue_attributes(queue_arn)
            if change.action == "create":
                # CreateQueue is idempotent by name while the attributes are the same (SQS API
                # reference), so the standard client's re-send after a 5xx finds the queue.
                self._ids["queue_url"] = self.aws.sqs.create_queue(
                    QueueName=self.queue_name,
                    Attributes=attributes,
                    tags=self.tags("sqs-queue/interruption"),
                )["QueueUrl"]
            else:
                if "attributes" in diffs:
                    self.aws.sqs.set_queue_attributes(
                        QueueUrl=self._ids["queue_url"], Attributes=attributes
                    )
                if "tags" in diffs:
                    self.aws.sqs.tag_queue(
                        QueueUrl=self._ids["queue_url"], Tags=self.tags("sqs-queue/interruption")
                    )

        elif change.kind == "eventbridge-rule":
            rule = next(
                r for r in self._karpenter.interruption_rules if self.rule_name(r) == change.name
            )
            tags = [
                {"Key": k, "Value": v}
                for k, v in self.tags(f"eventbridge-rule/{rule.name}").items()
            ]
            # PutRule creates or updates by name, PutTargets by target Id: a re-send is harmless.
            arn = self.aws.events.put_rule(
                Name=change.name,
                EventPattern=json.dumps(self._event_pattern(rule)),
                State="ENABLED",
                Description=f"Karpenter interruption events for {self.spec.cluster_name}",
                Tags=tags,
            )["RuleArn"]
            if change.action == "update":
                self.aws.events.tag_resource(ResourceARN=arn, Tags=tags)
            live_targets = self.aws.events.list_targets_by_rule(Rule=change.name)["Targets"]
            stale = [t["Id"] for t in live_targets if t["Arn"] != queue_arn]
            if stale:
                self.aws.events.remove_targets(Rule=change.name, Ids=stale)
            if not any(t["Arn"] == queue_arn for t in live_targets):
                self.aws.events.put_targets(
                    Rule=change.name,
                    Targets=[{"Id": "KarpenterInterruptionQueue", "Arn": queue_arn}],
                )

        elif change.kind == "pod-identity-association":
            if not self._cluster_exists():
                raise UpstreamMissing(
                    f"gpu-karpenter-iam: EKS cluster {self.spec.cluster_name} does not exist; "
                    "materialize gpu_eks first"
                )
            role_arn = f"arn:aws:iam::{account}:role/{self.controller_role_name}"
            if change.action == "create":
                self.association.create(self.aws, role_arn, self.stack, self.log)
            else:
                self.association.update(
                    eks, self._ids["association_id"], role_arn, change, set(diffs)
                )

        elif change.kind == "eks-access-entry":
            if not self._cluster_exists():
                raise UpstreamMissing(
                    f"gpu-karpenter-iam: EKS cluster {self.spec.cluster_name} does not exist; "
                    "materialize gpu_eks first"
                )
            principal = f"arn:aws:iam::{account}:role/{self.node_role_name}"
            if change.action == "update":
                # An access entry's type is fixed at creation.
                eks.delete_access_entry(clusterName=self.spec.cluster_name, principalArn=principal)
            self._create_access_entry(principal)

    def _create_access_entry(self, principal: str) -> str:
        """The node role's access entry, once, after IAM has propagated the role."""
        return create_after_principal_propagates(
            f"EKS access entry {self.node_role_name}",
            lambda: self.aws.once("eks").create_access_entry(
                clusterName=self.spec.cluster_name,
                principalArn=principal,
                type="EC2_LINUX",
                tags=self.tags("access-entry/karpenter-node"),
            )["accessEntry"]["accessEntryArn"],
            lambda: self._access_entry(principal),
            "accessEntryArn",
            self.stack,
            self.log,
        )

    # --- destroy ----------------------------------------------------------------------------

    def destroy_plan(self) -> Plan:
        """What teardown deletes, in order, and what it leaves alone; changes nothing."""
        account, region = self._account_region()
        deletes: list[Change] = []
        warnings: list[str] = []
        ownership = self._cluster_ownership()
        if ownership == "ours":
            association = self.association.observe(self.aws.eks)
            if association is not None and is_owned(association.get("tags"), self.stack):
                deletes.append(self.association.delete_change(association))
            principal = f"arn:aws:iam::{account}:role/{self.node_role_name}"
            entry = self._access_entry(principal)
            if entry is not None and is_owned(entry.get("tags"), self.stack):
                deletes.append(Change("delete", "eks-access-entry", self.node_role_name, principal))

        for rule in self._karpenter.interruption_rules:
            live = self._rule(rule)
            if live is None:
                continue
            if not is_owned(live["tags"], self.stack):
                warnings.append(f"EventBridge rule {self.rule_name(rule)} is not ours: left alone")
                continue
            deletes.append(Change("delete", "eventbridge-rule", self.rule_name(rule), live["arn"]))

        queue = self._queue()
        if queue is not None:
            if is_owned(queue["tags"], self.stack):
                deletes.append(Change("delete", "sqs-queue", self.queue_name, queue["url"]))
            else:
                warnings.append(f"SQS queue {self.queue_name} is not ours: left alone")

        if ownership == "foreign":
            warnings.append(
                f"EKS cluster {self.spec.cluster_name} is not ours: the instance profiles tagged "
                "for that name are its own and are left alone"
            )
        else:
            for name, arn, _roles in self._karpenter_instance_profiles(region):
                deletes.append(Change("delete", "iam-instance-profile", name, arn))

        for role in self._roles(account, region).values():
            change, warning = plan_role_delete(self.aws.iam, role.name, self.stack)
            if warning is not None:
                warnings.append(warning)
            elif change is not None:
                deletes.append(change)
        return Plan(self.name, tuple(deletes), tuple(warnings))

    def destroy(self, plan: Plan | None = None) -> Plan:
        """Carry out `destroy_plan()` (or the preview given): what it shows, in that order."""
        plan = plan if plan is not None else self.destroy_plan()
        eks = self.aws.eks
        _, region = self._account_region()
        profiles = {name: roles for name, _arn, roles in self._karpenter_instance_profiles(region)}
        for change in plan.changes:
            self.log(f"{self.name}: {change}")
            if change.kind == "pod-identity-association":
                live = self.association.observe(eks)
                if live is not None:
                    self.association.delete(eks, live["associationId"])
            elif change.kind == "eks-access-entry":
                eks.delete_access_entry(
                    clusterName=self.spec.cluster_name, principalArn=change.resource_id
                )
            elif change.kind == "eventbridge-rule":
                targets = self.aws.events.list_targets_by_rule(Rule=change.name)["Targets"]
                if targets:
                    self.aws.events.remove_targets(Rule=change.name, Ids=[t["Id"] for t in targets])
                self.aws.events.delete_rule(Name=change.name)
            elif change.kind == "sqs-queue":
                self.aws.sqs.delete_queue(QueueUrl=change.resource_id)
            elif change.kind == "iam-instance-profile":
                delete_instance_profile(self.aws.iam, change.name, profiles.get(change.name, []))
            elif change.kind == "iam-role":
                delete_role(self.aws.iam, change.name)
        return plan

    def _karpenter_instance_profiles(self, region: str) -> list[tuple[str, str, list[str]]]:
        """The instance profiles Karpenter made for this cluster's EC2NodeClasses.

        Karpenter v1 creates one per EC2NodeClass that names a `role` and tags it
        `kubernetes.io/cluster/<cluster>: owned`, `eks:eks-cluster-name: <cluster>`,
        `topology.kubernetes.io/region` and `karpenter.k8s.aws/ec2nodeclass` (the tags the
        controller policy demands on iam:CreateInstanceProfile). It deletes them when the
        EC2NodeClass goes, but not when the cluster is torn down under it: they leak. Only
        profiles carrying all of these tags for this cluster and region are ours to delete.
        """
        cluster = self.spec.cluster_name
        wanted = {
            f"kubernetes.io/cluster/{cluster}": "owned",
            "eks:eks-cluster-name": cluster,
            "topology.kubernetes.io/region": region,
        }
        return [
            (name, arn, roles)
            for name, arn, roles, _tags in instance_profiles_tagged(
                self.aws.iam, wanted, present=("karpenter.k8s.aws/ec2nodeclass",)
            )
        ]

    def outputs(self) -> dict[str, str]:
        account, region = self._account_region()
        association = self.association.observe(self.aws.eks) if self._cluster_exists() else None
        return {
            "controller_role_arn": f"arn:aws:iam::{account}:role/{self.controller_role_name}",
            "node_role_name": self.node_role_name,
            "interruption_queue": self.queue_name,
            "interruption_queue_arn": f"arn:aws:sqs:{region}:{account}:{self.queue_name}",
            "pod_identity_association_id": (association or {}).get("associationId", ""),
        }
