"""`make demo`: a sample match dropped into incoming/, picked up by the sensor, run end to end."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

from gpu_analysis.engine.errors import UserError
from video_assets.layout import MatchLayout

DEMO_MATCH_ID = "demo-match"


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m video_assets.demo", description=__doc__)
    parser.add_argument("--match-id", default=DEMO_MATCH_ID)
    parser.add_argument("--duration-s", type=float, default=20.0, help="sample clip length")
    parser.add_argument("--seed", type=int, default=0, help="sample clip seed")
    return parser.parse_args(argv)


def _check_setup():
    from gpu_analysis.engine.inference import resolve_model
    from gpu_analysis.profile import load_profile

    profile = load_profile()
    if profile.storage != "local" or profile.execution != "subprocess":
        raise UserError(
            f"the demo runs on this machine; profile {profile.name!r} uses {profile.storage} "
            f"storage and {profile.execution} steps: unset GPU_ANALYSIS_PROFILE"
        )
    if not os.environ.get("DAGSTER_HOME"):
        raise UserError("DAGSTER_HOME is not set; run `make demo`, which sets it to var/dagster")
    resolve_model(profile.model)  # a missing or broken model stops here, before any work
    return profile


def _drop_sample(layout: MatchLayout, match_id: str, duration_s: float, seed: int) -> Path:
    """Render a sample match and drop it the way an upload would: video, then calibration."""
    from gpu_analysis.synthetic import calibration_path_for, generate_match_clip

    video, calibration = Path(layout.video_uri(match_id)), Path(layout.calibration_uri(match_id))
    video.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=video.parent.parent, prefix=".demo-") as tmp:
        clip = Path(tmp) / video.name
        generate_match_clip(clip, seed=seed, duration_s=duration_s, fps=25.0)
        os.replace(clip, video)  # same file system: atomic
        os.replace(calibration_path_for(clip), calibration)
    return video


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    try:
        profile = _check_setup()
        from video_assets.partitions import is_valid_match_id

        if not is_valid_match_id(args.match_id):
            raise UserError(f"--match-id {args.match_id!r}: use 1-64 letters, digits, '_' or '-'")
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    import dagster as dg

    # Dagster flags Pipes internals it calls itself as preview; nothing for a demo user to do.
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)

    from video_assets.definitions import build_definitions
    from video_assets.pools import apply_pool_limits
    from video_assets.sensors import tick_once

    started = time.perf_counter()
    print(f"profile {profile.name}: data under {profile.data_root}, model {profile.model}")
    print(f"1/4 rendering a {args.duration_s:g} s sample match (seed {args.seed}) ...")
    layout = MatchLayout(profile.storage_root_uri)
    video = _drop_sample(layout, args.match_id, args.duration_s, args.seed)
    print(f"    dropped {video} and its calibration")

    with dg.DagsterInstance.get() as instance:
        limits = apply_pool_limits(instance, profile)
        print(f"    GPU pools on {os.environ['DAGSTER_HOME']}: {limits}")
        # The sample was moved into incoming/ whole, by a rename: no copy to wait out.
        defs = build_definitions(dataclasses.replace(profile, incoming_settle_s=0.0))
        print("2/4 match_video_sensor ticks ...")
        cursor = None
        request = None
        for tick in (1, 2, 3):
            requests, cursor = tick_once(defs, instance, cursor)
            request = next((r for r in requests if r.partition_key == args.match_id), None)
            outcome = f"run requested, key {request.run_key}" if request else "file settling"
            print(f"    tick {tick}: {outcome}")
            if request:
                break
        if request is None:
            print(f"error: the sensor did not pick up {video}", file=sys.stderr)
            return 1
        print(f"3/4 process_match for partition {args.match_id} (GPU steps as Pipes workers) ...")
        result = defs.resolve_job_def("process_match").execute_in_process(
            instance=instance,
            partition_key=request.partition_key,
            tags={**request.tags, "dagster/run_key": request.run_key},
            run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
            raise_on_error=False,
        )
        if not result.success:
            failures = [
                e.step_failure_data.user_failure_data.description
                if e.step_failure_data.user_failure_data
                else e.step_failure_data.error.message.strip()
                for e in result.all_events
                if e.event_type == dg.DagsterEventType.STEP_FAILURE
            ]
            print(f"error: run {result.run_id} failed: {'; '.join(failures)}", file=sys.stderr)
            return 1

    delivery = Path(layout.delivery_uri(args.match_id))
    report = json.loads((delivery / "report.json").read_text())
    model = report.get("model", {})
    timings = report.get("timings", {})
    print(f"4/4 delivered in {time.perf_counter() - started:.0f} s (run {result.run_id})")
    print(
        f"    {report['sampled_frames']} frames sampled, {report['detections_total']} detections, "
        f"{report['players_per_frame_mean']} players per frame on the pitch, "
        f"{model.get('execution_provider', '?')}, {timings.get('frames_per_s', '?')} frames/s"
    )
    print(f"    temperature map: {delivery / 'temperature_map.png'}")
    print(f"    report:          {delivery / 'report.json'}")
    print(f"    manifest:        {delivery / 'manifest.json'}")
    print(f"    browse the run:  make dev, then http://127.0.0.1:3000/runs/{result.run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
