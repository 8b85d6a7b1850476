"""Records that cross a process boundary survive their one JSON form, and bad ones are named."""

from __future__ import annotations

import pytest

from gpu_analysis.engine.records import (
    InferParams,
    PreprocessParams,
    PreprocessSummary,
    VideoFacts,
    as_plain,
    from_json,
    from_plain,
    to_json,
)

FACTS = VideoFacts("s3://b/incoming/m1.mp4", 25.0, 150, 6.0, 1280, 720, "h264", 1_234_567)


def test_a_nested_summary_round_trips_through_json():
    summary = PreprocessSummary(
        video=FACTS,
        sample_fps=5.0,
        sampled_frames=30,
        frames_decoded=150,
        frames_lost=0,
        shards=4,
        shard_bytes=29_000_000,
        bytes_per_frame=966_666.7,
        input_size=(768, 432),
        decode_s=0.8,
        preprocess_s=0.4,
        total_s=1.2,
    )
    back = from_json(PreprocessSummary, to_json(summary))
    assert back == summary
    assert isinstance(back.video, VideoFacts) and back.input_size == (768, 432)


def test_step_parameters_take_their_defaults_and_coerce_numbers():
    params = from_plain(
        PreprocessParams, {"video_uri": "v.mp4", "shards_uri": "s", "sample_fps": "2"}
    )
    assert params.sample_fps == 2.0 and params.batch_size == 8 and params.model == "builtin"
    assert from_plain(InferParams, as_plain(InferParams("s", "d"))).calibration_uri is None


def test_a_missing_field_is_named():
    with pytest.raises(ValueError, match="PreprocessParams: missing field 'shards_uri'"):
        from_plain(PreprocessParams, {"video_uri": "v.mp4"})
    with pytest.raises(ValueError, match="expected an object"):
        from_plain(InferParams, ["s", "d"])
