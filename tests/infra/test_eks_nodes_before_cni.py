"""gpu-eks creates the system nodes without waiting; gpu-cilium gives them a network, then waits.

On a real account a managed node group whose nodes find no network plugin never becomes ACTIVE:
EKS marks it CREATE_FAILED (terraform-aws-eks #1972, #3446). The emulator does the same after
3 s (tests/emulators/aws.py), and says the CNI runs once the fake helm has deployed "cilium".
"""

from __future__ import annotations

import time

import boto3
import pytest

from infra_assets.spec import ClusterSpec
from infra_assets.unit import UnitContext
from infra_assets.units.cilium import CiliumUnit
from infra_assets.units.eks import EksUnit, NodeGroupFailed
from infra_assets.units.vpc import VpcUnit
from tests.emulators.aws import TEST_TIMINGS, cni_from_helm
from tests.infra.k8s.conftest import FAKE_HELM


@pytest.fixture
def stack_ctx(aws: boto3.Session, kube_api, tmp_path, monkeypatch) -> UnitContext:
    """AWS on the moto server and the cluster on the Kubernetes emulator, with the fake helm."""
    monkeypatch.setenv("FAKE_HELM_LOG", str(tmp_path / "helm.jsonl"))
    return UnitContext(
        spec=ClusterSpec(),
        aws=aws,
        kube=kube_api.api_client(),
        helm_binary=str(FAKE_HELM),
    )


def nodegroup(ctx: UnitContext) -> dict:
    return ctx.aws.client("eks").describe_nodegroup(
        clusterName=ctx.spec.cluster_name, nodegroupName=ctx.spec.eks.system_node_group.name
    )["nodegroup"]


def wait_for_status(ctx: UnitContext, status: str, timeout_s: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        group = nodegroup(ctx)
        if group["status"] == status:
            return group
        time.sleep(0.2)
    raise AssertionError(f"node group still {group['status']}, expected {status}")


def test_gpu_eks_does_not_wait_for_nodes_and_gpu_cilium_brings_them_up(
    stack_ctx, aws_server, kube_api
):
    aws_server.cni_ready = cni_from_helm(kube_api.store)
    VpcUnit(stack_ctx).apply()

    started = time.monotonic()
    EksUnit(stack_ctx).apply()
    # Returned before the nodes could fail for want of a network (the emulator's join timeout):
    # waiting for ACTIVE here is what made the first apply stop at gpu_eks.
    assert time.monotonic() - started < TEST_TIMINGS.nodes_join_timeout_s + 10
    assert nodegroup(stack_ctx)["status"] in ("CREATING", "ACTIVE")

    result = CiliumUnit(stack_ctx).apply()

    assert result.outputs["system_nodegroup_status"] == "ACTIVE"
    assert nodegroup(stack_ctx)["status"] == "ACTIVE"
    plan = EksUnit(stack_ctx).plan()
    assert not plan.has_changes, plan.as_text()


def test_gpu_cilium_says_clearly_when_the_node_group_failed(stack_ctx, aws_server):
    aws_server.cni_ready = lambda _cluster: False  # Cilium's pods never come up
    VpcUnit(stack_ctx).apply()
    EksUnit(stack_ctx).apply()
    wait_for_status(stack_ctx, "CREATE_FAILED")

    with pytest.raises(NodeGroupFailed) as failure:
        CiliumUnit(stack_ctx).apply()

    message = str(failure.value)
    assert "CREATE_FAILED" in message and "NodeCreationFailure" in message
    assert "materialize gpu_eks again" in message


def test_a_failed_node_group_is_replaced_not_kept(stack_ctx, aws_server):
    aws_server.cni_ready = lambda _cluster: False
    VpcUnit(stack_ctx).apply()
    EksUnit(stack_ctx).apply()
    failed = wait_for_status(stack_ctx, "CREATE_FAILED")

    plan = EksUnit(stack_ctx).plan()

    actions = [c.action for c in plan.changes if c.kind == "eks-nodegroup"]
    assert actions == ["delete", "create"], plan.as_text()
    (delete,) = [c for c in plan.changes if c.kind == "eks-nodegroup" and c.action == "delete"]
    assert [(d.path, d.observed) for d in delete.diffs] == [("status", "CREATE_FAILED")]
    assert any("CREATE_FAILED" in w and "NodeCreationFailure" in w for w in plan.warnings)

    aws_server.cni_ready = lambda _cluster: True  # the network plugin is there now
    EksUnit(stack_ctx).apply()

    replaced = wait_for_status(stack_ctx, "ACTIVE")
    assert replaced["createdAt"] > failed["createdAt"]
    assert not EksUnit(stack_ctx).plan().has_changes
