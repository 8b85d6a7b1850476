"""What the four AWS units share: observe -> plan -> apply change by change, and their errors."""

from __future__ import annotations

import abc
from typing import Any, ClassVar

from infra_assets.aws_access import RESOURCE_TAG, AwsClients
from infra_assets.aws_iam import RoleSpec, ensure_role, observe_role
from infra_assets.plan import Change, FieldDiff, Plan, diff_fields, plan_to_apply
from infra_assets.spec import OWNER_TAG
from infra_assets.unit import ApplyResult, UnitContext


class PlanConflict(RuntimeError):
    """Applying would need to touch a resource this stack does not own."""


class NeedsReplacement(RuntimeError):
    """A field differs that AWS cannot change in place, and replacing it is a person's decision."""


class UpstreamMissing(RuntimeError):
    """A unit depends on a resource of an earlier unit that does not exist yet."""


class AwsUnit(abc.ABC):
    """Base of the AWS units: subclasses implement `plan()`, `_execute(change)`, `destroy()`."""

    name: ClassVar[str]

    def __init__(self, ctx: UnitContext) -> None:
        self.ctx = ctx
        self.spec = ctx.spec
        self.stack = ctx.spec.stack
        self.aws = AwsClients(ctx)

    # What subclasses provide.
    @abc.abstractmethod
    def plan(self) -> Plan: ...

    @abc.abstractmethod
    def _execute(self, change: Change) -> None: ...

    def outputs(self) -> dict[str, str]:
        return {}

    # Hooks for a unit that keeps one observation for the whole apply (the VPC): the observation
    # `_plan_for_apply` makes is the one `_execute` works from (live ids).
    def _plan_for_apply(self) -> Plan:
        return self.plan()

    def _outputs_after_apply(self) -> dict[str, str]:
        return self.outputs()

    # Shared behaviour.
    def apply(self, plan: Plan | None = None) -> ApplyResult:
        """Carry out `plan` as given (None: plan now and carry that out).

        One observation either way, as before: a given plan is checked against it and refused
        with StalePlan when the live state now plans other changes (someone changed something
        since the plan was shown); otherwise exactly the given plan's changes run.
        """
        plan = plan_to_apply(self.name, plan, self._plan_for_apply())
        if plan.conflicts:
            raise PlanConflict(
                f"{self.name}: refusing to apply, resources not owned by stack {self.stack!r} "
                f"are in the way: {'; '.join(plan.conflicts)}"
            )
        for change in plan.pending:
            self.log(f"{self.name}: {change}")
            self._execute(change)
        return ApplyResult(plan, self._outputs_after_apply())

    def log(self, message: str) -> None:
        if self.ctx.log is not None:
            self.ctx.log.info(message)

    def tags(self, resource: str, name: str | None = None) -> dict[str, str]:
        """Tags of one resource we create: ownership, identity and a readable Name."""
        tags = {OWNER_TAG: self.stack, RESOURCE_TAG: resource}
        if name:
            tags["Name"] = name
        return tags

    def apply_role(self, role: RoleSpec) -> str:
        """Create the role (once, see `ensure_role`) or bring it to the spec from what is there
        now; returns its ARN."""
        return ensure_role(
            self.aws.iam,
            role,
            observe_role(self.aws.iam, role.name),
            iam_once=self.aws.once("iam"),
            log=self.log,
        )

    @staticmethod
    def compare(
        kind: str,
        name: str,
        observed: dict[str, Any] | None,
        desired: dict[str, Any],
        resource_id: str | None = None,
    ) -> Change:
        """create when absent, update with the field diffs when they differ, else keep."""
        if observed is None:
            return Change("create", kind, name, None, _desired_as_diffs(desired))
        diffs = tuple(diff_fields(observed, desired))
        return Change("update" if diffs else "keep", kind, name, resource_id, diffs)


def _desired_as_diffs(desired: dict[str, Any]) -> tuple[FieldDiff, ...]:
    # A create shows what will be set, so the plan table says more than "create subnet".
    return tuple(FieldDiff(key, None, value) for key, value in desired.items() if key != "tags")


def diffs_of(change: Change) -> dict[str, FieldDiff]:
    """The change's diffs by top-level field ("tags.Name" counts as "tags")."""
    result: dict[str, FieldDiff] = {}
    for d in change.diffs:
        result.setdefault(d.path.split(".", 1)[0], d)
    return result
