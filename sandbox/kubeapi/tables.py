"""`meta.k8s.io/v1` Table responses, which `kubectl get` asks for (Accept: ...;as=Table)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sandbox.kubeapi.resources import ResourceType

Obj = dict[str, Any]


def wants_table(accept: str) -> bool:
    return "as=Table" in accept


def _age(stamp: str | None, now: datetime) -> str:
    if not stamp:
        return "<unknown>"
    created = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    seconds = max(0, int((now - created).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def _column(name: str, kind: str = "string", priority: int = 0) -> Obj:
    return {
        "name": name,
        "type": kind,
        "format": "name" if name == "Name" else "",
        "description": name,
        "priority": priority,
    }


def _columns(rt: ResourceType) -> list[Obj]:
    if rt.kind == "Deployment":
        return [
            _column("Name"),
            _column("Ready"),
            _column("Up-to-date", "integer"),
            _column("Available", "integer"),
            _column("Age"),
            _column("Containers", priority=1),
            _column("Images", priority=1),
            _column("Selector", priority=1),
        ]
    if rt.kind == "Namespace":
        return [_column("Name"), _column("Status"), _column("Age")]
    return [_column("Name"), _column("Age")]


def _cells(rt: ResourceType, obj: Obj, now: datetime) -> list[Any]:
    meta = obj.get("metadata") or {}
    age = _age(meta.get("creationTimestamp"), now)
    if rt.kind == "Deployment":
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
        labels = (spec.get("selector") or {}).get("matchLabels") or {}
        return [
            meta.get("name"),
            f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 0)}",
            status.get("updatedReplicas", 0),
            status.get("availableReplicas", 0),
            age,
            ",".join(c.get("name", "") for c in containers),
            ",".join(c.get("image", "") for c in containers),
            ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
        ]
    if rt.kind == "Namespace":
        return [meta.get("name"), (obj.get("status") or {}).get("phase", ""), age]
    return [meta.get("name"), age]


def _row(rt: ResourceType, obj: Obj, now: datetime) -> Obj:
    partial = {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata") or {},
    }
    return {"cells": _cells(rt, obj, now), "object": partial}


def table(rt: ResourceType, items: list[Obj], *, resource_version: str, now: datetime) -> Obj:
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": _columns(rt),
        "rows": [_row(rt, obj, now) for obj in items],
    }
