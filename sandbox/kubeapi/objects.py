"""Per-kind rules: defaulting, validation (422), the status/scale subresources."""

from __future__ import annotations

import base64
import copy
import re
from typing import Any

from sandbox.kubeapi import errors
from sandbox.kubeapi.resources import ResourceType
from sandbox.kubeapi.selectors import label_matcher, selector_string

Obj = dict[str, Any]
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1123_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters,"
    " '-' or '.', and must start and end with an alphanumeric character"
)


def prepare_new(rt: ResourceType, namespace: str, body: Obj) -> Obj:
    """The object as stored on create: identity fields set, server defaults applied."""
    obj = copy.deepcopy(body)
    obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
    meta = obj.setdefault("metadata", {})
    for server_owned in ("uid", "resourceVersion", "creationTimestamp", "generation"):
        meta.pop(server_owned, None)
    if rt.namespaced:
        meta["namespace"] = namespace
    else:
        meta.pop("namespace", None)
    if rt.kind == "Namespace":
        name = meta.get("name") or ""
        meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = name
        obj.setdefault("spec", {"finalizers": ["kubernetes"]})
        obj["status"] = {"phase": "Active"}
    if rt.kind == "Deployment":
        _default_deployment(obj)
    if rt.kind == "HorizontalPodAutoscaler":
        _default_hpa(obj)
    return fold_string_data(rt, obj)


def fold_string_data(rt: ResourceType, obj: Obj) -> Obj:
    """A Secret's write-only `stringData` is merged into `data` (base64), as kube does."""
    if rt.kind == "Secret" and isinstance(obj.get("stringData"), dict):
        data = obj.setdefault("data", {}) or {}
        for key, value in obj.pop("stringData").items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        obj["data"] = data
    return obj


def _default_deployment(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    spec.setdefault(
        "strategy",
        {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
    )
    obj.setdefault("status", {})


def _default_hpa(obj: Obj) -> None:
    """autoscaling/v2 defaulting, run by kube on every write: minReplicas 1 when absent."""
    spec = obj.get("spec")
    if isinstance(spec, dict) and spec.get("minReplicas") is None:
        spec["minReplicas"] = 1


def validate(rt: ResourceType, obj: Obj) -> None:
    """Raise 422 Invalid, like kube's validation, for what the emulator checks."""
    meta = obj.get("metadata") or {}
    name = meta.get("name") or ""
    causes: list[tuple[str, str, str]] = []
    if not name:
        causes.append(
            (
                "metadata.name",
                "FieldValueRequired",
                "Required value: name or generateName is required",
            )
        )
    elif len(name) > 253 or not _DNS1123.match(name):
        causes.append(
            ("metadata.name", "FieldValueInvalid", f'Invalid value: "{name}": {_DNS1123_MSG}')
        )
    if rt.kind == "Deployment":
        causes.extend(_deployment_causes(obj))
    if causes:
        raise errors.invalid(rt, name, causes)


def _deployment_causes(obj: Obj) -> list[tuple[str, str, str]]:
    spec = obj.get("spec") or {}
    causes: list[tuple[str, str, str]] = []
    replicas = spec.get("replicas")
    if isinstance(replicas, int) and replicas < 0:
        causes.append(
            (
                "spec.replicas",
                "FieldValueInvalid",
                f"Invalid value: {replicas}: must be greater than or equal to 0",
            )
        )
    selector = spec.get("selector")
    if not selector:
        causes.append(("spec.selector", "FieldValueRequired", "Required value"))
        return causes
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    if not label_matcher(selector_string(selector))({"metadata": {"labels": labels}}):
        causes.append(
            (
                "spec.template.metadata.labels",
                "FieldValueInvalid",
                f"Invalid value: {_go_map(labels)}: `selector` does not match template `labels`",
            )
        )
    return causes


def _go_map(labels: dict[str, Any]) -> str:
    return "map[string]string{" + ", ".join(f'"{k}":"{v}"' for k, v in sorted(labels.items())) + "}"


def merge_main(rt: ResourceType, current: Obj, desired: Obj) -> Obj:
    """An update of the main resource: status is owned by the status subresource."""
    out = copy.deepcopy(desired)
    out["apiVersion"], out["kind"] = rt.api_version, rt.kind
    if rt.has_status:
        if "status" in current:
            out["status"] = copy.deepcopy(current["status"])
        else:
            out.pop("status", None)
    if rt.kind == "Namespace":
        out["status"] = copy.deepcopy(current.get("status", {}))
    if rt.kind == "HorizontalPodAutoscaler":
        _default_hpa(out)
    return fold_string_data(rt, out)


def merge_status(current: Obj, desired: Obj) -> Obj:
    """An update through `/status`: only status changes (and the RV precondition counts)."""
    out = copy.deepcopy(current)
    out["status"] = copy.deepcopy(desired.get("status") or {})
    wanted_rv = (desired.get("metadata") or {}).get("resourceVersion")
    out["metadata"]["resourceVersion"] = wanted_rv or current["metadata"]["resourceVersion"]
    return out


def auto_status(obj: Obj) -> Obj:
    """Status that follows spec at once (for tests without the process-backed kubelet)."""
    replicas = (obj.get("spec") or {}).get("replicas", 1)
    status = obj.setdefault("status", {})
    status.update(
        observedGeneration=obj["metadata"].get("generation", 1),
        replicas=replicas,
        updatedReplicas=replicas,
        readyReplicas=replicas,
        availableReplicas=replicas,
    )
    for key in ("readyReplicas", "availableReplicas", "updatedReplicas"):
        if not replicas:
            status.pop(key, None)  # kube omits zero counts
    return obj


def to_scale(deploy: Obj) -> Obj:
    """The autoscaling/v1 Scale view of a Deployment (spec.replicas omitted when 0)."""
    meta = deploy["metadata"]
    replicas = (deploy.get("spec") or {}).get("replicas") or 0
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            key: meta[key]
            for key in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if key in meta
        },
        "spec": {"replicas": replicas} if replicas else {},
        "status": {
            "replicas": (deploy.get("status") or {}).get("replicas") or 0,
            "selector": selector_string((deploy.get("spec") or {}).get("selector")),
        },
    }


def from_scale(rt: ResourceType, current: Obj, scale: Obj) -> Obj:
    """Apply a (possibly patched) Scale to the Deployment it views."""
    name = current["metadata"]["name"]
    if not isinstance(scale, dict) or scale.get("kind", "Scale") != "Scale":
        raise errors.bad_request("the body of the request must be an autoscaling/v1 Scale")
    meta = scale.get("metadata") or {}
    if meta.get("name") not in (None, "", name):
        raise errors.name_mismatch(meta.get("name"), name)
    replicas = (scale.get("spec") or {}).get("replicas", 0)
    if not isinstance(replicas, int) or isinstance(replicas, bool):
        raise errors.bad_request(f"spec.replicas: expected an integer, got {replicas!r}")
    if replicas < 0:
        raise errors.ApiError(
            code=422,
            message=(
                f'Scale.autoscaling "{name}" is invalid: spec.replicas: Invalid value: '
                f"{replicas}: must be greater than or equal to 0"
            ),
            details={
                "name": name,
                "group": "autoscaling",
                "kind": "Scale",
                "causes": [
                    {
                        "reason": "FieldValueInvalid",
                        "field": "spec.replicas",
                        "message": f"Invalid value: {replicas}: must be greater than or equal to 0",
                    }
                ],
            },
        )
    out = copy.deepcopy(current)
    out.setdefault("spec", {})["replicas"] = replicas
    out["metadata"]["resourceVersion"] = meta.get("resourceVersion") or ""
    return out
