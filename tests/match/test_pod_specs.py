"""The GPU step pods on the staging profile: valid Kubernetes 1.32 objects on the right pools."""

from __future__ import annotations

import shutil
import subprocess
import sys

import dagster as dg
import kubernetes
import kubernetes_validate
import pytest
from dagster_k8s.job import (
    DagsterK8sJobConfig,
    construct_dagster_k8s_job,
    get_user_defined_k8s_config,
)
from dagster_k8s.pipes import build_pod_body

from gpu_analysis.profile import load_profile
from infra_assets.spec.kubernetes import GPU_TAINT, default_nodepools
from tests.conftest import REPO_ROOT, subprocess_env
from video_assets.definitions import build_definitions
from video_assets.pod_specs import STEPS, WORKER_UID, step_pod

EXPECTED_POOLS = {
    "preprocess": ("T4", ["gpu-preprocessing-spot", "gpu-preprocessing-on-demand"]),
    "infer": ("A10G", ["gpu-inference"]),
}


@pytest.fixture
def staging():
    return load_profile("staging")


def _as_api_dict(pod) -> dict:
    return kubernetes.client.ApiClient().sanitize_for_serialization(pod)


@pytest.mark.parametrize("step", STEPS)
def test_pod_as_launched_validates_against_kubernetes_1_32(staging, step):
    pod = step_pod(staging, step)
    kubernetes_validate.validate(pod.manifest(), "1.32", strict=True)
    # What PipesK8sClient sends: our spec merged with Dagster's name, labels and Pipes env.
    body = build_pod_body(
        pod_name=f"dagster-{step}-0123abcd",
        image=staging.image,
        command=["python", "-m", f"gpu_analysis.workers.{step}"],
        env_vars={"DAGSTER_PIPES_CONTEXT": "eyJ4IjogMX0=", "DAGSTER_PIPES_MESSAGES": "e30="},
        base_pod_meta=pod.meta,
        base_pod_spec=pod.spec,
    )
    launched = {"apiVersion": "v1", "kind": "Pod", **_as_api_dict(body)}
    kubernetes_validate.validate(launched, "1.32", strict=True)
    container = launched["spec"]["containers"][0]
    assert container["image"] == staging.image
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize("step", STEPS)
def test_pod_pins_to_its_node_pools_and_gpu(staging, step):
    gpu, pools = EXPECTED_POOLS[step]
    spec = step_pod(staging, step).spec
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    [term] = terms["nodeSelectorTerms"]
    [expression] = term["matchExpressions"]
    assert expression == {"key": "karpenter.sh/nodepool", "operator": "In", "values": pools}
    declared = {p.name: p for p in default_nodepools()}
    for name in pools:
        assert declared[name].gpu == gpu
        assert GPU_TAINT in declared[name].taints
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]
    resources = spec["containers"][0]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == "1"
    assert resources["requests"]["cpu"] and resources["requests"]["memory"]


def test_only_the_split_pools_get_the_capacity_spread(staging):
    preprocess = step_pod(staging, "preprocess").spec
    [spread] = preprocess["topologySpreadConstraints"]
    assert spread["topologyKey"] == "capacity-spread"
    assert spread["labelSelector"] == {"matchLabels": {"gpu-analysis/step": "preprocess"}}
    # The inference pool is all on-demand and its nodes carry no capacity-spread label: a
    # DoNotSchedule spread on it would leave the pod pending for ever.
    assert "topologySpreadConstraints" not in step_pod(staging, "infer").spec


@pytest.mark.parametrize("step", STEPS)
def test_pod_runs_unprivileged_with_pod_identity(staging, step):
    spec = step_pod(staging, step).spec
    container = spec["containers"][0]
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == WORKER_UID
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["serviceAccountName"] == "gpu-analysis-worker"
    assert {"name": "scratch", "mountPath": "/tmp"} in container["volumeMounts"]
    assert any(v["name"] == "scratch" and "emptyDir" in v for v in spec["volumes"])
    names = {e["name"] for e in container["env"]}
    assert not names & {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}


def test_gpu_steps_claim_pools_and_retry(staging):
    defs = build_definitions(staging)
    graph = defs.get_repository_def().asset_graph
    frames = defs.get_assets_def("match_frames")
    detections = defs.get_assets_def("match_detections")
    assert frames.op.pool == "gpu-t4"
    assert detections.op.pool == "gpu-a10g"
    policy = frames.op.retry_policy
    assert policy.max_retries == 3 and policy.backoff is not None and policy.delay > 0
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {
        "match_video",
        "match_frames",
        "match_detections",
        "match_temperature_map",
        "match_delivery",
        "match_costs_daily",  # group costs: read from the event log, not part of a match run
    }
    job = defs.resolve_job_def("process_match")
    assert job.partitions_def is not None and job.partitions_def.name == "matches"


def test_pool_limits_come_from_the_profile(staging, instance):
    from video_assets.pools import apply_pool_limits

    assert apply_pool_limits(instance, staging) == {"gpu-t4": 4, "gpu-a10g": 4}
    for pool in ("gpu-t4", "gpu-a10g"):
        assert instance.event_log_storage.get_concurrency_info(pool).slot_count == 4


def _run_pod_job(staging) -> dict:
    """The Job K8sRunLauncher builds for a process_match run from its dagster-k8s/config tag."""
    job = build_definitions(staging).resolve_job_def("process_match")
    user_config = get_user_defined_k8s_config(job.tags)  # raises on a malformed tag
    launcher_config = DagsterK8sJobConfig(
        job_image=staging.image,
        dagster_home="/opt/dagster/dagster_home",
        instance_config_map="dagster-instance",
        image_pull_policy="IfNotPresent",
    )
    k8s_job = construct_dagster_k8s_job(
        launcher_config,
        ["dagster", "api", "execute_run", "{}"],
        "dagster-run-0123abcd",
        user_config,
        pod_name="dagster-run-0123abcd",
        component="run_worker",
    )
    return {"apiVersion": "batch/v1", "kind": "Job", **_as_api_dict(k8s_job)}


def test_run_pod_of_process_match_goes_to_the_cpu_pools_and_validates(staging):
    """K8sRunLauncher builds the run pod from the job's dagster-k8s/config tag."""
    manifest = _run_pod_job(staging)
    kubernetes_validate.validate(manifest, "1.32", strict=True)
    spec = manifest["spec"]["template"]["spec"]
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    [expression] = terms["nodeSelectorTerms"][0]["matchExpressions"]
    assert expression["values"] == ["cpu-coordination-spot", "cpu-coordination-on-demand"]
    assert spec["topologySpreadConstraints"][0]["topologyKey"] == "capacity-spread"
    assert spec["securityContext"]["runAsUser"] == WORKER_UID
    container = spec["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # The profile's scratch (data_root) lives on the writable emptyDir.
    assert str(staging.data_root).startswith("/tmp")
    assert {"name": "scratch", "mountPath": "/tmp"} in container["volumeMounts"]


def test_local_runs_carry_no_kubernetes_config():
    job = build_definitions(load_profile("local")).resolve_job_def("process_match")
    assert "dagster-k8s/config" not in job.tags


def test_pools_module_sets_the_active_profiles_limits(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    env = subprocess_env(DAGSTER_HOME=str(home), GPU_ANALYSIS_GPU_T4_POOL_LIMIT="3")
    done = subprocess.run(
        [sys.executable, "-m", "video_assets.pools"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "pools: gpu-t4=3, gpu-a10g=1"
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.event_log_storage.get_concurrency_info("gpu-t4").slot_count == 3


def _launched_step_pod(staging, step) -> dict:
    """A step pod as PipesK8sClient sends it: our meta and spec merged with Dagster's."""
    pod = step_pod(staging, step)
    body = build_pod_body(
        pod_name=f"dagster-{step}-0123abcd",
        image=staging.image,
        command=["python", "-m", f"gpu_analysis.workers.{step}"],
        env_vars={"DAGSTER_PIPES_CONTEXT": "eyJ4IjogMX0="},
        base_pod_meta=pod.meta,
        base_pod_spec=pod.spec,
    )
    return {"apiVersion": "v1", "kind": "Pod", **_as_api_dict(body)}


@pytest.mark.parametrize("step", STEPS)
def test_step_pods_cannot_be_evicted_by_consolidation(staging, step):
    """Karpenter docs, Disruption, Pod-Level Controls: karpenter.sh/do-not-disrupt blocks
    voluntary disruption of the pod's node while it runs."""
    launched = _launched_step_pod(staging, step)
    kubernetes_validate.validate(launched, "1.32", strict=True)
    assert launched["metadata"]["annotations"]["karpenter.sh/do-not-disrupt"] == "true"


def test_the_run_pod_cannot_be_evicted_by_consolidation(staging):
    """The run pod sits on the CPU pools, which consolidate after 1 minute."""
    template = _run_pod_job(staging)["spec"]["template"]
    assert template["metadata"]["annotations"]["karpenter.sh/do-not-disrupt"] == "true"


@pytest.mark.parametrize("step", STEPS)
def test_step_pods_carry_an_egress_bandwidth_limit_and_its_policy_label(staging, step):
    """Cilium's Bandwidth Manager enforces kubernetes.io/egress-bandwidth; the label keeps the
    L7 (DNS) policies off the pod, which would otherwise turn enforcement off."""
    meta = _launched_step_pod(staging, step)["metadata"]
    assert meta["annotations"]["kubernetes.io/egress-bandwidth"] == "2G"
    assert meta["labels"]["gpu-analysis/egress-limited"] == "true"
