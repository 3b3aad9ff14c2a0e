"""RBAC mode: Roles/ClusterRoles and their bindings (from YAML files and from the store),
evaluated like kube's RBAC authorizer, remembering which rule allowed which request."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]
ADMIN_GROUP = "system:masters"
_ROLE_KINDS = ("Role", "ClusterRole")
_BINDING_KINDS = ("RoleBinding", "ClusterRoleBinding")


class RBACFileError(ValueError):
    """A file given to the RBAC mode is unreadable or not Kubernetes YAML."""


@dataclass(frozen=True)
class RuleRef:
    """One rule of one role: `Role aegisops/aegisops-engine rule 0`."""

    kind: str  # Role | ClusterRole
    namespace: str  # "" for a ClusterRole
    name: str
    index: int

    def __str__(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {where} rule {self.index}"


@dataclass(frozen=True)
class Attributes:
    user: str
    groups: tuple[str, ...]
    verb: str
    group: str
    resource: str  # "deployments/scale" for a subresource
    namespace: str  # "" for cluster scope
    name: str


@dataclass(frozen=True)
class Decision:
    allowed: bool
    rule: RuleRef | None
    reason: str


def user_groups(user: str) -> tuple[str, ...]:
    """The groups kube's authenticator gives a user (service accounts get theirs)."""
    if user == "system:anonymous":
        return ("system:unauthenticated",)
    groups = ["system:authenticated"]
    parts = user.split(":")
    if len(parts) == 4 and parts[:2] == ["system", "serviceaccount"]:
        groups += ["system:serviceaccounts", f"system:serviceaccounts:{parts[2]}"]
    return tuple(groups)


def load_files(paths: Iterable[str | Path]) -> list[Obj]:
    """The RBAC objects in multi-document YAML files (other kinds are ignored)."""
    found: list[Obj] = []
    for path in paths:
        try:
            docs = list(yaml.safe_load_all(Path(path).read_text()))
        except OSError as exc:
            raise RBACFileError(f"cannot read RBAC file {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise RBACFileError(f"RBAC file {path} is not valid YAML: {exc}") from exc
        for doc in docs:
            if isinstance(doc, dict) and doc.get("kind") in _ROLE_KINDS + _BINDING_KINDS:
                if doc["kind"] in ("Role", "RoleBinding"):
                    doc.setdefault("metadata", {}).setdefault("namespace", "default")
                found.append(doc)
    return found


def _matches(values: list[str] | None, wanted: str) -> bool:
    return bool(values) and ("*" in (values or []) or wanted in (values or []))


def _resource_matches(resources: list[str] | None, wanted: str) -> bool:
    if not resources:
        return False
    if "*" in resources or wanted in resources:
        return True
    if "/" in wanted:
        return f"*/{wanted.split('/', 1)[1]}" in resources
    return False


def rule_allows(rule: Obj, attrs: Attributes) -> bool:
    if not _matches(rule.get("verbs"), attrs.verb):
        return False
    if not _matches(rule.get("apiGroups"), attrs.group):
        return False
    if not _resource_matches(rule.get("resources"), attrs.resource):
        return False
    names = rule.get("resourceNames") or []
    return not names or attrs.name in names


def _subject_matches(subject: Obj, attrs: Attributes, binding_ns: str) -> bool:
    kind, name = subject.get("kind"), subject.get("name")
    if kind == "User":
        return name == attrs.user
    if kind == "Group":
        return name in attrs.groups
    if kind == "ServiceAccount":
        ns = subject.get("namespace") or binding_ns
        return attrs.user == f"system:serviceaccount:{ns}:{name}"
    return False


class Authorizer:
    """`objects` returns the current RBAC objects (files + store) on each call."""

    def __init__(self, *, objects: Callable[[], list[Obj]], admins: frozenset[str]) -> None:
        self._objects = objects
        self._admins = admins

    def rules(self) -> list[RuleRef]:
        refs = []
        for obj in self._objects():
            if obj.get("kind") in _ROLE_KINDS:
                for index, _ in enumerate(obj.get("rules") or []):
                    refs.append(_ref(obj, index))
        return refs

    def decide(self, attrs: Attributes) -> Decision:
        if ADMIN_GROUP in attrs.groups or attrs.user in self._admins:
            return Decision(True, None, f"allowed: {attrs.user} is in {ADMIN_GROUP}")
        objects = self._objects()
        roles = {
            (o["kind"], _ns(o), o.get("metadata", {}).get("name")): o
            for o in objects
            if o.get("kind") in _ROLE_KINDS
        }
        for binding in objects:
            if binding.get("kind") not in _BINDING_KINDS:
                continue
            found = self._via_binding(binding, roles, attrs)
            if found is not None:
                return found
        return Decision(False, None, "")

    def _via_binding(
        self, binding: Obj, roles: dict[tuple[str, str, Any], Obj], attrs: Attributes
    ) -> Decision | None:
        binding_ns = _ns(binding) if binding["kind"] == "RoleBinding" else ""
        if binding_ns and binding_ns != attrs.namespace:
            return None
        if not any(_subject_matches(s, attrs, binding_ns) for s in binding.get("subjects") or []):
            return None
        ref = binding.get("roleRef") or {}
        role_ns = binding_ns if ref.get("kind") == "Role" else ""
        role = roles.get((ref.get("kind", ""), role_ns, ref.get("name")))
        if role is None:
            return None
        for index, rule in enumerate(role.get("rules") or []):
            if rule_allows(rule, attrs):
                where = f'"{binding_ns}/' if binding_ns else '"'
                bname = binding.get("metadata", {}).get("name")
                reason = (
                    f'RBAC: allowed by {binding["kind"]} {where}{bname}" of {ref.get("kind")}'
                    f' "{ref.get("name")}" to User "{attrs.user}"'
                )
                return Decision(True, _ref(role, index), reason)
        return None


def _ns(obj: Obj) -> str:
    return (
        (obj.get("metadata") or {}).get("namespace") or ""
        if obj.get("kind")
        in (
            "Role",
            "RoleBinding",
        )
        else ""
    )


def _ref(role: Obj, index: int) -> RuleRef:
    return RuleRef(role["kind"], _ns(role), role.get("metadata", {}).get("name", ""), index)
