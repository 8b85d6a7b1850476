"""The local AWS behaves like a real account where it hurts: faults, IAM delay, time, tokens.

Each test drives the emulator (devtools.local_aws) through boto3 over HTTP, as the units do.
"""

from __future__ import annotations

import json
import time
import urllib.request

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from devtools.local_aws import LocalAws, Timings
from tests.emulators.aws import TEST_TIMINGS, cni_from_helm

TRUST_EKS = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "eks.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
)


def no_retry(session: boto3.Session, service: str):
    """A client that shows the first answer, where boto3 would otherwise retry it."""
    return session.client(service, config=Config(retries={"total_max_attempts": 1}))


def error_of(raised: pytest.ExceptionInfo) -> tuple[int, str]:
    response = raised.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


def old_role(aws: boto3.Session, aws_server: LocalAws, name: str) -> str:
    """A role IAM has had time to propagate."""
    arn = aws.client("iam").create_role(RoleName=name, AssumeRolePolicyDocument=TRUST_EKS)
    time.sleep(aws_server.timings.iam_propagation_s)
    return arn["Role"]["Arn"]


def network(aws: boto3.Session) -> tuple[str, list[str]]:
    ec2 = aws.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.20.{i}.0/24", AvailabilityZone=zone)["Subnet"][
            "SubnetId"
        ]
        for i, zone in enumerate(("eu-west-3a", "eu-west-3b"))
    ]
    return vpc, subnets


def active_cluster(aws: boto3.Session, aws_server: LocalAws, name: str = "c") -> dict:
    role = old_role(aws, aws_server, f"{name}-cluster")
    _, subnets = network(aws)
    eks = aws.client("eks")
    eks.create_cluster(name=name, roleArn=role, resourcesVpcConfig={"subnetIds": subnets})
    eks.get_waiter("cluster_active").wait(name=name, WaiterConfig={"Delay": 1, "MaxAttempts": 10})
    return {"name": name, "role": role, "subnets": subnets}


def our_vpcs(ec2) -> list[dict]:
    return [v for v in ec2.describe_vpcs()["Vpcs"] if not v["IsDefault"]]


# --- Faults --------------------------------------------------------------------------------------


def test_an_ambiguous_ec2_create_happens_but_answers_500_and_a_retry_duplicates_it(aws, aws_server):
    ec2 = no_retry(aws, "ec2")
    aws_server.inject("CreateVpc", "ambiguous")
    with pytest.raises(ClientError) as raised:
        ec2.create_vpc(CidrBlock="10.1.0.0/16")
    assert error_of(raised) == (500, "InternalError")
    assert [v["CidrBlock"] for v in our_vpcs(ec2)] == ["10.1.0.0/16"]  # it did happen

    # boto3's own retry re-sends the create: CreateVpc has no token, so AWS makes a second one.
    aws_server.inject("CreateVpc", "ambiguous")
    aws.client("ec2").create_vpc(CidrBlock="10.2.0.0/16")
    assert sorted(v["CidrBlock"] for v in our_vpcs(ec2)) == [
        "10.1.0.0/16",
        "10.2.0.0/16",
        "10.2.0.0/16",
    ]
    assert aws_server.calls("CreateVpc") == 3


def test_an_ambiguous_iam_create_answers_service_failure_and_its_retry_finds_it_exists(
    aws, aws_server
):
    aws_server.inject("CreateRole", "ambiguous")
    with pytest.raises(ClientError) as raised:
        no_retry(aws, "iam").create_role(RoleName="r", AssumeRolePolicyDocument=TRUST_EKS)
    assert error_of(raised) == (500, "ServiceFailure")
    assert aws.client("iam").get_role(RoleName="r")["Role"]["RoleName"] == "r"

    aws_server.inject("CreateRole", "ambiguous")
    with pytest.raises(ClientError) as raised:
        aws.client("iam").create_role(RoleName="s", AssumeRolePolicyDocument=TRUST_EKS)
    assert error_of(raised) == (409, "EntityAlreadyExists")  # the retry met the first one


def test_an_ambiguous_eks_create_answers_server_exception_and_its_token_makes_the_retry_safe(
    aws, aws_server
):
    role = old_role(aws, aws_server, "cluster")
    _, subnets = network(aws)
    vpc_config = {"subnetIds": subnets}
    aws_server.inject("CreateCluster", "ambiguous")
    eks = no_retry(aws, "eks")
    with pytest.raises(ClientError) as raised:
        eks.create_cluster(name="c", roleArn=role, resourcesVpcConfig=vpc_config,
                           clientRequestToken="t-1")  # fmt: skip
    assert error_of(raised) == (500, "ServerException")
    first = eks.describe_cluster(name="c")["cluster"]

    again = eks.create_cluster(
        name="c", roleArn=role, resourcesVpcConfig=vpc_config, clientRequestToken="t-1"
    )["cluster"]
    assert again["arn"] == first["arn"]
    with pytest.raises(ClientError) as raised:  # a new request, not a retry
        eks.create_cluster(
            name="c", roleArn=role, resourcesVpcConfig=vpc_config, clientRequestToken="t-2"
        )
    assert error_of(raised) == (409, "ResourceInUseException")
    assert eks.list_clusters()["clusters"] == ["c"]


@pytest.mark.parametrize(
    "service, action, call, answer",
    [
        ("ec2", "CreateVpc", lambda c: c.create_vpc(CidrBlock="10.3.0.0/16"),
         (503, "RequestLimitExceeded")),
        ("iam", "CreateRole", lambda c: c.create_role(RoleName="t", AssumeRolePolicyDocument="{}"),
         (400, "Throttling")),
        ("eks", "ListClusters", lambda c: c.list_clusters(), (429, "ThrottlingException")),
    ],
)  # fmt: skip
def test_throttling_refuses_without_acting_and_boto3_retries_it(
    aws, aws_server, service, action, call, answer
):
    aws_server.inject(action, "throttle")
    with pytest.raises(ClientError) as raised:
        call(no_retry(aws, service))
    assert error_of(raised) == answer
    if service == "ec2":
        assert our_vpcs(aws.client("ec2")) == []
    if service == "iam":
        assert aws.client("iam").list_roles()["Roles"] == []

    aws_server.inject(action, "throttle", times=2)
    call(aws.client(service))  # boto3 retries throttling: the third attempt goes through
    assert aws_server.pending_faults() == {}
    if service == "ec2":
        assert len(our_vpcs(aws.client("ec2"))) == 1


def test_faults_are_driven_over_http_for_a_server_in_another_process(aws, aws_server):
    def post(path: str, payload: dict) -> dict:
        request = urllib.request.Request(
            f"{aws_server.endpoint_url}/_gpu_analysis/{path}",
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    state = post("faults", {"action": "CreateInternetGateway", "fault": "ambiguous"})
    assert state["faults"] == {"CreateInternetGateway": [["ambiguous", 1]]}
    with pytest.raises(ClientError) as raised:
        no_retry(aws, "ec2").create_internet_gateway()
    assert error_of(raised) == (500, "InternalError")
    assert len(aws.client("ec2").describe_internet_gateways()["InternetGateways"]) == 1

    state = post("configure", {"iam_propagation_s": 7})
    assert state["timings"]["iam_propagation_s"] == 7
    post("reset", {})
    assert aws_server.timings == Timings()


def test_reset_forgets_faults_and_settings(aws, aws_server):
    aws_server.inject("CreateVpc", "throttle", times=3)
    aws_server.configure(iam_propagation_s=30)
    aws_server.reset()
    assert aws_server.pending_faults() == {}
    assert aws_server.timings == Timings()
    assert aws_server.cni_ready is None
    no_retry(aws, "ec2").create_vpc(CidrBlock="10.4.0.0/16")  # no fault left to play


# --- IAM eventual consistency ----------------------------------------------------------------


def test_eks_refuses_a_role_until_iam_has_propagated_it(aws, aws_server):
    assert aws_server.timings.iam_propagation_s == TEST_TIMINGS.iam_propagation_s
    _, subnets = network(aws)
    role = aws.client("iam").create_role(RoleName="new", AssumeRolePolicyDocument=TRUST_EKS)
    arn = role["Role"]["Arn"]
    eks = aws.client("eks")
    with pytest.raises(ClientError) as raised:
        eks.create_cluster(name="c", roleArn=arn, resourcesVpcConfig={"subnetIds": subnets})
    assert error_of(raised) == (400, "InvalidParameterException")
    assert raised.value.response["Error"]["Message"] == (
        f"Role with arn: {arn}, could not be assumed because it does not exist or the trusted "
        "entity is not correct"
    )
    assert eks.list_clusters()["clusters"] == []

    time.sleep(TEST_TIMINGS.iam_propagation_s)
    eks.create_cluster(name="c", roleArn=arn, resourcesVpcConfig={"subnetIds": subnets})
    assert eks.list_clusters()["clusters"] == ["c"]


def test_a_role_that_does_not_exist_is_refused_like_a_new_one(aws, aws_server):
    _, subnets = network(aws)
    with pytest.raises(ClientError) as raised:
        aws.client("eks").create_cluster(
            name="c",
            roleArn="arn:aws:iam::123456789012:role/never-made",
            resourcesVpcConfig={"subnetIds": subnets},
        )
    assert error_of(raised) == (400, "InvalidParameterException")


def test_access_entries_pod_identity_and_node_groups_wait_for_iam_too(aws, aws_server):
    cluster = active_cluster(aws, aws_server)
    arn = aws.client("iam").create_role(RoleName="fresh", AssumeRolePolicyDocument=TRUST_EKS)[
        "Role"
    ]["Arn"]
    eks = aws.client("eks")
    attempts = {
        "The specified principalArn is invalid: invalid principal.": lambda: (
            eks.create_access_entry(clusterName="c", principalArn=arn, type="EC2_LINUX")
        ),
        "Role provided in the request does not exist": lambda: eks.create_pod_identity_association(
            clusterName="c", namespace="kube-system", serviceAccount="sa", roleArn=arn
        ),
        f"Role with arn: {arn}, could not be assumed because it does not exist or the trusted "
        "entity is not correct": lambda: eks.create_nodegroup(
            clusterName="c", nodegroupName="n", nodeRole=arn, subnets=cluster["subnets"]
        ),
    }
    for message, attempt in attempts.items():
        with pytest.raises(ClientError) as raised:
            attempt()
        assert error_of(raised) == (400, "InvalidParameterException")
        assert raised.value.response["Error"]["Message"] == message

    time.sleep(TEST_TIMINGS.iam_propagation_s)
    for attempt in attempts.values():
        attempt()
    assert eks.list_access_entries(clusterName="c")["accessEntries"] == [arn]
    assert len(eks.list_pod_identity_associations(clusterName="c")["associations"]) == 1
    assert eks.list_nodegroups(clusterName="c")["nodegroups"] == ["n"]


# --- Time: status transitions ------------------------------------------------------------------


def test_a_cluster_is_creating_then_active_and_deleting_before_it_is_gone(aws, aws_server):
    role = old_role(aws, aws_server, "cluster")
    _, subnets = network(aws)
    eks = aws.client("eks")
    created = eks.create_cluster(name="c", roleArn=role, resourcesVpcConfig={"subnetIds": subnets})
    assert created["cluster"]["status"] == "CREATING"
    assert eks.describe_cluster(name="c")["cluster"]["status"] == "CREATING"
    with pytest.raises(ClientError) as raised:  # node groups need an ACTIVE control plane
        eks.create_nodegroup(clusterName="c", nodegroupName="n", nodeRole=role, subnets=subnets)
    assert error_of(raised) == (400, "InvalidRequestException")

    started = time.monotonic()
    eks.get_waiter("cluster_active").wait(name="c", WaiterConfig={"Delay": 1, "MaxAttempts": 10})
    assert time.monotonic() - started > 0.3  # the waiter had to wait
    assert eks.describe_cluster(name="c")["cluster"]["status"] == "ACTIVE"

    assert eks.delete_cluster(name="c")["cluster"]["status"] == "DELETING"
    assert eks.describe_cluster(name="c")["cluster"]["status"] == "DELETING"
    assert eks.list_clusters()["clusters"] == ["c"]
    eks.get_waiter("cluster_deleted").wait(name="c", WaiterConfig={"Delay": 1, "MaxAttempts": 10})
    assert eks.list_clusters()["clusters"] == []


def test_a_node_group_without_a_network_plugin_fails_to_join(aws, aws_server):
    cluster = active_cluster(aws, aws_server)
    eks = aws.client("eks")
    created = eks.create_nodegroup(
        clusterName="c",
        nodegroupName="system",
        nodeRole=cluster["role"],
        subnets=cluster["subnets"],
        scalingConfig={"minSize": 2, "maxSize": 3, "desiredSize": 2},
    )
    assert created["nodegroup"]["status"] == "CREATING"

    with pytest.raises(Exception, match=r"CREATE_FAILED|failure state"):
        eks.get_waiter("nodegroup_active").wait(
            clusterName="c", nodegroupName="system", WaiterConfig={"Delay": 1, "MaxAttempts": 10}
        )
    nodegroup = eks.describe_nodegroup(clusterName="c", nodegroupName="system")["nodegroup"]
    assert nodegroup["status"] == "CREATE_FAILED"
    (issue,) = nodegroup["health"]["issues"]
    assert issue["code"] == "NodeCreationFailure"
    assert issue["message"] == "Instances failed to join the kubernetes cluster"
    assert len(issue["resourceIds"]) == 2 and all(i.startswith("i-") for i in issue["resourceIds"])

    aws_server.cni_ready = lambda name: True  # too late: the group stays failed
    nodegroup = eks.describe_nodegroup(clusterName="c", nodegroupName="system")["nodegroup"]
    assert nodegroup["status"] == "CREATE_FAILED"

    eks.delete_nodegroup(clusterName="c", nodegroupName="system")
    with pytest.raises(ClientError) as raised:  # its DELETING node group still holds it
        eks.delete_cluster(name="c")
    assert error_of(raised) == (409, "ResourceInUseException")
    eks.get_waiter("nodegroup_deleted").wait(
        clusterName="c", nodegroupName="system", WaiterConfig={"Delay": 1, "MaxAttempts": 10}
    )
    eks.delete_cluster(name="c")


def test_a_node_group_turns_active_once_cilium_is_deployed(aws, aws_server, kube_api):
    aws_server.cni_ready = cni_from_helm(kube_api.store)
    cluster = active_cluster(aws, aws_server)
    eks = aws.client("eks")
    eks.create_nodegroup(
        clusterName="c", nodegroupName="system", nodeRole=cluster["role"],
        subnets=cluster["subnets"],
    )  # fmt: skip
    time.sleep(TEST_TIMINGS.nodegroup_transition_s)
    # Still joining: no network plugin yet, and a superseded release does not count.
    kube_api.store.put("", "v1", "secrets", "kube-system", helm_release("cilium", "superseded"))
    kube_api.store.put("", "v1", "secrets", "kube-system", helm_release("other", "deployed"))
    status = eks.describe_nodegroup(clusterName="c", nodegroupName="system")["nodegroup"]
    assert status["status"] == "CREATING"

    kube_api.store.put("", "v1", "secrets", "kube-system", helm_release("cilium", "deployed", 2))
    eks.get_waiter("nodegroup_active").wait(
        clusterName="c", nodegroupName="system", WaiterConfig={"Delay": 1, "MaxAttempts": 10}
    )
    nodegroup = eks.describe_nodegroup(clusterName="c", nodegroupName="system")["nodegroup"]
    assert (nodegroup["status"], nodegroup["health"]["issues"]) == ("ACTIVE", [])
    time.sleep(TEST_TIMINGS.nodes_join_timeout_s - TEST_TIMINGS.nodegroup_transition_s)
    status = eks.describe_nodegroup(clusterName="c", nodegroupName="system")["nodegroup"]
    assert status["status"] == "ACTIVE"  # the join timeout no longer applies


def helm_release(name: str, status: str, version: int = 1) -> dict:
    """A release Secret as Helm 3 stores it (labels owner/name/status/version)."""
    return {
        "metadata": {
            "name": f"sh.helm.release.v1.{name}.v{version}",
            "labels": {"owner": "helm", "name": name, "status": status, "version": str(version)},
        },
        "type": "helm.sh/release.v1",
        "data": {},
    }


def test_without_a_modelled_network_node_groups_turn_active_after_the_transition(aws, aws_server):
    aws_server.cni_ready = None  # as under `make dev`
    cluster = active_cluster(aws, aws_server)
    eks = aws.client("eks")
    eks.create_nodegroup(
        clusterName="c", nodegroupName="n", nodeRole=cluster["role"], subnets=cluster["subnets"]
    )
    assert eks.describe_nodegroup(clusterName="c", nodegroupName="n")["nodegroup"]["status"] == (
        "CREATING"
    )
    eks.get_waiter("nodegroup_active").wait(
        clusterName="c", nodegroupName="n", WaiterConfig={"Delay": 1, "MaxAttempts": 10}
    )


# --- Idempotency tokens ------------------------------------------------------------------------


def test_ec2_client_tokens_return_the_first_resource_and_refuse_other_parameters(aws, aws_server):
    ec2 = aws.client("ec2")
    vpc, subnets = network(aws)
    allocation = ec2.allocate_address(Domain="vpc")["AllocationId"]

    def nat(token: str, subnet: str = subnets[0]) -> str:
        return ec2.create_nat_gateway(SubnetId=subnet, AllocationId=allocation, ClientToken=token)[
            "NatGateway"
        ]["NatGatewayId"]

    def route_table(token: str, vpc_id: str = vpc) -> str:
        return ec2.create_route_table(VpcId=vpc_id, ClientToken=token)["RouteTable"]["RouteTableId"]

    def template(token: str, name: str = "lt") -> str:
        return ec2.create_launch_template(
            LaunchTemplateName=name, LaunchTemplateData={"InstanceType": "m5.large"},
            ClientToken=token,
        )["LaunchTemplate"]["LaunchTemplateId"]  # fmt: skip

    def instances(token: str, count: int = 1) -> list[str]:
        reservation = ec2.run_instances(
            ImageId="ami-12c6146b", MinCount=count, MaxCount=count, SubnetId=subnets[0],
            ClientToken=token,
        )  # fmt: skip
        return [i["InstanceId"] for i in reservation["Instances"]]

    assert nat("n-1") == nat("n-1")
    assert route_table("r-1") == route_table("r-1")
    assert template("l-1") == template("l-1")
    assert instances("i-1") == instances("i-1")
    assert len(ec2.describe_nat_gateways()["NatGateways"]) == 1
    tables = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]}])
    assert len(tables["RouteTables"]) == 2  # the main one and ours
    assert len(ec2.describe_launch_templates()["LaunchTemplates"]) == 1
    running = ec2.describe_instances()["Reservations"]
    assert sum(len(r["Instances"]) for r in running) == 1

    for mismatch in (
        lambda: nat("n-1", subnets[1]),
        lambda: template("l-1", "other"),
        lambda: instances("i-1", 2),
    ):
        with pytest.raises(ClientError) as raised:
            mismatch()
        assert error_of(raised) == (400, "IdempotentParameterMismatch")


def test_an_ambiguous_create_with_a_client_token_is_retried_without_a_duplicate(aws, aws_server):
    vpc, _ = network(aws)
    aws_server.inject("CreateRouteTable", "ambiguous")
    # boto3 fills in ClientToken and keeps it across its retries.
    table = aws.client("ec2").create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    tables = aws.client("ec2").describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]}])[
        "RouteTables"
    ]
    assert sorted(t["RouteTableId"] for t in tables if not t["Associations"]) == [table]
    assert aws_server.calls("CreateRouteTable") == 2


def test_eks_client_request_tokens_make_every_create_safe_to_retry(aws, aws_server):
    cluster = active_cluster(aws, aws_server)
    eks = aws.client("eks")
    creates = {
        "nodegroup": lambda: eks.create_nodegroup(
            clusterName="c", nodegroupName="n", nodeRole=cluster["role"],
            subnets=cluster["subnets"], clientRequestToken="tok-ng",
        )["nodegroup"]["nodegroupArn"],
        "addon": lambda: eks.create_addon(
            clusterName="c", addonName="coredns", clientRequestToken="tok-addon"
        )["addon"]["addonArn"],
        "access entry": lambda: eks.create_access_entry(
            clusterName="c", principalArn=cluster["role"], clientRequestToken="tok-entry"
        )["accessEntry"]["accessEntryArn"],
        "pod identity": lambda: eks.create_pod_identity_association(
            clusterName="c", namespace="kube-system", serviceAccount="cilium-operator",
            roleArn=cluster["role"], clientRequestToken="tok-pia",
        )["association"]["associationArn"],
    }  # fmt: skip
    for what, create in creates.items():
        assert create() == create(), what
    assert eks.list_nodegroups(clusterName="c")["nodegroups"] == ["n"]
    assert eks.list_addons(clusterName="c")["addons"] == ["coredns"]
    assert len(eks.list_pod_identity_associations(clusterName="c")["associations"]) == 1
    # Without the token a second create is a new request, and EKS says the name is taken.
    with pytest.raises(ClientError) as raised:
        eks.create_addon(clusterName="c", addonName="coredns")
    assert error_of(raised) == (409, "ResourceInUseException")


# --- The EKS cluster security group ------------------------------------------------------------


def test_every_cluster_comes_with_a_security_group_that_goes_with_it(aws, aws_server):
    role = old_role(aws, aws_server, "cluster")
    vpc, subnets = network(aws)
    eks, ec2 = aws.client("eks"), aws.client("ec2")
    created = eks.create_cluster(name="c", roleArn=role, resourcesVpcConfig={"subnetIds": subnets})
    config = created["cluster"]["resourcesVpcConfig"]
    assert config["vpcId"] == vpc
    group_id = config["clusterSecurityGroupId"]
    assert (
        eks.describe_cluster(name="c")["cluster"]["resourcesVpcConfig"]["clusterSecurityGroupId"]
        == group_id
    )

    (group,) = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"]
    assert group["VpcId"] == vpc
    assert group["GroupName"].startswith("eks-cluster-sg-c-")
    assert group["GroupName"].rsplit("-", 1)[1].isdigit()
    assert {t["Key"]: t["Value"] for t in group["Tags"]} == {
        "aws:eks:cluster-name": "c",
        "kubernetes.io/cluster/c": "owned",
    }
    (inbound,) = group["IpPermissions"]
    assert inbound["IpProtocol"] == "-1"
    assert [p["GroupId"] for p in inbound["UserIdGroupPairs"]] == [group_id]
    assert [r["CidrIp"] for p in group["IpPermissionsEgress"] for r in p["IpRanges"]] == [
        "0.0.0.0/0"
    ]

    # The control plane wears it: EC2 will not delete it while the cluster exists.
    with pytest.raises(ClientError) as raised:
        ec2.delete_security_group(GroupId=group_id)
    assert error_of(raised) == (400, "DependencyViolation")

    eks.get_waiter("cluster_active").wait(name="c", WaiterConfig={"Delay": 1, "MaxAttempts": 10})
    eks.delete_cluster(name="c")
    assert ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"]  # DELETING
    eks.get_waiter("cluster_deleted").wait(name="c", WaiterConfig={"Delay": 1, "MaxAttempts": 10})
    with pytest.raises(ClientError) as raised:
        ec2.describe_security_groups(GroupIds=[group_id])
    assert error_of(raised) == (400, "InvalidGroup.NotFound")


def test_a_cluster_security_group_another_group_names_is_left_behind(aws, aws_server):
    cluster = active_cluster(aws, aws_server)
    eks, ec2 = aws.client("eks"), aws.client("ec2")
    described = eks.describe_cluster(name="c")["cluster"]["resourcesVpcConfig"]
    group_id, vpc = described["clusterSecurityGroupId"], described["vpcId"]
    nodes = ec2.create_security_group(GroupName="nodes", Description="nodes", VpcId=vpc)["GroupId"]
    ec2.authorize_security_group_ingress(
        GroupId=nodes,
        IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443,
             "UserIdGroupPairs": [{"GroupId": group_id}]}
        ],
    )  # fmt: skip

    eks.delete_cluster(name=cluster["name"])
    eks.get_waiter("cluster_deleted").wait(name="c", WaiterConfig={"Delay": 1, "MaxAttempts": 10})

    # The cluster is gone, its group is not: it now blocks the VPC (terraform-provider-aws
    # #11473) until the rule naming it goes and the group is deleted by hand.
    assert ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"]
    with pytest.raises(ClientError) as raised:
        ec2.delete_security_group(GroupId=group_id)
    assert error_of(raised) == (400, "DependencyViolation")
    ec2.revoke_security_group_ingress(
        GroupId=nodes,
        IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443,
             "UserIdGroupPairs": [{"GroupId": group_id}]}
        ],
    )  # fmt: skip
    ec2.delete_security_group(GroupId=group_id)


def test_a_cluster_on_a_subnet_ec2_does_not_know_is_refused(aws, aws_server):
    role = old_role(aws, aws_server, "cluster")
    with pytest.raises(ClientError) as raised:
        aws.client("eks").create_cluster(
            name="c", roleArn=role, resourcesVpcConfig={"subnetIds": ["subnet-0123456789abcdef0"]}
        )
    assert error_of(raised) == (400, "InvalidParameterException")
    assert "InvalidSubnetID.NotFound" in raised.value.response["Error"]["Message"]
    assert aws.client("eks").list_clusters()["clusters"] == []


# --- EC2 security group dependencies -----------------------------------------------------------


@pytest.mark.parametrize("direction", ["ingress", "egress"])
def test_a_security_group_another_group_names_cannot_be_deleted(aws, aws_server, direction):
    ec2 = aws.client("ec2")
    vpc, _ = network(aws)
    named, naming = (
        ec2.create_security_group(GroupName=n, Description=n, VpcId=vpc)["GroupId"]
        for n in ("named", "naming")
    )
    rule = [{"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": named}]}]
    authorize, revoke = (
        (ec2.authorize_security_group_ingress, ec2.revoke_security_group_ingress)
        if direction == "ingress"
        else (ec2.authorize_security_group_egress, ec2.revoke_security_group_egress)
    )
    authorize(GroupId=naming, IpPermissions=rule)
    ec2.authorize_security_group_ingress(  # naming itself does not count
        GroupId=named,
        IpPermissions=[{"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": named}]}],
    )

    with pytest.raises(ClientError) as raised:
        ec2.delete_security_group(GroupId=named)
    assert error_of(raised) == (400, "DependencyViolation")
    assert raised.value.response["Error"]["Message"] == f"resource {named} has a dependent object"
    assert ec2.describe_security_groups(GroupIds=[named])["SecurityGroups"]

    revoke(GroupId=naming, IpPermissions=rule)  # once no other group names it, it may go
    ec2.delete_security_group(GroupId=named)


# --- Node group version updates ----------------------------------------------------------------


def nodegroup_with_template(aws, aws_server, image_id: str | None = None) -> tuple[dict, str]:
    cluster = active_cluster(aws, aws_server)
    aws_server.cni_ready = None
    ec2, eks = aws.client("ec2"), aws.client("eks")
    data = {"InstanceType": "m5.large", **({"ImageId": image_id} if image_id else {})}
    template = ec2.create_launch_template(LaunchTemplateName="lt", LaunchTemplateData=data)[
        "LaunchTemplate"
    ]["LaunchTemplateId"]
    eks.create_nodegroup(
        clusterName="c", nodegroupName="n", nodeRole=cluster["role"], subnets=cluster["subnets"],
        launchTemplate={"id": template, "version": "1"}, releaseVersion="1.20.0-aaaa",
    )  # fmt: skip
    eks.get_waiter("nodegroup_active").wait(
        clusterName="c", nodegroupName="n", WaiterConfig={"Delay": 1, "MaxAttempts": 10}
    )
    ec2.create_launch_template_version(LaunchTemplateId=template, LaunchTemplateData=data)
    return cluster, template


def test_a_node_group_version_update_is_updating_then_active(aws, aws_server):
    _, template = nodegroup_with_template(aws, aws_server)
    eks = aws.client("eks")

    update = eks.update_nodegroup_version(
        clusterName="c", nodegroupName="n", releaseVersion="1.21.0-bbbb",
        launchTemplate={"id": template, "version": "2"},
    )["update"]  # fmt: skip

    assert (update["type"], update["status"], update["errors"]) == (
        "VersionUpdate",
        "InProgress",
        [],
    )
    assert {p["type"]: p["value"] for p in update["params"]} == {
        "ReleaseVersion": "1.21.0-bbbb",
        "LaunchTemplateVersion": "2",
    }
    nodegroup = eks.describe_nodegroup(clusterName="c", nodegroupName="n")["nodegroup"]
    assert nodegroup["status"] == "UPDATING"
    assert nodegroup["releaseVersion"] == "1.21.0-bbbb"
    assert nodegroup["launchTemplate"]["version"] == "2"
    with pytest.raises(ClientError) as raised:  # one update at a time
        eks.update_nodegroup_version(clusterName="c", nodegroupName="n", releaseVersion="1.22.0")
    assert error_of(raised) == (409, "ResourceInUseException")
    assert raised.value.response["Error"]["Message"] == (
        "Nodegroup cannot be updated as it is currently not in Active State"
    )
    described = eks.describe_update(name="c", nodegroupName="n", updateId=update["id"])["update"]
    assert described["status"] == "InProgress"

    started = time.monotonic()
    eks.get_waiter("nodegroup_active").wait(
        clusterName="c", nodegroupName="n", WaiterConfig={"Delay": 1, "MaxAttempts": 10}
    )
    assert time.monotonic() - started > 0.3  # the waiter had to wait
    described = eks.describe_update(name="c", nodegroupName="n", updateId=update["id"])["update"]
    assert described["status"] == "Successful"


def test_a_node_group_version_update_keeps_to_its_launch_template(aws, aws_server):
    _, template = nodegroup_with_template(aws, aws_server, image_id="ami-12c6146b")
    eks, ec2 = aws.client("eks"), aws.client("ec2")
    other = ec2.create_launch_template(
        LaunchTemplateName="other", LaunchTemplateData={"InstanceType": "m5.large"}
    )["LaunchTemplate"]["LaunchTemplateId"]
    refused = {
        "another template": {"launchTemplate": {"id": other, "version": "1"}},
        "an older release (no rollback)": {"releaseVersion": "1.19.0-zzzz"},
        "a release with a custom AMI": {
            "launchTemplate": {"id": template, "version": "2"},
            "releaseVersion": "1.21.0-bbbb",
        },
    }
    for what, arguments in refused.items():
        with pytest.raises(ClientError) as raised:
            eks.update_nodegroup_version(clusterName="c", nodegroupName="n", **arguments)
        assert error_of(raised) == (400, "InvalidParameterException"), what
    assert eks.describe_nodegroup(clusterName="c", nodegroupName="n")["nodegroup"]["status"] == (
        "ACTIVE"
    )

    eks.update_nodegroup_version(
        clusterName="c", nodegroupName="n", launchTemplate={"id": template, "version": "2"}
    )
