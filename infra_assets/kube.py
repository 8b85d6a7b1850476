"""Kubernetes boundary: read, create-or-patch and delete our objects via the official client."""

# Built-in and custom objects go through one path (`ApiClient.call_api` with the REST path of the
# object's group/version/plural), so a NodePool and a Namespace are planned and applied the same
# way. Ownership is the label `gpu-analysis/stack=<stack>`: an object without it is never patched
# or deleted, only reported.

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from typing import Any

import kubernetes.client
from kubernetes.client.exceptions import ApiException

from infra_assets.plan import Change, FieldDiff, Plan
from infra_assets.spec import OWNER_TAG

NO_CLUSTER_WARNING = "no Kubernetes cluster is configured (kubeconfig/in-cluster)"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
UNIT_LABEL = "gpu-analysis/unit"
MANAGED_BY = "gpu-analysis"
FIELD_MANAGER = "gpu-analysis"

# kind -> (group, version, plural, namespaced) for every kind the in-cluster units touch.
KINDS: dict[str, tuple[str, str, str, bool]] = {
    "Namespace": ("", "v1", "namespaces", False),
    "Node": ("", "v1", "nodes", False),
    "Secret": ("", "v1", "secrets", True),
    "Deployment": ("apps", "v1", "deployments", True),
    "PodDisruptionBudget": ("policy", "v1", "poddisruptionbudgets", True),
    "NodePool": ("karpenter.sh", "v1", "nodepools", False),
    "EC2NodeClass": ("karpenter.k8s.aws", "v1", "ec2nodeclasses", False),
    "CiliumClusterwideNetworkPolicy": (
        "cilium.io",
        "v2",
        "ciliumclusterwidenetworkpolicies",
        False,
    ),
    # What gpu-dagster applies besides its Helm release (infra_assets.dagster_manifests).
    "ServiceAccount": ("", "v1", "serviceaccounts", True),
    "Role": ("rbac.authorization.k8s.io", "v1", "roles", True),
    "RoleBinding": ("rbac.authorization.k8s.io", "v1", "rolebindings", True),
    "ValidatingAdmissionPolicy": (
        "admissionregistration.k8s.io",
        "v1",
        "validatingadmissionpolicies",
        False,
    ),
    "ValidatingAdmissionPolicyBinding": (
        "admissionregistration.k8s.io",
        "v1",
        "validatingadmissionpolicybindings",
        False,
    ),
    "CiliumNetworkPolicy": ("cilium.io", "v2", "ciliumnetworkpolicies", True),
}


class UnownedObjectError(RuntimeError):
    """Objects the spec declares exist but are not ours: applying refuses to touch them."""


@dataclasses.dataclass(frozen=True)
class ObjectRef:
    kind: str
    name: str
    namespace: str | None = None

    @classmethod
    def of(cls, obj: dict[str, Any]) -> ObjectRef:
        meta = obj["metadata"]
        return cls(obj["kind"], meta["name"], meta.get("namespace"))

    @classmethod
    def of_change(cls, change: Change) -> ObjectRef:
        """The object a planned change names ("namespace/name" or "name")."""
        namespace, _, name = change.name.rpartition("/")
        return cls(change.kind, name, namespace or None)

    def path(self, with_name: bool = True) -> str:
        group, version, plural, namespaced = _kind(self.kind)
        path = f"/apis/{group}/{version}" if group else f"/api/{version}"
        if namespaced and self.namespace:
            path += f"/namespaces/{self.namespace}"
        elif namespaced and with_name:
            raise ValueError(f"error: {self.kind} {self.name} needs a namespace")
        path += f"/{plural}"
        return f"{path}/{self.name}" if with_name else path

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


def api_client_from_environment() -> kubernetes.client.ApiClient | None:
    """The cluster of the standard configuration: in-cluster service account first, then
    kubeconfig ($KUBECONFIG or ~/.kube/config). None when neither exists (the units then plan
    and say that no cluster is configured)."""
    import kubernetes.config

    config = kubernetes.client.Configuration()  # not the process-wide default
    try:
        kubernetes.config.load_incluster_config(client_configuration=config)
    except kubernetes.config.ConfigException:
        try:
            # Read $KUBECONFIG now: the client reads it once, when it is imported.
            kubernetes.config.load_kube_config(
                config_file=os.environ.get("KUBECONFIG") or None, client_configuration=config
            )
        except (kubernetes.config.ConfigException, FileNotFoundError, TypeError):
            return None
    return kubernetes.client.ApiClient(config)


def _kind(kind: str) -> tuple[str, str, str, bool]:
    try:
        return KINDS[kind]
    except KeyError:
        raise ValueError(f"error: kind {kind!r} is not known to infra_assets.kube.KINDS") from None


def owner_labels(stack: str, unit: str) -> dict[str, str]:
    """Ownership (the stack) and which unit declared the object, so one unit's destroy or prune
    never removes another unit's objects."""
    return {OWNER_TAG: stack, UNIT_LABEL: unit, MANAGED_BY_LABEL: MANAGED_BY}


def unit_selector(stack: str, unit: str) -> str:
    return f"{OWNER_TAG}={stack},{UNIT_LABEL}={unit}"


def is_owned(obj: dict[str, Any] | None, stack: str) -> bool:
    labels = ((obj or {}).get("metadata") or {}).get("labels") or {}
    return labels.get(OWNER_TAG) == stack


class Kube:
    """Generic object access over one `kubernetes.client.ApiClient`."""

    def __init__(self, api_client: kubernetes.client.ApiClient) -> None:
        self.api_client = api_client

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        return self.api_client.call_api(
            path,
            method,
            query_params=query or [],
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            response_types_map={200: "object", 201: "object", 202: "object"},
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
        )

    def get(self, ref: ObjectRef) -> dict[str, Any] | None:
        try:
            return self._call("GET", ref.path())
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def list(
        self, kind: str, namespace: str | None = None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        query = [("labelSelector", label_selector)] if label_selector else []
        try:
            result = self._call("GET", ObjectRef(kind, "", namespace).path(False), query=query)
        except ApiException as err:
            # A custom resource whose CRD is not installed yet (Karpenter, Cilium) has nothing.
            if err.status == 404:
                return []
            raise
        return list(result.get("items") or [])

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        ref = ObjectRef.of(obj)
        return self._call(
            "POST", ref.path(False), body=obj, query=[("fieldManager", FIELD_MANAGER)]
        )

    def merge_patch(self, ref: ObjectRef, patch: dict[str, Any]) -> dict[str, Any]:
        return self._call(
            "PATCH",
            ref.path(),
            body=patch,
            query=[("fieldManager", FIELD_MANAGER)],
            content_type="application/merge-patch+json",
        )

    def delete(self, ref: ObjectRef) -> bool:
        try:
            self._call("DELETE", ref.path())
        except ApiException as err:
            if err.status == 404:
                return False
            raise
        return True


# What the API server writes into our objects by itself: never drift, never ours to remove.
# (A Namespace gets the label kubernetes.io/metadata.name and spec.finalizers on create.) Every
# default of the Karpenter 1.8.1 and Cilium 1.16 CRD schemas is set explicitly by the manifests,
# so server-side defaulting adds nothing else to the fields we compare.
SERVER_LABELS = frozenset({"kubernetes.io/metadata.name"})
SERVER_FIELDS: dict[str, frozenset[str]] = {"Namespace": frozenset({"spec"})}


def _managed_fields(obj: dict[str, Any]) -> dict[str, Any]:
    """The parts of an object we declare and compare: labels and everything but metadata."""
    skipped = {"metadata", "apiVersion", "kind", "status", *SERVER_FIELDS.get(obj.get("kind"), ())}
    fields = {k: v for k, v in obj.items() if k not in skipped}
    labels = (obj.get("metadata") or {}).get("labels") or {}
    fields["metadata"] = {"labels": {k: v for k, v in labels.items() if k not in SERVER_LABELS}}
    return fields


# ---- field paths: `spec.limits["nvidia.com/gpu"]`, readable and parsed back for the patch --

_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_PATH_TOKEN = re.compile(r'\["(?:[^"\\]|\\.)*"\]|[^.\[]+')


def field_path(keys: tuple[str, ...]) -> str:
    """Dotted path; a key with a dot or slash (labels, `nvidia.com/gpu`) in ["..."]."""
    path = ""
    for key in keys:
        if _PLAIN_KEY.match(str(key)):
            path += f".{key}" if path else str(key)
        else:
            path += f"[{json.dumps(str(key))}]"
    return path


def path_keys(path: str) -> tuple[str, ...]:
    """The keys of a `field_path`."""
    return tuple(
        json.loads(token[1:-1]) if token.startswith("[") else token
        for token in _PATH_TOKEN.findall(path)
    )


def diff_live(observed: Any, desired: Any, prefix: tuple[str, ...] = ()) -> list[FieldDiff]:
    """Every difference between a live value and the desired one, both ways: a key the spec
    sets that is missing or different, and a key that is live but not in the spec (an extra
    NodePool limit, a hand-added EC2NodeClass userData, a label dropped from the spec); its
    diff desires None, which applying removes. Lists are one field (the API replaces them
    whole); lists of scalars compare as sets."""
    diffs: list[FieldDiff] = []
    for key in [*desired, *(k for k in observed if k not in desired)]:
        path = (*prefix, key)
        want, have = desired.get(key), observed.get(key)
        if isinstance(want, dict) and isinstance(have, dict) and want:
            diffs.extend(diff_live(have, want, path))
        elif _normalize(have) != _normalize(want):
            diffs.append(FieldDiff(field_path(path), have, want))
    return diffs


def _normalize(value: Any) -> Any:
    if isinstance(value, (list, tuple)) and all(isinstance(v, (str, int, float)) for v in value):
        return sorted(value, key=str)
    return value


def patch_of(change: Change) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that carries out an update exactly as planned: each
    diff's desired value at its path, and null (remove) for what is live but not in the spec.
    A merge patch removes a field whoever set it; server-side apply would remove only fields
    our field manager owned, not one someone added with kubectl edit."""
    patch: dict[str, Any] = {}
    for diff in change.diffs:
        *parents, last = path_keys(diff.path)
        node = patch
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = diff.desired
    return patch


def leaves(value: dict[str, Any], prefix: str = "") -> list[FieldDiff]:
    """Every leaf field of a desired value as a diff from absent (what a create would set)."""
    diffs: list[FieldDiff] = []
    for key, item in value.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(item, dict) and item:
            diffs.extend(leaves(item, path))
        else:
            diffs.append(FieldDiff(path, None, item))
    return diffs


def creation(desired: dict[str, Any]) -> Change:
    """A create, with every field it sets (ownership labels aside) shown in the plan."""
    fields = {k: v for k, v in _managed_fields(desired).items() if k != "metadata"}
    diffs = leaves(fields) or leaves(_managed_fields(desired))
    return Change("create", desired["kind"], str(ObjectRef.of(desired)), None, tuple(diffs))


def plan_object(
    kube: Kube, desired: dict[str, Any], stack: str
) -> tuple[Change | None, str | None]:
    """Compare one desired object with the live one. An object that exists but is not ours
    gives no change but a conflict: we never touch it, and applying refuses until a person
    deletes or adopts it."""
    ref = ObjectRef.of(desired)
    observed = kube.get(ref)
    if observed is None:
        return creation(desired), None
    if not is_owned(observed, stack):
        return None, (
            f"{desired['kind']} {ref} exists without label {OWNER_TAG}={stack}; delete it, "
            f"or label it {OWNER_TAG}={stack} to adopt it"
        )
    uid = (observed.get("metadata") or {}).get("uid")
    diffs = tuple(diff_live(_managed_fields(observed), _managed_fields(desired)))
    return Change("update" if diffs else "keep", desired["kind"], str(ref), uid, diffs), None


def plan_objects(
    kube: Kube | None, objects: list[dict[str, Any]], stack: str, unit: str
) -> tuple[list[Change], list[str]]:
    """Plan the declared objects of one unit, and the deletion of objects the unit created
    earlier that the spec no longer declares. Returns the changes and the conflicts. With no
    cluster, everything would be created."""
    if kube is None:
        return [creation(o) for o in objects], []
    changes, conflicts = [], []
    for obj in objects:
        change, conflict = plan_object(kube, obj, stack)
        if change:
            changes.append(change)
        if conflict:
            conflicts.append(conflict)
    declared = {(o["kind"], str(ObjectRef.of(o))) for o in objects}
    for kind in dict.fromkeys(o["kind"] for o in objects):
        for live in kube.list(kind, label_selector=unit_selector(stack, unit)):
            ref = ObjectRef(kind, live["metadata"]["name"], live["metadata"].get("namespace"))
            if (kind, str(ref)) not in declared and is_owned(live, stack):
                changes.append(Change("delete", kind, str(ref), live["metadata"].get("uid")))
    return changes, conflicts


def apply_objects(kube: Kube, objects: list[dict[str, Any]], changes: list[Change]) -> None:
    """Carry out the planned changes of `plan_objects` as planned: a create sends the declared
    object, an update exactly the plan's diffs, a delete removes the object named."""
    by_ref = {(o["kind"], str(ObjectRef.of(o))): o for o in objects}
    for change in changes:
        if change.action == "delete":
            kube.delete(ObjectRef.of_change(change))
        elif change.action == "create":
            desired = by_ref.get((change.kind, change.name))
            if desired is None:
                raise ValueError(
                    f"error: the plan creates {change.kind} {change.name}, which the spec no "
                    "longer declares; plan again"
                )
            apply_object(kube, desired, change)
        elif change.action == "update":
            kube.merge_patch(ObjectRef.of_change(change), patch_of(change))


def apply_object(
    kube: Kube, desired: dict[str, Any], change: Change, crd_wait_s: float = 120
) -> None:
    """Carry out a planned create/update of one object that is ours (or absent)."""
    if change.action == "update":
        kube.merge_patch(ObjectRef.of(desired), patch_of(change))
    elif change.action == "create":
        deadline = time.monotonic() + crd_wait_s
        while True:
            try:
                kube.create(desired)
                return
            except ApiException as err:
                # A CRD installed by the Helm release just before (Cilium's operator registers
                # its CRDs on start) can take a moment to be served.
                is_custom = "." in _kind(desired["kind"])[0]
                if err.status != 404 or not is_custom or time.monotonic() > deadline:
                    raise
                time.sleep(5)


def refuse_conflicts(plan: Plan, stack: str) -> None:
    """Before applying anything: objects that are not ours stand where the spec wants ours."""
    if plan.conflicts:
        raise UnownedObjectError(
            f"error: {plan.unit}: refusing to apply, objects not owned by stack {stack!r} are "
            f"in the way: {'; '.join(plan.conflicts)}"
        )


def plan_owned_deletes(kube: Kube, kinds: list[str], stack: str, unit: str) -> list[Change]:
    """A delete for every object of these kinds (in this order) that this unit of our stack
    owns: the teardown preview, which deletes nothing."""
    changes: list[Change] = []
    for kind in kinds:
        for obj in kube.list(kind, label_selector=unit_selector(stack, unit)):
            if not is_owned(obj, stack):  # belt and braces: never trust the filter alone
                continue
            ref = ObjectRef(kind, obj["metadata"]["name"], obj["metadata"].get("namespace"))
            changes.append(Change("delete", kind, str(ref), obj["metadata"].get("uid")))
    return changes


def delete_owned(kube: Kube, kinds: list[str], stack: str, unit: str) -> list[Change]:
    """Delete every object of these kinds (in this order) that this unit of our stack owns."""
    planned = plan_owned_deletes(kube, kinds, stack, unit)
    return [c for c in planned if kube.delete(ObjectRef.of_change(c))]
