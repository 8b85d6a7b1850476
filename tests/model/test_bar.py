"""The built-in model's bar (issue 13): per camera family over six looks, each rule able to
fail, and the shipped card judged by it."""

from __future__ import annotations

import copy
import json

from gpu_analysis.engine.inference import BUILTIN_MODEL
from training.evaluate import judge_bar

LOOKS = [
    {"seed": 1, "crf": 23, "blur_sigma_px": 0.0, "motion_blur_px": 0},
    {"seed": 2, "crf": 32, "blur_sigma_px": 1.3, "motion_blur_px": 6},  # documented limit
    {"seed": 3, "crf": 32, "blur_sigma_px": 0.0, "motion_blur_px": 0},  # compression alone
]


def _row(recall, precision=(0.95, 0.95, 0.95), maps=(0.99, 0.99, 0.99)) -> dict:
    return {
        "mean_precision": sum(precision) / 3,
        "mean_recall": sum(recall) / 3,
        "min_map_correlation": min(maps),
        "precision_per_look": list(precision),
        "recall_per_look": list(recall),
        "map_correlation_per_look": list(maps),
    }


def _judge(camera: str, row: dict) -> dict:
    return judge_bar({"looks": LOOKS, camera: row})[camera]


def test_each_rule_fails_on_its_own() -> None:
    assert _judge("broadcast", _row((0.95, 0.95, 0.95)))["passes"]
    assert _judge("broadcast", _row((0.95, 0.88, 0.86)))["failures"] == ["mean recall 0.8967 < 0.9"]
    worst = _judge("broadcast", _row((0.99, 0.99, 0.74)))
    assert worst["failures"] == ["worst-look recall 0.7400 < 0.75"]
    low_map = _judge("corner", _row((0.95, 0.95, 0.95), maps=(0.99, 0.99, 0.94)))
    assert low_map["failures"] == ["map correlation 0.9400 < 0.95"]
    precision = _judge("corner", _row((0.95, 0.95, 0.95), precision=(0.9, 0.85, 0.9)))
    assert precision["failures"] == ["mean precision 0.8833 < 0.9"]


def test_the_degraded_small_player_look_is_a_limit_only_on_the_tactical_view() -> None:
    row = _row((0.95, 0.70, 0.95), maps=(0.99, 0.94, 0.99))
    row["mean_recall"] = 0.95  # judge the floor and the map rule alone
    tactical = _judge("tactical", row)
    assert tactical["passes"] and tactical["documented_limit_looks"] == [2]
    corner = _judge("corner", copy.deepcopy(row))
    assert not corner["passes"] and corner["documented_limit_looks"] == []


def test_the_shipped_card_records_its_verdict() -> None:
    card = json.loads(BUILTIN_MODEL.with_suffix(".json").read_text())
    verdict = judge_bar(card["robustness"])
    assert set(verdict) == {"tactical", "broadcast", "behind_goal", "corner"}
    # What docs/model.md says: the end-on view misses the bar on mean recall, the tactical view
    # on one look's map; the limit look (9501) is left out of the tactical view only.
    assert verdict["behind_goal"]["failures"] == ["mean recall 0.8985 < 0.9"]
    assert verdict["tactical"]["failures"] == ["map correlation 0.9463 < 0.95"]
    assert verdict["tactical"]["documented_limit_looks"] == [9501]
    assert card["robustness"]["bar"] == verdict
    assert verdict["broadcast"]["passes"] and verdict["corner"]["passes"]
