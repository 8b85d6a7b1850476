"""The Helm values the project generates, against the real Cilium 1.16.5 and Karpenter 1.8.1."""

from __future__ import annotations

import copy

import pytest

from infra_assets import manifests
from infra_assets.spec import ClusterSpec
from tests.upstream import helm_values

SPEC = ClusterSpec()


cilium_errors = helm_values.cilium_values_errors
karpenter_errors = helm_values.karpenter_values_errors


def test_the_cilium_values_pass_the_charts_schema_with_no_unknown_key():
    assert cilium_errors(manifests.cilium_values(SPEC)) == []


def test_the_karpenter_values_use_only_keys_of_the_charts_values_yaml():
    assert karpenter_errors(manifests.karpenter_values(SPEC)) == []


@pytest.mark.parametrize(
    ("edit", "error"),
    [
        (
            lambda v: v["encryption"].__setitem__("wireguard", {"userspaceFallbak": True}),
            "encryption.wireguard.userspaceFallbak: unknown key (not in the chart's values.schema",
        ),
        (
            lambda v: v.__setitem__("egressMasqueradeInterface", "eth+"),
            "egressMasqueradeInterface: unknown key",
        ),
        (
            lambda v: v["hubble"]["relay"].__setitem__("enabled", "yes"),
            "hubble.relay.enabled: 'yes' is not of type 'boolean'",
        ),
        (lambda v: v["ipam"].__setitem__("mode", 3), "ipam.mode: 3 is not of type 'string'"),
        (
            lambda v: v.__setitem__("bandwidthManager", True),
            "bandwidthManager: True is not of type 'object'",
        ),
    ],
    ids=[
        "unknown-nested-key",
        "misspelt-top-level-key",
        "string-for-bool",
        "int-for-string",
        "bool-for-map",
    ],
)
def test_cilium_probes_are_rejected(edit, error):
    values = copy.deepcopy(manifests.cilium_values(SPEC))
    edit(values)
    assert error in "\n".join(cilium_errors(values))


def test_free_form_cilium_maps_take_any_key():
    values = copy.deepcopy(manifests.cilium_values(SPEC))
    values["podAnnotations"] = {"example.com/anything": "x"}
    values["operator"] = {"podLabels": {"team": "vision"}}
    assert cilium_errors(values) == []


@pytest.mark.parametrize(
    ("edit", "error"),
    [
        (
            lambda v: v["settings"].__setitem__("clusterNam", "x"),
            "settings.clusterNam: unknown key (not in the chart's values.yaml)",
        ),
        (lambda v: v.__setitem__("replica", 2), "replica: unknown key"),
        (
            lambda v: v["podDisruptionBudget"].__setitem__("minAvailable", 1),
            "podDisruptionBudget.minAvailable: unknown key",
        ),
        (
            lambda v: v.__setitem__("replicas", "2"),
            'replicas: "2" is a string, the chart\'s default is a number (2)',
        ),
        (
            lambda v: v["serviceAccount"].__setitem__("create", "true"),
            'serviceAccount.create: "true" is a string, the chart\'s default is a boolean',
        ),
    ],
    ids=[
        "unknown-settings-key",
        "misspelt-top-level-key",
        "key-the-chart-lacks",
        "string-for-int",
        "string-for-bool",
    ],
)
def test_karpenter_probes_are_rejected(edit, error):
    values = copy.deepcopy(manifests.karpenter_values(SPEC))
    edit(values)
    assert error in "\n".join(karpenter_errors(values))


def test_free_form_karpenter_maps_take_any_key():
    values = copy.deepcopy(manifests.karpenter_values(SPEC))
    values["serviceAccount"]["annotations"] = {"example.com/role": "x"}
    values["podAnnotations"] = {"karpenter.sh/do-not-disrupt": "true"}
    assert karpenter_errors(values) == []
