"""`match_video_sensor` on the local profile: a folder of incoming videos."""

from __future__ import annotations

import os
from pathlib import Path

from tests.match.sensor_ticks import SensorDriver

CALIBRATION = b'{"pitch": {"length_m": 105, "width_m": 68}}'


def incoming(data_root: Path) -> Path:
    folder = data_root / "incoming"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def drop(folder: Path, match_id: str, payload: bytes, *, calibration: bool = True) -> None:
    (folder / f"{match_id}.mp4").write_bytes(payload)
    if calibration:
        (folder / f"{match_id}.calibration.json").write_bytes(CALIBRATION)


def test_new_file_gives_one_run_and_the_same_file_none(instance, _isolated_data_root):
    folder = incoming(_isolated_data_root)
    driver = SensorDriver(instance)
    drop(folder, "m1", b"video-1" * 100)

    assert driver.tick() == []  # first sight: a local file may still be growing
    runs = driver.tick()
    assert [r.partition_key for r in runs] == ["m1"]
    assert runs[0].run_key.startswith("m1@")
    assert instance.get_dynamic_partitions("matches") == ["m1"]
    assert driver.tick() == []
    assert driver.tick() == []


def test_replaced_file_gives_a_new_run(instance, _isolated_data_root):
    folder = incoming(_isolated_data_root)
    driver = SensorDriver(instance)
    drop(folder, "m1", b"first cut" * 100)
    driver.tick()
    [first] = driver.tick()

    drop(folder, "m1", b"second cut, longer" * 100)
    assert driver.tick() == []
    [second] = driver.tick()
    assert second.partition_key == "m1"
    assert second.run_key != first.run_key
    assert driver.tick() == []
    assert instance.get_dynamic_partitions("matches") == ["m1"]


def test_half_written_file_waits_until_complete(instance, _isolated_data_root):
    folder = incoming(_isolated_data_root)
    driver = SensorDriver(instance)
    video = folder / "m1.mp4"
    (folder / "m1.calibration.json").write_bytes(CALIBRATION)
    with video.open("wb") as writer:
        writer.write(b"x" * 1000)
        writer.flush()
        assert driver.tick() == []
        writer.write(b"x" * 1000)
        writer.flush()
        assert driver.tick() == []
        writer.write(b"x" * 1000)
    assert driver.tick() == []  # the last write landed after the previous tick
    runs = driver.tick()
    assert [r.partition_key for r in runs] == ["m1"]


def test_video_without_calibration_waits_for_it(instance, _isolated_data_root):
    folder = incoming(_isolated_data_root)
    driver = SensorDriver(instance)
    drop(folder, "m1", b"v" * 100, calibration=False)
    assert driver.tick() == []
    assert driver.tick() == []
    assert instance.get_dynamic_partitions("matches") == []
    (folder / "m1.calibration.json").write_bytes(CALIBRATION)
    driver.tick()
    assert [r.partition_key for r in driver.tick()] == ["m1"]


def test_unsafe_match_ids_are_skipped(instance, _isolated_data_root):
    folder = incoming(_isolated_data_root)
    driver = SensorDriver(instance)
    for bad in ("bad id", "-dash-first", "dots.in.name", "x" * 65):
        drop(folder, bad, b"v")
    drop(folder, "Good_match-01", b"v")
    driver.tick()
    assert [r.partition_key for r in driver.tick()] == ["Good_match-01"]
    assert instance.get_dynamic_partitions("matches") == ["Good_match-01"]


def test_restart_with_the_cursor_neither_loses_nor_repeats(instance, _isolated_data_root):
    folder = incoming(_isolated_data_root)
    before = SensorDriver(instance)
    drop(folder, "done", b"a" * 10)
    before.tick()
    assert [r.partition_key for r in before.tick()] == ["done"]
    drop(folder, "pending", b"b" * 10)
    assert before.tick() == []  # seen once, not yet settled

    # A new daemon process starts from the stored cursor only.
    after = SensorDriver(instance, cursor=before.cursor)
    assert [r.partition_key for r in after.tick()] == ["pending"]
    assert after.tick() == []


def test_a_recopied_file_with_a_new_mtime_runs_again(instance, _isolated_data_root):
    folder = incoming(_isolated_data_root)
    driver = SensorDriver(instance)
    drop(folder, "m1", b"a" * 10)
    driver.tick()
    driver.tick()
    # Same size, new mtime: a local file has no checksum to compare, so a copy is new content.
    video = folder / "m1.mp4"
    stat = video.stat()
    os.utime(video, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert driver.tick() == []
    assert [r.partition_key for r in driver.tick()] == ["m1"]
