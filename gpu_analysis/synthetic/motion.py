"""Plausible player trajectories on the pitch: formations that follow a moving ball."""

from __future__ import annotations

import numpy as np

from gpu_analysis.synthetic.camera import PITCH_LENGTH_M, PITCH_WIDTH_M

# Outfield anchors for one team defending the x=0 goal, as (depth 0..1, width 0..1). Enough
# for 10 outfield players; smaller teams take the first n.
_ANCHORS = np.array(
    [
        (0.18, 0.15),
        (0.16, 0.38),
        (0.16, 0.62),
        (0.18, 0.85),
        (0.40, 0.20),
        (0.38, 0.45),
        (0.40, 0.70),
        (0.42, 0.90),
        (0.62, 0.38),
        (0.62, 0.62),
        (0.30, 0.05),
        (0.55, 0.95),
    ]
)

_MAX_SPEED_M_S = 8.0

# The `team` of a referee or assistant referee: in no team.
OFFICIAL = -1
# Assistant referees run along the touchline, outside the field of play (IFAB Laws of the
# Game, "Guidelines for match officials": each covers one half, on opposite touchlines).
_ASSISTANT_OFFSET_M = 0.8


def _official_targets(rng: np.random.Generator, ball: np.ndarray, dt_s: float) -> np.ndarray:
    """Targets (frames, 3, 2) of the referee and the two assistant referees.

    The referee keeps 10-20 m from the ball on the diagonal (the "diagonal system of
    control"); each assistant follows the ball (or the half-way line) along his touchline in
    his own half.
    """
    n_frames = len(ball)
    wander = _ou_process(rng, n_frames, 2, dt_s, 4.0, 5.0)
    referee = ball + np.array([-9.0, 9.0]) + wander
    referee[:, 0] = np.clip(referee[:, 0], 8, PITCH_LENGTH_M - 8)
    referee[:, 1] = np.clip(referee[:, 1], 6, PITCH_WIDTH_M - 6)
    half = PITCH_LENGTH_M / 2
    ar_left = np.column_stack(
        [np.clip(ball[:, 0], 10.0, half), np.full(n_frames, -_ASSISTANT_OFFSET_M)]
    )
    ar_right = np.column_stack(
        [
            np.clip(ball[:, 0], half, PITCH_LENGTH_M - 10.0),
            np.full(n_frames, PITCH_WIDTH_M + _ASSISTANT_OFFSET_M),
        ]
    )
    return np.stack([referee, ar_left, ar_right], axis=1)


def _ou_process(
    rng: np.random.Generator, n_frames: int, n_series: int, dt_s: float, tau_s: float, sigma: float
) -> np.ndarray:
    """Smooth random offsets: an Ornstein-Uhlenbeck process, shape (n_frames, n_series)."""
    out = np.empty((n_frames, n_series))
    decay = np.exp(-dt_s / tau_s)
    kick = sigma * np.sqrt(1 - decay**2)
    x = rng.normal(0, sigma, n_series)
    for i in range(n_frames):
        out[i] = x
        x = decay * x + kick * rng.normal(0, 1, n_series)
    return out


def simulate_positions(
    rng: np.random.Generator,
    n_frames: int,
    fps: float,
    players_per_team: int,
    goalkeepers: bool = False,
    officials: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Trajectories of both teams, and of the referee and two assistants with `officials`.

    Returns positions_m (frames, people, 2), team (people,) int8 and speed_m_s (frames,
    people). Players stay inside the pitch; officials come last with team OFFICIAL, the
    assistants just outside the touchlines.
    """
    if not 1 <= players_per_team <= len(_ANCHORS):
        raise ValueError(f"players_per_team must be 1..{len(_ANCHORS)}, got {players_per_team}")
    dt_s = 1.0 / fps
    # The ball wanders over the pitch; teams shift and squeeze toward it.
    ball = np.column_stack(
        [
            PITCH_LENGTH_M / 2 + _ou_process(rng, n_frames, 1, dt_s, 6.0, 22.0)[:, 0],
            PITCH_WIDTH_M / 2 + _ou_process(rng, n_frames, 1, dt_s, 4.0, 16.0)[:, 0],
        ]
    )
    ball[:, 0] = np.clip(ball[:, 0], 5, PITCH_LENGTH_M - 5)
    ball[:, 1] = np.clip(ball[:, 1], 3, PITCH_WIDTH_M - 3)

    targets = []
    teams = []
    for team in (0, 1):
        anchors = _ANCHORS[:players_per_team].copy()
        anchors += rng.normal(0, 0.03, anchors.shape)
        depth = anchors[:, 0]
        if team == 1:
            depth = 1.0 - depth  # team 1 defends the x=105 goal
        # Team block: anchors squeezed to 70% of the pitch and slid toward the ball.
        base_x = depth[None, :] * PITCH_LENGTH_M * 0.7 + 0.3 * ball[:, :1]
        base_y = 0.15 * PITCH_WIDTH_M + anchors[None, :, 1] * 0.7 * PITCH_WIDTH_M
        base_y = 0.75 * base_y + 0.25 * ball[:, 1:2]
        wander = _ou_process(rng, n_frames, 2 * players_per_team, dt_s, 3.0, 4.0)
        tx = base_x + wander[:, :players_per_team]
        ty = base_y + wander[:, players_per_team:]
        if goalkeepers:
            gx = (
                4.0 + 0.04 * ball[:, :1]
                if team == 0
                else PITCH_LENGTH_M - 4.0 - 0.04 * (PITCH_LENGTH_M - ball[:, :1])
            )
            gy = PITCH_WIDTH_M / 2 + 0.15 * (ball[:, 1:2] - PITCH_WIDTH_M / 2)
            tx = np.concatenate([gx, tx], axis=1)
            ty = np.concatenate([gy, ty], axis=1)
        targets.append(np.stack([tx, ty], axis=-1))
        teams.append(np.full(tx.shape[1], team, dtype=np.int8))
    if officials:
        targets.append(_official_targets(rng, ball, dt_s))
        teams.append(np.full(3, OFFICIAL, dtype=np.int8))
    target = np.concatenate(targets, axis=1)
    team_ids = np.concatenate(teams)
    # Officials stand where the laws put them; players never leave the pitch.
    low = np.where(team_ids[:, None] == OFFICIAL, -2.0, 0.5)
    high = np.array([PITCH_LENGTH_M, PITCH_WIDTH_M])[None, :] + np.where(
        team_ids[:, None] == OFFICIAL, 2.0, -0.5
    )

    # Players chase their targets with a speed limit, which keeps paths smooth and physical.
    positions = np.empty_like(target)
    pos = target[0].copy()
    max_step = _MAX_SPEED_M_S * dt_s
    for i in range(n_frames):
        step = (target[i] - pos) * min(1.0, 2.0 * dt_s)
        norm = np.linalg.norm(step, axis=1, keepdims=True)
        step *= np.minimum(1.0, max_step / np.maximum(norm, 1e-9))
        pos = pos + step
        pos = np.clip(pos, low, high)
        positions[i] = pos
    velocity = np.gradient(positions, dt_s, axis=0) if n_frames > 1 else np.zeros_like(positions)
    speed = np.linalg.norm(velocity, axis=-1)
    return positions.astype(np.float32), team_ids, speed.astype(np.float32)
