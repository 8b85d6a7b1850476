"""Fixtures of the match tests: a Dagster instance, a moto S3 server, a small heat-map model."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import boto3
import dagster as dg
import pytest

from gpu_analysis.profile import load_profile
from tests.conftest import REPO_ROOT

BUCKET = "test-gpu-analysis-matches"


@pytest.fixture
def instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dg.DagsterInstance]:
    """A real (SQLite) instance in a temporary DAGSTER_HOME with the repository's dagster.yaml."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as inst:
        yield inst


@pytest.fixture(scope="session")
def moto_endpoint(local_aws_server) -> str:
    """The session's moto server (tests.emulators.aws) over HTTP: its endpoint URL."""
    return local_aws_server.endpoint_url


@pytest.fixture
def s3_staging(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch):
    """The staging profile against an empty bucket on the moto server; returns an S3 client."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("GPU_ANALYSIS_PROFILE", "staging")
    monkeypatch.setenv("GPU_ANALYSIS_BUCKET", BUCKET)
    client = boto3.client("s3", region_name="eu-west-3")
    client.create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-3"}
    )
    yield client
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=BUCKET):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=BUCKET, Delete={"Objects": keys})
    client.delete_bucket(Bucket=BUCKET)


@pytest.fixture
def local_profile():
    return load_profile("local")


def build_heatmap_model(path: Path, *, input_wh: tuple[int, int] = (320, 192)) -> Path:
    """A tiny heat-map model: 'not grass' colour score, max-pooled to stride 4, then a sigmoid.

    Shirts of the synthetic kits score high and grass, lines and letterbox padding low, so the
    engine's peak decoder finds roughly one peak per player; good enough to drive the pipeline.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    width, height = input_wh
    weights = np.array([1.0, -2.0, 1.0], dtype=np.float32).reshape(1, 3, 1, 1)
    nodes = [
        helper.make_node("Conv", ["images", "w"], ["score"]),
        helper.make_node("MaxPool", ["score"], ["pooled"], kernel_shape=[4, 4], strides=[4, 4]),
        helper.make_node("Sub", ["pooled", "offset"], ["shifted"]),
        helper.make_node("Mul", ["shifted", "gain"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["heatmap"]),
    ]
    graph = helper.make_graph(
        nodes,
        "test-heatmap",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, height, width])],
        [
            helper.make_tensor_value_info(
                "heatmap", TensorProto.FLOAT, ["N", 1, height // 4, width // 4]
            )
        ],
        initializer=[
            numpy_helper.from_array(weights, "w"),
            numpy_helper.from_array(np.array(0.15, dtype=np.float32), "offset"),
            numpy_helper.from_array(np.array(10.0, dtype=np.float32), "gain"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10  # onnxruntime 1.31 reads IR <= 10
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path


@pytest.fixture(scope="session")
def heatmap_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_heatmap_model(tmp_path_factory.mktemp("model") / "heatmap.onnx")
