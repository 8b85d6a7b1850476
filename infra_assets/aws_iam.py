"""IAM roles as the units declare them: trust policy, managed and inline policies, tags."""

from __future__ import annotations

import dataclasses
import json
import time
import urllib.parse
from collections.abc import Callable
from typing import Any, TypeVar

from botocore.exceptions import ClientError

from infra_assets.aws_access import error_code, is_not_found, is_owned, poll_seconds, tag_dict
from infra_assets.idempotent import create_or_adopt
from infra_assets.plan import Change
from infra_assets.spec import OWNER_TAG

T = TypeVar("T")

# IAM is eventually consistent: a role is usable by other services only some seconds after
# CreateRole returns ("Changes that I make are not always immediately visible", IAM User Guide,
# troubleshooting). EKS then refuses it with InvalidParameterException. Usually seconds; this
# is the patience before the apply says so.
PRINCIPAL_PROPAGATION_TIMEOUT_S = 120.0


class PrincipalNotVisible(RuntimeError):
    """EKS kept refusing an IAM role as unknown for longer than IAM propagation takes."""


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


def plan_role(
    iam: Any,
    role: RoleSpec,
    stack: str,
    compare: Callable[..., Change],
    name: str | None = None,
) -> tuple[Change | None, str | None]:
    """The role's plan line (`compare`: `AwsUnit.compare`), named `name` (default: the role's
    name); resource_id is the live role's ARN. A role of that name that is not ours is a
    conflict instead: (None, the conflict line)."""
    observed = observe_role(iam, role.name)
    if observed is not None and not is_owned(observed["tags"], stack):
        return None, f"IAM role {role.name} exists but is not ours; rename or remove it"
    change = compare(
        "iam-role",
        name or role.name,
        None if observed is None else {k: observed[k] for k in role.desired()},
        role.desired(),
        observed["arn"] if observed else None,
    )
    return change, None


def plan_role_delete(
    iam: Any, role_name: str, stack: str, name: str | None = None
) -> tuple[Change | None, str | None]:
    """The teardown plan's line for the role, named `name` (default: the role's name), or the
    warning that a role of that name is not ours and is left alone; (None, None) when absent."""
    observed = observe_role(iam, role_name)
    if observed is None:
        return None, None
    if not is_owned(observed["tags"], stack):
        return None, f"IAM role {role_name} is not ours: left alone"
    return Change("delete", "iam-role", name or role_name, observed["arn"]), None


def ensure_role(
    iam: Any,
    spec: RoleSpec,
    observed: dict[str, Any] | None,
    iam_once: Any = None,
    log: Callable[[str], None] | None = None,
) -> str:
    """Create the role or bring it to the spec; returns its ARN.

    The create goes through `iam_once` (a client that does not re-send after a 5xx, see
    `AwsClients.once`) and `create_or_adopt`: CreateRole is not idempotent, so a create that
    succeeded behind an error would otherwise end in EntityAlreadyExists on the retry.
    """
    tags = [{"Key": k, "Value": v} for k, v in spec.tags]
    if observed is None:

        def create() -> str:
            return (iam_once or iam).create_role(
                RoleName=spec.name,
                AssumeRolePolicyDocument=json.dumps(spec.trust_policy()),
                Tags=tags,
            )["Role"]["Arn"]

        def find() -> str | None:
            found = observe_role(iam, spec.name)
            owner = dict(spec.tags).get(OWNER_TAG)
            if found is None or owner is None or found["tags"].get(OWNER_TAG) != owner:
                return None  # absent, or a role of that name that is not ours: never adopted
            return found["arn"]

        arn = create_or_adopt(f"IAM role {spec.name}", create, find, log)
        # Adopted or new, the role is brought to the spec below from what is there now.
        observed = observe_role(iam, spec.name) or {
            "managed_policies": [],
            "inline_policies": {},
            "tags": {},
        }
        iam.get_waiter("role_exists").wait(
            RoleName=spec.name, WaiterConfig={"Delay": max(1, round(poll_seconds(2.0)))}
        )
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


def is_principal_not_visible(exc: BaseException) -> bool:
    """EKS's answer for a role or principal that IAM has not propagated yet (or that is gone).

    Real accounts answer CreateAccessEntry / CreatePodIdentityAssociation / CreateCluster with
    400 InvalidParameterException naming the role or principal in the seconds after CreateRole.
    """
    if not isinstance(exc, ClientError) or error_code(exc) != "InvalidParameterException":
        return False
    message = exc.response.get("Error", {}).get("Message", "").lower()
    return "role" in message or "principal" in message


def retry_while_principal_propagates(
    what: str,
    call: Callable[[], T],
    log: Callable[[str], None] | None = None,
    timeout_s: float | None = None,
) -> T:
    """`call()`, sent again while EKS says the IAM role/principal is not there yet, bounded.

    Other errors pass through at once. After `timeout_s` the error says what to check.
    """
    if timeout_s is None:
        timeout_s = PRINCIPAL_PROPAGATION_TIMEOUT_S
    deadline = time.monotonic() + timeout_s
    delay_s = poll_seconds(2.0)
    while True:
        try:
            return call()
        except ClientError as exc:
            if not is_principal_not_visible(exc):
                raise
            message = exc.response.get("Error", {}).get("Message", "")
            if time.monotonic() + delay_s > deadline:
                raise PrincipalNotVisible(
                    f"{what}: EKS still refuses the IAM role after {timeout_s:g} s ({message}); "
                    "IAM changes usually propagate within seconds: check that the role exists "
                    "(aws iam get-role) and apply again"
                ) from exc
            if log is not None:
                log(f"{what}: IAM role not visible to EKS yet ({message}); retrying")
            time.sleep(delay_s)


def create_after_principal_propagates(
    what: str,
    create: Callable[[], str],
    observe: Callable[[], dict[str, Any] | None],
    id_key: str,
    stack: str,
    log: Callable[[str], None] | None = None,
) -> str:
    """`create()` (an EKS create naming an IAM role: sent again while IAM propagates the role)
    through `create_or_adopt`: after an unclear answer, what `observe()` finds is adopted (its
    `id_key`) only when it carries this stack's owner tag."""

    def find() -> str | None:
        found = observe()
        if found is None or not is_owned(found.get("tags"), stack):
            return None
        return found[id_key]

    return create_or_adopt(
        what, lambda: retry_while_principal_propagates(what, create, log), find, log
    )


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


def instance_profiles_tagged(iam: Any, wanted: dict[str, str], present: tuple[str, ...] = ()):
    """Instance profiles carrying every tag of `wanted` (exact values) and every key of `present`.

    Yields (name, arn, role names, tags). ListInstanceProfiles does not return tags (IAM API
    reference), so each profile's tags come from GetInstanceProfile.
    """
    for page in iam.get_paginator("list_instance_profiles").paginate():
        for listed in page["InstanceProfiles"]:
            try:
                profile = iam.get_instance_profile(
                    InstanceProfileName=listed["InstanceProfileName"]
                )["InstanceProfile"]
            except ClientError as exc:
                if is_not_found(exc):
                    continue  # deleted meanwhile
                raise
            tags = tag_dict(profile.get("Tags"))
            if all(tags.get(k) == v for k, v in wanted.items()) and all(k in tags for k in present):
                yield (
                    profile["InstanceProfileName"],
                    profile["Arn"],
                    [r["RoleName"] for r in profile.get("Roles", [])],
                    tags,
                )


def delete_instance_profile(iam: Any, name: str, role_names: list[str]) -> None:
    """Remove the roles from the profile, then delete it (callers checked whose it is)."""
    try:
        for role_name in role_names:
            iam.remove_role_from_instance_profile(InstanceProfileName=name, RoleName=role_name)
        iam.delete_instance_profile(InstanceProfileName=name)
    except ClientError as exc:
        if not is_not_found(exc):
            raise
