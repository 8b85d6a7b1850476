"""The cluster's Dagster instance (gpu_analysis/deploy/instance.py) on a real PostgreSQL server.

Run, event log and schedule storage and the GPU concurrency pools, through Dagster's own
dagster_postgres storages, against the server of tests/emulators/postgres.py; compute logs in
the moto S3 server as S3ComputeLogManager writes them.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from pathlib import Path
from unittest import mock

import boto3
import dagster as dg
import psycopg2
import pytest
import yaml
from dagster._core.scheduler.instigation import (  # not exported by `dagster`
    InstigatorState,
    InstigatorStatus,
    InstigatorType,
    TickData,
    TickStatus,
)
from dagster._daemon.monitoring import concurrency
from dagster._daemon.monitoring.concurrency import execute_concurrency_slots_iteration
from dagster._time import get_current_datetime

from gpu_analysis.deploy.instance import (
    COMPUTE_LOGS_PREFIX,
    POSTGRES_PASSWORD_ENV,
    RUN_MONITORING,
    RUN_RETRIES,
    cluster_instance,
)
from gpu_analysis.profile import load_profile
from video_assets.pools import apply_pool_limits, pool_limits

LOGS_BUCKET = "test-dagster-compute-logs"


def cluster_config(postgres_server, moto_endpoint: str) -> dict:
    """The staging instance as generated, with two test adaptations: the run launcher reads a
    kubeconfig (no cluster to be inside of) and the compute logs go to the moto endpoint."""
    profile = load_profile("staging")
    config = cluster_instance(
        profile, postgres=postgres_server.postgres_db, compute_logs_bucket=LOGS_BUCKET
    )
    config["compute_logs"]["config"]["endpoint_url"] = moto_endpoint
    return config


@pytest.fixture
def pg_instance(postgres_server, moto_endpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    # The server trusts loopback connections: any password does; it still comes from the env.
    monkeypatch.setenv(POSTGRES_PASSWORD_ENV, "from-the-secret")
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="eu-west-3")
    s3.create_bucket(
        Bucket=LOGS_BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-3"}
    )
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        yaml.safe_dump(cluster_config(postgres_server, moto_endpoint))
    )
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        yield instance
        # One server for the session: each test starts from empty storages.
        instance.wipe()
        for pool in instance.event_log_storage.get_concurrency_keys():
            instance.event_log_storage.delete_concurrency_limit(pool)
        instance.wipe_all_schedules()
    for item in s3.list_objects_v2(Bucket=LOGS_BUCKET).get("Contents", []):
        s3.delete_object(Bucket=LOGS_BUCKET, Key=item["Key"])
    s3.delete_bucket(Bucket=LOGS_BUCKET)


def test_the_generated_config_is_valid_and_keeps_the_password_out(postgres_server):
    config = cluster_instance(
        load_profile("staging"), postgres=postgres_server.postgres_db, compute_logs_bucket="b"
    )
    assert config["storage"]["postgres"]["postgres_db"]["password"] == {
        "env": POSTGRES_PASSWORD_ENV
    }
    assert config["run_monitoring"] == RUN_MONITORING and config["run_retries"] == RUN_RETRIES
    assert RUN_RETRIES["retry_on_asset_or_op_failure"] is False
    launcher = config["run_launcher"]["config"]
    affinity = launcher["run_k8s_config"]["pod_spec_config"]["affinity"]
    terms = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    [expression] = terms["nodeSelectorTerms"][0]["matchExpressions"]
    assert all(pool.startswith("cpu-coordination") for pool in expression["values"])
    with pytest.raises(ValueError, match="no password"):
        cluster_instance(
            load_profile("staging"),
            postgres={**postgres_server.postgres_db, "password": "hunter2"},
            compute_logs_bucket="b",
        )


@dg.op
def say_hello() -> str:
    print("hello from the op")
    return "hello"


@dg.job
def hello_job():
    say_hello()


def test_runs_events_and_compute_logs_land_in_postgres_and_s3(
    pg_instance, postgres_server, moto_endpoint
):
    assert type(pg_instance.run_storage).__name__ == "PostgresRunStorage"
    assert type(pg_instance.event_log_storage).__name__ == "PostgresEventLogStorage"
    assert type(pg_instance.schedule_storage).__name__ == "PostgresScheduleStorage"
    result = hello_job.execute_in_process(instance=pg_instance)
    assert result.success

    # Read back over a separate connection: the rows are in the server, not in a cache.
    with psycopg2.connect(postgres_server.url) as conn, conn.cursor() as cur:
        cur.execute("SELECT status FROM runs WHERE run_id = %s", (result.run_id,))
        assert cur.fetchone() == ("SUCCESS",)
        cur.execute("SELECT count(*) FROM event_logs WHERE run_id = %s", (result.run_id,))
        assert cur.fetchone()[0] >= 5
    record = pg_instance.get_run_record_by_id(result.run_id)
    assert record.dagster_run.status == dg.DagsterRunStatus.SUCCESS
    types = {e.dagster_event.event_type for e in pg_instance.all_logs(result.run_id)}
    assert {dg.DagsterEventType.RUN_SUCCESS, dg.DagsterEventType.STEP_OUTPUT} <= types

    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="eu-west-3")
    keys = [i["Key"] for i in s3.list_objects_v2(Bucket=LOGS_BUCKET).get("Contents", [])]
    assert keys and all(k.startswith(COMPUTE_LOGS_PREFIX) for k in keys), keys
    bodies = [s3.get_object(Bucket=LOGS_BUCKET, Key=k)["Body"].read() for k in keys]
    assert any(b"hello from the op" in body for body in bodies)


def test_a_sensor_tick_is_kept_in_the_schedule_storage(pg_instance):
    from dagster._core.remote_origin import (  # not exported by `dagster`
        InProcessCodeLocationOrigin,
        RemoteInstigatorOrigin,
        RemoteRepositoryOrigin,
    )
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

    origin = RemoteInstigatorOrigin(
        RemoteRepositoryOrigin(
            InProcessCodeLocationOrigin(
                LoadableTargetOrigin(module_name="gpu_analysis.definitions")
            ),
            "__repository__",
        ),
        "match_video_sensor",
    )
    state = InstigatorState(origin, InstigatorType.SENSOR, InstigatorStatus.RUNNING)
    pg_instance.add_instigator_state(state)
    tick = pg_instance.create_tick(
        TickData(
            instigator_origin_id=state.instigator_origin_id,
            instigator_name="match_video_sensor",
            instigator_type=InstigatorType.SENSOR,
            status=TickStatus.STARTED,
            timestamp=time.time(),
            selector_id=state.selector_id,
        )
    )
    pg_instance.update_tick(
        tick.with_status(TickStatus.SUCCESS)
        .with_run_info(run_id="r1", run_key="m1@v1")
        .with_cursor("cursor-1")
    )
    [stored] = pg_instance.get_ticks(state.instigator_origin_id, state.selector_id)
    assert stored.status == TickStatus.SUCCESS
    assert stored.run_keys == ["m1@v1"] and stored.cursor == "cursor-1"
    assert pg_instance.get_instigator_state(state.instigator_origin_id, state.selector_id)


def test_gpu_pools_hold_the_profiles_limit_and_free_a_dead_runs_slots(pg_instance):
    profile = load_profile("staging")
    limits = apply_pool_limits(pg_instance, profile)
    assert limits == pool_limits(profile) == {"gpu-t4": 4, "gpu-a10g": 4}
    storage = pg_instance.event_log_storage
    # A pool nobody set takes the instance's default_limit (the smallest profile limit).
    storage.initialize_concurrency_limit_to_default("gpu-other")
    assert storage.get_concurrency_info("gpu-other").slot_count == min(limits.values())

    runs = [
        dg.DagsterRun(job_name="process_match", run_id=f"{n:08d}-0000-0000-0000-000000000000")
        for n in range(limits["gpu-t4"] + 1)
    ]
    for run in runs:
        pg_instance.add_run(run)
    claims = [storage.claim_concurrency_slot("gpu-t4", r.run_id, "match_frames") for r in runs]
    assert [c.is_claimed for c in claims] == [True] * limits["gpu-t4"] + [False]
    info = storage.get_concurrency_info("gpu-t4")
    assert (info.active_slot_count, info.pending_step_count) == (4, 1)

    # The first run dies (its pod is gone): run monitoring marks it failed, and the daemon's
    # slot freeing gives its slot to the waiting step once free_slots_after_run_end_seconds pass.
    dead = pg_instance.get_run_by_id(runs[0].run_id)
    pg_instance.report_run_failed(dead, "Run has not completed but K8s job has no active pods")
    wait_s = RUN_MONITORING["free_slots_after_run_end_seconds"]
    record = pg_instance.get_run_record_by_id(dead.run_id)
    assert record.end_time is not None

    context = mock.Mock(instance=pg_instance)  # the daemon's workspace: only .instance is read
    # Before the delay: the slot stays (a run just ended may still be writing its last events).
    list(execute_concurrency_slots_iteration(context, logging.getLogger("test")))
    assert storage.get_concurrency_info("gpu-t4").active_slot_count == 4
    # The daemon's next poll, free_slots_after_run_end_seconds later (its clock moved, not ours).
    with mock.patch.object(
        concurrency,
        "get_current_datetime",
        return_value=get_current_datetime() + dt.timedelta(seconds=wait_s + 1),
    ):
        list(execute_concurrency_slots_iteration(context, logging.getLogger("test")))
    assert storage.get_concurrency_info("gpu-t4").active_slot_count == 3
    waiting = storage.claim_concurrency_slot("gpu-t4", runs[-1].run_id, "match_frames")
    assert waiting.is_claimed
