"""The `gpu-analysis` command line: one entry point, subcommands registered by each area."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from gpu_analysis.engine.errors import as_user_error
from gpu_analysis.engine.records import DEFAULT_DEVICE, DEFAULT_MODEL, DEFAULT_SAMPLE_FPS


def _cmd_profile(args: argparse.Namespace) -> int:
    from gpu_analysis.profile import load_profile

    profile = load_profile(args.name)
    fields = {k: str(v) for k, v in vars(profile).items()}
    print(json.dumps(fields, indent=2))
    return 0


def _cmd_analyze(args: argparse.Namespace) -> int:
    import logging

    from gpu_analysis.engine.steps import analyze

    # Progress and the engine's one-line notes (which execution provider runs) go to stdout;
    # stderr gets the error line, or one `warning:` line per doubt about the result (the same
    # lines as report.json's "warnings"), printed once the maps are written.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(lambda record: record.levelno < logging.WARNING)
    engine_log = logging.getLogger("gpu_analysis")
    engine_log.addHandler(handler)
    engine_log.setLevel(logging.WARNING if args.quiet else logging.INFO)

    last_tenth = -1

    def progress(message: str, fraction: float) -> None:
        # One line per tenth: readable in a log, quiet enough for a long match.
        nonlocal last_tenth
        tenth = int(fraction * 10)
        if tenth > last_tenth:
            last_tenth = tenth
            print(f"[{fraction:4.0%}] {message}", flush=True)

    report = analyze(
        args.video,
        args.calibration,
        args.out,
        sample_fps=args.sample_fps,
        model=args.model,
        device=args.device,
        progress=None if args.quiet else progress,
        classes=args.classes,
        input_size=args.input_size,
        stream=args.stream,
    )
    t = report["timings"]
    print(
        f"wrote {args.out}: {report['sampled_frames']} frames, "
        f"{report['detections_on_pitch']} player detections on the pitch, "
        f"{report['model'].get('execution_provider', '?')}, {t['total_s']:.1f} s "
        f"({t.get('realtime_factor', 0):.1f}x real time)"
        + (f", {report['frames_lost']} frames lost" if report["frames_lost"] else "")
    )
    for warning in report.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def register_analyze(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze",
        help="temperature maps of one match video (contracts section 2)",
        description="Detect players in VIDEO, project them onto the pitch and write "
        "temperature maps, PNGs and report.json into DIR.",
    )
    p.add_argument("video", help="match video (mp4, mkv, ts, ...)")
    p.add_argument("--calibration", required=True, metavar="CAL.json", help="pitch calibration")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument(
        "--sample-fps", type=float, default=DEFAULT_SAMPLE_FPS, help="frames analysed per second"
    )
    p.add_argument("--model", default=DEFAULT_MODEL, help="builtin, or a heat-map/YOLO .onnx file")
    p.add_argument(
        "--classes",
        metavar="NAME[,NAME]",
        help="YOLO classes counted as players, by name or id (default: those named person, "
        "player or goalkeeper; class 0 for a model without names)",
    )
    p.add_argument(
        "--stream",
        type=int,
        default=None,
        metavar="N",
        help="video stream to analyse, numbered as ffprobe numbers them "
        "(default: the stream marked default, else the first video stream)",
    )
    p.add_argument(
        "--input-size",
        metavar="WxH",
        help="input size of a dynamic-size model, multiples of its stride (default: the size it "
        "was exported at)",
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=DEFAULT_DEVICE)
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=_cmd_analyze)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpu-analysis",
        description="Temperature maps from match video, and the GPU cluster that computes them.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("profile", help="print the active deployment profile")
    p.add_argument("name", nargs="?", help="profile name (default: $GPU_ANALYSIS_PROFILE or local)")
    p.set_defaults(func=_cmd_profile)

    # Each area registers its subcommands here, one line each: register(sub) adds a parser
    # whose `func(args) -> int` runs it. Imports stay inside the functions they serve.
    register_analyze(sub)
    __import__("gpu_analysis.synthetic.cli", fromlist=["register"]).register(sub)
    __import__("gpu_analysis.calibrate_cli", fromlist=["register"]).register(sub)
    __import__("gpu_analysis.deploy.cli", fromlist=["register"]).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        # Bad input, and what the machine refuses (a full disk, a denied path or S3 object, a
        # symbolic-link loop, too little memory), is one line; anything else is a bug and keeps
        # its traceback.
        error = as_user_error(exc, lasting_only=False)
        if error is None:
            raise
        lines = str(error).splitlines() or [type(exc).__name__]
        print(f"error: {lines[0]}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
