"""The run pods may launch the step pods of video_assets.pod_specs and nothing else.

Requests are decided as a Kubernetes 1.32 API server decides them: authorization by RBAC (the
Role/RoleBinding rules), then mutating admission (what EKS adds to every pod), then validating
admission: every ValidatingAdmissionPolicy whose binding, match constraints and match
conditions select the request evaluates its CEL validations on `object`, `oldObject` and
`request` (Kubernetes docs, "Validating Admission Policy": matchConstraints, matchConditions,
validations, failurePolicy; `object` is null on DELETE and `oldObject` on CREATE). The CEL is
evaluated with cel-python, as the CRD rules of tests/upstream are; a validation that calls a
function this evaluator lacks fails the test instead of passing unevaluated.
"""

from __future__ import annotations

import copy
import dataclasses
import ipaddress
import re
from typing import Any

import celpy
import kubernetes.client
import kubernetes_validate
import pytest
import yaml
from celpy import celtypes
from celpy.evaluation import CELEvalError
from dagster_k8s.pipes import build_pod_body

from gpu_analysis.deploy.instance import RUN_SERVICE_ACCOUNT
from gpu_analysis.profile import load_profile
from infra_assets import dagster_manifests, manifests
from infra_assets.resources import InfraResource
from tests.conftest import REPO_ROOT
from tests.upstream import crd
from tests.upstream.kube_cel import (
    KUBERNETES_FUNCTIONS,
    SUPPORTED,
    _called_functions_and_identifiers,
)
from video_assets.pod_specs import STEPS, WORKER_SERVICE_ACCOUNT, run_pod_k8s_config, step_pod

PROFILE = load_profile("staging")
SPEC = InfraResource.from_profile(PROFILE).cluster_spec()
NAMESPACE = PROFILE.namespace
RUN_USER = f"system:serviceaccount:{NAMESPACE}:{RUN_SERVICE_ACCOUNT}"
WORKERS_YAML = REPO_ROOT / "deploy" / "k8s" / "workers.yaml"
_CEL = celpy.Environment()


# ---- the API server's decision, emulated ---------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Request:
    operation: str  # CREATE, UPDATE, DELETE
    user: str
    object: dict | None = None
    old_object: dict | None = None
    resource: str = "pods"
    namespace: str = NAMESPACE

    def verb(self) -> str:
        return {"CREATE": "create", "UPDATE": "update", "DELETE": "delete"}[self.operation]

    def admission_request(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "namespace": self.namespace,
            "resource": {"group": "", "version": "v1", "resource": self.resource},
            "subResource": "",
            "userInfo": {"username": self.user},
        }


def _program(expression: str):
    tree = _CEL.compile(expression)
    called, _ = _called_functions_and_identifiers(tree)
    unknown = sorted(called - SUPPORTED)
    assert not unknown, f"{expression!r} calls {unknown}: not implemented in tests/upstream"
    return _CEL.program(tree, functions=KUBERNETES_FUNCTIONS)


def _evaluate(expression: str, request: Request) -> bool | str:
    """True/False, or the evaluation error (which failurePolicy Fail turns into a refusal)."""
    activation = {
        "object": celpy.json_to_cel(request.object),
        "oldObject": celpy.json_to_cel(request.old_object),
        "request": celpy.json_to_cel(request.admission_request()),
    }
    try:
        result = _program(expression).evaluate(activation)
    except CELEvalError as error:
        return f"evaluation error: {error.args[0]}"
    if isinstance(result, CELEvalError):
        return f"evaluation error: {result.args[0]}"
    assert isinstance(result, celtypes.BoolType), f"{expression!r} returned {result!r}"
    return bool(result)


def _rbac_allows(objects: list[dict], request: Request) -> bool:
    """A Role bound to the user's service account grants the verb on the resource."""
    roles = {
        o["metadata"]["name"]: o
        for o in objects
        if o["kind"] == "Role" and o["metadata"].get("namespace") == request.namespace
    }
    for binding in (o for o in objects if o["kind"] == "RoleBinding"):
        if binding["metadata"].get("namespace") != request.namespace:
            continue
        subjects = {
            f"system:serviceaccount:{s.get('namespace', request.namespace)}:{s['name']}"
            for s in binding["subjects"]
            if s["kind"] == "ServiceAccount"
        }
        role = roles.get(binding["roleRef"]["name"])
        if request.user not in subjects or role is None:
            continue
        for rule in role["rules"]:
            if (
                "" in rule.get("apiGroups", [])
                and {request.resource, "*"} & set(rule.get("resources", []))
                and {request.verb(), "*"} & set(rule.get("verbs", []))
            ):
                return True
    return False


def _policy_matches(policy: dict, request: Request) -> bool:
    spec = policy["spec"]
    constraints = spec["matchConstraints"]
    selector = (constraints.get("namespaceSelector") or {}).get("matchLabels") or {}
    # The namespace's automatic label kubernetes.io/metadata.name is its name.
    if selector and selector != {"kubernetes.io/metadata.name": request.namespace}:
        return False
    if not any(
        "" in rule["apiGroups"]
        and request.resource in rule["resources"]
        and request.operation in rule["operations"]
        for rule in constraints["resourceRules"]
    ):
        return False
    # Every match condition must be true; one that errors counts against the request
    # (failurePolicy Fail).
    return all(_evaluate(c["expression"], request) is not False for c in spec["matchConditions"])


def policy_refusals(policy: dict, request: Request) -> list[str] | None:
    """None when the policy does not apply; else the messages of the validations that fail."""
    if not _policy_matches(policy, request):
        return None
    return [
        v["message"]
        for v in policy["spec"]["validations"]
        if _evaluate(v["expression"], request) is not True
    ]


def decide(objects: list[dict], request: Request) -> str:
    """ "allowed", "forbidden" (RBAC) or "denied: ..." (a bound admission policy)."""
    if not _rbac_allows(objects, request):
        return "forbidden"
    bound = {
        o["spec"]["policyName"]
        for o in objects
        if o["kind"] == "ValidatingAdmissionPolicyBinding"
        and "Deny" in o["spec"]["validationActions"]
    }
    for policy in objects:
        if policy["kind"] != "ValidatingAdmissionPolicy" or policy["metadata"]["name"] not in bound:
            continue
        refusals = policy_refusals(policy, request)
        if refusals:
            return "denied: " + "; ".join(refusals)
    return "allowed"


# ---- the pods --------------------------------------------------------------------------------


def launched_step_pod(step: str) -> dict[str, Any]:
    """The step pod as PipesK8sClient sends it, then as EKS's admission chain has changed it
    before validation: the Pod Identity webhook's token volume, mount and environment (EKS user
    guide, "Understand how EKS Pod Identity works") and DefaultTolerationSeconds' tolerations."""
    pod = step_pod(PROFILE, step)
    body = build_pod_body(
        pod_name=f"dagster-0123abcd-{step}-0123456789",
        image=PROFILE.image,
        command=["python", "-m", f"gpu_analysis.workers.{step}"],
        env_vars={"DAGSTER_PIPES_CONTEXT": "eyJ4IjogMX0=", "DAGSTER_PIPES_MESSAGES": "e30="},
        base_pod_meta=pod.meta,
        base_pod_spec=pod.spec,
    )
    sent = kubernetes.client.ApiClient().sanitize_for_serialization(body)
    sent = {"apiVersion": "v1", "kind": "Pod", **sent}
    sent["metadata"]["namespace"] = NAMESPACE
    spec = sent["spec"]
    token_dir = "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount"
    spec["volumes"].append(
        {
            "name": dagster_manifests.POD_IDENTITY_TOKEN_VOLUME,
            "projected": {
                "sources": [
                    {
                        "serviceAccountToken": {
                            "audience": dagster_manifests.POD_IDENTITY_AUDIENCE,
                            "expirationSeconds": 86400,
                            "path": "eks-pod-identity-token",
                        }
                    }
                ]
            },
        }
    )
    for container in spec["containers"]:
        container["volumeMounts"].append(
            {"name": "eks-pod-identity-token", "mountPath": token_dir, "readOnly": True}
        )
        container["env"] += [
            {
                "name": "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "value": "http://169.254.170.23/v1/credentials",
            },
            {
                "name": "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                "value": f"{token_dir}/eks-pod-identity-token",
            },
        ]
    spec["tolerations"] += [
        {"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
        for key in dagster_manifests.DEFAULT_TOLERATION_KEYS
    ]
    return sent


def dagster_pod() -> dict[str, Any]:
    """A pod that is not a step pod: the chart's daemon."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "dagster-daemon-5d8f9",
            "namespace": NAMESPACE,
            "labels": {"app.kubernetes.io/name": "dagster", "component": "dagster-daemon"},
        },
        "spec": {
            "serviceAccountName": "dagster",
            "containers": [{"name": "dagster", "image": PROFILE.image}],
        },
    }


def _container(pod: dict) -> dict:
    return pod["spec"]["containers"][0]


def _tampered(change) -> dict:
    pod = launched_step_pod("infer")
    change(pod)
    return pod


# What a compromised run pod might try, each a change of a real step pod.
REFUSED_CREATES = {
    "another image": lambda p: _container(p).update(image="docker.io/library/busybox:1.36"),
    "another image in an init container": lambda p: p["spec"].update(
        initContainers=[{"name": "init", "image": "docker.io/library/busybox:1.36"}]
    ),
    "another service account": lambda p: p["spec"].update(serviceAccountName="dagster"),
    "another command": lambda p: _container(p).update(command=["sh", "-c", "env"]),
    "arguments added to the worker": lambda p: _container(p).update(args=["--debug"]),
    "a Secret volume": lambda p: p["spec"]["volumes"].append(
        {"name": "db", "secret": {"secretName": "dagster-postgresql-secret"}}
    ),
    "a hostPath volume": lambda p: p["spec"]["volumes"].append(
        {"name": "root", "hostPath": {"path": "/"}}
    ),
    "an API token volume": lambda p: p["spec"]["volumes"].append(
        {
            "name": "kube-api-access",
            "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]},
        }
    ),
    "a Secret in the environment": lambda p: _container(p)["env"].append(
        {
            "name": "PGPASSWORD",
            "valueFrom": {
                "secretKeyRef": {"name": "dagster-postgresql-secret", "key": "postgresql-password"}
            },
        }
    ),
    "envFrom a Secret": lambda p: _container(p).update(
        envFrom=[{"secretRef": {"name": "dagster-postgresql-secret"}}]
    ),
    "privileged": lambda p: _container(p)["securityContext"].update(privileged=True),
    "privilege escalation": lambda p: _container(p)["securityContext"].update(
        allowPrivilegeEscalation=True
    ),
    "an added capability": lambda p: _container(p)["securityContext"].update(
        capabilities={"add": ["NET_ADMIN"]}
    ),
    "the API token automounted": lambda p: p["spec"].update(automountServiceAccountToken=True),
    "the automount setting left out": lambda p: p["spec"].pop("automountServiceAccountToken"),
    "the host network": lambda p: p["spec"].update(hostNetwork=True),
    "a node chosen by hand": lambda p: p["spec"].update(nodeName="ip-10-152-0-10"),
    "a toleration of every taint": lambda p: p["spec"]["tolerations"].append(
        {"operator": "Exists"}
    ),
    "no step label": lambda p: p["metadata"]["labels"].pop("gpu-analysis/step"),
    "another step label": lambda p: p["metadata"]["labels"].update(
        {"gpu-analysis/step": "anything"}
    ),
    "a Dagster component's label": lambda p: p["metadata"]["labels"].update(
        component="dagster-webserver"
    ),
}


# ---- the policy the project renders ----------------------------------------------------------


def rendered() -> list[dict]:
    return dagster_manifests.access_objects(PROFILE, SPEC)


def shipped() -> list[dict]:
    return [d for d in yaml.safe_load_all(WORKERS_YAML.read_text()) if d]


@pytest.mark.parametrize("step", STEPS)
def test_the_real_step_pods_are_allowed(step):
    pod = launched_step_pod(step)
    assert decide(rendered(), Request("CREATE", RUN_USER, object=pod)) == "allowed"
    assert decide(rendered(), Request("DELETE", RUN_USER, old_object=pod)) == "allowed"


@pytest.mark.parametrize("case", sorted(REFUSED_CREATES))
def test_anything_else_is_refused(case):
    pod = _tampered(REFUSED_CREATES[case])
    decision = decide(rendered(), Request("CREATE", RUN_USER, object=pod))
    assert decision.startswith("denied: "), (case, decision)


def test_each_refusal_names_what_is_wrong():
    pod = _tampered(REFUSED_CREATES["another image"])
    decision = decide(rendered(), Request("CREATE", RUN_USER, object=pod))
    assert decision == f"denied: a step pod runs the project image {PROFILE.image} only"
    pod = _tampered(REFUSED_CREATES["a hostPath volume"])
    assert "no hostPath" in decide(rendered(), Request("CREATE", RUN_USER, object=pod))


def test_a_run_pod_deletes_step_pods_only():
    request = Request("DELETE", RUN_USER, old_object=dagster_pod())
    assert decide(rendered(), request).startswith("denied: a run pod deletes step pods only")


def test_a_run_pod_never_changes_a_pod():
    pod = launched_step_pod("preprocess")
    changed = copy.deepcopy(pod)
    _container(changed)["image"] = "docker.io/library/busybox:1.36"
    request = Request("UPDATE", RUN_USER, object=changed, old_object=pod)
    # RBAC grants no update; the policy refuses it even if a wider Role appeared.
    assert decide(rendered(), request) == "forbidden"
    [policy] = [o for o in rendered() if o["kind"] == "ValidatingAdmissionPolicy"]
    assert policy_refusals(policy, request) == ["the run pods' service account never changes a pod"]


def test_other_users_are_not_matched():
    """The chart's daemon, a person with kubectl, the job controller: not the run pods."""
    [policy] = [o for o in rendered() if o["kind"] == "ValidatingAdmissionPolicy"]
    pod = _tampered(REFUSED_CREATES["another image"])
    for user in (
        f"system:serviceaccount:{NAMESPACE}:dagster",
        "system:serviceaccount:kube-system:job-controller",
        "arn:aws:sts::222222222222:assumed-role/admin/alice",
    ):
        assert policy_refusals(policy, Request("CREATE", user, object=pod)) is None, user
    # Another namespace's pods are not the policy's business either.
    request = Request("CREATE", RUN_USER, object=pod, namespace="kube-system")
    assert policy_refusals(policy, request) is None


def test_the_policy_follows_the_profile_image():
    """The image is the profile's: a new tag in the profile is a new policy, not a stale one."""
    profile = dataclasses.replace(PROFILE, image=f"{PROFILE.image.rsplit(':', 1)[0]}:v2")
    policy = dagster_manifests.step_pod_admission_policy(profile, SPEC, "gpu-dagster")
    pod = launched_step_pod("infer")  # still the old image
    refusals = policy_refusals(policy, Request("CREATE", RUN_USER, object=pod))
    assert refusals == [f"a step pod runs the project image {profile.image} only"]


# ---- what the project ships: deploy/k8s/workers.yaml ----------------------------------------


def _pod_creators(objects: list[dict]) -> list[str]:
    """Every service account a shipped RoleBinding lets create pods."""
    probe = launched_step_pod("infer")
    users = {
        f"system:serviceaccount:{s.get('namespace', NAMESPACE)}:{s['name']}"
        for o in objects
        if o["kind"] == "RoleBinding"
        for s in o["subjects"]
    }
    return sorted(u for u in users if _rbac_allows(objects, Request("CREATE", u, object=probe)))


def test_the_shipped_rbac_lets_the_run_pods_launch_step_pods():
    objects = shipped()
    assert _pod_creators(objects) == [RUN_USER]
    for step in STEPS:
        pod = launched_step_pod(step)
        assert decide(objects, Request("CREATE", RUN_USER, object=pod)) == "allowed", step


@pytest.mark.parametrize("case", ["another image", "a Secret volume", "another service account"])
def test_the_shipped_rbac_refuses_other_pods(case):
    """Fails on the workers.yaml of before (a Role that let its account create any pod)."""
    objects = shipped()
    pod = _tampered(REFUSED_CREATES[case])
    for user in _pod_creators(objects):
        decision = decide(objects, Request("CREATE", user, object=pod))
        assert decision.startswith("denied: "), (user, decision)


def test_the_shipped_rbac_deletes_step_pods_only():
    objects = shipped()
    for user in _pod_creators(objects):
        decision = decide(objects, Request("DELETE", user, old_object=dagster_pod()))
        assert decision.startswith("denied: "), (user, decision)


def test_workers_yaml_is_what_the_unit_applies():
    """Regenerate with `python -m infra_assets.dagster_manifests > deploy/k8s/workers.yaml`."""
    assert WORKERS_YAML.read_text() == dagster_manifests.workers_yaml(PROFILE, SPEC)


# ---- schemas ---------------------------------------------------------------------------------


def test_rbac_and_admission_objects_validate_strictly_against_kubernetes_1_32():
    objects = rendered()
    assert [o["kind"] for o in objects] == [
        "ServiceAccount",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ]
    for obj in objects:
        kubernetes_validate.validate(obj, "1.32", strict=True)


def test_the_network_policies_are_accepted_by_the_real_cilium_crd():
    policies = dagster_manifests.network_policies(PROFILE, SPEC, "gpu-dagster")
    assert policies
    for policy in policies:
        crd.assert_valid(policy)


def test_the_step_pods_service_account_mounts_no_token():
    [worker] = [
        o
        for o in rendered()
        if o["kind"] == "ServiceAccount" and o["metadata"]["name"] == WORKER_SERVICE_ACCOUNT
    ]
    assert worker["automountServiceAccountToken"] is False


# ---- the network: who may talk to whom under default-deny ------------------------------------
#
# Cilium's verdict for the constructs these policies use (docs.cilium.io, "Policy Enforcement
# Modes" and "Layer 3/4 Examples"): an endpoint selected by a policy with an `ingress`
# (`egress`) section is default-deny in that direction, and a flow passes when some rule of a
# policy selecting the source allows its egress and some rule of a policy selecting the
# destination pod allows its ingress. A CiliumNetworkPolicy's selectors see its own namespace
# only unless they name one; a clusterwide policy's see every namespace. Labels of Kubernetes
# origin carry the source prefix `k8s:`; a key without a prefix matches any source. toFQDNs
# `*` matches within one DNS label ("Policy Language: DNS based").


NAMESPACE_KEY = "io.kubernetes.pod.namespace"


@dataclasses.dataclass(frozen=True)
class Pod:
    name: str
    labels: dict
    account: str
    namespace: str = NAMESPACE

    def cilium_labels(self) -> dict[str, str]:
        found = {f"k8s:{k}": v for k, v in self.labels.items()}
        found[f"k8s:{NAMESPACE_KEY}"] = self.namespace
        found[f"k8s:{dagster_manifests.CILIUM_SERVICE_ACCOUNT_LABEL}"] = self.account
        return found


@dataclasses.dataclass(frozen=True)
class Outside:
    """A destination outside the cluster's pods: an address (and name), or a Cilium entity."""

    ip: str = ""
    fqdn: str = ""
    entity: str = ""


def _key(key: str) -> str:
    return key if ":" in key.split("/")[0] else f"k8s:{key}"


def _selects(selector: dict, pod: Pod, policy_namespace: str | None) -> bool:
    labels = pod.cilium_labels()
    wanted = {_key(k): v for k, v in (selector.get("matchLabels") or {}).items()}
    names_namespace = f"k8s:{NAMESPACE_KEY}" in wanted or any(
        _key(e["key"]) == f"k8s:{NAMESPACE_KEY}" for e in selector.get("matchExpressions", [])
    )
    if policy_namespace and not names_namespace and pod.namespace != policy_namespace:
        return False
    if any(labels.get(k) != v for k, v in wanted.items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, op = _key(expression["key"]), expression["operator"]
        values = expression.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _ports_ok(rule: dict, port: int, protocol: str) -> bool:
    if "toPorts" not in rule:
        return True
    return any(
        p["port"] == str(port) and p.get("protocol", "ANY") in (protocol, "ANY")
        for entry in rule["toPorts"]
        for p in entry.get("ports", [])
    )


def _in(ip: str, cidr: str) -> bool:
    return ipaddress.ip_address(ip) in ipaddress.ip_network(cidr)


def _peer_ok(rule: dict, peer, direction: str, namespace: str | None) -> bool:
    endpoints = rule.get("toEndpoints" if direction == "egress" else "fromEndpoints") or []
    entities = rule.get("toEntities" if direction == "egress" else "fromEntities") or []
    if isinstance(peer, Pod):
        return any(_selects(s, peer, namespace) for s in endpoints)
    if peer.entity:
        return peer.entity in entities
    if any(_in(peer.ip, c) for c in rule.get("toCIDR", [])):
        return True
    for cidr_set in rule.get("toCIDRSet", []):
        if _in(peer.ip, cidr_set["cidr"]) and not any(_in(peer.ip, e) for e in cidr_set["except"]):
            return True
    for fqdn in rule.get("toFQDNs", []):
        pattern = re.escape(fqdn["matchPattern"]).replace(r"\*", "[-a-zA-Z0-9_]*")
        if peer.fqdn and re.fullmatch(pattern, peer.fqdn):
            return True
    return False


def _direction_ok(policies, pod: Pod, peer, direction: str, port: int, protocol: str) -> bool:
    governing = [
        p
        for p in policies
        if direction in p["spec"]
        and _selects(p["spec"]["endpointSelector"], pod, p["metadata"].get("namespace"))
    ]
    if not governing:
        return True  # no policy selects it in this direction: Cilium allows everything
    return any(
        _peer_ok(rule, peer, direction, p["metadata"].get("namespace"))
        and _ports_ok(rule, port, protocol)
        for p in governing
        for rule in p["spec"][direction]
    )


def flows(policies, source: Pod, destination, port: int, protocol: str = "TCP") -> bool:
    if not _direction_ok(policies, source, destination, "egress", port, protocol):
        return False
    if isinstance(destination, Pod):
        return _direction_ok(policies, destination, source, "ingress", port, protocol)
    return True


def _dagster(component: str, **labels: str) -> Pod:
    chart = {"app.kubernetes.io/name": "dagster", "app.kubernetes.io/instance": "dagster"}
    return Pod(component, {**chart, "component": component, **labels}, "dagster")


RUN_LABELS = {
    "app.kubernetes.io/name": "dagster",
    "app.kubernetes.io/component": "run_worker",
    "dagster/job": "process_match",
    **run_pod_k8s_config(PROFILE)["pod_template_spec_metadata"]["labels"],
}
PODS = {
    "webserver": _dagster("dagster-webserver"),
    "daemon": _dagster("dagster-daemon"),
    "user-code": _dagster("user-deployments", deployment="gpu-analysis"),
    "run": Pod("run", RUN_LABELS, RUN_SERVICE_ACCOUNT),
    "migrate": Pod(
        "migrate",
        {
            "batch.kubernetes.io/job-name": dagster_manifests.MIGRATE_JOB,
            "job-name": dagster_manifests.MIGRATE_JOB,
        },
        "dagster",
    ),
    **{
        f"step-{step}": Pod(
            f"step-{step}", launched_step_pod(step)["metadata"]["labels"], WORKER_SERVICE_ACCOUNT
        )
        for step in STEPS
    },
}
KUBE_DNS = Pod("kube-dns", {"k8s-app": "kube-dns"}, "coredns", namespace="kube-system")
POSTGRES = Outside(ip="10.152.112.25")  # an address in the database subnets (RDS)
S3 = Outside(ip="52.95.155.40", fqdn="s3.eu-west-3.amazonaws.com")
POD_IDENTITY_AGENT = Outside(ip="169.254.170.23")
API_SERVER = Outside(entity="kube-apiserver")
USER_CODE_PORT = 3030
WEBSERVER_PORT = 3000
STEPS_AND = [f"step-{s}" for s in STEPS]

ALLOWED = [
    *[(p, "user-code", USER_CODE_PORT) for p in ("webserver", "daemon")],
    *[(p, POSTGRES, 5432) for p in ("webserver", "daemon", "user-code", "run", "migrate")],
    *[(p, API_SERVER, 443) for p in ("webserver", "daemon", "run")],
    *[(p, S3, 443) for p in (*PODS,)],
    *[(p, POD_IDENTITY_AGENT, 80) for p in (*PODS,)],
]
REFUSED = [
    *[
        (s, p, port)
        for s in STEPS_AND
        for p in PODS
        if p != s  # a pod talking to itself never crosses its interface
        for port in (USER_CODE_PORT, WEBSERVER_PORT)
    ],
    *[
        (s, target, port)
        for s in STEPS_AND
        for target, port in ((POSTGRES, 5432), (API_SERVER, 443))
    ],
    ("run", "user-code", USER_CODE_PORT),
    ("run", "webserver", WEBSERVER_PORT),
    ("user-code", "webserver", WEBSERVER_PORT),
    ("daemon", "webserver", WEBSERVER_PORT),
    ("user-code", API_SERVER, 443),
    ("migrate", API_SERVER, 443),
    ("webserver", "user-code", 8080),
    ("daemon", "run", 8080),
    ("user-code", POSTGRES, 3306),
]


def all_policies() -> list[dict]:
    """What the cluster enforces: gpu-cilium's clusterwide policies and gpu-dagster's."""
    return [
        *manifests.network_policies(SPEC, "gpu-cilium"),
        *dagster_manifests.network_policies(PROFILE, SPEC, "gpu-dagster"),
    ]


def _name(peer) -> str:
    return peer if isinstance(peer, str) else (peer.entity or peer.fqdn or peer.ip)


@pytest.mark.parametrize(
    ("source", "destination", "port"), ALLOWED, ids=[f"{s}->{_name(d)}:{p}" for s, d, p in ALLOWED]
)
def test_the_dagster_components_reach_what_they_need(source, destination, port):
    target = PODS.get(destination, destination) if isinstance(destination, str) else destination
    assert flows(all_policies(), PODS[source], target, port)


@pytest.mark.parametrize(
    ("source", "destination", "port"), REFUSED, ids=[f"{s}->{_name(d)}:{p}" for s, d, p in REFUSED]
)
def test_and_nothing_more(source, destination, port):
    """Step pods reach nothing in the namespace, nor Postgres, nor the API; nothing reaches
    the webserver in-cluster; run pods need no code server (they load code from their image)."""
    target = PODS.get(destination, destination) if isinstance(destination, str) else destination
    assert not flows(all_policies(), PODS[source], target, port)


def test_every_pod_resolves_names():
    for pod in PODS.values():
        assert flows(all_policies(), pod, KUBE_DNS, 53, "UDP"), pod.name
