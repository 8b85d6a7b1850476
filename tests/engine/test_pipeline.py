"""The stage list drives both ways of running a match: the split steps and the fused analyze."""

from __future__ import annotations

import numpy as np

from gpu_analysis.engine import steps
from gpu_analysis.engine.detections import Detections


def test_the_stages_are_listed_once_in_match_order():
    assert [(s.name, s.step) for s in steps.STAGES] == [
        ("decode", "preprocess"),
        ("detect", "infer"),
        ("aggregate", "aggregate"),
    ]


def test_a_new_stage_is_one_entry_and_runs_in_the_split_steps_and_in_analyze(
    clip, models, tmp_path, monkeypatch
):
    calls: list[str] = []

    def attacking_half_only(detections: Detections, run: steps.MatchRun) -> Detections:
        calls.append("ran")
        return detections.select(detections.positions_m[:, 0] >= run.calibration.length_m / 2)

    stages = list(steps.STAGES)
    stages.insert(2, steps.Stage("attacking_half", "infer", attacking_half_only))
    monkeypatch.setattr(steps, "STAGES", tuple(stages))
    model = str(models["kit"])

    steps.analyze(clip.video, clip.calibration, tmp_path / "fused", model=model, sample_fps=2.0)
    pre = steps.preprocess(str(clip.video), str(tmp_path / "shards"), model=model, sample_fps=2.0)
    steps.infer(
        str(tmp_path / "shards"),
        str(tmp_path / "det"),
        model=model,
        calibration_path=clip.calibration,
    )
    steps.aggregate(
        str(tmp_path / "det"), clip.calibration, tmp_path / "split", video_facts=pre.video
    )

    assert calls == ["ran", "ran"]
    for out in ("fused", "split"):
        heat = np.load(tmp_path / out / "temperature_map.npy")
        assert heat.sum() > 0.99, out
        assert heat[:, :52].sum() == 0.0, f"{out}: the new stage did not run"
    # (The two paths' maps are not compared here: the split steps see the frames through JPEG
    # shards, and this crude colour model reads them differently; tests/engine/test_shards.py
    # compares them with the built-in model.)
