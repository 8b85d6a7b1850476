"""One `process_match` run in a process of its own, as Dagster's run launcher starts each run.

    python -m tests.match.run_process_match PARTITION_KEY RUN_KEY TAGS_JSON

with DAGSTER_HOME and the GPU_ANALYSIS_* settings in the environment. Prints one JSON line
(run_id, success, the failed step and its message) and exits 0 whether the run succeeded or
not: the caller judges. Runs of one match racing each other need separate processes, as in
production; two runs in threads of one process deadlock in Dagster's logging setup.
"""

from __future__ import annotations

import json
import sys

import dagster as dg

from gpu_analysis.profile import load_profile
from video_assets.definitions import build_definitions


def main(partition_key: str, run_key: str, tags: dict[str, str]) -> int:
    job = build_definitions(load_profile()).resolve_job_def("process_match")
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(
            instance=instance,
            partition_key=partition_key,
            tags={**tags, "dagster/run_key": run_key},
            raise_on_error=False,
        )
    failures = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    failure = failures[0] if failures else None
    user_data = failure.step_failure_data.user_failure_data if failure else None
    print(
        json.dumps(
            {
                "run_id": result.run_id,
                "success": result.success,
                "failed_step": failure.step_key if failure else None,
                "message": user_data.description if user_data else None,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3])))
