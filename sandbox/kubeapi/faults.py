"""Fault injection (answers a matching request with an error, latency or a dropped
connection, N times) and the request log tests assert on."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any

_ANY: Any = object()


@dataclass
class Fault:
    """Matches on the Kubernetes verb (get/list/watch/create/update/patch/delete or None for
    any), a regex searched in the URL path, and optionally the user."""

    verb: str | None
    path: re.Pattern[str]
    status: int | None = None
    times: int | None = 1  # None: forever
    retry_after: int | None = None
    latency: float | None = None
    drop: bool = False
    user: str | None = None
    fired: int = 0

    def matches(self, *, verb: str, path: str, user: str) -> bool:
        if self.times is not None and self.fired >= self.times:
            return False
        if self.verb not in (None, "*", verb):
            return False
        if self.user is not None and self.user != user:
            return False
        return self.path.search(path) is not None


class FaultSet:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, *, verb: str, path: str, user: str) -> Fault | None:
        """The first armed fault matching the request; counts it as fired."""
        with self._lock:
            for fault in self._faults:
                if fault.matches(verb=verb, path=path, user=user):
                    fault.fired += 1
                    return fault
        return None


@dataclass
class RequestEntry:
    """One request as the emulator saw and answered it."""

    seq: int
    verb: str  # get | list | watch | create | update | patch | delete | deletecollection | ""
    method: str
    path: str
    query: dict[str, str]
    group: str | None
    version: str | None
    resource: str | None
    subresource: str | None
    namespace: str | None
    name: str | None
    user: str | None
    code: int = 0
    content_type: str | None = None
    body: Any = None
    rule: Any = None  # rbac.RuleRef that allowed it (RBAC mode, non-admin users)
    fault: bool = False  # answered by an injected fault
    extra: dict[str, Any] = field(default_factory=dict)


class RequestLog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[RequestEntry] = []
        self._seq = 0

    def next_seq(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq

    def append(self, entry: RequestEntry) -> None:
        with self._lock:
            self._entries.append(entry)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def select(self, **filters: Any) -> list[RequestEntry]:
        """Entries whose attributes equal every given filter (None is a real value:
        `subresource=None` means the main resource)."""
        with self._lock:
            entries = list(self._entries)
        return [
            e
            for e in entries
            if all(value is _ANY or getattr(e, key) == value for key, value in filters.items())
        ]
