"""One match, one writer: runs of a match share nothing, deliveries switch whole, ids stay inside.

Issue 15's findings 1 (same match twice), 4 (partition keys as paths) and 5 (a failed
re-delivery), each through a real instance, sensor ticks as the daemon makes them and the real
worker processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from gpu_analysis.engine.errors import UserError
from gpu_analysis.profile import load_profile
from gpu_analysis.synthetic import calibration_path_for, generate_match_clip
from tests.conftest import REPO_ROOT
from tests.match.sensor_ticks import SensorDriver
from tests.tmpfs import mounted_tmpfs
from video_assets.assets import build_assets
from video_assets.definitions import build_definitions, build_resources
from video_assets.layout import MatchLayout

MAP_FILES = (
    "temperature_map.npy",
    "temperature_map_team_0.npy",
    "temperature_map_team_1.npy",
    "temperature_map_half_1.npy",
    "temperature_map_half_2.npy",
    "temperature_map.png",
)
RACE_ROUNDS = 20


def sha256(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


class Matches:
    """A data root, a Dagster instance and two versions (A, B) of a short match clip."""

    def __init__(self, root: Path, clips: dict[str, Path]):
        self.root = root
        self.clips = clips
        home = root / "dagster_home"
        home.mkdir()
        shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
        self.instance = dg.DagsterInstance.from_config(str(home))
        self.driver = SensorDriver(self.instance)
        self.layout = MatchLayout(str(root / "data"))
        self.pending: dict[str, dg.RunRequest] = {}  # requested by a tick, not yet taken

    def drop(self, match_id: str, version: str, variant: int = 0) -> None:
        """Put a version of the clip into incoming/ as an upload tool would: write, rename.

        `variant` re-serializes the calibration (same points) so that a version dropped again
        is new content to the sensor.
        """
        incoming = self.root / "data" / "incoming"
        incoming.mkdir(parents=True, exist_ok=True)
        clip = self.clips[version]
        calibration = json.loads(calibration_path_for(clip).read_text())
        for name, payload in (
            (f"{match_id}.mp4", clip.read_bytes()),
            (f"{match_id}.calibration.json", json.dumps(calibration, indent=variant).encode()),
        ):
            partial = incoming / f".{name}.upload"
            partial.write_bytes(payload)
            os.replace(partial, incoming / name)

    def request(self, match_id: str) -> dg.RunRequest:
        for _ in range(4):  # a local file settles over ticks
            if match_id in self.pending:
                return self.pending.pop(match_id)
            self.pending.update({r.partition_key: r for r in self.driver.tick()})
        raise AssertionError(f"the sensor never requested a run for {match_id}")

    def run(self, request: dg.RunRequest, job: dg.JobDefinition | None = None):
        job = job or build_definitions(load_profile()).resolve_job_def("process_match")
        return job.execute_in_process(
            instance=self.instance,
            partition_key=request.partition_key,
            tags={**request.tags, "dagster/run_key": request.run_key},
            raise_on_error=False,
        )

    def start(self, request: dg.RunRequest) -> subprocess.Popen:
        """The run in a process of its own, as the run launcher starts one (run_process_match)."""
        return subprocess.Popen(
            [
                sys.executable, "-m", "tests.match.run_process_match",
                request.partition_key, request.run_key, json.dumps(request.tags),
            ],
            cwd=REPO_ROOT,
            env={**os.environ, "DAGSTER_HOME": str(self.root / "dagster_home")},
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip

    def wait_for_step(self, run_key: str, step_key: str, timeout_s: float = 120.0) -> None:
        """Until the run with `run_key` has finished the step `step_key` (or has ended)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            runs = self.instance.get_runs(dg.RunsFilter(tags={"dagster/run_key": run_key}))
            for run in runs:
                if run.is_finished or any(
                    e.dagster_event
                    and e.dagster_event.event_type == dg.DagsterEventType.STEP_SUCCESS
                    and e.step_key == step_key
                    for e in self.instance.all_logs(run.run_id)
                ):
                    return
            time.sleep(0.05)
        raise AssertionError(f"run {run_key} did not finish {step_key} in {timeout_s} s")

    def results(self, match_id: str) -> Path:
        return self.root / "data" / "results" / match_id


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    made = {}
    for version, seed in (("A", 21), ("B", 22)):
        clip = folder / f"{version}.mp4"
        generate_match_clip(clip, seed=seed, duration_s=6.0, fps=25.0, width=320, height=180)
        made[version] = clip
    return made


@pytest.fixture
def matches(tmp_path, clips, heatmap_model, monkeypatch) -> Matches:
    monkeypatch.setenv("GPU_ANALYSIS_PROFILE", "local")
    monkeypatch.setenv("GPU_ANALYSIS_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("GPU_ANALYSIS_MODEL", str(heatmap_model))
    monkeypatch.setenv("GPU_ANALYSIS_SAMPLE_FPS", "5")
    monkeypatch.setenv("GPU_ANALYSIS_INCOMING_SETTLE_S", "0")
    made = Matches(tmp_path, clips)
    yield made
    made.instance.dispose()


def delivered_maps(folder: Path, manifest: dict) -> dict[str, str]:
    """The map files of the delivery `manifest` names, read through its version paths."""
    return {
        entry["name"]: sha256((folder / entry.get("path", entry["name"])).read_bytes())
        for entry in manifest["files"]
        if entry["name"] in MAP_FILES
    }


def finished(run: subprocess.Popen) -> dict:
    out, _ = run.communicate(timeout=300)
    assert run.returncode == 0, out
    return json.loads(out.strip().splitlines()[-1])


def reference(matches: Matches, version: str) -> dict[str, str]:
    match_id = f"ref-{version.lower()}"
    matches.drop(match_id, version)
    assert matches.run(matches.request(match_id)).success
    folder = matches.results(match_id)
    return {name: sha256((folder / name).read_bytes()) for name in MAP_FILES}


def test_the_same_match_twice_never_delivers_a_mix_and_the_newest_wins(matches, clips):
    """A corrected video arrives while the first run goes, 20 times over, at random moments.

    Two slots per GPU pool, as on a cluster (staging has four): both runs can be in the same
    step at once.
    """
    for pool in ("gpu-t4", "gpu-a10g"):
        matches.instance.event_log_storage.set_concurrency_slots(pool, 2)
    refs = {v: reference(matches, v) for v in ("A", "B")}
    assert refs["A"] != refs["B"]
    video_sha = {v: sha256(clips[v].read_bytes()) for v in ("A", "B")}
    folder = matches.results("race")
    seen: list[str] = []
    stop = threading.Event()
    problems: list[str] = []

    def reader() -> None:
        """What a reader that follows the manifest sees, as often as it can look."""
        while not stop.is_set():
            try:
                manifest = json.loads((folder / "manifest.json").read_bytes())
                maps = delivered_maps(folder, manifest)
            except (FileNotFoundError, json.JSONDecodeError):
                continue  # nothing delivered yet, or an old version pruned while read
            version = next((v for v, ref in refs.items() if maps == ref), None)
            if version is None:
                problems.append(f"mixed delivery {manifest['version']}: {sorted(maps)}")
            elif manifest["video_sha256"] != video_sha[version]:
                problems.append(f"manifest names other content than its maps ({version})")
            else:
                seen.append(version)

    rng = random.Random(15)
    watcher = threading.Thread(target=reader, daemon=True)
    watcher.start()
    outcomes = []
    try:
        for round_ in range(RACE_ROUNDS):
            matches.drop("race", "A", variant=2 * round_)
            first = matches.request("race")
            run_a = matches.start(first)
            # The correction lands while run A is going: after it took its video, at any point
            # of its GPU steps, aggregation or delivery (together about 4 s here).
            matches.wait_for_step(first.run_key, "match_video")
            time.sleep(rng.uniform(0.0, 4.0))
            matches.drop("race", "B", variant=2 * round_ + 1)
            run_b = matches.start(matches.request("race"))
            a, b = finished(run_a), finished(run_b)
            assert b["success"], f"round {round_}: the newest content was not delivered: {b}"
            if a["success"]:
                outcomes.append("A delivered")
            else:
                assert "superseded" in a["message"], a
                outcomes.append(f"A superseded at {a['failed_step']}")

            manifest = json.loads((folder / "manifest.json").read_bytes())
            assert manifest["video_sha256"] == video_sha["B"], f"round {round_}"
            assert delivered_maps(folder, manifest) == refs["B"], f"round {round_}"
            # The files at results/<match_id>/ are the manifest's, whole.
            assert {n: sha256((folder / n).read_bytes()) for n in MAP_FILES} == refs["B"]
    finally:
        stop.set()
        watcher.join(timeout=10)
    summary = {o: outcomes.count(o) for o in sorted(set(outcomes))}
    assert problems == [], f"{len(problems)} bad looks, e.g. {problems[:3]}; runs: {summary}"
    assert seen, "the reader never saw a delivery"
    # Both orders happened: run A superseded before delivering, and A delivered then replaced.
    assert any(o.startswith("A superseded") for o in outcomes), summary
    print(f"race: {summary}; the reader looked {len(seen)} times: {seen.count('A')} A, "
          f"{seen.count('B')} B, never a mix")  # fmt: skip
    # Runs share nothing and clean up after delivery: no work folder of any run is left.
    assert [p for p in (matches.root / "data" / "work").rglob("*") if p.is_file()] == []
    versions = sorted(p.name for p in (folder / "versions").iterdir())
    assert len(versions) <= 3  # the newest few are kept, older ones pruned


@pytest.mark.parametrize("key", ["..", "m1/..", "../results", "m1/../../x"])
def test_a_partition_key_that_names_another_folder_is_refused_and_touches_nothing(matches, key):
    matches.drop("m1", "A")
    matches.drop("m2", "B")
    for match_id in ("m1", "m2"):
        assert matches.run(matches.request(match_id)).success
    data = matches.root / "data"
    before = {
        str(p.relative_to(data)): sha256(p.read_bytes()) for p in data.rglob("*") if p.is_file()
    }

    # The UI's "add partition" accepts any string as a key.
    matches.instance.add_dynamic_partitions("matches", [key])
    job = build_definitions(load_profile()).resolve_job_def("process_match")
    result = job.execute_in_process(
        instance=matches.instance, partition_key=key, raise_on_error=False
    )

    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert failure.step_key == "match_video"
    message = failure.step_failure_data.user_failure_data.description
    assert message.startswith(f"error: match id {key!r}") and "\n" not in message
    after = {
        str(p.relative_to(data)): sha256(p.read_bytes()) for p in data.rglob("*") if p.is_file()
    }
    assert after == before


def test_every_path_builder_refuses_to_leave_the_match_folder():
    layout = MatchLayout("s3://bucket")
    for bad in ("..", "a/b", "", ".hidden", "m1\x00"):
        with pytest.raises(UserError):
            layout.delivery_uri(bad)
    for bad_name in ("..", "../x", "a/../b", ""):
        with pytest.raises(UserError, match="would leave its folder"):
            layout.delivery_uri("m1", bad_name)
        with pytest.raises(UserError, match="would leave its folder"):
            layout.work_uri("m1", "run-1", bad_name)
        with pytest.raises(UserError, match="would leave its folder"):
            layout.version_uri("m1", bad_name)
    assert layout.delivery_uri("m1", "report.json") == "s3://bucket/results/m1/report.json"


@pytest.fixture
def small_results_disk(matches):
    """results/ on its own small file system (a tmpfs), as a nearly full disk is met."""
    with mounted_tmpfs(matches.root / "data" / "results", 4 * 1024 * 1024) as results:
        yield results


def test_a_failed_redelivery_leaves_the_previous_one_current_and_whole(
    matches, clips, small_results_disk
):
    matches.drop("m5", "A")
    assert matches.run(matches.request("m5")).success
    folder = matches.results("m5")
    good = json.loads((folder / "manifest.json").read_bytes())
    good_maps = delivered_maps(folder, good)
    # Fill the disk but for 40 kB: less than the next delivery needs.
    free = shutil.disk_usage(small_results_disk).free
    (small_results_disk / "filler").write_bytes(b"\0" * (free - 40_000))

    matches.drop("m5", "B")
    result = matches.run(matches.request("m5"))

    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert failure.step_key == "match_delivery"
    message = failure.step_failure_data.user_failure_data.description
    assert message.startswith("error: ") and "no space left" in message.lower()
    retried = [
        e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY
    ]
    assert retried == []  # a full disk does not empty itself on a retry
    current = json.loads((folder / "manifest.json").read_bytes())
    assert current == good
    assert delivered_maps(folder, current) == good_maps
    assert {n: sha256((folder / n).read_bytes()) for n in MAP_FILES} == good_maps
    # The failed attempt's partial version is gone: only the good version remains.
    assert sorted(p.name for p in (folder / "versions").iterdir()) == [good["version"]]


def test_a_single_asset_materialized_alone_says_to_run_the_whole_job(matches):
    matches.drop("m6", "A")
    matches.request("m6")
    resources = build_resources(load_profile())
    [frames] = [a for a in build_assets(load_profile()) if a.key.path == ["match_frames"]]
    result = dg.materialize(
        [frames], instance=matches.instance, partition_key="m6", resources=resources,
        raise_on_error=False,
    )  # fmt: skip
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    message = failure.step_failure_data.user_failure_data.description
    assert message.startswith("error: m6: ") and "process_match" in message
