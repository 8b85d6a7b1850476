"""Draw a temperature map on a pitch with its lines and a colour scale, as PNG bytes."""

from __future__ import annotations

import io

import numpy as np

# Law 1 of the game, in metres.
_PENALTY_AREA = (16.5, 40.32)
_GOAL_AREA = (5.5, 18.32)
_CENTRE_CIRCLE_R = 9.15
_PENALTY_SPOT = 11.0


def _draw_pitch(ax, length_m: float, width_m: float) -> None:
    from matplotlib.patches import Arc, Circle, Rectangle

    style = {"fill": False, "edgecolor": "white", "linewidth": 1.2, "zorder": 3}
    ax.add_patch(Rectangle((0, 0), length_m, width_m, **style))
    ax.plot([length_m / 2] * 2, [0, width_m], color="white", linewidth=1.2, zorder=3)
    ax.add_patch(Circle((length_m / 2, width_m / 2), _CENTRE_CIRCLE_R, **style))
    ax.add_patch(Circle((length_m / 2, width_m / 2), 0.3, color="white", zorder=3))
    for x0, sign in ((0.0, 1), (length_m, -1)):
        for depth, breadth in (_PENALTY_AREA, _GOAL_AREA):
            x = x0 if sign > 0 else x0 - depth
            ax.add_patch(Rectangle((x, (width_m - breadth) / 2), depth, breadth, **style))
        spot = (x0 + sign * _PENALTY_SPOT, width_m / 2)
        ax.add_patch(Circle(spot, 0.3, color="white", zorder=3))
        # The arc is the part of the circle round the spot that lies outside the penalty area.
        angle = np.degrees(np.arccos((_PENALTY_AREA[0] - _PENALTY_SPOT) / _CENTRE_CIRCLE_R))
        theta = (-angle, angle) if sign > 0 else (180 - angle, 180 + angle)
        ax.add_patch(
            Arc(
                spot,
                2 * _CENTRE_CIRCLE_R,
                2 * _CENTRE_CIRCLE_R,
                theta1=theta[0],
                theta2=theta[1],
                edgecolor="white",
                linewidth=1.2,
                zorder=3,
            )
        )


def render_map_png(
    share: np.ndarray, length_m: float, width_m: float, title: str, smooth_m: float = 1.0
) -> bytes:
    """The map as a PNG: cells coloured by % of player-time, lightly smoothed for the eye."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.ndimage import gaussian_filter

    res_m = length_m / share.shape[1]
    shown = gaussian_filter(share.astype(np.float64), sigma=smooth_m / res_m) if smooth_m else share
    fig, ax = plt.subplots(figsize=(10.5, 7.4), dpi=100)
    try:
        ax.set_facecolor("#1d5e2a")
        image = ax.imshow(
            100.0 * shown,
            origin="lower",
            extent=(0, length_m, 0, width_m),
            cmap="inferno",
            interpolation="bilinear",
            vmin=0.0,
            zorder=1,
            alpha=0.95,
        )
        _draw_pitch(ax, length_m, width_m)
        margin = 3.0
        ax.set_xlim(-margin, length_m + margin)
        ax.set_ylim(-margin, width_m + margin)
        ax.set_aspect("equal")
        ax.set_xlabel("X (m, along the length)")
        ax.set_ylabel("Y (m, along the width)")
        ax.set_title(title)
        bar = fig.colorbar(image, ax=ax, fraction=0.03, pad=0.02)
        bar.set_label(f"share of player-time per {res_m:g} m cell (%), smoothed {smooth_m:g} m")
        fig.tight_layout()
        buf = io.BytesIO()
        # No software/date metadata: the same map always renders to the same bytes.
        fig.savefig(buf, format="png", metadata={"Software": None})
        return buf.getvalue()
    finally:
        plt.close(fig)
