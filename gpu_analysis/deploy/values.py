"""The official Dagster Helm chart's values for the cluster, generated from the active profile.

The chart is dagster-io/dagster `helm/dagster` (repository https://dagster-io.github.io/helm);
its values schema is pinned in shared/upstream (dagster-bdb8547/helm/dagster/values.schema.json).
The instance settings are not decided here: they come from `cluster_instance`
(gpu_analysis/deploy/instance.py) and are translated into the chart's keys, so the dagster.yaml
the chart renders says what the cluster instance says. What the chart's templates cannot render
goes to `additionalInstanceConfig`, which the chart appends to dagster.yaml as is.
"""

from __future__ import annotations

import json
from typing import Any

from gpu_analysis.deploy.instance import (
    COMPUTE_LOGS_PREFIX,
    DAGSTER_HOME,
    INSTANCE_CONFIG_MAP,
    POSTGRES_PASSWORD_SECRET,
    cluster_instance,
)
from gpu_analysis.engine.errors import UserError
from gpu_analysis.profile import Profile, split_image
from infra_assets.spec.aws import DagsterAwsSpec
from infra_assets.spec.kubernetes import default_nodepools
from video_assets.pod_specs import run_pod_k8s_config

CHART_REPOSITORY = "https://dagster-io.github.io/helm"
CHART_NAME = "dagster"
# The chart names its objects after the release (`dagster.fullname`: the release name alone when
# it contains the chart name): ConfigMap `dagster-instance`, Service `dagster-dagster-webserver`.
RELEASE_NAME = "dagster"
# The key the chart reads the password from (templates/secret-postgres.yaml); the Secret itself
# is written into the namespace from Secrets Manager by the in-cluster unit, never by the values.
POSTGRES_PASSWORD_KEY = "postgresql-password"
CODE_LOCATION_MODULE = "gpu_analysis.definitions"
CODE_LOCATION_NAME = "gpu-analysis"
CODE_SERVER_PORT = 3030
# Not the chart's default 80: a non-root process cannot bind a port below 1024 unless the
# runtime lowers net.ipv4.ip_unprivileged_port_start, which containerd 1.x does not by default.
WEBSERVER_PORT = 3000
# Where the RDS instance is until gpu-dagster-aws has created it: `deploy-values` shows this
# until given --postgres-host; the in-cluster unit must pass the real endpoint.
PENDING_POSTGRES_HOST = "rds-endpoint-from-gpu-dagster-aws"
TMP_DIR = "/tmp"
TMP_SIZE = "1Gi"  # Python's temp files, the compute logs' local copy before upload


class DeployError(UserError, ValueError):
    """A profile that cannot be deployed to a cluster, or a deploy setting that is wrong."""


# RDS for PostgreSQL 15 and later refuses unencrypted connections (rds.force_ssl defaults to 1,
# RDS user guide "Using SSL with a PostgreSQL DB instance"). `require` encrypts; verify-full
# would also need the RDS CA bundle in the image.
POSTGRES_PARAMS = {"sslmode": "require"}
POSTGRES_PORT = 5432  # RDS PostgreSQL's default; gpu-dagster-aws opens this port only


def _aws_spec(spec: Any) -> DagsterAwsSpec:
    """The Dagster part of a ClusterSpec (the in-cluster unit passes its own), else the default.

    It names the database, its user, and the service account of the webserver, daemon and code
    server, which EKS Pod Identity maps to an IAM role (gpu-dagster-aws). The run pods get their
    own account from the instance (instance.py RUN_SERVICE_ACCOUNT), the one the step-launcher
    Role is bound to."""
    return getattr(spec, "dagster_aws", None) or DagsterAwsSpec()


# The run_monitoring keys the chart's instance template renders (templates/configmap-instance.yaml
# at dagster 835892b4, the chart of the pinned schema): dagster.yaml name -> chart value name.
_CHART_RUN_MONITORING = {
    "enabled": "enabled",
    "start_timeout_seconds": "startTimeoutSeconds",
    "cancel_timeout_seconds": "cancelTimeoutSeconds",
    "max_resume_run_attempts": "maxResumeRunAttempts",
    "poll_interval_seconds": "pollIntervalSeconds",
    "free_slots_after_run_end_seconds": "freeSlotsAfterRunEndSeconds",
}
# run_retries: the template renders only enabled and max_retries; retry_on_asset_or_op_failure
# (infrastructure failures only) would be dropped, so such a block goes whole to
# additionalInstanceConfig and the chart's own block is switched off (no duplicate key).
_CHART_RUN_RETRIES = {"enabled": "enabled", "max_retries": "maxRetries"}
_CHART_S3_COMPUTE_LOGS = {
    "bucket": "bucket",
    "prefix": "prefix",
    "region": "region",
    "local_dir": "localDir",
    "upload_interval": "uploadInterval",
    "skip_empty_files": "skipEmptyFiles",
    "endpoint_url": "endpointUrl",
}
_RUN_K8S_CONFIG = {
    "container_config": "containerConfig",
    "pod_spec_config": "podSpecConfig",
    "pod_template_spec_metadata": "podTemplateSpecMetadata",
    "job_spec_config": "jobSpecConfig",
    "job_metadata": "jobMetadata",
}


def _renamed(block: dict[str, Any], names: dict[str, str]) -> dict[str, Any] | None:
    """The block in the chart's names, or None when the chart cannot render one of its keys."""
    if not set(block) <= set(names):
        return None
    return {names[key]: value for key, value in block.items()}


def _coordination_pools(profile: Profile) -> list[Any]:
    pools = [p for p in default_nodepools() if p.role == profile.nodepool_cpu]
    if not pools:
        raise DeployError(
            f"profile {profile.name!r}: nodepool_cpu={profile.nodepool_cpu!r} is not a role of the "
            "cluster's node pools (infra_assets/spec/kubernetes.py); the Dagster pods need it"
        )
    return pools


def _placement(profile: Profile) -> dict[str, Any]:
    """Affinity and tolerations that keep a long-lived Dagster pod on the cpu-coordination pools."""
    pools = _coordination_pools(profile)
    # The same required node affinity as the run pods (video_assets.pod_specs), so every
    # Dagster pod lands on the role's pools and nowhere else. No preference for the on-demand
    # pool: Karpenter then starts the cheapest node that fits, usually spot (about $52/month
    # against $130 on demand for a c6a.xlarge, infra_assets/cost.py). Webserver, daemon and code
    # server keep no state outside Postgres, so a spot reclaim costs a restart of a minute or two.
    affinity = run_pod_k8s_config(profile)["pod_spec_config"]["affinity"]
    # The pools' own taints (none at the time of writing: CPU nodes take any pod), so a taint
    # added to the pools in the spec is tolerated here without a second edit. The startup taint
    # (Cilium not ready) is deliberately not tolerated.
    tolerations = [
        {"key": t.key, "operator": "Equal", "value": t.value, "effect": t.effect}
        for pool in pools
        for t in pool.taints
    ]
    unique = [dict(t) for t in {tuple(sorted(t.items())) for t in tolerations}]
    return {"nodeSelector": {}, "affinity": affinity, "tolerations": sorted(unique, key=str)}


def _security(profile: Profile) -> dict[str, Any]:
    """Restricted Pod Security Standard: the run pods' contexts (non-root 10001, no capabilities,
    RuntimeDefault seccomp, read-only root filesystem)."""
    run_pod = run_pod_k8s_config(profile)
    return {
        "podSecurityContext": dict(run_pod["pod_spec_config"]["securityContext"]),
        "securityContext": dict(run_pod["container_config"]["securityContext"]),
    }


def _tmp_volume() -> dict[str, Any]:
    # The root filesystem is read-only; Python and the compute log manager write under /tmp.
    return {
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": TMP_SIZE}}],
        "volumeMounts": [{"name": "tmp", "mountPath": TMP_DIR}],
    }


def _resources(cpu: str, memory: str, memory_limit: str) -> dict[str, Any]:
    return {
        "requests": {"cpu": cpu, "memory": memory, "ephemeral-storage": "256Mi"},
        # /tmp (TMP_SIZE) and the container log both count against ephemeral storage.
        "limits": {"memory": memory_limit, "ephemeral-storage": "2Gi"},
    }


def postgres_settings(spec: Any = None, postgres_host: str | None = None) -> dict[str, Any]:
    """The `postgres` argument of cluster_instance: where the database is, never its password."""
    aws = _aws_spec(spec)
    return {
        "hostname": postgres_host or PENDING_POSTGRES_HOST,
        "port": POSTGRES_PORT,
        "username": aws.master_username,
        "db_name": aws.db_name,
        "params": dict(POSTGRES_PARAMS),
    }


def check_deployable(profile: Profile) -> None:
    if profile.execution != "k8s" or profile.storage != "s3":
        raise DeployError(
            f"the {profile.name} profile does not deploy to a cluster (execution "
            f"{profile.execution!r}, storage {profile.storage!r}); "
            "set GPU_ANALYSIS_PROFILE=staging for the cluster's values"
        )


def dagster_values(
    profile: Profile, spec: Any = None, *, postgres_host: str | None = None
) -> dict[str, Any]:
    """The chart values for this profile. Secrets appear only as references (Secret names).

    `spec`: the ClusterSpec (its `dagster_aws` part, a DagsterAwsSpec, names the database and the
    service account; the defaults otherwise). `postgres_host`: the RDS endpoint address that
    gpu-dagster-aws created; without it the values say PENDING_POSTGRES_HOST, which must not be
    applied (the in-cluster unit always passes it).
    """
    check_deployable(profile)
    instance = cluster_instance(
        profile,
        postgres=postgres_settings(spec, postgres_host),
        compute_logs_bucket=profile.bucket,
    )
    service_account = _aws_spec(spec).service_account
    extra: dict[str, Any] = {}  # what goes to additionalInstanceConfig
    placement = _placement(profile)
    security = _security(profile)
    image = _image_of(profile.image)
    pod = {**placement, **security, **_tmp_volume()}

    # Storage: the chart renders run, event log and schedule storage from `postgresql`.
    db = instance.pop("storage")["postgres"]["postgres_db"]
    if db.get("password") != {"env": "DAGSTER_PG_PASSWORD"}:
        raise DeployError(
            "instance.py: the chart always reads the Postgres password from DAGSTER_PG_PASSWORD"
        )
    postgresql = {
        "enabled": False,  # external: RDS in the database subnets (gpu-dagster-aws)
        "postgresqlHost": db["hostname"],
        "postgresqlUsername": db["username"],
        "postgresqlDatabase": db["db_name"],
        "postgresqlParams": db.get("params", {}),
        # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; the image has psycopg2.
        "postgresqlScheme": db["scheme"],
        "service": {"port": db["port"]},
    }

    launcher = instance.pop("run_launcher")
    if launcher["class"] != "K8sRunLauncher":
        raise DeployError(f"instance.py: run launcher {launcher['class']}; the chart needs K8s")
    lc = dict(launcher["config"])
    run_k8s = {_RUN_K8S_CONFIG[k]: v for k, v in lc.get("run_k8s_config", {}).items()}
    # The chart sets service_account_name to its own account; the run pods' own account goes
    # in the pod spec, which dagster-k8s applies over it (dagster_k8s/job.py, pod_spec_config).
    run_k8s["podSpecConfig"] = {
        **run_k8s.get("podSpecConfig", {}),
        "serviceAccountName": lc["service_account_name"],
    }
    k8s_run_launcher = {
        "jobNamespace": lc["job_namespace"],
        "loadInclusterConfig": lc["load_incluster_config"],
        "imagePullPolicy": lc["image_pull_policy"],
        "failPodOnRunFailure": lc.get("fail_pod_on_run_failure", False),
        # The run pods need the profile and the region (instance.py says which); the code
        # server's other settings stay out of them (includeConfigInLaunchedRuns is off below),
        # their pod comes from run_k8s_config.
        "envVars": list(lc["env_vars"]),
        "envConfigMaps": [],
        "envSecrets": [],
        "volumeMounts": [],
        "volumes": [],
        "runK8sConfig": run_k8s,
    }
    if lc.get("job_image"):
        k8s_run_launcher["image"] = _image_of(lc["job_image"])

    compute = instance.pop("compute_logs")
    s3_logs = _renamed(compute["config"], _CHART_S3_COMPUTE_LOGS)
    if compute["class"] != "S3ComputeLogManager" or s3_logs is None:
        raise DeployError(f"instance.py: compute logs {compute} cannot be said in chart values")
    s3_logs.setdefault("localDir", f"{TMP_DIR}/dagster-compute-logs")

    monitoring = _renamed(instance.pop("run_monitoring", {"enabled": False}), _CHART_RUN_MONITORING)
    if monitoring is None:
        raise DeployError("instance.py: run_monitoring has a key the chart cannot render")
    retries_block = instance.pop("run_retries", {"enabled": False})
    retries = _renamed(retries_block, _CHART_RUN_RETRIES)
    if retries is None:
        extra["run_retries"] = retries_block
        retries = {"enabled": False}

    coordinator = instance.pop("run_coordinator")
    if coordinator["class"] != "QueuedRunCoordinator" or coordinator.get("config"):
        raise DeployError(f"instance.py: run coordinator {coordinator} is not the plain queue")
    telemetry = instance.pop("telemetry", {"enabled": False})
    extra.update(instance)  # concurrency, nux, and anything the chart has no key for

    daemon = {
        "enabled": True,
        "image": image,
        "runCoordinator": {
            "enabled": True,
            "type": "QueuedRunCoordinator",
            "config": {"queuedRunCoordinator": {}},
        },
        "runMonitoring": monitoring,
        "runRetries": retries,
        "resources": _resources("250m", "512Mi", "1Gi"),
        **pod,
    }
    webserver = {
        "replicaCount": 1,
        "image": image,
        # ClusterIP only: reached through `kubectl port-forward` over the bootstrap tunnel or
        # from inside the VPC; nothing here needs a public endpoint.
        "service": {"type": "ClusterIP", "port": WEBSERVER_PORT},
        "resources": _resources("250m", "512Mi", "1Gi"),
        **pod,
    }
    user_deployment = {
        "name": CODE_LOCATION_NAME,
        "image": image,
        "codeServerArgs": ["-m", CODE_LOCATION_MODULE],
        "port": CODE_SERVER_PORT,
        # Off: otherwise the code server's resources and /tmp volume are merged into every run
        # pod, whose own pod (scratch on /tmp, 1 vCPU, do-not-disrupt) comes from run_k8s_config.
        "includeConfigInLaunchedRuns": {"enabled": False},
        "env": [{"name": "GPU_ANALYSIS_PROFILE", "value": profile.name}],
        "resources": _resources("250m", "1Gi", "2Gi"),
        **pod,
    }
    values: dict[str, Any] = {
        "global": {
            "serviceAccountName": service_account,
            "postgresqlSecretName": POSTGRES_PASSWORD_SECRET,
            "dagsterHome": DAGSTER_HOME,
        },
        "serviceAccount": {"create": True, "name": service_account, "annotations": {}},
        # The Secret is made from Secrets Manager by the in-cluster unit, never from a value.
        "generatePostgresqlPasswordSecret": False,
        "generateCeleryConfigSecret": False,
        "postgresql": postgresql,
        "dagsterWebserver": webserver,
        "dagsterDaemon": daemon,
        "dagster-user-deployments": {
            "enabled": True,
            "enableSubchart": True,
            "deployments": [user_deployment],
        },
        "runLauncher": {"type": "K8sRunLauncher", "config": {"k8sRunLauncher": k8s_run_launcher}},
        "computeLogManager": {
            "type": "S3ComputeLogManager",
            "config": {"s3ComputeLogManager": s3_logs},
        },
        "telemetry": {"enabled": bool(telemetry.get("enabled", False))},
        "rabbitmq": {"enabled": False},
        "redis": {"enabled": False},
        "flower": {"enabled": False},
        "ingress": {"enabled": False},
        # Off, as the chart ships it: dagster-postgres creates its tables at first connection
        # (should_autocreate_tables), and the migrate Job's spec is immutable, so leaving it on
        # breaks the next `helm upgrade`. docs/deploy.md says when to run it once.
        "migrate": {"enabled": False},
    }
    if extra:
        values["additionalInstanceConfig"] = extra
    # No shared sub-objects: a caller may edit one component, and YAML output has no anchors.
    values = json.loads(json.dumps(values))
    # instance.py names what the chart derives from the release: they must agree.
    if f"{RELEASE_NAME}-instance" != INSTANCE_CONFIG_MAP:
        raise DeployError(
            f"instance.py: INSTANCE_CONFIG_MAP {INSTANCE_CONFIG_MAP!r}, but release "
            f"{RELEASE_NAME!r} names it {RELEASE_NAME}-instance"
        )
    return values


def _image_of(reference: str) -> dict[str, Any]:
    """The chart's image value; a digest renders as `repository:tag` in the chart's image helper,
    so `repo@sha256` + `<hex>` gives back `repo@sha256:<hex>`."""
    repository, tag = split_image(reference)
    if tag.startswith("sha256:"):
        return {
            "repository": f"{repository}@sha256",
            "tag": tag.removeprefix("sha256:"),
            "pullPolicy": "IfNotPresent",
        }
    return {"repository": repository, "tag": tag, "pullPolicy": "IfNotPresent"}


__all__ = [
    "CHART_NAME",
    "CHART_REPOSITORY",
    "COMPUTE_LOGS_PREFIX",
    "PENDING_POSTGRES_HOST",
    "RELEASE_NAME",
    "DeployError",
    "check_deployable",
    "dagster_values",
    "postgres_settings",
]
