"""From detections to the delivered files: pitch positions, teams, maps, PNGs and report.json."""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np

from gpu_analysis.engine import storage
from gpu_analysis.engine.accumulate import (
    PitchGrid,
    PitchPositions,
    decay_weights,
    half_maps,
    temperature_map,
    zone_occupancy,
)
from gpu_analysis.engine.calibration import Calibration
from gpu_analysis.engine.detections import Detections
from gpu_analysis.engine.records import VideoFacts, as_plain
from gpu_analysis.engine.render import render_map_png
from gpu_analysis.engine.teams import Role, TeamSplit, split_roles

REPORT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class MatchMaps:
    """The temperature maps of one match, each float32 (rows, cols) summing to 1 (or all 0)."""

    overall: np.ndarray
    teams: tuple[np.ndarray, np.ndarray]
    halves: tuple[np.ndarray, np.ndarray]  # second half turned to the first half's direction
    half_time_s: float


def pitch_positions_m(
    detections: Detections, calibration: Calibration
) -> tuple[np.ndarray, np.ndarray]:
    """Each detection's pitch position (metres) and whether it is on the pitch.

    Detections projected by the detect stage keep their positions; others are projected here.
    Detections of a tracked camera were all projected there (frames it skipped stay off).
    """
    tracked = np.isfinite(detections.sampled_image_to_pitch).any()
    if len(detections) and np.isnan(detections.positions_m).all() and not tracked:
        return calibration.project_to_pitch(detections.foot_points_px)
    return detections.positions_m, detections.on_pitch()


def project(
    detections: Detections, calibration: Calibration, half_time_s: float
) -> tuple[PitchPositions, TeamSplit, np.ndarray]:
    """Pitch positions of the players on the pitch, with teams; officials left out.

    Returns the players' positions, the team split of every detection on the pitch, and the
    frame index of each official's detection. Only people on the pitch take part in the split:
    the crowd's colours would pull the clusters off the kits.
    """
    positions_m, on_pitch = pitch_positions_m(detections, calibration)
    split = split_roles(
        detections.torso_rgb[on_pitch],
        detections.torso_valid[on_pitch],
        positions_m[on_pitch],
        detections.timestamp_s[on_pitch],
        length_m=calibration.length_m,
        width_m=calibration.width_m,
        half_time_s=half_time_s,
        detector_role=detections.detector_role[on_pitch],
    )
    player = split.role != Role.OFFICIAL
    return (
        PitchPositions(
            frame_index=detections.frame_index[on_pitch][player],
            timestamp_s=detections.timestamp_s[on_pitch][player],
            positions_m=positions_m[on_pitch][player],
            team=split.team[player],
        ),
        split,
        detections.frame_index[on_pitch][~player],
    )


# Below this share of covered frames the maps describe too little of the match to pass
# without a word.
LOW_COVERAGE_SHARE = 0.5


def camera_report(detections: Detections, camera: dict, previews: list[str]) -> dict:
    """report.json's "camera": how much of the match camera tracking could measure."""
    sampled = len(detections.sampled_frame_index)
    covered = int(detections.sampled_covered.sum())
    tracked = bool(camera.get("tracked", False))
    return {
        "tracked": tracked,
        "covered_share": round(covered / sampled, 4) if sampled else 0.0,
        "covered_frames": covered,
        "skipped_frames": sampled - covered,
        "cuts": int(camera.get("cuts", int(detections.sampled_cut.sum()))),
        "reacquired": int(camera.get("reacquired", 0)),
        "detections_skipped": int(camera.get("detections_skipped", 0)),
        "tracking_s": camera.get("tracking_s", 0.0),
        "previews": previews,
    }


def match_maps(positions: PitchPositions, grid: PitchGrid, half_time_s: float) -> MatchMaps:
    return MatchMaps(
        overall=temperature_map(positions.positions_m, grid),
        teams=(
            temperature_map(positions.positions_m[positions.team == 0], grid),
            temperature_map(positions.positions_m[positions.team == 1], grid),
        ),
        halves=half_maps(positions, grid, half_time_s),
        half_time_s=half_time_s,
    )


def build_outputs(
    detections: Detections,
    calibration: Calibration,
    facts: VideoFacts,
    *,
    res_m: float,
    model: dict,
    timings: dict,
    decode: dict,
    detections_total: int | None = None,
    live_half_life_s: float | None = None,
    camera: dict | None = None,
    previews: dict[str, bytes] | None = None,
) -> tuple[dict[str, bytes], dict]:
    """Every file of contract section 2 (and the per-team and per-half extras) as bytes.

    `detections_total` counts detections dropped before this point (off the pitch) too.
    `live_half_life_s` adds `temperature_map_live.npy`: the "live" map at the end of the
    video, where an observation that much older counts half as much.
    """
    started = time.perf_counter()
    grid = PitchGrid(calibration.length_m, calibration.width_m, res_m)
    half_time_s = facts.duration_s / 2
    positions, split, official_frames = project(detections, calibration, half_time_s)
    maps = match_maps(positions, grid, half_time_s=half_time_s)
    files: dict[str, bytes] = {
        "temperature_map.npy": storage.npy_bytes(maps.overall),
        "temperature_map_team_0.npy": storage.npy_bytes(maps.teams[0]),
        "temperature_map_team_1.npy": storage.npy_bytes(maps.teams[1]),
        "temperature_map_half_1.npy": storage.npy_bytes(maps.halves[0]),
        "temperature_map_half_2.npy": storage.npy_bytes(maps.halves[1]),
    }
    if live_half_life_s is not None:
        now_s = float(detections.sampled_timestamp_s.max(initial=0.0))
        weights = decay_weights(positions.timestamp_s, live_half_life_s, now_s)
        files["temperature_map_live.npy"] = storage.npy_bytes(
            temperature_map(positions.positions_m, grid, weights)
        )
    length_m, width_m = calibration.length_m, calibration.width_m
    files["temperature_map.png"] = render_map_png(
        maps.overall, length_m, width_m, "Temperature map: all players"
    )
    # An unreliable split still gets its maps, titled so nobody reads them as confident.
    caveat = "" if split.reliable else " (teams unreliable)"
    for t in (0, 1):
        files[f"temperature_map_team_{t}.png"] = render_map_png(
            maps.teams[t], length_m, width_m, f"Temperature map: team {t}{caveat}"
        )

    sampled = len(detections.sampled_frame_index)
    team_summary: dict = {
        "split_reliable": split.reliable,
        "unreliable_because": split.reason,
        "kit_separation_delta_e": split.separation,
    }
    keeper = split.role[split.role != Role.OFFICIAL] == Role.GOALKEEPER
    for t in (0, 1):
        mask = positions.team == t
        team_summary[f"team_{t}"] = {
            "detections": int(mask.sum()),
            "goalkeeper_detections": int((mask & keeper).sum()),
            "share_of_player_time": round(float(mask.mean()), 6) if len(positions) else 0.0,
            "players_per_frame_mean": round(float(mask.sum() / sampled), 4) if sampled else 0.0,
            "shirt_rgb": [round(float(v), 1) for v in split.shirt_rgb[t]],
            "confidence": split.confidence[t],
            "zones": zone_occupancy(positions.positions_m[mask], grid),
        }
    team_summary["unassigned_detections"] = int((positions.team < 0).sum())
    files.update(previews or {})
    camera_summary = camera_report(detections, camera or {}, sorted(previews or {}))
    warnings = list(decode.get("warnings", []))
    if camera_summary["covered_share"] < LOW_COVERAGE_SHARE and sampled:
        warnings.append(
            f"camera: only {camera_summary['covered_share']:.0%} of the sampled frames showed "
            "the pitch with a trustworthy homography (cuts, close-ups, lost tracking); the "
            "maps cover those frames only (see the calibration_preview*.png files)"
        )
    if not split.reliable and len(positions):
        warnings.append(f"teams: the split into two teams is unreliable: {split.reason}")

    # The PNGs and the JSON itself take a few milliseconds more, not counted.
    timings = dict(timings)
    timings["aggregate_s"] = round(time.perf_counter() - started, 4)
    timings["total_s"] = round(timings.get("total_s", 0.0) + timings["aggregate_s"], 4)
    if timings["total_s"] > 0:
        timings["frames_per_s"] = round(sampled / timings["total_s"], 3)
        timings["realtime_factor"] = round(
            (facts.duration_s - decode.get("frames_lost", 0) / facts.fps) / timings["total_s"], 3
        )
    report = {
        "report_version": REPORT_VERSION,
        "video": as_plain(facts),
        "sample_fps": decode.get("sample_fps"),
        "warnings": warnings,
        "sampled_frames": sampled,
        "frames_decoded": decode.get("frames_decoded"),
        "frames_lost": decode.get("frames_lost", 0),
        "decoding": decode.get("decoding"),
        "stream_complete": decode.get("frames_lost", 0) == 0,
        "detections_total": len(detections) if detections_total is None else detections_total,
        "detections_on_pitch": len(positions) + len(official_frames),
        "players_per_frame_mean": round(len(positions) / sampled, 4) if sampled else 0.0,
        "grid": {
            "res_m": res_m,
            "shape": list(grid.shape),
            "length_m": length_m,
            "width_m": width_m,
        },
        "zones": zone_occupancy(positions.positions_m, grid),
        "teams": team_summary,
        # Referees and assistant referees: counted here, in no map.
        "camera": camera_summary,
        "officials": {
            "detections": len(official_frames),
            "per_frame_mean": round(len(official_frames) / sampled, 4) if sampled else 0.0,
        },
        "live_half_life_s": live_half_life_s,
        "halves": {
            "half_time_s": round(maps.half_time_s, 4),
            "direction": "second half turned half a turn to attack like the first",
        },
        "model": model,
        "timings": timings,
        "files": sorted([*files, "report.json"]),
    }
    files["report.json"] = json.dumps(report, indent=2).encode() + b"\n"
    return files, report
