"""gpu-dagster: the Dagster deployment in the cluster.

Its Helm release from the official chart (values from gpu_analysis.deploy.values), the run and
step pods' service accounts, the step-launcher RBAC and its admission policy, the Cilium
policies of the Dagster components (infra_assets.dagster_manifests), and the Secret the chart
reads the Postgres password from, copied from the RDS-managed secret in Secrets Manager that
gpu-dagster-aws's database keeps. The password never appears in a plan, a log or the values:
the plan says only whether the Secret matches Secrets Manager.
"""

from __future__ import annotations

import base64
import json
from typing import Any, ClassVar

from botocore.exceptions import BotoCoreError, ClientError

from gpu_analysis.deploy.instance import POSTGRES_PASSWORD_SECRET
from gpu_analysis.deploy.values import (
    CHART_NAME,
    CHART_REPOSITORY,
    POSTGRES_PASSWORD_KEY,
    RELEASE_NAME,
    dagster_values,
)
from gpu_analysis.profile import load_profile
from infra_assets import dagster_manifests
from infra_assets.aws_access import AwsClients
from infra_assets.helm import ReleaseSpec, apply_release, plan_release
from infra_assets.kube import (
    ObjectRef,
    apply_objects,
    is_owned,
    owner_labels,
    plan_objects,
    plan_owned_deletes,
)
from infra_assets.plan import Change, FieldDiff, Plan
from infra_assets.spec import OWNER_TAG
from infra_assets.unit import UnitContext
from infra_assets.units.aws_unit import UpstreamMissing
from infra_assets.units.dagster_aws import DagsterDb, dagster_db_connection
from infra_assets.units.kube_unit import KubeUnit

# Chart versions equal Dagster versions (dagster-io/dagster helm/dagster/Chart.yaml is bumped
# with every release): the chart of the dagster this project pins.
CHART_VERSION = dagster_manifests.DAGSTER_CHART_VERSION
PASSWORD_FIELD = f"data[{json.dumps(POSTGRES_PASSWORD_KEY)}]"
# The Secrets Manager version of the password the pods were started with, on the pod templates
# of the webserver, daemon and code server: RDS rotates the managed password (every 7 days by
# default) and a pod reads DAGSTER_PG_PASSWORD once, when it starts, so a new version changes
# the release's values and the upgrade restarts those pods with the new Secret. Run pods read
# the Secret when they are launched. The version id is not secret.
PASSWORD_VERSION_ANNOTATION = "gpu-analysis/postgres-password-version"


class DagsterReleaseUnit(KubeUnit):
    """Dagster (webserver, daemon, user code, K8sRunLauncher) and what its pods may do."""

    name: ClassVar[str] = dagster_manifests.UNIT

    def __init__(self, ctx: UnitContext) -> None:
        super().__init__(ctx)
        # The profile the spec was made from (InfraResource: environment = profile name): the
        # image the step pods may run and the namespace come from it.
        self.profile = load_profile(self.spec.environment)
        self._db: DagsterDb | None = None
        self._db_problem: str | None = None
        self._current_password: tuple[str, str] | None = None  # (password, version id)

    # ---- what should be -------------------------------------------------------------------

    def database(self) -> DagsterDb | None:
        """The Dagster Postgres as RDS describes it (gpu-dagster-aws), None while it is
        missing or AWS cannot be asked (`_db_problem` says which)."""
        if self._db is None and self._db_problem is None:
            try:
                db = dagster_db_connection(self.ctx)
            except (BotoCoreError, ClientError) as error:
                self._db_problem = f"cannot read the Dagster database from AWS: {error}"
                return None
            if not db.hostname or not db.secret_arn:
                self._db_problem = (
                    f"the Dagster database {db.instance_id} does not exist yet (or has no "
                    "RDS-managed secret): apply gpu-dagster-aws first"
                )
                return None
            self._db = db
        return self._db

    def _release(self, with_values: bool = True) -> ReleaseSpec:
        return ReleaseSpec(
            name=RELEASE_NAME,
            namespace=self.profile.namespace,
            chart=CHART_NAME,
            version=CHART_VERSION,
            values=self._values() if with_values else {},
            repo=CHART_REPOSITORY,
        )

    def _values(self) -> dict[str, Any]:
        """The chart values for the live database (without one they name a pending host,
        which `_apply` refuses), with the password version on the long-lived pods."""
        db = self.database()
        values = dagster_values(self.profile, self.spec, postgres_host=db.hostname if db else None)
        if db is None:
            return values
        version = {PASSWORD_VERSION_ANNOTATION: self._password(db)[1]}
        pods = [
            values["dagsterWebserver"],
            values["dagsterDaemon"],
            *values["dagster-user-deployments"]["deployments"],
        ]
        for pod in pods:
            pod["annotations"] = {**pod.get("annotations", {}), **version}
        return values

    def _objects(self) -> list[dict]:
        return dagster_manifests.dagster_objects(self.profile, self.spec, self.name)

    def _password_ref(self) -> ObjectRef:
        return ObjectRef("Secret", POSTGRES_PASSWORD_SECRET, self.profile.namespace)

    def _password_secret(self, password: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": POSTGRES_PASSWORD_SECRET,
                "namespace": self.profile.namespace,
                "labels": owner_labels(self.stack, self.name),
            },
            "data": {POSTGRES_PASSWORD_KEY: base64.b64encode(password.encode()).decode()},
        }

    def _password(self, db: DagsterDb) -> tuple[str, str]:
        """The current master password of the RDS-managed secret ({"username", "password"})
        and its version id; read once per unit (plan or apply), kept in memory only."""
        if self._current_password is None:
            secrets = AwsClients(self.ctx).client("secretsmanager")
            value = secrets.get_secret_value(SecretId=db.secret_arn)
            password = json.loads(value["SecretString"])["password"]
            self._current_password = (password, value["VersionId"])
        return self._current_password

    # ---- what is, and what to do ------------------------------------------------------------

    def _plan_password(self) -> tuple[Change | None, str | None]:
        """The Secret compared with Secrets Manager, without either value in the plan."""
        db = self.database()
        source = f"(from Secrets Manager {db.secret_arn})" if db else "(from Secrets Manager)"
        ref = self._password_ref()
        live = self.kube.get(ref) if self.kube is not None else None
        if live is None:
            return Change("create", "Secret", str(ref), None, (
                FieldDiff(PASSWORD_FIELD, None, source),
            )), None  # fmt: skip
        if not is_owned(live, self.stack):
            return None, (
                f"Secret {ref} exists without label {OWNER_TAG}={self.stack}; delete it, or "
                f"label it {OWNER_TAG}={self.stack} to adopt it"
            )
        uid = live["metadata"].get("uid")
        if db is None:
            return Change("keep", "Secret", str(ref), uid), None
        have = (live.get("data") or {}).get(POSTGRES_PASSWORD_KEY)
        want = self._password_secret(self._password(db)[0])["data"][POSTGRES_PASSWORD_KEY]
        # RDS rotates the managed password (every 7 days by default): a stale copy is drift.
        diffs = () if have == want else (FieldDiff(PASSWORD_FIELD, "(stale)", source),)
        return Change("update" if diffs else "keep", "Secret", str(ref), uid, diffs), None

    def _warnings(self) -> list[str]:
        warnings = self.cluster_warnings()
        self.database()
        if self._db_problem:
            warnings.append(self._db_problem)
        if self.profile.namespace not in self.spec.cilium.workload_namespaces:
            warnings.append(
                f"namespace {self.profile.namespace} is not one of gpu-cilium's workload "
                f"namespaces ({', '.join(self.spec.cilium.workload_namespaces)}): nothing "
                "creates it or puts it under default-deny"
            )
        return warnings

    def plan(self) -> Plan:
        changes, conflicts = plan_objects(self.kube, self._objects(), self.spec.stack, self.name)
        password_change, password_conflict = self._plan_password()
        release_change, release_conflict, _ = plan_release(
            self.kube, self._release(), self.spec.stack
        )
        # In apply order: the release last.
        changes += [c for c in (password_change, release_change) if c is not None]
        conflicts += [c for c in (password_conflict, release_conflict) if c is not None]
        return Plan(self.name, tuple(changes), tuple(self._warnings()), tuple(conflicts))

    def _apply(self, plan: Plan) -> dict[str, str]:
        db = self.database()
        if db is None and plan.has_changes:
            raise UpstreamMissing(f"error: {self.name}: {self._db_problem}")
        # Objects first: the release's pods need their policies (Postgres, the user-code
        # server) under default-deny, their password Secret, and run pods their account.
        by_kind: dict[str, list[Change]] = {"Secret": [], "helm-release": []}
        objects = [c for c in plan.changes if c.kind not in by_kind]
        for change in plan.changes:
            by_kind.get(change.kind, []).append(change)
        apply_objects(self.kube, self._objects(), objects)
        for change in by_kind["Secret"]:
            secret = self._password_secret(self._password(db)[0]) if db else None
            if change.action == "create" and secret:
                self.kube.create(secret)
            elif change.action == "update" and secret:
                self.kube.merge_patch(self._password_ref(), {"data": secret["data"]})
        release = self._release()
        for change in by_kind["helm-release"]:
            apply_release(self.helm, release, change, owner_labels(self.stack, self.name))
        return {
            "dagster_release": release.ref,
            "dagster_chart_version": release.version,
            "postgres_host": db.hostname if db else "",
            "postgres_password_secret": str(self._password_ref()),
            "run_service_account": dagster_manifests.RUN_SERVICE_ACCOUNT,
            "step_launcher_policy": dagster_manifests.STEP_LAUNCHER,
            "network_policies": ",".join(
                o["metadata"]["name"]
                for o in dagster_manifests.network_policies(self.profile, self.spec, self.name)
            ),
        }

    def destroy_plan(self) -> Plan:
        """The release first (its pods stop while their policies still hold), then the
        password Secret and the objects in reverse apply order. Deletes nothing."""
        if self.kube is None:
            return Plan(self.name, (), tuple(self.cluster_warnings()))
        # Teardown needs the release's name and owner, not its values (nor the database).
        release = self._release(with_values=False)
        changes: list[Change] = []
        warnings: list[str] = []
        change, conflict, live = plan_release(self.kube, release, self.stack)
        if live is not None and change is None:
            warnings.append(f"left alone: {conflict}")
        elif live is not None:
            changes.append(Change("delete", "helm-release", release.ref, change.resource_id))
        secret = self.kube.get(self._password_ref())
        if secret is not None and is_owned(secret, self.stack):
            uid = secret["metadata"].get("uid")
            changes.append(Change("delete", "Secret", str(self._password_ref()), uid))
        elif secret is not None:
            warnings.append(f"left alone: Secret {self._password_ref()} is not ours")
        changes += plan_owned_deletes(self.kube, self._owned_kinds(), self.stack, self.name)
        return Plan(self.name, tuple(changes), tuple(warnings))
