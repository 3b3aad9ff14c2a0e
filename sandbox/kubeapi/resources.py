"""The resource types the emulator serves, and the discovery/OpenAPI documents built from them."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
SERVER_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0-aegisops-emulator",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.23.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    custom: bool = False  # a CRD: schemaless, no strategic merge patch
    categories: tuple[str, ...] = ()  # `kubectl get all` uses the "all" category

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_resource(self) -> str:
        """`deployments.apps`, or `pods` for the core group (as in kube's messages)."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources


def _rt(group: str, version: str, plural: str, kind: str, **kw: Any) -> ResourceType:
    return ResourceType(group=group, version=version, plural=plural, kind=kind, **kw)


_ALL = ("all",)
CATALOG: tuple[ResourceType, ...] = (
    _rt("", "v1", "namespaces", "Namespace", namespaced=False, short_names=("ns",)),
    _rt("", "v1", "configmaps", "ConfigMap", short_names=("cm",)),
    _rt("", "v1", "secrets", "Secret"),
    _rt("", "v1", "serviceaccounts", "ServiceAccount", short_names=("sa",)),
    _rt(
        "",
        "v1",
        "services",
        "Service",
        short_names=("svc",),
        subresources=("status",),
        categories=_ALL,
    ),
    _rt("", "v1", "pods", "Pod", short_names=("po",), subresources=("status",), categories=_ALL),
    _rt("", "v1", "events", "Event", short_names=("ev",)),
    _rt(
        "apps",
        "v1",
        "deployments",
        "Deployment",
        short_names=("deploy",),
        subresources=("scale", "status"),
        categories=_ALL,
    ),
    _rt(
        "autoscaling",
        "v2",
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
        short_names=("hpa",),
        subresources=("status",),
        categories=_ALL,
    ),
    _rt("batch", "v1", "jobs", "Job", subresources=("status",), categories=_ALL),
    _rt("coordination.k8s.io", "v1", "leases", "Lease"),
    _rt("events.k8s.io", "v1", "events", "Event", short_names=("ev",)),
    _rt("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", short_names=("netpol",)),
    _rt("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", short_names=("pdb",)),
    _rt("rbac.authorization.k8s.io", "v1", "roles", "Role"),
    _rt("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
    _rt("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", namespaced=False),
    _rt(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
        namespaced=False,
    ),
    _rt(
        "authorization.k8s.io",
        "v1",
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
        namespaced=False,
        verbs=("create",),
    ),
    _rt("monitoring.coreos.com", "v1", "servicemonitors", "ServiceMonitor", custom=True),
    _rt("monitoring.coreos.com", "v1", "prometheusrules", "PrometheusRule", custom=True),
)

_BY_PATH = {(rt.group, rt.version, rt.plural): rt for rt in CATALOG}
_BY_KIND = {(rt.group, rt.version, rt.kind): rt for rt in CATALOG}
_SUBRESOURCE_KIND = {"scale": ("autoscaling", "v1", "Scale")}


def lookup(*, group: str, version: str, plural: str) -> ResourceType | None:
    return _BY_PATH.get((group, version, plural))


def lookup_kind(*, api_version: str, kind: str) -> ResourceType | None:
    group, _, version = api_version.rpartition("/")
    return _BY_KIND.get((group, version, kind))


def resource_named(name: str) -> ResourceType | None:
    """By plural, singular, kind or short name (first match, core group first)."""
    low = name.lower()
    for rt in CATALOG:
        if low in (rt.plural, rt.singular, *rt.short_names):
            return rt
    return None


def group_versions() -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for rt in CATALOG:
        versions = groups.setdefault(rt.group, [])
        if rt.version not in versions:
            versions.append(rt.version)
    return groups


# ---- discovery documents (legacy, non-aggregated; clients fall back to them) ----


def api_versions() -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    }


def api_group(group: str) -> dict[str, Any] | None:
    versions = group_versions().get(group)
    if not group or versions is None:
        return None
    entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": entries,
        "preferredVersion": entries[0],
    }


def api_group_list() -> dict[str, Any]:
    groups = [api_group(g) for g in group_versions() if g]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_resource_list(*, group: str, version: str) -> dict[str, Any] | None:
    members = [rt for rt in CATALOG if rt.group == group and rt.version == version]
    if not members:
        return None
    listed: list[dict[str, Any]] = []
    for rt in members:
        entry: dict[str, Any] = {
            "name": rt.plural,
            "singularName": rt.singular,
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": list(rt.verbs),
        }
        if rt.short_names:
            entry["shortNames"] = list(rt.short_names)
        if rt.categories:
            entry["categories"] = list(rt.categories)
        listed.append(entry)
        for sub in rt.subresources:
            sub_entry: dict[str, Any] = {
                "name": f"{rt.plural}/{sub}",
                "singularName": "",
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "verbs": ["get", "patch", "update"],
            }
            if sub in _SUBRESOURCE_KIND:
                g, v, k = _SUBRESOURCE_KIND[sub]
                sub_entry.update(group=g, version=v, kind=k)
            listed.append(sub_entry)
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": listed}


# ---- OpenAPI v3: just enough for kubectl to see that the server validates fields ----
#
# kubectl (QueryParamVerifierV3) looks, per GVK, for a PATCH operation tagged with
# x-kubernetes-group-version-kind whose path lists the `fieldValidation` parameter.
# No component schemas are served: kubectl then computes strategic merge patches from
# its built-in types (and JSON merge patches for CRDs), as it does against old servers.


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def openapi_v3_gv(*, group: str, version: str) -> dict[str, Any] | None:
    members = [rt for rt in CATALOG if rt.group == group and rt.version == version]
    if not members:
        return None
    params = [
        {"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
        for name in ("dryRun", "fieldManager", "fieldValidation", "pretty")
    ]
    paths: dict[str, Any] = {}
    for rt in members:
        ns = "namespaces/{namespace}/" if rt.namespaced else ""
        gvk = {"group": rt.group, "version": rt.version, "kind": rt.kind}
        op_base = {"x-kubernetes-group-version-kind": gvk, "responses": {}, "parameters": params}
        base = f"/{_gv_path(group, version)}/{ns}{rt.plural}"
        paths[f"{base}/{{name}}"] = {
            "patch": {**op_base, "operationId": f"patch{rt.kind}", "x-kubernetes-action": "patch"},
            "put": {**op_base, "operationId": f"replace{rt.kind}", "x-kubernetes-action": "put"},
        }
        paths[base] = {
            "post": {**op_base, "operationId": f"create{rt.kind}", "x-kubernetes-action": "post"},
        }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (AegisOps emulator)", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": {}},
    }


def openapi_v3_root() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for group, versions in group_versions().items():
        for version in versions:
            doc = json.dumps(openapi_v3_gv(group=group, version=version), sort_keys=True)
            digest = hashlib.sha256(doc.encode()).hexdigest()[:32].upper()
            rel = _gv_path(group, version)
            out[rel] = {"serverRelativeURL": f"/openapi/v3/{rel}?hash={digest}"}
    return {"paths": out}
