"""The Kubernetes edge: the only module that imports `kubernetes`.

What the engine reads and writes (docs/design.md), nothing else:

- GET   deployments/{name}/scale            -> `get_scale`
- GET   deployments/{name}                  -> `get_deployment` (annotations, resourceVersion)
- PATCH deployments/{name}                  -> `patch_annotations` (merge patch, with
  `metadata.resourceVersion` as a precondition: a stale version is a `Conflict`)
- PATCH deployments/{name}/scale            -> `patch_scale`, body exactly
  `{"spec": {"replicas": N}}` (merge patch)
- LIST  autoscaling/v2 horizontalpodautoscalers -> `hpa_targets`
- POST  selfsubjectaccessreviews            -> `can_i` (only for `aegisops check`)

The scale PATCH carries no resourceVersion on purpose: the Deployment's version moves
whenever its status changes (every rollout, every pod becoming ready), so a precondition
there would fail for reasons that have nothing to do with a competing writer. The claim
on the action is the annotation write just before it, which does carry the precondition:
two engines (or an engine and a stale copy of itself) cannot both record the same action.

The client has its own `ApiClient` (the library's global default is never touched), a
timeout on every call, and no hidden retries: urllib3 would otherwise repeat a GET that
was answered 429/503 with `Retry-After`, so one pass could stall for many seconds.
Errors are mapped by HTTP status and the Kubernetes `reason`, never by message text.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.config.incluster_config import InClusterConfigLoader
from kubernetes.config.kube_config import load_kube_config

if TYPE_CHECKING:
    from collections.abc import Callable

    from aegisops.config import KubernetesConfig

T = TypeVar("T")
MERGE_PATCH = "application/merge-patch+json"


class KubeError(Exception):
    """A Kubernetes call failed; the message says which call and why."""


class Conflict(KubeError):
    """409: the object changed since we read it (stale resourceVersion)."""


class Forbidden(KubeError):
    """401/403: the service account may not do this (RBAC) or is not authenticated."""


class NotFound(KubeError):
    """404: the Deployment (or namespace) does not exist."""


class KubeUnavailable(KubeError):
    """The API server could not be reached, timed out, or answered 429/5xx."""


class KubeAuthError(KubeError):
    """No usable credentials: neither in-cluster nor a kubeconfig could be loaded."""


@dataclass(frozen=True)
class ScaleInfo:
    replicas: int
    resource_version: str


@dataclass(frozen=True)
class DeploymentInfo:
    annotations: Mapping[str, str]
    resource_version: str
    replicas: int


@dataclass(frozen=True)
class Auth:
    """How the client authenticated: `incluster` or `kubeconfig`, and against which host."""

    mode: str
    host: str
    source: str


def build_configuration(
    *, config: KubernetesConfig, environ: Mapping[str, str]
) -> tuple[client.Configuration, Auth]:
    """A fresh client Configuration: in-cluster first (mode auto), kubeconfig as the fallback."""
    errors = []
    if config.mode in ("auto", "incluster"):
        try:
            return _incluster(config=config, environ=environ)
        except ConfigException as err:
            if config.mode == "incluster":
                raise KubeAuthError(f"in-cluster credentials unusable: {err}") from None
            errors.append(f"in-cluster: {err}")
    try:
        return _kubeconfig(config=config, environ=environ)
    except (ConfigException, OSError) as err:
        errors.append(f"kubeconfig: {err}")
    raise KubeAuthError("no Kubernetes credentials (" + "; ".join(errors) + ")")


def _incluster(
    *, config: KubernetesConfig, environ: Mapping[str, str]
) -> tuple[client.Configuration, Auth]:
    sa_dir = Path(config.serviceaccount_dir)
    configuration = client.Configuration()
    loader = InClusterConfigLoader(
        token_filename=str(sa_dir / "token"),
        cert_filename=str(sa_dir / "ca.crt"),
        environ=dict(environ),
    )
    loader.load_and_set(configuration)
    return configuration, Auth(mode="incluster", host=configuration.host, source=str(sa_dir))


def _kubeconfig(
    *, config: KubernetesConfig, environ: Mapping[str, str]
) -> tuple[client.Configuration, Auth]:
    path = config.kubeconfig or environ.get("KUBECONFIG") or str(Path("~/.kube/config"))
    path = os.path.expanduser(path)
    configuration = client.Configuration()
    load_kube_config(config_file=path, client_configuration=configuration, persist_config=False)
    return configuration, Auth(mode="kubeconfig", host=configuration.host, source=path)


class KubeClient:
    """Typed, timed calls for exactly what the engine does to a cluster."""

    def __init__(self, *, config: KubernetesConfig, environ: Mapping[str, str]) -> None:
        configuration, self.auth = build_configuration(config=config, environ=environ)
        configuration.retries = False  # no urllib3 retries, not even on Retry-After
        configuration.client_go_retries = False
        self._timeout = float(config.timeout_seconds)
        self._api = client.ApiClient(configuration)
        self._apps = client.AppsV1Api(self._api)
        self._autoscaling = client.AutoscalingV2Api(self._api)
        self._authz = client.AuthorizationV1Api(self._api)

    def close(self) -> None:
        self._api.close()

    def __enter__(self) -> KubeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get_scale(self, *, namespace: str, name: str) -> ScaleInfo:
        scale = self._call(
            f"get deployments/scale {namespace}/{name}",
            lambda: self._apps.read_namespaced_deployment_scale(
                name, namespace, _request_timeout=self._timeout
            ),
        )
        return ScaleInfo(replicas=_replicas(scale.spec), resource_version=_rv(scale.metadata))

    def get_deployment(self, *, namespace: str, name: str) -> DeploymentInfo:
        deployment = self._call(
            f"get deployments {namespace}/{name}",
            lambda: self._apps.read_namespaced_deployment(
                name, namespace, _request_timeout=self._timeout
            ),
        )
        return _deployment_info(deployment)

    def patch_annotations(
        self,
        *,
        namespace: str,
        name: str,
        annotations: Mapping[str, str | None],
        resource_version: str,
    ) -> DeploymentInfo:
        """Merge-patch annotations (None deletes one), only if the object is still at
        `resource_version`; otherwise `Conflict`."""
        body = {"metadata": {"resourceVersion": resource_version, "annotations": dict(annotations)}}
        deployment = self._call(
            f"patch deployments {namespace}/{name}",
            lambda: self._apps.patch_namespaced_deployment(
                name,
                namespace,
                body,
                _content_type=MERGE_PATCH,
                _request_timeout=self._timeout,
            ),
        )
        return _deployment_info(deployment)

    def patch_scale(self, *, namespace: str, name: str, replicas: int) -> ScaleInfo:
        """Set the replica count: merge patch `{"spec": {"replicas": N}}` on the subresource."""
        body = {"spec": {"replicas": int(replicas)}}
        scale = self._call(
            f"patch deployments/scale {namespace}/{name}",
            lambda: self._apps.patch_namespaced_deployment_scale(
                name,
                namespace,
                body,
                _content_type=MERGE_PATCH,
                _request_timeout=self._timeout,
            ),
        )
        return ScaleInfo(replicas=_replicas(scale.spec), resource_version=_rv(scale.metadata))

    def hpa_targets(self, *, namespace: str) -> set[str]:
        """Names of the Deployments in `namespace` that a HorizontalPodAutoscaler scales."""
        hpas = self._call(
            f"list horizontalpodautoscalers {namespace}",
            lambda: self._autoscaling.list_namespaced_horizontal_pod_autoscaler(
                namespace, _request_timeout=self._timeout
            ),
        )
        targets = set()
        for hpa in hpas.items or []:
            ref = hpa.spec.scale_target_ref if hpa.spec else None
            if ref is not None and ref.kind == "Deployment":
                targets.add(ref.name)
        return targets

    def can_i(
        self, *, verb: str, group: str, resource: str, subresource: str = "", namespace: str
    ) -> bool:
        """SelfSubjectAccessReview: may this identity do `verb` on the resource?"""
        review = client.V1SelfSubjectAccessReview(
            spec=client.V1SelfSubjectAccessReviewSpec(
                resource_attributes=client.V1ResourceAttributes(
                    verb=verb,
                    group=group,
                    resource=resource,
                    subresource=subresource or None,
                    namespace=namespace,
                )
            )
        )
        answer = self._call(
            f"create selfsubjectaccessreviews ({verb} {resource})",
            lambda: self._authz.create_self_subject_access_review(
                review, _request_timeout=self._timeout
            ),
        )
        return bool(answer.status and answer.status.allowed)

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except ApiException as err:
            raise map_api_error(what=what, status=err.status, body=err.body) from None
        except urllib3.exceptions.HTTPError as err:
            raise KubeUnavailable(f"{what}: API server unreachable: {_short(err)}") from None


def map_api_error(*, what: str, status: int | None, body: str | bytes | None) -> KubeError:
    """Turn an HTTP status + Kubernetes Status body into our exception, with a clear message."""
    reason, message = _status_fields(body)
    detail = f"{what}: {status} {reason or 'error'}" + (f": {message}" if message else "")
    code = status or 0
    if code == 409 and reason in ("Conflict", ""):
        return Conflict(detail + " (the object changed since it was read)")
    if code in (401, 403):
        return Forbidden(detail)
    if code == 404:
        return NotFound(detail)
    if code == 0 or code == 429 or code >= 500:
        return KubeUnavailable(detail)
    return KubeError(detail)


def _status_fields(body: str | bytes | None) -> tuple[str, str]:
    if not body:
        return "", ""
    try:
        status: Any = json.loads(body)
    except ValueError:
        text = body.decode(errors="replace") if isinstance(body, bytes) else body
        return "", text.strip()[:200]
    if not isinstance(status, dict):
        return "", ""
    return str(status.get("reason") or ""), str(status.get("message") or "")


def _deployment_info(deployment: Any) -> DeploymentInfo:
    metadata = deployment.metadata
    spec = deployment.spec
    replicas = spec.replicas if spec is not None and spec.replicas is not None else 1
    return DeploymentInfo(
        annotations=dict(metadata.annotations or {}) if metadata else {},
        resource_version=_rv(metadata),
        replicas=int(replicas),
    )


def _replicas(spec: Any) -> int:
    # A Scale omits spec.replicas when it is 0.
    return int(spec.replicas) if spec is not None and spec.replicas is not None else 0


def _rv(metadata: Any) -> str:
    return str(metadata.resource_version) if metadata and metadata.resource_version else ""


def _short(err: Exception) -> str:
    text = str(err)
    return text if len(text) <= 200 else text[:200] + "..."
