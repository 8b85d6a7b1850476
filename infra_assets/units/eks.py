"""gpu-eks: EKS 1.32, private endpoint only, its roles, add-ons and the Bottlerocket nodes."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from typing import Any

from botocore.exceptions import ClientError

from infra_assets.aws_access import (
    AwsClients,
    is_not_found,
    is_owned,
    owner_filter,
    tag_dict,
    tag_specifications,
    version_tuple,
    wait_long,
    wait_short,
)
from infra_assets.aws_iam import (
    RoleSpec,
    delete_role,
    observe_role,
    plan_role,
    plan_role_delete,
    retry_while_principal_propagates,
)
from infra_assets.cost import (
    EKS_CONTROL_PLANE_HOURLY,
    EKS_EXTENDED_SUPPORT_HOURLY,
    EKS_STANDARD_SUPPORT_ENDS,
)
from infra_assets.idempotent import create_or_adopt
from infra_assets.plan import Change, FieldDiff, Plan
from infra_assets.spec import OWNER_TAG
from infra_assets.spec.kubernetes import KARPENTER_DISCOVERY_TAG
from infra_assets.units.aws_unit import (
    AwsUnit,
    NeedsReplacement,
    PlanConflict,
    UpstreamMissing,
    diffs_of,
)
from infra_assets.units.vpc import VpcUnit

# Node group states that will not heal by themselves: the group is replaced (delete + create).
# CREATE_FAILED is what EKS reports when the nodes never join, e.g. no network plugin (CNI)
# made them Ready (terraform-aws-eks issues #1972, #3446).
NODEGROUP_BROKEN = ("CREATE_FAILED", "DEGRADED", "DELETE_FAILED")
# Node group states on the way to ACTIVE: not drift, gpu-cilium waits for them.
NODEGROUP_SETTLING = ("CREATING", "UPDATING")

# Ports the control plane (EKS cluster security group) opens on the nodes, as terraform-aws-eks
# v21 node_security_group rules do: 443 (ingress_cluster_443), the kubelet (10250) and the usual
# admission webhook ports (the module's "recommended rules"). Node to node is one self rule: all
# protocols, which carries WireGuard 51871/udp, Cilium health 4240/tcp, Hubble 4244/tcp, CoreDNS
# 53 tcp/udp and the pods' own traffic (in ENI mode pods use the node's security groups).
CONTROL_PLANE_TO_NODE_TCP_PORTS = (443, 4443, 6443, 8443, 9443, 10250, 10251)


class EksUnit(AwsUnit):
    """The cluster, its IAM roles, the node security group, add-ons and the system node group."""

    name = "gpu-eks"

    # --- the spec, as resources -------------------------------------------------------------

    @property
    def cluster_name(self) -> str:
        return self.spec.cluster_name

    @property
    def cilium_operator_role_name(self) -> str:
        return f"{self.cluster_name}-cilium-operator"

    @property
    def cilium_operator_association(self) -> str:
        """`namespace/service-account` of the Cilium operator."""
        return f"{self.spec.cilium.namespace}/{self.spec.eks.cilium_operator_service_account}"

    def _roles(self) -> dict[str, RoleSpec]:
        eks = self.spec.eks
        return {
            "cluster": RoleSpec(
                name=f"{self.cluster_name}-cluster",
                trusted_service="eks.amazonaws.com",
                managed_policies=eks.cluster_role_policies,
                tags=tuple(self.tags("iam-role/cluster").items()),
                trust_actions=("sts:AssumeRole", "sts:TagSession"),
            ),
            "system-nodes": RoleSpec(
                name=f"{self.cluster_name}-system-nodes",
                trusted_service="ec2.amazonaws.com",
                managed_policies=eks.node_role_policies,
                tags=tuple(self.tags("iam-role/system-nodes").items()),
            ),
            "cilium-operator": RoleSpec(
                name=self.cilium_operator_role_name,
                trusted_service="pods.eks.amazonaws.com",
                trust_actions=("sts:AssumeRole", "sts:TagSession"),
                inline_policies=(("CiliumEniIpam", cilium_operator_policy(self.aws.region)),),
                tags=tuple(self.tags("iam-role/cilium-operator").items()),
            ),
        }

    @property
    def _sg_name(self) -> str:
        return f"{self.cluster_name}-nodes"

    def _sg_tags(self) -> dict[str, str]:
        tags = self.tags("security-group/nodes", self._sg_name)
        tags[KARPENTER_DISCOVERY_TAG] = self.cluster_name
        return tags

    @property
    def _lt_name(self) -> str:
        return f"{self.cluster_name}-{self.spec.eks.system_node_group.name}"

    def _lt_data(self, nodes_sg_id: str) -> dict[str, Any]:
        group = self.spec.eks.system_node_group
        return {
            "BlockDeviceMappings": [
                {
                    "DeviceName": group.os_volume_device,
                    "Ebs": {
                        "VolumeSize": group.os_volume_gib,
                        "VolumeType": group.data_volume_type,
                        "Encrypted": group.os_volume_encrypted,
                        "DeleteOnTermination": True,
                    },
                },
                {
                    "DeviceName": group.data_volume_device,
                    "Ebs": {
                        "VolumeSize": group.data_volume_gib,
                        "VolumeType": group.data_volume_type,
                        "Encrypted": group.data_volume_encrypted,
                        "DeleteOnTermination": True,
                    },
                },
            ],
            # Our node security group, shared with the Karpenter nodes (one network, no islands).
            # With security groups in the launch template EKS does not add the cluster security
            # group to the nodes (EKS User Guide, "Customize managed nodes with launch templates").
            "SecurityGroupIds": [nodes_sg_id],
            # IMDSv2 only, one hop: pods cannot borrow the node's role through the metadata API.
            "MetadataOptions": {"HttpTokens": "required", "HttpPutResponseHopLimit": 1},
        }

    def _desired_logging(self) -> list[str]:
        return sorted(self.spec.eks.control_plane_logging)

    def _desired_node_ingress(self, with_cluster_sg: bool) -> list[str]:
        rules = ["all from nodes"]
        if with_cluster_sg:
            rules += [f"tcp {p} from cluster" for p in CONTROL_PLANE_TO_NODE_TCP_PORTS]
        return sorted(rules)

    # --- observe ----------------------------------------------------------------------------

    def _vpc_ids(self) -> tuple[str | None, dict[str, str]]:
        """Our VPC id and private subnet ids by spec name, from the gpu-vpc unit's tags."""
        vpc_id, subnets = VpcUnit(self.ctx).find_vpc_and_subnets()
        return vpc_id, {k: v for k, v in subnets.items() if k.startswith("private-")}

    def _cluster(self) -> dict[str, Any] | None:
        try:
            return self.aws.eks.describe_cluster(name=self.cluster_name)["cluster"]
        except ClientError as exc:
            if is_not_found(exc):
                return None
            raise

    def _security_group(self, vpc_id: str | None) -> dict[str, Any] | None:
        if vpc_id is None:
            return None
        groups = self.aws.ec2.describe_security_groups(
            Filters=[
                {"Name": "vpc-id", "Values": [vpc_id]},
                {"Name": "group-name", "Values": [self._sg_name]},
            ]
        )["SecurityGroups"]
        return groups[0] if groups else None

    def _group_by_id(self, group_id: str) -> dict[str, Any] | None:
        try:
            return self.aws.ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
        except ClientError as exc:
            if is_not_found(exc):
                return None
            raise

    def _launch_template(self) -> dict[str, Any] | None:
        templates = self.aws.ec2.describe_launch_templates(
            Filters=[owner_filter(self.stack), {"Name": "tag:Name", "Values": [self._lt_name]}]
        )["LaunchTemplates"]
        if not templates:
            return None
        template = templates[0]
        version = self.aws.ec2.describe_launch_template_versions(
            LaunchTemplateId=template["LaunchTemplateId"], Versions=["$Default"]
        )["LaunchTemplateVersions"][0]
        template["Data"] = version["LaunchTemplateData"]
        template["DefaultVersion"] = str(version["VersionNumber"])
        return template

    def _nodegroup(self) -> dict[str, Any] | None:
        return observe_nodegroup(self.aws, self.cluster_name, self.spec.eks.system_node_group.name)

    def _addons(self) -> dict[str, dict[str, Any]]:
        names = self.aws.eks.list_addons(clusterName=self.cluster_name)["addons"]
        return {
            name: self.aws.eks.describe_addon(clusterName=self.cluster_name, addonName=name)[
                "addon"
            ]
            for name in names
        }

    def _association(self) -> dict[str, Any] | None:
        namespace, service_account = self.cilium_operator_association.split("/")
        summaries = self.aws.eks.list_pod_identity_associations(
            clusterName=self.cluster_name, namespace=namespace, serviceAccount=service_account
        )["associations"]
        if not summaries:
            return None
        return self.aws.eks.describe_pod_identity_association(
            clusterName=self.cluster_name, associationId=summaries[0]["associationId"]
        )["association"]

    # --- plan -------------------------------------------------------------------------------

    def plan(self) -> Plan:
        eks = self.spec.eks
        group = eks.system_node_group
        changes: list[Change] = []
        conflicts: list[str] = []
        warnings: list[str] = []
        vpc_id, subnets = self._vpc_ids()
        if vpc_id is None:
            warnings.append("the gpu-vpc unit has no VPC yet: apply gpu_vpc first")
        support_ends = EKS_STANDARD_SUPPORT_ENDS.get(eks.version)
        if support_ends is not None and dt.date.today() >= support_ends:
            warnings.append(
                f"Kubernetes {eks.version} left EKS standard support on "
                f"{support_ends.isoformat()}: the control plane bills at the extended-support "
                f"rate (${EKS_EXTENDED_SUPPORT_HOURLY}/h instead of "
                f"${EKS_CONTROL_PLANE_HOURLY}/h); plan the upgrade to the next minor version"
            )
        sg_id_to_name: dict[str, str] = {}
        ids: dict[str, Any] = {"vpc": vpc_id, **{f"subnet/{k}": v for k, v in subnets.items()}}

        for key, role in self._roles().items():
            change, conflict = plan_role(self.aws.iam, role, self.stack, self.compare, name=key)
            if conflict is not None:
                conflicts.append(conflict)
                continue
            if change.resource_id:
                ids[f"role/{key}"] = change.resource_id
            changes.append(change)

        sg = self._security_group(vpc_id)
        observed_sg = None
        if sg is not None:
            tags = tag_dict(sg.get("Tags"))
            if not is_owned(tags, self.stack):
                conflicts.append(
                    f"security group {self._sg_name} ({sg['GroupId']}) is not ours; remove it"
                )
                sg = None
            else:
                sg_id_to_name[sg["GroupId"]] = "nodes"
                ids["sg/nodes"] = sg["GroupId"]
                observed_sg = {"tags": tags}
        changes.append(
            self.compare(
                "security-group",
                "nodes",
                observed_sg,
                {"tags": self._sg_tags()},
                sg["GroupId"] if sg else None,
            )
        )

        template = self._launch_template()
        desired_lt = self._lt_data("nodes")
        lt_change = self.compare(
            "launch-template",
            self._lt_name,
            None
            if template is None
            else {
                "block_devices": _block_devices(template["Data"]),
                "metadata_options": _metadata(template["Data"]),
                "security_groups": sorted(
                    sg_id_to_name.get(s, s) for s in _template_security_groups(template["Data"])
                ),
            },
            {
                "block_devices": _block_devices(desired_lt),
                "metadata_options": _metadata(desired_lt),
                "security_groups": ["nodes"],
            },
            template["LaunchTemplateId"] if template else None,
        )
        changes.append(lt_change)
        # The version the system nodes should run: today's default, or the one this plan's
        # launch template change makes. A node group stays on the version it was given until
        # it is updated, so a template change alone would never reach the nodes.
        if template is None:
            lt_version = "1"
        elif lt_change.action == "update":
            lt_version = str(int(template.get("LatestVersionNumber", 0)) + 1)
        else:
            lt_version = template["DefaultVersion"]

        cluster = self._cluster()
        subnet_names = {v: k for k, v in subnets.items()}
        desired_cluster = {
            "status": "ACTIVE",
            "version": eks.version,
            "endpoint_private_access": eks.endpoint_private_access,
            "endpoint_public_access": eks.endpoint_public_access,
            "subnets": sorted(s.name for s in self.spec.vpc.subnets if s.tier == "private"),
            "security_groups": ["nodes"],
            "authentication_mode": eks.authentication_mode,
            "logging": self._desired_logging(),
            "tags": self.tags("eks-cluster"),
        }
        observed_cluster = None
        cluster_sg_id: str | None = None
        if cluster is not None:
            if not is_owned(cluster.get("tags"), self.stack):
                conflicts.append(
                    f"EKS cluster {self.cluster_name} exists but is not tagged "
                    f"{OWNER_TAG}={self.stack}; it is not ours to change"
                )
                cluster = None
            else:
                vpc_config = cluster.get("resourcesVpcConfig", {})
                cluster_sg_id = vpc_config.get("clusterSecurityGroupId") or None
                observed_cluster = {
                    "status": cluster.get("status"),
                    "version": cluster.get("version"),
                    "endpoint_private_access": vpc_config.get("endpointPrivateAccess"),
                    "endpoint_public_access": vpc_config.get("endpointPublicAccess"),
                    "subnets": sorted(
                        subnet_names.get(s, s) for s in vpc_config.get("subnetIds", [])
                    ),
                    "security_groups": sorted(
                        sg_id_to_name.get(s, s) for s in vpc_config.get("securityGroupIds", [])
                    ),
                    "authentication_mode": cluster.get("accessConfig", {}).get(
                        "authenticationMode"
                    ),
                    "logging": _enabled_log_types(cluster),
                    "tags": cluster.get("tags", {}),
                }
                warnings += _cluster_status_warnings(self.cluster_name, cluster)
        changes.append(
            self.compare(
                "eks-cluster",
                self.cluster_name,
                observed_cluster,
                desired_cluster,
                cluster["arn"] if cluster else None,
            )
        )

        # The rules between our node group and the control plane. Planned after the cluster:
        # the cluster security group is EKS's, and exists only once the cluster does.
        if cluster is not None and cluster_sg_id is None:
            warnings.append(
                f"EKS reports no cluster security group for {self.cluster_name}: only the "
                "node-to-node rule is managed"
            )
        with_cluster_sg = cluster is None or cluster_sg_id is not None
        if cluster_sg_id:
            sg_id_to_name[cluster_sg_id] = "cluster"
            ids["sg/cluster"] = cluster_sg_id
        observed_rules = None
        if sg is not None:
            cluster_sg = self._group_by_id(cluster_sg_id) if cluster_sg_id else None
            observed_rules = {
                "node_ingress": sorted(_ingress_rules(sg, sg_id_to_name)),
                "cluster_ingress_from_nodes": sorted(
                    r
                    for r in (_ingress_rules(cluster_sg, sg_id_to_name) if cluster_sg else [])
                    if r.endswith(" from nodes")
                ),
            }
            if cluster is None:
                observed_rules = None if not observed_rules["node_ingress"] else observed_rules
        changes.append(
            self.compare(
                "security-group-rules",
                "nodes",
                observed_rules,
                {
                    "node_ingress": self._desired_node_ingress(with_cluster_sg),
                    "cluster_ingress_from_nodes": ["tcp 443 from nodes"] if with_cluster_sg else [],
                },
                sg["GroupId"] if sg else None,
            )
        )

        addons = self._addons() if cluster is not None else {}
        for addon in eks.addons:
            live = addons.get(addon)
            # Installed is what we reconcile. Health is not: CoreDNS stays DEGRADED until
            # gpu-cilium gives the nodes a network, which is the next unit's job.
            changes.append(
                self.compare(
                    "eks-addon",
                    addon,
                    None if live is None else {"installed": True},
                    {"installed": True},
                    live.get("addonArn") if live else None,
                )
            )

        association = self._association() if cluster is not None else None
        if association is not None:
            ids["association/cilium-operator"] = association["associationId"]
        changes.append(
            self.compare(
                "pod-identity-association",
                self.cilium_operator_association,
                None
                if association is None
                else {
                    "role": association.get("roleArn", "").rsplit("/", 1)[-1],
                    "tags": association.get("tags") or {},
                },
                {
                    "role": self.cilium_operator_role_name,
                    "tags": self.tags("pod-identity/cilium-operator"),
                },
                association.get("associationArn") if association else None,
            )
        )

        nodegroup = self._nodegroup() if cluster is not None else None
        desired_nodegroup = {
            "instance_types": list(group.instance_types),
            "ami_type": group.ami_type,
            "release_version": group.release_version,
            "capacity_type": group.capacity_type,
            "min_size": group.min_size,
            "max_size": group.max_size,
            "desired_size_in_range": True,
            "labels": dict(group.labels),
            "taints": _taints(group.taints),
            "subnets": desired_cluster["subnets"],
            "launch_template": self._lt_name,
            "launch_template_version": lt_version,
            "tags": self.tags(f"eks-nodegroup/{group.name}"),
        }
        if nodegroup is not None and nodegroup.get("status") in NODEGROUP_BROKEN:
            # Status is observed state: a failed group never heals, so it is replaced.
            status = nodegroup["status"]
            warnings.append(
                f"node group {group.name} is {status} "
                f"({_health_text(nodegroup) or 'no health issues reported'}): it is replaced"
            )
            changes.append(
                Change(
                    "delete",
                    "eks-nodegroup",
                    group.name,
                    nodegroup.get("nodegroupArn"),
                    (FieldDiff("status", status, "ACTIVE"),),
                )
            )
            changes.append(self.compare("eks-nodegroup", group.name, None, desired_nodegroup))
        else:
            if nodegroup is not None and nodegroup.get("status") in NODEGROUP_SETTLING:
                warnings.append(
                    f"node group {group.name} is {nodegroup['status']}: its nodes become Ready "
                    "once gpu-cilium has installed the network plugin, which waits for it"
                )
            if nodegroup is not None and _is_rollback(
                nodegroup.get("releaseVersion"), group.release_version
            ):
                warnings.append(
                    f"node group {group.name} runs Bottlerocket {nodegroup.get('releaseVersion')}, "
                    f"newer than the pinned {group.release_version}; EKS cannot roll a node group "
                    "back (UpdateNodegroupVersion), so apply leaves the release alone: raise "
                    "NodeGroupSpec.release_version to it, or replace the node group"
                )
            changes.append(
                self.compare(
                    "eks-nodegroup",
                    group.name,
                    None if nodegroup is None else self._observed_nodegroup(nodegroup, subnets),
                    desired_nodegroup,
                    nodegroup.get("nodegroupArn") if nodegroup else None,
                )
            )
        self._ids = ids
        return Plan(self.name, tuple(changes), tuple(warnings), tuple(conflicts))

    def _observed_nodegroup(
        self, nodegroup: dict[str, Any], subnets: dict[str, str]
    ) -> dict[str, Any]:
        group = self.spec.eks.system_node_group
        subnet_names = {v: k for k, v in subnets.items()}
        scaling = nodegroup.get("scalingConfig", {})
        return {
            "instance_types": nodegroup.get("instanceTypes"),
            "ami_type": nodegroup.get("amiType"),
            "release_version": nodegroup.get("releaseVersion"),
            "capacity_type": nodegroup.get("capacityType"),
            "min_size": scaling.get("minSize"),
            "max_size": scaling.get("maxSize"),
            # Within min..max the size is the autoscaling's business, not drift.
            "desired_size_in_range": group.min_size
            <= scaling.get("desiredSize", -1)
            <= group.max_size,
            "labels": nodegroup.get("labels") or {},
            "taints": _taints(
                tuple(
                    (t["key"], t.get("value", ""), t["effect"])
                    for t in nodegroup.get("taints") or []
                )
            ),
            "subnets": sorted(subnet_names.get(s, s) for s in nodegroup.get("subnets", [])),
            "launch_template": (nodegroup.get("launchTemplate") or {}).get("name"),
            "launch_template_version": str((nodegroup.get("launchTemplate") or {}).get("version")),
            "tags": nodegroup.get("tags") or {},
        }

    # --- apply ------------------------------------------------------------------------------

    def _say(self, message: str) -> None:
        self.log(message)

    def _execute(self, change: Change) -> None:
        ids = self._ids
        diffs = diffs_of(change)
        if ids.get("vpc") is None and change.kind in ("security-group", "eks-cluster"):
            raise UpstreamMissing(
                "gpu-eks: no VPC of this stack exists yet; materialize gpu_vpc first"
            )

        if change.kind == "iam-role":
            role = self._roles()[change.name]
            ids[f"role/{change.name}"] = self.apply_role(role)

        elif change.kind == "security-group":
            if change.action == "create":
                ids["sg/nodes"] = self._create_security_group()
            else:
                self.aws.ec2.create_tags(
                    Resources=[change.resource_id or ""],
                    Tags=[{"Key": k, "Value": v} for k, v in self._sg_tags().items()],
                )

        elif change.kind == "launch-template":
            self._apply_launch_template(change)

        elif change.kind == "eks-cluster":
            self._apply_cluster(change, diffs)

        elif change.kind == "security-group-rules":
            self._apply_security_group_rules()

        elif change.kind == "eks-addon":
            if change.action == "create":
                self.aws.eks.create_addon(
                    clusterName=self.cluster_name,
                    addonName=change.name,
                    resolveConflicts="OVERWRITE",
                    tags=self.tags(f"eks-addon/{change.name}"),
                )

        elif change.kind == "pod-identity-association":
            self._apply_association(change, diffs)

        elif change.kind == "eks-nodegroup":
            self._apply_nodegroup(change, diffs)

    def _create_security_group(self) -> str:
        vpc_id = self._ids["vpc"]

        def create() -> str:
            return self.aws.once("ec2").create_security_group(
                GroupName=self._sg_name,
                Description=f"Nodes of EKS cluster {self.cluster_name} (Karpenter discovery)",
                VpcId=vpc_id,
                TagSpecifications=tag_specifications("security-group", self._sg_tags()),
            )["GroupId"]

        def find() -> str | None:
            sg = self._security_group(vpc_id)
            if sg is None or not is_owned(tag_dict(sg.get("Tags")), self.stack):
                return None
            return sg["GroupId"]

        return create_or_adopt(f"security group {self._sg_name}", create, find, self._say)

    def _nodes_sg_id(self) -> str:
        sg_id = self._ids.get("sg/nodes")
        if sg_id is None:
            sg = self._security_group(self._ids.get("vpc"))
            if sg is None:
                raise UpstreamMissing(
                    f"gpu-eks: security group {self._sg_name} is missing; apply gpu_eks again"
                )
            sg_id = self._ids["sg/nodes"] = sg["GroupId"]
        return sg_id

    def _apply_launch_template(self, change: Change) -> None:
        data = self._lt_data(self._nodes_sg_id())
        if change.action == "create":
            token = uuid.uuid4().hex

            def create() -> str:
                return self.aws.once("ec2").create_launch_template(
                    LaunchTemplateName=self._lt_name,
                    LaunchTemplateData=data,
                    ClientToken=token,
                    TagSpecifications=tag_specifications(
                        "launch-template", self.tags("launch-template/system", self._lt_name)
                    ),
                )["LaunchTemplate"]["LaunchTemplateId"]

            def find() -> str | None:
                template = self._launch_template()
                return template["LaunchTemplateId"] if template else None

            create_or_adopt(f"launch template {self._lt_name}", create, find, self._say)
            return
        ec2 = self.aws.ec2
        version = ec2.create_launch_template_version(
            LaunchTemplateId=change.resource_id, LaunchTemplateData=data
        )["LaunchTemplateVersion"]["VersionNumber"]
        ec2.modify_launch_template(LaunchTemplateId=change.resource_id, DefaultVersion=str(version))
        self.log(
            "gpu-eks: new launch template version; system nodes pick it up when the node group "
            "is next updated (EKS rolls the nodes)"
        )

    def _apply_security_group_rules(self) -> None:
        """Authorize the missing rules, revoke node ingress rules the spec does not have."""
        ec2 = self.aws.ec2
        nodes_id = self._nodes_sg_id()
        cluster = self._cluster() or {}
        cluster_id = cluster.get("resourcesVpcConfig", {}).get("clusterSecurityGroupId")
        names = {nodes_id: "nodes", **({cluster_id: "cluster"} if cluster_id else {})}
        by_name = {v: k for k, v in names.items()}
        wanted = set(self._desired_node_ingress(cluster_id is not None))
        # Ingress the spec does not have goes first (our group: extra rules are drift), then
        # what is missing is added, from what is left.
        permissions = (self._group_by_id(nodes_id) or {}).get("IpPermissions", [])
        extra = [p for p in permissions if not _permission_rules(p, names) <= wanted]
        if extra:
            ec2.revoke_security_group_ingress(GroupId=nodes_id, IpPermissions=extra)
        live = set(_ingress_rules(self._group_by_id(nodes_id) or {}, names))
        missing = [_permission(r, by_name) for r in sorted(wanted - live)]
        if missing:
            ec2.authorize_security_group_ingress(GroupId=nodes_id, IpPermissions=missing)
        if cluster_id:
            cluster_sg = self._group_by_id(cluster_id) or {}
            if "tcp 443 from nodes" not in _ingress_rules(cluster_sg, names):
                # Nodes (kubelet, pods) to the API server: terraform-aws-eks ingress_nodes_443.
                ec2.authorize_security_group_ingress(
                    GroupId=cluster_id,
                    IpPermissions=[_permission("tcp 443 from nodes", by_name)],
                )

    def _private_subnet_ids(self) -> list[str]:
        return [
            self._ids[f"subnet/{s.name}"]
            for s in self.spec.vpc.subnets
            if s.tier == "private" and f"subnet/{s.name}" in self._ids
        ]

    def _logging_config(self) -> dict[str, Any]:
        enabled = self._desired_logging()
        disabled = sorted(set(ALL_LOG_TYPES) - set(enabled))
        entries = [{"types": enabled, "enabled": True}]
        if disabled:
            entries.append({"types": disabled, "enabled": False})
        return {"clusterLogging": entries}

    def _apply_cluster(self, change: Change, diffs: dict[str, Any]) -> None:
        eks = self.spec.eks
        client = self.aws.eks
        if change.action == "create":
            subnet_ids = self._private_subnet_ids()
            if len(subnet_ids) != len(self.spec.vpc.availability_zones):
                raise UpstreamMissing(
                    "gpu-eks: the private subnets of gpu-vpc are missing; materialize gpu_vpc first"
                )
            sg_id = self._nodes_sg_id()
            token = uuid.uuid4().hex

            def create() -> str:
                return self.aws.once("eks").create_cluster(
                    name=self.cluster_name,
                    version=eks.version,
                    roleArn=self._ids["role/cluster"],
                    resourcesVpcConfig={
                        "subnetIds": subnet_ids,
                        "securityGroupIds": [sg_id],
                        "endpointPrivateAccess": eks.endpoint_private_access,
                        "endpointPublicAccess": eks.endpoint_public_access,
                    },
                    accessConfig={
                        "authenticationMode": eks.authentication_mode,
                        "bootstrapClusterCreatorAdminPermissions": True,
                    },
                    bootstrapSelfManagedAddons=eks.bootstrap_self_managed_addons,
                    logging=self._logging_config(),
                    clientRequestToken=token,
                    tags=self.tags("eks-cluster"),
                )["cluster"]["arn"]

            def find() -> str | None:
                cluster = self._cluster()
                if cluster is None or not is_owned(cluster.get("tags"), self.stack):
                    return None
                return cluster["arn"]

            what = f"EKS cluster {self.cluster_name}"
            retry_while_principal_propagates(
                what, lambda: create_or_adopt(what, create, find, self._say), self._say
            )
        else:
            status = diffs.get("status")
            if status is not None:
                _refuse_unusable_cluster(self.cluster_name, status.observed, self._cluster())
            fixed = diffs.keys() & {"subnets", "security_groups"}
            if fixed:
                raise NeedsReplacement(
                    f"gpu-eks: cluster {self.cluster_name}: {', '.join(sorted(fixed))} differ "
                    "from the spec and are not changed in place here; fix them in the EKS "
                    "console or recreate the cluster with infra_teardown + infra_apply"
                )
            if "version" in diffs:
                raise NeedsReplacement(
                    f"gpu-eks: cluster {self.cluster_name} runs Kubernetes "
                    f"{diffs['version'].observed}, the spec says {eks.version}; upgrades are "
                    "one minor version at a time: run `aws eks update-cluster-version` by hand"
                )
            if status is not None:  # CREATING/UPDATING: let it settle before changing it
                client.get_waiter("cluster_active").wait(
                    name=self.cluster_name, WaiterConfig=wait_long()
                )
            if diffs.keys() & {"endpoint_private_access", "endpoint_public_access"}:
                client.update_cluster_config(
                    name=self.cluster_name,
                    resourcesVpcConfig={
                        "endpointPrivateAccess": eks.endpoint_private_access,
                        "endpointPublicAccess": eks.endpoint_public_access,
                    },
                )
                client.get_waiter("cluster_active").wait(
                    name=self.cluster_name, WaiterConfig=wait_long()
                )
            if "authentication_mode" in diffs:
                client.update_cluster_config(
                    name=self.cluster_name,
                    accessConfig={"authenticationMode": eks.authentication_mode},
                )
                client.get_waiter("cluster_active").wait(
                    name=self.cluster_name, WaiterConfig=wait_long()
                )
            if "logging" in diffs:
                client.update_cluster_config(name=self.cluster_name, logging=self._logging_config())
            if "tags" in diffs and change.resource_id:
                client.tag_resource(resourceArn=change.resource_id, tags=self.tags("eks-cluster"))
        client.get_waiter("cluster_active").wait(name=self.cluster_name, WaiterConfig=wait_long())

    def _apply_association(self, change: Change, diffs: dict[str, Any]) -> None:
        """The Cilium operator's Pod Identity: before Cilium, since EKS injects credentials
        only when a pod is admitted."""
        namespace, service_account = self.cilium_operator_association.split("/")
        role_arn = (
            self._ids.get("role/cilium-operator")
            or observe_role(self.aws.iam, self.cilium_operator_role_name)["arn"]
        )
        tags = self.tags("pod-identity/cilium-operator")
        what = f"Pod Identity association {self.cilium_operator_association}"
        if change.action == "create":
            token = uuid.uuid4().hex

            def create() -> str:
                return self.aws.once("eks").create_pod_identity_association(
                    clusterName=self.cluster_name,
                    namespace=namespace,
                    serviceAccount=service_account,
                    roleArn=role_arn,
                    clientRequestToken=token,
                    tags=tags,
                )["association"]["associationId"]

            def find() -> str | None:
                association = self._association()
                return association["associationId"] if association else None

            retry_while_principal_propagates(
                what, lambda: create_or_adopt(what, create, find, self._say), self._say
            )
            return
        if "role" in diffs:
            retry_while_principal_propagates(
                what,
                lambda: self.aws.eks.update_pod_identity_association(
                    clusterName=self.cluster_name,
                    associationId=self._ids["association/cilium-operator"],
                    roleArn=role_arn,
                ),
                self._say,
            )
        if "tags" in diffs and change.resource_id:
            self.aws.eks.tag_resource(resourceArn=change.resource_id, tags=tags)

    def _apply_nodegroup(self, change: Change, diffs: dict[str, Any]) -> None:
        group = self.spec.eks.system_node_group
        client = self.aws.eks
        if change.action == "delete":
            self.log(f"gpu-eks: node group {group.name} is being replaced: deleting it first")
            _delete_nodegroup(self.aws, self.cluster_name, group.name)
            return
        if change.action == "create":
            live = self._nodegroup()
            if live is not None and live.get("status") == "DELETING":
                client.get_waiter("nodegroup_deleted").wait(
                    clusterName=self.cluster_name,
                    nodegroupName=group.name,
                    WaiterConfig=wait_long(),
                )
            template = self._launch_template()
            token = uuid.uuid4().hex
            node_role = (
                self._ids.get("role/system-nodes")
                or observe_role(self.aws.iam, self._roles()["system-nodes"].name)["arn"]
            )

            def create() -> str:
                return self.aws.once("eks").create_nodegroup(
                    clusterName=self.cluster_name,
                    nodegroupName=group.name,
                    scalingConfig={
                        "minSize": group.min_size,
                        "maxSize": group.max_size,
                        "desiredSize": group.desired_size,
                    },
                    subnets=self._private_subnet_ids(),
                    instanceTypes=list(group.instance_types),
                    amiType=group.ami_type,
                    releaseVersion=group.release_version,
                    capacityType=group.capacity_type,
                    nodeRole=node_role,
                    labels=dict(group.labels),
                    taints=[
                        {"key": key, "value": value, "effect": effect}
                        for key, value, effect in group.taints
                    ],
                    launchTemplate={
                        "id": template["LaunchTemplateId"],
                        "version": template["DefaultVersion"],
                    }
                    if template
                    else {},
                    clientRequestToken=token,
                    tags=self.tags(f"eks-nodegroup/{group.name}"),
                )["nodegroup"]["nodegroupArn"]

            def find() -> str | None:
                live = self._nodegroup()
                if live is None or live.get("status") == "DELETING":
                    return None
                return live["nodegroupArn"] if is_owned(live.get("tags"), self.stack) else None

            what = f"EKS node group {group.name}"
            retry_while_principal_propagates(
                what, lambda: create_or_adopt(what, create, find, self._say), self._say
            )
            # No waiting for ACTIVE here: the nodes cannot become Ready before a network plugin
            # exists, which gpu-cilium installs next and then waits for this node group.
            self.log(
                f"gpu-eks: node group {group.name} is being created; gpu_cilium installs the "
                "network plugin and waits for it to become ACTIVE"
            )
            return
        fixed = diffs.keys() & {
            "instance_types",
            "ami_type",
            "capacity_type",
            "subnets",
            "launch_template",
        }
        if fixed:
            raise NeedsReplacement(
                f"gpu-eks: node group {group.name}: {', '.join(sorted(fixed))} cannot "
                "change in place; delete the node group (aws eks delete-nodegroup) and "
                "materialize gpu_eks again"
            )
        if diffs.keys() & {"min_size", "max_size", "desired_size_in_range", "labels", "taints"}:
            live = self._nodegroup() or {}
            live_labels = live.get("labels") or {}
            desired_size = min(
                max(live.get("scalingConfig", {}).get("desiredSize", 0), group.min_size),
                group.max_size,
            )
            client.update_nodegroup_config(
                clusterName=self.cluster_name,
                nodegroupName=group.name,
                scalingConfig={
                    "minSize": group.min_size,
                    "maxSize": group.max_size,
                    "desiredSize": desired_size,
                },
                labels={
                    "addOrUpdateLabels": dict(group.labels),
                    "removeLabels": sorted(set(live_labels) - set(dict(group.labels))),
                },
                taints={
                    "addOrUpdateTaints": [
                        {"key": key, "value": value, "effect": effect}
                        for key, value, effect in group.taints
                    ],
                    "removeTaints": [
                        t
                        for t in live.get("taints") or []
                        if t["key"] not in {key for key, _, _ in group.taints}
                    ],
                },
            )
        if diffs.keys() & {"release_version", "launch_template_version"}:
            # A new Bottlerocket release or launch template version rolls the nodes (EKS
            # drains them one by one); the group must be ACTIVE to accept it.
            client.get_waiter("nodegroup_active").wait(
                clusterName=self.cluster_name, nodegroupName=group.name, WaiterConfig=wait_long()
            )
            template = self._launch_template()
            release = {"releaseVersion": group.release_version}
            if "release_version" in diffs and _is_rollback(
                diffs["release_version"].observed, group.release_version
            ):
                release = {}  # refused by EKS; the plan's warning says what to do
            if release or "launch_template_version" in diffs:
                client.update_nodegroup_version(
                    clusterName=self.cluster_name,
                    nodegroupName=group.name,
                    **release,
                    launchTemplate={
                        "id": template["LaunchTemplateId"],
                        "version": template["DefaultVersion"],
                    },
                )
        if "tags" in diffs and change.resource_id:
            client.tag_resource(
                resourceArn=change.resource_id, tags=self.tags(f"eks-nodegroup/{group.name}")
            )
        if diffs.keys() - {"tags"}:
            # An update of a group that has joined (it was ACTIVE): its nodes have a network.
            client.get_waiter("nodegroup_active").wait(
                clusterName=self.cluster_name, nodegroupName=group.name, WaiterConfig=wait_long()
            )

    # --- destroy ----------------------------------------------------------------------------

    def destroy_plan(self) -> Plan:
        """What `destroy()` deletes, in its order, observed now; changes nothing."""
        deletes: list[Change] = []
        warnings: list[str] = []
        cluster = self._cluster()
        if cluster is not None and not is_owned(cluster.get("tags"), self.stack):
            warnings.append(f"EKS cluster {self.cluster_name} is not ours: left alone")
            cluster = None
        vpc_id, _ = self._vpc_ids()
        sg = self._security_group(vpc_id)
        if sg is not None and not is_owned(tag_dict(sg.get("Tags")), self.stack):
            warnings.append(f"security group {sg['GroupId']} is not ours: left alone")
            sg = None
        if cluster is not None:
            for instance_id in self._owned_instance_ids():
                deletes.append(Change("delete", "ec2-instance", instance_id, instance_id))
            nodegroup = self._nodegroup()
            if nodegroup is not None and is_owned(nodegroup.get("tags"), self.stack):
                deletes.append(
                    Change(
                        "delete",
                        "eks-nodegroup",
                        nodegroup["nodegroupName"],
                        nodegroup.get("nodegroupArn"),
                    )
                )
            association = self._association()
            if association is not None and is_owned(association.get("tags"), self.stack):
                deletes.append(
                    Change(
                        "delete",
                        "pod-identity-association",
                        self.cilium_operator_association,
                        association["associationId"],
                    )
                )
            for name, addon in self._addons().items():
                if is_owned(addon.get("tags"), self.stack):
                    deletes.append(Change("delete", "eks-addon", name, addon.get("addonArn")))
            cluster_sg_id = cluster.get("resourcesVpcConfig", {}).get("clusterSecurityGroupId")
            if sg is not None and cluster_sg_id:
                # Our rules between the EKS cluster SG and ours go first: a group that another
                # group's rules name cannot be deleted (DependencyViolation), EKS's included.
                deletes.append(Change("delete", "security-group-rules", "nodes", sg["GroupId"]))
            deletes.append(Change("delete", "eks-cluster", self.cluster_name, cluster["arn"]))

        template = self._launch_template()
        if template is not None:
            deletes.append(
                Change("delete", "launch-template", self._lt_name, template["LaunchTemplateId"])
            )
        if sg is not None:
            deletes.append(Change("delete", "security-group", "nodes", sg["GroupId"]))
        for key, role in self._roles().items():
            change, warning = plan_role_delete(self.aws.iam, role.name, self.stack, name=key)
            if warning is not None:
                warnings.append(warning)
            elif change is not None:
                deletes.append(change)
        return Plan(self.name, tuple(deletes), tuple(warnings))

    def destroy(self) -> Plan:
        """Carry out `destroy_plan()`: what the teardown preview showed, in that order."""
        plan = self.destroy_plan()
        instances = [c.resource_id for c in plan.changes if c.kind == "ec2-instance"]
        if instances:
            self.aws.ec2.terminate_instances(InstanceIds=instances)
            self.aws.ec2.get_waiter("instance_terminated").wait(
                InstanceIds=instances, WaiterConfig=wait_short()
            )
        for change in plan.changes:
            self.log(f"{self.name}: {change}")
            self._delete(change)
        return plan

    def _delete(self, change: Change) -> None:
        client, ec2 = self.aws.eks, self.aws.ec2
        if change.kind == "eks-nodegroup":
            _delete_nodegroup(self.aws, self.cluster_name, change.name)
        elif change.kind == "pod-identity-association":
            client.delete_pod_identity_association(
                clusterName=self.cluster_name, associationId=change.resource_id
            )
        elif change.kind == "eks-addon":
            client.delete_addon(clusterName=self.cluster_name, addonName=change.name)
        elif change.kind == "security-group-rules":
            self._revoke_cluster_sg_rules(change.resource_id or "")
        elif change.kind == "eks-cluster":
            client.delete_cluster(name=self.cluster_name)
            client.get_waiter("cluster_deleted").wait(
                name=self.cluster_name, WaiterConfig=wait_long()
            )
        elif change.kind == "launch-template":
            ec2.delete_launch_template(LaunchTemplateId=change.resource_id)
        elif change.kind == "security-group":
            try:
                ec2.delete_security_group(GroupId=change.resource_id)
            except ClientError as exc:
                if not is_not_found(exc):
                    raise PlanConflict(
                        f"gpu-eks: cannot delete security group {change.resource_id}: {exc}; "
                        "remove what still uses it, then run infra_teardown again"
                    ) from exc
        elif change.kind == "iam-role":
            delete_role(self.aws.iam, self._roles()[change.name].name)

    def _revoke_cluster_sg_rules(self, nodes_id: str) -> None:
        """Remove the rules by which our group and EKS's cluster group name each other."""
        cluster = self._cluster() or {}
        cluster_id = cluster.get("resourcesVpcConfig", {}).get("clusterSecurityGroupId")
        if not cluster_id:
            return
        for owner, peer in ((nodes_id, cluster_id), (cluster_id, nodes_id)):
            group = self._group_by_id(owner) or {}
            naming_peer = [
                {k: p[k] for k in ("IpProtocol", "FromPort", "ToPort") if k in p}
                | {"UserIdGroupPairs": [{"GroupId": peer}]}
                for p in group.get("IpPermissions", [])
                if any(pair.get("GroupId") == peer for pair in p.get("UserIdGroupPairs", []))
            ]
            if naming_peer:
                self.aws.ec2.revoke_security_group_ingress(GroupId=owner, IpPermissions=naming_peer)

    def _owned_instance_ids(self) -> list[str]:
        """Nodes Karpenter launched with our tag would outlive the cluster and block the VPC."""
        reservations = self.aws.ec2.describe_instances(
            Filters=[
                owner_filter(self.stack),
                {
                    "Name": "instance-state-name",
                    "Values": ["pending", "running", "stopping", "stopped"],
                },
            ]
        )["Reservations"]
        return [i["InstanceId"] for r in reservations for i in r["Instances"]]

    def outputs(self) -> dict[str, str]:
        cluster = self._cluster() or {}
        nodegroup = self._nodegroup() if cluster else None
        association = self._association() if cluster else None
        return {
            "cluster_name": self.cluster_name,
            "cluster_arn": cluster.get("arn", ""),
            "cluster_endpoint": cluster.get("endpoint", ""),
            "cluster_version": cluster.get("version", ""),
            "cluster_security_group_id": cluster.get("resourcesVpcConfig", {}).get(
                "clusterSecurityGroupId", ""
            )
            or "",
            "system_nodegroup_arn": (nodegroup or {}).get("nodegroupArn", ""),
            "system_nodegroup_status": (nodegroup or {}).get("status", ""),
            "cilium_operator_association_id": (association or {}).get("associationId", ""),
        }


# --- the system node group, shared with gpu-cilium, which waits for it ----------------------

ALL_LOG_TYPES = ("api", "audit", "authenticator", "controllerManager", "scheduler")


class NodeGroupFailed(RuntimeError):
    """The system node group failed (its nodes never joined): gpu_eks replaces it."""


def observe_nodegroup(aws: AwsClients, cluster_name: str, name: str) -> dict[str, Any] | None:
    try:
        return aws.eks.describe_nodegroup(clusterName=cluster_name, nodegroupName=name)["nodegroup"]
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise


def wait_for_nodegroup_active(
    aws: AwsClients, cluster_name: str, name: str, log: Any = None
) -> dict[str, Any]:
    """Poll until the node group is ACTIVE; a failed group raises at once with EKS's reason.

    botocore's `nodegroup_active` waiter would report CREATE_FAILED only as "waiter failed";
    here the health issues EKS gives (e.g. NodeCreationFailure: instances failed to join) are
    in the error, with what to do.
    """
    config = wait_long()
    for _ in range(int(config["MaxAttempts"])):
        nodegroup = observe_nodegroup(aws, cluster_name, name)
        if nodegroup is None:
            raise NodeGroupFailed(
                f"node group {name} of cluster {cluster_name} does not exist: "
                "materialize gpu_eks first"
            )
        status = nodegroup.get("status")
        if status == "ACTIVE":
            return nodegroup
        if status in NODEGROUP_BROKEN or status in ("DELETING",):
            raise NodeGroupFailed(
                f"node group {name} of cluster {cluster_name} is {status}: "
                f"{_health_text(nodegroup) or 'no health issues reported'}; materialize gpu_eks "
                "again (it replaces the failed group), then gpu_cilium"
            )
        if log is not None:
            log.info(f"node group {name} is {status}; waiting for ACTIVE")
        time.sleep(float(config["Delay"]))
    raise NodeGroupFailed(
        f"node group {name} of cluster {cluster_name} did not become ACTIVE within "
        f"{float(config['Delay']) * int(config['MaxAttempts']):.0f} s; look at its health in the "
        "EKS console (aws eks describe-nodegroup)"
    )


def _delete_nodegroup(aws: AwsClients, cluster_name: str, name: str) -> None:
    try:
        aws.eks.delete_nodegroup(clusterName=cluster_name, nodegroupName=name)
    except ClientError as exc:
        if not is_not_found(exc):
            raise
    aws.eks.get_waiter("nodegroup_deleted").wait(
        clusterName=cluster_name, nodegroupName=name, WaiterConfig=wait_long()
    )


def _is_rollback(live_release: str | None, pinned_release: str) -> bool:
    """A live Bottlerocket release newer than the pin ("1.35.0-d35b4c5a" > "1.34.0-18d04e52")."""
    if not live_release:
        return False
    return version_tuple(live_release) > version_tuple(pinned_release)


def _health_text(nodegroup: dict[str, Any]) -> str:
    issues = (nodegroup.get("health") or {}).get("issues") or []
    return "; ".join(f"{i.get('code')}: {i.get('message', '')}".strip() for i in issues)


def cilium_operator_policy(region: str) -> dict[str, Any]:
    """What the Cilium operator needs for ENI IPAM (Cilium docs, "AWS ENI", Required Privileges).

    The Describe calls cannot be scoped to resources; the writes are kept to this region and
    tagging to network interfaces, as AWS scopes the same actions in AmazonEKS_CNI_Policy.
    """
    in_region = {"StringEquals": {"aws:RequestedRegion": region}}
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "CiliumEniDescribe",
                "Effect": "Allow",
                "Action": [
                    "ec2:DescribeInstances",
                    "ec2:DescribeInstanceTypes",
                    "ec2:DescribeNetworkInterfaces",
                    "ec2:DescribeRouteTables",
                    "ec2:DescribeSecurityGroups",
                    "ec2:DescribeSubnets",
                    "ec2:DescribeTags",
                    "ec2:DescribeVpcs",
                ],
                "Resource": "*",
            },
            {
                "Sid": "CiliumEniManage",
                "Effect": "Allow",
                "Action": [
                    "ec2:AssignPrivateIpAddresses",
                    "ec2:AttachNetworkInterface",
                    "ec2:CreateNetworkInterface",
                    "ec2:DeleteNetworkInterface",
                    "ec2:DetachNetworkInterface",
                    "ec2:ModifyNetworkInterfaceAttribute",
                    "ec2:UnassignPrivateIpAddresses",
                ],
                "Resource": "*",
                "Condition": in_region,
            },
            {
                "Sid": "CiliumEniTag",
                "Effect": "Allow",
                "Action": "ec2:CreateTags",
                "Resource": f"arn:aws:ec2:{region}:*:network-interface/*",
            },
        ],
    }


def _enabled_log_types(cluster: dict[str, Any]) -> list[str]:
    return sorted(
        t
        for entry in (cluster.get("logging") or {}).get("clusterLogging", [])
        if entry.get("enabled")
        for t in entry.get("types", [])
    )


def _cluster_status_warnings(name: str, cluster: dict[str, Any]) -> list[str]:
    status = cluster.get("status")
    warnings = []
    if status == "FAILED":
        warnings.append(
            f"EKS cluster {name} is FAILED: it cannot be repaired in place; run infra_teardown, "
            "then infra_apply"
        )
    elif status not in (None, "ACTIVE"):
        warnings.append(f"EKS cluster {name} is {status}")
    issues = (cluster.get("health") or {}).get("issues") or []
    for issue in issues:
        warnings.append(f"EKS cluster {name}: {issue.get('code')}: {issue.get('message', '')}")
    return warnings


def _refuse_unusable_cluster(name: str, status: Any, cluster: dict[str, Any] | None) -> None:
    if status == "FAILED":
        issues = ((cluster or {}).get("health") or {}).get("issues") or []
        reason = "; ".join(f"{i.get('code')}: {i.get('message', '')}" for i in issues)
        raise NeedsReplacement(
            f"gpu-eks: EKS cluster {name} is FAILED{f' ({reason})' if reason else ''}; it cannot "
            "be repaired in place: run infra_teardown, then infra_apply"
        )
    if status == "DELETING":
        raise UpstreamMissing(
            f"gpu-eks: EKS cluster {name} is being deleted; wait until it is gone, then "
            "materialize gpu_eks again"
        )


def _rule_sources(permission: dict[str, Any], names: dict[str, str]) -> list[str]:
    pairs = permission.get("UserIdGroupPairs", [])
    sources = [names.get(p["GroupId"], p["GroupId"]) for p in pairs]
    sources += [r["CidrIp"] for r in permission.get("IpRanges", [])]
    sources += [r["CidrIpv6"] for r in permission.get("Ipv6Ranges", [])]
    sources += [r["PrefixListId"] for r in permission.get("PrefixListIds", [])]
    return sources


def _permission_rules(permission: dict[str, Any], names: dict[str, str]) -> set[str]:
    """One EC2 IpPermission as rule strings: "all from nodes", "tcp 443 from cluster"."""
    protocol = permission.get("IpProtocol")
    if protocol in ("-1", "all"):
        head = "all"
    else:
        low, high = permission.get("FromPort"), permission.get("ToPort")
        head = f"{protocol} {low}" if low == high else f"{protocol} {low}-{high}"
    return {f"{head} from {source}" for source in _rule_sources(permission, names)}


def _ingress_rules(group: dict[str, Any], names: dict[str, str]) -> list[str]:
    return sorted(
        rule for p in group.get("IpPermissions", []) for rule in _permission_rules(p, names)
    )


def _permission(rule: str, group_ids: dict[str, str]) -> dict[str, Any]:
    """The IpPermission of a rule string whose source is a named group ("nodes", "cluster")."""
    head, source = rule.split(" from ")
    pair = [{"GroupId": group_ids[source]}]
    if head == "all":
        return {"IpProtocol": "-1", "UserIdGroupPairs": pair}
    protocol, ports = head.split(" ")
    low, _, high = ports.partition("-")
    return {
        "IpProtocol": protocol,
        "FromPort": int(low),
        "ToPort": int(high or low),
        "UserIdGroupPairs": pair,
    }


def _template_security_groups(data: dict[str, Any]) -> list[str]:
    groups = list(data.get("SecurityGroupIds", []))
    for interface in data.get("NetworkInterfaces", []):
        groups += interface.get("Groups", [])
    return groups


def _taints(taints: tuple[tuple[str, str, str], ...]) -> dict[str, str]:
    return {key: f"{value}:{effect}" for key, value, effect in taints}


def _block_devices(data: dict[str, Any]) -> dict[str, Any]:
    return {
        m["DeviceName"]: {
            "size_gib": m.get("Ebs", {}).get("VolumeSize"),
            "type": m.get("Ebs", {}).get("VolumeType"),
            "encrypted": m.get("Ebs", {}).get("Encrypted"),
        }
        for m in data.get("BlockDeviceMappings", [])
    }


def _metadata(data: dict[str, Any]) -> dict[str, Any]:
    options = data.get("MetadataOptions", {})
    return {
        "http_tokens": options.get("HttpTokens"),
        "hop_limit": options.get("HttpPutResponseHopLimit"),
    }
