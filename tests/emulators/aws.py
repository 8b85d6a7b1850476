"""AWS for the tests: moto's server with our extensions (devtools.local_aws), over HTTP.

One server per test session on a free 127.0.0.1 port; each test that asks for `aws` gets an
empty account (moto's reset), dummy credentials and AWS_ENDPOINT_URL pointing at the server, so
the code under test runs its real boto3 calls through HTTP.

The account behaves like a real one, only faster: IAM principals become usable after 1 s, EKS
clusters and node groups take 1 s to turn ACTIVE (or to go away), and a node group whose cluster
has no network plugin fails after 3 s (`cni_ready` answers False until a test says otherwise,
e.g. with `cni_from_helm`). Each EKS cluster comes with its cluster security group, which goes
with it, and EC2 refuses to delete a security group another group's rule still names.
`aws_server` is the server itself, to inject faults or change that.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Iterator

import boto3
import pytest

from devtools.local_aws import LocalAws, Timings
from tests.conftest import free_port

REGION = "eu-west-3"

# Small but non-zero, so code that does not wait for AWS fails here as it would on AWS.
TEST_TIMINGS = Timings(
    iam_propagation_s=1.0,
    cluster_transition_s=1.0,
    nodegroup_transition_s=1.0,
    nodes_join_timeout_s=3.0,
)
# How often the code under test polls AWS (its waiters read it), to match the timings above.
POLL_S = "0.2"


@pytest.fixture(scope="session")
def local_aws_server() -> Iterator[LocalAws]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per call
    server = LocalAws(port=free_port()).start()
    yield server
    server.stop()


@pytest.fixture
def aws_server(local_aws_server: LocalAws) -> Iterator[LocalAws]:
    """The server, reset to an empty account with the test timings and no cluster network.

    Tests use it to inject faults (`aws_server.inject("CreateVpc", "ambiguous")`), change the
    timings (`aws_server.configure(...)`) or say when the CNI runs (`aws_server.cni_ready`).
    """
    local_aws_server.reset()
    local_aws_server.configure(**dataclasses.asdict(TEST_TIMINGS))
    local_aws_server.cni_ready = lambda cluster_name: False
    yield local_aws_server
    local_aws_server.reset_settings()  # no fault or setting leaks into the next test


@pytest.fixture
def aws(aws_server: LocalAws, monkeypatch: pytest.MonkeyPatch, tmp_path) -> boto3.Session:
    """A boto3 session on an empty emulated account; the environment points boto3 there too."""
    monkeypatch.setenv("GPU_ANALYSIS_AWS_POLL_S", POLL_S)
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_server.endpoint_url)
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


def cni_from_helm(kube_store) -> Callable[[str], bool]:
    """`cni_ready` for `aws_server`: True once the Kubernetes emulator holds a deployed "cilium".

    Helm 3 records each release revision as a Secret of type helm.sh/release.v1 labelled
    owner=helm, name=<release>, status=<status> (Helm docs, "Storage backends"), as the fake
    helm writes them. One emulated cluster per test, so the cluster name is not looked at.
    """

    def ready(cluster_name: str) -> bool:
        with kube_store.lock:
            secrets = [
                obj
                for (group, _version, plural, _ns, _name), obj in kube_store.objects.items()
                if group == "" and plural == "secrets"
            ]
        for secret in secrets:
            labels = secret.get("metadata", {}).get("labels") or {}
            if (
                secret.get("type") == "helm.sh/release.v1"
                and labels.get("owner") == "helm"
                and labels.get("name") == "cilium"
                and labels.get("status") == "deployed"
            ):
                return True
        return False

    return ready
