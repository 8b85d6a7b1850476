"""The plan value: what reconciling one deployment unit would create, change, delete or leave alone.

A plan is computed from the spec (what should be) and the observed state (what is). It can be
printed in the Dagster UI, asserted in a test, and applied; applying it twice changes nothing the
second time, because the second observation matches the spec and plans no changes.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Literal

Action = Literal["create", "update", "delete", "keep"]


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


def diff_fields(
    observed: dict[str, Any], desired: dict[str, Any], prefix: str = ""
) -> list[FieldDiff]:
    """Field-level differences for the keys the spec sets. Keys only in `observed` are not drift."""
    diffs: list[FieldDiff] = []
    for key, want in desired.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        have = observed.get(key) if isinstance(observed, dict) else None
        if isinstance(want, dict) and isinstance(have, dict):
            diffs.extend(diff_fields(have, want, path))
        elif _normalize(have) != _normalize(want):
            diffs.append(FieldDiff(path, have, want))
    return diffs


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
