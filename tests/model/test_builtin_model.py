"""The shipped heat-map model: its interface, and its accuracy on held-out rendered clips
measured through the engine (decode, letterbox, ONNX adapter, peak decoder, calibration)."""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from gpu_analysis.engine.inference import BUILTIN_MODEL, decode_heatmap
from training.evaluate import HeldOutClip, evaluate

# Short versions of the model card's held-out clips (other seeds, never used in training;
# "corner" and "behind_goal" are camera families the training set does not contain).
CI_CLIPS = (
    HeldOutClip("tactical-default", 9101, "tactical", None, duration_s=3.0),
    HeldOutClip("broadcast-random", 9102, "broadcast", "random", duration_s=3.0),
    HeldOutClip("corner-random", 9104, "corner", "random", duration_s=3.0),
)
# The low end-on camera is the model's known weak spot (docs/model.md): at the far end of the
# pitch 1 m of depth is about 1.3 px of a 720p frame. It is held to what it reaches today,
# below issue 4's 0.9, so that a regression shows; the card reports it as not meeting the bar.
BEHIND_GOAL = HeldOutClip("behind_goal-random", 9103, "behind_goal", "random", duration_s=3.0)
BEHIND_GOAL_FLOOR = 0.82
# The other known weak spot: a look at the hard end of the randomization (CRF 32, 1.3 px blur,
# 6 px camera shake, noise 6.5) with the tactical view's 10-13 px players. Held to its level
# today (precision 0.80, recall 0.79, map 0.91 on this 3 s clip), far below issue 4's bar.
DEGRADED = HeldOutClip("tactical-look-9501", 9501, "tactical", "random", duration_s=3.0)
DEGRADED_FLOOR, DEGRADED_MAP_FLOOR = 0.72, 0.85


@pytest.fixture(scope="module")
def held_out():
    return evaluate(BUILTIN_MODEL, clips=CI_CLIPS)


def test_model_file_interface():
    assert BUILTIN_MODEL.stat().st_size <= 5 * 1024 * 1024
    proto = onnx.load(str(BUILTIN_MODEL))
    onnx.checker.check_model(proto)
    assert proto.ir_version == 10
    assert any(o.domain in ("", "ai.onnx") and o.version == 17 for o in proto.opset_import)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["gpu_analysis.format"] == "heatmap"
    assert meta["gpu_analysis.name"].startswith("footnet")
    stride = int(meta["gpu_analysis.stride"])
    assert 0 < float(meta["gpu_analysis.threshold"]) < 1

    session = ort.InferenceSession(str(BUILTIN_MODEL), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.name == "images" and inp.type == "tensor(float)"
    _, channels, height, width = inp.shape
    assert channels == 3 and isinstance(height, int) and isinstance(width, int)
    # Dynamic batch, sigmoid output on the stride grid.
    x = np.full((3, 3, height, width), 114 / 255, np.float32)
    out = session.run(None, {"images": x})[0]
    assert out.shape == (3, 1, height // stride, width // stride)
    assert out.min() >= 0 and out.max() <= 1
    # A plain grey frame has no players.
    assert len(decode_heatmap(out[0, 0], float(meta["gpu_analysis.threshold"]))[0]) == 0


def test_held_out_precision_recall_and_map(held_out):
    for clip in held_out["clips"]:
        assert clip["sampled_frames"] == 15, clip
        assert clip["precision"] >= 0.9, clip
        assert clip["recall"] >= 0.9, clip
        assert clip["map_correlation"] >= 0.9, clip
        assert not math.isnan(clip["mean_error_m"])


def test_players_12_px_tall_are_found(held_out):
    """The tactical 1280x720 view puts every player at 10-12.5 px tall."""
    tactical = held_out["clips"][0]
    assert tactical["player_height_px"][1] <= 14.0
    assert tactical["small_players"] >= 200
    assert tactical["small_player_recall"] >= 0.9, tactical


def test_behind_goal_view_holds_its_known_level():
    (clip,) = evaluate(BUILTIN_MODEL, clips=(BEHIND_GOAL,))["clips"]
    assert clip["precision"] >= BEHIND_GOAL_FLOOR, clip
    assert clip["recall"] >= BEHIND_GOAL_FLOOR, clip
    assert clip["map_correlation"] >= 0.9, clip


def test_heavily_degraded_look_holds_its_known_level():
    (clip,) = evaluate(BUILTIN_MODEL, clips=(DEGRADED,))["clips"]
    assert clip["precision"] >= DEGRADED_FLOOR, clip
    assert clip["recall"] >= DEGRADED_FLOOR, clip
    assert clip["map_correlation"] >= DEGRADED_MAP_FLOOR, clip
