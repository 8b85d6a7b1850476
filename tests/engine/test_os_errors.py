"""What the machine refuses, through the CLI: exit 2, one `error:` line, nothing partial left."""

from __future__ import annotations

import os
from pathlib import Path

from tests.emulators.aws import deny_reads
from tests.engine.conftest import Clip, run_cli
from tests.tmpfs import mounted_tmpfs


def _analyze(clip: Clip, out: Path, video: str | None = None):
    video = video or clip.video
    return run_cli("analyze", video, "--calibration", clip.calibration, "--out", out)


def _one_error_line(result) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_out_may_be_a_mount_point(short_clip, tmp_path):
    # Staged beside it, the outputs could be neither renamed over a mount point nor moved
    # across to it: EXDEV, exit 1 with a traceback.
    with mounted_tmpfs(tmp_path / "mnt", 16 << 20) as out:
        result = _analyze(short_clip, out)
        assert result.returncode == 0, result.stdout + result.stderr
        names = sorted(p.name for p in out.iterdir())
        assert "report.json" in names and "temperature_map.npy" in names
        assert not [n for n in names if n.startswith(".")]  # no staging folder left
        umask = os.umask(0o022)
        os.umask(umask)
        assert {(out / n).stat().st_mode & 0o777 for n in names} == {0o666 & ~umask}


def test_out_through_a_symbolic_link_loop_is_one_error_line(short_clip, tmp_path):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    line = _one_error_line(_analyze(short_clip, loop))
    assert line.startswith(f"error: {loop}: ") and "Too many levels of symbolic links" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loop"]  # no staging folder left


def test_full_disk_under_out_is_one_error_line_and_leaves_nothing(short_clip, tmp_path):
    # 256 kB: the maps fit, the PNGs do not.
    with mounted_tmpfs(tmp_path / "disk", 256 << 10) as disk:
        line = _one_error_line(_analyze(short_clip, disk / "out"))
        assert line.startswith(f"error: {disk / 'out'}: ") and "No space left on device" in line
        assert list(disk.iterdir()) == []


def test_denied_s3_read_is_one_error_line(short_clip, moto_s3, tmp_path, monkeypatch):
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_s3)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    bucket = "engine-denied-reads"
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-3"})
    s3.upload_file(str(short_clip.video), bucket, "incoming/m1.mp4")
    deny_reads(s3, bucket, "incoming/")
    try:
        out = tmp_path / "out"
        line = _one_error_line(_analyze(short_clip, out, video=f"s3://{bucket}/incoming/m1.mp4"))
        assert line.startswith(f"error: s3://{bucket}/incoming/m1.mp4: S3 refused the read (403")
        assert "bucket policy" in line
        assert not out.exists()
    finally:
        s3.delete_bucket_policy(Bucket=bucket)
        s3.delete_object(Bucket=bucket, Key="incoming/m1.mp4")
        s3.delete_bucket(Bucket=bucket)
