"""Scoring detections against a clip's ground truth: foot-point matches on the pitch and
temperature-map agreement."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.optimize import linear_sum_assignment


@dataclass
class MatchCounts:
    """Detections matched one-to-one to true players within a distance on the pitch."""

    true_positives: int = 0
    false_positives: int = 0
    false_negatives: int = 0
    matched_error_m_sum: float = 0.0

    def add(self, other: MatchCounts) -> None:
        self.true_positives += other.true_positives
        self.false_positives += other.false_positives
        self.false_negatives += other.false_negatives
        self.matched_error_m_sum += other.matched_error_m_sum

    @property
    def precision(self) -> float:
        found = self.true_positives + self.false_positives
        return self.true_positives / found if found else 1.0

    @property
    def recall(self) -> float:
        real = self.true_positives + self.false_negatives
        return self.true_positives / real if real else 1.0

    @property
    def mean_error_m(self) -> float:
        return self.matched_error_m_sum / self.true_positives if self.true_positives else 0.0


def match_frame(
    detected_m: np.ndarray,
    true_m: np.ndarray,
    true_visible: np.ndarray,
    max_distance_m: float = 1.0,
) -> MatchCounts:
    """Optimal one-to-one matching of one frame's detections to its true players.

    True players that are in the scene but not visible (hidden behind others, out of frame)
    are "don't care": a detection on one is neither a hit nor a false alarm, and missing
    one is not a miss.
    """
    detected_m = np.asarray(detected_m, np.float64).reshape(-1, 2)
    true_m = np.asarray(true_m, np.float64).reshape(-1, 2)
    true_visible = np.asarray(true_visible, bool)
    counts = MatchCounts()
    if len(detected_m) and len(true_m):
        dist = np.linalg.norm(detected_m[:, None, :] - true_m[None, :, :], axis=-1)
        cost = np.where(dist <= max_distance_m, dist, 1e6)
        # Prefer visible players when a detection could go either way.
        cost = cost + np.where(true_visible[None, :], 0.0, 1e-3)
        rows, cols = linear_sum_assignment(cost)
        ok = cost[rows, cols] < 1e5
        rows, cols = rows[ok], cols[ok]
    else:
        rows = cols = np.zeros(0, int)
    hit_visible = true_visible[cols]
    counts.true_positives = int(hit_visible.sum())
    counts.matched_error_m_sum = float(
        np.linalg.norm(detected_m[rows] - true_m[cols], axis=-1)[hit_visible].sum()
    )
    counts.false_positives = len(detected_m) - len(rows)
    counts.false_negatives = int(true_visible.sum()) - counts.true_positives
    return counts


def map_correlation(map_a: np.ndarray, map_b: np.ndarray, sigma_m: float = 2.0, res_m=1.0):
    """Pearson correlation of two temperature maps after smoothing both with a Gaussian."""
    a = gaussian_filter(np.asarray(map_a, np.float64), sigma_m / res_m, mode="constant")
    b = gaussian_filter(np.asarray(map_b, np.float64), sigma_m / res_m, mode="constant")
    if a.std() == 0 or b.std() == 0:
        return 0.0  # an empty map agrees with nothing
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])
