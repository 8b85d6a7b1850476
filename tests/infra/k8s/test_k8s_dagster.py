"""In-cluster drift via Dagster: infra_reconcile fails just that check; remediation (an
infra_apply of the drifted asset) fixes it; what apply wrote passes the real CRDs and charts."""

from __future__ import annotations

import base64
import dataclasses
import gzip
import json

import dagster as dg
import pytest

from infra_assets.assets import infra_assets, infra_drift_checks
from infra_assets.helm import kubeconfig_for
from infra_assets.jobs import infra_apply, infra_health_checks, infra_reconcile, infra_teardown
from infra_assets.resources import InfraResource
from infra_assets.schedules import infra_drift_remediation
from infra_assets.spec import ClusterSpec
from tests.emulators.aws import POLL_S, TEST_TIMINGS, cni_from_helm
from tests.emulators.kube_api import KubeApiEmulator
from tests.upstream import crd as upstream_crd
from tests.upstream import helm_values

from .conftest import FAKE_HELM

KARPENTER = ("karpenter.sh", "v1", "nodepools", "")
REMEDIATE = {"ops": {"infra_drift_in_cluster": {"config": {"remediate": True}}}}


@pytest.fixture(scope="module")
def stack(local_aws_server, tmp_path_factory):
    """The whole stack applied once by `infra_apply`, AWS on moto and Kubernetes on the
    emulator; each test drifts one thing and remediates it, leaving the stack as it found it."""
    local_aws_server.reset()
    kube_api = KubeApiEmulator().start()
    # As the `aws_server` fixture sets it up (small real-world timings), and nodes that join
    # only once Cilium's release is deployed on the emulated cluster.
    local_aws_server.configure(**dataclasses.asdict(TEST_TIMINGS))
    local_aws_server.cni_ready = cni_from_helm(kube_api.store)
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
        env.setenv("GPU_ANALYSIS_AWS_POLL_S", POLL_S)
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
    local_aws_server.reset_settings()


def build_definitions_with(infra: InfraResource) -> dg.Definitions:
    return dg.Definitions(
        assets=infra_assets,
        asset_checks=[*infra_drift_checks, *infra_health_checks],
        jobs=[infra_apply, infra_reconcile, infra_teardown],
        sensors=[infra_drift_remediation],
        resources={"infra": infra},
    )


def checks_of(result) -> dict[str, dg.AssetCheckEvaluation]:
    """The drift check of each asset, and the health checks keyed `<asset>:<check>`."""
    return {
        e.asset_key.path[-1]
        if e.check_name == "drift"
        else f"{e.asset_key.path[-1]}:{e.check_name}": e
        for e in result.get_asset_check_evaluations()
    }


def reconcile(defs, instance, run_config=None) -> dict[str, dg.AssetCheckEvaluation]:
    result = defs.resolve_job_def("infra_reconcile").execute_in_process(
        instance=instance, run_config=run_config or {}, raise_on_error=False
    )
    evaluations = checks_of(result)
    drift = [name for name in evaluations if ":" not in name]
    assert len(drift) == len(infra_assets)  # one drift check per unit
    return evaluations


def failing(evaluations: dict[str, dg.AssetCheckEvaluation]) -> list[str]:
    return sorted(name for name, e in evaluations.items() if not e.passed)


def remediate(defs, instance, asset: str) -> dict[str, dg.AssetCheckEvaluation]:
    """Reconcile with remediate: true, let the remediation sensor ask for the repair, run it."""
    sensor = defs.resolve_sensor_def("infra_drift_remediation")
    first = sensor.evaluate_tick(dg.build_sensor_context(instance=instance))
    asked = reconcile(defs, instance, REMEDIATE)
    assert asked[asset].metadata["remediation"].value == "requested"
    tick = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=first.cursor))
    (request,) = tick.run_requests
    assert request.asset_selection == [dg.AssetKey(asset)]
    repair = defs.resolve_job_def("infra_apply").execute_in_process(
        instance=instance, asset_selection=request.asset_selection, tags=request.tags
    )
    assert repair.success
    return reconcile(defs, instance)


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

    repaired = remediate(defs, instance, "gpu_karpenter_nodepools")
    assert failing(repaired) == []
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

    repaired = remediate(defs, instance, "gpu_karpenter_controller")
    assert failing(repaired) == []
    assert kube_api.store.get(*deployment, "karpenter")["spec"]["replicas"] == 2


CUSTOM_RESOURCES = [
    ("karpenter.sh", "v1", "nodepools"),
    ("karpenter.k8s.aws", "v1", "ec2nodeclasses"),
    ("cilium.io", "v2", "ciliumclusterwidenetworkpolicies"),
]


def deployed_release_values(store, release: str) -> dict:
    """The values of a release's newest revision, decoded from its Secret as Helm stores it."""
    prefix = f"sh.helm.release.v1.{release}.v"
    names = [n for n in store.names("secrets") if n.startswith(prefix)]
    assert names, f"no release {release}"
    newest = max(names, key=lambda n: int(n.removeprefix(prefix)))
    secret = store.get("", "v1", "secrets", "kube-system", newest)
    packed = base64.b64decode(base64.b64decode(secret["data"]["release"]))
    return json.loads(gzip.decompress(packed))["config"]


def test_what_infra_apply_wrote_to_the_cluster_passes_the_real_crds_and_charts(stack):
    """Read back over the store: every custom object against its real CRD (CEL included) and
    each Helm release's values against its real chart."""
    _, _, kube_api = stack
    store = kube_api.store
    validated = 0
    for group, version, plural in CUSTOM_RESOURCES:
        names = store.names(plural)
        assert names, f"infra_apply wrote no {plural}"
        for name in names:
            upstream_crd.assert_valid(store.get(group, version, plural, "", name))
            validated += 1
    assert validated >= len(CUSTOM_RESOURCES)
    assert helm_values.cilium_values_errors(deployed_release_values(store, "cilium")) == []
    karpenter = deployed_release_values(store, "karpenter")
    assert helm_values.karpenter_values_errors(karpenter) == []


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
