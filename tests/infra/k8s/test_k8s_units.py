"""The in-cluster units against the Kubernetes API emulator and the recording fake helm."""

from __future__ import annotations

import json
import subprocess

import pytest

from infra_assets.helm import HelmError, kubeconfig_for, read_release
from infra_assets.kube import (
    NO_CLUSTER_WARNING,
    Kube,
    ObjectRef,
    UnownedObjectError,
    api_client_from_environment,
)
from infra_assets.spec import OWNER_TAG
from infra_assets.unit import NoClusterConfigured
from infra_assets.units.cilium import CiliumUnit
from infra_assets.units.karpenter_controller import KarpenterControllerUnit
from infra_assets.units.nodepools import NodePoolsUnit

from .conftest import helm_calls

UNITS = (CiliumUnit, KarpenterControllerUnit, NodePoolsUnit)
KARPENTER = ("karpenter.sh", "v1", "nodepools", "")
NODECLASS = ("karpenter.k8s.aws", "v1", "ec2nodeclasses", "")
CCNP = ("cilium.io", "v2", "ciliumclusterwidenetworkpolicies", "")


def apply_all(ctx) -> None:
    for unit in UNITS:
        unit(ctx).apply()


@pytest.mark.parametrize("unit_class", UNITS)
def test_no_cluster_plans_creates_warns_and_refuses_to_apply(no_cluster_ctx, unit_class):
    unit = unit_class(no_cluster_ctx)
    plan = unit.plan()
    assert plan.has_changes and {c.action for c in plan.changes} == {"create"}
    assert NO_CLUSTER_WARNING in plan.warnings
    with pytest.raises(NoClusterConfigured, match="no Kubernetes cluster is configured"):
        unit.apply()
    destroyed = unit.destroy()
    assert destroyed.changes == () and destroyed.warnings == (NO_CLUSTER_WARNING,)


def test_nodepools_plan_without_cluster_lists_every_pool_and_the_inexpressible_wishes(
    no_cluster_ctx,
):
    plan = NodePoolsUnit(no_cluster_ctx).plan()
    assert sorted(c.name for c in plan.changes if c.kind == "NodePool") == [
        "cpu-coordination-on-demand",
        "cpu-coordination-spot",
        "gpu-inference",
        "gpu-preprocessing-on-demand",
        "gpu-preprocessing-spot",
    ]
    assert sorted(c.name for c in plan.changes if c.kind == "EC2NodeClass") == [
        "cpu-coordination",
        "gpu-inference",
        "gpu-preprocessing",
    ]
    text = "\n".join(plan.warnings)
    assert "placementGroupSelector" in text and "eu-west-3a" in text
    assert "70% spot" in text and "80% spot" in text


def test_apply_from_empty_creates_everything_and_a_second_apply_changes_nothing(
    ctx, kube_api, helm_log
):
    apply_all(ctx)
    store = kube_api.store
    assert store.names("nodepools") == [
        "cpu-coordination-on-demand",
        "cpu-coordination-spot",
        "gpu-inference",
        "gpu-preprocessing-on-demand",
        "gpu-preprocessing-spot",
    ]
    assert store.names("ec2nodeclasses") == [
        "cpu-coordination",
        "gpu-inference",
        "gpu-preprocessing",
    ]
    assert "gpu-analysis-default-deny" in store.names("ciliumclusterwidenetworkpolicies")
    namespace = store.get("", "v1", "namespaces", "", "gpu-analysis")
    assert namespace["metadata"]["labels"][OWNER_TAG] == ctx.spec.stack
    kube = Kube(ctx.kube)
    cilium = read_release(kube, "cilium", "kube-system")
    karpenter = read_release(kube, "karpenter", "kube-system")
    assert (cilium.chart_version, cilium.status) == ("1.16.5", "deployed")
    assert (karpenter.chart_version, karpenter.revision) == ("1.8.1", 1)
    assert karpenter.values["settings"]["clusterName"] == ctx.spec.cluster_name
    assert karpenter.values["replicas"] == 2
    assert karpenter.labels[OWNER_TAG] == ctx.spec.stack
    deployment = store.get("apps", "v1", "deployments", "kube-system", "karpenter")
    assert deployment["spec"]["replicas"] == 2
    assert len(helm_calls(helm_log)) == 2

    writes_before = [r for r in store.requests if r[0] != "GET"]
    for unit in UNITS:
        plan = unit(ctx).plan()
        assert not plan.has_changes, plan.as_text()
    apply_all(ctx)
    assert len(helm_calls(helm_log)) == 2, "a second apply must not run helm again"
    assert [r for r in store.requests if r[0] != "GET"] == writes_before


def test_nodepool_limits_edited_shows_a_field_diff_and_apply_repairs_it(ctx, kube_api):
    apply_all(ctx)
    pool = kube_api.store.get(*KARPENTER, "gpu-inference")
    pool["spec"]["limits"]["cpu"] = "400"
    kube_api.store.put(*KARPENTER, pool)

    unit = NodePoolsUnit(ctx)
    plan = unit.plan()
    assert [(c.action, c.kind, c.name) for c in plan.pending] == [
        ("update", "NodePool", "gpu-inference")
    ]
    assert [str(d) for d in plan.pending[0].diffs] == ["spec.limits.cpu: 400 -> 100"]
    assert "spec.limits.cpu: 400 -> 100" in plan.as_text()
    unit.apply()
    assert kube_api.store.get(*KARPENTER, "gpu-inference")["spec"]["limits"]["cpu"] == "100"
    assert not unit.plan().has_changes


def test_karpenter_scaled_to_one_shows_the_diff_and_apply_restores_two_replicas(
    ctx, kube_api, helm_log
):
    apply_all(ctx)
    deployment = kube_api.store.get("apps", "v1", "deployments", "kube-system", "karpenter")
    deployment["spec"]["replicas"] = 1  # kubectl scale deployment karpenter --replicas=1
    kube_api.store.put("apps", "v1", "deployments", "kube-system", deployment)

    unit = KarpenterControllerUnit(ctx)
    plan = unit.plan()
    assert [(c.kind, c.name) for c in plan.pending] == [("Deployment", "kube-system/karpenter")]
    assert [str(d) for d in plan.pending[0].diffs] == ["spec.replicas: 1 -> 2"]
    unit.apply()
    restored = kube_api.store.get("apps", "v1", "deployments", "kube-system", "karpenter")
    assert restored["spec"]["replicas"] == 2
    assert read_release(Kube(ctx.kube), "karpenter", "kube-system").revision == 2
    upgrade = helm_calls(helm_log)[-1]["argv"]
    assert upgrade[:4] == ["upgrade", "--install", "karpenter", ctx.spec.karpenter_controller.chart]
    assert not unit.plan().has_changes


def test_a_release_on_another_chart_version_is_planned_as_an_upgrade(ctx, kube_api):
    apply_all(ctx)
    older = ctx.spec.karpenter_controller.__class__(chart_version="1.8.0")
    old_ctx = type(ctx)(
        spec=ctx.spec.__class__(karpenter_controller=older),
        aws=ctx.aws,
        kube=ctx.kube,
        helm_binary=ctx.helm_binary,
    )
    KarpenterControllerUnit(old_ctx).apply()  # someone rolled the chart back
    plan = KarpenterControllerUnit(ctx).plan()
    assert [str(d) for d in plan.pending[0].diffs] == ["chart.version: 1.8.0 -> 1.8.1"]


def test_unowned_objects_are_never_changed_and_apply_refuses(ctx, kube_api):
    theirs = {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodePool",
        "metadata": {"name": "gpu-inference", "labels": {"team": "someone-else"}},
        "spec": {"limits": {"cpu": "8"}},
    }
    version_before = kube_api.store.put(*KARPENTER, theirs)["metadata"]["resourceVersion"]
    unit = NodePoolsUnit(ctx)
    plan = unit.plan()
    assert not [c for c in plan.changes if c.name == "gpu-inference" and c.kind == "NodePool"]
    assert len(plan.conflicts) == 1
    assert plan.conflicts[0].startswith(f"NodePool gpu-inference exists without label {OWNER_TAG}")
    with pytest.raises(UnownedObjectError, match=r"refusing to apply.*NodePool gpu-inference"):
        unit.apply()
    after = kube_api.store.get(*KARPENTER, "gpu-inference")
    assert after["spec"] == {"limits": {"cpu": "8"}}
    assert after["metadata"]["resourceVersion"] == version_before
    assert kube_api.store.names("nodepools") == ["gpu-inference"]  # nothing half-applied
    unit.destroy()
    assert kube_api.store.get(*KARPENTER, "gpu-inference") == after


def test_an_unowned_helm_release_is_neither_upgraded_nor_uninstalled(ctx, kube_api, helm_log):
    kubeconfig = helm_log.parent / "kubeconfig.json"
    kubeconfig.write_text(json.dumps(kubeconfig_for(ctx.kube)))
    # Someone installed Cilium by hand, without our labels.
    subprocess.run(
        [
            *(ctx.helm_binary, "upgrade", "--install", "cilium", "cilium", "--version", "1.15.0"),
            *("--namespace", "kube-system", "--kubeconfig", str(kubeconfig)),
        ],
        check=True,
        capture_output=True,
    )
    calls = len(helm_calls(helm_log))
    unit = CiliumUnit(ctx)
    assert unit.plan().conflicts[0].startswith("helm release kube-system/cilium exists without")
    with pytest.raises(UnownedObjectError, match="helm release kube-system/cilium"):
        unit.apply()
    assert len(helm_calls(helm_log)) == calls
    plan = unit.destroy()
    assert not any(c.kind == "helm-release" for c in plan.changes)
    assert plan.warnings[0].startswith("left alone: helm release kube-system/cilium")
    assert len(helm_calls(helm_log)) == calls
    assert read_release(Kube(ctx.kube), "cilium", "kube-system").chart_version == "1.15.0"


def test_destroy_removes_only_what_the_stack_owns(ctx, kube_api, helm_log):
    apply_all(ctx)
    kube_api.store.put(
        *KARPENTER,
        {"apiVersion": "karpenter.sh/v1", "kind": "NodePool", "metadata": {"name": "team-x"}},
    )
    kube_api.store.put(
        *CCNP,
        {
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumClusterwideNetworkPolicy",
            "metadata": {"name": "allow-team-x", "labels": {OWNER_TAG: "another-stack"}},
        },
    )
    for unit in reversed(UNITS):
        plan = unit(ctx).destroy()
        assert plan.changes and {c.action for c in plan.changes} == {"delete"}
    assert kube_api.store.names("nodepools") == ["team-x"]
    assert kube_api.store.names("ec2nodeclasses") == []
    assert kube_api.store.names("ciliumclusterwidenetworkpolicies") == ["allow-team-x"]
    assert kube_api.store.get("", "v1", "namespaces", "", "gpu-analysis") is None
    assert kube_api.store.get("", "v1", "namespaces", "", "kube-system") is not None
    kube = Kube(ctx.kube)
    assert read_release(kube, "karpenter", "kube-system") is None
    assert read_release(kube, "cilium", "kube-system") is None
    assert [c["argv"][0] for c in helm_calls(helm_log)] == [
        "upgrade",
        "upgrade",
        "uninstall",
        "uninstall",
    ]
    for unit in UNITS:  # a second teardown finds nothing
        assert unit(ctx).destroy().changes == ()


def test_an_object_dropped_from_the_spec_is_planned_for_deletion(ctx, kube_api):
    apply_all(ctx)
    spec = ctx.spec.__class__(nodepools=ctx.spec.nodepools[:1])
    unit = NodePoolsUnit(type(ctx)(spec=spec, aws=ctx.aws, kube=ctx.kube))
    plan = unit.plan()
    deleted = sorted(c.name for c in plan.pending if c.action == "delete")
    assert deleted == [
        "cpu-coordination",
        "cpu-coordination-on-demand",
        "cpu-coordination-spot",
        "gpu-preprocessing",
        "gpu-preprocessing-on-demand",
        "gpu-preprocessing-spot",
    ]
    unit.apply()
    assert kube_api.store.names("nodepools") == ["gpu-inference"]
    assert not unit.plan().has_changes


def test_a_failing_helm_gives_a_one_line_error(ctx, monkeypatch):
    monkeypatch.setenv("FAKE_HELM_FAIL", "1")
    with pytest.raises(HelmError) as err:
        KarpenterControllerUnit(ctx).apply()
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("error: helm upgrade karpenter failed (exit 1): Error: INSTALLATION")


def test_a_missing_helm_binary_says_what_to_do(ctx):
    ctx.helm_binary = "/nonexistent/helm"
    with pytest.raises(HelmError, match=r"install helm 3\.13"):
        CiliumUnit(ctx).apply()


def test_the_cluster_comes_from_the_standard_kubeconfig(kube_api, tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    assert api_client_from_environment() is None
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(json.dumps(kubeconfig_for(kube_api.api_client())))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    client = api_client_from_environment()
    assert Kube(client).get(ObjectRef("Namespace", "kube-system")) is not None


def test_a_weakened_default_deny_policy_is_drift_and_apply_restores_it(ctx, kube_api):
    CiliumUnit(ctx).apply()
    policy = kube_api.store.get(*CCNP, "gpu-analysis-default-deny")
    del policy["spec"]["egress"]  # someone opened egress for everyone
    kube_api.store.put(*CCNP, policy)
    unit = CiliumUnit(ctx)
    plan = unit.plan()
    assert [str(d) for c in plan.pending for d in c.diffs] == ["spec.egress: (absent) -> [{}]"]
    unit.apply()
    assert kube_api.store.get(*CCNP, "gpu-analysis-default-deny")["spec"]["egress"] == [{}]
    assert not unit.plan().has_changes


def test_release_values_changed_by_hand_are_drift(ctx, kube_api, helm_log):
    CiliumUnit(ctx).apply()
    values = json.loads(json.dumps(helm_calls(helm_log)[-1]["values"]))
    values["hubble"]["ui"]["enabled"] = False  # helm upgrade --reuse-values --set ...
    values_file = helm_log.parent / "values.json"
    values_file.write_text(json.dumps(values))
    kubeconfig = helm_log.parent / "kubeconfig.json"
    kubeconfig.write_text(json.dumps(kubeconfig_for(ctx.kube)))
    subprocess.run(
        [
            *(ctx.helm_binary, "upgrade", "--install", "cilium", "cilium", "--version", "1.16.5"),
            *("--namespace", "kube-system", "--values", str(values_file)),
            *("--labels", f"{OWNER_TAG}={ctx.spec.stack}", "--kubeconfig", str(kubeconfig)),
        ],
        check=True,
        capture_output=True,
    )
    plan = CiliumUnit(ctx).plan()
    assert [str(d) for c in plan.pending for d in c.diffs] == [
        "values.hubble.ui.enabled: false -> true"
    ]
