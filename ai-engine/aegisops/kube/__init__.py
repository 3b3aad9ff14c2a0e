"""The Kubernetes edge: the only package that imports `kubernetes`.

What the engine reads and writes (docs/design.md, docs/safety.md), nothing else:

- GET   deployments/{name}/scale            -> `get_scale`
- GET   deployments/{name}                  -> `get_deployment` (annotations, labels,
  resourceVersion, readyReplicas, generation)
- LIST  deployments?labelSelector=...       -> `list_deployments` (discovery only)
- PATCH deployments/{name}                  -> `patch_annotations` (merge patch, with
  `metadata.resourceVersion` as a precondition: a stale version is a `Conflict`), and
  `restart` (the pod template's `kubectl.kubernetes.io/restartedAt`, as
  `kubectl rollout restart` does)
- PATCH deployments/{name}/scale            -> `patch_scale`, body exactly
  `{"spec": {"replicas": N}}` (merge patch)
- LIST  autoscaling/v2 horizontalpodautoscalers -> `hpas`, `hpa_targets`
- PATCH horizontalpodautoscalers/{name}     -> `patch_hpa_min`, body exactly
  `{"spec": {"minReplicas": N}}` (hpa_mode raise_min only)
- GET / POST / PUT coordination.k8s.io/v1 leases/{name} -> `get_lease`, `create_lease`,
  `replace_lease` (leader election; the PUT carries the resourceVersion)
- POST  selfsubjectaccessreviews            -> `can_i` (only for `aegisops check`)

The scale PATCH carries no resourceVersion on purpose: the Deployment's version moves
whenever its status changes (every rollout, every pod becoming ready), so a precondition
there would fail for reasons that have nothing to do with a competing writer. The claim
on the action is the annotation write just before it, which does carry the precondition:
two engines (or an engine and a stale copy of itself) cannot both record the same action.

The client has its own `ApiClient` (the library's global default is never touched), a
timeout on every call, and no hidden retries: urllib3 would otherwise repeat a GET that
was answered 429/503 with `Retry-After`, so one pass could stall for many seconds.
Errors are mapped by HTTP status and the Kubernetes `reason`, never by message text; a
`Forbidden` names the missing permission, a `KubeUnavailable` the server's Retry-After.
"""

from aegisops.kube.auth import Auth, build_configuration
from aegisops.kube.client import MERGE_PATCH, RESTARTED_AT, KubeClient
from aegisops.kube.errors import (
    Conflict,
    Forbidden,
    KubeAuthError,
    KubeError,
    KubeUnavailable,
    NotFound,
    Op,
    map_api_error,
)
from aegisops.kube.models import DeploymentInfo, HpaInfo, LeaseInfo, MicroTime, ScaleInfo

__all__ = [
    "MERGE_PATCH",
    "RESTARTED_AT",
    "Auth",
    "Conflict",
    "DeploymentInfo",
    "Forbidden",
    "HpaInfo",
    "KubeAuthError",
    "KubeClient",
    "KubeError",
    "KubeUnavailable",
    "LeaseInfo",
    "MicroTime",
    "NotFound",
    "Op",
    "ScaleInfo",
    "build_configuration",
    "map_api_error",
]
