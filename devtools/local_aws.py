"""A local AWS for the local profile and the tests: moto's server plus the APIs our units need.

moto 5.2 lacks EC2 placement groups (500 NotImplemented), EKS add-ons, Pod Identity associations,
access entries and UpdateNodegroupVersion (404); `update_cluster_config` answers with the cluster
instead of an update and drops the fields it was not given; a deleted NAT gateway keeps its
Elastic IP associated; EKS clusters come without their cluster security group.
`install_extensions()` adds what is missing to moto's response classes and URL maps; it must run
in the server process before the server starts, which `python -m devtools.local_aws` (used by
`make dev`) and the test fixture both do.

moto is also kinder than AWS, so this module puts back the unpleasant parts a first apply on a
real account meets (each with the upstream page or issue it follows, at the code):
- faults: a create that succeeds server-side but answers 500, and throttling (`LocalAws.inject`,
  or POST /_gpu_analysis/faults for the `make dev` server);
- IAM eventual consistency: EKS refuses a role or principal created moments ago, EC2 an
  instance profile;
- time: EKS clusters and node groups are CREATING, then ACTIVE, DELETING before gone; a node
  group whose nodes find no network plugin (CNI) fails with NodeCreationFailure; a version
  update keeps a node group UPDATING;
- dependencies: EC2 refuses to delete a security group another group's rule names, or one an
  EKS cluster still wears; EKS leaves its cluster security group behind when it cannot;
- idempotency tokens: EC2 `ClientToken` and EKS `clientRequestToken` replay the first answer;
- RDS: DB instances are `creating` before `available` and `deleting` before gone, and keep
  their subnet group and security group in use meanwhile; faults reach RDS and ECR too.
Timings are set with `LocalAws.configure` (or POST /_gpu_analysis/configure).
Needs the `dev` extra (moto[server]); nothing here runs against real AWS.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import datetime as dt
import io
import json
import os
import re
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable
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
    _install_security_group_dependencies()
    _install_instance_profile_propagation()
    _install_eks()
    _install_eks_lifecycle()
    _install_rds_lifecycle()
    _install_http_layer()
    _INSTALLED = True


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _store(backend: Any, name: str) -> dict:
    # Kept on the backend object so that moto's reset (which re-initialises backends) clears it.
    return backend.__dict__.setdefault(f"_gpu_analysis_{name}", {})


# --- What the emulator is told: timings, faults, the cluster network ---------------------------


@dataclasses.dataclass
class Timings:
    """How long AWS takes; small but non-zero by default, so that code that does not wait fails.

    Real values are minutes: EKS control planes take ~10 min to create, managed node groups a few
    minutes, and EKS marks a group whose nodes never join CREATE_FAILED after ~20 min
    (terraform-aws-eks issues #1972 and #3446). IAM propagation is "usually within seconds"
    (IAM User Guide, "Changes that I make are not always immediately visible").
    """

    iam_propagation_s: float = 1.0
    cluster_transition_s: float = 1.0
    nodegroup_transition_s: float = 1.0
    nodes_join_timeout_s: float = 3.0
    # RDS DB instances: creating -> available, deleting -> gone (minutes on AWS; see
    # _install_rds_lifecycle).
    db_instance_transition_s: float = 1.0


FAULTS = ("ambiguous", "throttle")


class _Control:
    """The emulator's settings, shared by the server threads (one moto per process)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.defaults = Timings()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.timings = dataclasses.replace(self.defaults)
            self.faults: dict[str, list[list[Any]]] = {}
            self.calls: collections.Counter[str] = collections.Counter()
            # None: no cluster network is modelled (`make dev`), node groups join after the
            # transition. Tests set a callable(cluster_name) -> bool.
            self.cni_ready: Callable[[str], bool] | None = None

    def configure(self, **timings: float) -> Timings:
        unknown = set(timings) - {f.name for f in dataclasses.fields(Timings)}
        if unknown:
            raise ValueError(f"unknown timing(s) {sorted(unknown)}; know {Timings.__annotations__}")
        with self.lock:
            self.timings = dataclasses.replace(
                self.timings, **{k: float(v) for k, v in timings.items()}
            )
            return self.timings

    def inject(self, action: str, fault: str, times: int = 1) -> None:
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; use one of {FAULTS}")
        if times < 1:
            raise ValueError(f"times must be at least 1, got {times}")
        with self.lock:
            self.faults.setdefault(action, []).append([fault, times])

    def take_fault(self, service: str, action: str) -> str | None:
        """Count the call; the fault to play on it, if one is pending for this action."""
        with self.lock:
            self.calls[action] += 1
            for key in (f"{service}:{action}", action):
                pending = self.faults.get(key)
                if pending:
                    fault = pending[0][0]
                    pending[0][1] -= 1
                    if pending[0][1] == 0:
                        pending.pop(0)
                    return fault
            return None

    def pending(self) -> dict[str, list[list[Any]]]:
        with self.lock:
            return {k: [list(f) for f in v] for k, v in self.faults.items() if v}

    def is_cni_ready(self, cluster_name: str) -> bool | None:
        check = self.cni_ready
        if check is None:
            return None
        try:
            return bool(check(cluster_name))
        except Exception:  # a check that cannot answer (emulator gone) is no network
            return False


_CONTROL = _Control()


# --- IAM eventual consistency ------------------------------------------------------------------


def _principal_age_s(account_id: str, region: str, arn: str) -> float | None:
    """Seconds since the IAM role/user `arn` was created in this account; None if it is absent.

    Principals of other accounts or other kinds (assumed-role sessions, ...) count as old.
    """
    from moto.core.utils import utcnow
    from moto.iam.models import iam_backends
    from moto.utilities.utils import get_partition

    match = re.fullmatch(r"arn:[^:]+:iam::(\d{12}):(role|user)/(.+)", arn or "")
    if not match or match.group(1) != account_id:
        return float("inf")
    backend = iam_backends[account_id][get_partition(region)]
    principals = backend.roles.values() if match.group(2) == "role" else backend.users.values()
    for principal in principals:
        if principal.arn == arn:
            return (utcnow() - principal.create_date).total_seconds()
    return None


def _require_usable_principal(response: Any, arn: str | None, message: str) -> None:
    """EKS refuses a role/principal IAM does not show it yet: absent, or created too recently.

    IAM is eventually consistent: "a change ... might not be immediately visible" to other
    services, and callers should not put a new principal on a critical path straight away (IAM
    User Guide, "Changes that I make are not always immediately visible"). EKS answers 400
    InvalidParameterException in that window, the same answer as for a role that does not exist
    (terraform-aws-eks #2406, eksctl #2182 for CreateCluster; terraform-provider-aws #34717 for
    Pod Identity; terraform-aws-eks #2969 for access entries). Clients retry it.
    """
    from moto.eks.exceptions import InvalidParameterException

    if not arn:
        return
    age = _principal_age_s(response.current_account, response.region, arn)
    if age is None or age < _CONTROL.timings.iam_propagation_s:
        raise InvalidParameterException(
            clusterName=response._get_param("name"),
            nodegroupName=None,
            fargateProfileName=None,
            addonName=None,
            message=message.format(arn=arn),
        )


ROLE_NOT_ASSUMABLE = (
    "Role with arn: {arn}, could not be assumed because it does not exist or the trusted "
    "entity is not correct"
)
POD_IDENTITY_ROLE_MISSING = "Role provided in the request does not exist"
ACCESS_ENTRY_PRINCIPAL_INVALID = "The specified principalArn is invalid: invalid principal."


def _install_instance_profile_propagation() -> None:
    """RunInstances refuses an instance profile IAM has not propagated to EC2 yet.

    The same eventual consistency as above ("Changes that I make are not always immediately
    visible"): for some seconds after CreateInstanceProfile, RunInstances answers 400
    InvalidParameterValue "Value (<name>) for parameter iamInstanceProfile.name is invalid.
    Invalid IAM Instance Profile name" (aws/aws-sdk-js-v3 #5253: RunInstances right after
    creating the profile; hashicorp/terraform-provider-aws #27516). moto accepts it at once.
    """
    from moto.core.utils import utcnow
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.responses import EC2Response
    from moto.iam.models import iam_backends
    from moto.utilities.utils import get_partition

    original = EC2Response.run_instances

    def run_instances(self: Any) -> Any:
        name = self._get_param("IamInstanceProfile.Name")
        if name:
            backend = iam_backends[self.current_account][get_partition(self.region)]
            profile = backend.instance_profiles.get(name)
            age_s = (utcnow() - profile.create_date).total_seconds() if profile else None
            if age_s is not None and age_s < _CONTROL.timings.iam_propagation_s:
                raise EC2ClientError(
                    "InvalidParameterValue",
                    f"Value ({name}) for parameter iamInstanceProfile.name is invalid. Invalid "
                    "IAM Instance Profile name",
                )
        return original(self)

    EC2Response.run_instances = run_instances


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


def _install_security_group_dependencies() -> None:
    """DeleteSecurityGroup refuses a group something still depends on; moto deleted it anyway.

    EC2 answers DependencyViolation (EC2 API reference, "Error codes": "the specified object
    has dependent resources") with "resource sg-... has a dependent object" (the CLI's answer
    in kubernetes/kops #6454, terraform-aws-eks #2048) while a rule of another group names the
    group, inbound or outbound (EC2 User Guide, "Delete a security group": a group referenced
    by another group's rules cannot be deleted until those rules are removed), or while a
    network interface wears it: here, the ENIs of an EKS cluster that is not gone yet wear its
    cluster security group. A group's rules naming itself do not count.
    """
    from moto.ec2.exceptions import DependencyViolationError
    from moto.ec2.models import EC2Backend
    from moto.ec2.responses import EC2Response
    from moto.eks.models import eks_backends

    original = EC2Backend.delete_security_group

    def delete_security_group(
        self: Any, name: str | None = None, group_id: str | None = None
    ) -> None:
        group = (
            self.get_security_group_from_id(group_id)
            if group_id
            else self.get_security_group_by_name_or_id(name)
            if name
            else None
        )
        if group is not None:
            eks = eks_backends[self.account_id][self.region_name]
            worn = any(
                (c.resources_vpc_config or {}).get("clusterSecurityGroupId") == group.id
                for c in eks.clusters.values()
            )
            if worn or _groups_naming(self, group):
                raise DependencyViolationError(f"resource {group.id} has a dependent object")
        return original(self, name=name, group_id=group_id)

    EC2Backend.delete_security_group = delete_security_group

    original_call_action = EC2Response.call_action

    def call_action(self: Any) -> Any:
        # A cluster whose deletion is over is gone for EC2 too (its security group with it),
        # even when no EKS call has looked since.
        _purge_deleted(eks_backends[self.current_account][self.region])
        return original_call_action(self)

    EC2Response.call_action = call_action


def _groups_naming(ec2: Any, group: Any) -> list[str]:
    """The ids of the other security groups with a rule that names `group`."""
    naming = []
    for groups in ec2.groups.values():
        for other in groups.values():
            if other.id == group.id:
                continue
            for rule in [*other.ingress_rules, *other.egress_rules]:
                source = rule.source_group or {}
                if source.get("GroupId") == group.id or (
                    not source.get("GroupId")
                    and source.get("GroupName") == group.name
                    and other.vpc_id == group.vpc_id
                ):
                    naming.append(other.id)
                    break
    return naming


# --- EKS add-ons, Pod Identity associations, access entries, update_cluster_config ----------


def _eks_not_found(message: str) -> Exception:
    """EKS's 404 ResourceNotFoundException, with only the message set."""
    from moto.eks.exceptions import ResourceNotFoundException

    return ResourceNotFoundException(
        clusterName=None,
        nodegroupName=None,
        fargateProfileName=None,
        addonName=None,
        message=message,
    )


def _install_eks() -> None:
    import moto.eks.urls as eks_urls
    from moto.core.responses import ActionResult
    from moto.eks.exceptions import ResourceInUseException
    from moto.eks.responses import EKSResponse

    def cluster_of(self: Any) -> Any:
        name = self._get_param("name")
        cluster = self.eks_backend.clusters.get(name)
        if cluster is None:
            raise _eks_not_found(f"No cluster found for name: {name}.")
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
            raise _eks_not_found(f"No addon: {name} found in cluster: {cluster.name}")
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
            raise _eks_not_found(f"No addon: {name} found in cluster: {cluster.name}")
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
        _require_usable_principal(self, self._get_param("roleArn"), POD_IDENTITY_ROLE_MISSING)
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
            raise _eks_not_found(f"Association {association_id} not found")
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
        _require_usable_principal(self, principal, ACCESS_ENTRY_PRINCIPAL_INVALID)
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
            raise _eks_not_found(f"The specified principalArn could not be found: {principal}")
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
    original_create_nodegroup = EKSResponse.create_nodegroup

    def create_nodegroup(self: Any) -> Any:
        # The node role is checked like the cluster role (same IAM propagation, same answer).
        _require_usable_principal(self, self._get_param("nodeRole"), ROLE_NOT_ASSUMABLE)
        return original_create_nodegroup(self)

    def create_cluster(self: Any) -> Any:
        _require_usable_principal(self, self._get_param("roleArn"), ROLE_NOT_ASSUMABLE)
        vpc_id = _cluster_vpc_id(self)
        result = original_create_cluster(self)
        cluster = self.eks_backend.clusters[self._get_param("name")]
        if vpc_id is not None:
            _create_cluster_security_group(self.eks_backend, cluster, vpc_id)
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

    # Node group version updates (EKS API reference, UpdateNodegroupVersion; DescribeUpdate).
    def nodegroup_of(self: Any) -> Any:
        cluster = cluster_of(self)
        name = self._get_param("nodegroupName")
        nodegroup = cluster.nodegroups.get(name)
        if nodegroup is None:
            raise _eks_not_found(f"No node group found for name: {name}.")
        return cluster, nodegroup

    def update_nodegroup_version(self: Any) -> Any:
        cluster, nodegroup = nodegroup_of(self)
        if nodegroup.status != "ACTIVE":
            # One update at a time; the answer as terraform-provider-aws users quote it
            # ("updating EKS Node Group: ResourceInUseException: Nodegroup cannot be ...").
            raise ResourceInUseException(
                clusterName=cluster.name,
                nodegroupName=nodegroup.nodegroup_name,
                fargateProfileName=None,
                addonName=None,
                message="Nodegroup cannot be updated as it is currently not in Active State",
            )
        template = self._get_param("launchTemplate") or {}
        release = self._get_param("releaseVersion")
        version = self._get_param("version")
        _refuse_rollback(cluster.name, "release version", nodegroup.release_version, release)
        _refuse_rollback(cluster.name, "Kubernetes version", nodegroup.version, version)
        params = []
        if template:
            _check_version_template(self, nodegroup, template, release or version)
            resolved = _launch_template_version(self, template)
            nodegroup.launch_template = {
                **nodegroup.launch_template,
                "version": str(template.get("version") or resolved),
            }
            params.append({"type": "LaunchTemplateVersion", "value": str(resolved)})
        if release:
            params.append({"type": "ReleaseVersion", "value": release})
            nodegroup.release_version = release
        if version or not template:
            # Without a template or a version, the group moves to the cluster's Kubernetes
            # version and the latest AMI for it.
            nodegroup.version = version or cluster.version
            params.append({"type": "Version", "value": nodegroup.version})
        nodegroup.modified_at = _now()
        nodegroup.__dict__["_gpu_updating_at"] = time.monotonic()
        update = {
            "id": str(uuid.uuid4()),
            "status": "InProgress",
            "type": "VersionUpdate",
            "params": params,
            "createdAt": _now(),
            "errors": [],
        }
        _store(self.eks_backend, "updates")[update["id"]] = (
            cluster.name,
            nodegroup.nodegroup_name,
            update,
        )
        return ActionResult({"update": update})

    def describe_update(self: Any) -> Any:
        cluster = cluster_of(self)
        update_id = self._get_param("updateId")
        found = _store(self.eks_backend, "updates").get(update_id)
        if found is None or found[0] != cluster.name:
            raise _eks_not_found(f"No update found for ID: {update_id}")
        _, nodegroup_name, update = found
        nodegroup = cluster.nodegroups.get(nodegroup_name)
        if nodegroup is not None and nodegroup.status != "UPDATING":
            update["status"] = "Successful"
        return ActionResult({"update": update})

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
        create_nodegroup,
        update_cluster_config,
        update_nodegroup_version,
        describe_update,
    ):
        setattr(EKSResponse, method.__name__, method)

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
            "{0}/clusters/(?P<name>[^/]+)/node-groups/(?P<nodegroupName>[^/]+)/update-version$": (
                dispatch
            ),
            "{0}/clusters/(?P<name>[^/]+)/updates/(?P<updateId>[^/]+)$": dispatch,
        }
    )


def _invalid_parameter(cluster_name: str | None, message: str) -> Exception:
    from moto.eks.exceptions import InvalidParameterException

    return InvalidParameterException(
        clusterName=cluster_name,
        nodegroupName=None,
        fargateProfileName=None,
        addonName=None,
        message=message,
    )


def _cluster_vpc_id(response: Any) -> str | None:
    """The VPC of the cluster's subnets; EKS refuses a subnet EC2 does not know.

    EKS checks the subnets with EC2 and passes EC2's answer on as InvalidParameterException
    ("The subnet ID 'subnet-...' does not exist (Service: AmazonEC2; Status Code: 400; Error
    Code: InvalidSubnetID.NotFound; ...)", as quoted in AdminTurnedDevOps/
    DevOps-The-Hard-Way-AWS #16). The cluster lives in that VPC: describe-cluster reports it
    as resourcesVpcConfig.vpcId (EKS API reference, VpcConfigResponse).
    """
    from moto.ec2.exceptions import InvalidSubnetIdError
    from moto.ec2.models import ec2_backends

    ec2 = ec2_backends[response.current_account][response.region]
    vpc_ids = []
    for subnet_id in (response._get_param("resourcesVpcConfig") or {}).get("subnetIds") or []:
        try:
            vpc_ids.append(ec2.get_subnet(subnet_id).vpc_id)
        except InvalidSubnetIdError:
            raise _invalid_parameter(
                response._get_param("name"),
                f"The subnet ID '{subnet_id}' does not exist (Service: AmazonEC2; Status Code: "
                "400; Error Code: InvalidSubnetID.NotFound)",
            ) from None
    return vpc_ids[0] if vpc_ids else None


CLUSTER_SG_DESCRIPTION = (
    "EKS created security group applied to ENI that is attached to EKS Control Plane master "
    "nodes, as well as any managed workloads."
)


def _create_cluster_security_group(eks: Any, cluster: Any, vpc_id: str) -> None:
    """The security group EKS makes with every cluster, reported as clusterSecurityGroupId.

    EKS User Guide, "View Amazon EKS security group requirements for clusters": named
    eks-cluster-sg-<cluster>-<number>, tagged aws:eks:cluster-name=<cluster> and
    kubernetes.io/cluster/<cluster>=owned, inbound all traffic from itself, outbound all. EKS
    puts it on the control plane's ENIs and on managed nodes whose launch template names no
    security group, and deletes it with the cluster (see `_delete_cluster_security_group`).
    """
    import random

    from moto.ec2.models import ec2_backends

    ec2 = ec2_backends[eks.account_id][eks.region_name]
    group = ec2.create_security_group(
        name=f"eks-cluster-sg-{cluster.name}-{random.randrange(10**9, 10**10)}",
        description=CLUSTER_SG_DESCRIPTION,
        vpc_id=vpc_id,
        tags={
            "aws:eks:cluster-name": cluster.name,
            f"kubernetes.io/cluster/{cluster.name}": "owned",
        },
    )
    ec2.authorize_security_group_ingress(
        group.id, "-1", None, None, [], source_groups=[{"GroupId": group.id}]
    )
    cluster.resources_vpc_config = {
        **cluster.resources_vpc_config,
        "clusterSecurityGroupId": group.id,
        "vpcId": vpc_id,
    }


def _delete_cluster_security_group(eks: Any, cluster: Any) -> None:
    """EKS deletes the cluster security group with the cluster, unless EC2 refuses.

    A rule of another group that still names it makes DeleteSecurityGroup fail with
    DependencyViolation; EKS then finishes deleting the cluster and leaves the group behind,
    which later blocks deleting the VPC (terraform-provider-aws #11473). Callers remove their
    rules that name it before they delete the cluster.
    """
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.models import ec2_backends

    group_id = (cluster.resources_vpc_config or {}).get("clusterSecurityGroupId")
    if not group_id:
        return
    with contextlib.suppress(EC2ClientError):  # DependencyViolation, or deleted already
        ec2_backends[eks.account_id][eks.region_name].delete_security_group(group_id=group_id)


def _check_version_template(
    response: Any, nodegroup: Any, template: dict, release_or_version: str | None
) -> None:
    """UpdateNodegroupVersion's rules for launch templates (EKS API reference).

    "You can update a node group using a launch template only if the node group was originally
    deployed with a launch template. Additionally, the launch template ID or name must match
    what was used when the node group was created." And a template that names its own AMI
    takes neither releaseVersion nor version: "or the node group update will fail".
    """
    live = nodegroup.launch_template or {}
    cluster_name = nodegroup.cluster_name
    if not live:
        raise _invalid_parameter(
            cluster_name,
            f"Nodegroup {nodegroup.nodegroup_name} was not created with a launch template; "
            "it cannot be updated with one",
        )
    if (template.get("id") and template["id"] != live.get("id")) or (
        template.get("name") and template["name"] != live.get("name")
    ):
        raise _invalid_parameter(
            cluster_name,
            "The launch template ID or name must match the one the node group was created with "
            f"({live.get('id')} / {live.get('name')})",
        )
    data = _launch_template_data(response, template)
    if release_or_version and data.get("ImageId"):
        raise _invalid_parameter(
            cluster_name,
            "You cannot specify a release version or Kubernetes version with a launch template "
            "that contains a custom AMI",
        )


def _version_key(version: str) -> tuple[int, ...] | None:
    """Comparable: 1.34.0-18d04e52 (Bottlerocket) -> (1, 34, 0); 1.29.0-20240202 (AL2) ->
    (1, 29, 0, 20240202); None for what does not parse."""
    match = re.fullmatch(r"v?(\d+(?:\.\d+)*)(?:-(\w+))?", version or "")
    if not match:
        return None
    key = tuple(int(n) for n in match.group(1).split("."))
    suffix = match.group(2) or ""
    return key + ((int(suffix),) if suffix.isdigit() else ())


def _refuse_rollback(cluster_name: str, what: str, current: str, wanted: str | None) -> None:
    """No going back: "You cannot roll back a node group to an earlier Kubernetes version or
    AMI version" (EKS API reference, UpdateNodegroupVersion)."""
    if not wanted or not current:
        return
    old, new = _version_key(current), _version_key(wanted)
    if old is not None and new is not None and new < old:
        raise _invalid_parameter(
            cluster_name,
            f"Requested {what} {wanted} is older than the node group's {current}; a node "
            "group cannot be rolled back",
        )


def _launch_template(response: Any, template: dict) -> Any:
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.models import ec2_backends

    ec2 = ec2_backends[response.current_account][response.region]
    try:
        if template.get("id"):
            return ec2.get_launch_template(template["id"])
        return ec2.get_launch_template_by_name(template.get("name") or "")
    except EC2ClientError as error:
        raise _invalid_parameter(response._get_param("name"), error.message) from None


def _launch_template_version(response: Any, template: dict) -> int:
    from moto.ec2.exceptions import EC2ClientError

    found = _launch_template(response, template)
    try:
        # No version: the template's default version (LaunchTemplateSpecification.version).
        return found.get_version(template.get("version") or "$Default").number
    except EC2ClientError as error:
        raise _invalid_parameter(response._get_param("name"), error.message) from None


def _launch_template_data(response: Any, template: dict) -> dict:
    found = _launch_template(response, template)
    return found.get_version(_launch_template_version(response, template)).data


# --- EKS status over time ----------------------------------------------------------------------


def _install_eks_lifecycle() -> None:
    """Clusters and node groups take time, and node groups need a network plugin to be healthy.

    Status is computed from timestamps when read, so no thread runs. Follows the EKS API
    reference (Cluster.status: CREATING | ACTIVE | DELETING | FAILED | UPDATING | PENDING;
    Nodegroup.status: CREATING | ACTIVE | ... | CREATE_FAILED | DELETING) and the EKS User Guide,
    "View the health status of a managed node group": NodeCreationFailure, "Your launched
    instances are unable to register with your Amazon EKS cluster". Without a CNI the kubelet
    registers but the node stays NotReady ("container runtime network not ready ... cni plugin
    not initialized"), and EKS marks the group CREATE_FAILED with "Instances failed to join the
    kubernetes cluster" (terraform-aws-eks issues #1972 and #3446).
    """
    from moto.eks.models import Cluster, EKSBackend, Nodegroup, validate_safe_to_delete
    from moto.eks.responses import EKSResponse

    def cluster_status(self: Any) -> str:
        if self.__dict__.get("_gpu_deleting_at") is not None:
            return "DELETING"
        created = self.__dict__.get("_gpu_created_at", 0.0)
        if time.monotonic() - created < _CONTROL.timings.cluster_transition_s:
            return "CREATING"
        return self.__dict__.get("_gpu_status", "ACTIVE")

    def nodegroup_status(self: Any) -> str:
        if self.__dict__.get("_gpu_deleting_at") is not None:
            return "DELETING"
        latched = self.__dict__.get("_gpu_outcome")
        if latched is None:
            latched = _nodegroup_outcome(self)
            if latched is None:
                return "CREATING"
            self.__dict__["_gpu_outcome"] = latched
        if latched != "ACTIVE":
            return latched
        # A version update rolls the nodes; the group is UPDATING meanwhile (EKS API reference,
        # Nodegroup.status; EKS User Guide, "Update a managed node group for your cluster").
        updating = self.__dict__.get("_gpu_updating_at")
        if updating is not None:
            if time.monotonic() - updating < _CONTROL.timings.nodegroup_transition_s:
                return "UPDATING"
            self.__dict__.pop("_gpu_updating_at")
        return self.__dict__.get("_gpu_status", "ACTIVE")

    def set_status(self: Any, value: str) -> None:
        self.__dict__["_gpu_status"] = value

    def wrap_init(cls: type) -> None:
        original = cls.__init__

        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            self.__dict__["_gpu_created_at"] = time.monotonic()
            original(self, *args, **kwargs)

        cls.__init__ = __init__

    wrap_init(Cluster)
    wrap_init(Nodegroup)
    Cluster.status = property(cluster_status, set_status)
    Nodegroup.status = property(nodegroup_status, set_status)

    # Deletes take time too (EKS API reference, DeleteCluster / DeleteNodegroup: the answer
    # says DELETING; describe finds the resource until the deletion completes).
    def delete_cluster(self: Any, name: str) -> Any:
        cluster = self.clusters.get(name)
        if cluster is None:
            raise _eks_not_found(f"No cluster found for name: {name}.")
        if cluster.__dict__.get("_gpu_deleting_at") is not None:
            return cluster
        validate_safe_to_delete(cluster)  # node groups (even DELETING ones) block it
        cluster.__dict__["_gpu_deleting_at"] = time.monotonic()
        _on_cluster_deleted(self, name)
        return cluster

    def delete_nodegroup(self: Any, cluster_name: str, nodegroup_name: str) -> Any:
        cluster = self.clusters.get(cluster_name)
        if cluster is None:
            raise _eks_not_found(f"No cluster found for name: {cluster_name}.")
        nodegroup = cluster.nodegroups.get(nodegroup_name)
        if nodegroup is None:
            raise _eks_not_found(f"No node group found for name: {nodegroup_name}.")
        nodegroup.__dict__.setdefault("_gpu_deleting_at", time.monotonic())
        return nodegroup

    EKSBackend.delete_cluster = delete_cluster
    EKSBackend.delete_nodegroup = delete_nodegroup

    original_call_action = EKSResponse.call_action

    def call_action(self: Any) -> Any:
        _purge_deleted(self.eks_backend)
        return original_call_action(self)

    EKSResponse.call_action = call_action


def _nodegroup_outcome(nodegroup: Any) -> str | None:
    """ACTIVE or CREATE_FAILED once decided, None while the nodes are still joining."""
    timings = _CONTROL.timings
    elapsed = time.monotonic() - nodegroup.__dict__.get("_gpu_created_at", 0.0)
    if elapsed < timings.nodegroup_transition_s:
        return None
    cni = _CONTROL.is_cni_ready(nodegroup.cluster_name)
    if cni is None or cni:
        # A CNI seen before the timeout lets the nodes turn Ready. Status is read lazily, so a
        # network installed after the timeout but before anyone looked still counts: callers
        # poll, and a test that wants the failure does not install one.
        return "ACTIVE"
    if elapsed < timings.nodes_join_timeout_s:
        return None
    desired = int((nodegroup.scaling_config or {}).get("desiredSize") or 1)
    nodegroup.health = {
        "issues": [
            {
                "code": "NodeCreationFailure",
                "message": "Instances failed to join the kubernetes cluster",
                "resourceIds": [f"i-{uuid.uuid4().hex[:17]}" for _ in range(max(desired, 1))],
            }
        ]
    }
    return "CREATE_FAILED"


def _purge_deleted(backend: Any) -> None:
    """Drop clusters and node groups whose DELETING time is over."""
    timings = _CONTROL.timings
    now = time.monotonic()
    for name, cluster in list(backend.clusters.items()):
        for ng_name, nodegroup in list(cluster.nodegroups.items()):
            since = nodegroup.__dict__.get("_gpu_deleting_at")
            if since is not None and now - since >= timings.nodegroup_transition_s:
                del cluster.nodegroups[ng_name]
                cluster.nodegroup_count -= 1
        since = cluster.__dict__.get("_gpu_deleting_at")
        if since is not None and now - since >= timings.cluster_transition_s:
            del backend.clusters[name]
            backend.cluster_count -= 1
            _delete_cluster_security_group(backend, cluster)


def _on_cluster_deleted(backend: Any, name: str) -> None:
    # Deleting a cluster deletes its add-ons, associations and access entries with it.
    for store_name in ("addons", "access_entries"):
        store = _store(backend, store_name)
        for key in [k for k in store if k[0] == name]:
            del store[key]
    pod_identity = _store(backend, "pod_identity")
    for key in [k for k, a in pod_identity.items() if a["clusterName"] == name]:
        del pod_identity[key]


# --- RDS status over time -----------------------------------------------------------------------


def _install_rds_lifecycle() -> None:
    """DB instances take time, and what they use stays in use until they are gone.

    RDS User Guide, "Viewing Amazon RDS DB instance status": a new instance is `creating` ("The
    DB instance is being created. The DB instance is inaccessible while it is being created")
    before `available`, and a deleted one is `deleting` until it is gone; both take minutes.
    moto 5.2 makes an instance available at once and forgets it at DeleteDBInstance. Here each
    takes `db_instance_transition_s`, computed from timestamps when read (no thread). Meanwhile:
    - DeleteDBInstance of an instance being deleted answers InvalidDBInstanceState (RDS API
      reference, DeleteDBInstance "Errors": "The DB instance isn't in a valid state");
    - DeleteDBSubnetGroup answers InvalidDBSubnetGroupStateFault while an instance is in the
      group (RDS API reference, DeleteDBSubnetGroup "Errors": "The DB subnet group cannot be
      deleted because it's in use");
    - EC2 refuses to delete a security group the instance's network interface still wears
      (DependencyViolation, as for the EKS cluster security group above).
    """
    from moto.ec2.exceptions import DependencyViolationError
    from moto.ec2.models import EC2Backend
    from moto.rds.exceptions import RDSClientError
    from moto.rds.models import DBInstance, RDSBackend, rds_backends

    def status(self: Any) -> str:
        if self.__dict__.get("_gpu_deleting_at") is not None:
            return "deleting"
        created = self.__dict__.get("_gpu_created_at", 0.0)
        if time.monotonic() - created < _CONTROL.timings.db_instance_transition_s:
            return "creating"
        return self.__dict__.get("_gpu_status", "available")

    def set_status(self: Any, value: str) -> None:
        self.__dict__["_gpu_status"] = value

    original_init = DBInstance.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        self.__dict__["_gpu_created_at"] = time.monotonic()
        original_init(self, *args, **kwargs)

    DBInstance.__init__ = __init__
    DBInstance.status = property(status, set_status)

    def purge(backend: Any) -> None:
        # An instance whose deletion is over is gone for every later call.
        for name, db in list(backend.databases.items()):
            deleting = db.__dict__.get("_gpu_deleting_at")
            if (
                deleting is not None
                and time.monotonic() - deleting >= _CONTROL.timings.db_instance_transition_s
            ):
                del backend.databases[name]

    def wrap(method: str, before: Callable[..., None] | None = None) -> None:
        original = getattr(RDSBackend, method)

        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            purge(self)
            if before is not None:
                before(self, *args, **kwargs)
            return original(self, *args, **kwargs)

        setattr(RDSBackend, method, call)

    for method in ("describe_db_instances", "create_db_instance", "modify_db_instance"):
        wrap(method)

    def subnet_group_free(self: Any, subnet_name: str) -> None:
        users = [
            db.db_instance_identifier
            for db in self.databases.values()
            # moto keeps the name behind a write-only property; the group object is readable.
            if getattr(getattr(db, "db_subnet_group", None), "name", None) == subnet_name
        ]
        if users:
            raise RDSClientError(
                "InvalidDBSubnetGroupStateFault",
                f"Cannot delete the subnet group '{subnet_name}' because at least one database "
                f"instance: {users[0]} is still using it.",
            )

    wrap("delete_subnet_group", subnet_group_free)

    original_delete = RDSBackend.delete_db_instance

    def delete_db_instance(self: Any, db_instance_identifier: str, *args: Any, **kwargs: Any):
        purge(self)
        db = self.databases.get(db_instance_identifier)
        if db is not None and db.__dict__.get("_gpu_deleting_at") is not None:
            raise RDSClientError(
                "InvalidDBInstanceState",
                f"Instance {db_instance_identifier} is already being deleted.",
            )
        # moto takes the final snapshot and deletes the managed secret, then forgets the
        # instance: keep it listed, `deleting`, for the transition time.
        deleted = original_delete(self, db_instance_identifier, *args, **kwargs)
        deleted.__dict__["_gpu_deleting_at"] = time.monotonic()
        self.databases[db_instance_identifier] = deleted
        return deleted

    RDSBackend.delete_db_instance = delete_db_instance

    original_delete_group = EC2Backend.delete_security_group

    def delete_security_group(
        self: Any, name: str | None = None, group_id: str | None = None
    ) -> None:
        if group_id:
            rds = rds_backends[self.account_id][self.region_name]
            purge(rds)
            if any(group_id in db.vpc_security_group_ids for db in rds.databases.values()):
                raise DependencyViolationError(f"resource {group_id} has a dependent object")
        return original_delete_group(self, name=name, group_id=group_id)

    EC2Backend.delete_security_group = delete_security_group


# --- The HTTP layer: faults, idempotency tokens, the control endpoint ---------------------------

# EKS is REST: the operation is the method and the path (EKS API reference, each action's
# "Request Syntax"). EC2 and IAM name it in the query's Action parameter.
_EKS_OPERATIONS = [
    (method, re.compile("^" + path + "$"), operation)
    for method, path, operation in [
        ("POST", r"/clusters", "CreateCluster"),
        ("GET", r"/clusters", "ListClusters"),
        ("GET", r"/clusters/[^/]+", "DescribeCluster"),
        ("DELETE", r"/clusters/[^/]+", "DeleteCluster"),
        ("POST", r"/clusters/[^/]+/update-config", "UpdateClusterConfig"),
        ("POST", r"/clusters/[^/]+/node-groups", "CreateNodegroup"),
        ("GET", r"/clusters/[^/]+/node-groups", "ListNodegroups"),
        ("GET", r"/clusters/[^/]+/node-groups/[^/]+", "DescribeNodegroup"),
        ("DELETE", r"/clusters/[^/]+/node-groups/[^/]+", "DeleteNodegroup"),
        ("POST", r"/clusters/[^/]+/node-groups/[^/]+/update-config", "UpdateNodegroupConfig"),
        ("POST", r"/clusters/[^/]+/node-groups/[^/]+/update-version", "UpdateNodegroupVersion"),
        ("GET", r"/clusters/[^/]+/updates/[^/]+", "DescribeUpdate"),
        ("POST", r"/clusters/[^/]+/addons", "CreateAddon"),
        ("GET", r"/clusters/[^/]+/addons", "ListAddons"),
        ("GET", r"/clusters/[^/]+/addons/[^/]+", "DescribeAddon"),
        ("DELETE", r"/clusters/[^/]+/addons/[^/]+", "DeleteAddon"),
        ("POST", r"/clusters/[^/]+/addons/[^/]+/update", "UpdateAddon"),
        ("POST", r"/clusters/[^/]+/pod-identity-associations", "CreatePodIdentityAssociation"),
        ("GET", r"/clusters/[^/]+/pod-identity-associations", "ListPodIdentityAssociations"),
        (
            "GET",
            r"/clusters/[^/]+/pod-identity-associations/[^/]+",
            "DescribePodIdentityAssociation",
        ),
        (
            "POST",
            r"/clusters/[^/]+/pod-identity-associations/[^/]+",
            "UpdatePodIdentityAssociation",
        ),
        (
            "DELETE",
            r"/clusters/[^/]+/pod-identity-associations/[^/]+",
            "DeletePodIdentityAssociation",
        ),
        ("POST", r"/clusters/[^/]+/access-entries", "CreateAccessEntry"),
        ("GET", r"/clusters/[^/]+/access-entries", "ListAccessEntries"),
        ("GET", r"/clusters/[^/]+/access-entries/.+", "DescribeAccessEntry"),
        ("POST", r"/clusters/[^/]+/access-entries/.+", "UpdateAccessEntry"),
        ("DELETE", r"/clusters/[^/]+/access-entries/.+", "DeleteAccessEntry"),
        ("POST", r"/tags/.+", "TagResource"),
        ("DELETE", r"/tags/.+", "UntagResource"),
        ("GET", r"/tags/.+", "ListTagsForResource"),
    ]
]

_CREDENTIAL = re.compile(r"Credential=([^/]+)/\d{8}/([^/]+)/([^/]+)/aws4_request")


@dataclasses.dataclass
class _Call:
    service: str  # the SigV4 signing name: ec2, eks, iam, ...
    region: str
    access_key: str
    action: str
    token: str | None  # ClientToken / clientRequestToken, when the request carries one
    fingerprint: str  # the request without its token, to tell a retry from a different request


def _read_call(environ: dict[str, Any]) -> _Call | None:
    match = _CREDENTIAL.search(environ.get("HTTP_AUTHORIZATION", ""))
    if not match:
        return None
    access_key, region, service = match.groups()
    if service not in ("ec2", "iam", "eks", "rds", "ecr", "secretsmanager"):
        return None  # leave other bodies (S3 uploads) unread
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    body = environ["wsgi.input"].read(length) if length else b""
    environ["wsgi.input"] = io.BytesIO(body)  # moto reads it again
    method = environ.get("REQUEST_METHOD", "GET")
    path = urllib.parse.unquote(environ.get("PATH_INFO", ""))
    if service in ("ecr", "secretsmanager"):
        # JSON 1.1 protocol: the operation is named by X-Amz-Target ("<service prefix>.<Action>").
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if "." not in target:
            return None
        action = target.rsplit(".", 1)[1]
        return _Call(service, region, access_key, action, None, body.decode("utf-8", "replace"))
    if service in ("ec2", "iam", "rds"):
        params = dict(urllib.parse.parse_qsl(body.decode("utf-8", "replace")))
        params.update(urllib.parse.parse_qsl(environ.get("QUERY_STRING", "")))
        action = params.get("Action")
        if not action:
            return None
        token = params.pop("ClientToken", None) if service == "ec2" else None
        return _Call(service, region, access_key, action, token, json.dumps(params, sort_keys=True))
    if service == "eks":
        action = next(
            (op for m, pattern, op in _EKS_OPERATIONS if m == method and pattern.match(path)), None
        )
        if action is None:
            return None
        try:
            payload = json.loads(body) if body else {}
        except ValueError:
            payload = {}
        token = payload.pop("clientRequestToken", None) if isinstance(payload, dict) else None
        fingerprint = json.dumps([method, path, payload], sort_keys=True, default=str)
        return _Call(service, region, access_key, action, token, fingerprint)
    return None


def _error(call: _Call, status: int, code: str, message: str) -> tuple[int, list, bytes]:
    """An error in the service's own wire format, as botocore parses it."""
    request_id = str(uuid.uuid4())
    if call.service == "eks":
        # REST-JSON: the code in x-amzn-ErrorType, the message in the body (EKS API reference,
        # "Common Errors"; botocore's rest-json error parser).
        body = json.dumps({"message": message}).encode()
        headers = [
            ("Content-Type", "application/json"),
            ("x-amzn-ErrorType", code),
            ("x-amzn-RequestId", request_id),
        ]
        return status, headers, body
    if call.service in ("ecr", "secretsmanager"):
        # JSON 1.1: the code in the body's __type (botocore's json error parser).
        body = json.dumps({"__type": code, "message": message}).encode()
        headers = [
            ("Content-Type", "application/x-amz-json-1.1"),
            ("x-amzn-RequestId", request_id),
        ]
        return status, headers, body
    if call.service == "ec2":
        # EC2 query errors: <Response><Errors><Error> (EC2 API reference, "Error codes").
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
            f"<Code>{code}</Code><Message>{message}</Message></Error></Errors>"
            f"<RequestID>{request_id}</RequestID></Response>"
        ).encode()
        return status, [("Content-Type", "text/xml;charset=UTF-8")], body
    # IAM, RDS (query services): <ErrorResponse><Error><Type> (IAM API reference, "Common
    # Errors"); Type says whose fault it is.
    kind = "Receiver" if status >= 500 else "Sender"
    body = (
        '<ErrorResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><Error>'
        f"<Type>{kind}</Type><Code>{code}</Code><Message>{message}</Message></Error>"
        f"<RequestId>{request_id}</RequestId></ErrorResponse>"
    ).encode()
    return status, [("Content-Type", "text/xml")], body


def _ambiguous(call: _Call) -> tuple[int, list, bytes]:
    """A 500 after the request was carried out: the client cannot tell it succeeded.

    EC2 InternalError ("An internal error has occurred", EC2 API reference, "Error codes");
    EKS ServerException (HTTP 500, EKS API reference); IAM ServiceFailure (HTTP 500, e.g. IAM
    API reference, CreateRole "Errors"). botocore retries all three (AWS SDKs and Tools
    reference guide, "Retry behavior": transient errors, HTTP 500/502/503/504), so a create
    without an idempotency token runs twice.
    """
    if call.service == "eks":
        return _error(call, 500, "ServerException", "Internal failure. Please retry.")
    if call.service == "ec2":
        return _error(
            call, 500, "InternalError", "An internal error has occurred. Retry your request."
        )
    if call.service == "ecr":
        # ECR API reference, "ServerException": "These errors are usually caused by a
        # server-side issue" (HTTP 500).
        return _error(call, 500, "ServerException", "Internal service error.")
    if call.service in ("rds", "secretsmanager"):
        # RDS API reference and Secrets Manager API reference, "Common Errors": InternalFailure,
        # HTTP 500, "The request processing has failed because of an unknown error".
        return _error(
            call,
            500,
            "InternalFailure",
            "The request processing has failed because of an unknown error, exception or failure.",
        )
    return _error(
        call,
        500,
        "ServiceFailure",
        "The request processing has failed because of an unknown error, exception or failure.",
    )


def _throttled(call: _Call) -> tuple[int, list, bytes]:
    """Throttled before anything ran.

    EC2: RequestLimitExceeded ("Request throttling for the Amazon EC2 API"); EC2 sends it with
    HTTP 503, as SDK logs from real accounts show ("Status Code: 503; Error Code:
    RequestLimitExceeded", cloudfoundry/bosh-aws-cpi-release #61, CloudSnorkel/cdk-github-runners
    #946). EKS: ThrottlingException, HTTP 429 (EKS API model). IAM: Throttling, HTTP 400 ("Rate
    exceeded"). botocore treats all three as throttling ("Retry behavior").
    """
    if call.service == "eks":
        return _error(call, 429, "ThrottlingException", "Rate exceeded")
    if call.service == "ec2":
        return _error(call, 503, "RequestLimitExceeded", "Request limit exceeded.")
    if call.service in ("ecr", "secretsmanager"):
        # "Common Errors" of both APIs: ThrottlingException, HTTP 400.
        return _error(call, 400, "ThrottlingException", "Rate exceeded")
    # IAM and RDS: Throttling, HTTP 400 (RDS API reference, "Common Errors").
    return _error(call, 400, "Throttling", "Rate exceeded")


class _Replies:
    """First answers to requests that carried an idempotency token, by account/region/token.

    EC2 "Ensuring idempotency of mutating API requests": a retry with the same ClientToken and
    the same parameters returns the first result and creates nothing; the same token with other
    parameters answers IdempotentParameterMismatch. EKS `clientRequestToken` ("a unique,
    case-sensitive identifier that you provide to ensure the idempotency of the request", EKS API
    reference, CreateCluster and the other creates) is honoured the same way. botocore fills
    both tokens in when the caller does not, and keeps them across its own retries.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.replies: dict[tuple[str, ...], tuple[str, tuple[int, list, bytes]]] = {}

    @staticmethod
    def key(call: _Call) -> tuple[str, ...]:
        return (call.access_key, call.region, call.service, call.action, call.token or "")

    def get(self, call: _Call) -> tuple[str, tuple[int, list, bytes]] | None:
        with self.lock:
            return self.replies.get(self.key(call))

    def put(self, call: _Call, reply: tuple[int, list, bytes]) -> None:
        with self.lock:
            self.replies.setdefault(self.key(call), (call.fingerprint, reply))

    def clear(self) -> None:
        with self.lock:
            self.replies.clear()


_REPLIES = _Replies()


def _respond(start_response: Any, reply: tuple[int, list, bytes]) -> Iterable[bytes]:
    from http import HTTPStatus

    status, headers, body = reply
    headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
    headers.append(("Content-Length", str(len(body))))
    start_response(f"{status} {HTTPStatus(status).phrase}", headers)
    return [body]


def _run(app: Callable, environ: dict[str, Any]) -> tuple[int, list, bytes]:
    captured: dict[str, Any] = {}

    def start_response(status: str, headers: list, exc_info: Any = None) -> Callable:
        captured["status"], captured["headers"] = int(status.split()[0]), list(headers)
        return lambda data: None

    chunks = app(environ, start_response)
    try:
        body = b"".join(chunks)
    finally:
        if hasattr(chunks, "close"):
            chunks.close()
    return captured["status"], captured["headers"], body


def _control_endpoint(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """/_gpu_analysis/{faults,configure,reset}: the same control as LocalAws, over HTTP."""
    path = environ.get("PATH_INFO", "")
    method = environ.get("REQUEST_METHOD", "GET")
    length = int(environ.get("CONTENT_LENGTH") or 0)
    try:
        payload = json.loads(environ["wsgi.input"].read(length) or b"{}") if length else {}
        if path == "/_gpu_analysis/faults" and method == "POST":
            _CONTROL.inject(payload["action"], payload["fault"], int(payload.get("times", 1)))
        elif path == "/_gpu_analysis/configure" and method == "POST":
            cni = payload.pop("cni_ready", "unchanged")
            _CONTROL.configure(**payload)
            if cni != "unchanged":
                _CONTROL.cni_ready = None if cni is None else (lambda _name, ready=bool(cni): ready)
        elif path == "/_gpu_analysis/reset" and method == "POST":
            _CONTROL.reset()
        elif method != "GET":
            return _respond(start_response, (404, [], b'{"message": "no such control"}'))
        state = {
            "faults": _CONTROL.pending(),
            "timings": dataclasses.asdict(_CONTROL.timings),
            "calls": dict(_CONTROL.calls),
        }
        reply = (200, [("Content-Type", "application/json")], json.dumps(state).encode())
    except (KeyError, TypeError, ValueError) as error:
        message = json.dumps({"message": f"error: {error!s}"}).encode()
        reply = (400, [("Content-Type", "application/json")], message)
    return _respond(start_response, reply)


def _install_http_layer() -> None:
    """Wrap moto's WSGI dispatcher (used by ThreadedMotoServer and `moto.server.main` alike)."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    original = DomainDispatcherApplication.__call__

    def __call__(self: Any, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_gpu_analysis/"):
            return _control_endpoint(environ, start_response)
        if path == "/moto-api/reset":
            _REPLIES.clear()
        call = _read_call(environ)
        if call is None:
            return original(self, environ, start_response)
        fault = _CONTROL.take_fault(call.service, call.action)
        if fault == "throttle":
            return _respond(start_response, _throttled(call))
        if call.token:
            earlier = _REPLIES.get(call)
            if earlier is not None:
                fingerprint, reply = earlier
                if fingerprint == call.fingerprint:
                    return _respond(start_response, reply if fault is None else _ambiguous(call))
                if call.service == "ec2":
                    return _respond(
                        start_response,
                        _error(
                            call,
                            400,
                            "IdempotentParameterMismatch",
                            f"The client token {call.token} has already been used with "
                            "different parameters.",
                        ),
                    )
        reply = _run(lambda e, s: original(self, e, s), environ)
        if call.token and 200 <= reply[0] < 300:
            _REPLIES.put(call, reply)
        if fault == "ambiguous":
            return _respond(start_response, _ambiguous(call))
        return _respond(start_response, reply)

    DomainDispatcherApplication.__call__ = __call__


# --- The server -------------------------------------------------------------------------------


class LocalAws:
    """moto's threaded server with the extensions, on 127.0.0.1 (used by the tests).

    The server runs in this process, so `inject`, `configure` and `cni_ready` act on it
    directly; for a server in another process (`make dev`) use the /_gpu_analysis/ endpoints.
    """

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
        """Forget every resource (moto's reset API), pending faults and settings."""
        import urllib.request

        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass
        self.reset_settings()

    def reset_settings(self) -> None:
        """Forget pending faults, call counts and the CNI check; timings back to the defaults.

        Keeps the resources (moto's reset costs seconds, as it reloads IAM's managed policies).
        """
        _CONTROL.reset()

    def inject(self, action: str, fault: str, times: int = 1) -> None:
        """Play `fault` on the next `times` calls of `action` (an AWS operation name).

        "ambiguous": the request is carried out, then answered with HTTP 500; "throttle": it is
        refused with the service's throttling error and nothing happens. `action` may carry the
        service ("eks:CreateCluster") where names are shared.
        """
        _CONTROL.inject(action, fault, times)

    def pending_faults(self) -> dict[str, list[list[Any]]]:
        """The faults not played yet: {action: [[fault, times left], ...]}."""
        return _CONTROL.pending()

    def calls(self, action: str) -> int:
        """How many requests of `action` reached the server since the last reset."""
        with _CONTROL.lock:
            return _CONTROL.calls[action]

    def configure(self, **timings: float) -> Timings:
        """Set iam_propagation_s, cluster_transition_s, nodegroup_transition_s,
        nodes_join_timeout_s (seconds); unset ones keep their value. Returns all four."""
        return _CONTROL.configure(**timings)

    @property
    def timings(self) -> Timings:
        return _CONTROL.timings

    @property
    def cni_ready(self) -> Callable[[str], bool] | None:
        """callable(cluster_name) -> bool: is a network plugin running in that cluster?

        None (the default, and `make dev`): no cluster network is modelled and node groups turn
        ACTIVE after their transition time.
        """
        return _CONTROL.cni_ready

    @cni_ready.setter
    def cni_ready(self, check: Callable[[str], bool] | None) -> None:
        _CONTROL.cni_ready = check


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.local_aws",
        description="Run a local moto AWS with the gpu-analysis extensions (for `make dev`).",
    )
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    for field in dataclasses.fields(Timings):
        parser.add_argument(
            "--" + field.name.replace("_", "-"),
            type=float,
            default=field.default,
            help=f"seconds (default {field.default}); also POST /_gpu_analysis/configure",
        )
    args = parser.parse_args(argv)

    import moto.server

    install_extensions()
    _CONTROL.defaults = Timings(
        **{f.name: getattr(args, f.name) for f in dataclasses.fields(Timings)}
    )
    _CONTROL.reset()
    print(f"local AWS (moto + gpu-analysis extensions) on http://{args.host}:{args.port}")
    moto.server.main(["-H", args.host, "-p", str(args.port)])


if __name__ == "__main__":
    main()
