"""The plan shown is the plan applied, and drift can be exact where extra live entries matter.

`apply(plan)` through a real AWS unit on the moto server over HTTP; `exact()` on plan values.
"""

from __future__ import annotations

import pytest

from infra_assets.plan import FieldDiff, StalePlan, diff_fields, exact
from infra_assets.unit import UnitContext
from infra_assets.units.placement_group import PlacementGroupUnit


def group_names(aws) -> list[str]:
    return [
        g["GroupName"] for g in aws.client("ec2").describe_placement_groups()["PlacementGroups"]
    ]


def test_apply_carries_out_the_plan_it_is_given(aws_ctx: UnitContext, aws):
    unit = PlacementGroupUnit(aws_ctx)
    shown = unit.plan()
    assert [c.action for c in shown.changes] == ["create"]

    result = unit.apply(shown)
    assert result.plan is shown  # what the materialization shows is what was done
    assert group_names(aws) == [aws_ctx.spec.placement_group.name]

    # Applied twice, a plan that said "nothing to do" does nothing.
    nothing = unit.plan()
    assert not nothing.has_changes
    assert unit.apply(nothing).plan is nothing


def test_a_plan_the_live_state_has_moved_past_is_refused_not_replaced(aws_ctx, aws):
    unit = PlacementGroupUnit(aws_ctx)
    unit.apply()
    shown = unit.plan()  # "keep": this is what a person reviewed
    aws.client("ec2").delete_placement_group(GroupName=aws_ctx.spec.placement_group.name)

    with pytest.raises(StalePlan, match="create placement-group") as refused:
        unit.apply(shown)
    assert "nothing was applied" in str(refused.value)
    assert group_names(aws) == []  # no hidden re-plan created it

    unit.apply(unit.plan())  # the fresh plan, shown and applied
    assert group_names(aws) == [aws_ctx.spec.placement_group.name]


def test_apply_without_a_plan_still_plans_and_applies(aws_ctx, aws):
    assert PlacementGroupUnit(aws_ctx).apply().plan.counts()["create"] == 1
    assert group_names(aws) == [aws_ctx.spec.placement_group.name]


def test_by_default_extra_live_keys_are_not_drift():
    observed = {"tags": {"Name": "a", "aws:cloudformation:stack-name": "x"}}
    assert diff_fields(observed, {"tags": {"Name": "a"}}) == []


def test_an_exact_map_sees_extra_live_entries_and_keys_removed_from_the_spec():
    routes_live = {"0.0.0.0/0": "nat-a", "0.0.0.0/1": "igw", "10.9.0.0/16": "pcx-1"}
    desired = {"routes": exact({"0.0.0.0/0": "nat-a", "10.9.0.0/16": "pcx-1"})}
    assert diff_fields({"routes": routes_live}, desired) == [
        FieldDiff("routes.0.0.0.0/1", "igw", None)
    ]
    limits = {"spec": {"limits": {"cpu": "1000", "nvidia.com/gpu": "0"}}}
    assert diff_fields(limits, {"spec": {"limits": exact({"cpu": "1000"})}}) == [
        FieldDiff("spec.limits.nvidia.com/gpu", "0", None)
    ]
    # Nested maps of an exact map are exact; sibling maps are not.
    live = {"a": {"b": {"c": 1, "extra": 2}}, "tags": {"Name": "x", "added": "y"}}
    want = {"a": exact({"b": {"c": 1}}), "tags": {"Name": "x"}}
    assert diff_fields(live, want) == [FieldDiff("a.b.extra", 2, None)]
    assert str(FieldDiff("a.b.extra", 2, None)) == "a.b.extra: 2 -> (absent)"


def test_exact_values_stay_plain_values():
    marked = exact({"cpu": "1000"})
    assert marked == {"cpu": "1000"} and isinstance(marked, dict)
    assert exact(["a", "b"]) == ["a", "b"]
    assert diff_fields({"xs": ["b", "a", "c"]}, {"xs": exact(["a", "b"])}) == [
        FieldDiff("xs", ["b", "a", "c"], ["a", "b"])
    ]
    with pytest.raises(TypeError):
        exact("cpu")  # type: ignore[arg-type]
