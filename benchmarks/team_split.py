"""Teams, goalkeepers and officials: the engine's split against plain two-means, one run.

    .venv/bin/python benchmarks/team_split.py [--clips N]

Renders 8 s 1280x720 clips with both goalkeepers, a referee and two assistant referees (five
camera views, the default look and random looks), detects with the clips' truth (so that only
the split is judged), and scores on the same shirts and positions:
- `two-means`: the split before issue 13 (two-means of every shirt in CIELAB, seeded from the
  farthest colours), officials counted as players;
- `engine`: gpu_analysis.engine.teams.split_roles.
Per clip: the smaller of the two team maps' correlation with the truth (each smoothed with a
2 m Gaussian, best of the two team numberings), the share of officials left out of the maps,
of goalkeepers found, and of outfield players wrongly taken for officials.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from scipy.ndimage import gaussian_filter  # noqa: E402

from gpu_analysis.engine import report, steps, teams  # noqa: E402
from gpu_analysis.synthetic import calibration_path_for, generate_match_clip  # noqa: E402
from tests.engine.truth import TruthDetector  # noqa: E402

CASES = [
    (1, None, "tactical"),
    (2, "random", "tactical"),
    (3, "random", "broadcast"),
    (4, "random", "tactical"),
    (5, "random", "wide"),
    (6, None, "broadcast"),
    (7, "random", "tactical"),
    (8, "random", "corner"),
]


def two_means(lab: np.ndarray, iterations: int = 25) -> np.ndarray:
    """The pre-issue-13 split: two-means from the farthest colour and the farthest from it."""
    first = int(np.argmax(np.linalg.norm(lab - lab.mean(axis=0), axis=1)))
    second = int(np.argmax(np.linalg.norm(lab - lab[first], axis=1)))
    centres = lab[[first, second]].copy()
    labels = np.zeros(len(lab), dtype=np.int64)
    for _ in range(iterations):
        labels = np.linalg.norm(lab[:, None] - centres[None], axis=2).argmin(axis=1)
        for c in (0, 1):
            if np.any(labels == c):
                centres[c] = lab[labels == c].mean(axis=0)
    return labels


def occupancy(positions_m: np.ndarray) -> np.ndarray:
    grid = np.zeros((68, 105))
    rows = np.clip(positions_m[:, 1].astype(int), 0, 67)
    cols = np.clip(positions_m[:, 0].astype(int), 0, 104)
    np.add.at(grid, (rows, cols), 1.0)
    return grid / max(grid.sum(), 1.0)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = gaussian_filter(a, 2.0), gaussian_filter(b, 2.0)
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def team_score(positions_m, found_team, true_team) -> float:
    truth = [occupancy(positions_m[true_team == t]) for t in (0, 1)]
    found = [occupancy(positions_m[found_team == t]) for t in (0, 1)]
    straight = [correlation(found[i], truth[i]) for i in (0, 1)]
    crossed = [correlation(found[i], truth[1 - i]) for i in (0, 1)]
    return min(straight if sum(straight) >= sum(crossed) else crossed)


def split_inputs(folder: Path, seed: int, look, camera: str) -> tuple[tuple, dict, np.ndarray]:
    """The exact arguments `analyze` hands split_roles for a rendered clip, and each
    detection's true person (by nearest true position in its frame)."""
    video = folder / f"{camera}-{seed}.mp4"
    truth = generate_match_clip(
        video, seed=seed, duration_s=8.0, fps=25.0, width=1280, height=720, camera=camera,
        goalkeepers=True, officials=True, look=look,
    )  # fmt: skip
    captured = {}
    real = report.split_roles

    def capture(*args, **kwargs):
        captured["args"], captured["kwargs"] = args, kwargs
        return real(*args, **kwargs)

    report.split_roles = capture
    try:
        steps.analyze(
            video, calibration_path_for(video), folder / f"out-{seed}", sample_fps=5.0,
            detector=TruthDetector(truth),
        )  # fmt: skip
    finally:
        report.split_roles = real
    positions_m, timestamp_s = captured["args"][2], captured["args"][3]
    frames = np.round(timestamp_s * truth.fps).astype(int)
    person = np.array(
        [np.argmin(np.linalg.norm(truth.positions_m[f] - p, axis=1)) for f, p in
         zip(frames, positions_m, strict=True)]
    )  # fmt: skip
    return captured["args"], captured["kwargs"], truth, person


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=len(CASES))
    args = parser.parse_args()
    print(
        f"{'clip':22s} {'two-means':>9s} {'engine':>7s} {'officials out':>13s} "
        f"{'keepers':>7s} {'players->off':>12s}"
    )
    old_scores, new_scores = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for seed, look, camera in CASES[: args.clips]:
            split_args, split_kwargs, truth, person = split_inputs(Path(tmp), seed, look, camera)
            rgb, valid, positions_m = split_args[0], split_args[1], split_args[2]
            true_team, true_role = truth.team[person], truth.roles()[person]
            players = true_role != teams.Role.OFFICIAL
            old_team = np.full(len(rgb), -1)
            old_team[valid] = two_means(teams._to_lab(rgb[valid]))
            # Before, officials were players: the maps held everyone with a colour.
            old = team_score(positions_m[valid], old_team[valid], np.where(
                players, true_team, -1)[valid])  # fmt: skip
            split = teams.split_roles(*split_args, **split_kwargs)
            new = team_score(positions_m, np.where(
                split.role != teams.Role.OFFICIAL, split.team, -1), np.where(
                players, true_team, -1))  # fmt: skip
            officials_out = (split.role[~players] == teams.Role.OFFICIAL).mean()
            keepers = true_role == teams.Role.GOALKEEPER
            keepers_found = (split.role[keepers] == teams.Role.GOALKEEPER).mean()
            players_off = (split.role[players] == teams.Role.OFFICIAL).mean()
            name = f"{camera} {look or 'default'} {seed}"
            print(
                f"{name:22s} {old:9.3f} {new:7.3f} {officials_out:13.2f} {keepers_found:7.2f} "
                f"{players_off:12.3f}",
                flush=True,
            )
            old_scores.append(old)
            new_scores.append(new)
    print(
        f"mean team-map correlation: two-means {np.mean(old_scores):.3f}, engine "
        f"{np.mean(new_scores):.3f}; clips at >= 0.9: {sum(s >= 0.9 for s in old_scores)} vs "
        f"{sum(s >= 0.9 for s in new_scores)} of {len(new_scores)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
