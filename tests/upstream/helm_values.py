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
