"""`process_match`: every match asset of one partition (a match id), video to delivery."""

from __future__ import annotations

import json

import dagster as dg

from gpu_analysis.profile import Profile
from video_assets.assets import GROUP
from video_assets.pod_specs import run_pod_k8s_config

# Read by Dagster's run retries (dagster/_core/execution/retries.py,
# auto_reexecution_should_retry_run): a run failed by a step (bad input, a configuration error,
# a step out of retries) is not run again whole; a run whose pod or node died is. Set on the job
# so it holds whatever the instance's run_retries default (gpu_analysis/deploy/instance.py).
RETRY_ON_STEP_FAILURE_TAG = "dagster/retry_on_asset_or_op_failure"


def build_process_match(profile: Profile):
    tags = {RETRY_ON_STEP_FAILURE_TAG: "false"}
    if profile.execution == "k8s":
        # Read by Dagster's K8sRunLauncher for the run pod; the GPU steps' own pods come from
        # pod_specs.step_pod through PipesK8sClient.
        tags["dagster-k8s/config"] = json.dumps(run_pod_k8s_config(profile), sort_keys=True)
    return dg.define_asset_job(
        name="process_match",
        selection=dg.AssetSelection.groups(GROUP),
        tags=tags,
        description="One match from its incoming video to results/<match_id>/ and its manifest.",
    )
