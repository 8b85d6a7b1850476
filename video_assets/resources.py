"""Resources of the match area: where match files live, analysis settings, the GPU step launcher."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import dagster as dg
from dagster import AssetExecutionContext
from dagster._core.errors import DagsterPipesExecutionError  # not exported by `dagster`
from dagster_aws.s3 import S3Resource

from gpu_analysis.engine import storage
from gpu_analysis.engine.errors import s3_error_code
from gpu_analysis.engine.records import (
    InferParams,
    PreprocessParams,
    Record,
    as_plain,
    from_plain,
)
from gpu_analysis.processes import process_running
from gpu_analysis.profile import Profile
from gpu_analysis.run_launcher import run_process
from gpu_analysis.workers.reporting import ERROR_FILE_ENV, OWNER_GONE_EXIT, OWNER_PIDS_ENV
from video_assets.layout import MatchLayout
from video_assets.pod_specs import STEPS, Step, StepPod, step_pod

T = TypeVar("T")
TERMINATION_ERROR = re.compile(r'failed with message: "(error: [^"\n]*)\n?"')

# Step timeouts: a fixed start allowance plus seconds per second of video.
# A worker process starts in about 0.5 s on the 2-core development machine (Python, OpenCV and
# ONNX Runtime imports; ad hoc). The rest of the allowance is for staging, where the pod's
# deadline (activeDeadlineSeconds) also counts pulling the multi-GB GPU worker image onto a
# fresh node: not measured, a margin.
STEP_START_S = 300.0
# The slowest figures in docs/benchmarks.md, all on the shared 2-core machine without a GPU:
# decoding at 6.24x real time (0.16 s a video second), the model at 35 frames/s through the
# engine's full path (0.14 s a video second at 5 sampled frames a second), the whole naive
# decode-and-model loop at 1.26x real time under the heaviest load (0.79 s). preprocess gets 6x
# its slowest figure; infer 2.5x the slowest whole loop, room for a higher sample rate on a CPU.
STEP_S_PER_VIDEO_S: dict[str, float] = {"preprocess": 1.0, "infer": 2.0}
# A stopped worker gets this long to clear its partial output (SIGINT) before SIGKILL.
STOP_GRACE_S = 10.0


def step_timeout_s(duration_s: float, step: str) -> float:
    """How long the GPU step `step` may run for a video of `duration_s` seconds."""
    if step not in STEP_S_PER_VIDEO_S:
        raise ValueError(f"unknown GPU step {step!r}: expected one of {sorted(STEP_S_PER_VIDEO_S)}")
    if not (math.isfinite(duration_s) and duration_s >= 0):
        raise ValueError(f"video duration must be finite seconds >= 0, got {duration_s}")
    return STEP_START_S + STEP_S_PER_VIDEO_S[step] * duration_s


def overrun_line(step: str, timeout_s: float, video_duration_s: float | None) -> str:
    """The one-line failure of a step stopped at its limit (a rerun would overrun again)."""
    line = f"error: {step} ran past its {_seconds(timeout_s)} s limit"
    if video_duration_s is not None:
        line += f" for a {_seconds(video_duration_s)} s video"
    return line


def _seconds(value: float) -> str:
    return f"{round(value, 1):g}"


@contextlib.contextmanager
def _missing_bucket_fails(root_uri: str) -> Iterator[None]:
    """A bucket that does not exist is a configuration error: the same on every retry."""
    try:
        yield
    except Exception as exc:
        if s3_error_code(exc) != "NoSuchBucket":
            raise  # throttling, outages: the retry policies' case
        bucket = exc.response.get("Error", {}).get("BucketName") or root_uri  # type: ignore[attr-defined]
        raise _config_failure(
            f"error: the bucket {bucket} does not exist (NoSuchBucket): create it (apply the "
            "gpu-dagster-aws unit) or set GPU_ANALYSIS_BUCKET to the match bucket"
        ) from None


def _bucket_must_exist(method: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(method)
    def checked(self: MatchStorage, *args: Any, **kwargs: Any) -> T:
        with _missing_bucket_fails(self.root_uri):
            return method(self, *args, **kwargs)

    return checked


class MatchStorage(dg.ConfigurableResource):
    """Where a match's files live: `incoming/`, `work/<match_id>/`, `results/<match_id>/`.

    `root_uri` is a local folder or `s3://bucket`; `scratch_dir` is local disk for the files a
    CPU step must read locally (probe, aggregation).
    """

    root_uri: str
    scratch_dir: str
    s3: S3Resource
    # Delivered versions kept per match (results/<match_id>/versions/); the current one always.
    versions_kept: int = 3

    @property
    def layout(self) -> MatchLayout:
        return MatchLayout(self.root_uri)

    def client(self) -> Any:
        """The S3 client for this storage, or None when it is a local folder."""
        if not storage.is_s3(self.root_uri):
            return None
        return storage.s3_client(
            region=self.s3.region_name, endpoint=self.s3.endpoint_url, profile=self.s3.profile_name
        )

    def scratch(self, match_id: str, *names: str) -> Path:
        return Path(self.scratch_dir, match_id, *names)

    @_bucket_must_exist
    def list(self, prefix_uri: str) -> list[storage.StoredObject]:
        return storage.list_objects(prefix_uri, client=self.client())

    def list_incoming(self) -> list[storage.StoredObject]:
        return self.list(self.layout.incoming_uri)

    @contextlib.contextmanager
    def local_copy(self, uri: str) -> Iterator[Path]:
        """`uri` as a local file inside the block (a temporary copy of an S3 object)."""
        with contextlib.ExitStack() as stack:
            with _missing_bucket_fails(self.root_uri):
                path = stack.enter_context(storage.local_copy(uri, client=self.client()))
            yield path

    @_bucket_must_exist
    def copy(self, source_uri: str, target_uri: str) -> None:
        storage.copy_file(source_uri, target_uri, client=self.client())

    @_bucket_must_exist
    def put_file(self, local_path: Path, uri: str) -> None:
        storage.put_file(local_path, uri, client=self.client())

    @_bucket_must_exist
    def put_bytes(self, payload: bytes, uri: str) -> None:
        storage.write_bytes(uri, payload, client=self.client())

    @_bucket_must_exist
    def read_json(self, uri: str) -> Any:
        return json.loads(storage.read_bytes(uri, client=self.client()))

    def read_record(self, cls: type[Record], uri: str) -> Record:
        return from_plain(cls, self.read_json(uri))

    def write_json(self, value: Any, uri: str) -> None:
        if dataclasses.is_dataclass(value):
            value = as_plain(value)
        self.put_bytes(json.dumps(value, indent=2, sort_keys=True).encode(), uri)

    @_bucket_must_exist
    def remove(self, prefix_uri: str) -> None:
        storage.remove_prefix(prefix_uri, client=self.client())

    @_bucket_must_exist
    def remove_file(self, uri: str) -> None:
        storage.remove_file(uri, client=self.client())

    @_bucket_must_exist
    def replace(self, source_uri: str, target_uri: str) -> None:
        storage.replace_prefix(source_uri, target_uri, client=self.client())


class AnalysisSettings(dg.ConfigurableResource):
    """The engine settings of a match run; the profile gives the defaults."""

    sample_fps: float
    model: str  # "builtin" or a path to an .onnx file readable by the workers
    device: str  # auto | cpu | cuda
    batch_size: int
    res_m: float = 1.0
    # A YOLO model's player classes ("player,goalkeeper") and input size ("WxH"), when the
    # model's own metadata does not say or is to be overridden (`analyze --classes/--input-size`).
    classes: str | None = None
    input_size: str | None = None


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
        self,
        context: AssetExecutionContext,
        step: Step,
        params: PreprocessParams | InferParams,
        timeout_s: float | None = None,
        *,
        video_duration_s: float | None = None,
    ) -> dg.MaterializeResult:
        """Run the step's worker; bad input fails the step without retries, with its message.

        A worker still running after `timeout_s` (see `step_timeout_s`) is stopped and the step
        fails with one line (`overrun_line`, which names `video_duration_s`), without retries:
        the same input would overrun again.
        """
        extras = as_plain(params)
        if self.execution == "subprocess":
            invocation = self._run_process(context, step, extras, timeout_s, video_duration_s)
        else:
            invocation = self._run_pod(context, step, extras, timeout_s, video_duration_s)
        return invocation.get_materialize_result()

    def _run_process(
        self,
        context: AssetExecutionContext,
        step: Step,
        extras: dict[str, Any],
        timeout_s: float | None,
        video_duration_s: float | None,
    ) -> dg.PipesClientCompletedInvocation:
        # dg.PipesSubprocessClient cannot stop its process at a deadline, and on an interrupt it
        # waits for the process after SIGINT without killing it: this is its launch, with both.
        fd, error_file = tempfile.mkstemp(prefix=f"gpu-analysis-{step}-", suffix=".error")
        os.close(fd)
        env = {ERROR_FILE_ENV: error_file, OWNER_PIDS_ENV: _owner_pids(context)}
        try:
            with dg.open_pipes_session(
                context=context,
                context_injector=dg.PipesTempFileContextInjector(),
                message_reader=dg.PipesTempFileMessageReader(),
                extras=extras,
            ) as session:
                worker = subprocess.Popen(
                    self.command(step),
                    env={**os.environ, **env, **session.get_bootstrap_env_vars()},
                )
                try:
                    returncode = worker.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    _stop(worker)
                    raise _overrun(step, timeout_s, video_duration_s) from None
                finally:
                    _stop(worker)  # the step was interrupted (run terminated) or failed here
                if returncode != 0:
                    line = Path(error_file).read_text().strip()
                    if line:
                        raise dg.Failure(description=line, allow_retries=False)
                    if returncode == OWNER_GONE_EXIT:
                        # Nobody is left to run a retry: the run's process has died.
                        raise dg.Failure(
                            description=f"error: {step} stopped: the process of its run is gone",
                            allow_retries=False,
                        )
                    # Killed or crashed: the retry policy decides.
                    raise DagsterPipesExecutionError(
                        f"the {step} worker ended with status {returncode}"
                    )
            return dg.PipesClientCompletedInvocation(session)
        finally:
            Path(error_file).unlink(missing_ok=True)

    def _run_pod(
        self,
        context: AssetExecutionContext,
        step: Step,
        extras: dict[str, Any],
        timeout_s: float | None,
        video_duration_s: float | None,
    ) -> dg.PipesClientCompletedInvocation:
        from dagster_k8s import PipesK8sClient
        from dagster_k8s.client import DagsterK8sError
        from kubernetes.client import ApiException
        from kubernetes.config import ConfigException

        pod = self.pods[step]
        spec = dict(pod.spec)
        limits: dict[str, float] = {}
        if timeout_s is not None:
            # The kubelet ends the pod at its deadline even when nobody is left to delete it.
            # PipesK8sClient.run deletes the pod in a `finally` (dagster_k8s/pipes.py), so an
            # interrupted step (run terminated, SIGTERM to the run pod) takes its pod along; a
            # run pod killed outright runs no `finally`, and build_pod_body sets no
            # ownerReferences, so this deadline is then what stops the step pod.
            spec["activeDeadlineSeconds"] = math.ceil(timeout_s)
            # PipesK8sClient follows the pod's log until the container ends and only then waits
            # with this timeout: a backstop for a log stream that ended early.
            limits["pod_wait_timeout"] = timeout_s
        started_s = time.monotonic()
        try:
            return PipesK8sClient().run(
                context=context,
                extras=extras,
                image=self.image,
                command=self.command(step),
                namespace=self.namespace,
                base_pod_meta=pod.meta,
                base_pod_spec=spec,
                **limits,
            )
        except ConfigException as exc:
            # No kubeconfig, or not in a pod: the same on every retry.
            raise _config_failure(kube_config_line(exc)) from None
        except ApiException as exc:
            line = api_refusal_line(exc, step, self.namespace)
            if line is None:
                raise  # 429, 5xx, a timeout: the retry policy's case
            raise _config_failure(line) from None
        except DagsterK8sError as exc:
            if timeout_s is not None and time.monotonic() - started_s >= timeout_s:
                raise _overrun(step, timeout_s, video_duration_s) from None
            # The worker's error line comes back as the container's termination message.
            found = TERMINATION_ERROR.search(str(exc))
            if found:
                raise dg.Failure(description=found.group(1), allow_retries=False) from None
            reason = image_pull_reason(str(exc))
            if reason is not None:
                raise _config_failure(image_line(step, self.image, reason)) from None
            # Evicted, node gone (the pod "was unexpectedly killed"), a crash: retried.
            raise


# Waiting reasons of a container whose image cannot be had (Kubernetes docs, Images, "Image pull
# backoff"; kubelet's images.ErrImagePull, ErrImagePullBackOff, ErrInvalidImageName): a wrong tag,
# a missing repository or no pull permission is the same on every retry. dagster_k8s raises
# 'Failed: Reason="ErrImagePull"' for the first two and 'Unknown issue: {...InvalidImageName...}'
# for the last (dagster_k8s/client.py, wait_for_pod).
IMAGE_PULL_REASONS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName")
WAITING_REASON = re.compile(r"(?:Reason=\"|'reason': ')(\w+)")


def image_pull_reason(k8s_error: str) -> str | None:
    """The image pull failure a dagster_k8s error reports, if that is what it reports."""
    for found in WAITING_REASON.finditer(k8s_error):
        if found.group(1) in IMAGE_PULL_REASONS:
            return found.group(1)
    return None


def image_line(step: str, image: str, reason: str) -> str:
    return (
        f"error: the {step} pod cannot pull its image {image} ({reason}): push that tag to the "
        "repository or set GPU_ANALYSIS_IMAGE to one that exists"
    )


def kube_config_line(exc: Exception) -> str:
    detail = str(exc).strip().rstrip(".")
    return (
        f"error: no Kubernetes configuration ({detail}): run inside the cluster, or point "
        "KUBECONFIG at the cluster's kubeconfig (aws eks update-kubeconfig)"
    )


def api_refusal_line(exc: Any, step: str, namespace: str) -> str | None:
    """One line for an API answer a retry cannot change; None for the transient ones."""
    status = getattr(exc, "status", None)
    if status == 401:
        return (
            f"error: the Kubernetes API rejected our credentials for the {step} pod (401 "
            "Unauthorized): refresh the kubeconfig or the service account token"
        )
    if status == 403:
        return (
            f"error: the Kubernetes API refused the {step} pod in namespace {namespace} (403 "
            "Forbidden): bind the step-launcher Role to the run's service account (apply the "
            "gpu-dagster unit)"
        )
    # Only a missing namespace: a 404 for the pod itself (deleted with its node, then deleted
    # again by PipesK8sClient's `finally`) is the infrastructure's doing. The API server's Status
    # says which: message 'namespaces "<name>" not found'.
    if status == 404 and 'namespaces "' in _status_message(exc):
        return (
            f"error: the Kubernetes API has no namespace {namespace} for the {step} pod (404): "
            "apply the gpu-dagster unit or set GPU_ANALYSIS_NAMESPACE"
        )
    return None


def _status_message(exc: Any) -> str:
    try:
        return str(json.loads(getattr(exc, "body", None) or "{}").get("message", ""))
    except ValueError:
        return ""


def _config_failure(line: str) -> dg.Failure:
    # A configuration error: no retry of the step (allow_retries=False) and, being a step
    # failure, none of the run either (run_retries.retry_on_asset_or_op_failure is false).
    return dg.Failure(description=line, allow_retries=False)


def _overrun(step: str, timeout_s: float, video_duration_s: float | None) -> dg.Failure:
    # A deterministic overrun: a retry would take as long again, holding the GPU slot.
    return dg.Failure(
        description=overrun_line(step, timeout_s, video_duration_s), allow_retries=False
    )


def _owner_pids(context: AssetExecutionContext) -> str:
    """The processes whose death ends the worker: this step's, and the run's when it is another.

    Dagster's multiprocess executor runs a step in a child of the run process, and that child
    lives on when the run process is killed: the worker watches both (OWNER_PIDS_ENV).
    """
    pids = [os.getpid()]
    found = run_process(context.instance, context.run.run_id)
    # The run's process is this one or an ancestor, so it runs; if it seems not to, the
    # lookup is wrong and watching it would stop a healthy worker.
    if found is not None and found.pid != os.getpid() and process_running(found.pid):
        pids.append(found.pid)
    return " ".join(str(pid) for pid in pids)


def _stop(worker: subprocess.Popen) -> None:
    """End `worker` if it still runs: SIGINT so it clears its partial output, then SIGKILL."""
    if worker.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        worker.send_signal(signal.SIGINT)
    try:
        worker.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()
