"""AWS for the tests: moto's server with our extensions (devtools.local_aws), over HTTP.

One server per test session on a free 127.0.0.1 port; each test that asks for `aws` gets an
empty account (moto's reset), dummy credentials and AWS_ENDPOINT_URL pointing at the server, so
the code under test runs its real boto3 calls through HTTP.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import boto3
import pytest

from devtools.local_aws import LocalAws
from tests.conftest import free_port

REGION = "eu-west-3"


@pytest.fixture(scope="session")
def local_aws_server() -> Iterator[LocalAws]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per call
    server = LocalAws(port=free_port()).start()
    yield server
    server.stop()


@pytest.fixture
def aws(local_aws_server: LocalAws, monkeypatch: pytest.MonkeyPatch, tmp_path) -> boto3.Session:
    """A boto3 session on an empty emulated account; the environment points boto3 there too."""
    local_aws_server.reset()
    monkeypatch.setenv("AWS_ENDPOINT_URL", local_aws_server.endpoint_url)
    # Not credentials: moto accepts anything. Set so no real ones from the machine are used.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    return boto3.Session(region_name=REGION)


def deny_reads(client, bucket: str, prefix: str) -> None:
    """A bucket policy that refuses GetObject under `prefix` to everyone.

    S3 answers such a read 403 AccessDenied: an explicit Deny overrides every Allow (AWS S3 User
    Guide, "How Amazon S3 authorizes a request"; IAM policy evaluation logic). moto's server
    enforces bucket policies on object reads and answers the same (checked by the tests that
    use this: they see the 403 come back through boto3).
    """
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{bucket}/{prefix}*",
            }
        ],
    }
    client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
