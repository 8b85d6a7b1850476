"""Fixtures of the in-cluster unit tests: a context on the emulated cluster, the fake helm."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

from infra_assets.spec import ClusterSpec
from infra_assets.unit import UnitContext

FAKE_HELM = Path(__file__).resolve().parents[2] / "emulators" / "fake_helm"


@pytest.fixture
def helm_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every call of the fake helm, one JSON line each."""
    log = tmp_path / "helm.jsonl"
    monkeypatch.setenv("FAKE_HELM_LOG", str(log))
    return log


def helm_calls(log: Path) -> list[dict]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


@pytest.fixture
def spec() -> ClusterSpec:
    return ClusterSpec()


@pytest.fixture
def ctx(kube_api, helm_log, spec) -> UnitContext:
    """A unit context on the emulated cluster; AWS is never called by the in-cluster units."""
    return UnitContext(
        spec=spec,
        aws=boto3.Session(region_name=spec.region),
        kube=kube_api.api_client(),
        helm_binary=str(FAKE_HELM),
    )


@pytest.fixture
def no_cluster_ctx(spec) -> UnitContext:
    return UnitContext(spec=spec, aws=boto3.Session(region_name=spec.region), kube=None)
