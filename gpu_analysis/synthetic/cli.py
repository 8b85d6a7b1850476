"""The `gpu-analysis synth-clip` subcommand: render a synthetic match clip with its truth."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gpu_analysis.engine.errors import UserError


def _cmd_synth_clip(args: argparse.Namespace) -> int:
    from gpu_analysis.synthetic.camera import CAMERA_PRESETS
    from gpu_analysis.synthetic.clip import calibration_path_for, generate_match_clip

    out = Path(args.out)
    if out.suffix.lower() not in (".mp4", ".mkv", ".ts"):
        raise UserError(f"{out}: the clip must end in .mp4, .mkv or .ts")
    if args.camera not in CAMERA_PRESETS:
        raise UserError(f"unknown camera {args.camera!r}; choose one of {CAMERA_PRESETS}")
    if args.width % 2 or args.height % 2 or args.width < 16 or args.height < 16:
        raise UserError(f"width and height must be even and >= 16, got {args.width}x{args.height}")
    if args.duration <= 0 or args.fps <= 0:
        raise UserError("--duration and --fps must be positive")
    truth = generate_match_clip(
        out,
        seed=args.seed,
        duration_s=args.duration,
        fps=args.fps,
        width=args.width,
        height=args.height,
        camera=args.camera,
        players_per_team=args.players_per_team,
        goalkeepers=args.goalkeepers,
        officials=args.officials,
        look="random" if args.random_look else None,
    )
    truth_path = out.with_name(out.stem + ".truth.npz")
    truth.save(truth_path)
    print(
        json.dumps(
            {
                "video": str(out),
                "calibration": str(calibration_path_for(out)),
                "truth": str(truth_path),
                "frames": truth.frame_count,
                "players": int(truth.team.size),
                "visible_share": round(float(truth.visible.mean()), 3),
            }
        )
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth-clip",
        help="render a synthetic match clip (H.264) with calibration and ground truth",
        description="Writes OUT, OUT_STEM.calibration.json and OUT_STEM.truth.npz.",
    )
    p.add_argument("out", help="output video (.mp4, .mkv or .ts)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--duration", type=float, default=10.0, help="seconds (default 10)")
    p.add_argument("--camera", default="tactical", help="tactical, broadcast, behind_goal, ...")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--fps", type=float, default=25.0)
    p.add_argument("--players-per-team", type=int, default=10)
    p.add_argument("--goalkeepers", action="store_true", help="add a goalkeeper to each team")
    p.add_argument(
        "--officials",
        action="store_true",
        help="add a referee and two assistant referees in a third kit colour",
    )
    p.add_argument("--random-look", action="store_true", help="randomized kits, light, noise")
    p.set_defaults(func=_cmd_synth_clip)
