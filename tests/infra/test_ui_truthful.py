"""What the Dagster UI records is what happened: a real instance, AWS on the moto server over HTTP.

Nothing applied -> no materialization; a confirmed teardown records every asset as destroyed and
the drift checks then say "not deployed"; the teardown preview lists and deletes nothing.
"""

from __future__ import annotations

import dagster as dg
import pytest

from infra_assets.units import UNITS, asset_name
from tests.infra.test_infra_jobs import (
    AWS_ASSETS,
    K8S_ASSETS,
    STAGING,
    _owned_leftovers,
    checks,
    materializations,
    observations,
    run,
)

CONFIRM = {"ops": {"teardown_stack": {"config": {"confirm_cluster_name": STAGING}}}}


@pytest.fixture
def applied(defs, instance) -> dg.ExecuteInProcessResult:
    result = run(defs, instance, "infra_apply")
    assert result.success
    return result


def latest(instance, asset: str) -> dict | None:
    event = instance.get_latest_materialization_event(dg.AssetKey(asset))
    if event is None:
        return None
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def test_in_cluster_units_without_a_cluster_record_no_materialization(applied, instance):
    for name in K8S_ASSETS:
        assert latest(instance, name) is None, f"{name} was recorded as materialized"
    # The run still says why nothing was applied, with the plan that was not applied.
    observed = observations(applied)
    assert "gpu_cilium" in observed
    assert observed["gpu_cilium"]["applied"] is False
    assert "no Kubernetes cluster is configured" in observed["gpu_cilium"]["status"]
    assert "| create | helm-release |" in observed["gpu_cilium"]["plan"]
    assert all(latest(instance, name)["state"] == "applied" for name in AWS_ASSETS)


def test_teardown_records_every_asset_destroyed_and_the_checks_then_say_not_deployed(
    defs, instance, aws, applied
):
    vpc_id = materializations(applied)["gpu_vpc"]["vpc_id"]
    torn = run(defs, instance, "infra_teardown", CONFIRM)
    assert torn.success
    assert _owned_leftovers(aws) == []

    for unit in UNITS:
        record = latest(instance, asset_name(unit))
        assert record is not None and record["state"] == "destroyed", asset_name(unit)
        assert record["teardown_run"] == torn.run_id
    vpc = latest(instance, "gpu_vpc")
    assert vpc_id in vpc["deleted"] and "| delete | vpc |" in vpc["deleted"]
    assert vpc["deleted_count"] >= 22
    # With no kubeconfig the in-cluster objects went with the EKS cluster; the record says so.
    assert "removed with EKS cluster" in latest(instance, "gpu_cilium")["notes"]

    report = run(defs, instance, "infra_reconcile")
    after = checks(report)
    for name in AWS_ASSETS:
        assert not after[name].passed, f"{name}: drift check passed on a torn-down stack"
        assert after[name].description.startswith("not deployed (torn down)")
        # Torn down on purpose: a warning, not drift that pages someone every night.
        assert after[name].severity == dg.AssetCheckSeverity.WARN
    assert report.success


def test_a_unit_deleted_by_hand_after_apply_is_drift(defs, instance, aws, applied):
    aws.client("ec2").delete_placement_group(GroupName="gpu-analysis-gpu-cluster")
    report = run(defs, instance, "infra_reconcile")
    assert not report.success
    evaluation = checks(report)["gpu_placement_group"]
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert evaluation.description.startswith("not deployed, but was applied")


def test_teardown_preview_lists_what_would_go_and_deletes_nothing(defs, instance, aws, applied):
    before = sorted(_owned_leftovers(aws))
    assert len(before) > 20
    vpc_id = materializations(applied)["gpu_vpc"]["vpc_id"]

    preview = run(defs, instance, "infra_teardown_preview")
    assert preview.success
    assert sorted(_owned_leftovers(aws)) == before  # nothing deleted

    listed = preview.output_for_node("teardown_preview")
    assert f"gpu-vpc: vpc gpu-analysis ({vpc_id})" in listed or any(
        vpc_id in line and line.startswith("gpu-vpc: vpc ") for line in listed
    )
    assert any(line.startswith("gpu-eks: eks-cluster ") and STAGING in line for line in listed)
    assert any(line.startswith("gpu-placement-group: placement-group ") for line in listed)
    nat_ids = [
        n["NatGatewayId"]
        for n in aws.client("ec2").describe_nat_gateways()["NatGateways"]
        if n["State"] == "available"
    ]
    assert len(nat_ids) == 3 and all(any(i in line for line in listed) for i in nat_ids)
    # Reverse stack order, as infra_teardown goes.
    units = list(dict.fromkeys(line.split(":")[0] for line in listed))
    assert units.index("gpu-karpenter-iam") < units.index("gpu-eks") < units.index("gpu-vpc")
    # The preview records nothing as destroyed: the assets are still applied.
    assert all(latest(instance, name)["state"] == "applied" for name in AWS_ASSETS)
