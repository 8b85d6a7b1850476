"""A local AWS for the local profile and the tests: moto's server plus the APIs our units need.

moto 5.2 lacks EC2 placement groups (500 NotImplemented), EKS add-ons, Pod Identity associations
and access entries (404); `update_cluster_config` answers with the cluster instead of an update
and drops the fields it was not given; a deleted NAT gateway keeps its Elastic IP associated.
`install_extensions()` adds what is missing to moto's response classes and URL maps; it must run
in the server process before the server starts, which `python -m devtools.local_aws` (used by
`make dev`) and the test fixture both do.
Needs the `dev` extra (moto[server]); nothing here runs against real AWS.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import uuid
from typing import Any

_INSTALLED = False

# Attaching AWS-managed policies (AmazonEKSClusterPolicy, ...) needs moto to know them.
os.environ.setdefault("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
# Our units launch no AMIs; loading moto's ~1300 default images costs a second per account.
os.environ.setdefault("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")


def install_extensions() -> None:
    """Teach moto's EC2 and EKS responses the missing operations (idempotent)."""
    global _INSTALLED
    if _INSTALLED:
        return
    _install_placement_groups()
    _install_nat_gateway_release()
    _install_eks()
    _INSTALLED = True


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _store(backend: Any, name: str) -> dict:
    # Kept on the backend object so that moto's reset (which re-initialises backends) clears it.
    return backend.__dict__.setdefault(f"_gpu_analysis_{name}", {})


# --- EC2 placement groups -------------------------------------------------------------------


def _install_placement_groups() -> None:
    from moto.core.responses import ActionResult
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.responses import EC2Response

    def create_placement_group(self: Any) -> Any:
        name = self._get_param("GroupName")
        strategy = self._get_param("Strategy")
        tags = self._parse_tag_specification("placement-group").get("placement-group", {})
        self.error_on_dryrun()
        groups = _store(self.ec2_backend, "placement_groups")
        if name in groups:
            raise EC2ClientError(
                "InvalidPlacementGroup.Duplicate", f"The placement group '{name}' already exists."
            )
        if strategy not in ("cluster", "spread", "partition"):
            raise EC2ClientError(
                "InvalidParameterValue", f"Value ({strategy}) for parameter strategy is invalid."
            )
        group = {
            "GroupName": name,
            "GroupId": f"pg-{uuid.uuid4().hex[:17]}",
            "GroupArn": (
                f"arn:aws:ec2:{self.region}:{self.current_account}:placement-group/{name}"
            ),
            "State": "available",
            "Strategy": strategy,
            "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
        }
        if strategy == "partition":
            group["PartitionCount"] = int(self._get_param("PartitionCount") or 2)
        groups[name] = group
        return ActionResult({"PlacementGroup": group})

    def describe_placement_groups(self: Any) -> Any:
        names = set(self._get_param("GroupNames", []) or [])
        ids = set(self._get_param("GroupIds", []) or [])
        filters = self._filters_from_querystring()
        result = []
        for group in _store(self.ec2_backend, "placement_groups").values():
            if names and group["GroupName"] not in names:
                continue
            if ids and group["GroupId"] not in ids:
                continue
            if all(_pg_filter(group, key, values) for key, values in filters.items()):
                result.append(group)
        missing = names - {g["GroupName"] for g in result}
        if missing:
            raise EC2ClientError(
                "InvalidPlacementGroup.Unknown",
                f"The Placement Group '{sorted(missing)[0]}' is unknown.",
            )
        return ActionResult({"PlacementGroups": result})

    def delete_placement_group(self: Any) -> Any:
        name = self._get_param("GroupName")
        self.error_on_dryrun()
        groups = _store(self.ec2_backend, "placement_groups")
        if name not in groups:
            raise EC2ClientError(
                "InvalidPlacementGroup.Unknown", f"The Placement Group '{name}' is unknown."
            )
        del groups[name]
        return ActionResult({})

    EC2Response.create_placement_group = create_placement_group
    EC2Response.describe_placement_groups = describe_placement_groups
    EC2Response.delete_placement_group = delete_placement_group


def _pg_filter(group: dict, key: str, values: list[str]) -> bool:
    if key.startswith("tag:"):
        tags = {t["Key"]: t["Value"] for t in group["Tags"]}
        return tags.get(key[4:]) in values
    if key == "tag-key":
        return any(t["Key"] in values for t in group["Tags"])
    field = {"group-name": "GroupName", "strategy": "Strategy", "state": "State"}.get(key)
    if field is None:
        return True  # unknown filters match everything, as moto does for EC2 in general
    return group[field] in values


def _install_nat_gateway_release() -> None:
    """Deleting a NAT gateway frees its Elastic IP on AWS; moto kept it associated."""
    from moto.ec2.models import EC2Backend

    original = EC2Backend.delete_nat_gateway

    def delete_nat_gateway(self: Any, nat_gateway_id: str) -> Any:
        nat = original(self, nat_gateway_id)
        for address in nat.address_set:
            association = address.get("associationId")
            if association and self.address_by_association([association]):
                self.disassociate_address(association_id=association)
        return nat

    EC2Backend.delete_nat_gateway = delete_nat_gateway


# --- EKS add-ons, Pod Identity associations, access entries, update_cluster_config ----------


def _install_eks() -> None:
    import moto.eks.urls as eks_urls
    from moto.core.responses import ActionResult
    from moto.eks.exceptions import ResourceInUseException, ResourceNotFoundException
    from moto.eks.models import EKSBackend
    from moto.eks.responses import EKSResponse

    def not_found(message: str) -> Exception:
        return ResourceNotFoundException(
            clusterName=None,
            nodegroupName=None,
            fargateProfileName=None,
            addonName=None,
            message=message,
        )

    def cluster_of(self: Any) -> Any:
        name = self._get_param("name")
        cluster = self.eks_backend.clusters.get(name)
        if cluster is None:
            raise not_found(f"No cluster found for name: {name}.")
        return cluster

    def arn(self: Any, kind: str, *parts: str) -> str:
        return f"arn:aws:eks:{self.region}:{self.current_account}:{kind}/" + "/".join(parts)

    # Add-ons.
    def create_addon(self: Any) -> Any:
        cluster = cluster_of(self)
        name = self._get_param("addonName")
        addons = _store(self.eks_backend, "addons")
        if (cluster.name, name) in addons:
            raise ResourceInUseException(
                clusterName=cluster.name,
                nodegroupName=None,
                fargateProfileName=None,
                addonName=name,
                message=f"Addon already exists with name: {name}",
            )
        addon = {
            "addonName": name,
            "clusterName": cluster.name,
            "status": "ACTIVE",
            "addonVersion": self._get_param("addonVersion") or "v1.0.0-eksbuild.1",
            "addonArn": arn(self, "addon", cluster.name, name, uuid.uuid4().hex[:8]),
            "createdAt": _now(),
            "modifiedAt": _now(),
            "tags": self._get_param("tags") or {},
            "health": {"issues": []},
        }
        role = self._get_param("serviceAccountRoleArn")
        if role:
            addon["serviceAccountRoleArn"] = role
        addons[(cluster.name, name)] = addon
        return ActionResult({"addon": addon})

    def describe_addon(self: Any) -> Any:
        cluster = cluster_of(self)
        name = self._get_param("addonName")
        addon = _store(self.eks_backend, "addons").get((cluster.name, name))
        if addon is None:
            raise not_found(f"No addon: {name} found in cluster: {cluster.name}")
        return ActionResult({"addon": addon})

    def list_addons(self: Any) -> Any:
        cluster = cluster_of(self)
        names = sorted(n for (c, n) in _store(self.eks_backend, "addons") if c == cluster.name)
        return ActionResult({"addons": names})

    def delete_addon(self: Any) -> Any:
        cluster = cluster_of(self)
        name = self._get_param("addonName")
        addon = _store(self.eks_backend, "addons").pop((cluster.name, name), None)
        if addon is None:
            raise not_found(f"No addon: {name} found in cluster: {cluster.name}")
        return ActionResult({"addon": {**addon, "status": "DELETING"}})

    # Pod Identity associations.
    def create_pod_identity_association(self: Any) -> Any:
        cluster = cluster_of(self)
        associations = _store(self.eks_backend, "pod_identity")
        namespace = self._get_param("namespace")
        service_account = self._get_param("serviceAccount")
        for a in associations.values():
            if (a["clusterName"], a["namespace"], a["serviceAccount"]) == (
                cluster.name,
                namespace,
                service_account,
            ):
                raise ResourceInUseException(
                    clusterName=cluster.name,
                    nodegroupName=None,
                    fargateProfileName=None,
                    addonName=None,
                    message="Association already exists for this service account",
                )
        association_id = "a-" + uuid.uuid4().hex[:17]
        association = {
            "clusterName": cluster.name,
            "namespace": namespace,
            "serviceAccount": service_account,
            "roleArn": self._get_param("roleArn"),
            "associationArn": arn(self, "podidentityassociation", cluster.name, association_id),
            "associationId": association_id,
            "tags": self._get_param("tags") or {},
            "createdAt": _now(),
            "modifiedAt": _now(),
        }
        associations[association_id] = association
        return ActionResult({"association": association})

    def association_of(self: Any) -> dict:
        cluster = cluster_of(self)
        association_id = self._get_param("associationId")
        association = _store(self.eks_backend, "pod_identity").get(association_id)
        if association is None or association["clusterName"] != cluster.name:
            raise not_found(f"Association {association_id} not found")
        return association

    def describe_pod_identity_association(self: Any) -> Any:
        return ActionResult({"association": association_of(self)})

    def update_pod_identity_association(self: Any) -> Any:
        association = association_of(self)
        if self._get_param("roleArn"):
            association["roleArn"] = self._get_param("roleArn")
        association["modifiedAt"] = _now()
        return ActionResult({"association": association})

    def delete_pod_identity_association(self: Any) -> Any:
        association = association_of(self)
        del _store(self.eks_backend, "pod_identity")[association["associationId"]]
        return ActionResult({"association": association})

    def list_pod_identity_associations(self: Any) -> Any:
        cluster = cluster_of(self)
        namespace = self._get_param("namespace")
        service_account = self._get_param("serviceAccount")
        summaries = [
            {k: a[k] for k in ("clusterName", "namespace", "serviceAccount", "associationArn")}
            | {"associationId": a["associationId"]}
            for a in _store(self.eks_backend, "pod_identity").values()
            if a["clusterName"] == cluster.name
            and (not namespace or a["namespace"] == namespace)
            and (not service_account or a["serviceAccount"] == service_account)
        ]
        return ActionResult({"associations": summaries})

    # Access entries.
    def create_access_entry(self: Any) -> Any:
        cluster = cluster_of(self)
        principal = self._get_param("principalArn")
        entries = _store(self.eks_backend, "access_entries")
        if (cluster.name, principal) in entries:
            raise ResourceInUseException(
                clusterName=cluster.name,
                nodegroupName=None,
                fargateProfileName=None,
                addonName=None,
                message=f"The specified access entry resource is already in use: {principal}",
            )
        entry_type = self._get_param("type") or "STANDARD"
        role_name = principal.rsplit("/", 1)[-1]
        entry = {
            "clusterName": cluster.name,
            "principalArn": principal,
            "kubernetesGroups": self._get_param("kubernetesGroups")
            or (["system:nodes"] if entry_type == "EC2_LINUX" else []),
            "accessEntryArn": arn(self, "access-entry", cluster.name, "role", role_name),
            "createdAt": _now(),
            "modifiedAt": _now(),
            "tags": self._get_param("tags") or {},
            "username": self._get_param("username")
            or (
                "system:node:{{EC2PrivateDNSName}}" if entry_type == "EC2_LINUX" else f"{principal}"
            ),
            "type": entry_type,
        }
        entries[(cluster.name, principal)] = entry
        return ActionResult({"accessEntry": entry})

    def entry_of(self: Any) -> dict:
        cluster = cluster_of(self)
        principal = self._get_param("principalArn")
        entry = _store(self.eks_backend, "access_entries").get((cluster.name, principal))
        if entry is None:
            raise not_found(f"The specified principalArn could not be found: {principal}")
        return entry

    def describe_access_entry(self: Any) -> Any:
        return ActionResult({"accessEntry": entry_of(self)})

    def delete_access_entry(self: Any) -> Any:
        entry = entry_of(self)
        del _store(self.eks_backend, "access_entries")[
            (entry["clusterName"], entry["principalArn"])
        ]
        return ActionResult({})

    def list_access_entries(self: Any) -> Any:
        cluster = cluster_of(self)
        principals = sorted(
            p for (c, p) in _store(self.eks_backend, "access_entries") if c == cluster.name
        )
        return ActionResult({"accessEntries": principals})

    # Clusters: keep accessConfig, and answer update_cluster_config with an update.
    original_create_cluster = EKSResponse.create_cluster

    def create_cluster(self: Any) -> Any:
        result = original_create_cluster(self)
        cluster = self.eks_backend.clusters[self._get_param("name")]
        access = self._get_param("accessConfig") or {}
        cluster.access_config = {
            "authenticationMode": access.get("authenticationMode", "CONFIG_MAP"),
            "bootstrapClusterCreatorAdminPermissions": access.get(
                "bootstrapClusterCreatorAdminPermissions", True
            ),
        }
        return result

    def update_cluster_config(self: Any) -> Any:
        cluster = cluster_of(self)
        vpc = self._get_param("resourcesVpcConfig") or {}
        access = self._get_param("accessConfig") or {}
        logging = self._get_param("logging")
        params = []
        if vpc:
            # Real EKS changes only the given fields; moto replaced the whole block.
            cluster.resources_vpc_config = {**cluster.resources_vpc_config, **vpc}
            params += [{"type": k[0].upper() + k[1:], "value": str(v)} for k, v in vpc.items()]
        if access:
            cluster.access_config = {**getattr(cluster, "access_config", {}), **access}
            params += [{"type": "AuthenticationMode", "value": str(access)}]
        if logging:
            cluster.logging = logging
        update_type = (
            "EndpointAccessUpdate" if vpc else "AccessConfigUpdate" if access else "LoggingUpdate"
        )
        update = {
            "id": str(uuid.uuid4()),
            "status": "Successful",
            "type": update_type,
            "params": params,
            "createdAt": _now(),
            "errors": [],
        }
        return ActionResult({"update": update})

    original_delete_cluster = EKSBackend.delete_cluster

    def delete_cluster(self: Any, name: str) -> Any:
        result = original_delete_cluster(self, name)
        # Deleting a cluster deletes its add-ons, associations and access entries with it.
        for store_name in ("addons", "access_entries"):
            store = _store(self, store_name)
            for key in [k for k in store if k[0] == name]:
                del store[key]
        pod_identity = _store(self, "pod_identity")
        for key in [k for k, a in pod_identity.items() if a["clusterName"] == name]:
            del pod_identity[key]
        return result

    for method in (
        create_addon,
        describe_addon,
        list_addons,
        delete_addon,
        create_pod_identity_association,
        describe_pod_identity_association,
        update_pod_identity_association,
        delete_pod_identity_association,
        list_pod_identity_associations,
        create_access_entry,
        describe_access_entry,
        delete_access_entry,
        list_access_entries,
        create_cluster,
        update_cluster_config,
    ):
        setattr(EKSResponse, method.__name__, method)
    EKSBackend.delete_cluster = delete_cluster

    dispatch = eks_urls.response.dispatch
    eks_urls.url_paths.update(
        {
            "{0}/clusters/(?P<name>[^/]+)/addons$": dispatch,
            "{0}/clusters/(?P<name>[^/]+)/addons/(?P<addonName>[^/]+)$": dispatch,
            "{0}/clusters/(?P<name>[^/]+)/pod-identity-associations$": dispatch,
            "{0}/clusters/(?P<name>[^/]+)/pod-identity-associations/(?P<associationId>[^/]+)$": (
                dispatch
            ),
            "{0}/clusters/(?P<name>[^/]+)/access-entries$": dispatch,
            # Principal ARNs contain slashes (role/...), even when percent-encoded.
            "{0}/clusters/(?P<name>[^/]+)/access-entries/(?P<principalArn>.+)$": dispatch,
        }
    )


# --- The server -------------------------------------------------------------------------------


class LocalAws:
    """moto's threaded server with the extensions, on 127.0.0.1 (used by the tests)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 5000) -> None:
        from moto.server import ThreadedMotoServer

        install_extensions()
        self.host, self.port = host, port
        self._server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> LocalAws:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def reset(self) -> None:
        """Forget every resource (moto's reset API), for a clean account between tests."""
        import urllib.request

        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.local_aws",
        description="Run a local moto AWS with the gpu-analysis extensions (for `make dev`).",
    )
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    args = parser.parse_args(argv)

    import moto.server

    install_extensions()
    print(f"local AWS (moto + gpu-analysis extensions) on http://{args.host}:{args.port}")
    moto.server.main(["-H", args.host, "-p", str(args.port)])


if __name__ == "__main__":
    main()
