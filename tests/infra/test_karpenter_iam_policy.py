"""Karpenter's controller policy, held against terraform-aws-eks v21.15.1 and evaluated.

The policy is read back from IAM (moto over HTTP) after the unit applied it. Two checks:
- statement by statement it grants what upstream `modules/karpenter/policy.tf` grants, with the
  same condition keys and values (the HCL is reference text: read roughly with regexes);
- evaluated as IAM would, it lets Karpenter terminate, tag or delete only this cluster's
  instances, launch templates and instance profiles. moto implements no policy simulator
  (no iam:SimulateCustomPolicy), so `evaluate` below follows the IAM User Guide's "Policy
  evaluation logic" and "IAM JSON policy elements: Condition operators" for the operators the
  policy uses, and refuses any other operator rather than guess.
"""

from __future__ import annotations

import fnmatch
import json
import re
import urllib.parse
from typing import Any

import pytest

from infra_assets.units.karpenter_iam import KarpenterIamUnit
from tests.infra.test_karpenter_iam_apply import our_cluster
from tests.upstream.pinned import KARPENTER_POLICY_TF, upstream_text

ACCOUNT = "123456789012"  # moto's account
REGION = "eu-west-3"
OTHER_CLUSTER = "someone-elses-cluster"


# --- upstream, read from the HCL ------------------------------------------------------------


def upstream_statements(cluster: str, region: str, account: str) -> dict[str, dict[str, Any]]:
    """{sid: {"actions", "conditions", "resources" (None when not literal)}} of policy.tf."""
    text = upstream_text(KARPENTER_POLICY_TF)
    for ref, value in {
        "${var.cluster_name}": cluster,
        "${local.region}": region,
        "${local.partition}": "aws",
        "${local.account_id}": account,
    }.items():
        text = text.replace(ref, value)
    # Expressions used as condition values; ec2_sp_name is "ec2.amazonaws.com" in partition aws.
    expressions = {
        "var.cluster_name": cluster,
        "local.region": region,
        "local.ec2_sp_name": "ec2.amazonaws.com",
    }

    def items(body: str) -> list[str]:
        found = []
        for quoted, expression in re.findall(r'"([^"]*)"|\b((?:var|local)\.[a-z0-9_]+)', body):
            found.append(quoted if not expression else expressions[expression])
        return found

    sids = list(re.finditer(r'\bsid\s*=\s*"([^"]+)"', text))
    statements = {}
    for i, match in enumerate(sids):
        block = text[match.end() : sids[i + 1].start() if i + 1 < len(sids) else len(text)]
        actions = re.search(r"\bactions\s*=\s*\[(.*?)\]", block, re.S)
        resources = re.search(r"\bresources\s*=\s*\[(.*?)\]", block, re.S)
        conditions = set()
        for test, variable, values in re.findall(
            r'condition\s*\{\s*test\s*=\s*"([^"]+)"\s*variable\s*=\s*"([^"]+)"\s*'
            r"values\s*=\s*(?:distinct\()?\[(.*?)\]",
            block,
            re.S,
        ):
            conditions.add((test, variable, tuple(sorted(set(items(values))))))
        literal = resources is not None and re.fullmatch(r'(\s*"[^"]*"\s*,?)*\s*', resources[1])
        statements[match[1]] = {
            "actions": set(items(actions[1])),
            "conditions": conditions,
            "resources": set(items(resources[1])) if literal else None,
        }
    return statements


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def our_statements(policy: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result = {}
    for statement in policy["Statement"]:
        conditions = {
            (operator, key, tuple(sorted(as_list(values))))
            for operator, keys in statement.get("Condition", {}).items()
            for key, values in keys.items()
        }
        result[statement["Sid"]] = {
            "actions": set(as_list(statement["Action"])),
            "conditions": conditions,
            "resources": set(as_list(statement["Resource"])),
        }
    return result


@pytest.fixture
def applied_policy(aws_ctx, aws_server) -> dict[str, Any]:
    """The controller policy as IAM holds it after a real apply."""
    our_cluster(aws_ctx)
    # The policy is under test here, not the wait for IAM (test_karpenter_iam_apply.py).
    aws_server.configure(iam_propagation_s=0)
    unit = KarpenterIamUnit(aws_ctx)
    unit.apply()
    document = aws_ctx.aws.client("iam").get_role_policy(
        RoleName=unit.controller_role_name, PolicyName="KarpenterController"
    )["PolicyDocument"]
    if isinstance(document, str):
        document = json.loads(urllib.parse.unquote(document))
    return document


def test_the_controller_grants_no_action_upstream_does_not(aws_ctx, applied_policy):
    upstream = upstream_statements(aws_ctx.spec.cluster_name, REGION, ACCOUNT)
    upstream_actions = set().union(*(s["actions"] for s in upstream.values()))
    ours = our_statements(applied_policy)
    granted = set().union(*(s["actions"] for s in ours.values()))
    assert granted - upstream_actions == set()
    # And the reading of the HCL found what it should (a regex gone blind would pass the above).
    assert {"ec2:TerminateInstances", "iam:PassRole", "ec2:CreateTags"} <= upstream_actions
    assert len(upstream) == 17


def test_each_statement_has_upstream_actions_conditions_and_resources(aws_ctx, applied_policy):
    upstream = upstream_statements(aws_ctx.spec.cluster_name, REGION, ACCOUNT)
    ours = our_statements(applied_policy)
    assert set(ours) == set(upstream)
    for sid, theirs in upstream.items():
        assert ours[sid]["actions"] == theirs["actions"], sid
        assert ours[sid]["conditions"] == theirs["conditions"], sid
        if theirs["resources"] is not None:
            assert ours[sid]["resources"] == theirs["resources"], sid
    cluster = aws_ctx.spec.cluster_name
    # Where upstream names a resource by an expression, ours is that one resource.
    assert ours["AllowPassingInstanceRole"]["resources"] == {
        f"arn:aws:iam::{ACCOUNT}:role/KarpenterNode-{cluster}"
    }
    assert ours["AllowInterruptionQueueActions"]["resources"] == {
        f"arn:aws:sqs:{REGION}:{ACCOUNT}:{KarpenterIamUnit(aws_ctx).queue_name}"
    }
    assert ours["AllowAPIServerEndpointDiscovery"]["resources"] == {
        f"arn:aws:eks:{REGION}:{ACCOUNT}:cluster/{cluster}"
    }


def test_every_mutating_action_carries_upstreams_condition_keys(aws_ctx, applied_policy):
    """Action by action: the same sets of condition keys as upstream, for every grant of it."""
    upstream = upstream_statements(aws_ctx.spec.cluster_name, REGION, ACCOUNT)
    ours = our_statements(applied_policy)

    def keys_by_action(statements: dict[str, dict[str, Any]]) -> dict[str, set]:
        result: dict[str, set] = {}
        for statement in statements.values():
            keys = frozenset((test, variable) for test, variable, _ in statement["conditions"])
            for action in statement["actions"]:
                if not re.match(r"\w+:(Describe|Get|List)", action):
                    result.setdefault(action, set()).add(keys)
        return result

    assert keys_by_action(ours) == keys_by_action(upstream)


# --- evaluation -------------------------------------------------------------------------------


def _like(value: str, pattern: str) -> bool:
    # IAM wildcards: * any run of characters (":" and "/" included), ? one character.
    return fnmatch.fnmatchcase(value, pattern)


def _condition_holds(operator: str, key: str, expected: Any, context: dict[str, Any]) -> bool:
    expected = as_list(expected)
    if operator.startswith("ForAllValues:"):
        # Every value in the request is among the expected; no values at all also passes.
        inner = operator.removeprefix("ForAllValues:")
        return all(
            _condition_holds(inner, key, expected, {key: v}) for v in as_list(context.get(key, []))
        )
    if_exists = operator.endswith("IfExists")
    operator = operator.removesuffix("IfExists")
    if key not in context:
        return if_exists  # a missing key fails every operator but ...IfExists (and Null)
    actual = context[key]
    if operator == "StringEquals":
        return any(actual == e for e in expected)
    if operator == "StringLike":
        return any(_like(actual, e) for e in expected)
    raise AssertionError(f"the evaluator does not know condition operator {operator}")


def evaluate(policy: dict[str, Any], action: str, resource: str, context: dict[str, Any]) -> bool:
    """Allowed: some Allow statement matches action, resource and all its conditions (and no
    Deny does). An identity policy alone: no resource policy, boundary or SCP is involved."""

    def matches(statement: dict[str, Any]) -> bool:
        return (
            any(_like(action, a) for a in as_list(statement["Action"]))
            and any(_like(resource, r) for r in as_list(statement["Resource"]))
            and all(
                _condition_holds(operator, key, expected, context)
                for operator, keys in statement.get("Condition", {}).items()
                for key, expected in keys.items()
            )
        )

    statements = policy["Statement"]
    if any(s["Effect"] == "Deny" and matches(s) for s in statements):
        return False
    return any(s["Effect"] == "Allow" and matches(s) for s in statements)


def instance_tags(cluster: str) -> dict[str, str]:
    """The tags Karpenter v1 puts on an instance it launched for `cluster`."""
    return {
        f"kubernetes.io/cluster/{cluster}": "owned",
        "eks:eks-cluster-name": cluster,
        "karpenter.sh/nodepool": "gpu-inference",
        "karpenter.sh/nodeclaim": "gpu-inference-abcde",
        "karpenter.k8s.aws/ec2nodeclass": "gpu",
    }


def resource_context(tags: dict[str, str]) -> dict[str, str]:
    return {"aws:RequestedRegion": REGION} | {f"aws:ResourceTag/{k}": v for k, v in tags.items()}


def request_context(tags: dict[str, str], **extra: Any) -> dict[str, Any]:
    return (
        {"aws:RequestedRegion": REGION, "aws:TagKeys": sorted(tags)}
        | {f"aws:RequestTag/{k}": v for k, v in tags.items()}
        | extra
    )


def test_karpenter_cannot_terminate_or_retag_another_clusters_instance(aws_ctx, applied_policy):
    cluster = aws_ctx.spec.cluster_name
    instance = f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-0123456789abcdef0"
    template = f"arn:aws:ec2:{REGION}:{ACCOUNT}:launch-template/lt-0123456789abcdef0"
    theirs = resource_context(instance_tags(OTHER_CLUSTER))
    mine = resource_context(instance_tags(cluster))
    untagged = resource_context({})

    for action, arn in (
        ("ec2:TerminateInstances", instance),
        ("ec2:DeleteLaunchTemplate", template),
    ):
        assert not evaluate(applied_policy, action, arn, theirs), action
        assert not evaluate(applied_policy, action, arn, untagged), action
        assert evaluate(applied_policy, action, arn, mine), action

    rename = {"Name": "x"}
    assert not evaluate(
        applied_policy, "ec2:CreateTags", instance, theirs | request_context(rename)
    )
    assert evaluate(applied_policy, "ec2:CreateTags", instance, mine | request_context(rename))
    # Even on its own instance it may not move it to another cluster.
    steal = {f"kubernetes.io/cluster/{OTHER_CLUSTER}": "owned"}
    assert not evaluate(applied_policy, "ec2:CreateTags", instance, mine | request_context(steal))


def test_karpenter_launches_only_what_it_tags_for_this_cluster(aws_ctx, applied_policy):
    cluster = aws_ctx.spec.cluster_name
    instance = f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/*"
    launch = instance_tags(cluster)
    assert evaluate(applied_policy, "ec2:RunInstances", instance, request_context(launch))
    assert not evaluate(
        applied_policy, "ec2:RunInstances", instance, request_context(instance_tags(OTHER_CLUSTER))
    )
    assert not evaluate(applied_policy, "ec2:RunInstances", instance, request_context({}))
    # Tags may be set at creation only by the create call itself.
    assert evaluate(
        applied_policy,
        "ec2:CreateTags",
        instance,
        request_context(launch, **{"ec2:CreateAction": "RunInstances"}),
    )
    assert not evaluate(
        applied_policy,
        "ec2:CreateTags",
        instance,
        request_context(launch, **{"ec2:CreateAction": "CreateVolume"}),
    )


def test_instance_profiles_and_passrole_stay_within_this_cluster(aws_ctx, applied_policy):
    cluster = aws_ctx.spec.cluster_name
    profile = f"arn:aws:iam::{ACCOUNT}:instance-profile/{cluster}_123"
    profile_tags = {
        f"kubernetes.io/cluster/{cluster}": "owned",
        "eks:eks-cluster-name": cluster,
        "topology.kubernetes.io/region": REGION,
        "karpenter.k8s.aws/ec2nodeclass": "gpu",
    }
    other = {
        **{k.replace(cluster, OTHER_CLUSTER): v for k, v in profile_tags.items()},
        "eks:eks-cluster-name": OTHER_CLUSTER,
    }
    for action in (
        "iam:DeleteInstanceProfile",
        "iam:RemoveRoleFromInstanceProfile",
        "iam:AddRoleToInstanceProfile",
    ):
        assert evaluate(applied_policy, action, profile, resource_context(profile_tags)), action
        assert not evaluate(applied_policy, action, profile, resource_context(other)), action
        assert not evaluate(applied_policy, action, profile, resource_context({})), action
    assert evaluate(
        applied_policy, "iam:CreateInstanceProfile", profile, request_context(profile_tags)
    )
    assert not evaluate(applied_policy, "iam:CreateInstanceProfile", profile, request_context({}))

    node_role = f"arn:aws:iam::{ACCOUNT}:role/KarpenterNode-{cluster}"
    to_ec2 = {"iam:PassedToService": "ec2.amazonaws.com"}
    assert evaluate(applied_policy, "iam:PassRole", node_role, to_ec2)
    assert not evaluate(
        applied_policy, "iam:PassRole", node_role, {"iam:PassedToService": "lambda.amazonaws.com"}
    )
    admin = f"arn:aws:iam::{ACCOUNT}:role/Admin"
    assert not evaluate(applied_policy, "iam:PassRole", admin, to_ec2)
