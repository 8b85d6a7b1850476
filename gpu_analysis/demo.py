"""`make demo`: load the code location on the active profile and show what it defines."""

from __future__ import annotations

import sys

from gpu_analysis.errors import UserError


def main() -> int:
    try:
        from gpu_analysis.profile import load_profile

        profile = load_profile()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    from gpu_analysis.definitions import build_definitions

    defs = build_definitions(profile)
    repo = defs.get_repository_def()
    print(f"profile: {profile.name} (data root {profile.data_root})")
    print("assets:")
    for key in sorted(repo.asset_graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        print(f"  {key.to_user_string()}")
    print("jobs:", ", ".join(sorted(j.name for j in repo.get_all_jobs())) or "(none)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
