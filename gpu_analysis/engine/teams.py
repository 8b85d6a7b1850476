"""Split detected players into two teams by the colour of their shirts (no learned weights)."""

from __future__ import annotations

import cv2
import numpy as np

# A torso pixel this far (RGB distance) from the grass around the player is shirt.
_BACKGROUND_DISTANCE = 40.0
# Where the torso sits, as fractions of the player's height above the foot point.
_TORSO_CENTRE = 0.65
_TORSO_HALF_HEIGHT = 0.15
_TORSO_HALF_WIDTH = 0.12
# The grass colour is the median of a box this many heights wide around the player: local,
# because stripes, shadows and lighting change the pitch colour across the frame.
_BACKGROUND_HALF_SIZE = 1.5


def _box(image: np.ndarray, cx: float, cy: float, half_w: float, half_h: float) -> np.ndarray:
    h_img, w_img = image.shape[:2]
    x0, x1 = max(int(np.floor(cx - half_w)), 0), min(int(np.ceil(cx + half_w)), w_img)
    y0, y1 = max(int(np.floor(cy - half_h)), 0), min(int(np.ceil(cy + half_h)), h_img)
    return image[y0:y1, x0:x1].reshape(-1, 3).astype(np.float32)


def torso_colours(
    image_rgb: np.ndarray, feet_input_px: np.ndarray, heights_input_px: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mean shirt colour of each player in one letterboxed frame.

    Looks in a box centred at 65% of the player's height above the foot point and averages
    the pixels that differ from the grass around the player. Returns (rgb float32 (K, 3),
    valid (K,)); a player with no such pixel (hidden, off-frame) is not valid.
    """
    k = len(feet_input_px)
    colours = np.zeros((k, 3), dtype=np.float32)
    valid = np.zeros(k, dtype=bool)
    for i, ((x, y), height) in enumerate(zip(feet_input_px, heights_input_px, strict=True)):
        if not np.isfinite(height) or height <= 0:
            continue
        patch = _box(
            image_rgb,
            x,
            y - _TORSO_CENTRE * height,
            max(1.0, _TORSO_HALF_WIDTH * height),
            max(1.0, _TORSO_HALF_HEIGHT * height),
        )
        around = _box(image_rgb, x, y - 0.5 * height, *(2 * [_BACKGROUND_HALF_SIZE * height]))
        if len(patch) == 0 or len(around) == 0:
            continue
        background = np.median(around, axis=0)
        shirt = patch[np.linalg.norm(patch - background, axis=1) > _BACKGROUND_DISTANCE]
        if len(shirt):
            colours[i] = shirt.mean(axis=0)
            valid[i] = True
    return colours, valid


def _to_lab(rgb: np.ndarray) -> np.ndarray:
    pixels = (np.asarray(rgb, dtype=np.float32) / 255.0).reshape(-1, 1, 3)
    return cv2.cvtColor(pixels, cv2.COLOR_RGB2Lab).reshape(-1, 3)


def split_teams(
    torso_rgb: np.ndarray, valid: np.ndarray, iterations: int = 25
) -> tuple[np.ndarray, np.ndarray]:
    """Two-means clustering of shirt colours in CIELAB.

    Deterministic: starts from the colour farthest from the mean and the one farthest from
    that, and numbers the teams by the lighter shirt first, so a re-run gives the same ids.
    Returns (team int8 (K,), -1 where no colour was seen; centroids_rgb float32 (2, 3)).
    """
    team = np.full(len(torso_rgb), -1, dtype=np.int8)
    centroids_rgb = np.zeros((2, 3), dtype=np.float32)
    idx = np.flatnonzero(valid)
    if len(idx) < 2:
        team[idx] = 0
        return team, centroids_rgb
    lab = _to_lab(torso_rgb[idx]).astype(np.float64)
    first = int(np.argmax(np.linalg.norm(lab - lab.mean(axis=0), axis=1)))
    second = int(np.argmax(np.linalg.norm(lab - lab[first], axis=1)))
    centres = lab[[first, second]].copy()
    labels = np.zeros(len(lab), dtype=np.int64)
    for _ in range(iterations):
        dist = np.linalg.norm(lab[:, None, :] - centres[None], axis=2)
        new_labels = dist.argmin(axis=1)
        for c in range(2):
            if np.any(new_labels == c):
                centres[c] = lab[new_labels == c].mean(axis=0)
        if np.array_equal(new_labels, labels):
            break
        labels = new_labels
    labels = np.linalg.norm(lab[:, None, :] - centres[None], axis=2).argmin(axis=1)
    # Team 0 has the lighter shirts (higher L*); ties broken by a*, then b*.
    order = sorted(range(2), key=lambda c: (-centres[c][0], -centres[c][1], -centres[c][2]))
    remap = np.empty(2, dtype=np.int64)
    remap[order] = np.arange(2)
    team[idx] = remap[labels].astype(np.int8)
    for c in range(2):
        members = idx[team[idx] == c]
        if len(members):
            centroids_rgb[c] = torso_rgb[members].mean(axis=0)
    return team, centroids_rgb
