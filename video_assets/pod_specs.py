"""The one place that builds the pod of a GPU step from the profile: pool, GPU, limits, security."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from gpu_analysis.profile import Profile
from infra_assets.spec.kubernetes import (
    CAPACITY_SPREAD_LABEL,
    DO_NOT_DISRUPT_ANNOTATION,
    EGRESS_BANDWIDTH_ANNOTATION,
    EGRESS_LIMITED_LABEL,
    NODEPOOL_LABEL,
    default_nodepools,
    nodepool_names,
)

Step = Literal["preprocess", "infer"]
STEPS: tuple[Step, ...] = ("preprocess", "infer")

STEP_LABEL = "gpu-analysis/step"
WORKER_SERVICE_ACCOUNT = "gpu-analysis-worker"  # bound to an IAM role by EKS Pod Identity
WORKER_UID = 10001  # the non-root user of deploy/worker.Dockerfile
SCRATCH_DIR = "/tmp"


@dataclasses.dataclass(frozen=True)
class StepResources:
    cpu: str
    memory: str
    ephemeral_storage: str
    scratch_size: str
    # Cilium Bandwidth Manager limit on the pod's egress (bits/s): below the baseline of the
    # smallest instance of the pools (g5.xlarge: 2.5 Gbit/s), so a step writing its shards to
    # S3 leaves the node's kubelet, image pulls and Hubble traffic room.
    egress_bandwidth: str = "2G"


# Sized to one g4dn.xlarge / g5.xlarge (4 vCPU, 16 GiB) less the node's system reservation, so
# Karpenter can start the smallest instance of the pool for one step.
RESOURCES: dict[Step, StepResources] = {
    "preprocess": StepResources(
        cpu="3", memory="12Gi", ephemeral_storage="40Gi", scratch_size="40Gi"
    ),
    "infer": StepResources(cpu="3", memory="12Gi", ephemeral_storage="20Gi", scratch_size="20Gi"),
}


@dataclasses.dataclass(frozen=True)
class StepPod:
    """Metadata and spec of a step pod, camelCase as the Kubernetes API writes them."""

    step: Step
    meta: dict[str, Any]
    spec: dict[str, Any]

    def manifest(self, name: str = "worker") -> dict[str, Any]:
        """The pod as a whole object, for `kubectl` and schema validation."""
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, **self.meta},
            "spec": self.spec,
        }


def _role(profile: Profile, step: Step) -> str:
    return (
        profile.nodepool_gpu_preprocessing
        if step == "preprocess"
        else profile.nodepool_gpu_inference
    )


def nodepools_for(profile: Profile, step: Step) -> tuple[list[str], bool]:
    """The Karpenter NodePools serving a step's role, and whether they split on capacity-spread."""
    return _role_pools(_role(profile, step))


def _role_pools(role: str) -> tuple[list[str], bool]:
    """The infrastructure spec knows how a role is split into spot and on-demand pools; a role it
    does not declare (a profile naming another cluster's pool) is its own only pool."""
    pools = [p for p in default_nodepools() if p.role == role]
    if not pools:
        return [role], False
    return nodepool_names(role), any(p.capacity_spread for p in pools)


def _pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": WORKER_UID,
        "runAsGroup": WORKER_UID,
        "fsGroup": WORKER_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _container_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": WORKER_UID,
        "runAsGroup": WORKER_UID,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _pinned_to(pools: list[str]) -> dict[str, Any]:
    """Node affinity: only nodes that Karpenter launched for one of these NodePools."""
    term = {"matchExpressions": [{"key": NODEPOOL_LABEL, "operator": "In", "values": pools}]}
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}
        }
    }


def _capacity_spread(label: str, value: str) -> list[dict[str, Any]]:
    # The role's pools carry capacity-spread values in the spot/on-demand ratio; spreading pods
    # evenly over those values gives the same ratio of spot to on-demand nodes.
    return [
        {
            "maxSkew": 1,
            "topologyKey": CAPACITY_SPREAD_LABEL,
            "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {label: value}},
        }
    ]


def step_pod(profile: Profile, step: Step) -> StepPod:
    if step not in STEPS:
        raise ValueError(f"unknown GPU step {step!r}; expected one of {', '.join(STEPS)}")
    pools, spread = nodepools_for(profile, step)
    size = RESOURCES[step]
    labels = {
        "app.kubernetes.io/name": "gpu-analysis",
        STEP_LABEL: step,
        # The policies keep L7 rules off labelled pods; with one, Cilium ignores the limit.
        EGRESS_LIMITED_LABEL: "true",
    }
    annotations = {
        # A step killed by consolidation loses its GPU work; Karpenter leaves the node alone
        # while the pod runs (the pod ends; the node is consolidated after).
        DO_NOT_DISRUPT_ANNOTATION: "true",
        EGRESS_BANDWIDTH_ANNOTATION: size.egress_bandwidth,
    }
    container = {
        "name": "worker",
        "image": profile.image,
        "command": ["python", "-m", f"gpu_analysis.workers.{step}"],
        "env": [
            {"name": "AWS_REGION", "value": profile.aws_region},
            {"name": "GPU_ANALYSIS_PROFILE", "value": profile.name},
            # A read-only root filesystem: every library cache goes to the scratch volume.
            {"name": "HOME", "value": SCRATCH_DIR},
            {"name": "TMPDIR", "value": SCRATCH_DIR},
        ],
        "resources": {
            "requests": {
                "cpu": size.cpu,
                "memory": size.memory,
                "ephemeral-storage": size.ephemeral_storage,
                "nvidia.com/gpu": "1",
            },
            "limits": {
                "memory": size.memory,
                "ephemeral-storage": size.ephemeral_storage,
                "nvidia.com/gpu": "1",
            },
        },
        "securityContext": _container_security_context(),
        "volumeMounts": [{"name": "scratch", "mountPath": SCRATCH_DIR}],
    }
    spec: dict[str, Any] = {
        "serviceAccountName": WORKER_SERVICE_ACCOUNT,
        # Workers never call the Kubernetes API; Pod Identity mounts its own token.
        "automountServiceAccountToken": False,
        "restartPolicy": "Never",  # Dagster's RetryPolicy retries a step, not the kubelet
        "securityContext": _pod_security_context(),
        "affinity": _pinned_to(pools),
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "containers": [container],
        "volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": size.scratch_size}}],
        # A spot reclaim gives two minutes' notice; the step is retried, so exit promptly.
        "terminationGracePeriodSeconds": 30,
    }
    if spread:
        spec["topologySpreadConstraints"] = _capacity_spread(STEP_LABEL, step)
    meta = {"namespace": profile.namespace, "labels": labels, "annotations": annotations}
    return StepPod(step=step, meta=meta, spec=spec)


COORDINATION_ROLE_LABEL = "gpu-analysis/role"
RUN_SCRATCH_SIZE = "30Gi"  # one match video copy for probing and checksums, on a 50Gi node
RUN_POD_CPU = "1"  # the run pod's vCPU request; the CPU steps run in it (match_cost prices it)


def run_pod_k8s_config(profile: Profile) -> dict[str, Any]:
    """The `dagster-k8s/config` of a `process_match` run pod: the CPU steps run in it.

    It goes on the CPU coordination pools (spread over capacity-spread for their spot/on-demand
    split), non-root with a read-only root filesystem; `/tmp` holds the profile's scratch.
    """
    names, spread = _role_pools(profile.nodepool_cpu)
    labels = {"app.kubernetes.io/name": "gpu-analysis", COORDINATION_ROLE_LABEL: "run"}
    pod_spec: dict[str, Any] = {
        "securityContext": _pod_security_context(),
        "affinity": _pinned_to(names),
        "volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": RUN_SCRATCH_SIZE}}],
    }
    if spread:
        pod_spec["topologySpreadConstraints"] = _capacity_spread(COORDINATION_ROLE_LABEL, "run")
    return {
        # The run pod coordinates the whole match; consolidation must not evict it mid-run.
        "pod_template_spec_metadata": {
            "labels": labels,
            "annotations": {DO_NOT_DISRUPT_ANNOTATION: "true"},
        },
        "pod_spec_config": pod_spec,
        "container_config": {
            "resources": {
                "requests": {
                    "cpu": RUN_POD_CPU,
                    "memory": "4Gi",
                    "ephemeral-storage": RUN_SCRATCH_SIZE,
                },
                "limits": {"memory": "4Gi", "ephemeral-storage": RUN_SCRATCH_SIZE},
            },
            "securityContext": _container_security_context(),
            "volumeMounts": [{"name": "scratch", "mountPath": SCRATCH_DIR}],
        },
    }
