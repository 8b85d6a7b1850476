"""Issue 12 on the emulators: configuration errors fail at once; the run's path on the cluster."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpu_analysis.synthetic import generate_match_clip
from tests.conftest import subprocess_env
from tests.deploy.conftest import NAMESPACE, UNPULLABLE_IMAGE
from tests.match.conftest import BUCKET
from tests.match.sensor_ticks import SensorDriver

# Far below the 20 s first retry delay of a GPU step (video_assets/assets.py, gpu_retry_policy):
# a configuration error that is retried cannot meet it.
CONFIG_ERROR_BUDGET_S = 10.0


def _incoming_match(s3, tmp_path: Path, match_id: str) -> None:
    clip = tmp_path / "clip" / f"{match_id}.mp4"
    generate_match_clip(clip, seed=5, duration_s=1.0, fps=25.0, width=320, height=180)
    s3.upload_file(str(clip), BUCKET, f"incoming/{match_id}.mp4")
    s3.upload_file(
        str(clip.with_name(f"{match_id}.calibration.json")),
        BUCKET,
        f"incoming/{match_id}.calibration.json",
    )


def _run_in_own_process(request, **env: str) -> tuple[dict, float]:
    """One staging run in its own process (as in a run pod): the kubeconfig is read there."""
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.match.run_process_match",
            request.partition_key,
            request.run_key,
            json.dumps(request.tags),
        ],
        env=subprocess_env(**env),
        capture_output=True,
        text=True,
        timeout=300,
    )
    elapsed_s = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), elapsed_s


def _failures(instance, run_id: str) -> str:
    """The step failures' errors, for an assertion message."""
    import dagster as dg

    found = []
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        error = entry.dagster_event.step_failure_data.error
        while error is not None and error.cause is not None:
            error = error.cause  # the user code's own exception, under Dagster's wrapper
        found.append(f"{entry.step_key}: {error.message.strip() if error else None}")
    return "\n".join(found)


def _step_attempts(instance, run_id: str, step: str) -> int:
    import dagster as dg

    starts = instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START)
    return sum(1 for e in starts if e.step_key == step)


def test_no_kubeconfig_fails_the_gpu_step_at_once_with_what_to_fix(
    s3_staging, instance, tmp_path: Path
):
    """Issue 12: "a staging run with no kubeconfig is retried 3 times and fails after 222 s"."""
    _incoming_match(s3_staging, tmp_path, "nokube")
    [request] = SensorDriver(instance).tick()
    outcome, elapsed_s = _run_in_own_process(
        request, KUBECONFIG=str(tmp_path / "no-such-kubeconfig"), KUBERNETES_SERVICE_HOST=""
    )
    assert not outcome["success"]
    assert outcome["failed_step"] == "match_frames"
    message = outcome["message"]
    assert message.startswith("error: no Kubernetes configuration") and "\n" not in message
    assert "KUBECONFIG" in message
    assert _step_attempts(instance, outcome["run_id"], "match_frames") == 1
    assert elapsed_s < CONFIG_ERROR_BUDGET_S + 15, elapsed_s  # process start and match_video
    # The step itself: from its start to its failure.
    import dagster as dg

    events = instance.all_logs(outcome["run_id"])
    start = next(
        e
        for e in events
        if e.step_key == "match_frames"
        and e.is_dagster_event
        and e.dagster_event.event_type == dg.DagsterEventType.STEP_START
    )
    failed = next(
        e
        for e in events
        if e.step_key == "match_frames"
        and e.is_dagster_event
        and e.dagster_event.event_type == dg.DagsterEventType.STEP_FAILURE
    )
    assert failed.timestamp - start.timestamp < CONFIG_ERROR_BUDGET_S


def test_an_unpullable_image_fails_the_gpu_step_at_once(
    s3_staging, instance, cluster, tmp_path: Path
):
    api, kubelet = cluster
    _incoming_match(s3_staging, tmp_path, "badimage")
    [request] = SensorDriver(instance).tick()
    outcome, _ = _run_in_own_process(
        request,
        KUBECONFIG=str(kubelet.kubeconfig),
        KUBERNETES_SERVICE_HOST="",
        GPU_ANALYSIS_IMAGE=UNPULLABLE_IMAGE,
    )
    assert not outcome["success"]
    assert outcome["failed_step"] == "match_frames"
    message = outcome["message"] or _failures(instance, outcome["run_id"])
    assert message.startswith("error: the preprocess pod cannot pull its image"), message
    assert UNPULLABLE_IMAGE in message and "\n" not in message
    # ErrImagePull, or ImagePullBackOff when the step looked after the kubelet's first retry.
    assert "ErrImagePull" in message or "ImagePullBackOff" in message
    assert _step_attempts(instance, outcome["run_id"], "match_frames") == 1
    # The pod was created once, never started, and deleted by PipesK8sClient.
    created = [p for m, p in api.store.requests if m == "POST" and p.endswith("/pods")]
    assert len(created) == 1
    assert kubelet.started == []
    assert api.store.names("pods") == []


def test_a_missing_namespace_fails_at_once(s3_staging, instance, cluster, tmp_path: Path):
    """The step pods' namespace does not exist (the in-cluster unit not applied): 404."""
    _api, kubelet = cluster
    _incoming_match(s3_staging, tmp_path, "nons")
    [request] = SensorDriver(instance).tick()
    outcome, _ = _run_in_own_process(
        request,
        KUBECONFIG=str(kubelet.kubeconfig),
        KUBERNETES_SERVICE_HOST="",
        GPU_ANALYSIS_NAMESPACE="no-such-namespace",
    )
    assert outcome["failed_step"] == "match_frames"
    assert outcome["message"].startswith("error: the Kubernetes API has no namespace")
    assert _step_attempts(instance, outcome["run_id"], "match_frames") == 1


# ---- the whole path: sensor -> run Job -> run pod -> two step pods -> delivery ---------------

# Issue 12: "a dead run's GPU slot is free again within a minute". The instance's own figures
# (gpu_analysis/deploy/instance.py, RUN_MONITORING) promise 15 + 15 + 15 s.
SLOT_FREE_BUDGET_S = 60.0
PG_SECRET_KEY = "postgresql-password"  # dagster_k8s/job.py, DAGSTER_PG_PASSWORD_SECRET_KEY


def _wait(what: str, predicate, timeout_s: float, poll_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def _cluster_dagster_home(home: Path, postgres_server, kubelet, moto_endpoint, run_env) -> None:
    """The staging dagster.yaml as generated, adapted only where the test machine differs:
    the daemon is outside the emulated cluster (a kubeconfig instead of in-cluster config), the
    instance ConfigMap's mount path is this folder, compute logs go to moto, and the run pods get
    the test's settings (bucket, model, CPU device) the way the chart's env would give them."""
    from gpu_analysis.deploy.instance import cluster_instance
    from gpu_analysis.profile import load_profile

    config = cluster_instance(
        load_profile("staging"),
        postgres=postgres_server.postgres_db,
        compute_logs_bucket=BUCKET,
    )
    launcher = config["run_launcher"]["config"]
    launcher["load_incluster_config"] = False
    launcher["kubeconfig_file"] = str(kubelet.kubeconfig)
    launcher["dagster_home"] = str(home)
    launcher["env_vars"] = [*launcher["env_vars"], *(f"{k}={v}" for k, v in run_env.items())]
    config["compute_logs"]["config"]["endpoint_url"] = moto_endpoint
    home.mkdir(parents=True, exist_ok=True)
    import yaml

    (home / "dagster.yaml").write_text(yaml.safe_dump(config))


def test_sensor_to_delivery_through_run_and_step_pods_and_a_dead_run_frees_its_slot(
    s3_staging,
    cluster,
    postgres_server,
    moto_endpoint,
    heatmap_model,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    import dagster as dg

    from gpu_analysis.deploy.instance import (
        POSTGRES_PASSWORD_ENV,
        POSTGRES_PASSWORD_SECRET,
        RUN_SERVICE_ACCOUNT,
    )
    from gpu_analysis.profile import load_profile
    from infra_assets.spec.kubernetes import DO_NOT_DISRUPT_ANNOTATION, NODEPOOL_LABEL
    from tests.conftest import REPO_ROOT
    from video_assets.pod_specs import STEP_LABEL, WORKER_SERVICE_ACCOUNT

    api, kubelet = cluster
    password = "not-a-real-password"
    monkeypatch.setenv(POSTGRES_PASSWORD_ENV, password)  # this test's own reads of the instance
    api.store.put(
        "",
        "v1",
        "secrets",
        NAMESPACE,
        {
            "metadata": {"name": POSTGRES_PASSWORD_SECRET},
            "stringData": {PG_SECRET_KEY: password},
        },
    )
    run_env = {
        "GPU_ANALYSIS_BUCKET": BUCKET,
        "GPU_ANALYSIS_DEVICE": "auto",  # staging refuses CPU inference; this machine has no GPU
        "GPU_ANALYSIS_MODEL": str(heatmap_model),
        "GPU_ANALYSIS_SAMPLE_FPS": "2",
        "GPU_ANALYSIS_DATA_ROOT": str(tmp_path / "run-scratch"),
    }
    home = tmp_path / "dagster_home"
    _cluster_dagster_home(home, postgres_server, kubelet, moto_endpoint, run_env)
    daemon_env = subprocess_env(
        DAGSTER_HOME=str(home),
        GPU_ANALYSIS_PROFILE="staging",
        AWS_ENDPOINT_URL=moto_endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="eu-west-3",
        **{POSTGRES_PASSWORD_ENV: password},
        **run_env,
    )
    daemon_log = (tmp_path / "daemon.log").open("w")
    daemon = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", "workspace.yaml"],
        cwd=REPO_ROOT,
        env=daemon_env,
        stdout=daemon_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _incoming_match(s3_staging, tmp_path, "clustermatch")

        # The sensor's run is launched as a Job; the Job controller gives it a run pod.
        def run_job():
            jobs = api.store.names("jobs")
            return jobs[0] if jobs else None

        job_name = _wait("the run's Job", run_job, timeout_s=120)
        job = api.store.get("batch", "v1", "jobs", NAMESPACE, job_name)
        first_run_id = job["metadata"]["labels"]["dagster/run-id"]

        def step_pod(step: str, run_id: str):
            for started in kubelet.started:
                labels = started.metadata.get("labels") or {}
                if (
                    labels.get(STEP_LABEL) == step
                    and labels.get("dagster/run-id", run_id) == run_id
                ):
                    return started
            for name in api.store.names("pods"):
                pod = api.store.get("", "v1", "pods", NAMESPACE, name)
                labels = (pod or {}).get("metadata", {}).get("labels") or {}
                if labels.get(STEP_LABEL) == step and run_id[:8] in name.replace("-", ""):
                    return pod
            return None

        # Mid-GPU step: the preprocess pod exists (its gpu-t4 slot is claimed); the node under
        # the run pod goes away.
        _wait("the preprocess step pod", lambda: step_pod("preprocess", first_run_id), 180)
        [run_pod] = kubelet.pods_of_job(NAMESPACE, job_name)
        with dg.DagsterInstance.from_config(str(home)) as instance:
            slots = instance.event_log_storage.get_concurrency_info("gpu-t4")
            assert first_run_id in {c.run_id for c in slots.claimed_slots}
            killed_s = time.monotonic()
            kubelet.evict(NAMESPACE, run_pod, reason="NodeLost")

            def slot_freed():
                info = instance.event_log_storage.get_concurrency_info("gpu-t4")
                return first_run_id not in {c.run_id for c in info.claimed_slots}

            _wait("the dead run's gpu-t4 slot", slot_freed, SLOT_FREE_BUDGET_S + 30, poll_s=0.5)
            freed_after_s = time.monotonic() - killed_s
            print(f"dead run's GPU slot free {freed_after_s:.1f} s after its pod died")
            dead = instance.get_run_by_id(first_run_id)
            assert dead.status == dg.DagsterRunStatus.FAILURE
            assert freed_after_s < SLOT_FREE_BUDGET_S

            # Run retries (infrastructure failure): a new run of the same match delivers it.
            def retry_done():
                records = instance.get_run_records(
                    dg.RunsFilter(tags={"dagster/parent_run_id": first_run_id})
                )
                finished = [r for r in records if r.dagster_run.is_finished]
                return finished[0].dagster_run if finished else None

            retry = _wait("the retried run to finish", retry_done, timeout_s=300, poll_s=1.0)
            assert retry.status == dg.DagsterRunStatus.SUCCESS, _failures(instance, retry.run_id)

        # Delivered: the section-2 files under results/<match_id>/ with a manifest.
        manifest = json.loads(
            s3_staging.get_object(Bucket=BUCKET, Key="results/clustermatch/manifest.json")[
                "Body"
            ].read()
        )
        names = {f["name"] for f in manifest["files"]}
        assert {"temperature_map.npy", "temperature_map.png", "report.json"} <= names

        # The pods as the kubelet ran them.
        run_pods = [s for s in kubelet.started if s.metadata.get("labels", {}).get("job-name")]
        ran = [(s.pod, s.metadata["labels"].get("dagster/run-id"), s.exit_code) for s in run_pods]
        assert len(run_pods) == 2, ran  # the killed run and its retry
        for started in run_pods:
            assert started.argv[:3] == ["dagster", "api", "execute_run"]
            assert started.image == load_profile("staging").image
            assert started.spec["serviceAccountName"] == RUN_SERVICE_ACCOUNT
            terms = started.spec["affinity"]["nodeAffinity"][
                "requiredDuringSchedulingIgnoredDuringExecution"
            ]["nodeSelectorTerms"]
            [expression] = terms[0]["matchExpressions"]
            assert expression["key"] == NODEPOOL_LABEL
            assert all(v.startswith("cpu-coordination") for v in expression["values"])
            assert started.env[POSTGRES_PASSWORD_ENV] == password  # from the Secret
            assert started.env["GPU_ANALYSIS_PROFILE"] == "staging"
        steps = {}
        for started in kubelet.started:
            step = (started.metadata.get("labels") or {}).get(STEP_LABEL)
            if step:
                steps.setdefault(step, []).append(started)
        assert set(steps) == {"preprocess", "infer"}
        for step, pods in steps.items():
            for started in pods:
                spec, meta = started.spec, started.metadata
                assert started.argv == ["python", "-m", f"gpu_analysis.workers.{step}"]
                assert spec["serviceAccountName"] == WORKER_SERVICE_ACCOUNT
                assert meta["annotations"][DO_NOT_DISRUPT_ANNOTATION] == "true"
                [container] = spec["containers"]
                assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
                assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in (
                    spec["tolerations"]
                )
                pools = spec["affinity"]["nodeAffinity"][
                    "requiredDuringSchedulingIgnoredDuringExecution"
                ]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"]
                role = "gpu-preprocessing" if step == "preprocess" else "gpu-inference"
                assert all(p.startswith(role) for p in pools)
                assert container["securityContext"]["runAsNonRoot"] is True
                assert container["securityContext"]["readOnlyRootFilesystem"] is True
                assert spec["securityContext"]["runAsUser"] == 10001
                assert "activeDeadlineSeconds" in spec
    finally:
        import os
        import signal

        with contextlib.suppress(ProcessLookupError):
            os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()
        daemon_log.close()


# ---- which pod failures are configuration errors: dagster_k8s's own errors, from the emulator -


def _pod_error(
    cluster, image: str, *, evict_after_start: bool = False, command: list[str] | None = None
) -> str:
    """The DagsterK8sError text dagster_k8s raises for a step pod (client.py, wait_for_pod)."""
    import kubernetes
    from dagster_k8s.client import DagsterK8sError, DagsterKubernetesClient, WaitForPodState

    api, kubelet = cluster
    kubernetes.config.load_kube_config(config_file=str(kubelet.kubeconfig))
    client = DagsterKubernetesClient.production_client()
    name = f"step-{len(api.store.names('pods'))}"
    client.core_api.create_namespaced_pod(
        NAMESPACE,
        {
            "metadata": {"name": name},
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {"name": "worker", "image": image, "command": command or ["sleep", "30"]}
                ],
            },
        },
    )
    if evict_after_start:
        # Pending (ContainerCreating) through the node's start delay, then Running.
        def waiting_reason():
            pod = api.store.get("", "v1", "pods", NAMESPACE, name)
            statuses = pod["status"].get("containerStatuses") or [{}]
            return statuses[0].get("state", {}).get("waiting", {}).get("reason")

        assert _wait("the pod's container status", waiting_reason, 5) == "ContainerCreating"
        _wait("the pod to run", lambda: kubelet.started, timeout_s=10)
        assert api.store.get("", "v1", "pods", NAMESPACE, name)["status"]["phase"] == "Running"
        kubelet.evict(NAMESPACE, name)
    with pytest.raises(DagsterK8sError) as raised:
        client.wait_for_pod(
            name,
            NAMESPACE,
            wait_for_state=WaitForPodState.Terminated,
            wait_time_between_attempts=0.1,
            wait_timeout=20,
        )
    return str(raised.value)


@pytest.mark.parametrize(
    ("image", "reason"),
    [
        (UNPULLABLE_IMAGE, ("ErrImagePull", "ImagePullBackOff")),
        ("Bad::Image", ("InvalidImageName",)),
    ],
)
def test_image_errors_are_configuration_errors(cluster, image, reason):
    from video_assets.resources import image_pull_reason

    assert image_pull_reason(_pod_error(cluster, image)) in reason


def test_an_evicted_step_pod_stays_retryable(cluster):
    """Node gone or evicted: the retry policy's case, not a configuration error."""
    from video_assets.resources import TERMINATION_ERROR, image_pull_reason

    cluster[1].start_delay_s = 0.5
    error = _pod_error(cluster, "worker:1", evict_after_start=True)
    assert image_pull_reason(error) is None
    assert TERMINATION_ERROR.search(error) is None


def test_a_workers_error_line_comes_back_as_the_termination_message(cluster):
    """Kubernetes docs, "Determine the Reason for Pod Failure": what the container wrote to its
    termination-message file is the terminated state's message; the step reads its line there."""
    from gpu_analysis.workers.reporting import ERROR_FILE_ENV
    from video_assets.resources import TERMINATION_ERROR, image_pull_reason

    line = "error: clip.mp4: no video stream"
    script = f'echo working; echo "{line}" > "${ERROR_FILE_ENV}"; exit 2'
    error = _pod_error(cluster, "worker:1", command=["sh", "-c", script])
    assert TERMINATION_ERROR.search(error).group(1) == line
    assert "working" in error  # the log's last lines, read back through pods/{name}/log
    assert image_pull_reason(error) is None


def test_only_lasting_api_refusals_are_configuration_errors():
    from kubernetes.client import ApiException

    from video_assets.resources import api_refusal_line

    def refused(status: int, message: str = "") -> ApiException:
        exc = ApiException(status=status)
        exc.body = json.dumps({"kind": "Status", "code": status, "message": message})
        return exc

    for exc in (refused(401), refused(403), refused(404, 'namespaces "gpu-analysis" not found')):
        line = api_refusal_line(exc, "infer", NAMESPACE)
        assert line.startswith("error: ") and "\n" not in line
    # Throttled, overloaded, timed out, or the pod already deleted with its node: retried.
    for status in (409, 429, 500, 503, 504):
        assert api_refusal_line(refused(status), "infer", NAMESPACE) is None
    assert api_refusal_line(refused(404, 'pods "x" not found'), "infer", NAMESPACE) is None


def test_a_missing_bucket_fails_at_once_with_what_to_fix(s3_staging, instance, tmp_path: Path):
    """The run's match bucket does not exist (a profile naming another account's bucket)."""
    _incoming_match(s3_staging, tmp_path, "nobucket")
    [request] = SensorDriver(instance).tick()
    outcome, _ = _run_in_own_process(
        request, GPU_ANALYSIS_BUCKET="no-such-gpu-analysis-bucket", GPU_ANALYSIS_EXECUTION="k8s"
    )
    assert not outcome["success"]
    message = outcome["message"] or _failures(instance, outcome["run_id"])
    assert message.startswith("error: ") and "no-such-gpu-analysis-bucket" in message, message
    assert "NoSuchBucket" in message and "\n" not in message
    assert _step_attempts(instance, outcome["run_id"], outcome["failed_step"]) == 1
