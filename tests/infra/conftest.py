"""Fixtures of the cluster tests: the staging spec, a unit context on the moto server."""

from __future__ import annotations

import boto3
import pytest

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
