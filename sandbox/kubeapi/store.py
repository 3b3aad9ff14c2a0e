"""The object store: one global resourceVersion counter, atomic read-modify-write, and a
bounded event history that watches read from (too old a version -> 410 Expired)."""

from __future__ import annotations

import copy
import random
import threading
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sandbox.kubeapi import errors
from sandbox.kubeapi.resources import ResourceType, lookup
from sandbox.kubeapi.selectors import Matcher

Obj = dict[str, Any]
Key = tuple[str, str]  # (group, plural)


def _namespaces() -> ResourceType:
    found = lookup(group="", version="v1", plural="namespaces")
    if found is None:
        raise RuntimeError("the catalog lost core/v1 namespaces")
    return found


NAMESPACES = _namespaces()


@dataclass(frozen=True)
class WatchEvent:
    rv: int
    type: str  # ADDED | MODIFIED | DELETED
    key: Key
    namespace: str
    obj: Obj
    prev: Obj | None = None  # the object before this change (None for ADDED), as kube keeps it


def utc_now() -> datetime:
    return datetime.now(UTC)


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _strip_volatile(obj: Obj) -> Obj:
    out = copy.deepcopy(obj)
    meta = out.get("metadata") or {}
    meta.pop("resourceVersion", None)
    meta.pop("generation", None)
    return out


def _bumps_generation(rt: ResourceType, current: Obj, desired: Obj) -> bool:
    """A spec change bumps metadata.generation. apps/v1 Deployments also bump on an
    annotation change (kube's deployment strategy: annotations are copied to ReplicaSets)."""
    if desired.get("spec") != current.get("spec"):
        return True
    if (rt.group, rt.kind) != ("apps", "Deployment"):
        return False
    return (desired["metadata"].get("annotations") or {}) != (
        current["metadata"].get("annotations") or {}
    )


class Store:
    """Thread-safe. Everything returned is a deep copy the caller may change."""

    def __init__(
        self, *, history: int = 1000, seed: int = 0, now: Callable[[], datetime] = utc_now
    ) -> None:
        self.cond = threading.Condition()
        self._objects: dict[Key, dict[Key, Obj]] = {}
        self._rv = 0
        self._events: deque[WatchEvent] = deque(maxlen=max(1, history))
        self._compacted = 0  # events up to this RV are gone from history
        self._random = random.Random(seed)
        self._now = now
        self.closed = False

    # ---- reads ----

    @property
    def resource_version(self) -> int:
        with self.cond:
            return self._rv

    def get(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        with self.cond:
            found = self._bucket(rt).get((namespace, name))
            if found is None:
                raise errors.not_found(rt, name)
            return copy.deepcopy(found)

    def find(self, rt: ResourceType, namespace: str, name: str) -> Obj | None:
        with self.cond:
            found = self._bucket(rt).get((namespace, name))
            return copy.deepcopy(found) if found is not None else None

    def select(
        self, rt: ResourceType, namespace: str | None, *, match: Matcher | None = None
    ) -> tuple[list[Obj], int]:
        with self.cond:
            items = [
                copy.deepcopy(obj)
                for (ns, _), obj in sorted(self._bucket(rt).items())
                if (namespace is None or ns == namespace) and (match is None or match(obj))
            ]
            return items, self._rv

    def namespace_exists(self, name: str) -> bool:
        with self.cond:
            return ("", name) in self._bucket(NAMESPACES)

    # ---- writes ----

    def create(self, rt: ResourceType, namespace: str, obj: Obj) -> Obj:
        with self.cond:
            if rt.namespaced and not self.namespace_exists(namespace):
                raise errors.namespace_not_found(namespace)
            meta = obj.setdefault("metadata", {})
            name = meta.get("name") or ""
            if not name and meta.get("generateName"):
                name = self._generated_name(rt, namespace, meta["generateName"])
                meta["name"] = name
            if (namespace, name) in self._bucket(rt):
                raise errors.already_exists(rt, name)
            meta.update(
                uid=str(uuid.UUID(int=self._random.getrandbits(128), version=4)),
                creationTimestamp=_stamp(self._now()),
            )
            if "spec" in obj:
                meta["generation"] = 1
            return self._write(rt, namespace, name, obj, "ADDED")

    def update(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        mutate: Callable[[Obj], Obj],
        finish: Callable[[Obj], Obj] | None = None,
    ) -> Obj:
        """Atomic read-modify-write. `mutate` gets a copy of the current object and returns
        the desired one; a non-empty metadata.resourceVersion in it is a precondition."""
        with self.cond:
            current = self._bucket(rt).get((namespace, name))
            if current is None:
                raise errors.not_found(rt, name)
            desired = mutate(copy.deepcopy(current))
            meta = desired.setdefault("metadata", {})
            wanted_rv = meta.get("resourceVersion")
            if (
                wanted_rv not in (None, "")
                and str(wanted_rv) != current["metadata"]["resourceVersion"]
            ):
                raise errors.conflict(rt, name)
            old_meta = current["metadata"]
            for fixed in ("name", "namespace", "uid", "creationTimestamp"):
                if fixed in old_meta:
                    meta[fixed] = old_meta[fixed]
            if "generation" in old_meta:
                bump = _bumps_generation(rt, current, desired)
                meta["generation"] = old_meta["generation"] + (1 if bump else 0)
            if finish is not None:  # e.g. status derived from the final spec and generation
                desired = finish(desired)
            if _strip_volatile(desired) == _strip_volatile(current):
                return copy.deepcopy(current)  # a write that changes nothing keeps the RV
            return self._write(rt, namespace, name, desired, "MODIFIED", prev=current)

    def delete(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        with self.cond:
            bucket = self._bucket(rt)
            if (namespace, name) not in bucket:
                raise errors.not_found(rt, name)
            if rt is NAMESPACES:
                self._delete_contents(name)
            obj = bucket.pop((namespace, name))
            return self._record(rt, namespace, obj, "DELETED")

    # ---- watch ----

    def events_after(self, rv: int) -> list[WatchEvent]:
        """Events with RV > rv. Raises 410 Expired if history no longer reaches back."""
        with self.cond:
            if rv < self._compacted:
                raise errors.ApiError(
                    code=410,
                    reason="Expired",
                    message=f"too old resource version: {rv} ({self._compacted + 1})",
                )
            return [event for event in self._events if event.rv > rv]

    def wait_beyond(self, rv: int, timeout: float) -> None:
        """Block until something newer than `rv` is written (or timeout / close)."""
        with self.cond:
            if not self.closed and self._rv <= rv:
                self.cond.wait(timeout)

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    # ---- internals (called with the lock held) ----

    def _bucket(self, rt: ResourceType) -> dict[Key, Obj]:
        return self._objects.setdefault((rt.group, rt.plural), {})

    def _generated_name(self, rt: ResourceType, namespace: str, prefix: str) -> str:
        alphabet = "bcdfghjklmnpqrstvwxz2456789"  # kube's alphabet, no vowels
        while True:
            name = prefix[:58] + "".join(self._random.choice(alphabet) for _ in range(5))
            if (namespace, name) not in self._bucket(rt):
                return name

    def _write(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        obj: Obj,
        kind: str,
        *,
        prev: Obj | None = None,
    ) -> Obj:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        self._bucket(rt)[(namespace, name)] = obj
        self._event((rt.group, rt.plural), namespace, obj, kind, prev=prev)
        return copy.deepcopy(obj)

    def _record(self, rt: ResourceType, namespace: str, obj: Obj, kind: str) -> Obj:
        prev = copy.deepcopy(obj)
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        self._event((rt.group, rt.plural), namespace, obj, kind, prev=prev)
        return copy.deepcopy(obj)

    def _event(
        self, key: Key, namespace: str, obj: Obj, kind: str, *, prev: Obj | None = None
    ) -> None:
        if len(self._events) == self._events.maxlen:
            self._compacted = self._events[0].rv
        self._events.append(
            WatchEvent(
                self._rv,
                kind,
                key,
                namespace,
                copy.deepcopy(obj),
                copy.deepcopy(prev) if prev is not None else None,
            )
        )
        self.cond.notify_all()

    def _delete_contents(self, namespace: str) -> None:
        for (group, plural), bucket in self._objects.items():
            for ns, name in [k for k in bucket if k[0] == namespace and k[0]]:
                obj = bucket.pop((ns, name))
                prev = copy.deepcopy(obj)
                self._rv += 1
                obj["metadata"]["resourceVersion"] = str(self._rv)
                self._event((group, plural), ns, obj, "DELETED", prev=prev)
