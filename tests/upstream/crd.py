"""Validates objects against a real CRD as a Kubernetes 1.32 API server does on create."""

# What the API server does with a custom resource on create (kubectl's default strict field
# validation), in order: check apiVersion/kind/scope and ObjectMeta; apply the schema's
# defaults; reject unknown fields (where x-kubernetes-preserve-unknown-fields is not set);
# check the openAPIV3Schema (types, nullable, x-kubernetes-int-or-string, enum, pattern as RE2,
# lengths, bounds, item and property counts, required, oneOf/anyOf/allOf/not, the formats the
# server knows, x-kubernetes-list-type set/map uniqueness); evaluate every
# x-kubernetes-validations CEL rule on the value it is attached to. Rules on oldSelf are
# transition rules, run on updates only: they are counted, not evaluated.

from __future__ import annotations

import copy
import datetime
import ipaddress
import json
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import re2
import yaml

from . import pinned
from .kube_cel import CelRule

# Formats the apiextensions server checks (k8s.io/kube-openapi strfmt); any other format, such
# as int32, int64 or idn-hostname in these CRDs, is documentation only and not enforced.
_IGNORED_FORMATS = frozenset({"int32", "int64", "idn-hostname", "float", "double", "byte"})
_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_QUALIFIED_NAME = r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$"
_LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
_OBJECT_META_FIELDS = frozenset(
    {
        "name",
        "generateName",
        "namespace",
        "labels",
        "annotations",
        "finalizers",
        "ownerReferences",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "managedFields",
        "selfLink",
    }
)


@dataclass(frozen=True)
class Violation:
    path: str
    message: str
    rule: str | None = None  # the CEL rule, when the violation came from one

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" + (f" (rule: {self.rule})" if self.rule else "")


@dataclass
class Verdict:
    violations: list[Violation] = field(default_factory=list)
    rules_evaluated: int = 0
    transition_rules_skipped: int = 0

    @property
    def accepted(self) -> bool:
        return not self.violations

    def __str__(self) -> str:
        return "; ".join(map(str, self.violations)) or "accepted"


class InvalidObject(AssertionError):
    def __init__(self, obj: dict, verdict: Verdict):
        name = obj.get("metadata", {}).get("name")
        super().__init__(f"{obj.get('kind')} {name} rejected by the real CRD: {verdict}")
        self.verdict = verdict


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _type_ok(value: Any, expected: str) -> bool:
    if expected == "object":
        return isinstance(value, dict)
    if expected == "array":
        return isinstance(value, list)
    if expected == "string":
        return isinstance(value, str)
    if expected == "boolean":
        return isinstance(value, bool)
    if expected == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if expected == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    raise ValueError(f"unknown schema type {expected!r}")


def _format_error(value: Any, fmt: str) -> str | None:
    if fmt in _IGNORED_FORMATS or not isinstance(value, str):
        return None
    if fmt == "cidr":  # Go's net.ParseCIDR: address/prefix, host bits allowed
        try:
            if "/" not in value:
                raise ValueError(value)
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            return f"{value!r} is not a CIDR"
        return None
    if fmt == "date-time":
        try:
            datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return f"{value!r} is not an RFC 3339 date-time"
        return None
    raise ValueError(f"schema format {fmt!r} is not implemented in tests/upstream/crd.py")


class CustomResourceDefinition:
    """One CRD document: its group, kind, scope, and per-version schema with compiled rules."""

    def __init__(self, document: dict):
        spec = document["spec"]
        self.group: str = spec["group"]
        self.kind: str = spec["names"]["kind"]
        self.namespaced = spec["scope"] == "Namespaced"
        self.schemas = {
            v["name"]: v["schema"]["openAPIV3Schema"] for v in spec["versions"] if v["served"]
        }
        # Compile every rule up front: an unsupported function fails the load, not a test later.
        self._rules: dict[int, list[CelRule]] = {}
        for version, schema in self.schemas.items():
            self._compile_rules(schema, f"{self.kind} {version}")

    @classmethod
    def from_upstream(cls, path: str) -> CustomResourceDefinition:
        return cls(yaml.safe_load(pinned.required_text(path)))

    def _compile_rules(self, schema: Any, where: str) -> None:
        if isinstance(schema, dict):
            entries = schema.get("x-kubernetes-validations", [])
            self._rules[id(schema)] = [CelRule.compile(e, where) for e in entries]
            for key, sub in schema.items():
                if key != "x-kubernetes-validations":
                    self._compile_rules(sub, where)
        elif isinstance(schema, list):
            for sub in schema:
                self._compile_rules(sub, where)

    @property
    def rule_count(self) -> int:
        return sum(len(rules) for rules in self._rules.values())

    # ---- the API server's steps ------------------------------------------------------------

    def validate(self, obj: dict) -> Verdict:
        verdict = Verdict()
        group, _, version = str(obj.get("apiVersion", "")).rpartition("/")
        if group != self.group or version not in self.schemas:
            served = ", ".join(f"{self.group}/{v}" for v in self.schemas)
            verdict.violations.append(
                Violation("apiVersion", f"{obj.get('apiVersion')!r} is not served ({served})")
            )
            return verdict
        if obj.get("kind") != self.kind:
            verdict.violations.append(Violation("kind", f"{obj.get('kind')!r} is not {self.kind}"))
            return verdict
        self._check_metadata(obj.get("metadata"), verdict)
        schema = self.schemas[version]
        defaulted = copy.deepcopy(obj)
        _apply_defaults(defaulted, schema)
        # metadata was checked above as ObjectMeta (the CRD schema says only `type: object`).
        if isinstance(defaulted.get("metadata"), dict):
            defaulted["metadata"] = {}
        self._check(defaulted, schema, "", verdict, structural=True)
        return verdict

    def assert_valid(self, obj: dict) -> Verdict:
        verdict = self.validate(obj)
        if not verdict.accepted:
            raise InvalidObject(obj, verdict)
        return verdict

    def _check_metadata(self, metadata: Any, verdict: Verdict) -> None:
        out = verdict.violations
        if not isinstance(metadata, dict):
            out.append(Violation("metadata", "must be an object"))
            return
        for key in sorted(set(metadata) - _OBJECT_META_FIELDS):
            out.append(Violation(f"metadata.{key}", "unknown field"))
        name = metadata.get("name")
        if not isinstance(name, str) or len(name) > 253 or not re2.search(_DNS_SUBDOMAIN, name):
            out.append(Violation("metadata.name", f"{name!r} is not a DNS-1123 subdomain"))
        if self.namespaced != ("namespace" in metadata):
            need = "needs" if self.namespaced else "must not have"
            out.append(Violation("metadata.namespace", f"a {self.kind} {need} a namespace"))
        for key, value in (metadata.get("labels") or {}).items():
            if not _qualified_key(key):
                out.append(Violation(f"metadata.labels.{key}", "not a qualified name"))
            if not isinstance(value, str) or len(value) > 63 or not re2.search(_LABEL_VALUE, value):
                out.append(Violation(f"metadata.labels.{key}", f"{value!r} is not a label value"))
        for key, value in (metadata.get("annotations") or {}).items():
            if not _qualified_key(key) or not isinstance(value, str):
                out.append(Violation(f"metadata.annotations.{key}", "invalid annotation"))

    def _errors(self, value: Any, schema: dict) -> list[Violation]:
        """Violations of a value-validation schema (inside oneOf/anyOf/allOf/not)."""
        verdict = Verdict()
        self._check(value, schema, "", verdict, structural=False)
        return verdict.violations

    def _check(self, value: Any, schema: dict, path: str, verdict: Verdict, structural: bool):
        out = verdict.violations
        where = path or "<root>"
        if value is None:
            if not schema.get("nullable") and schema:
                out.append(Violation(where, "must not be null"))
            return
        if schema.get("x-kubernetes-int-or-string"):
            if not (_type_ok(value, "integer") or isinstance(value, str)):
                out.append(Violation(where, f"{value!r} must be an integer or a string"))
                return
        elif "type" in schema and not _type_ok(value, schema["type"]):
            out.append(Violation(where, f"{json.dumps(value)} must be of type {schema['type']}"))
            return
        _check_value(value, schema, where, out)
        for sub in schema.get("allOf", []):
            out.extend(_nest(where, self._errors(value, sub)))
        if "anyOf" in schema and all(self._errors(value, s) for s in schema["anyOf"]):
            out.append(Violation(where, "matches none of anyOf"))
        if "oneOf" in schema:
            matching = sum(not self._errors(value, s) for s in schema["oneOf"])
            if matching != 1:
                out.append(Violation(where, f"must match exactly one of oneOf, matches {matching}"))
        if "not" in schema and not self._errors(value, schema["not"]):
            out.append(Violation(where, "must not match the `not` schema"))
        if isinstance(value, dict):
            self._check_object(value, schema, path, verdict, structural)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if "items" in schema:
                    self._check(item, schema["items"], _join(path, i), verdict, structural)
            _check_list_type(value, schema, where, out)
        if structural:
            for rule in self._rules.get(id(schema), []):
                if rule.transition:
                    verdict.transition_rules_skipped += 1
                    continue
                verdict.rules_evaluated += 1
                holds, why = rule.holds(value)
                if not holds:
                    out.append(Violation(where, why or rule.message, rule.rule))

    def _check_object(self, value: dict, schema: dict, path: str, verdict: Verdict, structural):
        properties = schema.get("properties", {})
        additional = schema.get("additionalProperties")
        open_object = schema.get("x-kubernetes-preserve-unknown-fields") or additional is True
        for key, item in value.items():
            if key in properties:
                self._check(item, properties[key], _join(path, key), verdict, structural)
            elif isinstance(additional, dict):
                self._check(item, additional, _join(path, key), verdict, structural)
            elif structural and not open_object:
                # Pruned by the server; kubectl's strict field validation rejects it.
                verdict.violations.append(Violation(_join(path, key), "unknown field"))
        for key in schema.get("required", []):
            if key not in value:
                verdict.violations.append(Violation(path or "<root>", f"{key!r} is required"))


def _nest(where: str, violations: list[Violation]) -> list[Violation]:
    return [
        Violation(where if v.path == "<root>" else f"{where}/{v.path}", v.message)
        for v in violations
    ]


def _qualified_key(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not re2.search(_DNS_SUBDOMAIN, prefix)):
        return False
    return 0 < len(name) <= 63 and bool(re2.search(_QUALIFIED_NAME, name))


def _check_value(value: Any, schema: dict, where: str, out: list[Violation]) -> None:
    if "enum" in schema and value not in schema["enum"]:
        out.append(Violation(where, f"{json.dumps(value)} is not one of {schema['enum']}"))
    if isinstance(value, str):
        if "pattern" in schema and not re2.search(schema["pattern"], value):
            out.append(Violation(where, f"{value!r} does not match {schema['pattern']!r}"))
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            out.append(Violation(where, f"longer than {schema['maxLength']} characters"))
        if "minLength" in schema and len(value) < schema["minLength"]:
            out.append(Violation(where, f"shorter than {schema['minLength']} characters"))
        if "format" in schema and (problem := _format_error(value, schema["format"])):
            out.append(Violation(where, problem))
    if _type_ok(value, "number"):
        if "maximum" in schema and (
            value > schema["maximum"]
            or (schema.get("exclusiveMaximum") and value == schema["maximum"])
        ):
            out.append(Violation(where, f"{value} is above the maximum {schema['maximum']}"))
        if "minimum" in schema and (
            value < schema["minimum"]
            or (schema.get("exclusiveMinimum") and value == schema["minimum"])
        ):
            out.append(Violation(where, f"{value} is below the minimum {schema['minimum']}"))
        if "multipleOf" in schema and value % schema["multipleOf"]:
            out.append(Violation(where, f"{value} is not a multiple of {schema['multipleOf']}"))
    if isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            out.append(Violation(where, f"more than {schema['maxItems']} items"))
        if "minItems" in schema and len(value) < schema["minItems"]:
            out.append(Violation(where, f"fewer than {schema['minItems']} items"))
        if schema.get("uniqueItems") and len({json.dumps(v, sort_keys=True) for v in value}) < len(
            value
        ):
            out.append(Violation(where, "items are not unique"))
    if isinstance(value, dict):
        if "maxProperties" in schema and len(value) > schema["maxProperties"]:
            out.append(Violation(where, f"more than {schema['maxProperties']} properties"))
        if "minProperties" in schema and len(value) < schema["minProperties"]:
            out.append(Violation(where, f"fewer than {schema['minProperties']} properties"))


def _check_list_type(value: list, schema: dict, where: str, out: list[Violation]) -> None:
    list_type = schema.get("x-kubernetes-list-type")
    if list_type == "set":
        seen = [json.dumps(v, sort_keys=True) for v in value]
        if len(set(seen)) < len(seen):
            out.append(Violation(where, "duplicate entries in a list-type set"))
    elif list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys", [])
        seen = [json.dumps([v.get(k) for k in keys]) for v in value if isinstance(v, dict)]
        if len(set(seen)) < len(seen):
            out.append(Violation(where, f"duplicate entries for keys {keys} in a list-type map"))


def _apply_defaults(value: Any, schema: dict) -> None:
    """Structural defaulting: a missing property with a default gets it (then its own)."""
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for key, sub in properties.items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                _apply_defaults(value[key], sub)
        additional = schema.get("additionalProperties")
        if isinstance(additional, dict):
            for key, item in value.items():
                if key not in properties:
                    _apply_defaults(item, additional)
    elif isinstance(value, list) and "items" in schema:
        for item in value:
            _apply_defaults(item, schema["items"])


@cache
def upstream_crd(path: str) -> CustomResourceDefinition:
    return CustomResourceDefinition.from_upstream(path)


# (API group, kind) -> the pinned CRD; the CRD itself says which versions it serves.
KINDS = {
    ("karpenter.sh", "NodePool"): pinned.NODEPOOL_CRD,
    ("karpenter.k8s.aws", "EC2NodeClass"): pinned.EC2NODECLASS_CRD,
    ("cilium.io", "CiliumNetworkPolicy"): pinned.CNP_CRD,
    ("cilium.io", "CiliumClusterwideNetworkPolicy"): pinned.CCNP_CRD,
}


def crd_for(obj: dict) -> CustomResourceDefinition:
    """The real CRD of an object's apiVersion and kind."""
    group = str(obj.get("apiVersion", "")).rpartition("/")[0]
    try:
        path = KINDS[(group, obj.get("kind"))]
    except KeyError:
        raise KeyError(f"no pinned CRD for {obj.get('apiVersion')} {obj.get('kind')}") from None
    return upstream_crd(path)


def validate(obj: dict) -> Verdict:
    return crd_for(obj).validate(obj)


def assert_valid(obj: dict) -> Verdict:
    """Raise InvalidObject (an AssertionError) naming each violation, else return the verdict."""
    return crd_for(obj).assert_valid(obj)
