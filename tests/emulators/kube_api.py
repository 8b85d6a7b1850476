"""A small Kubernetes API server emulator over HTTP, and the pytest fixture that runs it."""

# It stores objects by (group, version, plural, namespace, name) and answers the REST calls the
# official client makes: get/list (with labelSelector), create (201, 409 when it exists),
# replace (409 on a stale resourceVersion), JSON merge patch and server-side apply patch, delete
# (404 when absent). No controllers run: tests change objects themselves, as a person would.

from __future__ import annotations

import copy
import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

# Resources without a namespace; everything else is namespaced.
CLUSTER_SCOPED = {
    "namespaces",
    "nodes",
    "nodepools",
    "ec2nodeclasses",
    "nodeclaims",
    "ciliumclusterwidenetworkpolicies",
    "customresourcedefinitions",
    "clusterroles",
    "clusterrolebindings",
    "priorityclasses",
}

KINDS = {
    "namespaces": "Namespace",
    "secrets": "Secret",
    "configmaps": "ConfigMap",
    "serviceaccounts": "ServiceAccount",
    "services": "Service",
    "pods": "Pod",
    "deployments": "Deployment",
    "daemonsets": "DaemonSet",
    "poddisruptionbudgets": "PodDisruptionBudget",
    "nodepools": "NodePool",
    "ec2nodeclasses": "EC2NodeClass",
    "ciliumclusterwidenetworkpolicies": "CiliumClusterwideNetworkPolicy",
    "ciliumnetworkpolicies": "CiliumNetworkPolicy",
    "jobs": "Job",
    "events": "Event",
}

Key = tuple[str, str, str, str, str]  # group, version, plural, namespace ("" if none), name


class KubeStore:
    """The objects of the emulated cluster; also the tests' direct door into it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.objects: dict[Key, dict[str, Any]] = {}
        self.revision = 0
        self.requests: list[tuple[str, str]] = []  # (method, path) of every call, for asserts
        # What the containers of each pod wrote (stdout and stderr, as the kubelet keeps them):
        # (namespace, pod) -> [(RFC 3339 timestamp with nanoseconds, line)], written by the
        # emulated kubelet (tests/emulators/kubelet.py), served by GET pods/{name}/log.
        self.logs: dict[tuple[str, str], list[tuple[str, str]]] = {}

    def _bump(self, obj: dict[str, Any]) -> None:
        self.revision += 1
        obj.setdefault("metadata", {})["resourceVersion"] = str(self.revision)

    def put(self, group: str, version: str, plural: str, namespace: str, obj: dict) -> dict:
        """Store an object as-is (test set-up: an unowned object, a person's edit)."""
        with self.lock:
            obj = copy.deepcopy(obj)
            meta = obj.setdefault("metadata", {})
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", _now())
            if namespace:
                meta["namespace"] = namespace
            self._bump(obj)
            self.objects[(group, version, plural, namespace, meta["name"])] = obj
            return copy.deepcopy(obj)

    def get(self, group: str, version: str, plural: str, namespace: str, name: str) -> dict | None:
        with self.lock:
            obj = self.objects.get((group, version, plural, namespace, name))
            return copy.deepcopy(obj) if obj else None

    def names(self, plural: str) -> list[str]:
        with self.lock:
            return sorted(k[4] for k in self.objects if k[2] == plural)


def _server_set(plural: str, obj: dict) -> dict:
    """What the real API server writes into an object on every create and update.

    Namespaces: the label `kubernetes.io/metadata.name` = the name (Kubernetes docs, Namespaces,
    "Automatic labelling", GA in 1.22; it is put back when removed), `spec.finalizers:
    [kubernetes]` and `status.phase: Active`. A drift check must not call these drift.
    """
    if plural == "namespaces":
        meta = obj.setdefault("metadata", {})
        meta["labels"] = {**(meta.get("labels") or {}), "kubernetes.io/metadata.name": meta["name"]}
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
        obj.setdefault("status", {}).setdefault("phase", "Active")
    if plural == "pods":
        # Kubernetes docs, Pod Lifecycle, "Pod phase": a pod the API server has accepted is
        # Pending until a kubelet runs it; clients read status.phase right after the create.
        obj.setdefault("status", {}).setdefault("phase", "Pending")
    return obj


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: dicts merge, null deletes, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _matches(labels: dict[str, str], selector: str) -> bool:
    """Equality (`k=v`, `k!=v`) and existence (`k`, `!k`) label selector terms."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


class _Handler(BaseHTTPRequestHandler):
    store: KubeStore

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    # ---- routing -----------------------------------------------------------------------
    def _route(self) -> tuple[str, str, str, str, str | None, dict[str, list[str]]]:
        url = urlparse(self.path)
        parts = [p for p in url.path.split("/") if p]
        if parts[:1] == ["api"]:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[:1] == ["apis"]:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise _ApiError(404, f"unknown path {url.path}")
        namespace = ""
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        elif len(rest) == 2 and rest[0] == "namespaces":
            rest = ["namespaces", rest[1]]
        plural = rest[0]
        name = rest[1] if len(rest) > 1 else None
        if len(rest) > 2 and (plural, rest[2]) not in SUBRESOURCES:
            raise _ApiError(404, f"subresource {rest[2]} is not emulated")
        query = parse_qs(url.query)
        if len(rest) > 2:
            query["_subresource"] = [rest[2]]
        return group, version, plural, namespace, name, query

    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        return json.loads(raw or b"{}")

    def _send(self, code: int, obj: dict) -> None:
        payload = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _dispatch(self, method: str) -> None:
        self.store.requests.append((method, self.path))
        try:
            route = self._route()
            if route[-1].get("_subresource") == ["log"] and method == "GET":
                self._stream_log(route[3], route[4], route[-1])
                return
            code, obj = getattr(self, f"_{method.lower()}")(*route)
        except _ApiError as err:
            code, obj = err.code, err.status()
        self._send(code, obj)

    def _stream_log(self, namespace: str, name: str, query: dict[str, list[str]]) -> None:
        """GET pods/{name}/log (Kubernetes API reference, Pod v1, "read log of the specified
        Pod": follow, timestamps, sinceSeconds, tailLines). With follow the stream stays open
        until the container has terminated (or the pod is gone), as `kubectl logs -f` does."""
        pod = self.store.get("", "v1", "pods", namespace, name)
        if pod is None:
            raise _ApiError(404, f'pods "{name}" not found', "NotFound")
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        waiting = [s for s in statuses if "waiting" in (s.get("state") or {})]
        if not statuses or waiting:
            # The API server's answer for a container that has not started (PodInitializing,
            # ContainerCreating, ErrImagePull): 400 BadRequest "is waiting to start".
            reason = (
                waiting[0]["state"]["waiting"].get("reason") if waiting else "ContainerCreating"
            )
            raise _ApiError(
                400,
                f'container in pod "{name}" is waiting to start: {reason}',
                "BadRequest",
            )
        follow = query.get("follow", ["false"])[0].lower() in ("true", "1")  # Go ParseBool
        timestamps = query.get("timestamps", ["false"])[0].lower() in ("true", "1")
        since_s = float(query["sinceSeconds"][0]) if "sinceSeconds" in query else None
        tail = int(query["tailLines"][0]) if "tailLines" in query else None
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()  # no Content-Length: the body ends when the connection closes
        self.close_connection = True
        sent = 0
        first = True
        while True:
            with self.store.lock:
                lines = list(self.store.logs.get((namespace, name), []))
            if first:
                if since_s is not None:
                    cutoff = _now_ns() - int(since_s * 1e9)
                    sent = next(
                        (i for i, (ts, _) in enumerate(lines) if _ns(ts) >= cutoff), len(lines)
                    )
                if tail is not None:
                    sent = max(sent, len(lines) - tail)
                first = False
            for stamp, line in lines[sent:]:
                text = f"{stamp} {line}\n" if timestamps else f"{line}\n"
                try:
                    self.wfile.write(text.encode())
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    return
            sent = len(lines)
            if not follow or _container_done(self.store, namespace, name):
                with self.store.lock:
                    rest = self.store.logs.get((namespace, name), [])[sent:]
                for stamp, line in rest:
                    text = f"{stamp} {line}\n" if timestamps else f"{line}\n"
                    self.wfile.write(text.encode())
                return
            threading.Event().wait(0.05)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # ---- verbs -------------------------------------------------------------------------
    def _check_namespace(self, plural: str, namespace: str) -> None:
        if plural in CLUSTER_SCOPED or not namespace:
            return
        if not self.store.get("", "v1", "namespaces", "", namespace):
            raise _ApiError(404, f'namespaces "{namespace}" not found', "NotFound")

    def _get(self, group, version, plural, namespace, name, query):
        with self.store.lock:
            if name is not None:
                obj = self.store.objects.get((group, version, plural, namespace, name))
                if obj is None:
                    raise _ApiError(404, f'{plural} "{name}" not found', "NotFound")
                return 200, obj
            selector = query.get("labelSelector", [""])[0]
            fields = query.get("fieldSelector", [""])[0]
            items = [
                obj
                for (g, v, p, ns, _), obj in sorted(self.store.objects.items())
                if (g, v, p) == (group, version, plural)
                and (not namespace or ns == namespace)
                and _matches(obj.get("metadata", {}).get("labels") or {}, selector)
                and _matches(_selectable_fields(obj), fields)
            ]
            kind = KINDS.get(plural, plural.capitalize())
            return 200, {
                "apiVersion": f"{group}/{version}" if group else version,
                "kind": f"{kind}List",
                "metadata": {"resourceVersion": str(self.store.revision)},
                "items": items,
            }

    def _post(self, group, version, plural, namespace, name, query):
        body = self._body()
        self._check_namespace(plural, namespace)
        obj_name = body.get("metadata", {}).get("name")
        if not obj_name:
            raise _ApiError(422, "metadata.name: Required value", "Invalid")
        with self.store.lock:
            if (group, version, plural, namespace, obj_name) in self.store.objects:
                raise _ApiError(409, f'{plural} "{obj_name}" already exists', "AlreadyExists")
        body = _server_set(plural, body)
        if "dryRun" in query:
            return 201, body
        return 201, self.store.put(group, version, plural, namespace, body)

    def _put(self, group, version, plural, namespace, name, query):
        body = self._body()
        current = self.store.get(group, version, plural, namespace, name)
        if current is None:
            raise _ApiError(404, f'{plural} "{name}" not found', "NotFound")
        sent_rv = body.get("metadata", {}).get("resourceVersion")
        if sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
            raise _ApiError(409, "the object has been modified; reload and retry", "Conflict")
        for kept in ("uid", "creationTimestamp"):
            body.setdefault("metadata", {})[kept] = current["metadata"][kept]
        return 200, self.store.put(group, version, plural, namespace, _server_set(plural, body))

    def _patch(self, group, version, plural, namespace, name, query):
        content_type = self.headers.get("Content-Type", "")
        body = self._body()
        current = self.store.get(group, version, plural, namespace, name)
        if "apply-patch" in content_type:
            # Server-side apply, simplified: the applied configuration is merged over the live
            # object (lists replaced); a missing object is created.
            self._check_namespace(plural, namespace)
            merged = _server_set(plural, _merge_patch(current or {}, body))
            code = 200 if current else 201
            return code, self.store.put(group, version, plural, namespace, merged)
        if current is None:
            raise _ApiError(404, f'{plural} "{name}" not found', "NotFound")
        if "json-patch" in content_type:
            raise _ApiError(415, "JSON patch is not emulated; send a merge patch")
        # merge-patch and strategic-merge-patch (approximated as a merge patch)
        merged = _merge_patch(current, body)
        merged["metadata"]["name"] = name
        return 200, self.store.put(group, version, plural, namespace, _server_set(plural, merged))

    def _delete(self, group, version, plural, namespace, name, query):
        with self.store.lock:
            obj = self.store.objects.pop((group, version, plural, namespace, name), None)
        if obj is None:
            raise _ApiError(404, f'{plural} "{name}" not found', "NotFound")
        if plural == "namespaces":
            with self.store.lock:
                for key in [k for k in self.store.objects if k[3] == name]:
                    del self.store.objects[key]
        return 200, {
            "apiVersion": "v1",
            "kind": "Status",
            "status": "Success",
            "details": {"name": name, "kind": plural},
        }


# Subresources served: a pod's log (streamed), a Job's or a pod's status (the object itself, as
# read_namespaced_job_status reads it: Kubernetes API reference, Job v1, "read status").
SUBRESOURCES = {("pods", "log"), ("pods", "status"), ("jobs", "status")}


def _selectable_fields(obj: dict) -> dict[str, str]:
    """The fields a fieldSelector may name (Kubernetes docs, Field Selectors: every resource
    supports metadata.name and metadata.namespace; pods also status.phase)."""
    meta = obj.get("metadata") or {}
    fields = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
    }
    phase = (obj.get("status") or {}).get("phase")
    if phase:
        fields["status.phase"] = phase
    return fields


def _container_done(store: KubeStore, namespace: str, name: str) -> bool:
    pod = store.get("", "v1", "pods", namespace, name)
    if pod is None:
        return True
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return all("terminated" in (s.get("state") or {}) for s in statuses)


def _now_ns() -> int:
    return time.time_ns()


def _ns(stamp: str) -> int:
    """Nanoseconds since the epoch of a log timestamp like 2024-03-22T02:17:29.185548486Z."""
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    seconds = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
    return int(seconds) * 1_000_000_000 + int(fraction.ljust(9, "0")[:9] or 0)


class _ApiError(Exception):
    def __init__(self, code: int, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.code, self.message, self.reason = code, message, reason

    def status(self) -> dict:
        return {
            "apiVersion": "v1",
            "kind": "Status",
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }


class KubeApiEmulator:
    """A running emulator: `url` for clients, `store` for the test's own reads and edits."""

    def __init__(self) -> None:
        self.store = KubeStore()
        handler = type("Handler", (_Handler,), {"store": self.store})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        # Namespaces every EKS cluster has.
        for namespace in ("default", "kube-system", "kube-public"):
            self.store.put(
                "",
                "v1",
                "namespaces",
                "",
                _server_set("namespaces", {"metadata": {"name": namespace}}),
            )

    def start(self) -> KubeApiEmulator:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def api_client(self):
        import kubernetes.client

        config = kubernetes.client.Configuration()
        config.host = self.url
        return kubernetes.client.ApiClient(config)


@pytest.fixture
def kube_api() -> Iterator[KubeApiEmulator]:
    """A fresh, empty-but-for-system-namespaces cluster per test."""
    emulator = KubeApiEmulator().start()
    try:
        yield emulator
    finally:
        emulator.stop()
