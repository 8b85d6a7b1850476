"""Helm values against the real charts: Cilium's values.schema.json, Karpenter's values.yaml."""

# Helm validates values against a chart's values.schema.json (Draft 7) and says nothing about
# keys the chart does not know: they are silently ignored, so a misspelt key is a setting that
# never takes effect. Both checks below therefore also refuse unknown keys.

from __future__ import annotations

import json
from functools import cache
from typing import Any

import jsonschema
import yaml

from . import pinned

# Keys the Cilium 1.16.5 templates read although values.schema.json (generated from values.yaml)
# does not list them: values.yaml mentions them only in comments. Source: shared/upstream/README.md
# ("Not included"), which names egressMasqueradeInterfaces and how such keys were extracted.
CILIUM_TEMPLATE_ONLY_KEYS = frozenset({"egressMasqueradeInterfaces"})


@cache
def cilium_schema() -> dict:
    return json.loads(pinned.required_text(pinned.CILIUM_VALUES_SCHEMA))


@cache
def karpenter_defaults() -> dict:
    return yaml.safe_load(pinned.required_text(pinned.KARPENTER_VALUES))


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _unknown_schema_keys(value: Any, schema: dict, path: str, extra: frozenset[str]) -> list[str]:
    if not isinstance(value, dict):
        return []
    branches = [schema, *schema.get("anyOf", []), *schema.get("oneOf", [])]
    properties: dict[str, Any] = {}
    for branch in branches:
        properties.update(branch.get("properties", {}))
    additional = schema.get("additionalProperties")
    if not properties:  # the schema says only "object": a free-form map (annotations, ...)
        return []
    errors = []
    for key, item in value.items():
        where = _join(path, key)
        if key in properties:
            errors += _unknown_schema_keys(item, properties[key], where, extra)
        elif where in extra:
            continue
        elif isinstance(additional, dict):
            errors += _unknown_schema_keys(item, additional, where, extra)
        elif additional is not True:
            errors.append(f"{where}: unknown key (not in the chart's values.schema.json)")
    return errors


def cilium_values_errors(
    values: dict, template_only_keys: frozenset[str] = CILIUM_TEMPLATE_ONLY_KEYS
) -> list[str]:
    """What `helm install` would refuse (Draft 7 schema), plus every key the chart does not know."""
    schema = cilium_schema()
    errors = [
        f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in jsonschema.Draft7Validator(schema).iter_errors(values)
    ]
    return errors + _unknown_schema_keys(values, schema, "", template_only_keys)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "map"
    if isinstance(value, list):
        return "list"
    return "null"


def _against_defaults(value: Any, default: Any, path: str) -> list[str]:
    if default is None:  # values.yaml says `key: null` or `key:` — any value
        return []
    if _kind(value) != _kind(default):
        return [
            f"{path}: {json.dumps(value)} is a {_kind(value)}, the chart's default is a "
            f"{_kind(default)} ({json.dumps(default)})"
        ]
    if not isinstance(value, dict) or not default:  # an empty default map is free-form
        return []
    errors = []
    for key, item in value.items():
        where = _join(path, key)
        if key not in default:
            errors.append(f"{where}: unknown key (not in the chart's values.yaml)")
        else:
            errors += _against_defaults(item, default[key], where)
    return errors


def karpenter_values_errors(values: dict) -> list[str]:
    """Every key must be one the chart's values.yaml sets, with a value of the same kind."""
    errors = []
    for key, item in values.items():
        if key not in karpenter_defaults():
            errors.append(f"{key}: unknown key (not in the chart's values.yaml)")
        else:
            errors += _against_defaults(item, karpenter_defaults()[key], key)
    return errors


# --- Dagster: the chart's values.schema.json, as `helm install` applies it ----------------------
#
# Helm validates the values merged over the chart's values.yaml against values.schema.json
# (Draft 7, Helm docs "Schema files"). The values.yaml of the pinned schema's commit is not
# stored (shared/upstream/README.md, "Not included"), so the defaults cannot be merged here:
# `required` is dropped where the chart's defaults supply the key, and kept inside array items,
# which Helm replaces whole instead of merging (a user deployment must name its own image and
# port). Remote $refs (kubernetesjsonschema.dev) cannot be fetched offline and are "any object"
# (the README's rule). Helm says nothing about keys a schema leaves open, which are silently
# ignored; the walk below refuses them too, as the Cilium check above does.


def _inline_dagster(node: Any, definitions: dict, in_items: bool, depth: int = 0) -> Any:
    if depth > 50:
        raise RecursionError("the chart schema's $refs nest deeper than 50")
    if isinstance(node, list):
        return [_inline_dagster(n, definitions, in_items, depth + 1) for n in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/definitions/"):
        # Draft 7: a $ref replaces its siblings.
        return _inline_dagster(definitions[ref.rsplit("/", 1)[1]], definitions, in_items, depth + 1)
    if isinstance(ref, str):
        return {"type": node["type"], "x-remote": ref} if "type" in node else {"x-remote": ref}
    out = {}
    for key, value in node.items():
        if key == "required" and not in_items:
            continue
        if key in ("properties", "definitions", "patternProperties"):
            out[key] = {
                k: _inline_dagster(v, definitions, in_items, depth + 1) for k, v in value.items()
            }
        else:
            out[key] = _inline_dagster(value, definitions, in_items or key == "items", depth + 1)
    return out


@cache
def dagster_schema() -> dict:
    raw = json.loads(pinned.required_text(pinned.DAGSTER_VALUES_SCHEMA))
    definitions = raw.pop("definitions")
    return _inline_dagster(raw, definitions, in_items=False)


def _unknown_dagster_keys(value: Any, schema: dict, path: str) -> list[str]:
    if "x-remote" in schema:
        return []
    branches = [schema, *schema.get("anyOf", []), *schema.get("oneOf", [])]
    if isinstance(value, list):
        items = [b["items"] for b in branches if isinstance(b.get("items"), dict)]
        return [
            error
            for i, item in enumerate(value)
            for sub in items[:1]
            for error in _unknown_dagster_keys(item, sub, f"{path}[{i}]")
        ]
    if not isinstance(value, dict):
        return []
    properties: dict[str, Any] = {}
    for branch in branches:
        properties.update(branch.get("properties", {}))
    additional = next(
        (b["additionalProperties"] for b in branches if "additionalProperties" in b), None
    )
    if not properties:  # "object" alone, or `properties: {}`: a free-form map
        return []
    errors = []
    for key, item in value.items():
        where = f"{path}.{key}" if path else key
        if key in properties:
            errors += _unknown_dagster_keys(item, properties[key], where)
        elif isinstance(additional, dict):
            errors += _unknown_dagster_keys(item, additional, where)
        elif additional is not True:
            errors.append(f"{where}: unknown key (not in the chart's values.schema.json)")
    return errors


def dagster_values_errors(chart_values: dict) -> list[str]:
    """What Helm would refuse in these Dagster chart values, plus keys the chart does not know."""
    schema = dagster_schema()
    refused = [
        f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in jsonschema.Draft7Validator(schema).iter_errors(chart_values)
    ]
    return sorted(set(refused) | set(_unknown_dagster_keys(chart_values, schema, "")))
