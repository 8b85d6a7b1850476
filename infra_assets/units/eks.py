"""gpu-eks: EKS 1.32, private endpoint only, its roles, add-ons and the Bottlerocket nodes."""

from __future__ import annotations

import datetime as dt
from typing import Any

from botocore.exceptions import ClientError

from infra_assets.aws_access import (
    WAIT_LONG,
    WAIT_SHORT,
    is_not_found,
    is_owned,
    owner_filter,
    tag_dict,
    tag_specifications,
)
from infra_assets.aws_iam import RoleSpec, delete_role, ensure_role, observe_role
from infra_assets.cost import (
    EKS_CONTROL_PLANE_HOURLY,
    EKS_EXTENDED_SUPPORT_HOURLY,
    EKS_STANDARD_SUPPORT_ENDS,
)
from infra_assets.plan import Change, Plan
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


class EksUnit(AwsUnit):
    """The cluster, two IAM roles, the node security group, add-ons and the system node group."""

    name = "gpu-eks"

    # --- the spec, as resources -------------------------------------------------------------

    @property
    def cluster_name(self) -> str:
        return self.spec.cluster_name

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

    def _lt_data(self) -> dict[str, Any]:
        group = self.spec.eks.system_node_group
        return {
            "BlockDeviceMappings": [
                {
                    "DeviceName": group.data_volume_device,
                    "Ebs": {
                        "VolumeSize": group.data_volume_gib,
                        "VolumeType": group.data_volume_type,
                        "Encrypted": group.data_volume_encrypted,
                        "DeleteOnTermination": True,
                    },
                }
            ],
            # IMDSv2 only, one hop: pods cannot borrow the node's role through the metadata API.
            "MetadataOptions": {"HttpTokens": "required", "HttpPutResponseHopLimit": 1},
        }

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
        try:
            return self.aws.eks.describe_nodegroup(
                clusterName=self.cluster_name,
                nodegroupName=self.spec.eks.system_node_group.name,
            )["nodegroup"]
        except ClientError as exc:
            if is_not_found(exc):
                return None
            raise

    def _addons(self) -> dict[str, dict[str, Any]]:
        names = self.aws.eks.list_addons(clusterName=self.cluster_name)["addons"]
        return {
            name: self.aws.eks.describe_addon(clusterName=self.cluster_name, addonName=name)[
                "addon"
            ]
            for name in names
        }

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
        sg_id_to_name = {}
        ids = {"vpc": vpc_id, **{f"subnet/{k}": v for k, v in subnets.items()}}

        for key, role in self._roles().items():
            observed = observe_role(self.aws.iam, role.name)
            if observed is not None and not is_owned(observed["tags"], self.stack):
                conflicts.append(
                    f"IAM role {role.name} exists but is not ours; rename or remove it"
                )
                continue
            if observed is not None:
                ids[f"role/{key}"] = observed["arn"]
            changes.append(
                self.compare(
                    "iam-role",
                    key,
                    None if observed is None else {k: observed[k] for k in role.desired()},
                    role.desired(),
                    observed["arn"] if observed else None,
                )
            )

        sg = self._security_group(vpc_id)
        observed_sg = None
        if sg is not None:
            tags = tag_dict(sg.get("Tags"))
            if not is_owned(tags, self.stack):
                conflicts.append(
                    f"security group {self._sg_name} ({sg['GroupId']}) is not ours; remove it"
                )
            else:
                sg_id_to_name[sg["GroupId"]] = "nodes"
                observed_sg = {"ingress_from_itself": _allows_self(sg), "tags": tags}
        changes.append(
            self.compare(
                "security-group",
                "nodes",
                observed_sg,
                {"ingress_from_itself": True, "tags": self._sg_tags()},
                sg["GroupId"] if sg else None,
            )
        )

        template = self._launch_template()
        changes.append(
            self.compare(
                "launch-template",
                self._lt_name,
                None
                if template is None
                else {
                    "block_devices": _block_devices(template["Data"]),
                    "metadata_options": _metadata(template["Data"]),
                },
                {
                    "block_devices": _block_devices(self._lt_data()),
                    "metadata_options": _metadata(self._lt_data()),
                },
                template["LaunchTemplateId"] if template else None,
            )
        )

        cluster = self._cluster()
        subnet_names = {v: k for k, v in subnets.items()}
        desired_cluster = {
            "version": eks.version,
            "endpoint_private_access": eks.endpoint_private_access,
            "endpoint_public_access": eks.endpoint_public_access,
            "subnets": sorted(s.name for s in self.spec.vpc.subnets if s.tier == "private"),
            "security_groups": ["nodes"],
            "authentication_mode": eks.authentication_mode,
            "tags": self.tags("eks-cluster"),
        }
        observed_cluster = None
        if cluster is not None:
            if not is_owned(cluster.get("tags"), self.stack):
                conflicts.append(
                    f"EKS cluster {self.cluster_name} exists but is not tagged "
                    f"{OWNER_TAG}={self.stack}; it is not ours to change"
                )
                cluster = None
            else:
                vpc_config = cluster.get("resourcesVpcConfig", {})
                observed_cluster = {
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
                    "tags": cluster.get("tags", {}),
                }
        changes.append(
            self.compare(
                "eks-cluster",
                self.cluster_name,
                observed_cluster,
                desired_cluster,
                cluster["arn"] if cluster else None,
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

        nodegroup = self._nodegroup() if cluster is not None else None
        desired_nodegroup = {
            "instance_types": list(group.instance_types),
            "ami_type": group.ami_type,
            "capacity_type": group.capacity_type,
            "min_size": group.min_size,
            "max_size": group.max_size,
            "desired_size_in_range": True,
            "labels": dict(group.labels),
            "taints": _taints(group.taints),
            "subnets": desired_cluster["subnets"],
            "launch_template": self._lt_name,
            "tags": self.tags(f"eks-nodegroup/{group.name}"),
        }
        observed_nodegroup = None
        if nodegroup is not None:
            scaling = nodegroup.get("scalingConfig", {})
            observed_nodegroup = {
                "instance_types": nodegroup.get("instanceTypes"),
                "ami_type": nodegroup.get("amiType"),
                "capacity_type": nodegroup.get("capacityType"),
                "min_size": scaling.get("minSize"),
                "max_size": scaling.get("maxSize"),
                # Within min..max the size is the autoscaling's business, not drift.
                "desired_size_in_range": group.min_size
                <= scaling.get("desiredSize", -1)
                <= group.max_size,
                "labels": nodegroup.get("labels") or {},
                "taints": {
                    t["key"]: f"{t.get('value', '')}:{t['effect']}"
                    for t in nodegroup.get("taints") or []
                },
                "subnets": sorted(subnet_names.get(s, s) for s in nodegroup.get("subnets", [])),
                "launch_template": (nodegroup.get("launchTemplate") or {}).get("name"),
                "tags": nodegroup.get("tags") or {},
            }
        changes.append(
            self.compare(
                "eks-nodegroup",
                group.name,
                observed_nodegroup,
                desired_nodegroup,
                nodegroup.get("nodegroupArn") if nodegroup else None,
            )
        )
        self._ids = ids
        return Plan(self.name, tuple(changes), tuple(warnings), tuple(conflicts))

    # --- apply ------------------------------------------------------------------------------

    def _execute(self, change: Change) -> None:
        eks = self.spec.eks
        group = eks.system_node_group
        ids = self._ids
        diffs = diffs_of(change)
        if ids.get("vpc") is None and change.kind in ("security-group", "eks-cluster"):
            raise UpstreamMissing(
                "gpu-eks: no VPC of this stack exists yet; materialize gpu_vpc first"
            )

        if change.kind == "iam-role":
            role = self._roles()[change.name]
            observed = observe_role(self.aws.iam, role.name)
            ids[f"role/{change.name}"] = ensure_role(self.aws.iam, role, observed)

        elif change.kind == "security-group":
            ec2 = self.aws.ec2
            if change.action == "create":
                sg_id = ec2.create_security_group(
                    GroupName=self._sg_name,
                    Description=f"Nodes of EKS cluster {self.cluster_name} (Karpenter discovery)",
                    VpcId=ids["vpc"],
                    TagSpecifications=tag_specifications("security-group", self._sg_tags()),
                )["GroupId"]
                diffs = {"ingress_from_itself": True}
            else:
                sg_id = change.resource_id or ""
                ec2.create_tags(
                    Resources=[sg_id],
                    Tags=[{"Key": k, "Value": v} for k, v in self._sg_tags().items()],
                )
            if "ingress_from_itself" in diffs:
                # Nodes and the control plane ENIs (in this group too) talk to each other freely.
                ec2.authorize_security_group_ingress(
                    GroupId=sg_id,
                    IpPermissions=[{"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": sg_id}]}],
                )

        elif change.kind == "launch-template":
            ec2 = self.aws.ec2
            if change.action == "create":
                ec2.create_launch_template(
                    LaunchTemplateName=self._lt_name,
                    LaunchTemplateData=self._lt_data(),
                    TagSpecifications=tag_specifications(
                        "launch-template", self.tags("launch-template/system", self._lt_name)
                    ),
                )
            else:
                version = ec2.create_launch_template_version(
                    LaunchTemplateId=change.resource_id, LaunchTemplateData=self._lt_data()
                )["LaunchTemplateVersion"]["VersionNumber"]
                ec2.modify_launch_template(
                    LaunchTemplateId=change.resource_id, DefaultVersion=str(version)
                )
                self.log(
                    "gpu-eks: new launch template version; system nodes pick it up when the "
                    "node group is next updated (EKS rolls the nodes)"
                )

        elif change.kind == "eks-cluster":
            self._apply_cluster(change, diffs)

        elif change.kind == "eks-addon":
            if change.action == "create":
                self.aws.eks.create_addon(
                    clusterName=self.cluster_name,
                    addonName=change.name,
                    resolveConflicts="OVERWRITE",
                    tags=self.tags(f"eks-addon/{change.name}"),
                )

        elif change.kind == "eks-nodegroup":
            if change.action == "create":
                template = self._launch_template()
                self.aws.eks.create_nodegroup(
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
                    capacityType=group.capacity_type,
                    nodeRole=ids["role/system-nodes"],
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
                    tags=self.tags(f"eks-nodegroup/{group.name}"),
                )
            else:
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
                if diffs.keys() & {
                    "min_size",
                    "max_size",
                    "desired_size_in_range",
                    "labels",
                    "taints",
                }:
                    live = self._nodegroup() or {}
                    live_labels = live.get("labels") or {}
                    desired_size = min(
                        max(live.get("scalingConfig", {}).get("desiredSize", 0), group.min_size),
                        group.max_size,
                    )
                    self.aws.eks.update_nodegroup_config(
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
                if "tags" in diffs and change.resource_id:
                    self.aws.eks.tag_resource(
                        resourceArn=change.resource_id,
                        tags=self.tags(f"eks-nodegroup/{group.name}"),
                    )
            self.aws.eks.get_waiter("nodegroup_active").wait(
                clusterName=self.cluster_name, nodegroupName=group.name, WaiterConfig=WAIT_LONG
            )

    def _private_subnet_ids(self) -> list[str]:
        return [
            self._ids[f"subnet/{s.name}"]
            for s in self.spec.vpc.subnets
            if s.tier == "private" and f"subnet/{s.name}" in self._ids
        ]

    def _apply_cluster(self, change: Change, diffs: dict[str, Any]) -> None:
        eks = self.spec.eks
        client = self.aws.eks
        if change.action == "create":
            subnet_ids = self._private_subnet_ids()
            if len(subnet_ids) != len(self.spec.vpc.availability_zones):
                raise UpstreamMissing(
                    "gpu-eks: the private subnets of gpu-vpc are missing; materialize gpu_vpc first"
                )
            sg = self._security_group(self._ids["vpc"])
            client.create_cluster(
                name=self.cluster_name,
                version=eks.version,
                roleArn=self._ids["role/cluster"],
                resourcesVpcConfig={
                    "subnetIds": subnet_ids,
                    "securityGroupIds": [sg["GroupId"]] if sg else [],
                    "endpointPrivateAccess": eks.endpoint_private_access,
                    "endpointPublicAccess": eks.endpoint_public_access,
                },
                accessConfig={
                    "authenticationMode": eks.authentication_mode,
                    "bootstrapClusterCreatorAdminPermissions": True,
                },
                bootstrapSelfManagedAddons=eks.bootstrap_self_managed_addons,
                tags=self.tags("eks-cluster"),
            )
        else:
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
            if diffs.keys() & {"endpoint_private_access", "endpoint_public_access"}:
                client.update_cluster_config(
                    name=self.cluster_name,
                    resourcesVpcConfig={
                        "endpointPrivateAccess": eks.endpoint_private_access,
                        "endpointPublicAccess": eks.endpoint_public_access,
                    },
                )
                client.get_waiter("cluster_active").wait(
                    name=self.cluster_name, WaiterConfig=WAIT_LONG
                )
            if "authentication_mode" in diffs:
                client.update_cluster_config(
                    name=self.cluster_name,
                    accessConfig={"authenticationMode": eks.authentication_mode},
                )
            if "tags" in diffs and change.resource_id:
                client.tag_resource(resourceArn=change.resource_id, tags=self.tags("eks-cluster"))
        client.get_waiter("cluster_active").wait(name=self.cluster_name, WaiterConfig=WAIT_LONG)

    # --- destroy ----------------------------------------------------------------------------

    def destroy(self) -> Plan:
        deletes: list[Change] = []
        warnings: list[str] = []
        client = self.aws.eks
        cluster = self._cluster()
        if cluster is not None and not is_owned(cluster.get("tags"), self.stack):
            warnings.append(f"EKS cluster {self.cluster_name} is not ours: left alone")
            cluster = None
        if cluster is not None:
            self._terminate_owned_instances(deletes)
            nodegroup = self._nodegroup()
            if nodegroup is not None and is_owned(nodegroup.get("tags"), self.stack):
                deletes.append(Change("delete", "eks-nodegroup", nodegroup["nodegroupName"], None))
                client.delete_nodegroup(
                    clusterName=self.cluster_name, nodegroupName=nodegroup["nodegroupName"]
                )
                client.get_waiter("nodegroup_deleted").wait(
                    clusterName=self.cluster_name,
                    nodegroupName=nodegroup["nodegroupName"],
                    WaiterConfig=WAIT_LONG,
                )
            for name, addon in self._addons().items():
                if is_owned(addon.get("tags"), self.stack):
                    deletes.append(Change("delete", "eks-addon", name, addon.get("addonArn")))
                    client.delete_addon(clusterName=self.cluster_name, addonName=name)
            deletes.append(Change("delete", "eks-cluster", self.cluster_name, cluster["arn"]))
            client.delete_cluster(name=self.cluster_name)
            client.get_waiter("cluster_deleted").wait(
                name=self.cluster_name, WaiterConfig=WAIT_LONG
            )

        template = self._launch_template()
        if template is not None:
            deletes.append(
                Change("delete", "launch-template", self._lt_name, template["LaunchTemplateId"])
            )
            self.aws.ec2.delete_launch_template(LaunchTemplateId=template["LaunchTemplateId"])

        vpc_id, _ = self._vpc_ids()
        sg = self._security_group(vpc_id)
        if sg is not None and is_owned(tag_dict(sg.get("Tags")), self.stack):
            deletes.append(Change("delete", "security-group", "nodes", sg["GroupId"]))
            try:
                self.aws.ec2.delete_security_group(GroupId=sg["GroupId"])
            except ClientError as exc:
                if not is_not_found(exc):
                    raise PlanConflict(
                        f"gpu-eks: cannot delete security group {sg['GroupId']}: {exc}; "
                        "remove what still uses it, then run infra_teardown again"
                    ) from exc

        for key, role in self._roles().items():
            observed = observe_role(self.aws.iam, role.name)
            if observed is None:
                continue
            if not is_owned(observed["tags"], self.stack):
                warnings.append(f"IAM role {role.name} is not ours: left alone")
                continue
            deletes.append(Change("delete", "iam-role", key, observed["arn"]))
            delete_role(self.aws.iam, role.name)
        for change in deletes:
            self.log(f"{self.name}: {change}")
        return Plan(self.name, tuple(deletes), tuple(warnings))

    def _terminate_owned_instances(self, deletes: list[Change]) -> None:
        """Nodes Karpenter launched with our tag would outlive the cluster and block the VPC."""
        ec2 = self.aws.ec2
        reservations = ec2.describe_instances(
            Filters=[
                owner_filter(self.stack),
                {
                    "Name": "instance-state-name",
                    "Values": ["pending", "running", "stopping", "stopped"],
                },
            ]
        )["Reservations"]
        instance_ids = [i["InstanceId"] for r in reservations for i in r["Instances"]]
        if not instance_ids:
            return
        for instance_id in instance_ids:
            deletes.append(Change("delete", "ec2-instance", instance_id, instance_id))
        ec2.terminate_instances(InstanceIds=instance_ids)
        ec2.get_waiter("instance_terminated").wait(
            InstanceIds=instance_ids, WaiterConfig=WAIT_SHORT
        )

    def outputs(self) -> dict[str, str]:
        cluster = self._cluster() or {}
        nodegroup = self._nodegroup() if cluster else None
        return {
            "cluster_name": self.cluster_name,
            "cluster_arn": cluster.get("arn", ""),
            "cluster_endpoint": cluster.get("endpoint", ""),
            "cluster_version": cluster.get("version", ""),
            "system_nodegroup_arn": (nodegroup or {}).get("nodegroupArn", ""),
        }


def _allows_self(group: dict[str, Any]) -> bool:
    return any(
        permission.get("IpProtocol") == "-1"
        and any(
            p.get("GroupId") == group["GroupId"] for p in permission.get("UserIdGroupPairs", [])
        )
        for permission in group.get("IpPermissions", [])
    )


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
