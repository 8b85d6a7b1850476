"""What the machine refuses a GPU worker fails its step once, with one line and no partial files."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from gpu_analysis.engine.records import PreprocessParams
from gpu_analysis.profile import load_profile
from tests.emulators.aws import deny_reads
from tests.match.conftest import BUCKET
from tests.tmpfs import mounted_tmpfs
from video_assets.resources import GpuWorkers


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s at 25 fps: every frame sampled gives 7 shards of about 150 kB at 320x192."""
    from gpu_analysis.synthetic import generate_match_clip

    video = tmp_path_factory.mktemp("clip") / "m1.mp4"
    generate_match_clip(video, seed=5, duration_s=2.0, fps=25.0, width=640, height=360)
    return video


def _preprocess_with_retries(instance: dg.DagsterInstance, params: PreprocessParams):
    """Run the real preprocessing worker as a step that may be retried three times."""
    workers = GpuWorkers.from_profile(load_profile("local"))

    @dg.asset(retry_policy=dg.RetryPolicy(max_retries=3))
    def frames(context) -> dg.MaterializeResult:
        return workers.run(context, "preprocess", params)

    return dg.materialize([frames], instance=instance, raise_on_error=False)


def _failed_once_with(result) -> str:
    """The step's one failure message, after checking that it was not retried."""
    assert not result.success
    retried = [
        e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY
    ]
    assert retried == []
    [failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    message = failure.step_failure_data.user_failure_data.description
    assert message.startswith("error: ") and "\n" not in message
    return message


def test_full_disk_in_preprocessing_fails_once_and_leaves_no_shards(
    instance, tmp_path, clip, heatmap_model
):
    # 384 KiB: two shards fit, the third does not.
    with mounted_tmpfs(tmp_path / "disk", 384 << 10) as disk:
        params = PreprocessParams(
            video_uri=str(clip),
            shards_uri=str(disk / "shards"),
            sample_fps=25.0,
            model=str(heatmap_model),
        )
        message = _failed_once_with(_preprocess_with_retries(instance, params))
        assert message.startswith(f"error: {disk / 'shards.partial'}/shard-")
        assert "No space left on device; free some space" in message
        assert list(disk.iterdir()) == []  # neither the shards written so far nor a scratch folder


def test_denied_s3_read_in_preprocessing_fails_once(instance, s3_staging, clip, heatmap_model):
    s3_staging.upload_file(str(clip), BUCKET, "incoming/m1.mp4")
    deny_reads(s3_staging, BUCKET, "incoming/")
    params = PreprocessParams(
        video_uri=f"s3://{BUCKET}/incoming/m1.mp4",
        shards_uri=f"s3://{BUCKET}/work/m1/shards",
        model=str(heatmap_model),
    )
    message = _failed_once_with(_preprocess_with_retries(instance, params))
    assert message.startswith(f"error: s3://{BUCKET}/incoming/m1.mp4: S3 refused the read (403")
    assert "bucket policy" in message
    assert s3_staging.list_objects_v2(Bucket=BUCKET, Prefix="work/").get("KeyCount") == 0
