"""A first apply on an account that behaves like a real one: every create kind answers with an
ambiguous error once, IAM principals take a second to become usable, EC2 and EKS throttle, node
groups join only once Cilium runs. `infra_apply` must converge with one of everything, a second
apply must change nothing, and teardown must leave nothing of ours and touch nothing else."""

from __future__ import annotations

import dataclasses
import json

import boto3
import dagster as dg
import pytest

from gpu_analysis.profile import load_profile
from infra_assets.definitions import build_definitions
from infra_assets.helm import kubeconfig_for
from infra_assets.resources import InfraResource
from infra_assets.spec import OWNER_TAG, ClusterSpec
from tests.emulators.aws import POLL_S, TEST_TIMINGS, cni_from_helm
from tests.emulators.kube_api import KubeApiEmulator

from .conftest import FAKE_HELM

# Each create kind the stack makes, answered once with HTTP 500 after AWS carried it out.
AMBIGUOUS = (
    "CreateVpc",
    "CreateSubnet",
    "CreateInternetGateway",
    "AllocateAddress",
    "CreateNatGateway",
    "CreateRouteTable",
    "CreateVpcEndpoint",
    "CreateSecurityGroup",
    "CreateLaunchTemplate",
    "CreateRole",
    "eks:CreateCluster",
    "eks:CreateNodegroup",
    "eks:CreateAddon",
    "eks:CreatePodIdentityAssociation",
    "eks:CreateAccessEntry",
)
# Refused with the service's throttling error before anything happens.
THROTTLED = ("CreateVpc", "DescribeSubnets", "eks:DescribeCluster", "CreateRole")


@pytest.fixture
def account(aws_server, tmp_path, monkeypatch):
    """Timings of the test server, Cilium's release as the CNI, one kube emulator per test."""
    kube_api = KubeApiEmulator().start()
    aws_server.configure(**dataclasses.asdict(TEST_TIMINGS))
    aws_server.cni_ready = cni_from_helm(kube_api.store)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps(kubeconfig_for(kube_api.api_client())))
    spec = ClusterSpec()
    for name, value in {
        "AWS_ENDPOINT_URL": aws_server.endpoint_url,
        "AWS_ACCESS_KEY_ID": "testing",  # not credentials: moto accepts anything
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": spec.region,
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "KUBECONFIG": str(kubeconfig),
        "GPU_ANALYSIS_AWS_POLL_S": POLL_S,
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(name, raising=False)
    profile = load_profile("staging")
    shipped = build_definitions(profile)
    infra = InfraResource(
        aws_region=profile.aws_region,
        cluster_name=profile.cluster_name,
        environment=profile.name,
        account_id=profile.aws_account_id,
        bucket=profile.bucket,
        helm_binary=str(FAKE_HELM),
    )
    defs = dg.Definitions(
        assets=shipped.assets,
        asset_checks=shipped.asset_checks,
        jobs=shipped.jobs,
        schedules=shipped.schedules,
        sensors=shipped.sensors,
        resources={**shipped.resources, "infra": infra},
    )
    yield aws_server, defs, boto3.Session(region_name=spec.region), spec
    kube_api.stop()


def owned_inventory(session: boto3.Session, stack: str) -> dict[str, list[str]]:
    """What carries our owner tag, by kind: what a person would list in the console."""
    ec2, iam, eks = session.client("ec2"), session.client("iam"), session.client("eks")
    owner = [{"Name": f"tag:{OWNER_TAG}", "Values": [stack]}]
    inventory = {
        "vpc": [v["VpcId"] for v in ec2.describe_vpcs(Filters=owner)["Vpcs"]],
        "subnet": [s["SubnetId"] for s in ec2.describe_subnets(Filters=owner)["Subnets"]],
        "internet-gateway": [
            g["InternetGatewayId"]
            for g in ec2.describe_internet_gateways(Filters=owner)["InternetGateways"]
        ],
        "elastic-ip": [
            a["AllocationId"] for a in ec2.describe_addresses(Filters=owner)["Addresses"]
        ],
        "nat-gateway": [
            n["NatGatewayId"]
            for n in ec2.describe_nat_gateways(Filters=owner)["NatGateways"]
            if n["State"] not in ("deleted", "deleting")
        ],
        "route-table": [
            t["RouteTableId"] for t in ec2.describe_route_tables(Filters=owner)["RouteTables"]
        ],
        "vpc-endpoint": [
            e["VpcEndpointId"]
            for e in ec2.describe_vpc_endpoints(Filters=owner)["VpcEndpoints"]
            if e["State"].lower() not in ("deleted", "deleting")
        ],
        "security-group": [
            g["GroupId"] for g in ec2.describe_security_groups(Filters=owner)["SecurityGroups"]
        ],
        "launch-template": [
            t["LaunchTemplateId"]
            for t in ec2.describe_launch_templates(Filters=owner)["LaunchTemplates"]
        ],
        "iam-role": [
            r["RoleName"]
            for r in iam.list_roles()["Roles"]
            if {
                t["Key"]: t["Value"] for t in iam.list_role_tags(RoleName=r["RoleName"])["Tags"]
            }.get(OWNER_TAG)
            == stack
        ],
        "eks-cluster": eks.list_clusters()["clusters"],
    }
    return {kind: sorted(ids) for kind, ids in inventory.items()}


def plans_of(result) -> dict[str, dict]:
    return {
        event.asset_key.to_user_string(): {k: v.value for k, v in event.metadata.items()}
        for event in (m.materialization for m in result.get_asset_materialization_events())
    }


def test_a_first_apply_under_faults_converges_once_and_teardown_leaves_only_what_is_not_ours(
    account,
):
    server, defs, session, spec = account
    stack = spec.stack
    # Not ours: standing in the same account, they must survive everything below.
    ec2, iam = session.client("ec2"), session.client("iam")
    their_vpc = ec2.create_vpc(CidrBlock="10.99.0.0/16")["Vpc"]["VpcId"]
    their_eip = ec2.allocate_address(Domain="vpc")["AllocationId"]
    their_igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    iam.create_role(RoleName="theirs", AssumeRolePolicyDocument=json.dumps({"Statement": []}))
    # Faults queue per action: the throttles meet the first calls, then the ambiguous answer.
    for action in THROTTLED:
        server.inject(action, "throttle", times=2)
    for action in AMBIGUOUS:
        server.inject(action, "ambiguous")

    instance = dg.DagsterInstance.ephemeral()
    first = defs.resolve_job_def("infra_apply").execute_in_process(
        instance=instance, raise_on_error=False
    )
    assert first.success, [e.message for e in first.all_events if e.is_failure]
    assert server.pending_faults() == {}, "every injected fault was met by the apply"

    # One of each: the spec's counts, not one more.
    inventory = owned_inventory(session, stack)
    zones = len(spec.vpc.availability_zones)
    assert len(inventory["vpc"]) == 1
    assert len(inventory["subnet"]) == 3 * zones
    assert len(inventory["internet-gateway"]) == 1
    assert len(inventory["elastic-ip"]) == len(inventory["nat-gateway"]) == zones
    assert len(inventory["eks-cluster"]) == 1
    assert len(inventory["iam-role"]) == len(set(inventory["iam-role"]))

    second = defs.resolve_job_def("infra_apply").execute_in_process(instance=instance)
    assert second.success
    changed = {
        asset: {k: plan[k] for k in ("to_create", "to_update", "to_delete")}
        for asset, plan in plans_of(second).items()
        if any(plan.get(k) for k in ("to_create", "to_update", "to_delete"))
    }
    assert changed == {}, f"the second apply changed things: {changed}"
    assert owned_inventory(session, stack) == inventory

    preview = defs.resolve_job_def("infra_teardown_preview").execute_in_process(instance=instance)
    assert preview.success
    assert owned_inventory(session, stack) == inventory, "the preview deleted something"

    torn = defs.resolve_job_def("infra_teardown").execute_in_process(
        instance=instance,
        run_config={"ops": {"teardown_stack": {"config": {"confirm_cluster_name": stack}}}},
    )
    assert torn.success
    left = {kind: ids for kind, ids in owned_inventory(session, stack).items() if ids}
    assert left == {}, f"teardown left resources of ours: {left}"
    assert [v["VpcId"] for v in ec2.describe_vpcs(VpcIds=[their_vpc])["Vpcs"]] == [their_vpc]
    assert ec2.describe_addresses(AllocationIds=[their_eip])["Addresses"]
    assert ec2.describe_internet_gateways(InternetGatewayIds=[their_igw])["InternetGateways"]
    assert iam.get_role(RoleName="theirs")["Role"]["RoleName"] == "theirs"
