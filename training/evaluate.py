"""Measuring a heat-map model on held-out rendered clips, through the engine's own path:
decode and sample (video), letterbox and batch (batching), the ONNX adapter and its peak
decoder (inference), calibration to the pitch (calibration) and the map (accumulate).

    python -m training.evaluate [--model gpu_analysis/engine/models/builtin.onnx] [--write]
    python -m training.evaluate --looks [--write]    # four cameras under six looks (24 clips)
    python -m training.evaluate --sweep [--write]    # the peak threshold, on validation clips

No torch: tests/model runs the short version of this in CI.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpu_analysis.engine.accumulate import PitchGrid, temperature_map
from gpu_analysis.engine.batching import iter_batches, letterbox_geometry
from gpu_analysis.engine.calibration import load_calibration
from gpu_analysis.engine.inference import BUILTIN_MODEL, OnnxDetector
from gpu_analysis.engine.video import iter_sampled_frames, probe
from gpu_analysis.synthetic import calibration_path_for, generate_match_clip, random_look
from gpu_analysis.synthetic.scoring import MatchCounts, map_correlation, match_frame

MODEL = BUILTIN_MODEL


@dataclass(frozen=True)
class HeldOutClip:
    name: str
    seed: int  # never a training seed (those start at 100000)
    camera: str
    look: str | None  # None: the default look; "random": randomized from the seed
    duration_s: float = 8.0
    width: int = 1280
    height: int = 720


# "behind_goal" and "corner" are camera setups the training set never contains.
HELD_OUT = (
    HeldOutClip("tactical-default", 9001, "tactical", None),
    HeldOutClip("broadcast-random", 9002, "broadcast", "random"),
    HeldOutClip("behind_goal-random", 9003, "behind_goal", "random"),
    HeldOutClip("corner-default", 9004, "corner", None),
    HeldOutClip("tactical-random-1080p", 9005, "tactical", "random", width=1920, height=1080),
)


def evaluate_clip(
    detector: OnnxDetector,
    clip: HeldOutClip,
    workdir: Path,
    sample_fps: float = 5.0,
    max_distance_m: float = 1.0,
) -> dict:
    video = workdir / f"{clip.name}.mp4"
    truth = generate_match_clip(
        video,
        seed=clip.seed,
        duration_s=clip.duration_s,
        width=clip.width,
        height=clip.height,
        camera=clip.camera,
        look=clip.look,
    )
    calibration = load_calibration(calibration_path_for(video))
    facts = probe(video)
    geometry = letterbox_geometry((facts.width, facts.height), detector.input_wh)
    counts = MatchCounts()
    small = MatchCounts()  # players at most 12.5 px tall in the source frame
    detected_all, true_all = [], []
    infer_s = 0.0
    for batch in iter_batches(iter_sampled_frames(facts, sample_fps), geometry, 8):
        started = time.perf_counter()
        feet = detector.detect(batch)
        infer_s += time.perf_counter() - started
        for frame_index, frame_feet in zip(batch.frame_index, feet, strict=True):
            positions_m, on_pitch = calibration.project_to_pitch(frame_feet.foot_points_px)
            detected_m = positions_m[on_pitch]
            true_m = truth.positions_m[frame_index]
            visible = truth.visible[frame_index]
            counts.add(match_frame(detected_m, true_m, visible, max_distance_m))
            tiny = visible & (truth.height_px[frame_index] <= 12.5)
            # Small-player recall: only the tiny players count as wanted; detections of
            # others are neither hits nor misses here.
            small_counts = match_frame(detected_m, true_m, tiny, max_distance_m)
            small.true_positives += small_counts.true_positives
            small.false_negatives += small_counts.false_negatives
            detected_all.append(detected_m)
            true_all.append(true_m[visible])
    grid = PitchGrid(105.0, 68.0, 1.0)
    detected_map = temperature_map(np.concatenate(detected_all), grid)
    true_map = temperature_map(np.concatenate(true_all), grid)
    visible_heights = truth.height_px[truth.visible]
    return {
        "clip": clip.name,
        "camera": clip.camera,
        "look": clip.look or "default",
        "size": [clip.width, clip.height],
        "sampled_frames": len(true_all),
        "player_height_px": [
            round(float(visible_heights.min()), 1),
            round(float(visible_heights.max()), 1),
        ],
        "precision": round(counts.precision, 4),
        "recall": round(counts.recall, 4),
        "mean_error_m": round(counts.mean_error_m, 3),
        "map_correlation": round(map_correlation(detected_map, true_map), 4),
        "small_players": small.true_positives + small.false_negatives,
        "small_player_recall": round(small.recall, 4),
        "infer_frames_per_s": round(len(true_all) / infer_s, 1),
    }


# For choosing the peak threshold: training's camera families, seeds of neither set.
VALIDATION = (
    HeldOutClip("val-tactical", 8001, "tactical", "random", duration_s=4.0),
    HeldOutClip("val-broadcast", 8002, "broadcast", "random", duration_s=4.0),
    HeldOutClip("val-wide-default", 8003, "wide", None, duration_s=4.0),
    HeldOutClip("val-tactical-1080p", 8004, "tactical", None, 4.0, 1920, 1080),
)


def sweep_threshold(model: Path, thresholds=(0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5)) -> dict:
    """F1 on the validation clips per peak threshold (the model's threshold is chosen here,
    never on the held-out clips)."""
    out = {}
    for threshold in thresholds:
        result = evaluate(model, VALIDATION, threshold=threshold)
        counts = [(c["precision"], c["recall"]) for c in result["clips"]]
        p = float(np.mean([c[0] for c in counts]))
        r = float(np.mean([c[1] for c in counts]))
        out[str(threshold)] = {"precision": round(p, 4), "recall": round(r, 4),
                               "f1": round(2 * p * r / max(p + r, 1e-9), 4)}  # fmt: skip
        print(threshold, out[str(threshold)], flush=True)
    return out


def evaluate(
    model: Path, clips=HELD_OUT, sample_fps: float = 5.0, threshold: float | None = None
) -> dict:
    detector = OnnxDetector(str(model), device="cpu")
    if threshold is not None:
        detector.threshold = threshold
    with tempfile.TemporaryDirectory() as tmp:
        per_clip = [evaluate_clip(detector, c, Path(tmp), sample_fps) for c in clips]
    return {
        "max_distance_m": 1.0,
        "sample_fps": sample_fps,
        "threshold": detector.threshold,
        "min_precision": min(c["precision"] for c in per_clip),
        "min_recall": min(c["recall"] for c in per_clip),
        "min_map_correlation": min(c["map_correlation"] for c in per_clip),
        "clips": per_clip,
    }


# Four camera setups (two of them not in training) under the same six random looks each, seeds
# of neither set: a look alone moves recall by up to 0.25 (compression, blur, camera shake,
# noise), so the card reports the spread, not only the five clips above.
LOOK_SEEDS = range(9500, 9506)
ROBUSTNESS = tuple(
    HeldOutClip(f"{camera}-random-{seed}", seed, camera, "random")
    for camera in ("tactical", "broadcast", "behind_goal", "corner")
    for seed in LOOK_SEEDS
)


def describe_look(seed: int) -> dict:
    """What degrades a random look's picture (generate_match_clip draws it from [seed, 2])."""
    look = random_look(np.random.default_rng([seed, 2]))
    return {
        "seed": seed,
        "crf": look.crf,
        "blur_sigma_px": round(look.blur_sigma_px, 2),
        "motion_blur_px": look.motion_blur_px,
        "noise_sigma": round(look.noise_sigma, 1),
        "shadow_strength": round(look.shadow_strength, 2),
    }


def robustness(model: Path) -> dict:
    """Per camera: mean and worst precision, recall and map correlation over the looks."""
    result = evaluate(model, ROBUSTNESS)
    out = {
        "clips": len(ROBUSTNESS),
        "looks": [describe_look(seed) for seed in LOOK_SEEDS],
    }
    for camera in sorted({c.camera for c in ROBUSTNESS}):
        rows = [c for c in result["clips"] if c["camera"] == camera]
        out[camera] = {
            f"{stat}_{key}": round(float(fn([c[key] for c in rows])), 4)
            for key in ("precision", "recall", "map_correlation")
            for stat, fn in (("mean", np.mean), ("min", np.min))
        }
        for key in ("precision", "recall", "map_correlation"):
            out[camera][f"{key}_per_look"] = [c[key] for c in rows]
        print(camera, json.dumps(out[camera]), flush=True)
    out["bar"] = judge_bar(out)
    return out


# The built-in model's bar (issue 13, decided): per camera family, over the six looks, mean
# precision and mean recall within 1 m >= 0.9 each, map correlation >= 0.95 on every clip, and
# recall >= 0.75 on the worst look. The looks with CRF >= 32 compression plus blur or camera
# shake on a camera whose players are 10-13 px tall (the tactical view at 1280x720) are a
# documented limit (docs/model.md, "Known limits"), not part of the bar.
BAR = {"mean_precision": 0.9, "mean_recall": 0.9, "map_correlation": 0.95, "worst_recall": 0.75}
SMALL_PLAYER_CAMERAS = ("tactical",)


def is_documented_limit(camera: str, look: dict) -> bool:
    degraded = look["crf"] >= 32 and (look["blur_sigma_px"] > 0 or look["motion_blur_px"] > 0)
    return degraded and camera in SMALL_PLAYER_CAMERAS


def judge_bar(robustness: dict) -> dict:
    """Each camera family against BAR: {"passes": bool, "failures": [...]} per camera.

    A record made before the per-look map correlations were kept is judged on its worst clip
    for the map (stricter: the documented-limit looks cannot be left out) and says so.
    """
    verdict = {}
    looks = robustness["looks"]
    for camera, row in robustness.items():
        if not isinstance(row, dict) or "recall_per_look" not in row:
            continue
        counted = [not is_documented_limit(camera, look) for look in looks]
        failures = []
        for key in ("precision", "recall"):
            if row[f"mean_{key}"] < BAR[f"mean_{key}"]:
                failures.append(f"mean {key} {row[f'mean_{key}']:.4f} < {BAR[f'mean_{key}']}")
        recalls = [r for r, c in zip(row["recall_per_look"], counted, strict=True) if c]
        if min(recalls) < BAR["worst_recall"]:
            failures.append(f"worst-look recall {min(recalls):.4f} < {BAR['worst_recall']}")
        maps = row.get("map_correlation_per_look")
        note = None
        if maps is None:
            maps, note = [row["min_map_correlation"]], "per-look map correlation not recorded"
        else:
            maps = [m for m, c in zip(maps, counted, strict=True) if c]
        if min(maps) < BAR["map_correlation"]:
            failures.append(f"map correlation {min(maps):.4f} < {BAR['map_correlation']}")
        verdict[camera] = {
            "passes": not failures,
            "failures": failures,
            "documented_limit_looks": [
                look["seed"] for look, c in zip(looks, counted, strict=True) if not c
            ],
            **({"note": note} if note else {}),
        }
    return verdict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=MODEL)
    parser.add_argument("--write", action="store_true", help="record into the model's .json")
    parser.add_argument("--sweep", action="store_true", help="threshold sweep on validation")
    parser.add_argument(
        "--looks", action="store_true", help="four cameras (two unseen) under six random looks"
    )
    args = parser.parse_args()
    if args.sweep:
        key, result = "threshold_sweep", sweep_threshold(args.model)
    elif args.looks:
        key, result = "robustness", robustness(args.model)
    else:
        key, result = "evaluation", evaluate(args.model)
    print(json.dumps(result, indent=2))
    if args.write:
        card_path = args.model.with_suffix(".json")
        card = json.loads(card_path.read_text()) if card_path.exists() else {}
        card[key] = result
        card_path.write_text(json.dumps(card, indent=2) + "\n")


if __name__ == "__main__":
    main()
