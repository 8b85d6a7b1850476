"""Bandwidth QoS holds with the policies the Cilium unit applies, for the pods the project runs.

Cilium 1.16 docs, Bandwidth Manager, Limitations: "Bandwidth enforcement currently does not
work in combination with L7 Cilium Network Policies. In case they select the Pod at egress,
then the bandwidth enforcement will be disabled for those Pods." And DNS-based policies
(toFQDNs) only learn addresses through the DNS proxy, i.e. an L7 DNS rule on the same pod.
So: a pod with an egress-bandwidth annotation is selected by no policy with an L7 egress rule
(DNS rules, toFQDNs); every other governed pod that uses toFQDNs keeps its L7 DNS rule; and
every pod can still resolve names and reach AWS over HTTPS.

The pods are those the Dagster definitions launch (step pods through PipesK8sClient, the run
pod from the job's dagster-k8s/config tag); the policies are read back from the emulated
cluster the Cilium unit applied them to.
"""

from __future__ import annotations

import pytest
from dagster_k8s.pipes import build_pod_body

from gpu_analysis.profile import load_profile
from infra_assets.units.cilium import CiliumUnit
from video_assets.pod_specs import STEPS, run_pod_k8s_config, step_pod

CCNP = ("cilium.io", "v2", "ciliumclusterwidenetworkpolicies", "")
EGRESS_BANDWIDTH_ANNOTATION = "kubernetes.io/egress-bandwidth"  # what Cilium enforces
SOURCES = ("k8s:", "any:")


def cilium_labels(labels: dict[str, str], namespace: str) -> dict[str, str]:
    """The identity labels Cilium derives from a pod (source k8s)."""
    return {**labels, "io.kubernetes.pod.namespace": namespace}


def _key(key: str) -> str:
    for source in SOURCES:
        key = key.removeprefix(source)
    return key


def selects(selector: dict, labels: dict[str, str]) -> bool:
    """A Kubernetes label selector as Cilium evaluates an endpointSelector."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(_key(key)) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = _key(expression["key"]), expression["operator"]
        values = expression.get("values") or []
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def egress_rules(policies: list[dict], labels: dict[str, str]) -> list[dict]:
    return [
        rule
        for policy in policies
        if selects(policy["spec"]["endpointSelector"], labels)
        for rule in policy["spec"].get("egress") or []
    ]


def is_l7(rule: dict) -> bool:
    return "toFQDNs" in rule or any(p.get("rules") for p in rule.get("toPorts") or [])


def has_dns_l7(rule: dict) -> bool:
    return any((p.get("rules") or {}).get("dns") for p in rule.get("toPorts") or [])


def ports(rule: dict) -> set[str]:
    return {p["port"] for tp in rule.get("toPorts") or [] for p in tp["ports"]}


def reaches_dns(rule: dict) -> bool:
    to_kube_dns = any(
        _key_labels(e).get("k8s-app") == "kube-dns" for e in rule.get("toEndpoints") or []
    )
    return to_kube_dns and "53" in ports(rule)


def _key_labels(selector: dict) -> dict[str, str]:
    return {_key(k): v for k, v in (selector.get("matchLabels") or {}).items()}


def launched_pods(profile) -> dict[str, tuple[dict, dict]]:
    """name -> (labels, pod_annotations) of every pod the match job launches."""
    pods = {}
    for step in STEPS:
        pod = step_pod(profile, step)
        body = build_pod_body(
            pod_name=f"dagster-{step}-0123abcd",
            image=profile.image,
            command=["python", "-m", f"gpu_analysis.workers.{step}"],
            env_vars={},
            base_pod_meta=pod.meta,
            base_pod_spec=pod.spec,
        )
        pods[step] = (dict(body.metadata.labels or {}), dict(body.metadata.annotations or {}))
    run_meta = run_pod_k8s_config(profile)["pod_template_spec_metadata"]
    pods["run"] = (run_meta.get("labels") or {}, run_meta.get("annotations") or {})
    return pods


@pytest.fixture
def policies(ctx, kube_api) -> list[dict]:
    CiliumUnit(ctx).apply()
    return [
        kube_api.store.get(*CCNP, name)
        for name in kube_api.store.names("ciliumclusterwidenetworkpolicies")
    ]


def test_the_gpu_step_pods_are_bandwidth_limited():
    pods = launched_pods(load_profile("staging"))
    for step in STEPS:
        _, step_annotations = pods[step]
        assert step_annotations.get(EGRESS_BANDWIDTH_ANNOTATION) == "2G", step


def test_no_l7_rule_selects_a_bandwidth_limited_pod_at_egress(policies):
    profile = load_profile("staging")
    limited = 0
    for name, (labels, pod_annotations) in launched_pods(profile).items():
        rules = egress_rules(policies, cilium_labels(labels, profile.namespace))
        assert any(reaches_dns(r) for r in rules), f"{name}: cannot resolve names"
        assert any("443" in ports(r) for r in rules), f"{name}: cannot reach AWS over HTTPS"
        if EGRESS_BANDWIDTH_ANNOTATION in pod_annotations:
            limited += 1
            l7 = [r for r in rules if is_l7(r)]
            assert not l7, f"{name}: L7 egress rules would lift its bandwidth limit: {l7}"
        elif any("toFQDNs" in r for r in rules):
            # toFQDNs learns addresses only from DNS answers the proxy sees.
            assert any(has_dns_l7(r) for r in rules), f"{name}: toFQDNs without a DNS rule"
    assert limited == len(STEPS)


def test_unlimited_pods_keep_dns_visibility_and_fqdn_egress(policies):
    profile = load_profile("staging")
    labels, run_annotations = launched_pods(profile)["run"]
    assert EGRESS_BANDWIDTH_ANNOTATION not in run_annotations
    rules = egress_rules(policies, cilium_labels(labels, profile.namespace))
    assert any(has_dns_l7(r) for r in rules)
    assert any("toFQDNs" in r for r in rules)
