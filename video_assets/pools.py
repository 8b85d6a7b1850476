"""GPU pool limits from the profile, set on a Dagster instance (`python -m video_assets.pools`).

dagster.yaml gives every pool one slot; `make demo` (and `make dev` through this module) set the
profile's `gpu_t4_pool_limit` and `gpu_a10g_pool_limit`, one slot per GPU of each kind.
"""

from __future__ import annotations

import sys

import dagster as dg

from gpu_analysis.profile import Profile


def pool_limits(profile: Profile) -> dict[str, int]:
    """GPU slots per pool: one step per GPU, so a burst of matches queues for the GPUs."""
    return {"gpu-t4": profile.gpu_t4_pool_limit, "gpu-a10g": profile.gpu_a10g_pool_limit}


def apply_pool_limits(instance: dg.DagsterInstance, profile: Profile) -> dict[str, int]:
    limits = pool_limits(profile)
    for pool, limit in limits.items():
        instance.event_log_storage.set_concurrency_slots(pool, limit)
    return limits


def main() -> int:
    from gpu_analysis.engine.errors import UserError
    from gpu_analysis.profile import load_profile

    try:
        profile = load_profile()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with dg.DagsterInstance.get() as instance:
        limits = apply_pool_limits(instance, profile)
    print("pools: " + ", ".join(f"{pool}={limit}" for pool, limit in limits.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
