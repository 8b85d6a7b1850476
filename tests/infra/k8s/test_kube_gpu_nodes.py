"""The gpu_allocatable check reads the Nodes of the GPU NodePools from the Kubernetes API.

Nodes are written into the API emulator as the kubelet and the NVIDIA device plugin would
publish them; the check runs in a Dagster job on a real (ephemeral) instance and finds the
cluster through the standard kubeconfig.
"""

from __future__ import annotations

import json

import dagster as dg
import pytest

from gpu_analysis.profile import load_profile
from infra_assets.gpu_nodes import NO_GPU_NODES, gpu_allocatable_check
from infra_assets.helm import kubeconfig_for
from infra_assets.resources import InfraResource


def node(name: str, pool: str | None, gpus: str | None, ready: bool = True) -> dict:
    labels = {"kubernetes.io/os": "linux"}
    if pool:
        labels["karpenter.sh/nodepool"] = pool
    allocatable = {"cpu": "3920m", "memory": "15147604Ki", "pods": "58"}
    if gpus is not None:
        allocatable["nvidia.com/gpu"] = gpus
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "status": {
            "allocatable": allocatable,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


@pytest.fixture
def kubeconfig(kube_api, tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(kubeconfig_for(kube_api.api_client())))
    monkeypatch.setenv("KUBECONFIG", str(path))
    return path


def run_check() -> dg.AssetCheckEvaluation:
    job = dg.define_asset_job(
        "gpu_check", selection=dg.AssetSelection.checks(gpu_allocatable_check)
    )
    defs = dg.Definitions(
        assets=[dg.AssetSpec("gpu_karpenter_nodepools")],
        asset_checks=[gpu_allocatable_check],
        jobs=[job],
        resources={"infra": InfraResource.from_profile(load_profile("staging"))},
    )
    with dg.DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def("gpu_check").execute_in_process(instance=instance)
    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.asset_key == dg.AssetKey("gpu_karpenter_nodepools")
    assert evaluation.check_name == "gpu_allocatable"
    return evaluation


def test_no_gpu_nodes_passes_as_scale_from_zero(kube_api, kubeconfig):
    kube_api.store.put("", "v1", "nodes", "", node("ip-10-152-0-10", None, None))  # system
    kube_api.store.put("", "v1", "nodes", "", node("ip-10-152-0-11", "cpu-coordination-spot", None))
    evaluation = run_check()
    assert evaluation.passed
    assert evaluation.description == NO_GPU_NODES


def test_every_gpu_node_with_an_allocatable_gpu_passes(kube_api, kubeconfig):
    kube_api.store.put("", "v1", "nodes", "", node("ip-10-152-0-20", "gpu-inference", "1"))
    kube_api.store.put("", "v1", "nodes", "", node("ip-10-152-0-21", "gpu-preprocessing-spot", "1"))
    evaluation = run_check()
    assert evaluation.passed
    assert evaluation.description.startswith("2 GPU node(s)")


def test_a_gpu_node_without_the_device_plugin_fails_and_is_named(kube_api, kubeconfig):
    kube_api.store.put("", "v1", "nodes", "", node("ip-10-152-0-20", "gpu-inference", "1"))
    # No device plugin: the resource is absent; a plugin that lost the GPU reports 0.
    kube_api.store.put("", "v1", "nodes", "", node("ip-10-152-0-30", "gpu-inference", None))
    kube_api.store.put(
        "", "v1", "nodes", "", node("ip-10-152-0-31", "gpu-preprocessing-on-demand", "0", False)
    )
    kube_api.store.put("", "v1", "nodes", "", node("ip-10-152-0-40", "cpu-coordination-spot", None))
    evaluation = run_check()
    assert not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    text = evaluation.description
    assert text.startswith("2 of 3 GPU node(s) have no allocatable nvidia.com/gpu")
    assert "ip-10-152-0-30 (pool gpu-inference, nvidia.com/gpu=0)" in text
    assert "ip-10-152-0-31 (pool gpu-preprocessing-on-demand, nvidia.com/gpu=0, not Ready)" in text
    assert "ip-10-152-0-20" not in text and "ip-10-152-0-40" not in text
    assert evaluation.metadata["gpu_nodes_without_gpu"].value == "ip-10-152-0-30, ip-10-152-0-31"


def test_without_a_cluster_the_check_warns_that_it_cannot_observe(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    evaluation = run_check()
    assert not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.WARN
    assert "no Kubernetes cluster is configured" in evaluation.description
