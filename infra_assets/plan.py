"""The plan value: what reconciling one deployment unit would create, change, delete or leave alone.

A plan is computed from the spec (what should be) and the observed state (what is). It can be
printed in the Dagster UI, asserted in a test, and applied; applying it twice changes nothing the
second time, because the second observation matches the spec and plans no changes. The plan a
unit applies is the plan it was given (`unit.apply(plan)`), never a hidden second one: a unit
that finds the live state has moved on since refuses with `StalePlan` instead of doing something
nobody was shown.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Literal

Action = Literal["create", "update", "delete", "keep"]


class StalePlan(RuntimeError):
    """The plan given to apply no longer matches the live state: re-plan, look, apply again."""


class ExactMap(dict):
    """A desired map compared whole: see `exact()`."""


class ExactList(list):
    """A desired list compared whole: see `exact()`."""


def exact(value: dict[str, Any] | list[Any]) -> ExactMap | ExactList:
    """Mark a desired map (or list) as exact: the live value must equal it, entry for entry.

    By default `diff_fields` compares only the keys the spec sets, so what AWS or a controller adds
    (tags like `aws:cloudformation:stack-name`, defaulted fields) is not drift. Wrap a field
    whose extra live entries matter in `exact(...)`, in the desired dict given to
    `diff_fields`/`AwsUnit.compare`:

        desired = {"routes": exact({"0.0.0.0/0": "nat-eu-west-3a"}), "tags": self.tags(...)}
        desired = {"spec": {"limits": exact({"cpu": "1000", "nvidia.com/gpu": "4"})}}

    Then a live entry the spec does not have (a route `0.0.0.0/1 -> igw`, a limit
    `nvidia.com/gpu: "0"`, a key removed from the spec) is a `FieldDiff` whose `desired` is None
    ("absent"): drift in the check, and something the unit's apply must remove. Nested maps of an
    exact map are exact too. Lists are always compared whole (scalars as sets), so `exact` on a
    list only documents intent. The marked value is still a plain dict/list to everything else
    (JSON, equality, the create diff shown in the plan).
    """
    if isinstance(value, dict):
        return ExactMap(value)
    if isinstance(value, (list, tuple)):
        return ExactList(value)
    raise TypeError(f"exact() takes a dict or a list, got {type(value).__name__}")


@dataclasses.dataclass(frozen=True)
class FieldDiff:
    """One field whose observed value differs from the desired one (`observed` None: absent)."""

    path: str
    observed: Any
    desired: Any

    def __str__(self) -> str:
        return f"{self.path}: {_short(self.observed)} -> {_short(self.desired)}"


@dataclasses.dataclass(frozen=True)
class Change:
    """One resource and what the plan does to it."""

    action: Action
    kind: str  # e.g. "subnet", "nat-gateway", "NodePool", "helm-release"
    name: str  # stable human name from the spec, e.g. "private-eu-west-3a"
    resource_id: str | None = None  # the live id where it exists (subnet-..., arn:...)
    diffs: tuple[FieldDiff, ...] = ()

    def __str__(self) -> str:
        head = f"{self.action:<6} {self.kind} {self.name}"
        if self.resource_id:
            head += f" ({self.resource_id})"
        return head + "".join(f"\n         {d}" for d in self.diffs)


@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything one unit would do. `warnings` say what the spec asks but cannot be expressed;
    `conflicts` name resources that are not ours but stand where the spec wants ours: the plan
    never touches them, and applying refuses until a person resolves them."""

    unit: str
    changes: tuple[Change, ...] = ()
    warnings: tuple[str, ...] = ()
    conflicts: tuple[str, ...] = ()

    @property
    def pending(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.action != "keep")

    @property
    def has_changes(self) -> bool:
        return bool(self.pending)

    @property
    def absent(self) -> bool:
        """Nothing of the unit exists: every change creates (a torn-down or never applied unit)."""
        return bool(self.changes) and all(c.action == "create" for c in self.changes)

    def same_changes_as(self, other: Plan) -> bool:
        """Whether `other` does what this plan does: the same pending changes (action, resource,
        fields touched) and the same conflicts. Observed values may differ."""
        return (
            self.unit == other.unit
            and _change_keys(self.pending) == _change_keys(other.pending)
            and set(self.conflicts) == set(other.conflicts)
        )

    def field_diffs(self) -> list[dict[str, Any]]:
        """The pending changes as JSON-ready rows, one per field (alerts, check metadata)."""
        rows: list[dict[str, Any]] = []
        for change in self.pending:
            base = {
                "action": change.action,
                "kind": change.kind,
                "name": change.name,
                "resource_id": change.resource_id,
            }
            if not change.diffs:
                rows.append({**base, "field": None, "observed": None, "desired": None})
            for d in change.diffs:
                rows.append({**base, "field": d.path, "observed": d.observed, "desired": d.desired})
        return rows

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(("create", "update", "delete", "keep"), 0)
        for change in self.changes:
            counts[change.action] += 1
        return counts

    def summary(self) -> str:
        c = self.counts()
        return (
            f"{self.unit}: {c['create']} to create, {c['update']} to update, "
            f"{c['delete']} to delete, {c['keep']} unchanged"
        )

    def as_text(self) -> str:
        lines = [self.summary()]
        lines += [f"  {change}" for change in self.pending]
        lines += [f"  conflict: {c}" for c in self.conflicts]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def as_markdown(self) -> str:
        """A table for the Dagster UI: one row per resource, diffs inline."""
        rows = ["| action | kind | name | id | diff |", "|---|---|---|---|---|"]
        for change in sorted(self.changes, key=lambda c: (c.action == "keep", c.kind, c.name)):
            diff = "<br>".join(_md(str(d)) for d in change.diffs)
            rows.append(
                f"| {change.action} | {change.kind} | {_md(change.name)} | "
                f"{_md(change.resource_id or '')} | {diff} |"
            )
        text = "\n".join(rows)
        notes = [f"- conflict: {_md(c)}" for c in self.conflicts]
        notes += [f"- warning: {_md(w)}" for w in self.warnings]
        if notes:
            text += "\n\n" + "\n".join(notes)
        return text


def plan_to_apply(unit: str, given: Plan | None, current: Plan) -> Plan:
    """The plan an apply carries out: `given` as it is (None: `current`, the plan just made).

    A given plan is checked against `current`, made from a fresh observation, and refused with
    StalePlan when the live state now plans other changes (someone changed something since the
    plan was shown): nothing is applied then.
    """
    if given is None:
        return current
    if not given.same_changes_as(current):
        raise StalePlan(
            f"{unit}: the live state changed since this plan was made; it now plans:\n"
            f"{current.as_text()}\nnothing was applied: plan again, review, apply that plan"
        )
    return given


def diff_fields(
    observed: dict[str, Any], desired: dict[str, Any], prefix: str = "", *, whole: bool = False
) -> list[FieldDiff]:
    """Field-level differences for the keys the spec sets.

    Keys only in `observed` are not drift, except inside a map marked `exact(...)` (or when
    `whole` is true): there every live key the spec lacks is a FieldDiff with `desired` None.
    """
    diffs: list[FieldDiff] = []
    for key, want in desired.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        have = observed.get(key) if isinstance(observed, dict) else None
        if isinstance(want, dict) and isinstance(have, dict):
            diffs.extend(diff_fields(have, want, path, whole=whole or isinstance(want, ExactMap)))
        elif _normalize(have) != _normalize(want):
            diffs.append(FieldDiff(path, have, want))
    if whole and isinstance(observed, dict):
        for key, have in observed.items():
            if key not in desired:
                path = f"{prefix}.{key}" if prefix else str(key)
                diffs.append(FieldDiff(path, have, None))
    return diffs


def _change_keys(changes: tuple[Change, ...]) -> list[tuple[Any, ...]]:
    # What a change does, not the values it saw: a status that ticked on between plan and apply
    # changes no action, and the desired values come from the spec, not from the plan's copy.
    return sorted(
        (c.action, c.kind, c.name, c.resource_id or "", tuple(sorted(d.path for d in c.diffs)))
        for c in changes
    )


def _normalize(value: Any) -> Any:
    # Lists of scalars compare as sets where order carries no meaning to AWS/Kubernetes.
    if isinstance(value, (list, tuple)) and all(isinstance(v, (str, int, float)) for v in value):
        return sorted(value, key=str)
    return value


def _short(value: Any) -> str:
    if value is None:
        return "(absent)"
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 120 else text[:117] + "..."


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "<br>")
