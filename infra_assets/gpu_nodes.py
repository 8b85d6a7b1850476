"""gpu_allocatable: every running node of a GPU NodePool offers nvidia.com/gpu to pods."""

# Seeds 001/003 make this the verification step of the GPU pools: a node Karpenter launched
# for a GPU pool is useless until the NVIDIA device plugin publishes `nvidia.com/gpu` in the
# node's status.allocatable (Bottlerocket's NVIDIA variants run the plugin themselves). A GPU
# step pod requests one, so on a node without it the pod stays Pending while the node costs.

# No `from __future__ import annotations`: Dagster reads the context/resource annotations.
import dataclasses

import dagster as dg
from kubernetes.utils.quantity import parse_quantity

from infra_assets.kube import Kube
from infra_assets.resources import InfraResource
from infra_assets.spec import ClusterSpec
from infra_assets.spec.kubernetes import GPU_RESOURCE, NODEPOOL_LABEL

CHECK_NAME = "gpu_allocatable"
CHECKED_ASSET = "gpu_karpenter_nodepools"
NO_GPU_NODES = "no GPU nodes running; scale-from-zero"


@dataclasses.dataclass(frozen=True)
class GpuNode:
    """One node of a GPU NodePool as the API reports it."""

    name: str
    nodepool: str
    allocatable_gpus: int
    ready: bool

    def __str__(self) -> str:
        state = "" if self.ready else ", not Ready"
        return f"{self.name} (pool {self.nodepool}, {GPU_RESOURCE}={self.allocatable_gpus}{state})"


@dataclasses.dataclass(frozen=True)
class GpuNodesReport:
    nodes: tuple[GpuNode, ...]

    @property
    def without_gpu(self) -> tuple[GpuNode, ...]:
        return tuple(n for n in self.nodes if n.allocatable_gpus < 1)

    @property
    def passed(self) -> bool:
        return not self.without_gpu

    def description(self) -> str:
        if not self.nodes:
            return NO_GPU_NODES
        if self.passed:
            return f"{len(self.nodes)} GPU node(s), each with allocatable {GPU_RESOURCE} >= 1"
        names = "; ".join(str(n) for n in self.without_gpu)
        return (
            f"{len(self.without_gpu)} of {len(self.nodes)} GPU node(s) have no allocatable "
            f"{GPU_RESOURCE} (is the NVIDIA device plugin running there?): {names}"
        )


def gpu_nodepools(spec: ClusterSpec) -> list[str]:
    """The NodePools whose nodes must offer a GPU: those the spec gives a GPU model."""
    return [pool.name for pool in spec.nodepools if pool.gpu]


def _allocatable_gpus(node: dict) -> int:
    value = ((node.get("status") or {}).get("allocatable") or {}).get(GPU_RESOURCE)
    return int(parse_quantity(value)) if value is not None else 0


def _ready(node: dict) -> bool:
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def observe_gpu_nodes(kube: Kube, pools: list[str]) -> GpuNodesReport:
    """The nodes of these NodePools (by Karpenter's karpenter.sh/nodepool label)."""
    nodes = []
    for node in kube.list("Node", label_selector=NODEPOOL_LABEL):
        pool = ((node.get("metadata") or {}).get("labels") or {}).get(NODEPOOL_LABEL)
        if pool in pools:
            nodes.append(
                GpuNode(node["metadata"]["name"], pool, _allocatable_gpus(node), _ready(node))
            )
    return GpuNodesReport(tuple(sorted(nodes, key=lambda n: n.name)))


@dg.asset_check(
    asset=CHECKED_ASSET,
    name=CHECK_NAME,
    description=f"Every node of a GPU NodePool has allocatable {GPU_RESOURCE} >= 1",
)
def gpu_allocatable_check(
    context: dg.AssetCheckExecutionContext, infra: InfraResource
) -> dg.AssetCheckResult:
    ctx = infra.unit_context(log=context.log)
    if ctx.kube is None:
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            description="cannot observe: no Kubernetes cluster is configured "
            "(no kubeconfig, no in-cluster config)",
        )
    pools = gpu_nodepools(ctx.spec)
    report = observe_gpu_nodes(Kube(ctx.kube), pools)
    return dg.AssetCheckResult(
        passed=report.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=report.description(),
        metadata={
            "gpu_nodepools": ", ".join(pools),
            "gpu_nodes": len(report.nodes),
            "gpu_nodes_without_gpu": ", ".join(n.name for n in report.without_gpu) or "none",
        },
    )
