"""Where the team's old hand-written Karpenter schema was wrong, the real CRDs' verdict."""

# tests/infra/k8s/karpenter_v1_schema.py (removed: replaced by tests/upstream) was a JSON schema
# written from memory of the v1 CRDs. Run over these probes it gave the opposite verdict of the
# real Karpenter 1.8.1 CRDs every time: it knew none of the CEL rules (so it let through objects
# the API server refuses), and it closed or narrowed fields the CRDs allow (so it refused
# objects the API server takes). Its verdict is recorded in the `hand_written` column (run on
# the objects as rendered before the NodePools got Cilium's startup taint, which it refused
# too); the test asserts the real CRDs' verdict.

from __future__ import annotations

import copy

import pytest

from infra_assets import manifests
from infra_assets.spec import ClusterSpec
from tests.upstream import crd

SPEC = ClusterSpec()
POOL = next(
    p for p in manifests.nodepools(SPEC, "test") if p["metadata"]["name"] == "gpu-inference"
)
NODE_CLASS = next(c for c in manifests.node_classes(SPEC, "test"))
ACCEPTED, REJECTED = "accepted", "rejected"


def _requirement(**fields):
    return lambda s: s["template"]["spec"]["requirements"].append(fields)


# (id, object, edit of spec, hand-written verdict, real verdict, what the real CRD says)
PROBES = [
    (
        "in-with-empty-values",
        POOL,
        _requirement(key="karpenter.k8s.aws/instance-family", operator="In", values=[]),
        ACCEPTED,
        REJECTED,
        "requirements with operator 'In' must have a value defined",
    ),
    (
        "in-without-values",
        POOL,
        _requirement(key="karpenter.k8s.aws/instance-family", operator="In"),
        ACCEPTED,
        REJECTED,
        "no such member in mapping: 'values'",
    ),
    (
        "gt-not-an-integer",
        POOL,
        _requirement(key="karpenter.k8s.aws/instance-cpu", operator="Gt", values=["many"]),
        ACCEPTED,
        REJECTED,
        "evaluation error",
    ),
    (
        "min-values-above-values",
        POOL,
        lambda s: s["template"]["spec"]["requirements"][0].__setitem__("minValues", 5),
        ACCEPTED,
        REJECTED,
        "must have at least that many values",
    ),
    (
        "requirement-on-hostname",
        POOL,
        _requirement(key="kubernetes.io/hostname", operator="In", values=["node-1"]),
        ACCEPTED,
        REJECTED,
        'label domain "kubernetes.io" is restricted',
    ),
    (
        "template-label-karpenter-nodepool",
        POOL,
        lambda s: s["template"]["metadata"]["labels"].__setitem__("karpenter.sh/nodepool", "x"),
        ACCEPTED,
        REJECTED,
        'label "karpenter.sh/nodepool" is restricted',
    ),
    (
        "template-label-kubernetes-io",
        POOL,
        lambda s: s["template"]["metadata"]["labels"].__setitem__("kubernetes.io/team", "x"),
        ACCEPTED,
        REJECTED,
        'label domain "kubernetes.io" is restricted',
    ),
    (
        "cilium-startup-taint",
        POOL,
        lambda s: s["template"]["spec"].__setitem__(
            "startupTaints",
            [{"key": "node.cilium.io/agent-not-ready", "value": "true", "effect": "NoExecute"}],
        ),
        REJECTED,
        ACCEPTED,
        None,
    ),
    (
        "requirement-value-of-64-characters",
        POOL,
        _requirement(key="example.com/team", operator="In", values=["a" * 64]),
        REJECTED,
        ACCEPTED,
        None,
    ),
    (
        "alias-and-id-terms",
        NODE_CLASS,
        lambda s: s["amiSelectorTerms"].append({"id": "ami-0123456789abcdef0"}),
        ACCEPTED,
        REJECTED,
        "'alias' is mutually exclusive",
    ),
    (
        "alias-and-id-in-one-term",
        NODE_CLASS,
        lambda s: s["amiSelectorTerms"][0].__setitem__("id", "ami-0123456789abcdef0"),
        ACCEPTED,
        REJECTED,
        "'id' is mutually exclusive",
    ),
    (
        "windows-alias-pinned",
        NODE_CLASS,
        lambda s: s["amiSelectorTerms"][0].__setitem__("alias", "windows2022@v1"),
        ACCEPTED,
        REJECTED,
        "windows families may only specify version 'latest'",
    ),
    (
        "ami-id-without-family",
        NODE_CLASS,
        lambda s: s.__setitem__("amiSelectorTerms", [{"id": "ami-0123456789abcdef0"}]),
        ACCEPTED,
        REJECTED,
        "must specify amiFamily",
    ),
    (
        "empty-subnet-term",
        NODE_CLASS,
        lambda s: s.__setitem__("subnetSelectorTerms", [{}]),
        ACCEPTED,
        REJECTED,
        "expected at least one, got none",
    ),
    (
        "subnet-id-and-tags",
        NODE_CLASS,
        lambda s: s.__setitem__("subnetSelectorTerms", [{"id": "subnet-1", "tags": {"a": "b"}}]),
        ACCEPTED,
        REJECTED,
        "'id' is mutually exclusive",
    ),
    (
        "tag-kubernetes-io-cluster",
        NODE_CLASS,
        lambda s: s["tags"].__setitem__("kubernetes.io/cluster/other", "owned"),
        ACCEPTED,
        REJECTED,
        "restricted tag matching kubernetes.io/cluster/",
    ),
    (
        "tag-karpenter-nodepool",
        NODE_CLASS,
        lambda s: s["tags"].__setitem__("karpenter.sh/nodepool", "x"),
        ACCEPTED,
        REJECTED,
        "restricted tag matching karpenter.sh/nodepool",
    ),
    (
        "two-root-volumes",
        NODE_CLASS,
        lambda s: [m.__setitem__("rootVolume", True) for m in s["blockDeviceMappings"]],
        ACCEPTED,
        REJECTED,
        "must have only one blockDeviceMappings with rootVolume",
    ),
    (
        "volume-without-size-or-snapshot",
        NODE_CLASS,
        lambda s: s["blockDeviceMappings"][1]["ebs"].pop("volumeSize"),
        ACCEPTED,
        REJECTED,
        "snapshotID or volumeSize must be defined",
    ),
    (
        "volume-size-in-decimal-gigabytes",
        NODE_CLASS,
        lambda s: s["blockDeviceMappings"][1]["ebs"].__setitem__("volumeSize", "300G"),
        REJECTED,
        ACCEPTED,
        None,
    ),
    (
        "io2-iops-20000",
        NODE_CLASS,
        lambda s: s["blockDeviceMappings"][1]["ebs"].update(volumeType="io2", iops=20000),
        REJECTED,
        ACCEPTED,
        None,
    ),
    (
        "capacity-reservation-terms",
        NODE_CLASS,
        lambda s: s.__setitem__(
            "capacityReservationSelectorTerms", [{"id": "cr-0123456789abcdef0"}]
        ),
        REJECTED,
        ACCEPTED,
        None,
    ),
]


@pytest.mark.parametrize(
    ("obj", "edit", "hand_written", "real", "reason"),
    [p[1:] for p in PROBES],
    ids=[p[0] for p in PROBES],
)
def test_the_real_crd_verdict_where_the_hand_written_schema_disagreed(
    obj, edit, hand_written, real, reason
):
    probe = copy.deepcopy(obj)
    edit(probe["spec"])
    verdict = crd.validate(probe)
    assert hand_written != real
    assert (ACCEPTED if verdict.accepted else REJECTED) == real, str(verdict)
    if reason:
        assert reason in str(verdict)
