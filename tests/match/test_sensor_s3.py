"""`match_video_sensor` on the staging profile: s3://<bucket>/incoming/ on a moto server."""

from __future__ import annotations

import json
import time

from tests.match.conftest import BUCKET
from tests.match.sensor_ticks import SensorDriver
from video_assets import sensors

CALIBRATION = b'{"pitch": {"length_m": 105, "width_m": 68}}'


def put_match(client, match_id: str, payload: bytes, *, calibration: bool = True) -> None:
    client.put_object(Bucket=BUCKET, Key=f"incoming/{match_id}.mp4", Body=payload)
    if calibration:
        client.put_object(
            Bucket=BUCKET, Key=f"incoming/{match_id}.calibration.json", Body=CALIBRATION
        )


def test_new_object_gives_one_run_and_the_same_object_none(s3_staging, instance):
    driver = SensorDriver(instance)
    put_match(s3_staging, "m1", b"video" * 100)
    runs = driver.tick()  # an S3 object is listed only once complete: no settling tick
    assert [r.partition_key for r in runs] == ["m1"]
    assert instance.get_dynamic_partitions("matches") == ["m1"]
    assert driver.tick() == []
    # Put again with the same bytes: same ETag, same content version, no new run.
    put_match(s3_staging, "m1", b"video" * 100)
    assert driver.tick() == []


def test_replaced_object_gives_a_new_run(s3_staging, instance):
    driver = SensorDriver(instance)
    put_match(s3_staging, "m1", b"first cut" * 100)
    [first] = driver.tick()
    put_match(s3_staging, "m1", b"other cut" * 100, calibration=False)  # the same size
    [second] = driver.tick()
    assert second.partition_key == "m1"
    assert second.run_key != first.run_key
    assert driver.tick() == []


def test_suffixes_match_in_any_case_and_the_run_names_the_objects(s3_staging, instance):
    driver = SensorDriver(instance)
    s3_staging.put_object(Bucket=BUCKET, Key="incoming/M1.MP4", Body=b"video" * 100)
    s3_staging.put_object(Bucket=BUCKET, Key="incoming/M1.Calibration.JSON", Body=CALIBRATION)
    [run] = driver.tick()
    assert run.partition_key == "M1"
    video_etag = s3_staging.head_object(Bucket=BUCKET, Key="incoming/M1.MP4")["ETag"]
    calibration_etag = s3_staging.head_object(Bucket=BUCKET, Key="incoming/M1.Calibration.JSON")[
        "ETag"
    ]
    version = sensors.match_version(video_etag.strip('"'), calibration_etag.strip('"'))
    assert run.run_key == f"M1@{version}"
    assert run.tags["gpu-analysis/video"] == f"s3://{BUCKET}/incoming/M1.MP4"
    assert run.tags["gpu-analysis/calibration"] == f"s3://{BUCKET}/incoming/M1.Calibration.JSON"
    assert run.tags["gpu-analysis/version"] == version
    assert driver.tick() == []


def test_cursor_of_the_previous_sensor_version_repeats_no_match(s3_staging, instance):
    put_match(s3_staging, "m1", b"video" * 100)
    etags = [
        s3_staging.head_object(Bucket=BUCKET, Key=f"incoming/m1{suffix}")["ETag"].strip('"')
        for suffix in (".mp4", ".calibration.json")
    ]
    # What the sensor before content hashing stored after submitting m1 (cursor version 1).
    old_cursor = json.dumps(
        {"v": 1, "seen": {}, "submitted": {"m1": sensors.match_version(*etags)}, "rejected": []}
    )
    driver = SensorDriver(instance, cursor=old_cursor)
    assert driver.tick() == []
    put_match(s3_staging, "m1", b"video, re-encoded" * 100)
    assert [r.partition_key for r in driver.tick()] == ["m1"]


def test_upload_in_progress_gives_no_run_until_complete(s3_staging, instance):
    driver = SensorDriver(instance)
    s3_staging.put_object(Bucket=BUCKET, Key="incoming/m1.calibration.json", Body=CALIBRATION)
    upload = s3_staging.create_multipart_upload(Bucket=BUCKET, Key="incoming/m1.mp4")
    part = s3_staging.upload_part(
        Bucket=BUCKET,
        Key="incoming/m1.mp4",
        UploadId=upload["UploadId"],
        PartNumber=1,
        Body=b"p" * (5 * 1024 * 1024),
    )
    assert driver.tick() == []
    assert driver.tick() == []
    s3_staging.complete_multipart_upload(
        Bucket=BUCKET,
        Key="incoming/m1.mp4",
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]},
    )
    assert [r.partition_key for r in driver.tick()] == ["m1"]


def test_video_without_calibration_waits_for_it(s3_staging, instance):
    driver = SensorDriver(instance)
    put_match(s3_staging, "m1", b"v" * 10, calibration=False)
    assert driver.tick() == []
    assert instance.get_dynamic_partitions("matches") == []
    s3_staging.put_object(Bucket=BUCKET, Key="incoming/m1.calibration.json", Body=CALIBRATION)
    assert [r.partition_key for r in driver.tick()] == ["m1"]


def test_unsafe_keys_are_skipped(s3_staging, instance):
    driver = SensorDriver(instance)
    for bad in ("with space", "sub/dir", "_underscore-first"):
        put_match(s3_staging, bad, b"v")
    put_match(s3_staging, "ok-1", b"v")
    assert [r.partition_key for r in driver.tick()] == ["ok-1"]


def test_500_objects_one_tick_under_two_seconds(s3_staging, instance):
    driver = SensorDriver(instance)
    assert driver.tick() == []  # a running sensor: its process has ticked before
    for n in range(250):
        put_match(s3_staging, f"match-{n:03d}", f"video {n}".encode())
    started = time.perf_counter()
    runs = driver.tick()
    elapsed_s = time.perf_counter() - started
    assert len(runs) == 250
    assert len({r.run_key for r in runs}) == 250
    assert len(instance.get_dynamic_partitions("matches")) == 250
    assert elapsed_s < 2.0, f"one tick over 500 objects took {elapsed_s:.2f} s"
    print(f"sensor tick over 500 objects: {elapsed_s:.3f} s")
    assert driver.tick() == []


def test_calibration_replaced_by_delete_and_put_starts_nothing_new(s3_staging, instance):
    driver = SensorDriver(instance)
    put_match(s3_staging, "m1", b"v" * 10)
    assert len(driver.tick()) == 1
    s3_staging.delete_object(Bucket=BUCKET, Key="incoming/m1.calibration.json")
    assert driver.tick() == []
    s3_staging.put_object(Bucket=BUCKET, Key="incoming/m1.calibration.json", Body=CALIBRATION)
    assert driver.tick() == []  # same bytes, same ETag: the same content version
