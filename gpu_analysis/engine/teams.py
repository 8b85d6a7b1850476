"""Who is who on the pitch: two teams by shirt colour, their goalkeepers, and the match
officials, who belong in no player map (no learned weights).

Goalkeepers and referees wear kits unlike either team's. A plain two-means split of every
shirt puts one such kit alone in a "team" and both teams together in the other, so the split
first finds the kits (k-means with more clusters than kits), takes the two kits that most
players wear as the teams, and then tells goalkeepers from officials among the other kits by
where they stand: a goalkeeper keeps to his goal, an official roams or runs a touchline.
"""

from __future__ import annotations

import dataclasses
import enum

import cv2
import numpy as np

# A torso pixel this far (RGB distance) from the grass around the player is shirt.
_BACKGROUND_DISTANCE = 40.0
# Of those, the ones at least this share as far from the grass as the farthest are averaged.
_PURE_SHARE = 0.7
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
        distance = np.linalg.norm(patch - background, axis=1)
        # A distant player's shirt is a few pixels, most of them blended with the grass: the
        # pixels farthest from the grass are the purest shirt.
        shirt = patch[
            (distance > _BACKGROUND_DISTANCE) & (distance >= _PURE_SHARE * distance.max())
        ]
        if len(shirt):
            colours[i] = shirt.mean(axis=0)
            valid[i] = True
    return colours, valid


class Role(enum.IntEnum):
    """What a detected person is. The detector may know (class labels); else the split says."""

    UNKNOWN = -1
    OUTFIELD = 0
    GOALKEEPER = 1
    OFFICIAL = 2


# Class names of detectors trained on football data sets, by role (compared lower-case).
ROLE_OF_CLASS_NAME = {
    "player": Role.OUTFIELD,
    "goalkeeper": Role.GOALKEEPER,
    "goalie": Role.GOALKEEPER,
    "referee": Role.OFFICIAL,
    "assistant referee": Role.OFFICIAL,
    "linesman": Role.OFFICIAL,
    "official": Role.OFFICIAL,
}

# Kits: how many colour clusters to look for (two teams, two goalkeepers, officials, and room
# for a team whose shirt reads as two colours), and the most shirts fitted (a 90-minute match
# has ~10^5 detections; a sample this size finds the same kits in milliseconds).
_KIT_CLUSTERS = 7
_FIT_SAMPLE = 6000
_KMEANS_RESTARTS = 4
# CIELAB distance (delta E) under which two kits cannot be told apart reliably by colour, and
# under which two colour clusters are one kit.
_MIN_TEAM_SEPARATION = 12.0
_SAME_KIT_DELTA_E = 12.0
# A team is at least this share of the outfield shirts: the two teams field equal numbers.
_MIN_TEAM_SHARE = 0.15
# A colour cluster this large is a team's shirt: no single goalkeeper or referee is 12 % of
# everyone seen.
_MAX_OTHER_KIT_SHARE = 0.12
# A one-person kit is seen on average at most this many times at once in one half of the
# pitch (one goalkeeper; the referee and an assistant now and then), in at least this share
# of the frames (a colour seen less is noise, not a person who is always there).
_ONE_PERSON_MULTIPLICITY = 1.3
_MIN_PRESENCE = 0.05
# How much uneven team sizes count against a grouping of colour clusters into two teams, next
# to colour spread within a team over distance between them. Small: a camera that follows play
# often sees more of one team (measured on 8 renders, 0.1 beat 0.2-0.5 on every one).
_BALANCE_WEIGHT = 0.1
# A goalkeeper stays within this distance of his goal line (the penalty area is 16.5 m deep).
_GOAL_ZONE_M = 22.0
# A kit seen this often in a goal zone is a goalkeeper's; otherwise it is an official's.
_GOALKEEPER_ZONE_SHARE = 0.6
# Assistant referees run the touchlines: a non-team kit within this of one is an official.
_TOUCHLINE_M = 2.0
# A shirt counts as clearly its team's when it is nearer its own kit than the other team's
# by this share of the distance between the two kits; a team is reliably split when this
# holds for most of its shirts.
_CLEAR_MARGIN = 0.25
_MIN_CONFIDENCE = 0.7


@dataclasses.dataclass(frozen=True)
class TeamSplit:
    """Each detection's team and role, and how far the split can be trusted."""

    team: np.ndarray  # int8 (K,): 0/1, -1 for officials and shirts not seen
    role: np.ndarray  # int8 (K,): Role
    shirt_rgb: np.ndarray  # float32 (2, 3): each team's mean shirt colour
    confidence: tuple[float, float]  # share of each team's shirts clearly its own kit
    separation: float  # delta E between the two teams' kits
    reliable: bool
    reason: str | None  # why the split is not reliable, for report.json and the PNG titles


def _to_lab(rgb: np.ndarray) -> np.ndarray:
    pixels = (np.asarray(rgb, dtype=np.float32) / 255.0).reshape(-1, 1, 3)
    return cv2.cvtColor(pixels, cv2.COLOR_RGB2Lab).reshape(-1, 3).astype(np.float64)


def _kmeans(lab: np.ndarray, k: int, seed: int = 0, iterations: int = 30) -> np.ndarray:
    """k-means++ with a fixed seed and a few restarts: the same centres on every re-run."""
    rng = np.random.default_rng(seed)
    best, best_inertia = None, np.inf
    for _ in range(_KMEANS_RESTARTS):
        centres = [lab[int(rng.integers(len(lab)))]]
        for _ in range(1, k):
            d2 = np.min(((lab[:, None, :] - np.array(centres)[None]) ** 2).sum(-1), axis=1)
            if d2.sum() <= 0:
                break
            centres.append(lab[int(rng.choice(len(lab), p=d2 / d2.sum()))])
        c = np.array(centres)
        kc = len(c)
        for _ in range(iterations):
            labels = ((lab[:, None, :] - c[None]) ** 2).sum(-1).argmin(axis=1)
            new = np.array(
                [lab[labels == j].mean(axis=0) if np.any(labels == j) else c[j] for j in range(kc)]
            )
            if np.allclose(new, c):
                break
            c = new
        inertia = ((lab - c[labels]) ** 2).sum()
        if inertia < best_inertia:
            best, best_inertia = c, inertia
    return best


def _nearest(lab: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = np.linalg.norm(lab[:, None, :] - centres[None], axis=2)
    return d.argmin(axis=1), d


def _group_into_teams(centres: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Group the colour clusters of the team kits into two teams: 0/1 per cluster.

    Tries every grouping (at most 2^6 for 7 clusters) and keeps the one whose teams are most
    even in numbers and most compact in colour: both teams field the same number of players,
    and a striped kit that reads as two colours is still one team's.
    """
    n = len(centres)
    if n == 1:
        return np.zeros(1, dtype=np.int64)
    best, best_cost = np.zeros(n, dtype=np.int64), np.inf
    for code in range(1, 2 ** (n - 1)):
        group = np.array([(code >> i) & 1 for i in range(n)], dtype=np.int64)
        sizes = np.array([counts[group == g].sum() for g in (0, 1)], dtype=float)
        means = np.array(
            [np.average(centres[group == g], axis=0, weights=counts[group == g]) for g in (0, 1)]
        )
        between = np.linalg.norm(means[0] - means[1])
        within = np.average(np.linalg.norm(centres - means[group], axis=1), weights=counts)
        cost = _BALANCE_WEIGHT * abs(sizes[0] - sizes[1]) / sizes.sum() + within / max(
            between, 1e-9
        )
        if cost < best_cost:
            best, best_cost = group, cost
    return best


def _team_kits(
    lab: np.ndarray, frame_id: np.ndarray, left: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The two team kits among the shirts: (centres (2, 3) lighter first, kit of each shirt
    (0, 1, or -1 for a one-person kit), distances (K, 2) to the two team kits).

    A one-person kit (a goalkeeper's, the referee's) is a colour cluster seen at most about
    once per frame in each half of the pitch; a team's kit, even one that reads as several
    clusters (stripes, shade), is seen several times in most frames.
    """
    step = max(1, len(lab) // _FIT_SAMPLE)
    # Fitted on the shirts in colour order: the same kits whatever order the detections come in.
    sample = lab[np.lexsort(lab.T[::-1])][::step]
    k = min(_KIT_CLUSTERS, len(np.unique(np.round(sample, 1), axis=0)))
    centres = _kmeans(sample, max(k, 2))
    labels, _ = _nearest(lab, centres)
    counts = np.bincount(labels, minlength=len(centres))
    share = counts / len(lab)
    frames = len(np.unique(frame_id))
    one_person = np.zeros(len(centres), bool)
    for c in range(len(centres)):
        members = labels == c
        if not members.any() or share[c] > _MAX_OTHER_KIT_SHARE:
            continue
        # Per frame and half of the pitch: how many shirts of this colour at once.
        _, per_place = np.unique(frame_id[members] * 2 + left[members], return_counts=True)
        seen_in = len(np.unique(frame_id[members])) / frames
        one_person[c] = per_place.mean() <= _ONE_PERSON_MULTIPLICITY and seen_in >= _MIN_PRESENCE
    worn = ~one_person
    if worn.sum() < 2:  # no team-like kit: split everything in two, flagged unreliable later
        worn[:] = True
        one_person[:] = False
    team_of_cluster = np.full(len(centres), -1)
    team_of_cluster[worn] = _group_into_teams(centres[worn], counts[worn].astype(float))
    # A one-person cluster as near a team's cluster as a kit's own spread is that team's.
    for c in np.flatnonzero(one_person):
        nearest = np.linalg.norm(centres[worn] - centres[c], axis=1)
        if nearest.min() < _SAME_KIT_DELTA_E:
            team_of_cluster[c] = team_of_cluster[worn][int(nearest.argmin())]
    kit = team_of_cluster[labels]
    # Each team's kit is the mean of all its shirts; lighter shirts are team 0 (ties: a*, b*).
    team_centres = np.array(
        [lab[kit == t].mean(axis=0) if np.any(kit == t) else lab.mean(axis=0) for t in (0, 1)]
    )
    if tuple(-team_centres[1]) < tuple(-team_centres[0]):
        team_centres = team_centres[::-1]
        kit = np.where(kit >= 0, 1 - kit, kit)
    distances = np.linalg.norm(lab[:, None, :] - team_centres[None], axis=2)
    return team_centres, kit, distances


def _defending_x0(
    team: np.ndarray, positions_m: np.ndarray, timestamp_s: np.ndarray, half_time_s: float
) -> np.ndarray:
    """Per detection, the team defending the x=0 goal at its time: the team whose outfield
    players stand nearer that goal on average in that half (teams change ends at half-time)."""
    first = timestamp_s < half_time_s
    answer = np.zeros(len(team), dtype=np.int8)
    for half in (first, ~first):
        means = [positions_m[half & (team == t), 0] for t in (0, 1)]
        if all(len(m) for m in means):
            answer[half] = 0 if means[0].mean() <= means[1].mean() else 1
        else:  # a half with one team unseen: the other half's ends, swapped
            other = ~half
            means = [positions_m[other & (team == t), 0] for t in (0, 1)]
            if all(len(m) for m in means):
                answer[half] = 1 if means[0].mean() <= means[1].mean() else 0
    return answer


def split_roles(
    torso_rgb: np.ndarray,
    valid: np.ndarray,
    positions_m: np.ndarray,
    timestamp_s: np.ndarray,
    *,
    length_m: float,
    width_m: float,
    half_time_s: float,
    detector_role: np.ndarray | None = None,
) -> TeamSplit:
    """Teams, goalkeepers and officials of the detections on the pitch.

    `detector_role` (Role per detection, UNKNOWN where the detector does not say) wins over the
    colours: a detector trained with goalkeeper and referee classes knows better.
    """
    n = len(torso_rgb)
    told = np.full(n, Role.UNKNOWN, np.int8) if detector_role is None else detector_role
    team = np.full(n, -1, dtype=np.int8)
    role = np.where(told == Role.UNKNOWN, Role.OUTFIELD, told).astype(np.int8)
    shirt_rgb = np.zeros((2, 3), np.float32)
    colour = np.flatnonzero(valid & (told != Role.GOALKEEPER) & (told != Role.OFFICIAL))
    if len(colour) < 2:
        team[colour] = 0
        return TeamSplit(team, role, shirt_rgb, (0.0, 0.0), 0.0, False, "too few shirts seen")

    lab = _to_lab(torso_rgb[colour])
    _, frame_id = np.unique(timestamp_s, return_inverse=True)
    left_half = positions_m[:, 0] < length_m / 2
    centres, kit, distances = _team_kits(lab, frame_id[colour], left_half[colour])
    team[colour] = np.where(kit >= 0, kit, -1)

    # Other kits: goalkeepers by where they stand, the rest officials.
    others = colour[kit < 0]
    if len(others) and detector_role is not None and np.any(told == Role.OUTFIELD):
        # The detector called these players: a goalkeeper class would have said otherwise.
        team[others] = distances[kit < 0].argmin(axis=1)
    elif len(others):
        other_lab = lab[kit < 0]
        other_kits = _kmeans(other_lab, min(3, len(other_lab)), seed=1)
        other_kit, _ = _nearest(other_lab, other_kits)
        x = positions_m[others, 0]
        y = positions_m[others, 1]
        left = x < length_m / 2
        near_goal = np.where(left, x, length_m - x) < _GOAL_ZONE_M
        on_touchline = (y < _TOUCHLINE_M) | (y > width_m - _TOUCHLINE_M)
        is_keeper = np.zeros(len(others), bool)
        for c in range(len(other_kits)):
            for side in (left, ~left):
                group = (other_kit == c) & side
                if group.any() and near_goal[group].mean() >= _GOALKEEPER_ZONE_SHARE:
                    is_keeper |= group & near_goal
        is_keeper &= ~on_touchline
        role[others] = np.where(is_keeper, Role.GOALKEEPER, Role.OFFICIAL)

    keepers = np.flatnonzero(role == Role.GOALKEEPER)
    if len(keepers):
        defends_x0 = _defending_x0(team, positions_m, timestamp_s, half_time_s)
        at_x0 = positions_m[keepers, 0] < length_m / 2
        team[keepers] = np.where(at_x0, defends_x0[keepers], 1 - defends_x0[keepers])
    team[role == Role.OFFICIAL] = -1

    for t in (0, 1):
        members = colour[(kit == t)]
        if len(members):
            shirt_rgb[t] = torso_rgb[members].mean(axis=0)
    separation = float(np.linalg.norm(centres[0] - centres[1]))
    outfield = kit >= 0
    margin = np.zeros(len(colour))
    if separation > 0:
        own = distances[np.arange(len(colour)), np.maximum(kit, 0)]
        other = distances[np.arange(len(colour)), 1 - np.maximum(kit, 0)]
        margin = (other - own) / separation
    confidence = tuple(
        round(float((margin[kit == t] > _CLEAR_MARGIN).mean()), 4) if np.any(kit == t) else 0.0
        for t in (0, 1)
    )
    shares = [float((kit == t).sum() / max(outfield.sum(), 1)) for t in (0, 1)]
    reason = None
    if separation < _MIN_TEAM_SEPARATION:
        reason = f"the two kits are too alike to tell apart (delta E {separation:.1f})"
    elif min(shares) < _MIN_TEAM_SHARE:
        reason = f"one team holds only {min(shares):.0%} of the players seen"
    elif min(confidence) < _MIN_CONFIDENCE:
        worst = int(np.argmin(confidence))
        reason = f"only {confidence[worst]:.0%} of team {worst}'s shirts clearly match its kit"
    return TeamSplit(
        team=team,
        role=role,
        shirt_rgb=shirt_rgb,
        confidence=confidence,  # type: ignore[arg-type]
        separation=round(separation, 2),
        reliable=reason is None,
        reason=reason,
    )
