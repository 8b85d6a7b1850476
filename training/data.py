"""Rendering the training set: randomized matches, encoded to H.264 and decoded back,
letterboxed exactly as the engine does, with foot points in model-input pixels.

    python -m training.data --out /tmp/footnet-data --clips 400
    python -m training.data --stage finetune --out /tmp/footnet-ft --clips 120 --first-seed 200000

The fine-tune stage (docs/model.md) adds crowded scenes seen from low, oblique side cameras
and the image positions of the pitch markings' junctions and arcs, around which the fine-tune
takes hard-negative crops.

No torch here: the set is plain numpy on disk (a memory-mapped uint8 image array plus the
labels), so rendering can run while something else trains.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from gpu_analysis.engine.batching import letterbox, letterbox_geometry
from gpu_analysis.synthetic import (
    Camera,
    H264Writer,
    MatchRenderer,
    default_look,
    preset_camera,
    random_look,
    random_side_camera,
)
from gpu_analysis.synthetic.camera import PITCH_LENGTH_M, PITCH_WIDTH_M, look_at

INPUT_WH = (768, 432)
FRAMES_PER_CLIP = 10
FRAME_GAP = 20  # frames between two rendered frames of one clip: different player layouts
# Players shorter than this in the model input are neither targets nor negatives.
MIN_TARGET_HEIGHT_INPUT_PX = 4.5
# Source resolutions and how often each is drawn: mostly 16:9, some 4:3 for the grey pad.
RESOLUTIONS = [
    ((1280, 720), 0.45),
    ((1920, 1080), 0.15),
    ((960, 540), 0.15),
    ((1024, 576), 0.1),
    ((1024, 768), 0.1),
    ((720, 576), 0.05),
]
# Camera families of the training set. "behind_goal" and "corner" are left out on purpose:
# the evaluation uses them as setups the model has never seen.
TRAIN_CAMERAS = [("random", 0.6), ("tactical", 0.15), ("broadcast", 0.15), ("wide", 0.1)]
# The fine-tune stage: half low, oblique side cameras on crowded scenes (players overlap and
# recede into depth), half the first stage's mix so that nothing is forgotten. Still no
# end-on and no corner cameras.
FINETUNE_CAMERAS = [
    ("low_side", 0.5),
    ("random", 0.3),
    ("tactical", 0.08),
    ("broadcast", 0.07),
    ("wide", 0.05),
]
STAGES = {"base": TRAIN_CAMERAS, "finetune": FINETUNE_CAMERAS}


def low_side_camera(rng: np.random.Generator, width: int, height: int) -> Camera:
    """A low camera on a long side, looking obliquely across and along the pitch at its far
    part: players line up in depth and overlap, far players are small and foreshortened."""
    side = rng.choice([-1.0, 1.0])
    height_m = rng.uniform(5.0, 22.0)
    back_m = rng.uniform(3.0, 30.0)
    x_m = rng.uniform(0.0, PITCH_LENGTH_M)
    pos = (x_m, -back_m if side < 0 else PITCH_WIDTH_M + back_m, height_m)
    # Aim at the far half of the pitch, often towards an end: long depth along the view.
    far_y = PITCH_WIDTH_M * (rng.uniform(0.45, 0.95) if side < 0 else rng.uniform(0.05, 0.55))
    target = (rng.uniform(0.0, PITCH_LENGTH_M), far_y, 0.0)
    rot = look_at(pos, target, roll_rad=rng.normal(0.0, 0.01))
    fov_deg = rng.uniform(30.0, 75.0)
    focal = width / 2.0 / np.tan(np.radians(fov_deg) / 2.0)
    return Camera(width, height, float(focal), tuple(float(v) for v in pos), rot)


def pitch_mark_points() -> np.ndarray:
    """Ground points (metres) on the pitch markings' corners, junctions and arcs: where the
    lines look most like a player's feet. The fine-tune centres hard-negative crops here."""
    length, width, cy = PITCH_LENGTH_M, PITCH_WIDTH_M, PITCH_WIDTH_M / 2
    pts = [(length / 2, 0.0), (length / 2, width), (length / 2, cy)]
    for cx, cyy in ((0, 0), (length, 0), (length, width), (0, width)):  # corner arcs
        sx, sy = (1 if cx == 0 else -1), (1 if cyy == 0 else -1)
        pts += [(cx, cyy), (cx + sx * 1.0, cyy), (cx, cyy + sy * 1.0)]
        pts += [(cx + sx * 0.71, cyy + sy * 0.71)]
    for x0, sign in ((0.0, 1.0), (length, -1.0)):
        for depth, half in ((16.5, 20.16), (5.5, 9.16)):  # box corners and where they meet
            pts += [(x0 + sign * depth, cy - half), (x0 + sign * depth, cy + half)]
            pts += [(x0, cy - half), (x0, cy + half)]
        spot = x0 + sign * 11.0
        pts.append((spot, cy))
        for a in np.linspace(-37.0, 37.0, 5):  # the penalty arc and its ends on the box
            r = np.radians(a)
            pts.append((spot + sign * 9.15 * np.cos(r), cy + 9.15 * np.sin(r)))
    for a in np.radians(np.arange(0, 360, 45)):  # the centre circle
        pts.append((length / 2 + 9.15 * np.cos(a), cy + 9.15 * np.sin(a)))
    return np.array([(x, y, 0.0) for x, y in pts])


MARK_POINTS_M = pitch_mark_points()


def _pick(rng: np.random.Generator, choices):
    items, weights = zip(*choices, strict=True)
    return items[int(rng.choice(len(items), p=np.array(weights) / sum(weights)))]


def render_clip(seed: int, workdir: Path, stage: str = "base") -> dict:
    """Render one randomized clip and return its letterboxed frames and labels."""
    rng = np.random.default_rng([seed, 77])
    width, height = _pick(rng, RESOLUTIONS)
    family = _pick(rng, STAGES[stage])
    if family == "random":
        camera = random_side_camera(rng, width, height)
    elif family == "low_side":
        camera = low_side_camera(rng, width, height)
    else:
        camera = preset_camera(family, width, height)
    look = default_look() if rng.random() < 0.15 else random_look(rng)
    # The fine-tune's scenes are crowded: full teams, so that players overlap more.
    low = 6 if stage == "base" else 10
    renderer = MatchRenderer(
        seed=seed,
        n_frames=FRAMES_PER_CLIP * FRAME_GAP,
        fps=25.0,
        camera=camera,
        look=look,
        players_per_team=int(rng.integers(low, 13)),
        goalkeepers=bool(rng.random() < 0.5),
    )
    indices = np.arange(FRAMES_PER_CLIP) * FRAME_GAP + int(rng.integers(0, FRAME_GAP))
    path = workdir / f"clip_{seed}.mp4"
    rendered = []
    with H264Writer(path, width, height, 25.0, crf=look.crf) as writer:
        for i in indices:
            frame = renderer.render(int(i))
            writer.write(frame.image_rgb)
            rendered.append(frame)
    cap = cv2.VideoCapture(str(path))
    geometry = letterbox_geometry((width, height), INPUT_WH)
    images, feet, heights, is_target, image_ids = [], [], [], [], []
    # Pitch-marking points in front of the camera and in the frame, in input pixels.
    mark_px = camera.project(MARK_POINTS_M)
    in_view = (
        (camera.depth_m(MARK_POINTS_M) > 0.5) & (mark_px[:, 0] >= 0) & (mark_px[:, 0] < width)
        & (mark_px[:, 1] >= 0) & (mark_px[:, 1] < height)
    )  # fmt: skip
    marks = geometry.to_input_px(mark_px[in_view]).astype(np.float32)
    for k, frame in enumerate(rendered):
        ok, decoded = cap.read()
        if not ok:
            raise RuntimeError(f"{path}: could not decode frame {k}")
        images.append(letterbox(decoded, geometry))
        foot_in = geometry.to_input_px(frame.foot_points_px)
        height_in = frame.height_px * geometry.scale
        x, y = frame.foot_points_px[:, 0], frame.foot_points_px[:, 1]
        # Feet just outside the frame still show a body at the border: no target, no negative.
        near_frame = (x > -12) & (x < width + 12) & (y > -12) & (y < height + 12)
        target = frame.visible & (height_in >= MIN_TARGET_HEIGHT_INPUT_PX)
        keep = near_frame | target
        feet.append(foot_in[keep])
        heights.append(height_in[keep])
        is_target.append(target[keep])
        image_ids.append(np.full(int(keep.sum()), k))
    cap.release()
    path.unlink()
    return {
        "images": np.stack(images),
        "feet_input_px": np.concatenate(feet).astype(np.float32),
        "height_input_px": np.concatenate(heights).astype(np.float32),
        "is_target": np.concatenate(is_target),
        "image_in_clip": np.concatenate(image_ids),
        "marks_input_px": marks,
        "camera": family,
        "resolution": [width, height],
    }


def _worker(args: tuple[int, str, str]) -> dict:
    seed, workdir, stage = args
    return render_clip(seed, Path(workdir), stage)


def build_dataset(
    out_dir: Path, clips: int, first_seed: int, processes: int, stage: str = "base"
) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    n_images = clips * FRAMES_PER_CLIP
    w, h = INPUT_WH
    images = np.lib.format.open_memmap(
        out_dir / "images.npy", mode="w+", dtype=np.uint8, shape=(n_images, h, w, 3)
    )
    feet, heights, targets, ids, cameras = [], [], [], [], []
    marks, mark_ids = [], []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, mp.get_context("fork").Pool(processes) as pool:
        jobs = [(first_seed + c, tmp, stage) for c in range(clips)]
        for c, clip in enumerate(pool.imap(_worker, jobs)):
            base = c * FRAMES_PER_CLIP
            images[base : base + FRAMES_PER_CLIP] = clip["images"]
            feet.append(clip["feet_input_px"])
            heights.append(clip["height_input_px"])
            targets.append(clip["is_target"])
            ids.append(clip["image_in_clip"] + base)
            cameras.append(clip["camera"])
            # The camera is static: every frame of the clip has the same marking points.
            for k in range(FRAMES_PER_CLIP):
                marks.append(clip["marks_input_px"])
                mark_ids.append(np.full(len(clip["marks_input_px"]), base + k))
            if (c + 1) % 20 == 0:
                rate = (c + 1) / (time.perf_counter() - started)
                print(f"{c + 1}/{clips} clips, {rate:.2f} clips/s", flush=True)
    images.flush()
    np.savez(
        out_dir / "labels.npz",
        feet_input_px=np.concatenate(feet),
        height_input_px=np.concatenate(heights),
        is_target=np.concatenate(targets),
        image_id=np.concatenate(ids),
        marks_input_px=np.concatenate(marks).reshape(-1, 2),
        mark_image_id=np.concatenate(mark_ids),
    )
    meta = {
        "stage": stage,
        "clips": clips,
        "images": n_images,
        "first_seed": first_seed,
        "input_wh": list(INPUT_WH),
        "frames_per_clip": FRAMES_PER_CLIP,
        "cameras": {k: cameras.count(k) for k in sorted(set(cameras))},
        "render_s": round(time.perf_counter() - started, 1),
    }
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2))
    return meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/footnet-data"))
    parser.add_argument("--clips", type=int, default=400)
    parser.add_argument("--first-seed", type=int, default=100_000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--stage", choices=sorted(STAGES), default="base")
    args = parser.parse_args()
    meta = build_dataset(args.out, args.clips, args.first_seed, args.processes, args.stage)
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
