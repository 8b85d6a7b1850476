"""gpu-karpenter-iam: Karpenter's roles, Pod Identity, node access entry and interruption queue."""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError

from infra_assets.aws_access import is_not_found, is_owned
from infra_assets.aws_iam import (
    RoleSpec,
    canonical_policy,
    delete_role,
    ensure_role,
    observe_role,
)
from infra_assets.manifests import karpenter_interruption_queue_name, karpenter_node_role_name
from infra_assets.plan import Change, Plan
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
        """Karpenter 1.x controller permissions, scoped to this cluster where AWS allows it."""
        cluster = self.spec.cluster_name
        queue_arn = f"arn:aws:sqs:{region}:{account}:{self.queue_name}"
        node_role_arn = f"arn:aws:iam::{account}:role/{self.node_role_name}"
        return {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "AllowScopedEC2",
                    "Effect": "Allow",
                    "Action": [
                        "ec2:CreateFleet",
                        "ec2:CreateLaunchTemplate",
                        "ec2:CreateTags",
                        "ec2:DeleteLaunchTemplate",
                        "ec2:RunInstances",
                        "ec2:TerminateInstances",
                    ],
                    "Resource": "*",
                    "Condition": {"StringEquals": {"aws:RequestedRegion": region}},
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
                        "ec2:DescribePlacementGroups",
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
                    "Action": [
                        "sqs:DeleteMessage",
                        "sqs:GetQueueUrl",
                        "sqs:ReceiveMessage",
                    ],
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
                    "Sid": "AllowInstanceProfileActions",
                    "Effect": "Allow",
                    "Action": [
                        "iam:AddRoleToInstanceProfile",
                        "iam:CreateInstanceProfile",
                        "iam:DeleteInstanceProfile",
                        "iam:GetInstanceProfile",
                        "iam:ListInstanceProfiles",
                        "iam:RemoveRoleFromInstanceProfile",
                        "iam:TagInstanceProfile",
                    ],
                    "Resource": f"arn:aws:iam::{account}:instance-profile/*",
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
        """ "ours", "absent", or "foreign" (a cluster of that name without our tag)."""
        try:
            cluster = self.aws.eks.describe_cluster(name=self.spec.cluster_name)["cluster"]
        except ClientError as exc:
            if is_not_found(exc):
                return "absent"
            raise
        return "ours" if is_owned(cluster.get("tags"), self.stack) else "foreign"

    def _cluster_exists(self) -> bool:
        """Our cluster exists: the only one we add associations and access entries to."""
        return self._cluster_ownership() == "ours"

    def _association(self) -> dict[str, Any] | None:
        summaries = self.aws.eks.list_pod_identity_associations(
            clusterName=self.spec.cluster_name,
            namespace=self._karpenter.namespace,
            serviceAccount=self._karpenter.service_account,
        )["associations"]
        if not summaries:
            return None
        return self.aws.eks.describe_pod_identity_association(
            clusterName=self.spec.cluster_name, associationId=summaries[0]["associationId"]
        )["association"]

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
            observed = observe_role(self.aws.iam, role.name)
            if observed is not None and not is_owned(observed["tags"], self.stack):
                conflicts.append(
                    f"IAM role {role.name} exists but is not ours; rename or remove it"
                )
                continue
            changes.append(
                self.compare(
                    "iam-role",
                    role.name,
                    None if observed is None else {k: observed[k] for k in role.desired()},
                    role.desired(),
                    observed["arn"] if observed else None,
                )
            )

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
        association_name = f"{self._karpenter.namespace}/{self._karpenter.service_account}"
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
            changes.append(Change("create", "pod-identity-association", association_name))
            changes.append(Change("create", "eks-access-entry", self.node_role_name))
        else:
            association = self._association()
            if association is not None:
                self._ids["association_id"] = association["associationId"]
            changes.append(
                self.compare(
                    "pod-identity-association",
                    association_name,
                    None
                    if association is None
                    else {"role": association.get("roleArn"), "tags": association.get("tags")},
                    {
                        "role": controller_role_arn,
                        "tags": self.tags("pod-identity/karpenter"),
                    },
                    association.get("associationArn") if association else None,
                )
            )
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
            role = next(r for r in self._roles(account, region).values() if r.name == change.name)
            ensure_role(self.aws.iam, role, observe_role(self.aws.iam, role.name))

        elif change.kind == "sqs-queue":
            attributes = self._queue_attributes(queue_arn)
            if change.action == "create":
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
                eks.create_pod_identity_association(
                    clusterName=self.spec.cluster_name,
                    namespace=self._karpenter.namespace,
                    serviceAccount=self._karpenter.service_account,
                    roleArn=role_arn,
                    tags=self.tags("pod-identity/karpenter"),
                )
            else:
                eks.update_pod_identity_association(
                    clusterName=self.spec.cluster_name,
                    associationId=self._ids["association_id"],
                    roleArn=role_arn,
                )
                if "tags" in diffs and change.resource_id:
                    eks.tag_resource(
                        resourceArn=change.resource_id, tags=self.tags("pod-identity/karpenter")
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
            eks.create_access_entry(
                clusterName=self.spec.cluster_name,
                principalArn=principal,
                type="EC2_LINUX",
                tags=self.tags("access-entry/karpenter-node"),
            )

    # --- destroy ----------------------------------------------------------------------------

    def destroy(self) -> Plan:
        account, region = self._account_region()
        deletes: list[Change] = []
        warnings: list[str] = []
        eks = self.aws.eks
        if self._cluster_exists():
            association = self._association()
            if association is not None and is_owned(association.get("tags"), self.stack):
                deletes.append(
                    Change(
                        "delete",
                        "pod-identity-association",
                        f"{association['namespace']}/{association['serviceAccount']}",
                        association["associationArn"],
                    )
                )
                eks.delete_pod_identity_association(
                    clusterName=self.spec.cluster_name,
                    associationId=association["associationId"],
                )
            principal = f"arn:aws:iam::{account}:role/{self.node_role_name}"
            entry = self._access_entry(principal)
            if entry is not None and is_owned(entry.get("tags"), self.stack):
                deletes.append(Change("delete", "eks-access-entry", self.node_role_name, principal))
                eks.delete_access_entry(clusterName=self.spec.cluster_name, principalArn=principal)

        for rule in self._karpenter.interruption_rules:
            live = self._rule(rule)
            if live is None:
                continue
            if not is_owned(live["tags"], self.stack):
                warnings.append(f"EventBridge rule {self.rule_name(rule)} is not ours: left alone")
                continue
            targets = self.aws.events.list_targets_by_rule(Rule=self.rule_name(rule))["Targets"]
            if targets:
                self.aws.events.remove_targets(
                    Rule=self.rule_name(rule), Ids=[t["Id"] for t in targets]
                )
            self.aws.events.delete_rule(Name=self.rule_name(rule))
            deletes.append(Change("delete", "eventbridge-rule", self.rule_name(rule), live["arn"]))

        queue = self._queue()
        if queue is not None:
            if is_owned(queue["tags"], self.stack):
                self.aws.sqs.delete_queue(QueueUrl=queue["url"])
                deletes.append(Change("delete", "sqs-queue", self.queue_name, queue["url"]))
            else:
                warnings.append(f"SQS queue {self.queue_name} is not ours: left alone")

        for role in self._roles(account, region).values():
            observed = observe_role(self.aws.iam, role.name)
            if observed is None:
                continue
            if not is_owned(observed["tags"], self.stack):
                warnings.append(f"IAM role {role.name} is not ours: left alone")
                continue
            delete_role(self.aws.iam, role.name)
            deletes.append(Change("delete", "iam-role", role.name, observed["arn"]))
        for change in deletes:
            self.log(f"{self.name}: {change}")
        return Plan(self.name, tuple(deletes), tuple(warnings))

    def outputs(self) -> dict[str, str]:
        account, region = self._account_region()
        association = self._association() if self._cluster_exists() else None
        return {
            "controller_role_arn": f"arn:aws:iam::{account}:role/{self.controller_role_name}",
            "node_role_name": self.node_role_name,
            "interruption_queue": self.queue_name,
            "interruption_queue_arn": f"arn:aws:sqs:{region}:{account}:{self.queue_name}",
            "pod_identity_association_id": (association or {}).get("associationId", ""),
        }
