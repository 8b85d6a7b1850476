"""The local AWS of `make dev`: moto's server with our extensions, run as its own process."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import boto3
import dagster as dg
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

import infra_assets.definitions
from gpu_analysis.profile import load_profile
from tests.conftest import REPO_ROOT, free_port, subprocess_env


@pytest.fixture
def local_aws_process(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[str]:
    """`python -m devtools.local_aws` as `make dev` starts it; yields its endpoint."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "devtools.local_aws", "-H", "127.0.0.1", "-p", str(port)],
        cwd=REPO_ROOT,
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("python -m devtools.local_aws did not start") from None
                time.sleep(0.2)
        for name, value in {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "local-moto",
            "AWS_SECRET_ACCESS_KEY": "local-moto",
            "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
            "KUBECONFIG": str(tmp_path / "no-kubeconfig"),
        }.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("AWS_PROFILE", raising=False)
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_the_local_profile_materializes_all_against_the_make_dev_server(local_aws_process):
    profile = load_profile("local")
    defs = infra_assets.definitions.build_definitions(profile)
    result = defs.resolve_job_def("infra_apply").execute_in_process(
        instance=dg.DagsterInstance.ephemeral()
    )
    assert result.success
    metadata = {
        m.materialization.asset_key.to_user_string(): m.materialization.metadata
        for m in result.get_asset_materialization_events()
    }
    assert metadata["gpu_vpc"]["vpc_id"].value.startswith("vpc-")
    assert metadata["gpu_eks"]["cluster_name"].value == profile.cluster_name
    # The extensions live in the server process: placement groups and Pod Identity worked.
    assert metadata["gpu_placement_group"]["placement_group_id"].value.startswith("pg-")
    assert metadata["gpu_karpenter_iam"]["pod_identity_association_id"].value.startswith("a-")
    # No cluster to apply to: the in-cluster assets record no materialization, only an
    # observation that shows the plan (the UI must not claim they were applied).
    observed = {
        e.asset_observation_data.asset_observation.asset_key.to_user_string(): (
            e.asset_observation_data.asset_observation.metadata
        )
        for e in result.get_asset_observation_events()
    }
    in_cluster = ("gpu_cilium", "gpu_karpenter_controller", "gpu_karpenter_nodepools")
    assert not set(in_cluster) & set(metadata)
    assert "gpu_cilium" in observed
    for name in set(in_cluster) & set(observed):
        assert observed[name]["applied"].value is False
        assert "no Kubernetes cluster is configured" in observed[name]["status"].value
        assert "| create |" in observed[name]["plan"].value  # the plan is still shown


def test_extensions_answer_like_aws(local_aws_process):
    session = boto3.Session(region_name="eu-west-3")
    ec2, eks = session.client("ec2"), session.client("eks")
    ec2.create_placement_group(GroupName="pg", Strategy="cluster")
    with pytest.raises(ClientError, match=r"InvalidPlacementGroup\.Duplicate"):
        ec2.create_placement_group(GroupName="pg", Strategy="cluster")
    ec2.delete_placement_group(GroupName="pg")
    with pytest.raises(ClientError, match=r"InvalidPlacementGroup\.Unknown"):
        ec2.describe_placement_groups(GroupNames=["pg"])

    iam = session.client("iam")
    role = iam.create_role(RoleName="nodes", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.0.0/24")["Subnet"]["SubnetId"]

    def create_cluster():
        eks.create_cluster(
            name="c",
            roleArn=role,
            resourcesVpcConfig={"subnetIds": [subnet], "endpointPublicAccess": False},
            accessConfig={"authenticationMode": "API"},
        )

    # The `make dev` server models IAM propagation by default, as a real account does.
    with pytest.raises(eks.exceptions.InvalidParameterException, match="could not be assumed"):
        create_cluster()
    # Its settings are driven over HTTP (the server is another process).
    settings = control(
        local_aws_process, "configure", {"iam_propagation_s": 0, "cluster_transition_s": 0}
    )
    assert settings["timings"]["iam_propagation_s"] == 0
    create_cluster()
    update = eks.update_cluster_config(name="c", resourcesVpcConfig={"endpointPublicAccess": True})
    assert update["update"]["status"] == "Successful"
    config = eks.describe_cluster(name="c")["cluster"]["resourcesVpcConfig"]
    assert config["endpointPublicAccess"] is True
    assert config["subnetIds"] == [subnet]  # fields not in the update are kept
    # Principal ARNs hold a slash (role/nodes) inside the URL path.
    eks.create_access_entry(clusterName="c", principalArn=role, type="EC2_LINUX")
    entry = eks.describe_access_entry(clusterName="c", principalArn=role)["accessEntry"]
    assert (entry["type"], entry["kubernetesGroups"]) == ("EC2_LINUX", ["system:nodes"])
    eks.delete_access_entry(clusterName="c", principalArn=role)
    with pytest.raises(eks.exceptions.ResourceNotFoundException):
        eks.describe_access_entry(clusterName="c", principalArn=role)


def test_faults_are_injected_over_http(local_aws_process):
    state = control(local_aws_process, "faults", {"action": "CreateVpc", "fault": "throttle"})
    assert state["faults"] == {"CreateVpc": [["throttle", 1]]}
    ec2 = boto3.client(
        "ec2", region_name="eu-west-3", config=Config(retries={"total_max_attempts": 1})
    )
    with pytest.raises(ClientError, match="RequestLimitExceeded"):
        ec2.create_vpc(CidrBlock="10.0.0.0/16")
    ec2.create_vpc(CidrBlock="10.0.0.0/16")  # played once
    assert control(local_aws_process, "reset", {})["faults"] == {}


def control(endpoint: str, what: str, payload: dict) -> dict:
    """POST /_gpu_analysis/<what> on the local AWS; its state comes back."""
    request = urllib.request.Request(
        f"{endpoint}/_gpu_analysis/{what}",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def test_a_new_instance_profile_is_refused_by_run_instances_until_iam_has_propagated_it(
    aws, aws_server
):
    """devtools.local_aws: EC2 answers InvalidParameterValue for an instance profile made a
    moment ago (aws/aws-sdk-js-v3 #5253), as it does for a role EKS has not seen yet."""
    # Long enough that a loaded machine (the whole suite on two cores) still asks in time.
    propagation_s = 5.0
    aws_server.configure(iam_propagation_s=propagation_s)
    ec2, iam = aws.client("ec2"), aws.client("iam")
    iam.create_instance_profile(InstanceProfileName="tunnel")
    created = time.monotonic()

    def launch() -> str:
        return ec2.run_instances(
            ImageId="ami-12c6146b",
            InstanceType="t4g.nano",
            MinCount=1,
            MaxCount=1,
            IamInstanceProfile={"Name": "tunnel"},
        )["Instances"][0]["InstanceId"]

    def instances() -> set[str]:
        # The session's server may hold other tests' instances: compare, do not expect none.
        return {
            i["InstanceId"]
            for r in ec2.describe_instances()["Reservations"]
            for i in r["Instances"]
        }

    before = instances()
    with pytest.raises(ClientError, match=r"iamInstanceProfile\.name is invalid") as refused:
        launch()
    assert refused.value.response["Error"]["Code"] == "InvalidParameterValue"
    assert instances() == before  # refused: nothing launched
    time.sleep(max(0.0, propagation_s + 0.2 - (time.monotonic() - created)))
    instance_id = launch()
    (instance,) = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"]
    assert instance["IamInstanceProfile"]["Arn"].endswith("instance-profile/tunnel")
