"""An emulated kubelet and Job controller for the Kubernetes API emulator: pods run as local
processes.

Enough of both for dagster-k8s's real code paths (dagster_k8s/launcher.py, client.py,
pipes.py): K8sRunLauncher creates a batch/v1 Job and later reads its status
(read_namespaced_job_status) and its pods (list by `job-name=` label); PipesK8sClient creates a
Pod, polls it by `fieldSelector=metadata.name=` (wait_for_pod), follows its log with timestamps
and deletes it. Each behaviour below names the Kubernetes doc it follows. The image is not
pulled: the container's command runs here, in a subprocess, with the pod's environment on top of
`image_env` (what the image's ENV would set); the image is recorded for the test to assert.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import dataclasses
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.emulators.kube_api import KubeApiEmulator, KubeStore

# A container image reference: registry/path[:tag][@digest], lowercase path components
# (distribution/reference's grammar, which the kubelet's parser follows), simplified.
IMAGE_REFERENCE = re.compile(
    r"(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
    r"(?::[\w][\w.-]{0,127})?(?:@sha256:[0-9a-f]{64})?"
)
POLL_S = 0.05  # how often the controllers look at the store (informers would be pushed)
JOB_GROUP = ("batch", "v1", "jobs")
POD_GROUP = ("", "v1", "pods")


def _stamp(ns: int | None = None) -> str:
    """RFC 3339 with nanoseconds, as the container runtime stamps log lines."""
    ns = time.time_ns() if ns is None else ns
    whole = datetime.fromtimestamp(ns // 1_000_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{whole}.{ns % 1_000_000_000:09d}Z"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclasses.dataclass
class Started:
    """One container the kubelet ran: what a test asserts about a pod that really ran."""

    namespace: str
    pod: str
    image: str
    argv: list[str]
    env: dict[str, str]
    spec: dict[str, Any]
    metadata: dict[str, Any]
    started_s: float
    exit_code: int | None = None


@dataclasses.dataclass
class _Running:
    process: subprocess.Popen
    started: Started
    termination_log: Path
    reader: threading.Thread


class Kubelet:
    """Runs the pods of the emulated cluster and the Job controller that makes pods of Jobs.

    image_env: the environment the image sets (PATH with its Python first, PYTHONPATH).
    injected_env: what admission webhooks add to every container (EKS Pod Identity's
    AWS_CONTAINER_CREDENTIALS_FULL_URI, say); tests put endpoint and credentials of moto here.
    start_delay_s: how long a pod stays Pending (ContainerCreating) before it runs: node start
    and image pull.
    unpullable_images: images whose pull fails (ErrImagePull).
    termination_log_env: the variable that tells the process where its termination message
    file is, since a local process cannot see the pod's /dev/termination-log.
    """

    def __init__(
        self,
        api: KubeApiEmulator,
        *,
        image_env: dict[str, str],
        injected_env: dict[str, str] | None = None,
        start_delay_s: float = 0.0,
        unpullable_images: set[str] | None = None,
        termination_log_env: str | None = None,
        workdir: Path | None = None,
    ) -> None:
        self.api = api
        self.store: KubeStore = api.store
        self.image_env = dict(image_env)
        self.injected_env = dict(injected_env or {})
        self.start_delay_s = start_delay_s
        self.unpullable_images = set(unpullable_images or ())
        self.termination_log_env = termination_log_env
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="kubelet-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.started: list[Started] = []
        self.errors: list[str] = []  # the controllers' own failures, for a test's message
        self._running: dict[tuple[str, str], _Running] = {}
        self._seen_pods: dict[tuple[str, str], float] = {}  # first seen (monotonic s)
        self._job_pods: dict[tuple[str, str], list[str]] = {}
        # One change at a time: a test's evict() and the loop must not both act on one pod.
        self._sync_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="kubelet")
        self.kubeconfig = self._write_kubeconfig()

    # ---- lifecycle ---------------------------------------------------------------------
    def start(self) -> Kubelet:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for key in list(self._running):
            self._kill(key, grace_s=2.0)

    def _write_kubeconfig(self) -> Path:
        """A kubeconfig for the processes of pods. In a real pod the client uses in-cluster
        config (the service account token under /var/run/secrets, https to
        KUBERNETES_SERVICE_HOST); the emulator speaks plain HTTP on a local port, so its pods
        get this file through KUBECONFIG instead."""
        path = self.workdir / "kubeconfig"
        path.write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: emulator\n"
            f"clusters: [{{name: emulator, cluster: {{server: '{self.api.url}'}}}}]\n"
            "users: [{name: pod, user: {token: emulated}}]\n"
            "contexts: [{name: emulator, context: {cluster: emulator, user: pod}}]\n"
        )
        return path

    # ---- faults a test asks for --------------------------------------------------------
    def evict(self, namespace: str, name: str, reason: str = "Evicted") -> None:
        """Node-pressure eviction or a node going away under the pod (Kubernetes docs,
        Node-pressure Eviction: "the kubelet terminates all containers of the pod and sets its
        phase to Failed"; status.reason Evicted). The process is killed at once (SIGKILL: the
        node is gone, there is no grace)."""
        with self._sync_lock:
            self._evict(namespace, name, reason)

    def _evict(self, namespace: str, name: str, reason: str) -> None:
        self._kill((namespace, name), grace_s=0.0)
        pod = self.store.get(*POD_GROUP, namespace, name)
        if pod is None:
            return
        status = pod.setdefault("status", {})
        status.update(
            {"phase": "Failed", "reason": reason, "message": f"The node was lost ({reason})."}
        )
        status["containerStatuses"] = [
            self._terminated(c["name"], 137, "Error", "", c.get("image", ""))
            for c in pod["spec"]["containers"]
        ]
        self.store.put(*POD_GROUP, namespace, pod)

    def pods_of_job(self, namespace: str, job: str) -> list[str]:
        return list(self._job_pods.get((namespace, job), []))

    # ---- the loop ----------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                with self._sync_lock:
                    self._sync_jobs()
                    self._sync_pods()
            except Exception as exc:  # keep the node alive; the test sees the pod stuck
                self.errors.append(repr(exc))
            self._stop.wait(POLL_S)

    def _objects(self, group: tuple[str, str, str]) -> list[dict]:
        with self.store.lock:
            return [
                copy.deepcopy(obj) for key, obj in self.store.objects.items() if key[:3] == group
            ]

    # ---- Job controller ----------------------------------------------------------------
    def _sync_jobs(self) -> None:
        """Kubernetes docs, Jobs: the controller creates pods from spec.template, labelled
        `batch.kubernetes.io/job-name`, `job-name` and `controller-uid` and owned by the Job;
        status counts active, succeeded and failed pods; a Job whose failed pods exceed
        spec.backoffLimit (default 6) gets the condition Failed, reason BackoffLimitExceeded;
        one with spec.completions (default 1) successes gets Complete. A pod deleted before it
        finished counts as failed ("Job tracking with finalizers", GA in 1.26)."""
        jobs = self._objects(JOB_GROUP)
        live = {(j["metadata"]["namespace"], j["metadata"]["name"]) for j in jobs}
        for key in [k for k in self._job_pods if k not in live]:
            # A deleted Job is forgotten; its pods are left to whoever deletes them
            # (dagster_k8s's delete_job deletes them itself: client.py, delete_job).
            del self._job_pods[key]
        for job in jobs:
            namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
            status = job.get("status") or {}
            if any(c.get("status") == "True" for c in status.get("conditions") or []):
                continue  # finished: nothing to do
            pods = self._job_pods.setdefault((namespace, name), [])
            succeeded = failed = active = 0
            for pod_name in pods:
                pod = self.store.get(*POD_GROUP, namespace, pod_name)
                phase = (pod or {}).get("status", {}).get("phase")
                if phase == "Succeeded":
                    succeeded += 1
                elif pod is None or phase == "Failed":
                    failed += 1
                else:
                    active += 1
            backoff_limit = job["spec"].get("backoffLimit", 6)
            completions = job["spec"].get("completions", 1)
            new_status: dict[str, Any] = {
                "startTime": status.get("startTime") or _now(),
                "active": active,
                "succeeded": succeeded,
                "failed": failed,
            }
            if succeeded >= completions:
                new_status["conditions"] = [
                    {"type": "Complete", "status": "True", "lastTransitionTime": _now()}
                ]
                new_status["completionTime"] = _now()
                new_status["active"] = 0
            elif failed > backoff_limit:
                new_status["conditions"] = [
                    {
                        "type": "Failed",
                        "status": "True",
                        "reason": "BackoffLimitExceeded",
                        "message": "Job has reached the specified backoff limit",
                        "lastTransitionTime": _now(),
                    }
                ]
                new_status["active"] = 0
            elif active == 0:
                pods.append(self._create_job_pod(job))
                new_status["active"] = 1
            if new_status != {k: status.get(k) for k in new_status} or "conditions" in new_status:
                current = self.store.get(*JOB_GROUP, namespace, name)
                if current is None:
                    continue
                current["status"] = new_status
                self.store.put(*JOB_GROUP, namespace, current)

    def _create_job_pod(self, job: dict) -> str:
        meta = job["metadata"]
        template = copy.deepcopy(job["spec"]["template"])
        pod_meta = template.setdefault("metadata", {})
        # Kubernetes docs, Jobs, "Pod selector" and the generated pod name: <job>-<5 chars>.
        name = f"{meta['name']}-{secrets.token_hex(3)[:5]}"
        pod_meta["name"] = name
        pod_meta["labels"] = {
            **(pod_meta.get("labels") or {}),
            "job-name": meta["name"],
            "batch.kubernetes.io/job-name": meta["name"],
            "controller-uid": meta["uid"],
            "batch.kubernetes.io/controller-uid": meta["uid"],
        }
        pod_meta["ownerReferences"] = [
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": meta["name"],
                "uid": meta["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        pod = {"apiVersion": "v1", "kind": "Pod", **template}
        self.store.put(*POD_GROUP, meta["namespace"], pod)
        return name

    # ---- kubelet -----------------------------------------------------------------------
    def _sync_pods(self) -> None:
        pods = self._objects(POD_GROUP)
        present = {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in pods}
        for key in [k for k in self._running if k not in present]:
            # Kubernetes docs, Pod Lifecycle, "Termination of Pods": a deleted pod's containers
            # get SIGTERM, then SIGKILL after terminationGracePeriodSeconds.
            self._kill(
                key,
                grace_s=self._running[key].started.spec.get("terminationGracePeriodSeconds", 30),
            )
        for pod in pods:
            key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
            phase = (pod.get("status") or {}).get("phase")
            if phase in ("Succeeded", "Failed"):
                continue
            if key in self._running:
                self._check_exit(key)
                continue
            first_seen = self._seen_pods.setdefault(key, time.monotonic())
            if not (pod.get("status") or {}).get("containerStatuses"):
                self._set_status(key, self._pending(pod, "ContainerCreating"))
            container = pod["spec"]["containers"][0]
            if not IMAGE_REFERENCE.fullmatch(container.get("image") or ""):
                # Kubernetes docs, Images, "Image names": the kubelet refuses a reference it
                # cannot parse with the waiting reason InvalidImageName, and never retries.
                self._set_status(key, self._pending(pod, "InvalidImageName", image_error=True))
                continue
            if container.get("image") in self.unpullable_images:
                # Kubernetes docs, Images, "Image pull backoff": the container waits with
                # reason ErrImagePull, then ImagePullBackOff while the kubelet retries.
                reason = (
                    "ErrImagePull" if time.monotonic() - first_seen < 1.0 else "ImagePullBackOff"
                )
                self._set_status(key, self._pending(pod, reason, image_error=True))
                continue
            if time.monotonic() - first_seen < self.start_delay_s:
                continue
            self._run(pod)

    def _pending(self, pod: dict, reason: str, *, image_error: bool = False) -> dict:
        containers = pod["spec"]["containers"]
        message = None
        if image_error:
            message = (
                f"rpc error: code = NotFound desc = failed to pull and unpack image "
                f'"{containers[0].get("image")}": not found'
            )
        return {
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "True"}],
            "containerStatuses": [
                {
                    "name": c["name"],
                    "image": c.get("image", ""),
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "started": False,
                    "state": {
                        "waiting": {"reason": reason, **({"message": message} if message else {})}
                    },
                }
                for c in containers
            ],
        }

    def _env(self, pod: dict, container: dict) -> dict[str, str]:
        """Kubernetes docs, "Define Environment Variables for a Container" and "Distribute
        Credentials Securely Using Secrets": env values, valueFrom secretKeyRef /
        configMapKeyRef / fieldRef, envFrom secretRef / configMapRef."""
        namespace = pod["metadata"]["namespace"]
        env = dict(self.image_env)
        for source in container.get("envFrom") or []:
            for kind, plural in (("secretRef", "secrets"), ("configMapRef", "configmaps")):
                if kind in source:
                    obj = self.store.get("", "v1", plural, namespace, source[kind]["name"]) or {}
                    env.update(self._data(obj, plural))
        for var in container.get("env") or []:
            if "value" in var:
                env[var["name"]] = str(var["value"])
                continue
            ref = var.get("valueFrom") or {}
            if "fieldRef" in ref:
                path = ref["fieldRef"]["fieldPath"]
                env[var["name"]] = {
                    "metadata.name": pod["metadata"]["name"],
                    "metadata.namespace": namespace,
                }.get(path, "")
            for kind, plural in (("secretKeyRef", "secrets"), ("configMapKeyRef", "configmaps")):
                if kind in ref:
                    obj = self.store.get("", "v1", plural, namespace, ref[kind]["name"])
                    data = self._data(obj or {}, plural)
                    if ref[kind]["key"] in data:
                        env[var["name"]] = data[ref[kind]["key"]]
                    elif not ref[kind].get("optional"):
                        raise _CreateContainerConfigError(
                            f'{plural[:-1]} "{ref[kind]["name"]}" not found'
                        )
        env.update(self.injected_env)
        env["KUBECONFIG"] = str(self.kubeconfig)
        return env

    @staticmethod
    def _data(obj: dict, plural: str) -> dict[str, str]:
        if plural == "secrets":
            decoded = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
            return {**decoded, **(obj.get("stringData") or {})}
        return dict(obj.get("data") or {})

    def _run(self, pod: dict) -> None:
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        container = pod["spec"]["containers"][0]
        try:
            env = self._env(pod, container)
        except _CreateContainerConfigError as exc:
            status = self._pending(pod, "CreateContainerConfigError")
            status["containerStatuses"][0]["state"]["waiting"]["message"] = str(exc)
            self._set_status((namespace, name), status)
            return
        # Kubernetes docs, "Define a Command and Arguments for a Container": command replaces
        # the image's ENTRYPOINT and args its CMD; the worker image has no ENTRYPOINT, so args
        # alone are the command line (K8sRunLauncher sends only args: dagster api execute_run).
        argv = list(container.get("command") or []) + list(container.get("args") or [])
        resolved = shutil.which(argv[0], path=env.get("PATH")) or argv[0]
        termination_log = self.workdir / f"{namespace}.{name}.termination-log"
        termination_log.write_text("")
        if self.termination_log_env:
            env[self.termination_log_env] = str(termination_log)
        process = subprocess.Popen(
            [resolved, *argv[1:]],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            start_new_session=True,  # the pod's processes are killed together
        )
        started = Started(
            namespace,
            name,
            container.get("image", ""),
            argv,
            env,
            copy.deepcopy(pod["spec"]),
            copy.deepcopy(pod["metadata"]),
            time.monotonic(),
        )
        self.started.append(started)
        logs = self.store.logs.setdefault((namespace, name), [])
        reader = threading.Thread(target=self._read, args=(process, logs), daemon=True)
        reader.start()
        self._running[(namespace, name)] = _Running(process, started, termination_log, reader)
        self._set_status(
            (namespace, name),
            {
                "phase": "Running",
                "startTime": _now(),
                "conditions": [
                    {"type": "PodScheduled", "status": "True"},
                    {"type": "Ready", "status": "True"},
                ],
                "containerStatuses": [
                    {
                        "name": container["name"],
                        "image": container.get("image", ""),
                        "imageID": "",
                        "ready": True,
                        "started": True,
                        "restartCount": 0,
                        "state": {"running": {"startedAt": _now()}},
                    }
                ],
            },
        )

    def _read(self, process: subprocess.Popen, logs: list[tuple[str, str]]) -> None:
        last = 0
        for raw in iter(process.stdout.readline, b""):
            # Strictly increasing stamps: dagster_k8s joins lines that share one.
            ns = max(time.time_ns(), last + 1)
            last = ns
            with self.store.lock:
                logs.append((_stamp(ns), raw.decode(errors="replace").rstrip("\n")))

    def _check_exit(self, key: tuple[str, str]) -> None:
        running = self._running[key]
        code = running.process.poll()
        if code is None:
            return
        running.reader.join(timeout=5)  # every line is in the log before the pod says it ended
        del self._running[key]
        running.started.exit_code = code
        pod = self.store.get(*POD_GROUP, *key)
        if pod is None:
            return
        # Kubernetes docs, "Determine the Reason for Pod Failure": the kubelet reads the
        # container's terminationMessagePath (up to 4096 bytes) into terminated.message.
        message = running.termination_log.read_text()[:4096]
        container = pod["spec"]["containers"][0]
        status = pod.get("status") or {}
        status["phase"] = "Succeeded" if code == 0 else "Failed"
        status["containerStatuses"] = [
            self._terminated(
                container["name"],
                code if code >= 0 else 128 - code,  # killed by signal N: 128 + N
                "Completed" if code == 0 else "Error",
                message,
                container.get("image", ""),
            )
        ]
        status["conditions"] = [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Ready", "status": "False", "reason": "PodCompleted"},
        ]
        self._set_status(key, status)

    @staticmethod
    def _terminated(name: str, code: int, reason: str, message: str, image: str) -> dict:
        terminated: dict[str, Any] = {
            "exitCode": code,
            "reason": reason,
            "startedAt": _now(),
            "finishedAt": _now(),
        }
        if message:
            terminated["message"] = message
        return {
            "name": name,
            "image": image,
            "imageID": "",
            "ready": False,
            "started": False,
            "restartCount": 0,
            "state": {"terminated": terminated},
        }

    def _set_status(self, key: tuple[str, str], status: dict) -> None:
        pod = self.store.get(*POD_GROUP, *key)
        if pod is None:
            return
        if pod.get("status") == status:
            return
        pod["status"] = status
        self.store.put(*POD_GROUP, key[0], pod)

    def _kill(self, key: tuple[str, str], grace_s: float) -> None:
        running = self._running.pop(key, None)
        if running is None:
            return
        process = running.process
        with contextlib.suppress(ProcessLookupError):
            if grace_s > 0:
                os.killpg(process.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=grace_s)
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        running.started.exit_code = process.returncode


class _CreateContainerConfigError(Exception):
    pass
