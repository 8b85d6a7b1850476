"""Fixtures of the deployment tests: real PostgreSQL, the Kubernetes emulator with a kubelet."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gpu_analysis.workers.reporting import ERROR_FILE_ENV
from tests.conftest import REPO_ROOT, VENV_BIN
from tests.emulators.kube_api import KubeApiEmulator
from tests.emulators.kubelet import Kubelet
from tests.emulators.postgres import postgres_server  # noqa: F401  (a session fixture)
from tests.match.conftest import (  # noqa: F401  (fixtures of the match tests, reused)
    heatmap_model,
    instance,
    moto_endpoint,
    s3_staging,
)

NAMESPACE = "gpu-analysis"  # the staging profile's namespace
UNPULLABLE_IMAGE = "222222222222.dkr.ecr.eu-west-3.amazonaws.com/gpu-analysis:no-such-tag"


@pytest.fixture
def cluster(tmp_path: Path, moto_endpoint: str) -> Iterator[tuple[KubeApiEmulator, Kubelet]]:  # noqa: F811
    """The API emulator with the staging namespace, and a kubelet that runs its pods here."""
    api = KubeApiEmulator().start()
    api.store.put("", "v1", "namespaces", "", {"metadata": {"name": NAMESPACE}})
    kubelet = Kubelet(
        api,
        # What deploy/worker.Dockerfile's ENV sets, with this checkout as the installed code.
        image_env={
            "PATH": f"{VENV_BIN}:/usr/bin:/bin",
            "PYTHONPATH": str(REPO_ROOT),
            "PYTHONUNBUFFERED": "1",
            "HOME": str(tmp_path),
        },
        # EKS Pod Identity's webhook gives pods AWS credentials; here: moto's endpoint and keys.
        injected_env={
            "AWS_ENDPOINT_URL": moto_endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "eu-west-3",
        },
        unpullable_images={UNPULLABLE_IMAGE},
        termination_log_env=ERROR_FILE_ENV,
        workdir=tmp_path / "node",
    )
    kubelet.start()
    try:
        yield api, kubelet
    finally:
        kubelet.stop()
        api.stop()
