"""The Dagster chart values: the real chart schema, no secret, every pod on cpu-coordination."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from gpu_analysis.deploy import instance, values
from gpu_analysis.deploy.values import DeployError, dagster_values
from gpu_analysis.profile import load_profile, split_image
from infra_assets.spec import ClusterSpec
from infra_assets.spec.aws import DagsterAwsSpec
from infra_assets.spec.kubernetes import GPU_TAINT, NODEPOOL_LABEL, default_nodepools
from tests.conftest import REPO_ROOT
from tests.upstream.helm_values import dagster_values_errors
from video_assets.pod_specs import WORKER_UID

STAGING = load_profile("staging", env={})
RDS_HOST = "gpu-analysis-dagster.c9akciq32.eu-west-3.rds.amazonaws.com"


def staging_values(profile=STAGING) -> dict:
    return dagster_values(profile, postgres_host=RDS_HOST)


# --- the values ------------------------------------------------------------------------------


def test_the_staging_values_pass_the_chart_schema():
    assert dagster_values_errors(staging_values()) == []
    assert dagster_values_errors(dagster_values(STAGING)) == []  # before the database exists too


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        # a misspelt key where the schema is closed (Draft 7 additionalProperties: false)
        (lambda v: v["dagsterDaemon"].update(runMonitorring={"enabled": True}), "runMonitorring"),
        # a misspelt key where the schema is open: Helm would ignore it silently
        (
            lambda v: v["dagster-user-deployments"]["deployments"][0].update(codeServerArg=[]),
            "codeServerArg",
        ),
        (lambda v: v["postgresql"].update(postgresqlHostname="x"), "postgresqlHostname"),
        (lambda v: v.update(runLauncherr={}), "runLauncherr"),
        # a wrong type, a value outside an enum
        (lambda v: v["dagsterWebserver"]["service"].update(port="3000"), "'3000' is not of type"),
        (lambda v: v["runLauncher"].update(type="K8sLauncher"), "'K8sLauncher' is not one of"),
        (lambda v: v["computeLogManager"].update(type="S3"), "'S3' is not one of"),
        # a list item is not merged with defaults: its required keys must be there
        (
            lambda v: v["dagster-user-deployments"]["deployments"][0].pop("port"),
            "'port' is a required property",
        ),
    ],
)
def test_a_broken_value_is_refused_by_the_schema_check(edit, expected):
    broken = copy.deepcopy(staging_values())
    edit(broken)
    errors = dagster_values_errors(broken)
    assert any(expected in e for e in errors), errors


def _walk(node: Any, path: str = ""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}[{i}]")
    else:
        yield path, node


# Keys that may name a secret, and what the values may hold there: Secret names and switches.
SECRET_REFERENCE_PATHS = {
    "global.postgresqlSecretName": str,
    "generatePostgresqlPasswordSecret": bool,
    "generateCeleryConfigSecret": bool,
}


def test_no_secret_literal_anywhere_in_the_values(monkeypatch):
    # Credentials in the environment must not leak into what an operator prints and diffs.
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "hunter2-postgres")
    chart_values = staging_values()
    text = yaml.safe_dump(chart_values)
    assert "wJalrXUtnFEMI" not in text and "hunter2" not in text
    assert chart_values["generatePostgresqlPasswordSecret"] is False
    assert "postgresqlPassword" not in chart_values["postgresql"]
    assert chart_values["global"]["postgresqlSecretName"] == instance.POSTGRES_PASSWORD_SECRET
    secretish = re.compile(r"password|secret|token|credential|apikey|accesskey", re.I)
    for path, leaf in _walk(chart_values):
        name = re.sub(r"\[\d+\]", "", path)
        if secretish.search(name.rsplit(".", 1)[-1]):
            assert name in SECRET_REFERENCE_PATHS or name.endswith("envSecrets"), path
            if name in SECRET_REFERENCE_PATHS:
                assert isinstance(leaf, SECRET_REFERENCE_PATHS[name]), (path, leaf)
        if isinstance(leaf, str):
            assert not re.search(r"AKIA[0-9A-Z]{16}|://[^/\s:]+:[^@/\s]+@", leaf), (path, leaf)


def test_a_password_cannot_be_passed_into_the_values():
    # The values take only the host; the instance they are built from refuses a password.
    with pytest.raises(ValueError, match="pass no password"):
        instance.cluster_instance(
            STAGING,
            postgres={
                "hostname": RDS_HOST,
                "username": "dagster",
                "db_name": "dagster",
                "password": "hunter2",
            },
            compute_logs_bucket=STAGING.bucket,
        )


def _components(chart_values: dict) -> dict[str, dict]:
    """Each pod the chart starts, with where its spec comes from in the values."""
    run_pod = chart_values["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]
    components = {
        "webserver": chart_values["dagsterWebserver"],
        "daemon": chart_values["dagsterDaemon"],
        "run pod": {
            "affinity": run_pod["podSpecConfig"]["affinity"],
            "tolerations": run_pod["podSpecConfig"].get("tolerations", []),
            "nodeSelector": run_pod["podSpecConfig"].get("nodeSelector", {}),
            "podSecurityContext": run_pod["podSpecConfig"]["securityContext"],
            "securityContext": run_pod["containerConfig"]["securityContext"],
            "resources": run_pod["containerConfig"]["resources"],
        },
    }
    for deployment in chart_values["dagster-user-deployments"]["deployments"]:
        components[f"user code {deployment['name']}"] = deployment
    return components


def _pools_allowed(affinity: dict) -> set[str]:
    """The NodePools a required node affinity lets a pod run on (every term must say)."""
    terms = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    allowed: set[str] = set()
    for term in terms:
        pools = [
            set(e["values"])
            for e in term["matchExpressions"]
            if e["key"] == NODEPOOL_LABEL and e["operator"] == "In"
        ]
        assert pools, f"a node selector term without {NODEPOOL_LABEL} In [...]: {term}"
        allowed |= set.intersection(*pools)
    return allowed


def test_every_dagster_pod_lands_on_the_cpu_coordination_pools_only():
    coordination = [p for p in default_nodepools() if p.role == STAGING.nodepool_cpu]
    assert coordination, "the spec has no cpu-coordination pool"
    names = {p.name for p in coordination}
    taints = {(t.key, t.value, t.effect) for p in coordination for t in p.taints}
    components = _components(staging_values())
    assert set(components) >= {"webserver", "daemon", "run pod", "user code gpu-analysis"}
    for name, pod in components.items():
        assert _pools_allowed(pod["affinity"]) == names, name
        tolerated = {(t["key"], t.get("value"), t["effect"]) for t in pod["tolerations"]}
        assert tolerated == taints, name
        assert all(t["key"] != GPU_TAINT.key for t in pod["tolerations"]), name
        for label, value in pod.get("nodeSelector", {}).items():
            # a selector may only narrow to labels every coordination node carries
            assert all(p.labels.get(label) == value for p in coordination), (name, label)


def test_every_dagster_pod_is_restricted_and_non_root():
    for name, pod in _components(staging_values()).items():
        pod_ctx, ctx = pod["podSecurityContext"], pod["securityContext"]
        assert pod_ctx["runAsNonRoot"] is True and pod_ctx["runAsUser"] == WORKER_UID, name
        assert pod_ctx["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] == WORKER_UID, name
        assert ctx["allowPrivilegeEscalation"] is False, name
        assert ctx["capabilities"] == {"drop": ["ALL"]}, name
        assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert ctx["readOnlyRootFilesystem"] is True, name
        requests = pod["resources"]["requests"]
        assert requests["cpu"] and requests["memory"], name
        assert pod["resources"]["limits"]["memory"], name


def _images(chart_values: dict) -> list[tuple[str, dict]]:
    found = []

    def visit(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if "repository" in node and "pullPolicy" in node:
                found.append((path, node))
            for key, value in node.items():
                visit(value, f"{path}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                visit(value, f"{path}[{i}]")

    visit(chart_values, "")
    return found


def test_every_image_is_the_profiles_immutable_tag():
    repository, tag = split_image(STAGING.image)
    images = _images(staging_values())
    assert len(images) >= 4  # webserver, daemon, user code, run launcher
    for path, image in images:
        assert (image["repository"], image["tag"]) == (repository, tag), path
        assert image["tag"] not in ("", "latest", None), path


def test_a_digest_image_renders_as_the_same_digest():
    digest = "sha256:" + "ab" * 32
    repo = "222222222222.dkr.ecr.eu-west-3.amazonaws.com/gpu-analysis"
    profile = load_profile("staging", env={"GPU_ANALYSIS_IMAGE": f"{repo}@{digest}"})
    for path, image in _images(staging_values(profile)):
        # the chart's image helper prints "%s:%s" repository tag
        assert f"{image['repository']}:{image['tag']}" == f"{repo}@{digest}", path


def test_the_values_say_what_the_cluster_instance_says():
    chart_values = staging_values()
    daemon = chart_values["dagsterDaemon"]
    monitoring = {
        snake: daemon["runMonitoring"][camel]
        for snake, camel in values._CHART_RUN_MONITORING.items()
        if camel in daemon["runMonitoring"]
    }
    assert monitoring == instance.RUN_MONITORING
    extra = chart_values.get("additionalInstanceConfig", {})
    if "run_retries" in extra:  # the chart cannot render retry_on_asset_or_op_failure
        assert extra["run_retries"] == instance.RUN_RETRIES
        assert daemon["runRetries"] == {"enabled": False}  # no second run_retries key
    else:
        assert daemon["runRetries"] == {
            values._CHART_RUN_RETRIES[k]: v for k, v in instance.RUN_RETRIES.items()
        }
    logs = chart_values["computeLogManager"]["config"]["s3ComputeLogManager"]
    assert (logs["bucket"], logs["prefix"]) == (STAGING.bucket, instance.COMPUTE_LOGS_PREFIX)
    assert chart_values["postgresql"]["enabled"] is False
    assert chart_values["postgresql"]["postgresqlHost"] == RDS_HOST
    launcher = chart_values["runLauncher"]["config"]["k8sRunLauncher"]
    assert launcher["runK8sConfig"]["podSpecConfig"]["serviceAccountName"] == (
        instance.RUN_SERVICE_ACCOUNT
    )
    assert launcher["loadInclusterConfig"] is True
    assert launcher["jobNamespace"] == STAGING.namespace
    assert chart_values["global"]["dagsterHome"] == instance.DAGSTER_HOME
    assert f"{values.RELEASE_NAME}-instance" == instance.INSTANCE_CONFIG_MAP
    # Everything else of the instance reaches dagster.yaml through additionalInstanceConfig.
    full = instance.cluster_instance(
        STAGING,
        postgres=values.postgres_settings(postgres_host=RDS_HOST),
        compute_logs_bucket=STAGING.bucket,
    )
    rendered_by_chart = {
        "storage",
        "run_launcher",
        "compute_logs",
        "run_monitoring",
        "run_coordinator",
        "telemetry",
        "run_retries",
    }
    for key in set(full) - rendered_by_chart:
        assert extra[key] == full[key], key


def test_the_user_code_deployment_serves_the_code_location():
    (deployment,) = staging_values()["dagster-user-deployments"]["deployments"]
    assert deployment["codeServerArgs"] == ["-m", "gpu_analysis.definitions"]
    assert {"name": "GPU_ANALYSIS_PROFILE", "value": "staging"} in deployment["env"]


def test_the_local_profile_does_not_deploy():
    with pytest.raises(DeployError, match="local profile does not deploy to a cluster"):
        dagster_values(load_profile("local", env={}))


# --- gpu-analysis deploy-values ------------------------------------------------------------------


def _cli(*args: str, profile: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPU_ANALYSIS_")}
    env["GPU_ANALYSIS_PROFILE"] = profile
    return subprocess.run(
        [sys.executable, "-m", "gpu_analysis", "deploy-values", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_deploy_values_prints_the_values_yaml_of_the_active_profile():
    done = _cli("--postgres-host", RDS_HOST, profile="staging")
    assert done.returncode == 0, done.stderr
    printed = yaml.safe_load(done.stdout)
    assert printed == staging_values()
    assert dagster_values_errors(printed) == []


def test_deploy_values_without_a_host_says_where_the_host_comes_from():
    done = _cli(profile="staging")
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load(done.stdout)["postgresql"]["postgresqlHost"] == (
        values.PENDING_POSTGRES_HOST
    )
    assert "--postgres-host" in done.stderr  # a note, not part of the YAML


def test_deploy_values_on_the_local_profile_is_one_error_line():
    done = _cli(profile="local")
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "local profile does not deploy to a cluster" in lines[0]
    assert "GPU_ANALYSIS_PROFILE=staging" in lines[0]


def test_the_database_and_the_account_come_from_the_clusters_dagster_spec():
    # The in-cluster unit passes its ClusterSpec; its `dagster_aws` part (gpu-dagster-aws's spec)
    # names the database, its user and the Dagster pods' service account.
    aws = DagsterAwsSpec(db_name="runs", master_username="orchestrator", service_account="dg")
    spec = SimpleNamespace(dagster_aws=aws)
    chart_values = dagster_values(STAGING, spec, postgres_host=RDS_HOST)
    assert chart_values["postgresql"]["postgresqlDatabase"] == "runs"
    assert chart_values["postgresql"]["postgresqlUsername"] == "orchestrator"
    assert chart_values["global"]["serviceAccountName"] == "dg"
    assert chart_values["serviceAccount"]["name"] == "dg"
    # A ClusterSpec without a dagster part gets gpu-dagster-aws's defaults.
    default = dagster_values(STAGING, ClusterSpec(), postgres_host=RDS_HOST)
    assert default["global"]["serviceAccountName"] == DagsterAwsSpec().service_account
    assert default["postgresql"]["postgresqlDatabase"] == DagsterAwsSpec().db_name
