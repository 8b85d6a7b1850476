"""The rendered in-cluster objects: valid Karpenter v1 / Kubernetes 1.32, and the seed's values."""

from __future__ import annotations

import dataclasses
import datetime
import tomllib
from zoneinfo import ZoneInfo

import kubernetes_validate
import pytest

from infra_assets import manifests
from infra_assets.spec import ClusterSpec
from infra_assets.spec.kubernetes import (
    BUSINESS_HOURS_DURATION,
    BUSINESS_HOURS_SCHEDULE_UTC,
    CAPACITY_SPREAD_VALUES,
    NODE_CLASS_GPU_INFERENCE,
    nodepool_names,
)
from tests.conftest import REPO_ROOT
from tests.upstream import crd

UNIT = "gpu-karpenter-nodepools"
SPEC = ClusterSpec()
NODEPOOLS = {p["metadata"]["name"]: p for p in manifests.nodepools(SPEC, UNIT)}
NODECLASSES = {c["metadata"]["name"]: c for c in manifests.node_classes(SPEC, UNIT)}


def requirement(pool: dict, key: str) -> list[str]:
    for req in pool["spec"]["template"]["spec"]["requirements"]:
        if req["key"] == key:
            return req["values"]
    raise AssertionError(f"no requirement {key}")


# Against the real Karpenter 1.8.1 CRDs with their CEL rules (tests/upstream); the objects the
# API server would refuse are probed in test_upstream_crds.py.
@pytest.mark.parametrize("name", sorted(NODEPOOLS))
def test_nodepools_are_accepted_by_the_real_karpenter_crd(name):
    crd.assert_valid(NODEPOOLS[name])


@pytest.mark.parametrize("name", sorted(NODECLASSES))
def test_ec2nodeclasses_are_accepted_by_the_real_karpenter_crd(name):
    crd.assert_valid(NODECLASSES[name])


def test_built_in_objects_validate_strictly_against_kubernetes_1_32():
    for namespace in SPEC.cilium.workload_namespaces:
        obj = manifests.workload_namespace(SPEC, namespace, "gpu-cilium")
        kubernetes_validate.validate(obj, "1.32", strict=True)


def test_objects_written_by_helm_validate_strictly(ctx, kube_api):
    """The release Secret and the chart objects, as the fake helm writes them."""
    from infra_assets.units.karpenter_controller import KarpenterControllerUnit

    KarpenterControllerUnit(ctx).apply()
    store = kube_api.store
    objects = [
        store.get("", "v1", "secrets", "kube-system", "sh.helm.release.v1.karpenter.v1"),
        store.get("apps", "v1", "deployments", "kube-system", "karpenter"),
        store.get("policy", "v1", "poddisruptionbudgets", "kube-system", "karpenter"),
        store.get("", "v1", "serviceaccounts", "kube-system", "karpenter"),
    ]
    for obj in objects:
        kubernetes_validate.validate(obj, "1.32", strict=True)
    container = objects[1]["spec"]["template"]["spec"]["containers"][0]
    assert container["securityContext"]["runAsNonRoot"] is True


def test_gpu_inference_is_on_demand_a10g_in_the_placement_group_zone():
    pool = NODEPOOLS["gpu-inference"]
    assert requirement(pool, "node.kubernetes.io/instance-type") == [
        "g5.xlarge",
        "g5.2xlarge",
        "g5.4xlarge",
    ]
    assert requirement(pool, "karpenter.sh/capacity-type") == ["on-demand"]
    assert requirement(pool, "topology.kubernetes.io/zone") == [
        SPEC.placement_group.availability_zone
    ]
    assert pool["spec"]["limits"] == {"cpu": "100", "memory": "400Gi"}
    assert pool["spec"]["disruption"]["consolidationPolicy"] == "WhenEmpty"
    assert pool["spec"]["disruption"]["consolidateAfter"] == "5m"
    assert pool["spec"]["template"]["spec"]["expireAfter"] == f"{60 * 24}h"
    assert pool["spec"]["template"]["spec"]["taints"] == [
        {"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}
    ]
    assert {"nodes": "0", "schedule": "0 6 * * 1-5", "duration": "12h"} in pool["spec"][
        "disruption"
    ]["budgets"]
    data = NODECLASSES["gpu-inference"]["spec"]["blockDeviceMappings"][1]["ebs"]
    assert (data["volumeSize"], data["iops"], data["throughput"]) == ("300Gi", 10000, 750)


def test_the_business_hours_budget_covers_paris_business_hours_all_year():
    """08:00-19:00 Europe/Paris on weekdays lies inside the UTC window in winter and summer."""
    minute, hour, _, _, days = BUSINESS_HOURS_SCHEDULE_UTC.split()
    assert days == "1-5"
    start_utc = datetime.time(int(hour), int(minute))
    end_utc = (
        datetime.datetime.combine(datetime.date.today(), start_utc)
        + datetime.timedelta(hours=int(BUSINESS_HOURS_DURATION.removesuffix("h")))
    ).time()
    paris, utc = ZoneInfo("Europe/Paris"), ZoneInfo("UTC")
    day = datetime.date(2026, 1, 1)
    while day.year == 2026:
        if day.weekday() < 5:
            opens = datetime.datetime.combine(day, datetime.time(8), paris).astimezone(utc)
            closes = datetime.datetime.combine(day, datetime.time(19), paris).astimezone(utc)
            assert opens.date() == day and opens.time() >= start_utc, day
            assert closes.time() <= end_utc, day
        day += datetime.timedelta(days=1)


@pytest.mark.parametrize(
    ("role", "spot_values", "cpu", "memory"),
    [("gpu-preprocessing", 7, 100, 400), ("cpu-coordination", 8, 100, 200)],
)
def test_spot_shares_are_two_pools_split_on_capacity_spread(role, spot_values, cpu, memory):
    spot, on_demand = NODEPOOLS[f"{role}-spot"], NODEPOOLS[f"{role}-on-demand"]
    assert requirement(spot, "karpenter.sh/capacity-type") == ["spot"]
    assert requirement(on_demand, "karpenter.sh/capacity-type") == ["on-demand"]
    spread_spot = requirement(spot, "capacity-spread")
    spread_on_demand = requirement(on_demand, "capacity-spread")
    assert len(spread_spot) == spot_values
    assert sorted(spread_spot + spread_on_demand, key=int) == list(CAPACITY_SPREAD_VALUES)
    # both pools together never exceed the seed's limit for the role
    assert int(spot["spec"]["limits"]["cpu"]) + int(on_demand["spec"]["limits"]["cpu"]) == cpu
    memories = [int(p["spec"]["limits"]["memory"].removesuffix("Gi")) for p in (spot, on_demand)]
    assert sum(memories) == memory


def test_preprocessing_and_coordination_follow_the_seed_table():
    for name in ("gpu-preprocessing-spot", "gpu-preprocessing-on-demand"):
        pool = NODEPOOLS[name]
        assert requirement(pool, "topology.kubernetes.io/zone") == ["eu-west-3a"]
        assert pool["spec"]["disruption"]["consolidateAfter"] == "3m"
        assert pool["spec"]["template"]["spec"]["expireAfter"] == "720h"
        assert pool["spec"]["disruption"]["budgets"] == [{"nodes": "10%"}]
        assert pool["spec"]["template"]["spec"]["taints"][0]["key"] == "nvidia.com/gpu"
    for name in ("cpu-coordination-spot", "cpu-coordination-on-demand"):
        pool = NODEPOOLS[name]
        assert len(requirement(pool, "topology.kubernetes.io/zone")) == 3
        assert pool["spec"]["disruption"]["consolidateAfter"] == "1m"
        assert "taints" not in pool["spec"]["template"]["spec"]
        assert {t.split(".")[0] for t in requirement(pool, "node.kubernetes.io/instance-type")} == {
            "c6i",
            "c6a",
            "m6i",
        }
    preprocessing = NODECLASSES["gpu-preprocessing"]["spec"]["blockDeviceMappings"][1]["ebs"]
    assert (preprocessing["volumeSize"], preprocessing["iops"], preprocessing["throughput"]) == (
        "200Gi",
        5000,
        500,
    )
    coordination = NODECLASSES["cpu-coordination"]["spec"]["blockDeviceMappings"][1]["ebs"]
    assert (coordination["volumeSize"], coordination["iops"]) == ("50Gi", 3000)


def test_node_classes_are_bottlerocket_encrypted_and_found_by_tag():
    for node_class in NODECLASSES.values():
        spec = node_class["spec"]
        assert spec["amiSelectorTerms"][0]["alias"].startswith("bottlerocket@")
        assert all(m["ebs"]["encrypted"] for m in spec["blockDeviceMappings"])
        assert spec["subnetSelectorTerms"] == [
            {"tags": {"karpenter.sh/discovery": SPEC.cluster_name}}
        ]
        assert spec["metadataOptions"]["httpTokens"] == "required"
        assert spec["role"] == manifests.karpenter_node_role_name(SPEC)


def test_nodepool_names_serve_the_profiles_node_pools():
    profile = tomllib.loads((REPO_ROOT / "gpu_analysis/profiles/staging.toml").read_text())
    roles = [
        profile[k] for k in ("nodepool_gpu_preprocessing", "nodepool_gpu_inference", "nodepool_cpu")
    ]
    assert {role: nodepool_names(role) for role in roles} == {
        "gpu-preprocessing": ["gpu-preprocessing-spot", "gpu-preprocessing-on-demand"],
        "gpu-inference": ["gpu-inference"],
        "cpu-coordination": ["cpu-coordination-spot", "cpu-coordination-on-demand"],
    }
    for role in roles:
        for name in nodepool_names(role):
            labels = NODEPOOLS[name]["spec"]["template"]["metadata"]["labels"]
            assert labels["gpu-analysis/role"] == role
    with pytest.raises(KeyError, match="no node pool serves role 'gpu'"):
        nodepool_names("gpu")


def test_cilium_values_and_default_deny_policies():
    values = manifests.cilium_values(SPEC)
    assert values["ipam"]["mode"] == "eni" and values["eni"]["enabled"] is True
    assert values["routingMode"] == "native"
    assert values["encryption"] == {"enabled": True, "type": "wireguard"}
    assert values["bandwidthManager"]["enabled"] is True
    assert values["hubble"]["ui"]["enabled"] is True
    policies = {p["metadata"]["name"]: p["spec"] for p in manifests.network_policies(SPEC, "u")}
    deny = policies["gpu-analysis-default-deny"]
    assert deny["ingress"] == [{}] and deny["egress"] == [{}]
    exempt = deny["endpointSelector"]["matchExpressions"][0]
    assert (exempt["operator"], exempt["values"]) == ("NotIn", ["kube-system"])
    dns = policies["gpu-analysis-allow-dns"]["egress"][0]
    assert dns["toEndpoints"][0]["matchLabels"]["k8s:k8s-app"] == "kube-dns"
    assert policies["gpu-analysis-allow-kube-apiserver"]["egress"] == [
        {"toEntities": ["kube-apiserver"]}
    ]
    # gpu-dagster's CiliumNetworkPolicies say who talks to whom in the namespace.
    assert not any(name.startswith("gpu-analysis-allow-intra-namespace") for name in policies)
    # Without this the step pods get no AWS credentials (EKS Pod Identity) under default-deny.
    agent = policies["gpu-analysis-allow-pod-identity-agent-gpu-analysis"]["egress"]
    assert agent[0]["toCIDR"] == ["169.254.170.23/32", "fd00:ec2::23/128"]
    assert agent[1]["toEntities"] == ["host"]
    assert all(rule["toPorts"][0]["ports"] == [{"port": "80", "protocol": "TCP"}] for rule in agent)


def test_karpenter_values_two_replicas_pdb_and_the_interruption_queue():
    values = manifests.karpenter_values(SPEC)
    assert values["replicas"] == 2
    assert values["podDisruptionBudget"] == {"name": "karpenter", "maxUnavailable": 1}
    assert values["settings"] == {
        "clusterName": SPEC.cluster_name,
        "interruptionQueue": manifests.karpenter_interruption_queue_name(SPEC),
    }
    assert values["serviceAccount"]["name"] == SPEC.karpenter_iam.service_account


def test_the_spec_refuses_durations_karpenter_would_reject():
    pool = SPEC.nodepools[0]
    with pytest.raises(ValueError, match="expire_after='60d' is not a Karpenter duration"):
        dataclasses.replace(pool, expire_after="60d")
    with pytest.raises(ValueError, match="use WhenEmpty or WhenEmptyOrUnderutilized"):
        dataclasses.replace(pool, consolidation_policy="WhenUnderutilized")


def test_pool_zones_follow_the_placement_group_and_the_vpc():
    zones = ("eu-central-1a", "eu-central-1b", "eu-central-1c")
    moved = dataclasses.replace(
        SPEC,
        placement_group=dataclasses.replace(SPEC.placement_group, availability_zone=zones[1]),
        vpc=dataclasses.replace(SPEC.vpc, availability_zones=zones),
    )
    pools = {p["metadata"]["name"]: p for p in manifests.nodepools(moved, UNIT)}
    assert requirement(pools["gpu-inference"], "topology.kubernetes.io/zone") == [zones[1]]
    assert requirement(pools["gpu-preprocessing-spot"], "topology.kubernetes.io/zone") == [zones[1]]
    assert requirement(pools["cpu-coordination-spot"], "topology.kubernetes.io/zone") == [*zones]


@pytest.mark.parametrize("name", sorted(NODEPOOLS))
def test_nodes_start_tainted_until_the_cilium_agent_is_ready(name):
    """Cilium docs, "Installation on EKS" (Karpenter): nodes carry the startup taint
    node.cilium.io/agent-not-ready=true:NoExecute, which the agent removes once it runs, so no
    pod is scheduled onto a node before it can get a Cilium-managed address."""
    template = NODEPOOLS[name]["spec"]["template"]["spec"]
    assert template["startupTaints"] == [
        {"key": "node.cilium.io/agent-not-ready", "value": "true", "effect": "NoExecute"}
    ]
    # A startup taint, not a taint: pods need no toleration for it.
    assert all(t["key"] != "node.cilium.io/agent-not-ready" for t in template.get("taints", []))


def test_karpenter_nodes_run_the_pinned_bottlerocket_release_of_the_system_nodes():
    """`bottlerocket@latest` drifts on every Bottlerocket release and Karpenter replaces every
    node (the CRD's alias description); the classes pin the system nodes' release instead."""
    release = SPEC.eks.system_node_group.release_version  # e.g. "1.34.0-18d04e52"
    for node_class in NODECLASSES.values():
        [term] = node_class["spec"]["amiSelectorTerms"]
        assert term == {"alias": f"bottlerocket@v{release.split('-')[0]}"}
    with pytest.raises(ValueError, match="replaces every node on each AMI release"):
        dataclasses.replace(NODE_CLASS_GPU_INFERENCE, ami_alias="bottlerocket@latest")
