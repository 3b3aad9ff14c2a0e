"""The real Kubernetes OpenAPI schemas (shipped by `kubernetes-validate`), walked by hand.

Two uses: strict field validation (unknown fields, like kube-apiserver's
`fieldValidation=Strict`) and the patch strategies of strategic merge patch
(`x-kubernetes-patch-merge-key` / `x-kubernetes-patch-strategy`).
A kind without a schema here (the CRDs) is schemaless: anything goes.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

SCHEMA_VERSION = "v1.32.0-local"  # matches the kubectl v1.32 on this machine
_REF_PREFIX = "#/$defs/"


@functools.cache
def _definitions() -> dict[str, Any]:
    root = resources.files("kubernetes_validate").joinpath("kubernetes-json-schema")
    text = root.joinpath(SCHEMA_VERSION).joinpath("_definitions.json").read_text()
    defs: dict[str, Any] = json.loads(text)["$defs"]
    return defs


@functools.cache
def _kind_index() -> dict[tuple[str, str, str], str]:
    index: dict[tuple[str, str, str], str] = {}
    for name, schema in _definitions().items():
        for gvk in schema.get("x-kubernetes-group-version-kind", []):
            index[(gvk["group"], gvk["version"], gvk["kind"])] = name
    return index


@dataclass(frozen=True)
class Node:
    """A position in a schema: wraps one JSON-schema dict (refs resolved lazily)."""

    schema: dict[str, Any]

    def _resolved(self) -> dict[str, Any]:
        ref = self.schema.get("$ref")
        if ref and ref.startswith(_REF_PREFIX):
            merged = dict(_definitions()[ref[len(_REF_PREFIX) :]])
            merged.update({k: v for k, v in self.schema.items() if k.startswith("x-")})
            return merged
        return self.schema

    @property
    def go_name(self) -> str:
        """`v1.DeploymentSpec` for a ref to io.k8s.api.apps.v1.DeploymentSpec ('' if inline)."""
        ref = self.schema.get("$ref", "")
        return ".".join(ref.split(".")[-2:]) if ref.startswith(_REF_PREFIX) else ""

    @property
    def go_type(self) -> str | None:
        """The Go type a JSON value must decode into, None when anything goes."""
        res = self._resolved()
        if "oneOf" in res or "x-kubernetes-int-or-string" in res:
            return None
        kinds = res.get("type")
        kinds = [kinds] if isinstance(kinds, str) else [k for k in kinds or [] if k != "null"]
        if "properties" in res or "additionalProperties" in res or kinds == ["object"]:
            return self.go_name or "map[string]interface {}"
        if kinds == ["array"]:
            item = self.items()
            return "[]" + ((item.go_type or "interface {}") if item else "interface {}")
        return (
            {
                "integer": res.get("format") or "int64",
                "number": "float64",
                "boolean": "bool",
                "string": "string",
            }.get(kinds[0])
            if len(kinds) == 1
            else None
        )

    @property
    def is_closed_object(self) -> bool:
        return "properties" in self._resolved()

    def field(self, name: str) -> Node | None:
        """The schema of property `name`; None if unknown (or the object is open)."""
        res = self._resolved()
        props = res.get("properties")
        if props is not None:
            sub = props.get(name)
            return Node(sub) if sub is not None else None
        extra = res.get("additionalProperties")
        if isinstance(extra, dict):
            return Node(extra)
        return None

    def items(self) -> Node | None:
        sub = self._resolved().get("items")
        return Node(sub) if isinstance(sub, dict) else None

    @property
    def merge_key(self) -> str | None:
        key = self._resolved().get("x-kubernetes-patch-merge-key")
        return key if isinstance(key, str) else None

    @property
    def strategies(self) -> frozenset[str]:
        raw = self._resolved().get("x-kubernetes-patch-strategy", "")
        return frozenset(part for part in str(raw).split(",") if part)


def kind_schema(*, group: str, version: str, kind: str) -> Node | None:
    name = _kind_index().get((group, version, kind))
    return Node(_definitions()[name]) if name else None


def unknown_fields(obj: Any, node: Node | None, path: str = "") -> list[str]:
    """Paths of fields the schema does not declare, formatted like kube-apiserver."""
    if node is None:
        return []
    found: list[str] = []
    if isinstance(obj, dict):
        closed = node.is_closed_object
        for key, value in obj.items():
            child_path = f"{path}.{key}" if path else key
            child = node.field(key)
            if child is None:
                if closed:
                    found.append(child_path)
                continue
            found.extend(unknown_fields(value, child, child_path))
    elif isinstance(obj, list):
        item = node.items()
        for index, value in enumerate(obj):
            found.extend(unknown_fields(value, item, f"{path}[{index}]"))
    return found


def prune_unknown(obj: Any, node: Node | None) -> Any:
    """A copy of `obj` without the fields the schema does not declare (kube drops them)."""
    if node is None:
        return obj
    if isinstance(obj, dict):
        closed = node.is_closed_object
        out = {}
        for key, value in obj.items():
            child = node.field(key)
            if child is None:
                if not closed:
                    out[key] = value
                continue
            out[key] = prune_unknown(value, child)
        return out
    if isinstance(obj, list):
        item = node.items()
        return [prune_unknown(value, item) for value in obj]
    return obj


_JSON_KINDS = (
    (bool, "bool"),
    (str, "string"),
    ((int, float), "number"),
    (dict, "object"),
    (list, "array"),
)
_ACCEPTS = {"bool": ("bool",), "string": ("string",), "number": ("int", "uint", "float")}


def _json_kind(value: Any) -> str:
    return next(name for types, name in _JSON_KINDS if isinstance(value, types))


def _fits(value: Any, go_type: str) -> bool:
    kind = _json_kind(value)
    if kind == "object":
        return not go_type.startswith("[]") and go_type not in ("string", "bool")
    if kind == "array":
        return go_type.startswith("[]")
    if kind == "number" and isinstance(value, float) and not value.is_integer():
        return go_type.startswith("float")
    return go_type.startswith(_ACCEPTS[kind])


def type_error(obj: Any, node: Node | None, path: str = "", struct: str = "") -> str | None:
    """The first value that cannot decode into its Go field, worded like encoding/json."""
    if node is None or obj is None:
        return None
    go_type = node.go_type
    if go_type is not None and not _fits(obj, go_type):
        where = f"{struct}.{path}" if struct else path
        kind = _json_kind(obj)
        return f"json: cannot unmarshal {kind} into Go struct field {where} of type {go_type}"
    if isinstance(obj, dict):
        inner = node.go_name.split(".")[-1] or struct
        for key, value in obj.items():
            found = type_error(value, node.field(key), f"{path}.{key}" if path else key, inner)
            if found:
                return found
    elif isinstance(obj, list):
        item = node.items()
        for value in obj:
            found = type_error(value, item, path, struct)
            if found:
                return found
    return None


_MICROTIME_REF = _REF_PREFIX + "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime"
_MICROTIME_LAYOUT = "2006-01-02T15:04:05.000000Z07:00"  # Go's metav1.RFC3339Micro
_MICROTIME = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(.*)$")
_MICRO_TAIL = re.compile(r"^\.(\d{6})(Z|[+-]\d{2}:\d{2})$")


def microtimes(obj: Any, node: Node | None) -> Any:
    """`obj` with every metav1.MicroTime (a Lease's acquireTime/renewTime, an Event's
    eventTime) parsed as kube-apiserver does - exactly six fraction digits, `Z` or an
    offset - and stored as kube writes it back: UTC, `...05.000000Z`. ValueError (Go's
    time.Parse message) for one that kube would reject."""
    if node is None or obj is None:
        return obj
    if node.schema.get("$ref") == _MICROTIME_REF and isinstance(obj, str):
        return _microtime(obj)
    if isinstance(obj, dict):
        return {key: microtimes(value, node.field(key)) for key, value in obj.items()}
    if isinstance(obj, list):
        item = node.items()
        return [microtimes(value, item) for value in obj]
    return obj


def _microtime(text: str) -> str:
    head = _MICROTIME.match(text)
    tail = _MICRO_TAIL.match(head.group(2)) if head else None
    if head is None or tail is None:
        rest = head.group(2) if head else text
        element = ".000000" if head else "2006"
        raise ValueError(
            f'parsing time "{text}" as "{_MICROTIME_LAYOUT}": cannot parse "{rest}" as "{element}"'
        )
    zone = "+00:00" if tail.group(2) == "Z" else tail.group(2)
    try:
        moment = dt.datetime.fromisoformat(f"{head.group(1)}.{tail.group(1)}{zone}")
    except ValueError as err:
        raise ValueError(f'parsing time "{text}": {err}') from None
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
