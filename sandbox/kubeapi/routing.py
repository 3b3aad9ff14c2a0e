"""URL -> request attributes, like kube-apiserver's RequestInfoFactory."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from sandbox.kubeapi.resources import ResourceType, lookup

_METHOD_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch"}


@dataclass(frozen=True)
class RequestInfo:
    method: str
    path: str
    query: dict[str, str]
    is_resource: bool
    verb: str  # kube verb for resource requests, lower-case HTTP method otherwise
    group: str | None = None
    version: str | None = None
    plural: str | None = None
    subresource: str | None = None
    namespace: str | None = None
    name: str | None = None
    rt: ResourceType | None = None

    @property
    def rbac_resource(self) -> str:
        return f"{self.plural}/{self.subresource}" if self.subresource else self.plural or ""


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true")


def parse(method: str, target: str) -> RequestInfo:
    split = urlsplit(target)
    path = split.path.rstrip("/") or "/"
    query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
    parts = [p for p in path.split("/") if p]
    plain = RequestInfo(method, path, query, False, method.lower())
    if len(parts) >= 3 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 4 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return plain
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in ("status", "finalize"):
        namespace, rest = rest[1], rest[2:]
    plural = rest[0]
    name = rest[1] if len(rest) > 1 else None
    subresource = rest[2] if len(rest) > 2 else None
    if plural == "namespaces" and name:
        namespace = name
    if len(rest) > 3:
        return plain
    if method == "GET":
        verb = "get" if name else ("watch" if _truthy(query.get("watch")) else "list")
    elif method == "DELETE":
        verb = "delete" if name else "deletecollection"
    else:
        verb = _METHOD_VERBS.get(method, method.lower())
    return RequestInfo(
        method=method,
        path=path,
        query=query,
        is_resource=True,
        verb=verb,
        group=group,
        version=version,
        plural=plural,
        subresource=subresource,
        namespace=namespace,
        name=name,
        rt=lookup(group=group, version=version, plural=plural),
    )
