"""Resources of the match area: where match files live, analysis settings, the GPU step launcher."""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import dagster as dg
from dagster import AssetExecutionContext
from dagster._core.errors import DagsterPipesExecutionError  # not exported by `dagster`
from dagster_aws.s3 import S3Resource

from gpu_analysis import storage
from gpu_analysis.profile import Profile
from gpu_analysis.workers.reporting import ERROR_FILE_ENV
from video_assets.pod_specs import STEPS, Step, StepPod, step_pod

TERMINATION_ERROR = re.compile(r'failed with message: "(error: [^"\n]*)\n?"')
VIDEO_SUFFIX = ".mp4"
CALIBRATION_SUFFIX = ".calibration.json"


_S3_CLIENTS: dict[tuple[str | None, ...], Any] = {}
_S3_CLIENTS_LOCK = threading.Lock()


def _shared_s3_client(s3: S3Resource) -> Any:
    """One S3 client per configuration for the whole process.

    Resources are built anew for every sensor tick and step, and building a client costs more
    than listing a few hundred keys. boto3 clients are thread-safe and refresh Pod Identity
    credentials themselves. The endpoint settings are part of the key because boto3 reads
    them when the client is built.
    """
    key = (
        s3.region_name,
        s3.endpoint_url,
        s3.profile_name,
        os.environ.get("AWS_ENDPOINT_URL"),
        os.environ.get("AWS_ENDPOINT_URL_S3"),
        os.environ.get("AWS_PROFILE"),
    )
    with _S3_CLIENTS_LOCK:
        if key not in _S3_CLIENTS:
            _S3_CLIENTS[key] = s3.get_client()
        return _S3_CLIENTS[key]


class MatchStorage(dg.ConfigurableResource):
    """Where a match's files live: `incoming/`, `work/<match_id>/`, `results/<match_id>/`.

    `root_uri` is a local folder or `s3://bucket`; `scratch_dir` is local disk for the files a
    CPU step must read locally (probe, aggregation).
    """

    root_uri: str
    scratch_dir: str
    s3: S3Resource

    def _client(self) -> Any:
        if not storage.is_s3(self.root_uri):
            return None
        return _shared_s3_client(self.s3)

    @property
    def incoming_uri(self) -> str:
        return storage.join(self.root_uri, "incoming")

    def video_uri(self, match_id: str) -> str:
        return storage.join(self.incoming_uri, match_id + VIDEO_SUFFIX)

    def calibration_uri(self, match_id: str) -> str:
        return storage.join(self.incoming_uri, match_id + CALIBRATION_SUFFIX)

    def work_uri(self, match_id: str, *names: str) -> str:
        return storage.join(self.root_uri, "work", match_id, *names)

    def delivery_uri(self, match_id: str, *names: str) -> str:
        return storage.join(self.root_uri, "results", match_id, *names)

    def scratch(self, match_id: str, *names: str) -> Path:
        return Path(self.scratch_dir, match_id, *names)

    def list(self, prefix_uri: str) -> list[storage.StoredObject]:
        return storage.list_objects(prefix_uri, client=self._client())

    def list_incoming(self) -> list[storage.StoredObject]:
        return self.list(self.incoming_uri)

    def local_path(self, uri: str, scratch_path: Path) -> Path:
        """`uri` as a local file: itself when local, else a copy in scratch."""
        if not storage.is_s3(uri):
            return Path(uri)
        return storage.fetch(uri, scratch_path, client=self._client())

    def put_file(self, local_path: Path, uri: str) -> None:
        storage.put_file(local_path, uri, client=self._client())

    def put_bytes(self, payload: bytes, uri: str) -> None:
        storage.write_bytes(uri, payload, client=self._client())

    def read_json(self, uri: str) -> Any:
        return json.loads(storage.read_bytes(uri, client=self._client()))

    def write_json(self, value: Any, uri: str) -> None:
        self.put_bytes(json.dumps(value, indent=2, sort_keys=True).encode(), uri)

    def remove(self, prefix_uri: str) -> None:
        storage.remove_prefix(prefix_uri, client=self._client())

    def remove_file(self, uri: str) -> None:
        storage.remove_file(uri, client=self._client())

    def replace(self, source_uri: str, target_uri: str) -> None:
        storage.replace_prefix(source_uri, target_uri, client=self._client())


class AnalysisSettings(dg.ConfigurableResource):
    """The engine settings of a match run; the profile gives the defaults."""

    sample_fps: float
    model: str  # "builtin" or a path to an .onnx file readable by the workers
    device: str  # auto | cpu | cuda
    batch_size: int
    res_m: float = 1.0


class GpuWorkers:
    """Runs a GPU step's worker through Dagster Pipes: a local process, or a pod on its pool."""

    def __init__(self, execution: str, pods: dict[Step, StepPod], namespace: str, image: str):
        self.execution = execution
        self.pods = pods
        self.namespace = namespace
        self.image = image

    @classmethod
    def from_profile(cls, profile: Profile) -> GpuWorkers:
        pods = {step: step_pod(profile, step) for step in STEPS}
        return cls(profile.execution, pods, profile.namespace, profile.image)

    def command(self, step: Step) -> list[str]:
        python = sys.executable if self.execution == "subprocess" else "python"
        return [python, "-m", f"gpu_analysis.workers.{step}"]

    def run(
        self, context: AssetExecutionContext, step: Step, extras: dict[str, Any]
    ) -> dg.MaterializeResult:
        """Run the step's worker; bad input fails the step without retries, with its message."""
        if self.execution == "subprocess":
            invocation = self._run_process(context, step, extras)
        else:
            invocation = self._run_pod(context, step, extras)
        return invocation.get_materialize_result()

    def _run_process(
        self, context: AssetExecutionContext, step: Step, extras: dict[str, Any]
    ) -> dg.PipesClientCompletedInvocation:
        fd, error_file = tempfile.mkstemp(prefix=f"gpu-analysis-{step}-", suffix=".error")
        os.close(fd)
        try:
            return dg.PipesSubprocessClient().run(
                context=context,
                command=self.command(step),
                extras=extras,
                env={ERROR_FILE_ENV: error_file},
            )
        except DagsterPipesExecutionError:
            line = Path(error_file).read_text().strip()
            if line:
                raise dg.Failure(description=line, allow_retries=False) from None
            raise  # killed or crashed: the retry policy decides
        finally:
            Path(error_file).unlink(missing_ok=True)

    def _run_pod(
        self, context: AssetExecutionContext, step: Step, extras: dict[str, Any]
    ) -> dg.PipesClientCompletedInvocation:
        from dagster_k8s import PipesK8sClient
        from dagster_k8s.client import DagsterK8sError

        pod = self.pods[step]
        try:
            return PipesK8sClient().run(
                context=context,
                extras=extras,
                image=self.image,
                command=self.command(step),
                namespace=self.namespace,
                base_pod_meta=pod.meta,
                base_pod_spec=pod.spec,
            )
        except DagsterK8sError as exc:
            # The worker's error line comes back as the container's termination message.
            found = TERMINATION_ERROR.search(str(exc))
            if found:
                raise dg.Failure(description=found.group(1), allow_retries=False) from None
            raise
