"""Every rendered Karpenter and Cilium object against the real CRDs, CEL rules included."""

# The CRDs are the pinned upstream files (tests/upstream/pinned.py). Each probe below is an
# object the real API server refuses, with the rule or schema clause that refuses it; each was
# checked against the CRD text, not against our own idea of Karpenter.

from __future__ import annotations

import copy
from collections.abc import Callable

import kubernetes_validate
import pytest

from infra_assets import manifests
from infra_assets.spec import ClusterSpec
from tests.upstream import crd, pinned
from tests.upstream.crd import CustomResourceDefinition, InvalidObject
from tests.upstream.kube_cel import UnsupportedCel

SPEC = ClusterSpec()
UNIT = "test"
# Everything the in-cluster units apply besides Helm releases (cilium_objects includes
# network_policies); the built-in kinds among them are Kubernetes 1.32 objects, not CRDs.
RENDERED = [
    *manifests.nodepools(SPEC, UNIT),
    *manifests.node_classes(SPEC, UNIT),
    *manifests.cilium_objects(SPEC, UNIT),
]
BUILT_IN = [o for o in RENDERED if o["apiVersion"] == "v1"]
OBJECTS = [o for o in RENDERED if o["apiVersion"] != "v1"]
NODEPOOL = next(
    o for o in OBJECTS if o["metadata"]["name"] == "gpu-inference" and o["kind"] == "NodePool"
)
NODECLASS = next(o for o in OBJECTS if o["kind"] == "EC2NodeClass")
POLICY = next(o for o in OBJECTS if o["kind"] == "CiliumClusterwideNetworkPolicy")


def validate(obj: dict) -> crd.Verdict:
    return crd.validate(obj)


def edited(obj: dict, edit: Callable[[dict], object]) -> dict:
    changed = copy.deepcopy(obj)
    edit(changed["spec"])
    return changed


def requirements(spec: dict) -> list:
    return spec["template"]["spec"]["requirements"]


def labels(spec: dict) -> dict:
    return spec["template"]["metadata"]["labels"]


def ami(spec: dict) -> dict:
    return spec["amiSelectorTerms"][0]


def data_ebs(spec: dict) -> dict:
    return spec["blockDeviceMappings"][1]["ebs"]


def _ids(objects: list[dict]) -> list[str]:
    return [f"{o['kind']}/{o['metadata']['name']}" for o in objects]


@pytest.mark.parametrize("obj", OBJECTS, ids=_ids(OBJECTS))
def test_every_rendered_object_is_accepted_by_its_real_crd(obj):
    verdict = validate(obj)
    assert verdict.accepted, str(verdict)
    if obj["apiVersion"].startswith("karpenter"):
        assert verdict.rules_evaluated > 0  # the CEL rules ran, not only the schema


@pytest.mark.parametrize("obj", BUILT_IN, ids=_ids(BUILT_IN))
def test_every_rendered_built_in_object_is_valid_kubernetes_1_32(obj):
    kubernetes_validate.validate(obj, "1.32", strict=True)


def test_every_rendered_policy_is_among_the_validated_objects():
    names = {(o["kind"], o["metadata"]["name"]) for o in OBJECTS}
    policies = manifests.network_policies(SPEC, UNIT)
    assert {(p["kind"], p["metadata"]["name"]) for p in policies} <= names


def test_totals_of_what_was_validated(capsys):
    """The numbers the report quotes: objects, CEL rules run, transition rules left to updates."""
    kinds = {(o["apiVersion"].rpartition("/")[0], o["kind"]) for o in OBJECTS}
    assert kinds == set(crd.KINDS) - {("cilium.io", "CiliumNetworkPolicy")}
    verdicts = [validate(o) for o in OBJECTS]
    assert all(v.accepted for v in verdicts)
    evaluated = sum(v.rules_evaluated for v in verdicts)
    skipped = sum(v.transition_rules_skipped for v in verdicts)
    # NodePool: 3 transition rules (nodeClassRef group/kind, replicas) per pool.
    nodepools = sum(o["kind"] == "NodePool" for o in OBJECTS)
    assert skipped == 3 * nodepools
    with capsys.disabled():
        print(
            f"\n{len(OBJECTS)} objects accepted, {evaluated} CEL rule evaluations, "
            f"{skipped} transition rules not applicable on create"
        )


# (id, object, edit, what the API server says)
REJECTED = [
    # NodePool karpenter.sh/v1
    (
        "budget-nodes-10x",
        NODEPOOL,
        lambda s: s["disruption"]["budgets"].__setitem__(0, {"nodes": "10x"}),
        "budgets[0].nodes: '10x' does not match",
    ),
    (
        "budget-nodes-150-percent",
        NODEPOOL,
        lambda s: s["disruption"]["budgets"].__setitem__(0, {"nodes": "150%"}),
        "budgets[0].nodes: '150%' does not match",
    ),
    (
        "expire-after-in-days",
        NODEPOOL,
        lambda s: s["template"]["spec"].__setitem__("expireAfter", "60d"),
        "expireAfter: '60d' does not match",
    ),
    (
        "budget-duration-in-days",
        NODEPOOL,
        lambda s: s["disruption"]["budgets"][1].__setitem__("duration", "1d"),
        "budgets[1].duration: '1d' does not match",
    ),
    (
        "consolidate-after-in-words",
        NODEPOOL,
        lambda s: s["disruption"].__setitem__("consolidateAfter", "5 minutes"),
        "consolidateAfter: '5 minutes' does not match",
    ),
    (
        "v1beta1-policy-name",
        NODEPOOL,
        lambda s: s["disruption"].__setitem__("consolidationPolicy", "WhenUnderutilized"),
        '"WhenUnderutilized" is not one of',
    ),
    (
        "misplaced-consolidate-after",
        NODEPOOL,
        lambda s: s["template"]["spec"].__setitem__("consolidateAfter", "5m"),
        "template.spec.consolidateAfter: unknown field",
    ),
    (
        "consolidate-after-missing",
        NODEPOOL,
        lambda s: s["disruption"].pop("consolidateAfter"),
        "spec.disruption: 'consolidateAfter' is required",
    ),
    (
        "limit-not-a-quantity",
        NODEPOOL,
        lambda s: s["limits"].__setitem__("cpu", "a hundred"),
        "limits.cpu: 'a hundred' does not match",
    ),
    (
        "schedule-without-duration",
        NODEPOOL,
        lambda s: s["disruption"]["budgets"][1].pop("duration"),
        "'schedule' must be set with 'duration'",
    ),
    (
        "operator-in-with-no-values",
        NODEPOOL,
        lambda s: requirements(s).append(
            {"key": "karpenter.k8s.aws/instance-family", "operator": "In", "values": []}
        ),
        "requirements with operator 'In' must have a value defined",
    ),
    (
        "operator-in-values-absent",
        NODEPOOL,
        lambda s: requirements(s).append(
            {"key": "karpenter.k8s.aws/instance-family", "operator": "In"}
        ),
        "evaluation error: no such member in mapping: 'values'",
    ),
    (
        "gt-not-an-integer",
        NODEPOOL,
        lambda s: requirements(s).append(
            {"key": "karpenter.k8s.aws/instance-cpu", "operator": "Gt", "values": ["many"]}
        ),
        "evaluation error",
    ),
    (
        "min-values-above-values",
        NODEPOOL,
        lambda s: requirements(s)[0].__setitem__("minValues", 5),
        "requirements with 'minValues' must have at least that many values",
    ),
    (
        "requirement-on-hostname",
        NODEPOOL,
        lambda s: requirements(s).append(
            {"key": "kubernetes.io/hostname", "operator": "In", "values": ["a"]}
        ),
        'label domain "kubernetes.io" is restricted',
    ),
    (
        "template-label-nodepool",
        NODEPOOL,
        lambda s: labels(s).__setitem__("karpenter.sh/nodepool", "x"),
        'label "karpenter.sh/nodepool" is restricted',
    ),
    (
        "template-label-kubernetes-io",
        NODEPOOL,
        lambda s: labels(s).__setitem__("kubernetes.io/team", "x"),
        'label domain "kubernetes.io" is restricted',
    ),
    (
        "static-pool-with-cpu-limit",
        NODEPOOL,
        lambda s: s.__setitem__("replicas", 2),
        "only 'limits.nodes' is supported on static NodePools",
    ),
    (
        "weight-zero",
        NODEPOOL,
        lambda s: s.__setitem__("weight", 0),
        "spec.weight: 0 is below the minimum 1",
    ),
    (
        "taint-effect-unknown",
        NODEPOOL,
        lambda s: s["template"]["spec"]["taints"][0].__setitem__("effect", "Sometimes"),
        '"Sometimes" is not one of',
    ),
    # EC2NodeClass karpenter.k8s.aws/v1
    (
        "alias-and-id-terms",
        NODECLASS,
        lambda s: s["amiSelectorTerms"].append({"id": "ami-0123456789abcdef0"}),
        "'alias' is mutually exclusive",
    ),
    (
        "alias-and-id-in-one-term",
        NODECLASS,
        lambda s: ami(s).__setitem__("id", "ami-0123456789abcdef0"),
        "'id' is mutually exclusive",
    ),
    (
        "alias-without-version",
        NODECLASS,
        lambda s: ami(s).__setitem__("alias", "bottlerocket"),
        "'alias' is improperly formatted, must match the format 'family@version'",
    ),
    (
        "alias-unknown-family",
        NODECLASS,
        lambda s: ami(s).__setitem__("alias", "ubuntu@latest"),
        "family is not supported",
    ),
    (
        "windows-alias-pinned",
        NODECLASS,
        lambda s: ami(s).__setitem__("alias", "windows2022@v1"),
        "windows families may only specify version 'latest'",
    ),
    (
        "alias-with-other-family",
        NODECLASS,
        lambda s: s.__setitem__("amiFamily", "AL2023"),
        "amiFamily must be 'Bottlerocket' or 'Custom' when using a Bottlerocket alias",
    ),
    (
        "ami-id-without-family",
        NODECLASS,
        lambda s: s.__setitem__("amiSelectorTerms", [{"id": "ami-0123456789abcdef0"}]),
        "must specify amiFamily if amiSelectorTerms does not contain an alias",
    ),
    (
        "role-and-instance-profile",
        NODECLASS,
        lambda s: s.__setitem__("instanceProfile", "KarpenterNodeInstanceProfile"),
        "must specify exactly one of ['role', 'instanceProfile']",
    ),
    (
        "empty-subnet-term",
        NODECLASS,
        lambda s: s.__setitem__("subnetSelectorTerms", [{}]),
        "expected at least one, got none, ['tags', 'id']",
    ),
    (
        "subnet-id-and-tags",
        NODECLASS,
        lambda s: s.__setitem__("subnetSelectorTerms", [{"id": "subnet-1", "tags": {"a": "b"}}]),
        "'id' is mutually exclusive",
    ),
    (
        "tag-kubernetes-io-cluster",
        NODECLASS,
        lambda s: s["tags"].__setitem__("kubernetes.io/cluster/x", "owned"),
        "restricted tag matching kubernetes.io/cluster/",
    ),
    (
        "tag-nodepool",
        NODECLASS,
        lambda s: s["tags"].__setitem__("karpenter.sh/nodepool", "x"),
        "restricted tag matching karpenter.sh/nodepool",
    ),
    (
        "volume-size-in-gb",
        NODECLASS,
        lambda s: data_ebs(s).__setitem__("volumeSize", "300GB"),
        "volumeSize: '300GB' does not match",
    ),
    (
        "volume-without-size-or-snapshot",
        NODECLASS,
        lambda s: data_ebs(s).pop("volumeSize"),
        "snapshotID or volumeSize must be defined",
    ),
    (
        "two-root-volumes",
        NODECLASS,
        lambda s: [m.__setitem__("rootVolume", True) for m in s["blockDeviceMappings"]],
        "must have only one blockDeviceMappings with rootVolume",
    ),
    (
        "hop-limit-65",
        NODECLASS,
        lambda s: s["metadataOptions"].__setitem__("httpPutResponseHopLimit", 65),
        "httpPutResponseHopLimit: 65 is above the maximum 64",
    ),
    (
        "http-tokens-unknown",
        NODECLASS,
        lambda s: s["metadataOptions"].__setitem__("httpTokens", "maybe"),
        '"maybe" is not one of',
    ),
    (
        "eviction-soft-without-grace-period",
        NODECLASS,
        lambda s: s.__setitem__("kubelet", {"evictionSoft": {"memory.available": "5%"}}),
        "evictionSoftGracePeriod",
    ),
    # CiliumClusterwideNetworkPolicy cilium.io/v2
    (
        "endpoint-and-node-selector",
        POLICY,
        lambda s: s.__setitem__("nodeSelector", {"matchLabels": {"role": "gpu"}}),
        "spec: must match exactly one of oneOf, matches 2",
    ),
    (
        "no-selector",
        POLICY,
        lambda s: s.pop("endpointSelector"),
        "spec: must match exactly one of oneOf, matches 0",
    ),
    (
        "entity-unknown",
        POLICY,
        lambda s: s.__setitem__("egress", [{"toEntities": ["internet"]}]),
        '"internet" is not one of',
    ),
    (
        "cidr-prefix-33",
        POLICY,
        lambda s: s.__setitem__("egress", [{"toCIDR": ["10.0.0.0/33"]}]),
        "toCIDR[0]: '10.0.0.0/33' is not a CIDR",
    ),
    (
        "cidr-without-prefix",
        POLICY,
        lambda s: s.__setitem__("egress", [{"toCIDR": ["10.0.0.1"]}]),
        "toCIDR[0]: '10.0.0.1' is not a CIDR",
    ),
    (
        "protocol-unknown",
        POLICY,
        lambda s: s.__setitem__(
            "egress", [{"toPorts": [{"ports": [{"port": "53", "protocol": "DNS"}]}]}]
        ),
        '"DNS" is not one of',
    ),
    (
        "egress-misspelt",
        POLICY,
        lambda s: s.__setitem__("egres", [{}]),
        "spec.egres: unknown field",
    ),
]


@pytest.mark.parametrize(
    ("obj", "edit", "reason"), [p[1:] for p in REJECTED], ids=[p[0] for p in REJECTED]
)
def test_each_probe_is_rejected_naming_the_rule_or_clause(obj, edit, reason):
    verdict = validate(edited(obj, edit))
    assert not verdict.accepted
    assert reason in str(verdict), str(verdict)


def test_cel_rejections_name_the_rule_and_its_message():
    probe = edited(
        NODEPOOL,
        lambda s: requirements(s).append(
            {"key": "karpenter.k8s.aws/instance-family", "operator": "In", "values": []}
        ),
    )
    [violation] = validate(probe).violations
    assert violation.path == "spec.template.spec.requirements"
    assert violation.rule == "self.all(x, x.operator == 'In' ? x.values.size() != 0 : true)"
    with pytest.raises(InvalidObject, match="NodePool gpu-inference rejected by the real CRD"):
        crd.assert_valid(probe)


def test_namespaced_and_cluster_scoped_kinds_are_told_apart():
    namespaced = copy.deepcopy(POLICY)
    namespaced["kind"] = "CiliumNetworkPolicy"
    assert "needs a namespace" in str(validate(namespaced))
    namespaced["metadata"]["namespace"] = "gpu-analysis"
    assert validate(namespaced).accepted
    clusterwide = copy.deepcopy(POLICY)
    clusterwide["metadata"]["namespace"] = "gpu-analysis"
    assert "must not have a namespace" in str(validate(clusterwide))


def test_metadata_and_version_are_checked_as_the_api_server_does():
    pool = copy.deepcopy(NODEPOOL)
    pool["metadata"]["name"] = "GPU_Inference"
    pool["metadata"]["labels"]["app.kubernetes.io/part-of"] = "x" * 64
    verdict = validate(pool)
    assert "metadata.name: 'GPU_Inference' is not a DNS-1123 subdomain" in str(verdict)
    assert "is not a label value" in str(verdict)
    old = copy.deepcopy(NODEPOOL)
    old["apiVersion"] = "karpenter.sh/v1beta1"
    assert "'karpenter.sh/v1beta1' is not served (karpenter.sh/v1)" in str(validate(old))


def test_defaults_are_applied_before_the_rules_run():
    """Without budgets the server defaults them to [{nodes: 10%}] and the budget rule sees that."""
    pool = edited(NODEPOOL, lambda s: s["disruption"].pop("budgets"))
    assert validate(pool).accepted
    pool = edited(NODEPOOL, lambda s: s["disruption"].pop("consolidationPolicy"))
    assert validate(pool).accepted  # defaults to WhenEmptyOrUnderutilized


def test_a_rule_with_an_unimplemented_function_fails_the_load_loudly():
    document = {
        "spec": {
            "group": "example.com",
            "names": {"kind": "Widget"},
            "scope": "Cluster",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {"size": {"type": "string"}},
                                    "x-kubernetes-validations": [
                                        {
                                            "rule": "isQuantity(self.size)",
                                            "message": "size is a quantity",
                                        }
                                    ],
                                }
                            },
                        }
                    },
                }
            ],
        }
    }
    with pytest.raises(UnsupportedCel, match=r"calls isQuantity, which this evaluator does not"):
        CustomResourceDefinition(document)


def test_every_rule_of_the_pinned_crds_compiles_with_implemented_functions():
    paths = (pinned.NODEPOOL_CRD, pinned.EC2NODECLASS_CRD, pinned.CCNP_CRD, pinned.CNP_CRD)
    counts = {path: crd.upstream_crd(path).rule_count for path in paths}
    # The rules the CRD files carry (grep -c 'rule:'); Cilium 1.16's v2 CRDs have none.
    assert list(counts.values()) == [24, 48, 0, 0]
