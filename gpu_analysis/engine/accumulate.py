"""Temperature maps: the share of player-time per pitch cell, overall, per team, half and zone."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

THIRDS = ("defensive", "middle", "attacking")  # along X, attacking towards X = length
# Along Y, in increasing Y. Facing +X with the pitch seen from above (Y to the left), low Y is
# the right-hand channel.
CHANNELS = ("right", "centre", "left")


@dataclasses.dataclass(frozen=True)
class PitchPositions:
    """Detected players on the pitch: one row per detection that landed inside the lines."""

    frame_index: np.ndarray  # int64 (K,)
    timestamp_s: np.ndarray  # float64 (K,)
    positions_m: np.ndarray  # float64 (K, 2), X along the length, Y along the width
    team: np.ndarray  # int8 (K,), 0/1, -1 when unknown

    def __len__(self) -> int:
        return len(self.frame_index)

    def select(self, mask: np.ndarray) -> PitchPositions:
        return PitchPositions(
            self.frame_index[mask], self.timestamp_s[mask], self.positions_m[mask], self.team[mask]
        )


@dataclasses.dataclass(frozen=True)
class PitchGrid:
    length_m: float
    width_m: float
    res_m: float = 1.0

    @property
    def shape(self) -> tuple[int, int]:
        """(rows along Y, columns along X), as in the contract: (68, 105) at 1 m."""
        # The epsilon keeps 68.0 / 0.1 from becoming 681 cells through rounding error.
        rows = math.ceil(self.width_m / self.res_m - 1e-9)
        cols = math.ceil(self.length_m / self.res_m - 1e-9)
        return rows, cols

    def cells(self, positions_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows, cols = self.shape
        r = np.clip(np.floor(positions_m[:, 1] / self.res_m), 0, rows - 1).astype(np.int64)
        c = np.clip(np.floor(positions_m[:, 0] / self.res_m), 0, cols - 1).astype(np.int64)
        return r, c


def temperature_map(
    positions_m: np.ndarray, grid: PitchGrid, weights: np.ndarray | None = None
) -> np.ndarray:
    """float32 (rows, cols) summing to 1: the share of weighted observations per cell.

    Every detection in a sampled frame stands for the same slice of time, so unit weights give
    the share of observed player-time. All zeros when there is nothing to count.
    """
    rows, cols = grid.shape
    positions_m = np.asarray(positions_m, dtype=np.float64).reshape(-1, 2)
    w = np.ones(len(positions_m)) if weights is None else np.asarray(weights, dtype=np.float64)
    r, c = grid.cells(positions_m)
    counts = np.bincount(r * cols + c, weights=w, minlength=rows * cols).reshape(rows, cols)
    total = counts.sum()
    if total > 0:
        counts /= total
    return counts.astype(np.float32)


def decay_weights(timestamp_s: np.ndarray, half_life_s: float, now_s: float) -> np.ndarray:
    """Weights for a "live" map: an observation half_life_s old counts half as much as now."""
    if not half_life_s > 0:
        raise ValueError(f"half_life_s must be > 0, got {half_life_s}")
    age_s = np.clip(now_s - np.asarray(timestamp_s, dtype=np.float64), 0.0, None)
    return np.exp2(-age_s / half_life_s)


def normalise_direction(positions_m: np.ndarray, grid: PitchGrid) -> np.ndarray:
    """Rotate the pitch half a turn: teams change ends at half-time, so a second half seen this
    way attacks in the same direction as the first."""
    return np.stack([grid.length_m - positions_m[:, 0], grid.width_m - positions_m[:, 1]], axis=1)


def half_maps(
    positions: PitchPositions, grid: PitchGrid, half_time_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """Maps of the first and second half, the second turned to the first half's direction."""
    first = positions.timestamp_s < half_time_s
    return (
        temperature_map(positions.positions_m[first], grid),
        temperature_map(normalise_direction(positions.positions_m[~first], grid), grid),
    )


def zone_occupancy(positions_m: np.ndarray, grid: PitchGrid) -> dict:
    """Shares of player-time in thirds (along X) by channels (along Y), and their 3x3 product."""
    positions_m = np.asarray(positions_m, dtype=np.float64).reshape(-1, 2)
    third = np.clip((positions_m[:, 0] / grid.length_m * 3).astype(np.int64), 0, 2)
    channel = np.clip((positions_m[:, 1] / grid.width_m * 3).astype(np.int64), 0, 2)
    table = np.bincount(channel * 3 + third, minlength=9).reshape(3, 3).astype(np.float64)
    if table.sum() > 0:
        table /= table.sum()
    return {
        "thirds": {name: round(float(table[:, i].sum()), 6) for i, name in enumerate(THIRDS)},
        "channels": {name: round(float(table[i].sum()), 6) for i, name in enumerate(CHANNELS)},
        "grid": {
            channel_name: {
                third_name: round(float(table[i, j]), 6) for j, third_name in enumerate(THIRDS)
            }
            for i, channel_name in enumerate(CHANNELS)
        },
    }
