"""Helm boundary: `helm upgrade --install`/`uninstall` via the CLI, live state from the cluster."""

# A release's live state (chart, version, values, status, labels) is read from the Secret in
# which Helm 3 stores it (type helm.sh/release.v1, data.release = gzip'd JSON, base64-encoded by
# Helm and once more by the Secret), so planning needs no helm binary, only the API.

from __future__ import annotations

import base64
import dataclasses
import gzip
import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import kubernetes.client

from infra_assets.kube import Kube, diff_live, leaves
from infra_assets.plan import Change, FieldDiff, diff_fields
from infra_assets.spec import OWNER_TAG

RELEASE_SECRET_TYPE = "helm.sh/release.v1"
HELM_TIMEOUT = "10m"


class HelmError(RuntimeError):
    """The helm CLI failed or is missing; the message says which command and what to do."""


@dataclasses.dataclass(frozen=True)
class HelmRelease:
    """The latest revision of one release, as Helm stored it in the cluster."""

    name: str
    namespace: str
    revision: int
    status: str  # deployed, failed, pending-upgrade, ...
    chart: str
    chart_version: str
    values: dict[str, Any]  # the user-supplied values (Helm's `config`)
    labels: dict[str, str]  # the storage Secret's labels (custom ones from --labels)


def decode_release(data_release: str) -> dict[str, Any]:
    """The release JSON from a Secret's `data.release` as the API returns it."""
    raw = base64.b64decode(data_release)
    if raw[:2] != b"\x1f\x8b":  # Helm's own base64 layer under the Secret's
        raw = base64.b64decode(raw)
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return json.loads(raw)


def read_release(kube: Kube, name: str, namespace: str) -> HelmRelease | None:
    """The highest revision of a release, or None if Helm never installed it here."""
    secrets = [
        s
        for s in kube.list("Secret", namespace, label_selector=f"owner=helm,name={name}")
        if s.get("type") == RELEASE_SECRET_TYPE
    ]
    if not secrets:
        return None
    latest = max(secrets, key=lambda s: int(s["metadata"]["labels"].get("version", "0")))
    release = decode_release(latest["data"]["release"])
    chart_meta = (release.get("chart") or {}).get("metadata") or {}
    return HelmRelease(
        name=name,
        namespace=namespace,
        revision=int(release.get("version", 0)),
        status=(release.get("info") or {}).get("status", "unknown"),
        chart=chart_meta.get("name", ""),
        chart_version=chart_meta.get("version", ""),
        values=release.get("config") or {},
        labels=dict(latest["metadata"].get("labels") or {}),
    )


class Helm:
    """Runs the helm CLI against the cluster behind one ApiClient."""

    def __init__(self, binary: str, api_client: kubernetes.client.ApiClient, log: Any = None):
        self.binary = binary
        self.api_client = api_client
        self.log = log

    def upgrade_install(
        self,
        release: str,
        chart: str,
        version: str,
        namespace: str,
        values: dict[str, Any],
        labels: dict[str, str],
        repo: str | None = None,
    ) -> None:
        with tempfile.TemporaryDirectory(prefix="gpu-analysis-helm-") as tmp:
            values_file = Path(tmp) / "values.json"  # JSON is YAML, and unambiguous
            values_file.write_text(json.dumps(values, indent=2))
            args = ["upgrade", "--install", release, chart, "--version", version]
            args += ["--namespace", namespace, "--values", str(values_file), "--reset-values"]
            args += ["--labels", ",".join(f"{k}={v}" for k, v in sorted(labels.items()))]
            args += ["--wait", "--timeout", HELM_TIMEOUT]
            if repo:
                args += ["--repo", repo]
            self._run(args, tmp)

    def uninstall(self, release: str, namespace: str) -> None:
        with tempfile.TemporaryDirectory(prefix="gpu-analysis-helm-") as tmp:
            self._run(["uninstall", release, "--namespace", namespace, "--wait"], tmp)

    def _run(self, args: list[str], tmp: str) -> None:
        kubeconfig = Path(tmp) / "kubeconfig.json"
        kubeconfig.write_text(json.dumps(kubeconfig_for(self.api_client)))
        kubeconfig.chmod(0o600)  # it may hold a bearer token
        command = [self.binary, *args, "--kubeconfig", str(kubeconfig)]
        if self.log:
            self.log.info("running: " + " ".join(command[:4]))
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=900)
        except FileNotFoundError:
            raise HelmError(
                f"error: helm binary {self.binary!r} not found; install helm 3.13+ or set "
                "UnitContext.helm_binary"
            ) from None
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise HelmError(
                f"error: helm {args[0]} {args[1] if args[0] == 'uninstall' else args[2]} "
                f"failed (exit {done.returncode}): {detail[0]}"
            )


def kubeconfig_for(api_client: kubernetes.client.ApiClient) -> dict[str, Any]:
    """A kubeconfig for the same server and credentials as the Python client (for helm)."""
    config = api_client.configuration
    if getattr(config, "refresh_api_key_hook", None):
        config.refresh_api_key_hook(config)  # an EKS exec-plugin token expires in minutes
    cluster: dict[str, Any] = {"server": config.host}
    if config.ssl_ca_cert:
        cluster["certificate-authority"] = config.ssl_ca_cert
    if not config.verify_ssl:
        cluster["insecure-skip-tls-verify"] = True
    if getattr(config, "tls_server_name", None):
        # Through a tunnel (gpu_analysis.deploy.bootstrap) the server is 127.0.0.1 and the
        # certificate names the endpoint: helm must check it against that name too.
        cluster["tls-server-name"] = config.tls_server_name
    user: dict[str, Any] = {}
    token = (config.api_key or {}).get("authorization") or (config.api_key or {}).get("BearerToken")
    if token:
        user["token"] = token.removeprefix("Bearer ").strip()
    if config.cert_file:
        user["client-certificate"] = config.cert_file
    if config.key_file:
        user["client-key"] = config.key_file
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "target", "cluster": cluster}],
        "users": [{"name": "target", "user": user}],
        "contexts": [{"name": "target", "context": {"cluster": "target", "user": "target"}}],
        "current-context": "target",
    }


@dataclasses.dataclass(frozen=True)
class ReleaseSpec:
    """What one release should be: chart, pinned version, values."""

    name: str
    namespace: str
    chart: str
    version: str
    values: dict[str, Any]
    repo: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


def plan_release(
    kube: Kube | None, want: ReleaseSpec, stack: str
) -> tuple[Change | None, str | None, HelmRelease | None]:
    """Compare a release with its live revision: chart version, status and values.

    Returns the change (None for a release that is not ours), the conflict when the release
    exists but is not ours, and the live release.
    """
    live = read_release(kube, want.name, want.namespace) if kube is not None else None
    if live is None:
        diffs = [FieldDiff("chart.version", None, want.version)]
        diffs += leaves(want.values, "values")
        return Change("create", "helm-release", want.ref, None, tuple(diffs)), None, None
    if live.labels.get(OWNER_TAG) != stack:
        return (
            None,
            f"helm release {want.ref} exists without label {OWNER_TAG}={stack}; uninstall it, or "
            f"label its release Secret {OWNER_TAG}={stack} to adopt it",
            live,
        )
    observed = {"chart": {"version": live.chart_version}, "status": live.status}
    desired = {"chart": {"version": want.version}, "status": "deployed"}
    # Values someone added by hand (`helm upgrade --reuse-values --set ...`) are drift too:
    # the upgrade with --reset-values drops them.
    diffs = diff_fields(observed, desired) + diff_live(live.values, want.values, ("values",))
    action = "update" if diffs else "keep"
    return (
        Change(action, "helm-release", want.ref, f"revision {live.revision}", tuple(diffs)),
        None,
        live,
    )


def apply_release(
    helm: Helm, want: ReleaseSpec, change: Change | None, labels: dict[str, str]
) -> None:
    """Install or upgrade when the plan says so. An upgrade also undoes edits of the live
    objects (a scaled Deployment): Helm 3 patches from the live state to the chart's manifest."""
    if change is not None and change.action in ("create", "update"):
        helm.upgrade_install(
            want.name, want.chart, want.version, want.namespace, want.values, labels, want.repo
        )


def destroy_release(
    kube: Kube, helm: Helm, want: ReleaseSpec, stack: str
) -> tuple[list[Change], list[str]]:
    """Uninstall the release if it exists and is ours; one that is not ours is left alone and
    reported as a warning."""
    change, conflict, live = plan_release(kube, want, stack)
    if live is None:
        return [], []
    if change is None:
        return [], [f"left alone: {conflict}"]
    helm.uninstall(want.name, want.namespace)
    return [Change("delete", "helm-release", want.ref, change.resource_id)], []
