"""`match_video_sensor` on the local profile: a folder of incoming videos.

Real encoded clips on disk, the sensor evaluated tick by tick as the daemon does, and a clock the
test moves by hand, so settle times cost no sleeping.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from gpu_analysis.engine import storage
from gpu_analysis.synthetic import calibration_path_for, ffmpeg_exe, generate_match_clip
from tests.match.sensor_ticks import HandClock, SensorDriver
from video_assets import sensors

SETTLE_S = 30.0
NOT_WHOLE = "not a whole MP4"


@dataclasses.dataclass(frozen=True)
class Clips:
    first: bytes  # a match, faststart: its index (moov) before the media data (mdat)
    plain: bytes  # `first` remuxed with its index after the media data: other bytes, same size
    second: bytes  # another match
    calibration: bytes


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Clips:
    folder = tmp_path_factory.mktemp("clips")
    first, second, plain = folder / "first.mp4", folder / "second.mp4", folder / "plain.mp4"
    for path, seed in ((first, 1), (second, 2)):
        generate_match_clip(path, seed=seed, duration_s=2.0, fps=25.0, width=320, height=180)
    subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-i", str(first), "-c", "copy", str(plain)], check=True
    )
    clips = Clips(
        first.read_bytes(),
        plain.read_bytes(),
        second.read_bytes(),
        calibration_path_for(first).read_bytes(),
    )
    assert clips.first.find(b"moov") < clips.first.find(b"mdat")
    assert clips.plain.find(b"moov") > clips.plain.find(b"mdat")
    return clips


@pytest.fixture
def folder(_isolated_data_root: Path) -> Path:
    incoming = _isolated_data_root / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    return incoming


@pytest.fixture
def driver(instance, monkeypatch: pytest.MonkeyPatch) -> SensorDriver:
    monkeypatch.setenv("GPU_ANALYSIS_INCOMING_SETTLE_S", str(SETTLE_S))
    return SensorDriver(instance, clock=HandClock())


def drop(folder: Path, match_id: str, video: bytes, calibration: bytes | None) -> Path:
    path = folder / f"{match_id}.mp4"
    path.write_bytes(video)
    if calibration is not None:
        (folder / f"{match_id}.calibration.json").write_bytes(calibration)
    return path


def after(driver: SensorDriver, seconds: float) -> list:
    driver.clock.advance(seconds)
    return driver.tick()


def version_of(video: bytes, calibration: bytes) -> str:
    return sensors.match_version(
        hashlib.sha256(video).hexdigest(), hashlib.sha256(calibration).hexdigest()
    )


def test_new_file_gives_one_run_and_the_same_file_none(driver, folder, clips, instance):
    video = drop(folder, "m1", clips.first, clips.calibration)

    assert driver.tick() == []  # first sight: a local copy may still be going on
    [run] = after(driver, SETTLE_S)
    assert run.partition_key == "m1"
    assert run.run_key.startswith("m1@")
    version = run.run_key.split("@")[1]
    ours = {key: value for key, value in run.tags.items() if key.startswith("gpu-analysis/")}
    assert ours == {
        "gpu-analysis/match-id": "m1",
        "gpu-analysis/video": str(video),
        "gpu-analysis/calibration": str(folder / "m1.calibration.json"),
        "gpu-analysis/version": version,
    }
    assert instance.get_dynamic_partitions("matches") == ["m1"]
    assert after(driver, SETTLE_S) == []
    assert after(driver, SETTLE_S) == []


def test_settling_is_a_time_not_a_tick_count(driver, folder, clips):
    drop(folder, "m1", clips.first, clips.calibration)
    assert driver.tick() == []
    # A daemon ticking every 10 s sees the file unchanged twice, three times: not long enough.
    assert after(driver, 10) == []
    assert after(driver, 10) == []
    assert [r.partition_key for r in after(driver, 10)] == ["m1"]


def test_copy_that_stalls_for_a_tick_runs_only_on_the_whole_file(driver, folder, clips):
    video = folder / "m1.mp4"
    (folder / "m1.calibration.json").write_bytes(clips.calibration)
    with video.open("wb") as copy:
        copy.write(clips.first[: len(clips.first) // 3])
        copy.flush()
        assert driver.tick() == []
        assert after(driver, 15) == []  # the copy stalls: the same third on the next tick
        copy.write(clips.first[len(clips.first) // 3 :])
    assert after(driver, 15) == []  # changed since the last tick: its settle time starts again
    [run] = after(driver, SETTLE_S)
    assert run.tags["gpu-analysis/video"] == str(video)
    assert run.tags["gpu-analysis/version"] == version_of(clips.first, clips.calibration)
    assert run.run_key == "m1@" + version_of(clips.first, clips.calibration)
    assert after(driver, SETTLE_S) == []


@pytest.mark.parametrize("layout", ["faststart", "index-last"])
def test_truncated_video_is_reported_once_and_never_run_until_whole(
    driver, folder, clips, capsys, layout
):
    whole = clips.first if layout == "faststart" else clips.plain
    video = drop(folder, "m1", whole[: len(whole) // 3], clips.calibration)
    driver.tick()
    for _ in range(4):  # long settled, never completed
        assert after(driver, SETTLE_S) == []
    log = capsys.readouterr().err
    assert log.count(NOT_WHOLE) == 1, log
    assert f"not processing {video}" in log

    video.write_bytes(whole)
    assert driver.tick() == []
    assert [r.partition_key for r in after(driver, SETTLE_S)] == ["m1"]
    assert NOT_WHOLE not in capsys.readouterr().err


def test_video_cut_at_its_last_bytes_or_a_box_boundary_is_not_whole(driver, folder, clips, capsys):
    mdat_at = clips.first.find(b"mdat") - 4  # faststart: the index, then the media data
    drop(folder, "m1", clips.first[:-1], clips.calibration)
    drop(folder, "m2", clips.first[:mdat_at], clips.calibration)
    driver.tick()
    assert after(driver, SETTLE_S) == []
    log = capsys.readouterr().err
    assert log.count(NOT_WHOLE) == 2, log


def test_same_size_same_mtime_replacement_gives_a_new_run(driver, folder, clips):
    assert len(clips.plain) == len(clips.first) and clips.plain != clips.first
    video = drop(folder, "m1", clips.first, clips.calibration)
    driver.tick()
    [first] = after(driver, SETTLE_S)
    before = video.stat()

    # Overwritten in place (same inode) with other bytes of the same size, mtime set back.
    video.write_bytes(clips.plain)
    os.utime(video, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (video.stat().st_size, video.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)

    assert driver.tick() == []
    [second] = after(driver, SETTLE_S)
    assert second.partition_key == "m1"
    assert second.run_key == "m1@" + version_of(clips.plain, clips.calibration)
    assert second.run_key != first.run_key
    assert after(driver, SETTLE_S) == []


def test_identical_copy_with_a_new_mtime_starts_nothing(driver, folder, clips):
    video = drop(folder, "m1", clips.first, clips.calibration)
    driver.tick()
    assert len(after(driver, SETTLE_S)) == 1
    # The same bytes copied again: a new mtime and ctime, the same content.
    video.write_bytes(clips.first)
    stat = video.stat()
    os.utime(video, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert driver.tick() == []
    assert after(driver, SETTLE_S) == []


def test_suffixes_match_in_any_case(driver, folder, clips, capsys):
    (folder / "M1.MP4").write_bytes(clips.first)
    (folder / "M1.Calibration.JSON").write_bytes(clips.calibration)
    (folder / "m2.Mp4").write_bytes(clips.second)
    (folder / "m2.CALIBRATION.json").write_bytes(clips.calibration)
    (folder / "m3.mov").write_bytes(clips.second)
    (folder / ".m4.mp4.Xq3b9Z").write_bytes(clips.second)  # rsync's file while it copies
    driver.tick()
    runs = {r.partition_key: r for r in after(driver, SETTLE_S)}
    assert sorted(runs) == ["M1", "m2"]
    assert runs["M1"].tags["gpu-analysis/video"] == str(folder / "M1.MP4")
    assert runs["M1"].tags["gpu-analysis/calibration"] == str(folder / "M1.Calibration.JSON")
    assert runs["m2"].tags["gpu-analysis/video"] == str(folder / "m2.Mp4")
    log = capsys.readouterr().err
    assert log.count("skipping m3.mov") == 1, log  # said, and said once
    assert ".m4.mp4" not in log
    assert after(driver, SETTLE_S) == []
    assert "skipping m3.mov" not in capsys.readouterr().err


def test_replaced_file_gives_a_new_run(driver, folder, clips, instance):
    drop(folder, "m1", clips.first, clips.calibration)
    driver.tick()
    [first] = after(driver, SETTLE_S)

    drop(folder, "m1", clips.second, None)
    assert driver.tick() == []
    [second] = after(driver, SETTLE_S)
    assert second.partition_key == "m1"
    assert second.run_key != first.run_key
    assert after(driver, SETTLE_S) == []
    assert instance.get_dynamic_partitions("matches") == ["m1"]


def test_video_without_calibration_waits_for_it(driver, folder, clips, instance):
    drop(folder, "m1", clips.first, None)
    assert driver.tick() == []
    assert after(driver, SETTLE_S) == []
    assert instance.get_dynamic_partitions("matches") == []
    (folder / "m1.calibration.json").write_bytes(clips.calibration)
    assert driver.tick() == []  # the calibration settles too
    assert [r.partition_key for r in after(driver, SETTLE_S)] == ["m1"]


def test_unsafe_match_ids_are_skipped(driver, folder, clips, instance):
    for bad in ("bad id", "-dash-first", "dots.in.name", "x" * 65):
        drop(folder, bad, clips.first, clips.calibration)
    drop(folder, "Good_match-01", clips.first, clips.calibration)
    driver.tick()
    assert [r.partition_key for r in after(driver, SETTLE_S)] == ["Good_match-01"]
    assert instance.get_dynamic_partitions("matches") == ["Good_match-01"]


def test_restart_neither_loses_nor_repeats_nor_hashes_again(
    driver, folder, clips, instance, monkeypatch: pytest.MonkeyPatch
):
    hashed: list[str] = []
    sha256_file = storage.sha256_file

    def counted_sha256_file(path: Path) -> str:
        hashed.append(path.name)
        return sha256_file(path)

    monkeypatch.setattr(storage, "sha256_file", counted_sha256_file)
    drop(folder, "done", clips.first, clips.calibration)
    driver.tick()
    assert [r.partition_key for r in after(driver, SETTLE_S)] == ["done"]
    drop(folder, "pending", clips.second, clips.calibration)
    assert after(driver, 1) == []  # seen once, not settled yet

    # A new daemon process starts from the stored cursor only.
    restarted = SensorDriver(instance, cursor=driver.cursor, clock=driver.clock)
    assert [r.partition_key for r in after(restarted, SETTLE_S)] == ["pending"]
    for _ in range(3):
        assert after(restarted, SETTLE_S) == []
    # Each file once: a 3 GB match is read once, not on every tick.
    assert sorted(hashed) == sorted(
        ["done.mp4", "done.calibration.json", "pending.mp4", "pending.calibration.json"]
    )


def test_a_tick_stops_checking_files_when_its_time_is_spent(
    driver, folder, clips, monkeypatch: pytest.MonkeyPatch
):
    # No checking time: each tick still checks one file, so every match gets its turn.
    monkeypatch.setattr(sensors, "CHECK_BUDGET_S", 0.0)
    drop(folder, "m1", clips.first, clips.calibration)
    drop(folder, "m2", clips.second, clips.calibration)
    driver.tick()
    started = [r.partition_key for _ in range(4) for r in after(driver, SETTLE_S)]
    assert started == ["m1", "m2"]
