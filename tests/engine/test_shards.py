"""The shards between the preprocess and infer steps: size, fidelity, determinism, old formats."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gpu_analysis.engine import shards, steps, storage
from gpu_analysis.engine.batching import PAD_VALUE
from gpu_analysis.engine.errors import UserError
from gpu_analysis.synthetic.scoring import map_correlation


def test_shards_are_10x_smaller_than_frames_and_give_the_raw_frames_map(clip, tmp_path: Path):
    """The built-in model through the split steps, against `analyze` on the same clip, which
    feeds the model the letterboxed frames themselves and never writes shards."""
    pre = steps.preprocess(str(clip.video), str(tmp_path / "shards"), sample_fps=5.0)
    w, h = pre.input_size
    assert pre.bytes_per_frame * 10 <= w * h * 3, pre.bytes_per_frame
    stored = sum(p.stat().st_size for p in (tmp_path / "shards").glob("shard-*.npz"))
    assert pre.shard_bytes == stored and pre.shards == 4 and pre.sampled_frames == 30

    steps.infer(str(tmp_path / "shards"), str(tmp_path / "det"), calibration_path=clip.calibration)
    steps.aggregate(
        str(tmp_path / "det"), clip.calibration, tmp_path / "split",
        video_facts=steps.probe(clip.video),
    )  # fmt: skip
    steps.analyze(clip.video, clip.calibration, tmp_path / "fused", sample_fps=5.0)
    split_map = np.load(tmp_path / "split" / "temperature_map.npy")
    fused_map = np.load(tmp_path / "fused" / "temperature_map.npy")
    assert fused_map.std() > 0
    assert map_correlation(split_map, fused_map) >= 0.995


def test_shards_are_deterministic_and_keep_the_pad_exact(clip, models, tmp_path: Path):
    """A retried preprocess writes the same bytes; the pad around the picture is restored exactly
    and the picture stays close to the letterboxed frame."""
    model = str(models["kit"])  # 640x384: a 16:9 clip gets 12 rows of pad above and below
    for name in ("first", "retry"):
        steps.preprocess(str(clip.video), str(tmp_path / name), model=model)
    shard_names = sorted(p.name for p in (tmp_path / "first").glob("shard-*.npz"))
    assert len(shard_names) == 4
    for name in shard_names:
        assert (tmp_path / "first" / name).read_bytes() == (tmp_path / "retry" / name).read_bytes()

    manifest = shards.read_manifest(str(tmp_path / "first"))
    batches = list(shards.iter_shards(str(tmp_path / "first"), manifest))
    g = batches[0].geometry
    assert g.pad_y == 12 and g.resized_h == 360
    images = np.concatenate([b.images_rgb for b in batches])
    assert images.shape == (30, 384, 640, 3)
    assert (images[:, : g.pad_y] == PAD_VALUE).all()
    assert (images[:, g.pad_y + g.resized_h :] == PAD_VALUE).all()
    again = np.concatenate(
        [b.images_rgb for b in shards.iter_shards(str(tmp_path / "retry"), manifest)]
    )
    assert np.array_equal(images, again)

    run = steps.MatchRun(facts=steps.probe(clip.video), geometry=g, sample_fps=5.0)
    frames = np.concatenate([b.images_rgb for b in steps.run_stages("preprocess", run.facts, run)])
    picture = np.s_[:, g.pad_y : g.pad_y + g.resized_h]
    squared_error = (images[picture].astype(np.float64) - frames[picture]) ** 2
    psnr_db = 10 * np.log10(255**2 / squared_error.mean())
    assert 28.0 <= psnr_db < 60.0, psnr_db  # lossy, but close (about 30 dB at quality 85)
    assert [int(i) for b in batches for i in b.frame_index] == list(range(0, 150, 5))


def test_shards_in_the_old_raw_format_are_refused(models, tmp_path: Path):
    """Shards written before the JPEG format (raw frames, format 1) name the step to rerun."""
    folder = tmp_path / "shards"
    folder.mkdir()
    (folder / "shard-000000.npz").write_bytes(
        storage.npz_bytes(
            {
                "images_rgb": np.full((2, 384, 640, 3), PAD_VALUE, np.uint8),
                "frame_index": np.array([0, 5]),
                "timestamp_s": np.array([0.0, 0.2]),
            }
        )
    )
    (folder / "manifest.json").write_text(
        json.dumps({"format": "gpu-analysis-shards/1", "shards": 1, "batch_size": 8})
    )
    with pytest.raises(UserError) as refused:
        steps.infer(str(folder), str(tmp_path / "det"), model=str(models["kit"]))
    message = str(refused.value)
    assert "\n" not in message
    assert "'gpu-analysis-shards/1'" in message and "rerun the preprocess step" in message
    assert not (tmp_path / "det").exists()
