"""Label and field selectors, as in `?labelSelector=` / `?fieldSelector=`."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from sandbox.kubeapi.errors import bad_request

Matcher = Callable[[dict[str, Any]], bool]

_SET_RE = re.compile(r"^\s*(!?)([A-Za-z0-9_./-]+)\s+(in|notin)\s+\((.*)\)\s*$")
_EQ_RE = re.compile(r"^\s*([A-Za-z0-9_./-]+)\s*(==|=|!=)\s*([A-Za-z0-9_./-]*)\s*$")
_EXISTS_RE = re.compile(r"^\s*(!?)([A-Za-z0-9_./-]+)\s*$")


def _split_terms(text: str) -> list[str]:
    """Split on commas outside parentheses."""
    terms: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            terms.append("".join(current))
            current = []
        else:
            current.append(char)
    terms.append("".join(current))
    return [t for t in terms if t.strip()]


def _label_term(term: str) -> Matcher:
    if m := _SET_RE.match(term):
        key, op = m.group(2), m.group(3)
        values = {v.strip() for v in m.group(4).split(",") if v.strip()}
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if m := _EQ_RE.match(term):
        key, op, value = m.groups()
        if op == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    if m := _EXISTS_RE.match(term):
        negate, key = m.groups()
        if negate:
            return lambda labels: key not in labels
        return lambda labels: key in labels
    raise bad_request(f"unable to parse requirement: invalid label selector term {term.strip()!r}")


def label_matcher(text: str | None) -> Matcher:
    terms = [_label_term(t) for t in _split_terms(text or "")]

    def match(obj: dict[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(term(labels) for term in terms)

    return match


def _field_value(obj: dict[str, Any], path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if node is None:
        return ""
    if isinstance(node, bool):
        return "true" if node else "false"
    return str(node)


def _field_term(path: str, value: str, *, negate: bool) -> Matcher:
    def match(obj: dict[str, Any]) -> bool:
        return (_field_value(obj, path) == value) != negate

    return match


def field_matcher(text: str | None) -> Matcher:
    terms: list[Matcher] = []
    for term in _split_terms(text or ""):
        m = _EQ_RE.match(term)
        if not m:
            raise bad_request(f"invalid field selector: {term.strip()!r}")
        path, op, value = m.groups()
        terms.append(_field_term(path, value, negate=op == "!="))
    return lambda obj: all(term(obj) for term in terms)


def selector_string(selector: dict[str, Any] | None) -> str:
    """A LabelSelector as the string form Scale's status.selector carries: requirements
    sorted by key, as kube's labels.Selector prints them (`app=web,app.kubernetes.io/...`)."""
    if not selector:
        return ""
    parts = [(k, f"{k}={v}") for k, v in (selector.get("matchLabels") or {}).items()]
    for expr in selector.get("matchExpressions") or []:
        key, op = expr.get("key", ""), expr.get("operator", "")
        values = ",".join(sorted(expr.get("values") or []))
        if op == "In":
            parts.append((key, f"{key} in ({values})"))
        elif op == "NotIn":
            parts.append((key, f"{key} notin ({values})"))
        elif op == "Exists":
            parts.append((key, key))
        elif op == "DoesNotExist":
            parts.append((key, f"!{key}"))
    return ",".join(text for _, text in sorted(parts))
