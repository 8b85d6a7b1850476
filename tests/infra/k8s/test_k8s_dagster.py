"""In-cluster drift via Dagster: infra_reconcile fails just that check; remediate fixes it."""

from __future__ import annotations

import json

import dagster as dg
import pytest

from infra_assets.assets import infra_assets, infra_drift
from infra_assets.helm import kubeconfig_for
from infra_assets.jobs import infra_apply, infra_reconcile, infra_teardown
from infra_assets.resources import InfraResource
from infra_assets.spec import ClusterSpec
from tests.emulators.kube_api import KubeApiEmulator

from .conftest import FAKE_HELM

KARPENTER = ("karpenter.sh", "v1", "nodepools", "")
REMEDIATE = {"ops": {"infra_drift": {"config": {"remediate": True}}}}


@pytest.fixture(scope="module")
def stack(local_aws_server, tmp_path_factory):
    """The whole stack applied once by `infra_apply`, AWS on moto and Kubernetes on the
    emulator; each test drifts one thing and remediates it, leaving the stack as it found it."""
    local_aws_server.reset()
    kube_api = KubeApiEmulator().start()
    kubeconfig = tmp_path_factory.mktemp("kube") / "kubeconfig"
    kubeconfig.write_text(json.dumps(kubeconfig_for(kube_api.api_client())))
    spec = ClusterSpec()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ENDPOINT_URL", local_aws_server.endpoint_url)
        # Not credentials: moto accepts anything; set so none from the machine are used.
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.delenv("AWS_SESSION_TOKEN", raising=False)
        env.delenv("AWS_PROFILE", raising=False)
        env.setenv("AWS_DEFAULT_REGION", spec.region)
        env.setenv("KUBECONFIG", str(kubeconfig))
        env.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        infra = InfraResource(
            aws_region=spec.region,
            cluster_name=spec.cluster_name,
            environment=spec.environment,
            account_id=spec.account_id,
            helm_binary=str(FAKE_HELM),
        )
        defs = build_definitions_with(infra)
        instance = dg.DagsterInstance.ephemeral()
        applied = defs.resolve_job_def("infra_apply").execute_in_process(instance=instance)
        assert applied.success
        # infra_apply runs the drift checks after the assets: all pass on a fresh stack.
        assert failing(checks_of(applied)) == []
        yield defs, instance, kube_api
    kube_api.stop()


def build_definitions_with(infra: InfraResource) -> dg.Definitions:
    return dg.Definitions(
        assets=infra_assets,
        asset_checks=[infra_drift],
        jobs=[infra_apply, infra_reconcile, infra_teardown],
        resources={"infra": infra},
    )


def checks_of(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.asset_key.path[-1]: e for e in result.get_asset_check_evaluations()}


def reconcile(defs, instance, run_config=None) -> dict[str, dg.AssetCheckEvaluation]:
    result = defs.resolve_job_def("infra_reconcile").execute_in_process(
        instance=instance, run_config=run_config or {}, raise_on_error=False
    )
    evaluations = checks_of(result)
    assert len(evaluations) == 7
    return evaluations


def failing(evaluations: dict[str, dg.AssetCheckEvaluation]) -> list[str]:
    return sorted(name for name, e in evaluations.items() if not e.passed)


def test_nodepool_limits_edited_fails_only_its_check_and_remediate_repairs(stack):
    defs, instance, kube_api = stack
    pool = kube_api.store.get(*KARPENTER, "gpu-inference")
    pool["spec"]["limits"]["memory"] = "1000Gi"
    kube_api.store.put(*KARPENTER, pool)

    evaluations = reconcile(defs, instance)
    assert failing(evaluations) == ["gpu_karpenter_nodepools"]
    assert (
        "spec.limits.memory: 1000Gi -> 400Gi" in evaluations["gpu_karpenter_nodepools"].description
    )

    repaired = reconcile(defs, instance, REMEDIATE)
    assert failing(repaired) == []
    assert "remediated" in repaired["gpu_karpenter_nodepools"].description
    assert kube_api.store.get(*KARPENTER, "gpu-inference")["spec"]["limits"]["memory"] == "400Gi"


def test_karpenter_scaled_to_one_fails_only_its_check_and_remediate_repairs(stack):
    defs, instance, kube_api = stack
    deployment = ("apps", "v1", "deployments", "kube-system")
    live = kube_api.store.get(*deployment, "karpenter")
    live["spec"]["replicas"] = 1
    kube_api.store.put(*deployment, live)

    evaluations = reconcile(defs, instance)
    assert failing(evaluations) == ["gpu_karpenter_controller"]
    assert "spec.replicas: 1 -> 2" in evaluations["gpu_karpenter_controller"].description

    repaired = reconcile(defs, instance, REMEDIATE)
    assert failing(repaired) == []
    assert "remediated" in repaired["gpu_karpenter_controller"].description
    assert kube_api.store.get(*deployment, "karpenter")["spec"]["replicas"] == 2


def test_teardown_removes_our_in_cluster_objects_and_releases_and_leaves_theirs(stack):
    """Last in this module: it tears the shared stack down."""
    defs, instance, kube_api = stack
    theirs = {"apiVersion": "karpenter.sh/v1", "kind": "NodePool", "metadata": {"name": "team-x"}}
    kube_api.store.put(*KARPENTER, theirs)
    config = {"confirm_cluster_name": ClusterSpec().cluster_name}
    result = defs.resolve_job_def("infra_teardown").execute_in_process(
        instance=instance, run_config={"ops": {"teardown_stack": {"config": config}}}
    )
    removed = result.output_for_node("teardown_stack")
    assert "gpu-karpenter-nodepools: NodePool gpu-inference" in removed
    assert "gpu-karpenter-controller: helm-release kube-system/karpenter" in removed
    assert "gpu-cilium: helm-release kube-system/cilium" in removed
    # reverse stack order: node pools before the controller before Cilium
    units = [entry.split(":")[0] for entry in removed]
    assert units.index("gpu-karpenter-nodepools") < units.index("gpu-karpenter-controller")
    assert units.index("gpu-karpenter-controller") < units.index("gpu-cilium")
    store = kube_api.store
    assert store.names("nodepools") == ["team-x"]
    assert store.names("ec2nodeclasses") == []
    assert store.names("ciliumclusterwidenetworkpolicies") == []
    assert not [name for name in store.names("secrets") if name.startswith("sh.helm.release")]
