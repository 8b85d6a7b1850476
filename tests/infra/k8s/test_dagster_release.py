"""gpu-dagster against the Kubernetes API emulator, the fake helm and the local AWS (moto).

The Dagster database is an RDS instance with an RDS-managed master password in Secrets
Manager, as gpu-dagster-aws creates it; the unit reads its endpoint and copies the password
into the Secret the chart reads, never into a plan.
"""

from __future__ import annotations

import base64
import json

import boto3
import dagster
import pytest

from gpu_analysis.deploy.instance import POSTGRES_PASSWORD_SECRET, RUN_SERVICE_ACCOUNT
from gpu_analysis.deploy.values import CHART_NAME, CHART_REPOSITORY, RELEASE_NAME, dagster_values
from gpu_analysis.profile import load_profile
from infra_assets import dagster_manifests, manifests
from infra_assets.kube import Kube, ObjectRef, owner_labels
from infra_assets.plan import StalePlan
from infra_assets.resources import InfraResource
from infra_assets.unit import NoClusterConfigured, UnitContext
from infra_assets.units.aws_unit import UpstreamMissing
from infra_assets.units.dagster_aws import DagsterAwsUnit
from infra_assets.units.dagster_release import PASSWORD_VERSION_ANNOTATION, DagsterReleaseUnit
from tests.infra.k8s.conftest import FAKE_HELM, helm_calls
from tests.upstream.helm_values import dagster_values_errors as chart_errors

PROFILE = load_profile("staging")
SPEC = InfraResource.from_profile(PROFILE).cluster_spec()
NAMESPACE = PROFILE.namespace
RBAC = ("rbac.authorization.k8s.io", "v1")
ADMISSION = ("admissionregistration.k8s.io", "v1")
CNP = ("cilium.io", "v2", "ciliumnetworkpolicies")


@pytest.fixture
def cluster(kube_api):
    """The cluster as gpu-cilium leaves it: the workload namespace exists."""
    Kube(kube_api.api_client()).create(manifests.workload_namespace(SPEC, NAMESPACE, "gpu-cilium"))
    return kube_api


@pytest.fixture
def database(aws: boto3.Session) -> dict:
    """The Dagster Postgres as gpu-dagster-aws creates it (RDS manages the password)."""
    unit = DagsterAwsUnit(UnitContext(spec=SPEC, aws=aws))
    rds = aws.client("rds")
    rds.create_db_instance(
        DBInstanceIdentifier=unit.db_instance_id,
        DBInstanceClass="db.t4g.micro",
        Engine="postgres",
        DBName="dagster",
        MasterUsername="dagster",
        ManageMasterUserPassword=True,
        AllocatedStorage=20,
        Tags=[{"Key": k, "Value": v} for k, v in unit.tags("rds-instance/dagster").items()],
    )
    return rds.describe_db_instances(DBInstanceIdentifier=unit.db_instance_id)["DBInstances"][0]


@pytest.fixture
def ctx(cluster, helm_log, aws, database) -> UnitContext:
    return UnitContext(spec=SPEC, aws=aws, kube=cluster.api_client(), helm_binary=str(FAKE_HELM))


def password_in_secrets_manager(aws, database) -> str:
    arn = database["MasterUserSecret"]["SecretArn"]
    return json.loads(aws.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"])[
        "password"
    ]


def objects_of(store) -> dict[str, list[str]]:
    return {
        "serviceaccounts": store.names("serviceaccounts"),
        "roles": store.names("roles"),
        "rolebindings": store.names("rolebindings"),
        "validatingadmissionpolicies": store.names("validatingadmissionpolicies"),
        "validatingadmissionpolicybindings": store.names("validatingadmissionpolicybindings"),
        "ciliumnetworkpolicies": store.names("ciliumnetworkpolicies"),
        "secrets": store.names("secrets"),
    }


def test_the_chart_is_the_one_of_the_installed_dagster():
    """The chart's version is Dagster's own: bumping dagster must bump the chart."""
    assert dagster.__version__ == dagster_manifests.DAGSTER_CHART_VERSION


def test_first_apply_creates_everything_and_installs_the_official_chart(ctx, cluster, helm_log):
    unit = DagsterReleaseUnit(ctx)
    plan = unit.plan()
    assert plan.absent and not plan.conflicts, plan.as_text()
    # Objects in apply order, the release last; the password's value is in no plan line.
    assert [c.kind for c in plan.changes][-2:] == ["Secret", "helm-release"]
    password = password_in_secrets_manager(ctx.aws, ctx_database(ctx))
    assert password not in plan.as_text() and password not in json.dumps(plan.field_diffs())
    encoded = base64.b64encode(password.encode()).decode()
    assert encoded not in plan.as_text()

    result = unit.apply(plan)

    store = cluster.store
    found = objects_of(store)
    assert found["serviceaccounts"] == sorted(["gpu-analysis-worker", RUN_SERVICE_ACCOUNT])
    assert found["roles"] == found["rolebindings"] == [dagster_manifests.STEP_LAUNCHER]
    assert found["validatingadmissionpolicies"] == [dagster_manifests.STEP_LAUNCHER]
    assert found["validatingadmissionpolicybindings"] == [dagster_manifests.STEP_LAUNCHER]
    assert found["ciliumnetworkpolicies"] == [
        "dagster-daemon",
        "dagster-migrate",
        "dagster-run-pods",
        "dagster-user-code",
        "dagster-webserver",
    ]
    secret = store.get("", "v1", "secrets", NAMESPACE, POSTGRES_PASSWORD_SECRET)
    assert base64.b64decode(secret["data"]["postgresql-password"]).decode() == password
    [install] = helm_calls(helm_log)
    argv = install["argv"]
    assert argv[:4] == ["upgrade", "--install", RELEASE_NAME, CHART_NAME]
    assert argv[argv.index("--repo") + 1] == CHART_REPOSITORY
    assert argv[argv.index("--version") + 1] == dagster.__version__
    assert argv[argv.index("--namespace") + 1] == NAMESPACE
    host = ctx_database(ctx)["Endpoint"]["Address"]
    # The values are gpu_analysis.deploy.values' plus the password's version on the pods that
    # read it at start, and pass the chart's schema.
    arn = ctx_database(ctx)["MasterUserSecret"]["SecretArn"]
    version = ctx.aws.client("secretsmanager").get_secret_value(SecretId=arn)["VersionId"]
    values = install["values"]
    annotated = [
        values["dagsterWebserver"],
        values["dagsterDaemon"],
        *values["dagster-user-deployments"]["deployments"],
    ]
    for pod in annotated:
        assert pod.pop("annotations") == {PASSWORD_VERSION_ANNOTATION: version}
    assert values == dagster_values(PROFILE, SPEC, postgres_host=host)
    assert chart_errors(install["values"]) == []
    assert install["values"]["postgresql"]["postgresqlHost"] == host
    assert password not in json.dumps(install["values"])
    assert result.outputs["postgres_host"] == host


def ctx_database(ctx) -> dict:
    unit = DagsterAwsUnit(UnitContext(spec=SPEC, aws=ctx.aws))
    rds = ctx.aws.client("rds")
    return rds.describe_db_instances(DBInstanceIdentifier=unit.db_instance_id)["DBInstances"][0]


def test_a_second_apply_plans_and_does_nothing(ctx, cluster, helm_log):
    DagsterReleaseUnit(ctx).apply()
    requests = len(cluster.store.requests)
    plan = DagsterReleaseUnit(ctx).plan()
    assert not plan.has_changes, plan.as_text()
    DagsterReleaseUnit(ctx).apply()
    writes = [m for m, _ in cluster.store.requests[requests:] if m != "GET"]
    assert writes == []
    assert len(helm_calls(helm_log)) == 1


def test_a_widened_role_is_drift_and_is_narrowed_again(ctx, cluster):
    DagsterReleaseUnit(ctx).apply()
    store = cluster.store
    role = store.get(*RBAC, "roles", NAMESPACE, dagster_manifests.STEP_LAUNCHER)
    role["rules"] = [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]
    store.put(*RBAC, "roles", NAMESPACE, role)

    plan = DagsterReleaseUnit(ctx).plan()
    [change] = plan.pending
    assert (change.action, change.kind) == ("update", "Role")
    assert [d.path for d in change.diffs] == ["rules"]
    DagsterReleaseUnit(ctx).apply(plan)

    fixed = store.get(*RBAC, "roles", NAMESPACE, dagster_manifests.STEP_LAUNCHER)
    want = dagster_manifests.step_launcher_role(PROFILE, SPEC, "gpu-dagster")
    assert fixed["rules"] == want["rules"]
    assert not DagsterReleaseUnit(ctx).plan().has_changes


def test_a_deleted_policy_is_drift_and_is_put_back(ctx, cluster):
    DagsterReleaseUnit(ctx).apply()
    kube = Kube(ctx.kube)
    kube.delete(ObjectRef("ValidatingAdmissionPolicyBinding", dagster_manifests.STEP_LAUNCHER))
    kube.delete(ObjectRef("CiliumNetworkPolicy", "dagster-run-pods", NAMESPACE))

    plan = DagsterReleaseUnit(ctx).plan()
    assert sorted((c.action, c.kind, c.name) for c in plan.pending) == [
        ("create", "CiliumNetworkPolicy", f"{NAMESPACE}/dagster-run-pods"),
        ("create", "ValidatingAdmissionPolicyBinding", dagster_manifests.STEP_LAUNCHER),
    ]
    DagsterReleaseUnit(ctx).apply(plan)
    assert not DagsterReleaseUnit(ctx).plan().has_changes


def test_a_policy_edited_by_hand_is_put_back(ctx, cluster):
    """Someone drops the image check from the admission policy: drift, repaired."""
    DagsterReleaseUnit(ctx).apply()
    store = cluster.store
    policy = store.get(
        *ADMISSION, "validatingadmissionpolicies", "", dagster_manifests.STEP_LAUNCHER
    )
    policy["spec"]["validations"] = policy["spec"]["validations"][:1]
    store.put(*ADMISSION, "validatingadmissionpolicies", "", policy)

    plan = DagsterReleaseUnit(ctx).plan()
    [change] = plan.pending
    assert (change.kind, [d.path for d in change.diffs]) == (
        "ValidatingAdmissionPolicy",
        ["spec.validations"],
    )
    DagsterReleaseUnit(ctx).apply(plan)
    assert not DagsterReleaseUnit(ctx).plan().has_changes


def test_a_rotated_password_is_copied_again_without_showing_it(ctx, cluster, aws, database):
    DagsterReleaseUnit(ctx).apply()
    arn = database["MasterUserSecret"]["SecretArn"]
    rotated = json.dumps({"username": "dagster", "password": "rotated-0123456789"})
    aws.client("secretsmanager").put_secret_value(SecretId=arn, SecretString=rotated)

    plan = DagsterReleaseUnit(ctx).plan()
    # The Secret is copied again and the pods that read it at start are restarted by the
    # release's upgrade (a new password version on their templates).
    secret_change, release_change = plan.pending
    assert (secret_change.action, secret_change.kind) == ("update", "Secret")
    assert (release_change.action, release_change.kind) == ("update", "helm-release")
    version = f'annotations["{PASSWORD_VERSION_ANNOTATION}"]'
    assert {d.path for d in release_change.diffs} == {
        f"values.dagsterWebserver.{version}",
        f"values.dagsterDaemon.{version}",
        "values.dagster-user-deployments.deployments",  # a list: one field, replaced whole
    }
    assert "rotated-0123456789" not in plan.as_text()
    DagsterReleaseUnit(ctx).apply(plan)
    secret = cluster.store.get("", "v1", "secrets", NAMESPACE, POSTGRES_PASSWORD_SECRET)
    assert base64.b64decode(secret["data"]["postgresql-password"]) == b"rotated-0123456789"
    assert not DagsterReleaseUnit(ctx).plan().has_changes


def test_values_changed_behind_helm_are_drift(ctx, cluster, helm_log):
    DagsterReleaseUnit(ctx).apply()
    # The release as someone re-installed it by hand with an older chart.
    unit = DagsterReleaseUnit(ctx)
    labels = owner_labels(SPEC.stack, unit.name)
    unit.helm.upgrade_install(
        RELEASE_NAME, CHART_NAME, "1.13.0", NAMESPACE, {"dagsterWebserver": {}}, labels
    )
    plan = DagsterReleaseUnit(ctx).plan()
    [change] = plan.pending
    assert change.kind == "helm-release" and "chart.version" in [d.path for d in change.diffs]
    DagsterReleaseUnit(ctx).apply(plan)
    assert helm_calls(helm_log)[-1]["argv"][5] == dagster.__version__
    assert not DagsterReleaseUnit(ctx).plan().has_changes


def test_a_stale_plan_is_refused(ctx, cluster):
    plan = DagsterReleaseUnit(ctx).plan()
    DagsterReleaseUnit(ctx).apply()
    with pytest.raises(StalePlan):
        DagsterReleaseUnit(ctx).apply(plan)


def test_without_the_database_it_plans_and_refuses_to_apply(cluster, helm_log, aws):
    ctx = UnitContext(spec=SPEC, aws=aws, kube=cluster.api_client(), helm_binary=str(FAKE_HELM))
    unit = DagsterReleaseUnit(ctx)
    plan = unit.plan()
    assert any("apply gpu-dagster-aws first" in w for w in plan.warnings), plan.warnings
    with pytest.raises(UpstreamMissing, match=r"^error: gpu-dagster: .*apply gpu-dagster-aws"):
        unit.apply(plan)
    assert cluster.store.names("roles") == [] and helm_calls(helm_log) == []


def test_without_a_cluster_it_plans_and_refuses_to_apply(aws, database):
    unit = DagsterReleaseUnit(UnitContext(spec=SPEC, aws=aws, kube=None))
    plan = unit.plan()
    assert plan.absent and any("no Kubernetes cluster" in w for w in plan.warnings)
    with pytest.raises(NoClusterConfigured, match=r"^error: gpu-dagster: "):
        unit.apply(plan)


def test_teardown_removes_the_release_first_and_only_what_is_ours(ctx, cluster, helm_log):
    DagsterReleaseUnit(ctx).apply()
    store = cluster.store
    # Not ours: a Role of someone else in the namespace, a policy of another unit of the stack.
    store.put(*RBAC, "roles", NAMESPACE, {"metadata": {"name": "someone-elses"}, "rules": []})
    other = dict(dagster_manifests.network_policies(PROFILE, SPEC, "gpu-cilium")[0])
    other["metadata"] = {**other["metadata"], "name": "not-this-units"}
    store.put(*CNP, NAMESPACE, other)

    unit = DagsterReleaseUnit(ctx)
    preview = unit.destroy_plan()
    assert [c.kind for c in preview.changes][:2] == ["helm-release", "Secret"]
    assert all(c.action == "delete" for c in preview.changes)
    kinds = [c.kind for c in preview.changes]
    # Bindings before what they bind, service accounts last.
    assert kinds.index("ValidatingAdmissionPolicyBinding") < kinds.index(
        "ValidatingAdmissionPolicy"
    )
    assert kinds.index("RoleBinding") < kinds.index("Role") < kinds.index("ServiceAccount")
    assert objects_of(store) != {}  # the preview deleted nothing

    done = unit.destroy()
    assert done.changes == preview.changes
    assert [c["argv"][0] for c in helm_calls(helm_log)] == ["upgrade", "uninstall"]
    found = objects_of(store)
    assert found["roles"] == ["someone-elses"]
    assert found["ciliumnetworkpolicies"] == ["not-this-units"]
    assert found["serviceaccounts"] == found["rolebindings"] == []
    assert found["validatingadmissionpolicies"] == found["validatingadmissionpolicybindings"] == []
    assert found["secrets"] == []
    assert store.get("", "v1", "namespaces", "", NAMESPACE) is not None  # gpu-cilium's
    assert not DagsterReleaseUnit(ctx).destroy_plan().changes
