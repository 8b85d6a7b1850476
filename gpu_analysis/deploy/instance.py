"""The cluster's Dagster instance (dagster.yaml) as a dict, generated from the profile.

The root dagster.yaml is the local instance (SQLite, LocalRunLauncher); this is the one the
Dagster Helm chart mounts as its instance ConfigMap on the cluster (gpu_analysis.deploy.values
imports the constants so the chart's values say the same). Key names are checked against
dagster 1.13's instance schema, dagster/_core/instance/config.py (`dagster_instance_config_schema`).
"""

from __future__ import annotations

from typing import Any

from gpu_analysis.profile import PROFILE_ENV, Profile
from video_assets.pod_specs import run_pod_k8s_config
from video_assets.pools import pool_limits

# The official chart's defaults for a release named `dagster` (values `global.postgresqlSecretName`;
# the instance ConfigMap is `<release>-instance`): the run pod reads the instance from this
# ConfigMap and its Postgres password from this Secret's key `postgresql-password`, which
# K8sRunLauncher puts in the run pod as DAGSTER_PG_PASSWORD (dagster_k8s/job.py,
# DAGSTER_PG_PASSWORD_ENV_VAR, DAGSTER_PG_PASSWORD_SECRET_KEY). D1's chart values must match.
INSTANCE_CONFIG_MAP = "dagster-instance"
POSTGRES_PASSWORD_SECRET = "dagster-postgresql-secret"
POSTGRES_PASSWORD_ENV = "DAGSTER_PG_PASSWORD"
POSTGRES_SCHEME = "postgresql+psycopg2"
# The run pods' service account: the narrowed step-launcher Role is bound to it (D3's RBAC).
RUN_SERVICE_ACCOUNT = "gpu-analysis-run"
DAGSTER_HOME = "/opt/dagster/dagster_home"
COMPUTE_LOGS_PREFIX = "dagster/compute-logs/"

# Run monitoring (the daemon's MonitoringDaemon, dagster/_daemon/monitoring/run_monitoring.py and
# concurrency.py). K8sRunLauncher has a worker health check (dagster_k8s/launcher.py,
# `check_run_worker_health`: reads the run's Job status; a STARTED run whose Job has no active
# pod and a failed or succeeded one is WorkerStatus.FAILED), so a dead run pod is seen at the
# next poll and the run is marked FAILURE (`monitor_started_run`, `report_run_failed`).
RUN_MONITORING: dict[str, Any] = {
    "enabled": True,
    # A run pod may wait for Karpenter to start a cpu-coordination node (about a minute) and then
    # pull the worker image (a few GB, up to a few minutes) before the run reports STARTED.
    "start_timeout_seconds": 600,
    # Step pods have terminationGracePeriodSeconds 30 (video_assets/pod_specs.py); a cancel that
    # has not ended after six times that has lost its run pod.
    "cancel_timeout_seconds": 180,
    # K8sRunLauncher supports resume (`supports_run_worker_crash_recovery`), but resuming in a
    # new pod re-runs the interrupted GPU step while the dead run still holds its slot: fail the
    # run instead and let run_retries start a clean one (settings_methods.py: default 0 too).
    "max_resume_run_attempts": 0,
    # Noticed within one poll, slots freed once the run has been over for
    # free_slots_after_run_end_seconds, by the next poll after that: 15 + 15 + 15 = 45 s < 60 s
    # from the moment Kubernetes reports the run pod failed (issue 12: "free again within a
    # minute"). Each poll is one Job read per STARTED run: cheap at a few matches at a time.
    "poll_interval_seconds": 15,
    "free_slots_after_run_end_seconds": 15,
    # No max_runtime_seconds: a long match may rightly take hours; each GPU step has its own
    # timeout from the video's duration (video_assets/resources.py, step_timeout_s).
}

# Run retries (dagster/_daemon/auto_run_reexecution/auto_run_reexecution.py). With
# retry_on_asset_or_op_failure false, `should_retry` refuses runs whose failure reason is
# STEP_FAILURE (an asset/op raised, including a configuration error that raised a
# non-retryable dg.Failure); runs failed by run monitoring (the run pod or its node died, a
# spot reclaim) have no STEP_FAILURE reason and are retried. The key name and its meaning are
# in the schema, dagster/_core/instance/config.py ("run_retries").
RUN_RETRIES: dict[str, Any] = {
    "enabled": True,
    # Two spot reclaims of the same run in a row are rare; a third failure is not bad luck.
    "max_retries": 2,
    "retry_on_asset_or_op_failure": False,
}


def _postgres_db(postgres: dict) -> dict[str, Any]:
    if "password" in postgres:
        raise ValueError(
            "postgres: pass no password; the instance reads it from the environment variable "
            f"{POSTGRES_PASSWORD_ENV} (set from the Secret {POSTGRES_PASSWORD_SECRET})"
        )
    missing = [key for key in ("hostname", "username", "db_name") if not postgres.get(key)]
    if missing:
        raise ValueError(f"postgres: missing {', '.join(missing)}")
    db: dict[str, Any] = {
        "hostname": postgres["hostname"],
        "port": int(postgres.get("port", 5432)),
        "username": postgres["username"],
        "db_name": postgres["db_name"],
        # An env-var reference: the password is never in the ConfigMap, the values or the logs.
        "password": {"env": POSTGRES_PASSWORD_ENV},
        # SQLAlchemy 2.1 made psycopg (3) the driver of a bare `postgresql://` URL (its
        # changelog, "psycopg is now the default PostgreSQL dialect"); dagster-postgres 0.29
        # requires only psycopg2-binary, so name the driver it installs. dagster_postgres/
        # utils.py, pg_url_from_config, puts `scheme` in front of the URL.
        "scheme": POSTGRES_SCHEME,
    }
    if postgres.get("params"):
        db["params"] = dict(postgres["params"])
    return db


def _pools(profile: Profile) -> dict[str, Any]:
    limits = pool_limits(profile)
    # dagster.yaml has no per-pool limit, only `default_limit`, which Dagster applies to a pool
    # the first time a step claims it. The smallest of the profile's limits never oversubscribes
    # a GPU kind; where the limits differ, `python -m video_assets.pools` (apply_pool_limits) sets
    # each pool's own limit on the running instance.
    return {"default_limit": min(limits.values()), "granularity": "op"}


def cluster_instance(profile: Profile, *, postgres: dict, compute_logs_bucket: str) -> dict:
    """The full dagster.yaml of the cluster for this profile.

    `postgres`: hostname, port, username, db_name (and optional params, e.g. sslmode); never a
    password. `compute_logs_bucket`: the bucket that keeps step stdout/stderr.
    """
    storage = {"postgres": {"postgres_db": _postgres_db(postgres)}}
    return {
        "storage": storage,
        "run_coordinator": {
            "module": "dagster.core.run_coordinator",
            "class": "QueuedRunCoordinator",
        },
        "concurrency": {
            # A run holds one GPU slot at a time (preprocess, then infer): as many runs as GPUs
            # keep every GPU busy; more would only add idle run pods on the CPU pool.
            "runs": {"max_concurrent_runs": sum(pool_limits(profile).values())},
            "pools": _pools(profile),
        },
        "run_launcher": {
            "module": "dagster_k8s",
            "class": "K8sRunLauncher",
            "config": {
                "job_namespace": profile.namespace,
                "job_image": profile.image,
                "image_pull_policy": "IfNotPresent",
                "service_account_name": RUN_SERVICE_ACCOUNT,
                "instance_config_map": INSTANCE_CONFIG_MAP,
                "postgres_password_secret": POSTGRES_PASSWORD_SECRET,
                "dagster_home": DAGSTER_HOME,
                # The daemon runs in the cluster and reaches the private API endpoint from inside.
                "load_incluster_config": True,
                # A run that fails exits non-zero, so the Job (and run monitoring) sees it failed.
                "fail_pod_on_run_failure": True,
                # The run pod builds the job from the same profile as the code location
                # (gpu_analysis/profile.py reads GPU_ANALYSIS_PROFILE); without it, `local`.
                "env_vars": [f"{PROFILE_ENV}={profile.name}", f"AWS_REGION={profile.aws_region}"],
                # Every run pod (match runs and infra runs) on the cpu-coordination pools, with
                # the security context of the match job's own `dagster-k8s/config` tag.
                "run_k8s_config": run_pod_k8s_config(profile),
            },
        },
        "compute_logs": {
            "module": "dagster_aws.s3.compute_log_manager",
            "class": "S3ComputeLogManager",
            "config": {
                "bucket": compute_logs_bucket,
                "prefix": COMPUTE_LOGS_PREFIX,
                "region": profile.aws_region,
                # Upload while a step runs, so a step killed with its pod left its logs behind.
                "upload_interval": 30,
            },
        },
        "run_monitoring": dict(RUN_MONITORING),
        "run_retries": dict(RUN_RETRIES),
        "telemetry": {"enabled": False},
        "nux": {"enabled": False},
    }
