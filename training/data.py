"""Rendering the training set: randomized matches, encoded to H.264 and decoded back,
letterboxed exactly as the engine does, with foot points in model-input pixels.

    python -m training.data --out /tmp/footnet-data --clips 400

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

from gpu_analysis.batching import letterbox, letterbox_geometry
from gpu_analysis.synthetic import (
    H264Writer,
    MatchRenderer,
    default_look,
    preset_camera,
    random_look,
    random_side_camera,
)

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


def _pick(rng: np.random.Generator, choices):
    items, weights = zip(*choices, strict=True)
    return items[int(rng.choice(len(items), p=np.array(weights) / sum(weights)))]


def render_clip(seed: int, workdir: Path) -> dict:
    """Render one randomized clip and return its letterboxed frames and labels."""
    rng = np.random.default_rng([seed, 77])
    width, height = _pick(rng, RESOLUTIONS)
    family = _pick(rng, TRAIN_CAMERAS)
    camera = (
        random_side_camera(rng, width, height)
        if family == "random"
        else preset_camera(family, width, height)
    )
    look = default_look() if rng.random() < 0.15 else random_look(rng)
    renderer = MatchRenderer(
        seed=seed,
        n_frames=FRAMES_PER_CLIP * FRAME_GAP,
        fps=25.0,
        camera=camera,
        look=look,
        players_per_team=int(rng.integers(6, 13)),
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
        "camera": family,
        "resolution": [width, height],
    }


def _worker(args: tuple[int, str]) -> dict:
    seed, workdir = args
    return render_clip(seed, Path(workdir))


def build_dataset(out_dir: Path, clips: int, first_seed: int, processes: int) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    n_images = clips * FRAMES_PER_CLIP
    w, h = INPUT_WH
    images = np.lib.format.open_memmap(
        out_dir / "images.npy", mode="w+", dtype=np.uint8, shape=(n_images, h, w, 3)
    )
    feet, heights, targets, ids, cameras = [], [], [], [], []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, mp.get_context("fork").Pool(processes) as pool:
        jobs = [(first_seed + c, tmp) for c in range(clips)]
        for c, clip in enumerate(pool.imap(_worker, jobs)):
            base = c * FRAMES_PER_CLIP
            images[base : base + FRAMES_PER_CLIP] = clip["images"]
            feet.append(clip["feet_input_px"])
            heights.append(clip["height_input_px"])
            targets.append(clip["is_target"])
            ids.append(clip["image_in_clip"] + base)
            cameras.append(clip["camera"])
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
    )
    meta = {
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
    args = parser.parse_args()
    print(json.dumps(build_dataset(args.out, args.clips, args.first_seed, args.processes)))


if __name__ == "__main__":
    main()
