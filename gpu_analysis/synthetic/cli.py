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
    motion = _camera_motion(args)
    if args.camera is None:
        args.camera = "tactical" if motion is None else "gantry"
    if args.camera not in CAMERA_PRESETS:
        raise UserError(f"unknown camera {args.camera!r}; choose one of {CAMERA_PRESETS}")
    if args.width % 2 or args.height % 2 or args.width < 16 or args.height < 16:
        raise UserError(f"width and height must be even and >= 16, got {args.width}x{args.height}")
    if args.duration <= 0 or args.fps <= 0:
        raise UserError("--duration and --fps must be positive")
    try:
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
            camera_motion=motion,
        )
    except ValueError as exc:
        # What the renderer refuses (a lens that folds over, a reference frame that shows
        # too little of the pitch) comes from the flags; say so in one line.
        raise UserError(f"synth-clip: {exc}") from None
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
                "pitch_view_share": round(float((truth.shot == 0).mean()), 3),
            }
        )
    )
    return 0


def _camera_motion(args: argparse.Namespace):
    """The CameraMotion the flags ask for; None (a still camera) when no motion flag is given."""
    from gpu_analysis.synthetic.camera_motion import CameraMotion, parse_cuts

    asked = (args.pan_deg, args.tilt_deg, args.zoom, args.cuts, args.distortion)
    if all(v is None for v in asked) and args.reference_frame == 0:
        return None
    zoom_range = (1.0, 1.0)
    if args.zoom is not None:
        try:
            lo, hi = (float(v) for v in args.zoom.split(":"))
        except ValueError:
            raise UserError(
                f"--zoom {args.zoom!r}: give LOW:HIGH focal multiples, like 0.8:1.2 or 1:2"
            ) from None
        zoom_range = (lo, hi)
    distortion = None if args.distortion is None else tuple(args.distortion)
    try:
        cuts = parse_cuts(args.cuts) if args.cuts else ()
    except ValueError as exc:
        raise UserError(f"--cuts: {exc}") from None
    motion = CameraMotion(
        pan_deg=10.0 if args.pan_deg is None else args.pan_deg,
        tilt_deg=2.0 if args.tilt_deg is None else args.tilt_deg,
        zoom_range=zoom_range,
        cuts=cuts,
        distortion=distortion,
        reference_frame=args.reference_frame,
    )
    try:
        motion.validate(round(args.duration * args.fps), args.fps)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return motion


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth-clip",
        help="render a synthetic match clip (H.264) with calibration and ground truth",
        description="Writes OUT, OUT_STEM.calibration.json and OUT_STEM.truth.npz.",
    )
    p.add_argument("out", help="output video (.mp4, .mkv or .ts)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--duration", type=float, default=10.0, help="seconds (default 10)")
    p.add_argument(
        "--camera",
        default=None,
        help="tactical (default), broadcast, behind_goal, corner, wide, gantry (default when "
        "the camera moves)",
    )
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
    moving = p.add_argument_group(
        "camera motion",
        "any of these makes the camera pan, tilt and zoom about its position; the truth gets "
        "per-frame homographies and shot labels, the calibration is the reference frame's",
    )
    moving.add_argument(
        "--pan-deg", type=float, help="pan over +-DEG following the play (default 10)"
    )
    moving.add_argument("--tilt-deg", type=float, help="tilt over +-DEG (default 2)")
    moving.add_argument(
        "--zoom", help="focal length range LOW:HIGH in multiples of the camera's: 0.8:1.2, 1:2"
    )
    moving.add_argument(
        "--cuts",
        help="cuts away from the pitch, START:DURATION[:closeup|crowd] in seconds, "
        "comma-separated: 8:2,20:1.5:crowd",
    )
    moving.add_argument(
        "--distortion",
        nargs=2,
        type=float,
        metavar=("K1", "K2"),
        help="radial lens distortion (OpenCV model, normalised by the focal length), "
        "e.g. --distortion -0.2 0.05",
    )
    moving.add_argument(
        "--reference-frame",
        type=int,
        default=0,
        help="frame whose calibration is written beside the clip (default 0)",
    )
    p.set_defaults(func=_cmd_synth_clip)
