"""Our exceptions for Kubernetes calls, mapped by HTTP status and the Kubernetes `reason`
(never by message text). A `Forbidden` names the permission that was missing; a
`KubeUnavailable` carries the server's `Retry-After`, when it sent one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class KubeError(Exception):
    """A Kubernetes call failed; the message says which call and why."""


class Conflict(KubeError):
    """409: the object changed since we read it (stale resourceVersion), or already exists."""


class Forbidden(KubeError):
    """401/403: the service account may not do this (RBAC) or is not authenticated.

    `permission` names what was refused, e.g. "patch deployments/scale in apps, namespace shop".
    """

    def __init__(self, message: str, *, permission: str = "") -> None:
        super().__init__(message)
        self.permission = permission


class NotFound(KubeError):
    """404: the object (or its namespace) does not exist."""


class KubeUnavailable(KubeError):
    """The API server could not be reached, timed out, or answered 429/5xx.

    `retry_after`: seconds from the answer's Retry-After header (None: none sent).
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class KubeAuthError(KubeError):
    """No usable credentials: neither in-cluster nor a kubeconfig could be loaded."""


@dataclass(frozen=True)
class Op:
    """One call: the RBAC verb, resource, subresource, API group, namespace and object name."""

    verb: str
    resource: str
    group: str
    namespace: str = ""
    name: str = ""
    subresource: str = ""

    @property
    def what(self) -> str:
        """`patch deployments/scale shop/web`: how log lines and messages name the call."""
        target = "/".join(p for p in (self.namespace, self.name) if p)
        return f"{self.verb} {self.full_resource}" + (f" {target}" if target else "")

    @property
    def full_resource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource

    @property
    def permission(self) -> str:
        """`patch deployments/scale in apps, namespace shop` (core group: `in core`)."""
        text = f"{self.verb} {self.full_resource} in {self.group or 'core'}"
        return text + (f", namespace {self.namespace}" if self.namespace else "")


def map_api_error(
    *,
    what: str,
    status: int | None,
    body: str | bytes | None,
    headers: Mapping[str, str] | None = None,
    permission: str = "",
) -> KubeError:
    """Turn an HTTP status + Kubernetes Status body into our exception, with a clear message."""
    reason, message, details = _status_fields(body)
    detail = f"{what}: {status} {reason or 'error'}" + (f": {message}" if message else "")
    code = status or 0
    if code == 409 and reason in ("Conflict", ""):
        return Conflict(detail + " (the object changed since it was read)")
    if code == 409 and reason == "AlreadyExists":
        return Conflict(detail)
    if code in (401, 403):
        missing = f" (missing permission: {permission})" if permission and code == 403 else ""
        return Forbidden(detail + missing, permission=permission)
    if code == 404:
        return NotFound(detail)
    if code == 0 or code == 429 or code >= 500:
        return KubeUnavailable(detail, retry_after=_retry_after(headers, details))
    return KubeError(detail)


def _retry_after(headers: Mapping[str, str] | None, details: Mapping[str, Any]) -> float | None:
    """Seconds to wait: the Retry-After header (kube sends whole seconds), else the Status
    details' retryAfterSeconds; None when neither is a non-negative number."""
    candidates = [
        (headers or {}).get("Retry-After") or (headers or {}).get("retry-after"),
        details.get("retryAfterSeconds"),
    ]
    for value in candidates:
        try:
            seconds = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        if seconds >= 0:
            return seconds
    return None


def _status_fields(body: str | bytes | None) -> tuple[str, str, Mapping[str, Any]]:
    if not body:
        return "", "", {}
    try:
        status: Any = json.loads(body)
    except ValueError:
        text = body.decode(errors="replace") if isinstance(body, bytes) else body
        return "", text.strip()[:200], {}
    if not isinstance(status, dict):
        return "", "", {}
    details = status.get("details")
    return (
        str(status.get("reason") or ""),
        str(status.get("message") or ""),
        details if isinstance(details, dict) else {},
    )
