"""PATCH bodies: JSON merge patch (RFC 7386), strategic merge patch (schema-driven list
merging with kubectl's directives) and JSON patch (RFC 6902, via `jsonpatch`)."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch

from sandbox.kubeapi import errors
from sandbox.kubeapi.schema import Node

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY = "application/apply-patch+yaml"
SUPPORTED = (MERGE, STRATEGIC, JSON_PATCH)

_ORDER = "$setElementOrder/"
_DELETE_PRIMITIVE = "$deleteFromPrimitiveList/"


def apply_patch(
    *, content_type: str, original: dict[str, Any], patch: Any, schema: Node | None
) -> dict[str, Any]:
    if content_type == JSON_PATCH:
        return _json_patch(original, patch)
    if not isinstance(patch, dict):
        raise errors.bad_request("patch body must be a JSON object")
    if content_type == MERGE:
        return _as_object(merge_patch(original, patch))
    return _as_object(strategic_merge(original, patch, schema))


def _as_object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise errors.bad_request("the patch must leave an object")
    return value


def _json_patch(original: dict[str, Any], patch: Any) -> dict[str, Any]:
    if not isinstance(patch, list):
        raise errors.bad_request("json patch must be a list of operations")
    try:
        result = jsonpatch.JsonPatch(patch).apply(copy.deepcopy(original))
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
        raise errors.ApiError(
            code=422,
            message=f"the server rejected our request due to an error in our request: {exc}",
        ) from exc
    except (TypeError, KeyError, ValueError) as exc:
        raise errors.bad_request(f"invalid json patch: {exc}") from exc
    return _as_object(result)


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def strategic_merge(target: Any, patch: Any, node: Node | None) -> Any:
    """Merge `patch` into `target` the way kube-apiserver merges strategic merge patches."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key.startswith("$"):
            if key.startswith(_DELETE_PRIMITIVE):
                field = key[len(_DELETE_PRIMITIVE) :]
                drop = value if isinstance(value, list) else []
                out[field] = [v for v in out.get(field) or [] if v not in drop]
            continue
        child = node.field(key) if node is not None else None
        if value is None:
            out.pop(key, None)
        elif isinstance(value, list):
            order = patch.get(_ORDER + key)
            out[key] = _merge_list(out.get(key), value, child, order)
        else:
            merged = strategic_merge(out.get(key), value, child)
            if merged is None:
                out.pop(key, None)
            else:
                out[key] = merged
    for key, order in patch.items():
        if key.startswith(_ORDER) and key[len(_ORDER) :] not in patch:
            field = key[len(_ORDER) :]
            child = node.field(field) if node is not None else None
            if isinstance(out.get(field), list):
                out[field] = _reorder(out[field], order, child.merge_key if child else None)
    if isinstance(retain, list):
        out = {k: v for k, v in out.items() if k in retain}
    return out


def _merge_list(current: Any, patch: list[Any], node: Node | None, order: Any) -> list[Any]:
    strategies = node.strategies if node is not None else frozenset()
    if "merge" not in strategies:
        return [v for v in copy.deepcopy(patch) if not _is_directive(v)]
    key = node.merge_key if node is not None else None
    base = copy.deepcopy(current) if isinstance(current, list) else []
    if key is None:  # a set of primitives
        merged = base + [v for v in patch if v not in base]
        return _reorder(merged, order, None)
    item_node = node.items() if node is not None else None
    for element in patch:
        if not isinstance(element, dict):
            continue
        wanted = element.get(key)
        index = next(
            (i for i, e in enumerate(base) if isinstance(e, dict) and e.get(key) == wanted),
            None,
        )
        if element.get("$patch") == "delete":
            if index is not None:
                base.pop(index)
            continue
        if index is None:
            base.append(strategic_merge({}, element, item_node))
        else:
            base[index] = strategic_merge(base[index], element, item_node)
    return _reorder(base, order, key)


def _is_directive(value: Any) -> bool:
    return isinstance(value, dict) and "$patch" in value


def _reorder(items: list[Any], order: Any, key: str | None) -> list[Any]:
    """Items named in `order` first, in that order; the others keep their relative order."""
    if not isinstance(order, list):
        return items

    def ident(item: Any) -> Any:
        return item.get(key) if key is not None and isinstance(item, dict) else item

    rank = {
        repr(v if key is None else v.get(key) if isinstance(v, dict) else v): i
        for i, v in enumerate(order)
    }
    indexed = list(enumerate(items))
    indexed.sort(key=lambda pair: rank.get(repr(ident(pair[1])), len(rank) + pair[0]))
    return [item for _, item in indexed]
