"""deploy/: the worker image runs as the pods' non-root user; the manifests are valid 1.32."""

from __future__ import annotations

import re

import kubernetes_validate
import yaml

from gpu_analysis.profile import load_profile
from tests.conftest import REPO_ROOT
from video_assets.pod_specs import WORKER_SERVICE_ACCOUNT, WORKER_UID

DEPLOY = REPO_ROOT / "deploy"


def manifests() -> list[dict]:
    return [
        doc
        for path in sorted((DEPLOY / "k8s").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def test_manifests_validate_against_kubernetes_1_32():
    docs = manifests()
    assert {d["kind"] for d in docs} == {
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }
    for doc in docs:
        kubernetes_validate.validate(doc, "1.32", strict=True)


def test_service_account_is_the_one_the_step_pods_use():
    namespace = load_profile("staging").namespace
    [account] = [
        d
        for d in manifests()
        if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == WORKER_SERVICE_ACCOUNT
    ]
    assert account["metadata"]["namespace"] == namespace
    assert account["metadata"]["labels"]["app.kubernetes.io/name"] == "gpu-analysis"
    assert account["automountServiceAccountToken"] is False


def test_launcher_role_grants_only_what_pipes_k8s_client_calls():
    [role] = [d for d in manifests() if d["kind"] == "Role"]
    granted = {(r["resources"][0], verb) for r in role["rules"] for verb in r["verbs"]}
    assert granted == {
        ("pods", "create"),
        ("pods", "get"),
        ("pods", "list"),
        ("pods", "delete"),
        ("pods/log", "get"),
        ("events", "list"),
    }


def test_worker_image_runs_as_the_pods_non_root_user():
    dockerfile = (DEPLOY / "worker.Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", dockerfile, flags=re.MULTILINE)
    assert users == [f"{WORKER_UID}:{WORKER_UID}"]
    assert f"--uid {WORKER_UID}" in dockerfile
