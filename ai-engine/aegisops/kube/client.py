"""`KubeClient`: typed, timed calls for exactly what the engine does to a cluster."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from aegisops.kube.auth import build_configuration
from aegisops.kube.errors import KubeUnavailable, Op, map_api_error
from aegisops.kube.models import (
    DeploymentInfo,
    HpaInfo,
    LeaseInfo,
    ScaleInfo,
    deployment_info,
    hpa_info,
    hpa_target,
    lease_body,
    lease_info,
    name_of,
    replicas_of,
    rv,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from aegisops.config import KubernetesConfig

T = TypeVar("T")
MERGE_PATCH = "application/merge-patch+json"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
APPS, AUTOSCALING, COORDINATION = "apps", "autoscaling", "coordination.k8s.io"


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
        self._coordination = client.CoordinationV1Api(self._api)
        self._authz = client.AuthorizationV1Api(self._api)

    def close(self) -> None:
        self._api.close()

    def __enter__(self) -> KubeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- Deployments -----------------------------------------------------------------

    def get_scale(self, *, namespace: str, name: str) -> ScaleInfo:
        op = Op("get", "deployments", APPS, namespace, name, "scale")
        scale = self._call(
            op, lambda: self._apps.read_namespaced_deployment_scale(name, namespace, **self._t)
        )
        return ScaleInfo(replicas=replicas_of(scale.spec), resource_version=rv(scale.metadata))

    def get_deployment(self, *, namespace: str, name: str) -> DeploymentInfo:
        op = Op("get", "deployments", APPS, namespace, name)
        deployment = self._call(
            op, lambda: self._apps.read_namespaced_deployment(name, namespace, **self._t)
        )
        return deployment_info(deployment)

    def list_deployments(self, *, namespace: str, label_selector: str) -> dict[str, DeploymentInfo]:
        """The Deployments in `namespace` matching `label_selector`, by name (discovery)."""
        op = Op("list", "deployments", APPS, namespace)
        listed = self._call(
            op,
            lambda: self._apps.list_namespaced_deployment(
                namespace, label_selector=label_selector, **self._t
            ),
        )
        return {name_of(d): deployment_info(d) for d in listed.items or []}

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
        return self._patch_deployment(namespace=namespace, name=name, body=body)

    def restart(self, *, namespace: str, name: str, at: str) -> DeploymentInfo:
        """What `kubectl rollout restart` does: stamp the pod template with `at` (RFC 3339)."""
        body = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: at}}}}}
        return self._patch_deployment(namespace=namespace, name=name, body=body)

    def patch_scale(self, *, namespace: str, name: str, replicas: int) -> ScaleInfo:
        """Set the replica count: merge patch `{"spec": {"replicas": N}}` on the subresource."""
        body = {"spec": {"replicas": int(replicas)}}
        op = Op("patch", "deployments", APPS, namespace, name, "scale")
        scale = self._call(
            op,
            lambda: self._apps.patch_namespaced_deployment_scale(
                name, namespace, body, _content_type=MERGE_PATCH, **self._t
            ),
        )
        return ScaleInfo(replicas=replicas_of(scale.spec), resource_version=rv(scale.metadata))

    def _patch_deployment(
        self, *, namespace: str, name: str, body: dict[str, Any]
    ) -> DeploymentInfo:
        op = Op("patch", "deployments", APPS, namespace, name)
        deployment = self._call(
            op,
            lambda: self._apps.patch_namespaced_deployment(
                name, namespace, body, _content_type=MERGE_PATCH, **self._t
            ),
        )
        return deployment_info(deployment)

    # -- HorizontalPodAutoscalers ----------------------------------------------------

    def hpas(self, *, namespace: str) -> dict[str, HpaInfo]:
        """The HPAs in `namespace`, keyed by the Deployment each one scales (first by name
        when two claim the same Deployment)."""
        op = Op("list", "horizontalpodautoscalers", AUTOSCALING, namespace)
        listed = self._call(
            op,
            lambda: self._autoscaling.list_namespaced_horizontal_pod_autoscaler(
                namespace, **self._t
            ),
        )
        found: dict[str, HpaInfo] = {}
        for hpa in sorted(listed.items or [], key=name_of):
            target = hpa_target(hpa)
            if target is not None and target not in found:
                found[target] = hpa_info(hpa)
        return found

    def hpa_targets(self, *, namespace: str) -> set[str]:
        """Names of the Deployments in `namespace` that a HorizontalPodAutoscaler scales."""
        return set(self.hpas(namespace=namespace))

    def patch_hpa_min(self, *, namespace: str, name: str, min_replicas: int) -> HpaInfo:
        """Set an HPA's floor: merge patch `{"spec": {"minReplicas": N}}` (hpa_mode raise_min)."""
        body = {"spec": {"minReplicas": int(min_replicas)}}
        op = Op("patch", "horizontalpodautoscalers", AUTOSCALING, namespace, name)
        hpa = self._call(
            op,
            lambda: self._autoscaling.patch_namespaced_horizontal_pod_autoscaler(
                name, namespace, body, _content_type=MERGE_PATCH, **self._t
            ),
        )
        return hpa_info(hpa)

    # -- Leases (leader election) ----------------------------------------------------

    def get_lease(self, *, namespace: str, name: str) -> LeaseInfo:
        """The Lease; `NotFound` when nobody has created it yet."""
        op = Op("get", "leases", COORDINATION, namespace, name)
        lease = self._call(
            op, lambda: self._coordination.read_namespaced_lease(name, namespace, **self._t)
        )
        return lease_info(lease)

    def create_lease(self, *, namespace: str, name: str, lease: LeaseInfo) -> LeaseInfo:
        """Create the Lease; `Conflict` (409 AlreadyExists) when another got there first."""
        body = lease_model(namespace=namespace, name=name, lease=lease, precondition=False)
        op = Op("create", "leases", COORDINATION, namespace, name)
        created = self._call(
            op, lambda: self._coordination.create_namespaced_lease(namespace, body, **self._t)
        )
        return lease_info(created)

    def replace_lease(self, *, namespace: str, name: str, lease: LeaseInfo) -> LeaseInfo:
        """PUT the Lease with `lease.resource_version` as the precondition: stale -> `Conflict`."""
        body = lease_model(namespace=namespace, name=name, lease=lease, precondition=True)
        op = Op("update", "leases", COORDINATION, namespace, name)
        replaced = self._call(
            op,
            lambda: self._coordination.replace_namespaced_lease(name, namespace, body, **self._t),
        )
        return lease_info(replaced)

    # -- access review (aegisops check) ----------------------------------------------

    def can_i(
        self,
        *,
        verb: str,
        group: str,
        resource: str,
        subresource: str = "",
        namespace: str,
        name: str = "",
    ) -> bool:
        """SelfSubjectAccessReview: may this identity do `verb` on the resource (`name`: on
        that one object, for rules limited by resourceNames)?"""
        review = client.V1SelfSubjectAccessReview(
            spec=client.V1SelfSubjectAccessReviewSpec(
                resource_attributes=client.V1ResourceAttributes(
                    verb=verb,
                    group=group,
                    resource=resource,
                    subresource=subresource or None,
                    namespace=namespace,
                    name=name or None,
                )
            )
        )
        op = Op("create", "selfsubjectaccessreviews", "authorization.k8s.io")
        answer = self._call(
            op,
            lambda: self._authz.create_self_subject_access_review(review, **self._t),
            what=f"create selfsubjectaccessreviews ({verb} {resource})",
        )
        return bool(answer.status and answer.status.allowed)

    @property
    def _t(self) -> dict[str, Any]:
        return {"_request_timeout": self._timeout}

    def _call(self, op: Op, fn: Callable[[], T], *, what: str = "") -> T:
        what = what or op.what
        try:
            return fn()
        except ApiException as err:
            raise map_api_error(
                what=what,
                status=err.status,
                body=err.body,
                headers=err.headers,
                permission=op.permission,
            ) from None
        except urllib3.exceptions.HTTPError as err:
            raise KubeUnavailable(f"{what}: API server unreachable: {_short(err)}") from None


def lease_model(
    *, namespace: str, name: str, lease: LeaseInfo, precondition: bool
) -> client.V1Lease:
    """The whole Lease as the client's model (it keeps our MicroTime datetimes)."""
    body = lease_body(namespace=namespace, name=name, lease=lease)
    if not precondition:
        body["metadata"].pop("resourceVersion", None)
    return client.V1Lease.model_validate(body)


def _short(err: Exception) -> str:
    text = str(err)
    return text if len(text) <= 200 else text[:200] + "..."
