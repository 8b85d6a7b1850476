"""IAM roles as the units declare them: trust policy, managed and inline policies, tags."""

from __future__ import annotations

import dataclasses
import json
import urllib.parse
from typing import Any

from botocore.exceptions import ClientError

from infra_assets.aws_access import is_not_found, tag_dict


@dataclasses.dataclass(frozen=True)
class RoleSpec:
    name: str
    trusted_service: str  # e.g. "eks.amazonaws.com", "pods.eks.amazonaws.com"
    managed_policies: tuple[str, ...] = ()
    inline_policies: tuple[tuple[str, dict[str, Any]], ...] = ()
    tags: tuple[tuple[str, str], ...] = ()
    # Pod Identity also needs sts:TagSession to pass the pod's session tags.
    trust_actions: tuple[str, ...] = ("sts:AssumeRole",)

    def trust_policy(self) -> dict[str, Any]:
        return {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": self.trusted_service},
                    "Action": list(self.trust_actions),
                }
            ],
        }

    def desired(self) -> dict[str, Any]:
        return {
            "trust_policy": canonical_policy(self.trust_policy()),
            "managed_policies": sorted(self.managed_policies),
            "inline_policies": {name: canonical_policy(doc) for name, doc in self.inline_policies},
            "tags": dict(self.tags),
        }


def observe_role(iam: Any, name: str) -> dict[str, Any] | None:
    """The role as the spec describes roles, plus `arn`; None when it does not exist."""
    try:
        role = iam.get_role(RoleName=name)["Role"]
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise
    attached = [
        p["PolicyArn"]
        for page in iam.get_paginator("list_attached_role_policies").paginate(RoleName=name)
        for p in page["AttachedPolicies"]
    ]
    inline = {}
    for page in iam.get_paginator("list_role_policies").paginate(RoleName=name):
        for policy_name in page["PolicyNames"]:
            document = iam.get_role_policy(RoleName=name, PolicyName=policy_name)
            inline[policy_name] = canonical_policy(_document(document["PolicyDocument"]))
    tags = role.get("Tags")
    if tags is None:
        tags = iam.list_role_tags(RoleName=name).get("Tags", [])
    return {
        "arn": role["Arn"],
        "trust_policy": canonical_policy(_document(role["AssumeRolePolicyDocument"])),
        "managed_policies": sorted(attached),
        "inline_policies": inline,
        "tags": tag_dict(tags),
    }


def ensure_role(iam: Any, spec: RoleSpec, observed: dict[str, Any] | None) -> str:
    """Create the role or bring it to the spec; returns its ARN."""
    tags = [{"Key": k, "Value": v} for k, v in spec.tags]
    if observed is None:
        arn = iam.create_role(
            RoleName=spec.name,
            AssumeRolePolicyDocument=json.dumps(spec.trust_policy()),
            Tags=tags,
        )["Role"]["Arn"]
        observed = {"managed_policies": [], "inline_policies": {}, "tags": {}}
        iam.get_waiter("role_exists").wait(RoleName=spec.name, WaiterConfig={"Delay": 2})
    else:
        arn = observed["arn"]
        if observed["trust_policy"] != canonical_policy(spec.trust_policy()):
            iam.update_assume_role_policy(
                RoleName=spec.name, PolicyDocument=json.dumps(spec.trust_policy())
            )
        if any(observed["tags"].get(k) != v for k, v in spec.tags):
            iam.tag_role(RoleName=spec.name, Tags=tags)
    for policy in sorted(set(spec.managed_policies) - set(observed["managed_policies"])):
        iam.attach_role_policy(RoleName=spec.name, PolicyArn=policy)
    # The role is ours: policies attached by hand are drift, and go.
    for policy in sorted(set(observed["managed_policies"]) - set(spec.managed_policies)):
        iam.detach_role_policy(RoleName=spec.name, PolicyArn=policy)
    for policy_name, document in spec.inline_policies:
        if observed["inline_policies"].get(policy_name) != canonical_policy(document):
            iam.put_role_policy(
                RoleName=spec.name, PolicyName=policy_name, PolicyDocument=json.dumps(document)
            )
    for policy_name in set(observed["inline_policies"]) - {n for n, _ in spec.inline_policies}:
        iam.delete_role_policy(RoleName=spec.name, PolicyName=policy_name)
    return arn


def delete_role(iam: Any, name: str) -> None:
    """Detach and delete everything on the role, then the role (callers checked ownership)."""
    try:
        for page in iam.get_paginator("list_attached_role_policies").paginate(RoleName=name):
            for policy in page["AttachedPolicies"]:
                iam.detach_role_policy(RoleName=name, PolicyArn=policy["PolicyArn"])
        for page in iam.get_paginator("list_role_policies").paginate(RoleName=name):
            for policy_name in page["PolicyNames"]:
                iam.delete_role_policy(RoleName=name, PolicyName=policy_name)
        for page in iam.get_paginator("list_instance_profiles_for_role").paginate(RoleName=name):
            for profile in page["InstanceProfiles"]:
                iam.remove_role_from_instance_profile(
                    InstanceProfileName=profile["InstanceProfileName"], RoleName=name
                )
        iam.delete_role(RoleName=name)
    except ClientError as exc:
        if not is_not_found(exc):
            raise


def _document(value: Any) -> dict[str, Any]:
    # IAM returns policy documents URL-encoded; boto3 decodes some of them, not all.
    if isinstance(value, str):
        return json.loads(urllib.parse.unquote(value))
    return value


def canonical_policy(document: dict[str, Any]) -> dict[str, Any]:
    """A policy in a form that compares equal however AWS re-serialised it."""

    def norm(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: norm(v) for k, v in sorted(value.items())}
        if isinstance(value, list):
            items = [norm(v) for v in value]
            if len(items) == 1 and not isinstance(items[0], dict):
                return items[0]  # ["x"] and "x" mean the same in a policy
            return sorted(items, key=lambda v: json.dumps(v, sort_keys=True))
        return value

    return norm(document)
