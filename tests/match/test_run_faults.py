"""A killed run and an overrunning GPU step: their pool slots, worker processes and timeouts.

Real processes throughout: a `process_match` run launched the way the daemon launches it (the
instance's run launcher starting it in a real code server), the daemon's own monitoring loop,
and real workers decoding a real encoded video. Processes are found through /proc (Linux).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import WorkspaceFileTarget
from dagster._daemon.controller import create_daemon_of_type
from dagster._utils.error import SerializableErrorInfo

from gpu_analysis.engine.records import PreprocessParams
from gpu_analysis.profile import load_profile
from gpu_analysis.run_launcher import run_process
from gpu_analysis.synthetic import ffmpeg_exe, generate_match_clip
from tests.conftest import REPO_ROOT
from video_assets.resources import GpuWorkers

# Every process a test starts inherits this variable with the test's own value; /proc shows
# a process's environment as it started, so pytest itself never carries it.
TAG_ENV = "GPU_ANALYSIS_TEST_PROCESS_TAG"
WORKER_MODULE = "gpu_analysis.workers.preprocess"
CLIP_REPEATS = 300  # a 4 s clip played 300 times: 20 minutes, 30-45 s of preprocessing here
CLIP_DURATION_S = 4.0 * CLIP_REPEATS
SAMPLE_FPS = 0.2  # decoding is the work; few shards to write
SLOT_FREED_WITHIN_S = 60.0
WORKER_GONE_WITHIN_S = 15.0


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 20-minute 1280x720 match (one 4 s clip played over by stream copy), calibration beside."""
    folder = tmp_path_factory.mktemp("long_clip")
    short = folder / "short.mp4"
    generate_match_clip(short, seed=11, duration_s=4.0, fps=25.0, width=1280, height=720)
    listing = folder / "repeats.txt"
    listing.write_text(f"file '{short.name}'\n" * CLIP_REPEATS)
    video = folder / "match.mp4"
    subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing),
         "-c", "copy", str(video)],
        check=True, timeout=120,
    )  # fmt: skip
    shutil.copy(short.with_name("short.calibration.json"), folder / "match.calibration.json")
    return video


def tagged_processes(tag: str) -> dict[int, str]:
    """pid -> command line of the live processes started under `tag` (zombies are dead)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if f"{TAG_ENV}={tag}".encode() not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if state not in ("Z", "X"):
            found[int(entry.name)] = command
    return found


def workers_of(tag: str) -> list[int]:
    return [pid for pid, command in tagged_processes(tag).items() if WORKER_MODULE in command]


def kill_all(tag: str) -> None:
    for pid in tagged_processes(tag):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


class DaemonLoops:
    """Daemons of `dagster-daemon run`, each running its own loop in a thread of this process.

    Only the ones named: `dagster-daemon run` would also tick the match sensor, which would start
    a second run for the same file and take the GPU slot this test watches.
    """

    def __init__(self, workspace: WorkspaceProcessContext, daemon_types: list[str]):
        self.workspace = workspace
        self.daemons = [create_daemon_of_type(kind, workspace.instance) for kind in daemon_types]
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.threads = [
            threading.Thread(target=self._loop, args=(d,), daemon=True) for d in self.daemons
        ]

    def _loop(self, daemon) -> None:
        for item in daemon.core_loop(self.workspace, self.stop):
            if isinstance(item, SerializableErrorInfo):
                self.errors.append(item.to_string())
            if self.stop.is_set():
                return

    def __enter__(self) -> DaemonLoops:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)


@pytest.fixture
def match_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, long_clip: Path, heatmap_model):
    """DAGSTER_HOME with the repository's dagster.yaml, the long clip dropped as match `m1`."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    incoming = tmp_path / "data" / "incoming"
    incoming.mkdir(parents=True)
    shutil.copy(long_clip, incoming / "m1.mp4")
    shutil.copy(long_clip.with_name("match.calibration.json"), incoming / "m1.calibration.json")
    tag = uuid.uuid4().hex
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("GPU_ANALYSIS_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("GPU_ANALYSIS_MODEL", str(heatmap_model))
    monkeypatch.setenv("GPU_ANALYSIS_SAMPLE_FPS", str(SAMPLE_FPS))
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))
    monkeypatch.setenv(TAG_ENV, tag)
    try:
        yield tag
    finally:
        kill_all(tag)


def wait_for(what: str, condition, deadline_s: float, poll_s: float = 0.5):
    end = time.monotonic() + deadline_s
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < end, f"{what}: not within {deadline_s:g} s"
        time.sleep(poll_s)


@pytest.mark.parametrize("killed", ["run process", "run process and its code server"])
def test_killed_run_frees_its_gpu_slot_and_leaves_no_worker(match_home: str, killed: str):
    tag = match_home
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("matches", ["m1"])
        target = WorkspaceFileTarget([str(REPO_ROOT / "workspace.yaml")])
        with (
            WorkspaceProcessContext(instance, target) as workspace,
            DaemonLoops(workspace, ["QUEUED_RUN_COORDINATOR", "MONITORING"]) as daemons,
        ):
            launched = subprocess.run(
                [sys.executable, "-m", "dagster", "job", "launch", "-w",
                 str(REPO_ROOT / "workspace.yaml"), "-j", "process_match",
                 "--tags", json.dumps({"dagster/partition": "m1"})],
                capture_output=True, text=True, timeout=180,
            )  # fmt: skip
            assert launched.returncode == 0, launched.stderr[-2000:]
            [worker_pid] = wait_for("the preprocess worker started", lambda: workers_of(tag), 240)
            [run] = instance.get_runs()
            claimed = instance.event_log_storage.get_concurrency_info("gpu-t4").claimed_slots
            assert [slot.run_id for slot in claimed] == [run.run_id]

            run_pid = run_process(instance, run.run_id).pid
            victims = [run_pid]
            if killed == "run process and its code server":
                victims.insert(0, parent_pid(run_pid))  # first: it must not report the death
            for pid in victims:
                os.kill(pid, signal.SIGKILL)
            killed_at = time.monotonic()

            seen: dict[str, float] = {}
            deadline = killed_at + SLOT_FREED_WITHIN_S
            while len(seen) < 3 and time.monotonic() < deadline:
                now = time.monotonic() - killed_at
                status = instance.get_run_by_id(run.run_id).status
                slots = instance.event_log_storage.get_concurrency_info("gpu-t4").claimed_slots
                checks = {
                    "run failed": status == dg.DagsterRunStatus.FAILURE,
                    "slot freed": run.run_id not in {slot.run_id for slot in slots},
                    "worker gone": worker_pid not in workers_of(tag),
                }
                for name, done in checks.items():
                    if done:
                        seen.setdefault(name, round(now, 1))
                time.sleep(0.5)
            left = sorted(command[:70] for command in tagged_processes(tag).values())
            print(f"\n{killed} killed: first seen after (s) {seen}; still running: {left}")
            assert daemons.errors == []
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
        assert "slot freed" in seen, f"gpu-t4 still claimed {SLOT_FREED_WITHIN_S:g} s after"
        assert seen.get("worker gone", WORKER_GONE_WITHIN_S) < WORKER_GONE_WITHIN_S, seen
        assert workers_of(tag) == []


def test_a_step_past_its_timeout_is_stopped_and_fails_once(
    instance, long_clip, heatmap_model, tmp_path, monkeypatch
):
    tag = uuid.uuid4().hex
    monkeypatch.setenv(TAG_ENV, tag)
    workers = GpuWorkers.from_profile(load_profile("local"))
    shards = tmp_path / "shards"

    @dg.asset(retry_policy=dg.RetryPolicy(max_retries=3))
    def frames_past_their_limit(context) -> dg.MaterializeResult:
        params = PreprocessParams(
            video_uri=str(long_clip),
            shards_uri=str(shards),
            sample_fps=SAMPLE_FPS,
            model=str(heatmap_model),
        )
        return workers.run(
            context, "preprocess", params, timeout_s=2.0, video_duration_s=CLIP_DURATION_S
        )

    try:
        started = time.monotonic()
        result = dg.materialize([frames_past_their_limit], instance=instance, raise_on_error=False)
        took_s = time.monotonic() - started
        left = workers_of(tag)
    finally:
        kill_all(tag)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    message = failure.step_failure_data.user_failure_data.description
    assert message == "error: preprocess ran past its 2 s limit for a 1200 s video"
    retries = [
        e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY
    ]
    assert retries == []
    assert left == [], "the worker outlived its step"
    assert not shards.exists()
    print(f"\nstep stopped and failed {took_s:.1f} s after it started (limit 2 s)")
