"""create_or_adopt and the `once` clients against the moto server, with faults played by it."""

from __future__ import annotations

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from infra_assets.aws_access import (
    ONCE_MAX_ATTEMPTS,
    AwsClients,
    owner_filter,
    wait_long,
    wait_short,
)
from infra_assets.idempotent import CreateNotConfirmed, create_or_adopt
from tests.conftest import free_port

STACK = "test-stack"
TAGS = [{"ResourceType": "vpc", "Tags": [{"Key": "gpu-analysis/stack", "Value": STACK}]}]


def _vpcs(ec2) -> list[str]:
    return [v["VpcId"] for v in ec2.describe_vpcs(Filters=[owner_filter(STACK)])["Vpcs"]]


def _find(ec2):
    def find() -> str | None:
        found = _vpcs(ec2)
        return found[0] if found else None

    return find


def test_an_ambiguous_create_is_sent_once_and_what_it_made_is_adopted(aws_ctx, aws_server):
    clients = AwsClients(aws_ctx)
    once, ec2 = clients.once("ec2"), clients.ec2
    aws_server.inject("CreateVpc", "ambiguous")
    messages: list[str] = []

    vpc_id = create_or_adopt(
        "vpc test",
        lambda: once.create_vpc(CidrBlock="10.9.0.0/16", TagSpecifications=TAGS)["Vpc"]["VpcId"],
        _find(ec2),
        log=messages.append,
    )

    assert _vpcs(ec2) == [vpc_id]
    assert aws_server.calls("CreateVpc") == 1  # the 500 was not re-sent
    (message,) = messages
    assert f"vpc test: adopted {vpc_id}" in message and "500 InternalError" in message


def test_the_once_client_does_not_resend_a_500_but_the_standard_client_does(aws_ctx, aws_server):
    # Why creates need `once`: botocore's standard retries re-send the 500, making a second VPC.
    clients = AwsClients(aws_ctx)
    aws_server.inject("CreateVpc", "ambiguous")
    with pytest.raises(ClientError, match="InternalError"):
        clients.once("ec2").create_vpc(CidrBlock="10.9.0.0/16", TagSpecifications=TAGS)
    assert len(_vpcs(clients.ec2)) == 1

    aws_server.inject("CreateVpc", "ambiguous")
    clients.ec2.create_vpc(CidrBlock="10.9.0.0/16", TagSpecifications=TAGS)
    assert len(_vpcs(clients.ec2)) == 3


def test_throttling_is_waited_out_by_the_once_client(aws_ctx, aws_server):
    clients = AwsClients(aws_ctx)
    aws_server.inject("CreateVpc", "throttle", times=3)

    vpc_id = clients.once("ec2").create_vpc(CidrBlock="10.9.0.0/16", TagSpecifications=TAGS)["Vpc"][
        "VpcId"
    ]

    assert _vpcs(clients.ec2) == [vpc_id]
    assert aws_server.calls("CreateVpc") == 4


def test_throttling_past_the_clients_patience_is_waited_out_by_create_or_adopt(aws_ctx, aws_server):
    clients = AwsClients(aws_ctx)
    once = clients.once("ec2")
    aws_server.inject("CreateVpc", "throttle", times=ONCE_MAX_ATTEMPTS + 1)
    messages: list[str] = []

    vpc_id = create_or_adopt(
        "vpc test",
        lambda: once.create_vpc(CidrBlock="10.9.0.0/16", TagSpecifications=TAGS)["Vpc"]["VpcId"],
        _find(clients.ec2),
        log=messages.append,
    )

    assert _vpcs(clients.ec2) == [vpc_id]
    assert any("throttled" in m and "RequestLimitExceeded" in m for m in messages)


def test_already_exists_adopts_what_the_look_up_finds(aws_ctx):
    iam = AwsClients(aws_ctx).once("iam")
    arn = iam.create_role(RoleName="ours", AssumeRolePolicyDocument="{}")["Role"]["Arn"]

    found = create_or_adopt(
        "role ours",
        lambda: iam.create_role(RoleName="ours", AssumeRolePolicyDocument="{}")["Role"]["Arn"],
        lambda: iam.get_role(RoleName="ours")["Role"]["Arn"],
    )

    assert found == arn


def test_already_exists_but_not_ours_names_the_resource_and_what_to_do(aws_ctx):
    iam = AwsClients(aws_ctx).once("iam")
    iam.create_role(RoleName="theirs", AssumeRolePolicyDocument="{}")

    with pytest.raises(CreateNotConfirmed) as caught:
        create_or_adopt(
            "role theirs",
            lambda: iam.create_role(RoleName="theirs", AssumeRolePolicyDocument="{}"),
            lambda: None,
        )
    assert str(caught.value).startswith("role theirs: AWS says it already exists")
    assert "EntityAlreadyExists" in str(caught.value)
    assert "remove it or choose another name" in str(caught.value)


def _unreachable_ec2(aws_ctx):
    # A real connection to a port nobody listens on: the client cannot tell what happened.
    return aws_ctx.aws.client(
        "ec2",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        config=Config(retries={"mode": "standard", "total_max_attempts": 1}, connect_timeout=1),
    )


def test_a_lost_connection_with_nothing_created_is_retried(aws_ctx):
    clients = AwsClients(aws_ctx)
    unreachable = _unreachable_ec2(aws_ctx)
    attempts: list[str] = []

    def create() -> str:
        client = unreachable if not attempts else clients.once("ec2")
        attempts.append("x")
        return client.create_vpc(CidrBlock="10.9.0.0/16", TagSpecifications=TAGS)["Vpc"]["VpcId"]

    vpc_id = create_or_adopt("vpc test", create, _find(clients.ec2))

    assert len(attempts) == 2
    assert _vpcs(clients.ec2) == [vpc_id]


def test_bounded_attempts_then_an_error_naming_the_resource(aws_ctx):
    clients = AwsClients(aws_ctx)
    unreachable = _unreachable_ec2(aws_ctx)
    attempts: list[str] = []

    def create() -> str:
        attempts.append("x")
        return unreachable.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]

    with pytest.raises(CreateNotConfirmed, match=r"^vpc test: not created after 3 attempts"):
        create_or_adopt("vpc test", create, _find(clients.ec2), max_attempts=3)
    assert len(attempts) == 3
    assert _vpcs(clients.ec2) == []


def test_an_error_that_is_neither_ambiguous_nor_a_duplicate_is_raised_at_once(aws_ctx):
    once = AwsClients(aws_ctx).once("ec2")
    looked: list[str] = []

    with pytest.raises(ClientError, match=r"InvalidParameterValue|InvalidVpc\.Range"):
        create_or_adopt(
            "vpc bad",
            lambda: once.create_vpc(CidrBlock="10.9.0.0/8")["Vpc"]["VpcId"],
            lambda: looked.append("x"),
        )
    assert looked == []


def test_waiter_poll_follows_the_environment_and_keeps_its_patience(monkeypatch):
    monkeypatch.delenv("GPU_ANALYSIS_AWS_POLL_S", raising=False)
    assert wait_short() == {"Delay": 10, "MaxAttempts": 60}
    assert wait_long() == {"Delay": 20, "MaxAttempts": 120}
    monkeypatch.setenv("GPU_ANALYSIS_AWS_POLL_S", "0.5")
    assert wait_short() == {"Delay": 0.5, "MaxAttempts": 1200}
    assert wait_long() == {"Delay": 0.5, "MaxAttempts": 4800}
    monkeypatch.setenv("GPU_ANALYSIS_AWS_POLL_S", "soon")
    with pytest.raises(ValueError, match="GPU_ANALYSIS_AWS_POLL_S='soon': need a number"):
        wait_short()
