"""The in-cluster units apply the plan they are given, and teardown is a plan to preview first."""

from __future__ import annotations

import pytest

from infra_assets.helm import read_release
from infra_assets.kube import Kube
from infra_assets.plan import StalePlan
from infra_assets.units.cilium import CiliumUnit
from infra_assets.units.karpenter_controller import KarpenterControllerUnit
from infra_assets.units.nodepools import NodePoolsUnit

from .conftest import helm_calls

UNITS = (CiliumUnit, KarpenterControllerUnit, NodePoolsUnit)
NODEPOOL = ("karpenter.sh", "v1", "nodepools", "")


def test_apply_carries_out_the_plan_it_is_given(ctx, kube_api):
    NodePoolsUnit(ctx).apply()
    pool = kube_api.store.get(*NODEPOOL, "gpu-inference")
    pool["spec"]["limits"]["cpu"] = "400"
    pool["spec"]["limits"]["nvidia.com/gpu"] = "0"
    kube_api.store.put(*NODEPOOL, pool)
    shown = NodePoolsUnit(ctx).plan()  # what the UI showed and a person approved
    writes_before = [r for r in kube_api.store.requests if r[0] != "GET"]

    result = NodePoolsUnit(ctx).apply(shown)
    assert result.plan == shown
    writes = [r for r in kube_api.store.requests if r[0] != "GET"][len(writes_before) :]
    assert [method for method, _ in writes] == ["PATCH"]  # one patch: the plan's two diffs
    assert kube_api.store.get(*NODEPOOL, "gpu-inference")["spec"]["limits"] == {
        "cpu": "100",
        "memory": "400Gi",
    }
    assert not NodePoolsUnit(ctx).plan().has_changes


def test_a_plan_the_live_state_has_moved_past_is_refused_and_nothing_applied(ctx, kube_api):
    NodePoolsUnit(ctx).apply()
    pool = kube_api.store.get(*NODEPOOL, "gpu-inference")
    pool["spec"]["limits"]["cpu"] = "400"
    kube_api.store.put(*NODEPOOL, pool)
    shown = NodePoolsUnit(ctx).plan()
    # After the plan was shown, someone changes another pool: not in the approved plan.
    other = kube_api.store.get(*NODEPOOL, "gpu-preprocessing-spot")
    other["spec"]["limits"]["memory"] = "1Ti"
    kube_api.store.put(*NODEPOOL, other)

    with pytest.raises(StalePlan, match="gpu-preprocessing-spot"):
        NodePoolsUnit(ctx).apply(shown)
    assert kube_api.store.get(*NODEPOOL, "gpu-inference")["spec"]["limits"]["cpu"] == "400"
    assert len(NodePoolsUnit(ctx).plan().pending) == 2


def test_apply_refuses_the_plan_of_another_unit(ctx):
    with pytest.raises(ValueError, match="was given the plan of gpu-karpenter-nodepools"):
        CiliumUnit(ctx).apply(NodePoolsUnit(ctx).plan())


def test_the_teardown_preview_lists_what_destroy_deletes_and_deletes_nothing(
    ctx, kube_api, helm_log
):
    for unit in UNITS:
        unit(ctx).apply()
    objects_before = dict(kube_api.store.objects)
    helm_before = len(helm_calls(helm_log))

    previews = {unit.name: unit(ctx).destroy_plan() for unit in reversed(UNITS)}
    assert kube_api.store.objects == objects_before
    assert len(helm_calls(helm_log)) == helm_before
    nodepools = previews["gpu-karpenter-nodepools"]
    assert {c.action for c in nodepools.changes} == {"delete"}
    kinds = [c.kind for c in nodepools.changes]
    assert kinds == ["NodePool"] * 5 + ["EC2NodeClass"] * 3  # pools before their classes
    assert [(c.kind, c.name) for c in previews["gpu-karpenter-controller"].changes] == [
        ("helm-release", "kube-system/karpenter")
    ]
    cilium = previews["gpu-cilium"]
    assert cilium.changes[-1].kind == "helm-release"  # the CNI last, after its policies
    assert ("Namespace", "gpu-analysis") in [(c.kind, c.name) for c in cilium.changes]
    assert "to delete" in cilium.summary()

    for unit in reversed(UNITS):
        done = unit(ctx).destroy(previews[unit.name])
        assert done.changes == previews[unit.name].changes
    assert kube_api.store.names("nodepools") == []
    assert kube_api.store.names("ciliumclusterwidenetworkpolicies") == []
    assert read_release(Kube(ctx.kube), "cilium", "kube-system") is None
    for unit in UNITS:
        assert unit(ctx).destroy_plan().changes == ()


def test_without_a_cluster_the_teardown_preview_says_so(no_cluster_ctx):
    for unit in UNITS:
        preview = unit(no_cluster_ctx).destroy_plan()
        assert preview.changes == ()
        assert "no Kubernetes cluster is configured" in preview.warnings[0]
