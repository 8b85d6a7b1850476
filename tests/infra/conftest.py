"""Fixtures of the cluster tests: the staging spec, a unit context on the moto server."""

from __future__ import annotations

import boto3
import dagster as dg
import pytest

import infra_assets.definitions
from gpu_analysis.profile import load_profile
from infra_assets.spec import ClusterSpec
from infra_assets.unit import UnitContext


@pytest.fixture
def no_kubeconfig(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """No cluster configured: the in-cluster units plan and say so."""
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)


@pytest.fixture
def aws_ctx(aws: boto3.Session) -> UnitContext:
    """The seed's staging cluster on an empty emulated AWS account."""
    return UnitContext(spec=ClusterSpec(), aws=aws)


@pytest.fixture
def defs(aws, local_aws_server, no_kubeconfig) -> dg.Definitions:
    """The staging profile's Definitions on the moto server, without a cluster."""
    # These tests are about the jobs and the UI, not the node/CNI order (tests/infra/test_eks_*):
    # the emulated node groups find a network plugin, as they do once gpu_cilium has run.
    local_aws_server.cni_ready = lambda _cluster: True
    return infra_assets.definitions.build_definitions(load_profile("staging"))


@pytest.fixture
def instance() -> dg.DagsterInstance:
    return dg.DagsterInstance.ephemeral()
