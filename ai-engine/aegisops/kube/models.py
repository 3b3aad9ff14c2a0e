"""What the engine reads back from the API server: small frozen dataclasses, built from
the official client's models (never handed out)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MICROTIME = "%Y-%m-%dT%H:%M:%S.%fZ"  # metav1.MicroTime: always six digits, UTC


@dataclass(frozen=True)
class ScaleInfo:
    replicas: int
    resource_version: str


@dataclass(frozen=True)
class DeploymentInfo:
    annotations: Mapping[str, str]
    resource_version: str
    replicas: int
    labels: Mapping[str, str] = field(default_factory=dict)
    ready_replicas: int = 0  # status.readyReplicas; absent (none ready) is 0
    generation: int = 0
    restarted_at: str | None = None  # the pod template's kubectl.kubernetes.io/restartedAt


@dataclass(frozen=True)
class HpaInfo:
    name: str
    min_replicas: int  # the API's default (1) when the HPA leaves it out
    max_replicas: int
    resource_version: str


@dataclass(frozen=True)
class LeaseInfo:
    """A coordination.k8s.io/v1 Lease's spec. holder "" means released (nobody holds it);
    times are timezone-aware UTC datetimes (None when absent)."""

    holder: str
    duration_seconds: int
    acquire_time: dt.datetime | None
    renew_time: dt.datetime | None
    transitions: int
    resource_version: str = ""


class MicroTime(dt.datetime):
    """A datetime the client serializes as kube's MicroTime (`2026-01-02T03:04:05.000000Z`).

    The client writes datetimes with `isoformat()`, which drops the fraction when it is
    zero (`...05+00:00`); kube-apiserver parses MicroTime with exactly six digits and would
    answer 400. The model keeps this subclass, so its `isoformat` is what goes on the wire.
    """

    def isoformat(self, sep: str = "T", timespec: str = "auto") -> str:
        return self.astimezone(dt.UTC).strftime(MICROTIME)


def microtime(value: dt.datetime | None) -> MicroTime | None:
    if value is None:
        return None
    value = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    utc = value.astimezone(dt.UTC)
    return MicroTime(
        utc.year,
        utc.month,
        utc.day,
        utc.hour,
        utc.minute,
        utc.second,
        utc.microsecond,
        tzinfo=dt.UTC,
    )


def deployment_info(deployment: Any) -> DeploymentInfo:
    metadata = deployment.metadata
    spec = deployment.spec
    status = deployment.status
    replicas = spec.replicas if spec is not None and spec.replicas is not None else 1
    ready = status.ready_replicas if status is not None and status.ready_replicas else 0
    template = spec.template if spec is not None else None
    stamps = template.metadata.annotations if template and template.metadata else None
    return DeploymentInfo(
        annotations=dict(metadata.annotations or {}) if metadata else {},
        resource_version=rv(metadata),
        replicas=int(replicas),
        labels=dict(metadata.labels or {}) if metadata else {},
        ready_replicas=int(ready),
        generation=int(metadata.generation or 0) if metadata else 0,
        restarted_at=(stamps or {}).get("kubectl.kubernetes.io/restartedAt"),
    )


def hpa_info(hpa: Any) -> HpaInfo:
    spec = hpa.spec
    minimum = spec.min_replicas if spec is not None and spec.min_replicas is not None else 1
    return HpaInfo(
        name=name_of(hpa),
        min_replicas=int(minimum),
        max_replicas=int(spec.max_replicas) if spec is not None else 0,
        resource_version=rv(hpa.metadata),
    )


def hpa_target(hpa: Any) -> str | None:
    """The Deployment an HPA scales (None: no spec, or it targets another kind)."""
    ref = hpa.spec.scale_target_ref if hpa.spec else None
    return str(ref.name) if ref is not None and ref.kind == "Deployment" else None


def lease_info(lease: Any) -> LeaseInfo:
    spec = lease.spec
    return LeaseInfo(
        holder=str(spec.holder_identity or "") if spec else "",
        duration_seconds=int(spec.lease_duration_seconds or 0) if spec else 0,
        acquire_time=_utc(spec.acquire_time) if spec else None,
        renew_time=_utc(spec.renew_time) if spec else None,
        transitions=int(spec.lease_transitions or 0) if spec else 0,
        resource_version=rv(lease.metadata),
    )


def lease_body(*, namespace: str, name: str, lease: LeaseInfo) -> dict[str, Any]:
    """The whole Lease for a create (no resourceVersion) or a replace (its precondition)."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if lease.resource_version:
        metadata["resourceVersion"] = lease.resource_version
    spec: dict[str, Any] = {
        "holderIdentity": lease.holder,
        "leaseDurationSeconds": lease.duration_seconds,
        "leaseTransitions": lease.transitions,
    }
    if lease.acquire_time is not None:
        spec["acquireTime"] = microtime(lease.acquire_time)
    if lease.renew_time is not None:
        spec["renewTime"] = microtime(lease.renew_time)
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": metadata,
        "spec": spec,
    }


def name_of(obj: Any) -> str:
    return str(obj.metadata.name) if obj.metadata is not None else ""


def replicas_of(spec: Any) -> int:
    # A Scale omits spec.replicas when it is 0.
    return int(spec.replicas) if spec is not None and spec.replicas is not None else 0


def rv(metadata: Any) -> str:
    return str(metadata.resource_version) if metadata and metadata.resource_version else ""


def _utc(value: Any) -> dt.datetime | None:
    if not isinstance(value, dt.datetime):
        return None
    return value.astimezone(dt.UTC) if value.tzinfo else value.replace(tzinfo=dt.UTC)
