"""The Dagster jobs of the cluster on a real instance, AWS through the moto server over HTTP."""

from __future__ import annotations

import dagster as dg
import pytest

from gpu_analysis.profile import load_profile
from infra_assets.resources import InfraResource
from infra_assets.spec import OWNER_TAG
from infra_assets.units import AWS_UNITS, TEARDOWN_ORDER, UNITS, asset_name

STAGING = "staging-eu-west-3-gpu-analysis"
AWS_ASSETS = {asset_name(u) for u in AWS_UNITS}
K8S_ASSETS = {asset_name(u) for u in UNITS} - AWS_ASSETS
REMEDIATE = {
    "ops": {
        "infra_drift": {"config": {"remediate": True}},
        "infra_drift_in_cluster": {"config": {"remediate": True}},
    }
}


@pytest.fixture
def applied_stack(defs) -> None:
    """The AWS units applied directly (infra_apply itself is the subject of its own test)."""
    ctx = InfraResource.from_profile(load_profile("staging")).unit_context()
    for unit in AWS_UNITS:
        unit(ctx).apply()


def run(defs: dg.Definitions, instance, job: str, run_config: dict | None = None):
    return defs.resolve_job_def(job).execute_in_process(
        instance=instance, run_config=run_config or {}, raise_on_error=False
    )


def observations(result) -> dict[str, dict]:
    return {
        o.asset_key.to_user_string(): {k: v.value for k, v in o.metadata.items()}
        for e in result.all_events
        if e.event_type_value == "ASSET_OBSERVATION"
        for o in [e.asset_observation_data.asset_observation]
    }


def materializations(result) -> dict[str, dict]:
    return {
        m.asset_key.to_user_string(): {k: v.value for k, v in m.metadata.items()}
        for m in result.get_asset_materialization_events()
        for m in [m.materialization]
    }


def checks(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.asset_key.to_user_string(): e for e in result.get_asset_check_evaluations()}


def failing(result) -> set[str]:
    """Assets whose drift check failed with severity ERROR (WARN: no cluster to look at)."""
    return {
        name
        for name, e in checks(result).items()
        if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR
    }


def test_infra_apply_from_empty_then_a_second_run_plans_nothing(defs, instance):
    first = run(defs, instance, "infra_apply")
    assert first.success
    created = materializations(first)
    # No cluster configured: the in-cluster units applied nothing, so they record no
    # materialization (an observation with the plan instead; the ones after them are skipped).
    assert set(created) == AWS_ASSETS
    # VPC, IGW, 9 subnets, 3 EIP + 3 NAT, 5 route tables (and endpoints: test_vpc_*)
    assert created["gpu_vpc"]["to_create"] >= 22
    assert created["gpu_vpc"]["vpc_id"].startswith("vpc-")
    assert "| create | nat-gateway | nat-eu-west-3b |" in created["gpu_vpc"]["plan"]
    assert "Karpenter 1.8.1" in created["gpu_placement_group"]["warnings"]
    assert created["gpu_eks"]["cluster_name"] == STAGING
    observed = observations(first)
    assert {"gpu_cilium", "gpu_karpenter_controller"} <= set(observed) <= K8S_ASSETS
    for name in observed:
        assert observed[name]["applied"] is False
        assert "no Kubernetes cluster is configured" in observed[name]["status"]
        assert "| create |" in observed[name]["plan"]
    assert all(created[name]["state"] == "applied" for name in AWS_ASSETS)

    # The idle base from what runs: control plane, 2 x m6i.large, 3 NAT gateways.
    eks = created["gpu_eks"]
    assert eks["seed_idle_base_usd_per_month"] == 313.0
    assert eks["idle_base_usd_per_month"] > 300  # exact figures: test_cost.py
    assert "2 x m6i.large" in eks["idle_base_cost"]
    assert "3 (eu-west-3a, eu-west-3b, eu-west-3c)" in eks["idle_base_cost"]

    assert failing(first) == set()  # infra_apply runs the drift checks after applying

    second = run(defs, instance, "infra_apply")
    assert second.success
    again = materializations(second)
    for name in AWS_ASSETS:
        assert (again[name]["to_create"], again[name]["to_update"], again[name]["to_delete"]) == (
            0,
            0,
            0,
        ), again[name]["plan"]
    results = checks(second)
    assert set(results) == AWS_ASSETS  # in-cluster checks skipped: nothing was applied there
    assert all(results[name].passed for name in AWS_ASSETS)

    report = run(defs, instance, "infra_reconcile")
    assert report.success  # no drift; no cluster to look at is a warning, not a failure
    assert all(
        not checks(report)[name].passed
        and checks(report)[name].severity == dg.AssetCheckSeverity.WARN
        for name in K8S_ASSETS
    )


def _delete_nat_gateway(aws) -> str:
    ec2 = aws.client("ec2")
    nats = ec2.describe_nat_gateways(Filters=[{"Name": f"tag:{OWNER_TAG}", "Values": [STAGING]}])[
        "NatGateways"
    ]
    nat = next(n for n in nats if n["State"] == "available")
    ec2.delete_nat_gateway(NatGatewayId=nat["NatGatewayId"])
    return "create nat-gateway nat-eu-west-3"


def _change_subnet_tags(aws) -> str:
    ec2 = aws.client("ec2")
    subnet = ec2.describe_subnets(
        Filters=[{"Name": "tag:Name", "Values": ["gpu-analysis-private-eu-west-3b"]}]
    )["Subnets"][0]
    ec2.create_tags(
        Resources=[subnet["SubnetId"]], Tags=[{"Key": "Name", "Value": "renamed-by-hand"}]
    )
    ec2.delete_tags(
        Resources=[subnet["SubnetId"]], Tags=[{"Key": "kubernetes.io/role/internal-elb"}]
    )
    return "tags.Name: renamed-by-hand -> gpu-analysis-private-eu-west-3b"


def _make_endpoint_public(aws) -> str:
    aws.client("eks").update_cluster_config(
        name=STAGING, resourcesVpcConfig={"endpointPublicAccess": True}
    )
    return "endpoint_public_access: true -> false"


@pytest.mark.parametrize(
    ("drift", "affected"),
    [
        (_delete_nat_gateway, "gpu_vpc"),
        (_change_subnet_tags, "gpu_vpc"),
        (_make_endpoint_public, "gpu_eks"),
    ],
    ids=["nat-gateway-deleted", "subnet-tags-changed", "eks-endpoint-public"],
)
def test_drift_fails_exactly_the_affected_check_and_remediate_repairs_it(
    defs, instance, aws, applied_stack, drift, affected
):
    readable_diff = drift(aws)
    report = run(defs, instance, "infra_reconcile")
    assert not report.success  # drift fails the run: not a green run nobody hears about
    assert failing(report) == {affected}
    evaluation = checks(report)[affected]
    assert readable_diff in evaluation.description
    assert evaluation.metadata["remediation"].value == "not requested"

    # Remediation is a materialization of the drifted asset, not a change made by a check: the
    # reconcile run with remediate: true only reports; the remediation sensor then requests
    # infra_apply of exactly the drifted asset, whose checks run after it.
    sensor = defs.resolve_sensor_def("infra_drift_remediation")
    cursor = start_sensor(sensor, instance)
    asked = run(defs, instance, "infra_reconcile", REMEDIATE)
    assert not asked.success
    assert checks(asked)[affected].metadata["remediation"].value == "requested"
    (request,), cursor = tick(sensor, instance, cursor)
    assert request.asset_selection == [dg.AssetKey(affected)]
    assert tick(sensor, instance, cursor)[0] == []  # one request per reconcile run

    repair = defs.resolve_job_def("infra_apply").execute_in_process(
        instance=instance, asset_selection=request.asset_selection, tags=request.tags
    )
    applied = materializations(repair)
    assert set(applied) == {affected}
    assert applied[affected]["to_create"] + applied[affected]["to_update"] >= 1
    repaired = checks(repair)
    # Passing after remediation means a fresh observation planned nothing.
    assert set(repaired) == {affected} and repaired[affected].passed
    assert run(defs, instance, "infra_reconcile").success


def start_sensor(sensor, instance) -> str:
    """The first tick of a run status sensor, as the daemon's: it only sets the cursor."""
    data = sensor.evaluate_tick(dg.build_sensor_context(instance=instance))
    assert data.run_requests == [] and data.cursor
    return data.cursor


def tick(sensor, instance, cursor: str) -> tuple[list[dg.RunRequest], str]:
    data = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=cursor))
    return list(data.run_requests or []), data.cursor or cursor


def _owned_leftovers(aws) -> list[str]:
    ec2, eks, iam = aws.client("ec2"), aws.client("eks"), aws.client("iam")
    owner = [{"Name": f"tag:{OWNER_TAG}", "Values": [STAGING]}]
    left = [v["VpcId"] for v in ec2.describe_vpcs(Filters=owner)["Vpcs"]]
    left += [s["SubnetId"] for s in ec2.describe_subnets(Filters=owner)["Subnets"]]
    left += [
        n["NatGatewayId"]
        for n in ec2.describe_nat_gateways(Filters=owner)["NatGateways"]
        if n["State"] != "deleted"
    ]
    left += [a["AllocationId"] for a in ec2.describe_addresses(Filters=owner)["Addresses"]]
    left += [
        g["InternetGatewayId"]
        for g in ec2.describe_internet_gateways(Filters=owner)["InternetGateways"]
    ]
    left += [
        g["GroupName"] for g in ec2.describe_placement_groups(Filters=owner)["PlacementGroups"]
    ]
    left += [t["LaunchTemplateName"] for t in ec2.describe_launch_templates()["LaunchTemplates"]]
    left += [g["GroupName"] for g in ec2.describe_security_groups(Filters=owner)["SecurityGroups"]]
    left += eks.list_clusters()["clusters"]
    left += [r["RoleName"] for r in iam.list_roles()["Roles"]]
    left += aws.client("sqs").list_queues().get("QueueUrls", [])
    left += [r["Name"] for r in aws.client("events").list_rules()["Rules"]]
    return left


def test_infra_teardown_refuses_without_the_cluster_name_then_removes_everything(
    defs, instance, aws, applied_stack
):
    before = _owned_leftovers(aws)
    assert len(before) > 20

    for config in ({}, {"confirm_cluster_name": "staging"}):
        refused = run(
            defs, instance, "infra_teardown", {"ops": {"teardown_stack": {"config": config}}}
        )
        assert not refused.success
        assert _owned_leftovers(aws) == before
    failure = next(e for e in refused.all_events if e.is_step_failure)
    assert f"confirm_cluster_name: {STAGING}" in str(failure.event_specific_data.error)

    confirmed = run(
        defs,
        instance,
        "infra_teardown",
        {"ops": {"teardown_stack": {"config": {"confirm_cluster_name": STAGING}}}},
    )
    assert confirmed.success
    assert _owned_leftovers(aws) == []
    removed = confirmed.output_for_node("teardown_stack")
    units_in_order = list(dict.fromkeys(line.split(":")[0] for line in removed))
    expected = [u.name for u in TEARDOWN_ORDER if u in AWS_UNITS]
    assert units_in_order == expected  # reverse stack order; no cluster: nothing in-cluster


def test_nightly_reconcile_is_report_only_at_two_in_paris(defs):
    schedule = defs.resolve_schedule_def("nightly_infra_reconcile")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 2 * * *", "Europe/Paris")
    assert schedule.job_name == "infra_reconcile"
    request = schedule.evaluate_tick(dg.build_schedule_context())
    (run_request,) = request.run_requests
    assert run_request.run_config["ops"]["infra_drift"]["config"]["remediate"] is False
    assert run_request.run_config["ops"]["infra_drift_in_cluster"]["config"]["remediate"] is False
