"""Renders the in-cluster objects of the Dagster deployment besides its Helm release.

The service accounts of the step pods and the run pods, the narrowed step-launcher RBAC, the
admission policy that holds the run pods to launching step pods only, and the Cilium policies
that let the Dagster components talk under the cluster's default-deny and nothing more.
`python -m infra_assets.dagster_manifests` prints the RBAC and admission objects as YAML
(deploy/k8s/workers.yaml is that output for the staging profile).
"""

# Who is who in the namespace (names from the official chart, release "dagster"):
#   webserver    pods labelled component=dagster-webserver, service account "dagster"
#   daemon       pods labelled component=dagster-daemon, service account "dagster"
#   user code    pods labelled component=user-deployments (the gRPC code server)
#   run pods     pods of K8sRunLauncher's Jobs, service account RUN_SERVICE_ACCOUNT
#   step pods    pods that PipesK8sClient creates from a run pod, service account
#                WORKER_SERVICE_ACCOUNT (video_assets/pod_specs.py)
#   migrate      the chart's `dagster instance migrate` Job, labelled with its Job name
# Kubernetes RBAC can say "may create pods" but not "pods of this image and service account":
# the ValidatingAdmissionPolicy below says the rest, for requests of the run pods' account only.

from __future__ import annotations

import json
import sys
from typing import Any

import yaml
from dagster_k8s.utils import get_common_labels

from gpu_analysis.deploy.instance import RUN_SERVICE_ACCOUNT
from gpu_analysis.deploy.values import CODE_SERVER_PORT, RELEASE_NAME
from gpu_analysis.profile import Profile, load_profile
from infra_assets.kube import owner_labels
from infra_assets.spec import ClusterSpec
from video_assets.pod_specs import STEP_LABEL, STEPS, WORKER_SERVICE_ACCOUNT, step_pod

UNIT = "gpu-dagster"
STEP_LAUNCHER = "gpu-analysis-step-launcher"  # the Role, its binding, the policy and its binding
NETWORK_POLICY_PREFIX = "dagster"

# Chart versions equal Dagster versions (dagster-io/dagster bumps helm/dagster/Chart.yaml with
# every release): the chart of the dagster this project pins (a test holds them equal).
DAGSTER_CHART_VERSION = "1.13.27"
# The chart's pod label of the webserver, daemon and user-code pods (templates/
# deployment-daemon.yaml, helpers/_deployment-webserver.tpl, the user-deployments subchart).
COMPONENT_LABEL = "component"
WEBSERVER_COMPONENT = "dagster-webserver"
DAEMON_COMPONENT = "dagster-daemon"
USER_CODE_COMPONENT = "user-deployments"
POSTGRES_PORT = 5432
# The chart's migrate Job, `dagster.webserver.migrate`: "<release>-dagster-webserver-instance-
# migrate" (helm/dagster/templates/helpers/_helpers.tpl, job-instance-migrate.yaml).
MIGRATE_JOB = f"{RELEASE_NAME}-dagster-webserver-instance-migrate"

# Cilium labels every endpoint with its pod's service account (k8s:io.cilium.k8s.policy.
# serviceaccount, docs.cilium.io "Policy Language: Endpoints Based"): the same identity the
# RBAC and the admission policy use, which a pod cannot choose for itself.
CILIUM_SERVICE_ACCOUNT_LABEL = "io.cilium.k8s.policy.serviceaccount"

# EKS Pod Identity's webhook adds this projected token to every pod whose service account has
# an association, before validating admission runs (mutating admission comes first: Kubernetes
# docs, "Admission Control in Kubernetes", phases). The token's audience is the Pod Identity
# agent's (EKS user guide, "Understand how EKS Pod Identity works": the token mounted at
# /var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token).
POD_IDENTITY_TOKEN_VOLUME = "eks-pod-identity-token"
POD_IDENTITY_AUDIENCE = "pods.eks.amazonaws.com"
# The DefaultTolerationSeconds admission plugin (on by default) adds these NoExecute
# tolerations to every pod before validation (Kubernetes docs, "Admission Controllers").
DEFAULT_TOLERATION_KEYS = ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")


def run_pod_username(namespace: str) -> str:
    """The user name the API server gives requests made with the run pods' token."""
    return f"system:serviceaccount:{namespace}:{RUN_SERVICE_ACCOUNT}"


def _labels(spec: ClusterSpec, unit: str) -> dict[str, str]:
    return {**owner_labels(spec.stack, unit), "app.kubernetes.io/name": "gpu-analysis"}


def _meta(spec: ClusterSpec, unit: str, name: str, namespace: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    meta["labels"] = _labels(spec, unit)
    return meta


# ---- identities and RBAC -----------------------------------------------------------------


def service_accounts(profile: Profile, spec: ClusterSpec, unit: str) -> list[dict[str, Any]]:
    """The step pods' account (no API token: they never call the API; EKS Pod Identity gives
    them their AWS role) and the run pods' account (K8sRunLauncher's `service_account_name`;
    its token launches the step pods)."""
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": _meta(spec, unit, WORKER_SERVICE_ACCOUNT, profile.namespace),
            "automountServiceAccountToken": False,
        },
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": _meta(spec, unit, RUN_SERVICE_ACCOUNT, profile.namespace),
            "automountServiceAccountToken": True,
        },
    ]


# The calls PipesK8sClient makes from a run pod (dagster_k8s 0.29.27, pipes.py and client.py):
# create_namespaced_pod; read_namespaced_pod (wait_for_pod); list_namespaced_pod with a
# field selector (log consumption, get_pod_debug_info); read_namespaced_pod_log; list_namespaced_
# event (debug info of a failed pod); delete_namespaced_pod (in its `finally`). No watch, no
# patch, no update, no deletecollection, no exec.
STEP_LAUNCHER_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("pods", ("create", "get", "list", "delete")),
    ("pods/log", ("get",)),
    ("events", ("list",)),
)


def step_launcher_role(profile: Profile, spec: ClusterSpec, unit: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _meta(spec, unit, STEP_LAUNCHER, profile.namespace),
        "rules": [
            {"apiGroups": [""], "resources": [resource], "verbs": list(verbs)}
            for resource, verbs in STEP_LAUNCHER_RULES
        ],
    }


def step_launcher_binding(profile: Profile, spec: ClusterSpec, unit: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _meta(spec, unit, STEP_LAUNCHER, profile.namespace),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": STEP_LAUNCHER},
        "subjects": [
            {"kind": "ServiceAccount", "name": RUN_SERVICE_ACCOUNT, "namespace": profile.namespace}
        ],
    }


# ---- the admission policy ------------------------------------------------------------------


def _cel(value: Any) -> str:
    """A CEL literal (strings, lists of strings): JSON's string escapes are CEL's."""
    return json.dumps(value)


def _step_pods(profile: Profile) -> list[dict[str, Any]]:
    return [step_pod(profile, step).manifest() for step in STEPS]


def _allowed_volume_sources(profile: Profile) -> list[str]:
    """The volume sources the step pods use (emptyDir scratch): nothing else may be mounted."""
    return sorted(
        {key for pod in _step_pods(profile) for v in pod["spec"]["volumes"] for key in v} - {"name"}
    )


def _required_labels(profile: Profile) -> dict[str, list[str]]:
    """Each label of the step pods and the values it takes over the steps."""
    values: dict[str, set[str]] = {}
    for pod in _step_pods(profile):
        for key, value in pod["metadata"]["labels"].items():
            values.setdefault(key, set()).add(value)
    return {key: sorted(found) for key, found in sorted(values.items())}


def _tolerations(profile: Profile) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for pod in _step_pods(profile):
        for toleration in pod["spec"].get("tolerations", []):
            if toleration not in found:
                found.append(toleration)
    return found


def _on(operation: str, condition: str) -> str:
    return f"request.operation != '{operation}' || ({condition})"


def _all_containers(condition: str, pod: str = "object") -> str:
    """`condition` on every container and init container (`c`); no ephemeral containers."""
    return (
        f"{pod}.spec.containers.all(c, {condition}) && "
        f"(!has({pod}.spec.initContainers) || {pod}.spec.initContainers.all(c, {condition}))"
    )


def step_pod_validations(profile: Profile) -> list[dict[str, str]]:
    """The CEL validations: a run pod may create the step pods of video_assets.pod_specs
    (their service account, the project image, their volumes and labels) and delete only
    those; it never updates a pod."""
    image = profile.image
    commands = [c["command"] for pod in _step_pods(profile) for c in pod["spec"]["containers"]]
    volume_ok = " || ".join(f"has(v.{source})" for source in _allowed_volume_sources(profile))
    pod_identity_token = (
        f"(v.name == {_cel(POD_IDENTITY_TOKEN_VOLUME)} && has(v.projected) && "
        "v.projected.sources.all(s, has(s.serviceAccountToken) && "
        f"has(s.serviceAccountToken.audience) && "
        f"s.serviceAccountToken.audience == {_cel(POD_IDENTITY_AUDIENCE)}))"
    )
    labels = _required_labels(profile)
    label_text = ", ".join(f"{key}={'|'.join(values)}" for key, values in labels.items())
    allowed_keys = sorted({*labels, *get_common_labels()})
    label_checks = " && ".join(
        f"{_cel(key)} in object.metadata.labels && "
        + (
            f"object.metadata.labels[{_cel(key)}] == {_cel(values[0])}"
            if len(values) == 1
            else f"object.metadata.labels[{_cel(key)}] in {_cel(values)}"
        )
        for key, values in labels.items()
    )
    toleration_checks = " || ".join(
        [
            "("
            + " && ".join(
                f"has(t.{field}) && t.{field} == {_cel(value)}"
                for field, value in sorted(toleration.items())
            )
            + ")"
            for toleration in _tolerations(profile)
        ]
        + [
            f"(has(t.key) && t.key in {_cel(list(DEFAULT_TOLERATION_KEYS))} && "
            "has(t.effect) && t.effect == 'NoExecute')"
        ]
    )
    no_privilege = (
        "has(c.securityContext) && has(c.securityContext.privileged) && "
        "c.securityContext.privileged == false && "
        "has(c.securityContext.allowPrivilegeEscalation) && "
        "c.securityContext.allowPrivilegeEscalation == false && "
        "(!has(c.securityContext.capabilities) || !has(c.securityContext.capabilities.add))"
    )
    validations = [
        (
            "request.operation != 'UPDATE'",
            "the run pods' service account never changes a pod",
        ),
        (
            _on(
                "CREATE",
                "has(object.spec.serviceAccountName) && "
                f"object.spec.serviceAccountName == {_cel(WORKER_SERVICE_ACCOUNT)}",
            ),
            f"a step pod runs as service account {WORKER_SERVICE_ACCOUNT}",
        ),
        (
            _on(
                "CREATE",
                "has(object.spec.automountServiceAccountToken) && "
                "object.spec.automountServiceAccountToken == false",
            ),
            "a step pod mounts no Kubernetes API token (automountServiceAccountToken: false)",
        ),
        (
            _on(
                "CREATE",
                _all_containers(f"c.image == {_cel(image)}")
                + " && !has(object.spec.ephemeralContainers)",
            ),
            f"a step pod runs the project image {image} only",
        ),
        (
            # The image holds more than the workers (a shell, the Dagster CLI): the command
            # is part of what a step pod is.
            _on(
                "CREATE",
                "object.spec.containers.all(c, has(c.command) && !has(c.args) && "
                f"c.command in {_cel(commands)}) && !has(object.spec.initContainers)",
            ),
            "a step pod runs a step's worker (" + " | ".join(" ".join(c) for c in commands) + ")",
        ),
        (
            _on(
                "CREATE",
                "!has(object.spec.volumes) || object.spec.volumes.all(v, "
                f"{volume_ok} || {pod_identity_token})",
            ),
            "a step pod mounts its scratch emptyDir and the Pod Identity token only "
            "(no hostPath, Secret, ConfigMap or API token volumes)",
        ),
        (
            _on(
                "CREATE",
                _all_containers(
                    "!has(c.envFrom) && (!has(c.env) || c.env.all(e, !has(e.valueFrom)))"
                ),
            ),
            "a step pod reads no Secret or ConfigMap through its environment",
        ),
        (
            _on(
                "CREATE",
                _all_containers(no_privilege)
                + " && "
                + _all_containers("!has(c.ports) || c.ports.all(p, !has(p.hostPort))"),
            ),
            "a step pod's containers are unprivileged, without privilege escalation, added "
            "capabilities or host ports",
        ),
        (
            _on(
                "CREATE",
                "!(has(object.spec.hostNetwork) && object.spec.hostNetwork) && "
                "!(has(object.spec.hostPID) && object.spec.hostPID) && "
                "!(has(object.spec.hostIPC) && object.spec.hostIPC) && "
                "!has(object.spec.nodeName)",
            ),
            "a step pod shares no host namespace and is placed by the scheduler (no nodeName)",
        ),
        (
            _on(
                "CREATE",
                "!has(object.spec.tolerations) || "
                f"object.spec.tolerations.all(t, {toleration_checks})",
            ),
            "a step pod tolerates the GPU taint only: it cannot land on other pools' nodes",
        ),
        (
            _on(
                "CREATE",
                f"has(object.metadata.labels) && {label_checks} && "
                f"object.metadata.labels.all(k, k in {_cel(allowed_keys)})",
            ),
            f"a step pod carries the step pods' labels ({label_text}) and no others but "
            "Dagster's own",
        ),
        (
            _on(
                "DELETE",
                "has(oldObject.metadata.labels) && "
                f"{_cel(STEP_LABEL)} in oldObject.metadata.labels && "
                f"has(oldObject.spec.serviceAccountName) && "
                f"oldObject.spec.serviceAccountName == {_cel(WORKER_SERVICE_ACCOUNT)}",
            ),
            f"a run pod deletes step pods only (label {STEP_LABEL}, service account "
            f"{WORKER_SERVICE_ACCOUNT})",
        ),
    ]
    return [{"expression": expression, "message": message} for expression, message in validations]


def _namespace_selector(namespace: str) -> dict[str, Any]:
    # The API server sets this label on every namespace (GA in 1.22).
    return {"matchLabels": {"kubernetes.io/metadata.name": namespace}}


def step_pod_admission_policy(profile: Profile, spec: ClusterSpec, unit: str) -> dict[str, Any]:
    """Matches pod writes in the namespace; applies to the run pods' account only."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": _meta(spec, unit, STEP_LAUNCHER, None),
        "spec": {
            # A policy that cannot be evaluated refuses: a broken policy must not open the door.
            "failurePolicy": "Fail",
            "matchConstraints": {
                "namespaceSelector": _namespace_selector(profile.namespace),
                "resourceRules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE", "DELETE"],
                        "resources": ["pods", "pods/ephemeralcontainers"],
                    }
                ],
            },
            "matchConditions": [
                {
                    "name": "run-pods-only",
                    "expression": (
                        f"request.userInfo.username == {_cel(run_pod_username(profile.namespace))}"
                    ),
                }
            ],
            "validations": step_pod_validations(profile),
        },
    }


def step_pod_admission_binding(profile: Profile, spec: ClusterSpec, unit: str) -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": _meta(spec, unit, STEP_LAUNCHER, None),
        "spec": {
            "policyName": STEP_LAUNCHER,
            "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": _namespace_selector(profile.namespace)},
        },
    }


# ---- network policies ----------------------------------------------------------------------


def _by_component(component: str) -> dict[str, Any]:
    return {"matchLabels": {COMPONENT_LABEL: component}}


def _by_job(job: str) -> dict[str, Any]:
    # The Job controller labels its pods with their Job's name (Kubernetes docs, "Jobs":
    # batch.kubernetes.io/job-name, since 1.27); the chart gives the migrate pod no labels.
    return {"matchLabels": {"batch.kubernetes.io/job-name": job}}


def _by_account(account: str) -> dict[str, Any]:
    return {"matchLabels": {CILIUM_SERVICE_ACCOUNT_LABEL: account}}


def _tcp(port: int) -> list[dict[str, Any]]:
    return [{"ports": [{"port": str(port), "protocol": "TCP"}]}]


def network_policies(profile: Profile, spec: ClusterSpec, unit: str) -> list[dict[str, Any]]:
    """One CiliumNetworkPolicy per Dagster component: what it may reach and who may reach it.

    On top of the cluster-wide allowances of gpu-cilium (DNS, AWS APIs over HTTPS, the Pod
    Identity agent). Step pods get nothing here: they reach S3 and the Pod Identity agent only.
    The webserver accepts nothing in-cluster: operators reach it with `kubectl port-forward`,
    which the kubelet's container runtime serves from inside the pod's network namespace
    (containerd's CRI PortForward dials localhost there), so no packet crosses the pod's
    interface where Cilium enforces policy. An Ingress or load balancer would need its rule.
    """
    postgres = [
        {"toCIDR": [*spec.vpc.database_subnets], "toPorts": _tcp(POSTGRES_PORT)}
    ]  # the Dagster database (RDS) lives in the VPC's database subnets
    api_server = {"toEntities": ["kube-apiserver"]}
    user_code = {
        "toEndpoints": [_by_component(USER_CODE_COMPONENT)],
        "toPorts": _tcp(CODE_SERVER_PORT),
    }
    components = [
        (
            "webserver",
            _by_component(WEBSERVER_COMPONENT),
            "The webserver loads code from the user-code server, reads and writes Postgres, "
            "and calls the API (terminating a run deletes its Job). No in-cluster ingress.",
            {"egress": [user_code, *postgres, api_server]},
        ),
        (
            "daemon",
            _by_component(DAEMON_COMPONENT),
            "The daemon evaluates sensors and schedules on the user-code server, keeps run "
            "state in Postgres, and launches and monitors run Jobs through the API.",
            {"egress": [user_code, *postgres, api_server]},
        ),
        (
            "user-code",
            _by_component(USER_CODE_COMPONENT),
            "The user-code gRPC server answers the webserver and the daemon only, and reads "
            "the instance in Postgres.",
            {
                "ingress": [
                    {
                        "fromEndpoints": [
                            _by_component(WEBSERVER_COMPONENT),
                            _by_component(DAEMON_COMPONENT),
                        ],
                        "toPorts": _tcp(CODE_SERVER_PORT),
                    }
                ],
                "egress": postgres,
            },
        ),
        (
            "run-pods",
            _by_account(RUN_SERVICE_ACCOUNT),
            "Run pods load their code from their own image, write events to Postgres and "
            "launch, follow and delete step pods through the API; nothing reaches them.",
            {"egress": [*postgres, api_server]},
        ),
        (
            "migrate",
            _by_job(MIGRATE_JOB),
            "The chart's schema migration Job (dagster instance migrate) reaches Postgres only.",
            {"egress": postgres},
        ),
    ]
    return [
        {
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumNetworkPolicy",
            "metadata": {
                "name": f"{NETWORK_POLICY_PREFIX}-{name}",
                "namespace": profile.namespace,
                "labels": owner_labels(spec.stack, unit),
            },
            "spec": {"description": description, "endpointSelector": selector, **rules},
        }
        for name, selector, description, rules in components
    ]


# ---- all of them -----------------------------------------------------------------------------


def access_objects(profile: Profile, spec: ClusterSpec, unit: str = UNIT) -> list[dict[str, Any]]:
    """Service accounts, the step-launcher RBAC and its admission policy, in apply order (the
    policy before the binding that puts it in force)."""
    return [
        *service_accounts(profile, spec, unit),
        step_launcher_role(profile, spec, unit),
        step_launcher_binding(profile, spec, unit),
        step_pod_admission_policy(profile, spec, unit),
        step_pod_admission_binding(profile, spec, unit),
    ]


def dagster_objects(profile: Profile, spec: ClusterSpec, unit: str = UNIT) -> list[dict[str, Any]]:
    """Every plain object of the gpu-dagster unit, in apply order: the policies exist before
    the release starts pods that need them."""
    return [*access_objects(profile, spec, unit), *network_policies(profile, spec, unit)]


WORKERS_YAML_HEADER = """\
# Generated by `python -m infra_assets.dagster_manifests` for the staging profile: do not edit.
# The gpu-dagster unit (infra_assets/units/dagster_release.py) applies these objects, with the
# Dagster Helm release and its Cilium policies; this copy is for review and for a manual
# `kubectl apply -f deploy/k8s/workers.yaml`, which the unit then adopts (same labels).
# The step pods' service account, the run pods' service account, the Role that lets the run
# pods launch step pods, and the ValidatingAdmissionPolicy that holds them to the step pods of
# video_assets/pod_specs.py (image, service account, volumes, labels).
"""


def workers_yaml(profile: Profile, spec: ClusterSpec) -> str:
    documents = access_objects(profile, spec)
    body = yaml.safe_dump_all(documents, sort_keys=False, width=100, explicit_start=True)
    return WORKERS_YAML_HEADER + body


def main(argv: list[str]) -> int:
    from infra_assets.resources import InfraResource

    profile = load_profile(argv[0] if argv else "staging")
    sys.stdout.write(workers_yaml(profile, InfraResource.from_profile(profile).cluster_spec()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
