"""The `gpu-analysis` command line: one entry point, subcommands registered by each area."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from gpu_analysis.errors import UserError


def _cmd_profile(args: argparse.Namespace) -> int:
    from gpu_analysis.profile import load_profile

    profile = load_profile(args.name)
    fields = {k: str(v) for k, v in vars(profile).items()}
    print(json.dumps(fields, indent=2))
    return 0


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
