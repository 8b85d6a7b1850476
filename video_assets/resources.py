"""Resources of the match area: where match files live, analysis settings, the GPU step launcher."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import dagster as dg
from dagster import AssetExecutionContext
from dagster._core.errors import DagsterPipesExecutionError  # not exported by `dagster`
from dagster_aws.s3 import S3Resource

from gpu_analysis.engine import storage
from gpu_analysis.engine.records import (
    InferParams,
    PreprocessParams,
    Record,
    as_plain,
    from_plain,
)
from gpu_analysis.profile import Profile
from gpu_analysis.workers.reporting import ERROR_FILE_ENV
from video_assets.layout import MatchLayout
from video_assets.pod_specs import STEPS, Step, StepPod, step_pod

TERMINATION_ERROR = re.compile(r'failed with message: "(error: [^"\n]*)\n?"')


class MatchStorage(dg.ConfigurableResource):
    """Where a match's files live: `incoming/`, `work/<match_id>/`, `results/<match_id>/`.

    `root_uri` is a local folder or `s3://bucket`; `scratch_dir` is local disk for the files a
    CPU step must read locally (probe, aggregation).
    """

    root_uri: str
    scratch_dir: str
    s3: S3Resource

    @property
    def layout(self) -> MatchLayout:
        return MatchLayout(self.root_uri)

    def _client(self) -> Any:
        if not storage.is_s3(self.root_uri):
            return None
        return storage.s3_client(
            region=self.s3.region_name, endpoint=self.s3.endpoint_url, profile=self.s3.profile_name
        )

    def scratch(self, match_id: str, *names: str) -> Path:
        return Path(self.scratch_dir, match_id, *names)

    def list(self, prefix_uri: str) -> list[storage.StoredObject]:
        return storage.list_objects(prefix_uri, client=self._client())

    def list_incoming(self) -> list[storage.StoredObject]:
        return self.list(self.layout.incoming_uri)

    def local_copy(self, uri: str) -> contextlib.AbstractContextManager[Path]:
        """`uri` as a local file inside the block (a temporary copy of an S3 object)."""
        return storage.local_copy(uri, client=self._client())

    def put_file(self, local_path: Path, uri: str) -> None:
        storage.put_file(local_path, uri, client=self._client())

    def put_bytes(self, payload: bytes, uri: str) -> None:
        storage.write_bytes(uri, payload, client=self._client())

    def read_json(self, uri: str) -> Any:
        return json.loads(storage.read_bytes(uri, client=self._client()))

    def read_record(self, cls: type[Record], uri: str) -> Record:
        return from_plain(cls, self.read_json(uri))

    def write_json(self, value: Any, uri: str) -> None:
        if dataclasses.is_dataclass(value):
            value = as_plain(value)
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
        self, context: AssetExecutionContext, step: Step, params: PreprocessParams | InferParams
    ) -> dg.MaterializeResult:
        """Run the step's worker; bad input fails the step without retries, with its message."""
        extras = as_plain(params)
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
