"""Renders the Kubernetes objects of the in-cluster units from the spec, as API-ready dicts."""

# NodePools and EC2NodeClasses (Karpenter v1), the default-deny CiliumClusterwideNetworkPolicies
# with their allowances, the workload Namespaces, and the Helm values of Cilium and Karpenter.
# Every object carries the stack's ownership labels.

from __future__ import annotations

from typing import Any

from infra_assets.kube import owner_labels
from infra_assets.spec import ClusterSpec
from infra_assets.spec.kubernetes import (
    CAPACITY_SPREAD_LABEL,
    EGRESS_LIMITED_LABEL,
    KARPENTER_DISCOVERY_TAG,
    NodeClassSpec,
    NodePoolSpec,
)
from infra_assets.spec.kubernetes import node_classes as spec_node_classes

POLICY_PREFIX = "gpu-analysis"


def karpenter_node_role_name(spec: ClusterSpec) -> str:
    """The IAM role Karpenter's nodes run as (created by the gpu-karpenter-iam unit)."""
    return f"{spec.karpenter_iam.node_role_prefix}-{spec.cluster_name}"


def karpenter_interruption_queue_name(spec: ClusterSpec) -> str:
    """The SQS queue of spot/health events (created by the gpu-karpenter-iam unit)."""
    return spec.cluster_name


# ---- Karpenter ---------------------------------------------------------------------------


def ami_alias(spec: ClusterSpec, node_class: NodeClassSpec) -> str:
    """The class's pinned AMI: its own alias, else the system nodes' Bottlerocket release
    ("1.34.0-18d04e52" -> "bottlerocket@v1.34.0", the version format of Karpenter's alias)."""
    if node_class.ami_alias:
        return node_class.ami_alias
    version = spec.eks.system_node_group.release_version.split("-", 1)[0]
    return f"bottlerocket@v{version}"


def ec2_node_class(spec: ClusterSpec, node_class: NodeClassSpec, unit: str) -> dict[str, Any]:
    discovery = [{"tags": {KARPENTER_DISCOVERY_TAG: spec.cluster_name}}]
    ebs_common = {"volumeType": "gp3", "encrypted": True, "deleteOnTermination": True}
    return {
        "apiVersion": "karpenter.k8s.aws/v1",
        "kind": "EC2NodeClass",
        "metadata": {"name": node_class.name, "labels": owner_labels(spec.stack, unit)},
        "spec": {
            "role": karpenter_node_role_name(spec),
            "amiSelectorTerms": [{"alias": ami_alias(spec, node_class)}],
            "subnetSelectorTerms": discovery,
            "securityGroupSelectorTerms": discovery,
            # Bottlerocket: /dev/xvda holds the OS, /dev/xvdb images and container data.
            "blockDeviceMappings": [
                {
                    "deviceName": "/dev/xvda",
                    "ebs": {"volumeSize": node_class.os_volume_size, **ebs_common},
                },
                {
                    "deviceName": "/dev/xvdb",
                    "ebs": {
                        "volumeSize": node_class.data_volume_size,
                        "iops": node_class.data_volume_iops,
                        "throughput": node_class.data_volume_throughput_mibps,
                        **ebs_common,
                    },
                },
            ],
            # IMDSv2 only, hop limit 1: pods cannot borrow the node role's credentials.
            "metadataOptions": {
                "httpEndpoint": "enabled",
                "httpProtocolIPv6": "disabled",
                "httpPutResponseHopLimit": 1,
                "httpTokens": "required",
            },
            "tags": {**spec.owner_tags, "Name": f"{spec.cluster_name}-{node_class.name}"},
        },
    }


def nodepool_zones(spec: ClusterSpec, pool: NodePoolSpec) -> tuple[str, ...]:
    """Where a pool may launch: its own zones, else its placement group's zone, else all."""
    if pool.zones:
        return pool.zones
    if pool.node_class.placement_group_wish:
        # Karpenter 1.8.1 cannot launch into the placement group; its zone is the next best.
        return (spec.placement_group.availability_zone,)
    return spec.vpc.availability_zones


def nodepool(spec: ClusterSpec, pool: NodePoolSpec, unit: str) -> dict[str, Any]:
    zones = nodepool_zones(spec, pool)
    requirements = [
        {
            "key": "node.kubernetes.io/instance-type",
            "operator": "In",
            "values": [*pool.instance_types],
        },
        {"key": "karpenter.sh/capacity-type", "operator": "In", "values": [*pool.capacity_types]},
        {"key": "topology.kubernetes.io/zone", "operator": "In", "values": [*zones]},
        {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
        {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
    ]
    if pool.capacity_spread:
        requirements.append(
            {"key": CAPACITY_SPREAD_LABEL, "operator": "In", "values": [*pool.capacity_spread]}
        )
    budgets = []
    for budget in pool.budgets:
        entry: dict[str, Any] = {"nodes": budget.nodes}
        if budget.schedule:
            entry["schedule"] = budget.schedule
            entry["duration"] = budget.duration
        if budget.reasons:
            entry["reasons"] = [*budget.reasons]
        budgets.append(entry)
    template_spec: dict[str, Any] = {
        "nodeClassRef": {
            "group": "karpenter.k8s.aws",
            "kind": "EC2NodeClass",
            "name": pool.node_class.name,
        },
        "requirements": requirements,
        "expireAfter": pool.expire_after,
    }
    if pool.taints:
        template_spec["taints"] = [
            {"key": t.key, "value": t.value, "effect": t.effect} for t in pool.taints
        ]
    if pool.startup_taints:
        template_spec["startupTaints"] = [
            {"key": t.key, "value": t.value, "effect": t.effect} for t in pool.startup_taints
        ]
    return {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodePool",
        "metadata": {"name": pool.name, "labels": owner_labels(spec.stack, unit)},
        "spec": {
            "template": {"metadata": {"labels": pool.labels}, "spec": template_spec},
            "disruption": {
                "consolidationPolicy": pool.consolidation_policy,
                "consolidateAfter": pool.consolidate_after,
                "budgets": budgets,
            },
            "limits": {"cpu": pool.limit_cpu, "memory": pool.limit_memory},
        },
    }


def node_classes(spec: ClusterSpec, unit: str) -> list[dict[str, Any]]:
    return [ec2_node_class(spec, nc, unit) for nc in spec_node_classes(spec.nodepools)]


def nodepools(spec: ClusterSpec, unit: str) -> list[dict[str, Any]]:
    return [nodepool(spec, pool, unit) for pool in spec.nodepools]


# ---- Cilium ------------------------------------------------------------------------------


def workload_namespace(spec: ClusterSpec, name: str, unit: str) -> dict[str, Any]:
    """A namespace for the analysis pods; Pod Security `restricted` keeps them least-privileged."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": {
                **owner_labels(spec.stack, unit),
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
            },
        },
    }


def _policy(spec: ClusterSpec, unit: str, name: str, description: str, body: dict) -> dict:
    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumClusterwideNetworkPolicy",
        "metadata": {"name": f"{POLICY_PREFIX}-{name}", "labels": owner_labels(spec.stack, unit)},
        "spec": {"description": description, **body},
    }


def _and(selector: dict[str, Any], *expressions: dict[str, Any]) -> dict[str, Any]:
    """A Cilium endpoint selector narrowed by more match expressions."""
    return {**selector, "matchExpressions": [*selector.get("matchExpressions", []), *expressions]}


# Pods with and without an egress bandwidth limit (see EGRESS_LIMITED_LABEL): no policy with an
# L7 rule (DNS rules, toFQDNs) may select a limited pod at egress, or Cilium stops enforcing its
# bandwidth.
_LIMITED = {"key": f"k8s:{EGRESS_LIMITED_LABEL}", "operator": "Exists"}
_NOT_LIMITED = {"key": f"k8s:{EGRESS_LIMITED_LABEL}", "operator": "DoesNotExist"}


def network_policies(spec: ClusterSpec, unit: str) -> list[dict[str, Any]]:
    """Default-deny for every non-exempt namespace, then the allowances a cluster needs."""
    cilium = spec.cilium
    kube_dns = [
        {
            "matchLabels": {
                "k8s:io.kubernetes.pod.namespace": "kube-system",
                "k8s:k8s-app": "kube-dns",
            }
        }
    ]
    dns_ports = [{"port": "53", "protocol": "UDP"}, {"port": "53", "protocol": "TCP"}]
    governed = {
        "matchExpressions": [
            {
                "key": "k8s:io.kubernetes.pod.namespace",
                "operator": "NotIn",
                "values": [*cilium.default_deny_exempt_namespaces],
            }
        ]
    }
    policies = [
        # An empty rule selects the endpoints into default-deny without allowing anything.
        _policy(
            spec,
            unit,
            "default-deny",
            "Deny all ingress and egress of pods outside the system namespaces unless allowed.",
            {"endpointSelector": governed, "ingress": [{}], "egress": [{}]},
        ),
        _policy(
            spec,
            unit,
            "allow-dns",
            "Let every pod resolve names through kube-dns (and let Cilium see the answers, "
            "which toFQDNs rules need); pods with an egress bandwidth limit are left out.",
            {
                "endpointSelector": _and(governed, _NOT_LIMITED),
                "egress": [
                    {
                        "toEndpoints": kube_dns,
                        "toPorts": [
                            {"ports": dns_ports, "rules": {"dns": [{"matchPattern": "*"}]}}
                        ],
                    }
                ],
            },
        ),
        _policy(
            spec,
            unit,
            "allow-dns-bandwidth-limited",
            "Let pods with an egress bandwidth limit resolve names at L4 only: an L7 DNS rule "
            "would turn their bandwidth enforcement off.",
            {
                "endpointSelector": _and(governed, _LIMITED),
                "egress": [{"toEndpoints": kube_dns, "toPorts": [{"ports": dns_ports}]}],
            },
        ),
        _policy(
            spec,
            unit,
            "allow-kube-apiserver",
            "Let pods outside the workload namespaces reach the Kubernetes API; in those, "
            "gpu-dagster's policies let the Dagster components and run pods reach it.",
            {
                "endpointSelector": _and(
                    governed,
                    {
                        "key": "k8s:io.kubernetes.pod.namespace",
                        "operator": "NotIn",
                        "values": [*cilium.workload_namespaces],
                    },
                ),
                "egress": [{"toEntities": ["kube-apiserver"]}],
            },
        ),
    ]
    agent_port = {"port": str(cilium.pod_identity_agent_port), "protocol": "TCP"}
    for namespace in cilium.workload_namespaces:
        in_namespace = {"matchLabels": {"k8s:io.kubernetes.pod.namespace": namespace}}
        policies.append(
            _policy(
                spec,
                unit,
                f"allow-aws-apis-{namespace}",
                f"Pods in {namespace} may call AWS APIs (S3 videos and results) over HTTPS.",
                {
                    "endpointSelector": _and(in_namespace, _NOT_LIMITED),
                    "egress": [
                        {
                            "toFQDNs": [
                                {"matchPattern": p} for p in cilium.allowed_egress_fqdn_patterns
                            ],
                            "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}],
                        }
                    ],
                },
            )
        )
        policies.append(
            _policy(
                spec,
                unit,
                f"allow-https-bandwidth-limited-{namespace}",
                f"Pods in {namespace} with an egress bandwidth limit may call AWS APIs over "
                "HTTPS by address (toFQDNs needs an L7 DNS rule, which would lift their limit).",
                {
                    "endpointSelector": _and(in_namespace, _LIMITED),
                    "egress": [
                        {
                            "toCIDRSet": [
                                {
                                    "cidr": "0.0.0.0/0",
                                    "except": [*cilium.bandwidth_limited_https_except],
                                }
                            ],
                            "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}],
                        }
                    ],
                },
            )
        )
        policies.append(
            _policy(
                spec,
                unit,
                f"allow-pod-identity-agent-{namespace}",
                f"Pods in {namespace} may fetch their AWS credentials from the Pod Identity agent.",
                {
                    "endpointSelector": in_namespace,
                    # The agent's addresses belong to the node, which Cilium labels `host`:
                    # a CIDR rule alone would not match them.
                    "egress": [
                        {
                            "toCIDR": [*cilium.pod_identity_agent_cidrs],
                            "toPorts": [{"ports": [agent_port]}],
                        },
                        {"toEntities": ["host"], "toPorts": [{"ports": [agent_port]}]},
                    ],
                },
            )
        )
    return policies


def cilium_objects(spec: ClusterSpec, unit: str) -> list[dict[str, Any]]:
    """The plain objects of the Cilium unit, in apply order (namespaces before policies)."""
    return [
        *(workload_namespace(spec, ns, unit) for ns in spec.cilium.workload_namespaces),
        *network_policies(spec, unit),
    ]


def cilium_values(spec: ClusterSpec) -> dict[str, Any]:
    return spec.cilium.helm_values(spec.cluster_name)


def karpenter_values(spec: ClusterSpec) -> dict[str, Any]:
    return spec.karpenter_controller.helm_values(
        spec.cluster_name,
        karpenter_interruption_queue_name(spec),
        spec.karpenter_iam.service_account,
    )
