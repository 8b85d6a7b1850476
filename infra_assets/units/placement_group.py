"""gpu-placement-group: the cluster placement group that keeps the GPU nodes in one rack area."""

from __future__ import annotations

from botocore.exceptions import ClientError

from infra_assets.aws_access import is_not_found, is_owned, tag_dict, version_tuple
from infra_assets.idempotent import create_or_adopt
from infra_assets.plan import Change, Plan
from infra_assets.spec.kubernetes import PLACEMENT_GROUP_MIN_KARPENTER
from infra_assets.units.aws_unit import AwsUnit, PlanConflict


class PlacementGroupUnit(AwsUnit):
    """One EC2 placement group, strategy `cluster`, for nodes pinned to eu-west-3a."""

    name = "gpu-placement-group"

    def _observe(self) -> dict | None:
        try:
            groups = self.aws.ec2.describe_placement_groups(
                GroupNames=[self.spec.placement_group.name]
            )["PlacementGroups"]
        except ClientError as exc:
            if is_not_found(exc):
                return None
            raise
        return groups[0] if groups else None

    def warnings(self) -> tuple[str, ...]:
        group = self.spec.placement_group
        karpenter = self.spec.karpenter_controller.chart_version
        if version_tuple(karpenter) < version_tuple(PLACEMENT_GROUP_MIN_KARPENTER):
            return (
                f"placement group {group.name} is created, but Karpenter {karpenter} (pinned) "
                f"cannot launch nodes into it: EC2NodeClass placement groups need Karpenter >= "
                f"{PLACEMENT_GROUP_MIN_KARPENTER}. GPU node pools are pinned to "
                f"{group.availability_zone} instead; raise the Karpenter pin to use the group.",
            )
        return ()

    def plan(self) -> Plan:
        group = self.spec.placement_group
        live = self._observe()
        observed = None
        conflicts: tuple[str, ...] = ()
        if live is not None:
            tags = tag_dict(live.get("Tags"))
            if not is_owned(tags, self.stack):
                conflicts = (
                    f"placement group {group.name} ({live['GroupId']}) exists but is not tagged "
                    f"as owned by stack {self.stack!r}; rename ours in the spec or remove it",
                )
                return Plan(self.name, (), self.warnings(), conflicts)
            observed = {"strategy": live["Strategy"], "tags": tags}
        change = self.compare(
            "placement-group",
            group.name,
            observed,
            {"strategy": group.strategy, "tags": self.tags(f"placement-group/{group.name}")},
            live["GroupId"] if live else None,
        )
        return Plan(self.name, (change,), self.warnings(), conflicts)

    def _execute(self, change: Change) -> None:
        group = self.spec.placement_group
        ec2 = self.aws.ec2
        if change.action == "update" and any(d.path == "strategy" for d in change.diffs):
            # A placement group's strategy is fixed at creation: replace ours.
            ec2.delete_placement_group(GroupName=group.name)
        elif change.action == "update":
            ec2.create_tags(
                Resources=[change.resource_id or ""],
                Tags=[
                    {"Key": k, "Value": v}
                    for k, v in self.tags(f"placement-group/{group.name}").items()
                ],
            )
            return
        tags = self.tags(f"placement-group/{group.name}")

        def create() -> str:
            # CreatePlacementGroup has no client token; the name is unique in the region, so an
            # answer lost after the server acted ends in Duplicate, and ours is then adopted.
            return self.aws.once("ec2").create_placement_group(
                GroupName=group.name,
                Strategy=group.strategy,
                TagSpecifications=[
                    {
                        "ResourceType": "placement-group",
                        "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
                    }
                ],
            )["PlacementGroup"]["GroupId"]

        def find() -> str | None:
            live = self._observe()
            if live is None or not is_owned(tag_dict(live.get("Tags")), self.stack):
                return None
            return live["GroupId"]

        create_or_adopt(f"placement group {group.name}", create, find, self.log)

    def destroy_plan(self) -> Plan:
        """What `destroy()` deletes, observed now; changes nothing."""
        live = self._observe()
        if live is None:
            return Plan(self.name)
        if not is_owned(tag_dict(live.get("Tags")), self.stack):
            return Plan(
                self.name,
                (),
                (f"placement group {live['GroupName']} is not ours: left alone",),
            )
        return Plan(
            self.name, (Change("delete", "placement-group", live["GroupName"], live["GroupId"]),)
        )

    def destroy(self) -> Plan:
        plan = self.destroy_plan()
        for change in plan.changes:
            self.log(f"{self.name}: {change}")
            try:
                self.aws.ec2.delete_placement_group(GroupName=change.name)
            except ClientError as exc:
                if not is_not_found(exc):
                    raise PlanConflict(
                        f"gpu-placement-group: cannot delete {change.name}: {exc}; terminate "
                        "the instances still in it, then run infra_teardown again"
                    ) from exc
        return plan

    def outputs(self) -> dict[str, str]:
        live = self._observe()
        return {
            "placement_group_name": self.spec.placement_group.name,
            "placement_group_id": live["GroupId"] if live else "",
            "placement_group_zone": self.spec.placement_group.availability_zone,
        }
