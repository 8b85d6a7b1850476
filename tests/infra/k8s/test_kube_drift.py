"""Drift in the in-cluster units sees what is live but not in the spec, and applying removes it.

Through the Kubernetes API emulator over HTTP: a person's edit is a write into the emulated
cluster; the unit observes, plans a field-level diff, and its apply (a JSON merge patch with
null for each extra entry, RFC 7386) puts the object back.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess

from infra_assets.helm import kubeconfig_for
from infra_assets.spec import OWNER_TAG
from infra_assets.units.cilium import CiliumUnit
from infra_assets.units.karpenter_controller import KarpenterControllerUnit
from infra_assets.units.nodepools import NodePoolsUnit

from .conftest import helm_calls

NODEPOOL = ("karpenter.sh", "v1", "nodepools", "")
NODECLASS = ("karpenter.k8s.aws", "v1", "ec2nodeclasses", "")
CCNP = ("cilium.io", "v2", "ciliumclusterwidenetworkpolicies", "")


def edit(kube_api, key: tuple[str, str, str, str], name: str, change) -> None:
    """What `kubectl edit` does: read, change, write back."""
    obj = kube_api.store.get(*key, name)
    change(obj)
    kube_api.store.put(*key, obj)


def diffs_of(plan) -> list[str]:
    return [str(d) for c in plan.pending for d in c.diffs]


def test_an_extra_nodepool_limit_and_taint_added_by_hand_are_drift_and_apply_removes_them(
    ctx, kube_api
):
    unit = NodePoolsUnit(ctx)
    unit.apply()
    stranger = {"key": "team", "value": "x", "effect": "NoSchedule"}

    def by_hand(pool):
        pool["spec"]["limits"]["nvidia.com/gpu"] = "0"  # no GPU node can ever launch
        pool["spec"]["template"]["spec"]["taints"].append(stranger)

    edit(kube_api, NODEPOOL, "gpu-inference", by_hand)

    plan = NodePoolsUnit(ctx).plan()
    assert [(c.action, c.kind, c.name) for c in plan.pending] == [
        ("update", "NodePool", "gpu-inference")
    ]
    diffs = diffs_of(plan)
    assert 'spec.limits["nvidia.com/gpu"]: 0 -> (absent)' in diffs
    assert any(d.startswith("spec.template.spec.taints: ") and '"team"' in d for d in diffs)
    assert 'spec.limits["nvidia.com/gpu"]: 0 -> (absent)' in plan.as_text()

    NodePoolsUnit(ctx).apply(plan)
    live = kube_api.store.get(*NODEPOOL, "gpu-inference")
    assert live["spec"]["limits"] == {"cpu": "100", "memory": "400Gi"}
    assert stranger not in live["spec"]["template"]["spec"]["taints"]
    assert not NodePoolsUnit(ctx).plan().has_changes


def test_a_label_removed_from_the_spec_is_drift_and_apply_removes_it_live(ctx, kube_api):
    NodePoolsUnit(ctx).apply()
    pools = ctx.spec.nodepools
    without_gpu_label = dataclasses.replace(
        ctx.spec,
        nodepools=(
            dataclasses.replace(pools[0], gpu=None),  # gpu-inference: no gpu-analysis/gpu label
            *pools[1:],
        ),
    )
    new_ctx = dataclasses.replace(ctx, spec=without_gpu_label)

    plan = NodePoolsUnit(new_ctx).plan()
    assert [(c.kind, c.name) for c in plan.pending] == [("NodePool", "gpu-inference")]
    assert diffs_of(plan) == ['spec.template.metadata.labels["gpu-analysis/gpu"]: a10g -> (absent)']

    NodePoolsUnit(new_ctx).apply(plan)
    labels = kube_api.store.get(*NODEPOOL, "gpu-inference")["spec"]["template"]["metadata"]
    assert labels == {"labels": {"gpu-analysis/role": "gpu-inference"}}
    assert not NodePoolsUnit(new_ctx).plan().has_changes


def test_userdata_and_a_tag_added_to_an_ec2nodeclass_are_drift_and_apply_removes_them(
    ctx, kube_api
):
    NodePoolsUnit(ctx).apply()

    def by_hand(node_class):
        node_class["spec"]["userData"] = "[settings.kubernetes]\nmax-pods = 500\n"
        node_class["spec"]["tags"]["team"] = "x"
        node_class["metadata"]["labels"]["extra"] = "y"

    edit(kube_api, NODECLASS, "gpu-inference", by_hand)
    plan = NodePoolsUnit(ctx).plan()
    assert [(c.kind, c.name) for c in plan.pending] == [("EC2NodeClass", "gpu-inference")]
    assert sorted(diffs_of(plan)) == [
        "metadata.labels.extra: y -> (absent)",
        "spec.tags.team: x -> (absent)",
        "spec.userData: [settings.kubernetes]\nmax-pods = 500\n -> (absent)",
    ]
    NodePoolsUnit(ctx).apply(plan)
    live = kube_api.store.get(*NODECLASS, "gpu-inference")
    assert "userData" not in live["spec"] and "team" not in live["spec"]["tags"]
    assert "extra" not in live["metadata"]["labels"]
    assert live["metadata"]["labels"][OWNER_TAG] == ctx.spec.stack
    assert not NodePoolsUnit(ctx).plan().has_changes


def test_a_default_deny_narrowed_by_an_extra_selector_is_drift_and_apply_restores_it(ctx, kube_api):
    CiliumUnit(ctx).apply()

    def by_hand(policy):
        # An extra matchLabels term: default-deny now selects no pod at all.
        policy["spec"]["endpointSelector"]["matchLabels"] = {"k8s:app": "nothing"}
        policy["spec"]["enableDefaultDeny"] = {"egress": False}

    edit(kube_api, CCNP, "gpu-analysis-default-deny", by_hand)
    plan = CiliumUnit(ctx).plan()
    assert [(c.kind, c.name) for c in plan.pending] == [
        ("CiliumClusterwideNetworkPolicy", "gpu-analysis-default-deny")
    ]
    assert sorted(diffs_of(plan)) == [
        'spec.enableDefaultDeny: {"egress": false} -> (absent)',
        'spec.endpointSelector.matchLabels: {"k8s:app": "nothing"} -> (absent)',
    ]
    CiliumUnit(ctx).apply(plan)
    spec = kube_api.store.get(*CCNP, "gpu-analysis-default-deny")["spec"]
    assert "matchLabels" not in spec["endpointSelector"] and "enableDefaultDeny" not in spec
    assert not CiliumUnit(ctx).plan().has_changes


def test_labels_the_api_server_sets_on_a_namespace_are_not_drift(ctx, kube_api):
    CiliumUnit(ctx).apply()
    namespace = kube_api.store.get("", "v1", "namespaces", "", "gpu-analysis")
    assert namespace["metadata"]["labels"]["kubernetes.io/metadata.name"] == "gpu-analysis"
    assert namespace["spec"] == {"finalizers": ["kubernetes"]}
    assert not CiliumUnit(ctx).plan().has_changes


def test_a_helm_value_added_by_hand_is_drift_and_apply_drops_it(ctx, kube_api, helm_log):
    KarpenterControllerUnit(ctx).apply()
    values = {**helm_calls(helm_log)[-1]["values"], "logLevel": "debug"}
    values_file = helm_log.parent / "values.json"
    values_file.write_text(json.dumps(values))
    kubeconfig = helm_log.parent / "kubeconfig.json"
    kubeconfig.write_text(json.dumps(kubeconfig_for(ctx.kube)))
    karpenter = ctx.spec.karpenter_controller
    subprocess.run(  # helm upgrade --reuse-values --set logLevel=debug, by a person
        [
            *(ctx.helm_binary, "upgrade", "--install", "karpenter", karpenter.chart),
            *("--version", karpenter.chart_version, "--namespace", "kube-system"),
            *("--values", str(values_file), "--labels", f"{OWNER_TAG}={ctx.spec.stack}"),
            *("--kubeconfig", str(kubeconfig)),
        ],
        check=True,
        capture_output=True,
    )
    plan = KarpenterControllerUnit(ctx).plan()
    assert diffs_of(plan) == ["values.logLevel: debug -> (absent)"]
    KarpenterControllerUnit(ctx).apply(plan)
    assert "logLevel" not in helm_calls(helm_log)[-1]["values"]
    assert not KarpenterControllerUnit(ctx).plan().has_changes
