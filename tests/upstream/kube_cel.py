"""Kubernetes CEL (x-kubernetes-validations rules) evaluated with cel-python, loudly incomplete."""

# cel-python implements the CEL standard: the macros has/all/exists/exists_one/filter/map and
# size, contains, startsWith, endsWith, matches, int, string, duration, timestamp, ... The API
# server adds libraries (https://kubernetes.io/docs/reference/using-api/cel/): regex `find`,
# `findAll`, the strings extension `split`, lists, quantity, url, ip/cidr, format. Only those the
# pinned CRDs use are implemented here; a rule that calls any other function is refused when
# the CRD is loaded (UnsupportedCel), so no rule ever passes because it could not be evaluated.

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import celpy
import lark
import re2
from celpy import celtypes
from celpy.evaluation import CELEvalError, base_functions

MACROS = frozenset({"has", "all", "exists", "exists_one", "filter", "map"})


def _find(text: celtypes.StringType, pattern: celtypes.StringType) -> celtypes.StringType:
    """Kubernetes regex library: the first match of an RE2 pattern, or "" when none."""
    match = re2.search(str(pattern), str(text))
    return celtypes.StringType(match.group(0) if match else "")


def _find_all(text: celtypes.StringType, pattern: celtypes.StringType, *limit) -> celtypes.ListType:
    found = [m.group(0) for m in re2.finditer(str(pattern), str(text))]
    if limit and int(limit[0]) >= 0:
        found = found[: int(limit[0])]
    return celtypes.ListType([celtypes.StringType(s) for s in found])


def _split(text: celtypes.StringType, separator: celtypes.StringType, *limit) -> celtypes.ListType:
    """cel-go strings extension: split(sep) and split(sep, n) with Go's strings.SplitN meaning."""
    if not limit or int(limit[0]) < 0:
        parts = str(text).split(str(separator))
    elif int(limit[0]) == 0:
        parts = []
    else:
        parts = str(text).split(str(separator), int(limit[0]) - 1)
    return celtypes.ListType([celtypes.StringType(p) for p in parts])


KUBERNETES_FUNCTIONS = {"find": _find, "findAll": _find_all, "split": _split}
SUPPORTED = frozenset(
    {name for name in base_functions if name[0].isalpha()} | MACROS | set(KUBERNETES_FUNCTIONS)
)

_environment = celpy.Environment()


class UnsupportedCel(RuntimeError):
    """A rule uses a function this evaluator does not implement: extend KUBERNETES_FUNCTIONS."""


def _called_functions_and_identifiers(tree: lark.Tree) -> tuple[set[str], set[str]]:
    called: set[str] = set()
    identifiers: set[str] = set()
    for node in tree.iter_subtrees():
        if node.data == "member_dot_arg":  # receiver.name(args)
            called.add(str(node.children[1]))
        elif node.data in ("ident_arg", "dot_ident_arg"):  # name(args)
            called.add(str(node.children[0]))
        elif node.data in ("ident", "dot_ident"):
            identifiers.add(str(node.children[0]))
    return called, identifiers


@dataclass(frozen=True)
class CelRule:
    """One x-kubernetes-validations entry, compiled."""

    rule: str
    message: str
    program: Any
    # A transition rule compares with oldSelf: the API server runs it only on updates.
    transition: bool

    @classmethod
    def compile(cls, entry: dict, where: str) -> CelRule:
        rule = entry["rule"]
        if "messageExpression" in entry or entry.get("optionalOldSelf"):
            raise UnsupportedCel(f"error: {where}: rule {rule!r} uses fields not implemented here")
        tree = _environment.compile(rule)
        called, identifiers = _called_functions_and_identifiers(tree)
        unknown = sorted(called - SUPPORTED)
        if unknown:
            raise UnsupportedCel(
                f"error: {where}: rule {rule!r} calls {', '.join(unknown)}, which this "
                "evaluator does not implement; add it to tests/upstream/kube_cel.py"
            )
        program = _environment.program(tree, functions=KUBERNETES_FUNCTIONS)
        message = entry.get("message") or f"failed rule: {rule}"
        return cls(rule, message, program, transition="oldSelf" in identifiers)

    def holds(self, value: Any) -> tuple[bool, str | None]:
        """(True, None) when the rule holds for `self` = value; (False, why) when it does not.

        A rule that cannot be evaluated (no such key, wrong type) is a rejection, as on the
        API server, with the evaluation error as the reason.
        """
        try:
            result = self.program.evaluate({"self": celpy.json_to_cel(value)})
        except CELEvalError as error:
            return False, f"evaluation error: {error.args[0]}"
        if isinstance(result, celtypes.BoolType):
            return bool(result), None
        if isinstance(result, CELEvalError):
            return False, f"evaluation error: {result.args[0]}"
        raise UnsupportedCel(f"error: rule {self.rule!r} returned {result!r}, not a bool")
