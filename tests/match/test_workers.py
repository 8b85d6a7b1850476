"""The GPU workers through Pipes: bad input fails the step once, with the engine's error line."""

from __future__ import annotations

import dagster as dg

from gpu_analysis.engine.records import InferParams
from gpu_analysis.profile import load_profile
from video_assets.resources import TERMINATION_ERROR, GpuWorkers


def test_bad_input_in_a_worker_fails_the_step_without_retries(instance, tmp_path, heatmap_model):
    workers = GpuWorkers.from_profile(load_profile("local"))

    @dg.asset(retry_policy=dg.RetryPolicy(max_retries=3))
    def detections_from_nothing(context) -> dg.MaterializeResult:
        params = InferParams(
            shards_uri=str(tmp_path / "never-preprocessed"),
            detections_uri=str(tmp_path / "detections"),
            model=str(heatmap_model),
            device="cpu",
        )
        return workers.run(context, "infer", params)

    result = dg.materialize([detections_from_nothing], instance=instance, raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    message = failure.step_failure_data.user_failure_data.description
    assert message.startswith("error: ") and "never-preprocessed" in message
    assert "\n" not in message
    retries = [
        e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY
    ]
    assert retries == []
    assert not (tmp_path / "detections").exists()


def test_pod_termination_message_is_read_back_as_the_error_line():
    # The text dagster_k8s raises when a step pod's container exits non-zero (client.py).
    raised = (
        "Pod dagster-run-1-infer terminated but some containers exited with errors:\n"
        'Container "worker" failed with message: "error: s3://b/work/m1/shards: no '
        'manifest.json; the preprocess step did not finish there\n". Last 100 log lines: "..."'
    )
    found = TERMINATION_ERROR.search(raised)
    assert found and found.group(1) == (
        "error: s3://b/work/m1/shards: no manifest.json; the preprocess step did not finish there"
    )
    assert TERMINATION_ERROR.search('Container "worker" failed with message: "None".') is None
