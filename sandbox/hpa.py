"""A bounds-only HorizontalPodAutoscaler controller for the sandbox.

Every `interval_seconds` (1 s) it lists autoscaling/v2 HPAs and, for each whose
`scaleTargetRef` is an apps/v1 Deployment, reads `deployments/scale` and, when
`spec.replicas` lies outside [minReplicas (default 1), maxReplicas], PATCHes it back to
the nearest bound, then writes the HPA's `status` (currentReplicas, desiredReplicas,
lastScaleTime, a ScalingLimited condition). It talks as whoever its client's token
names; the world gives it `system:serviceaccount:kube-system:horizontal-pod-autoscaler`,
so fighting an HPA shows up in the emulator's request log under that user.

Not emulated: metrics. No CPU, memory or custom metric is read, so the HPA never scales
on load, has no stabilization window and no scale-rate policies: it only enforces the
bounds. As in kube, a target at 0 replicas is left alone (scaling disabled).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from sandbox.deploystatus import timestamp
from sandbox.procs import Managed

log = logging.getLogger("sandbox.hpa")

HPA_NAMESPACE = "kube-system"
HPA_SERVICE_ACCOUNT = "horizontal-pod-autoscaler"
HPA_USER = f"system:serviceaccount:{HPA_NAMESPACE}:{HPA_SERVICE_ACCOUNT}"
MERGE = "application/merge-patch+json"
Obj = dict[str, Any]

LIMITED = {
    "TooFewReplicas": "the desired replica count is less than the minimum replica count",
    "TooManyReplicas": "the desired replica count is more than the maximum replica count",
}
IN_RANGE = "the desired count is within the acceptable range"


def bounded(*, replicas: int, minimum: int, maximum: int) -> tuple[int, str | None]:
    """(desired replicas, why limited: TooFewReplicas | TooManyReplicas | None)."""
    if replicas == 0:
        return 0, None  # kube: scaling is disabled while the target has 0 replicas
    if replicas < minimum:
        return minimum, "TooFewReplicas"
    if replicas > maximum:
        return maximum, "TooManyReplicas"
    return replicas, None


def rbac_objects() -> list[Obj]:
    """The ClusterRole and binding the controller needs when the emulator enforces RBAC."""
    # kube's is `system:controller:horizontal-pod-autoscaler`; the emulator rejects ':' in
    # RBAC names (it validates them as DNS subdomains, kube as path segments).
    name = "sandbox-horizontal-pod-autoscaler"
    rules = [
        {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["get", "patch"]},
        {
            "apiGroups": ["autoscaling"],
            "resources": ["horizontalpodautoscalers"],
            "verbs": ["get", "list", "watch"],
        },
        {
            "apiGroups": ["autoscaling"],
            "resources": ["horizontalpodautoscalers/status"],
            "verbs": ["patch", "update"],
        },
    ]
    rbac = "rbac.authorization.k8s.io/v1"
    return [
        {"apiVersion": rbac, "kind": "ClusterRole", "metadata": {"name": name}, "rules": rules},
        {
            "apiVersion": rbac,
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": name,
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": HPA_SERVICE_ACCOUNT, "namespace": HPA_NAMESPACE}
            ],
        },
    ]


class HpaController(Managed):
    """Keeps every HPA-targeted Deployment's replicas within the HPA's bounds."""

    def __init__(
        self,
        *,
        api_client: k8s.ApiClient,
        namespace: str | None = None,
        interval_seconds: float = 1.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.apps = k8s.AppsV1Api(api_client)
        self.autoscaling = k8s.AutoscalingV2Api(api_client)
        self.namespace = namespace
        self.interval_seconds = interval_seconds
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> HpaController:
        self.sync_once()
        self._thread = threading.Thread(target=self._loop, name="hpa-controller", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_seconds):
            try:
                self.sync_once()
            except Exception:  # one bad pass must not stop the controller
                log.exception("HPA sync failed")

    def sync_once(self) -> None:
        """One pass over every HPA (each one's errors are logged, the rest still run)."""
        for hpa in self._list():
            meta = hpa["metadata"]
            try:
                self._sync(hpa)
            except ApiException as err:
                where = f"{meta['namespace']}/{meta['name']}"
                log.warning("%s: HPA sync failed: %s %s", where, err.status, err.reason)

    def _list(self) -> list[Obj]:
        response: Any
        if self.namespace is None:
            response = self.autoscaling.list_horizontal_pod_autoscaler_for_all_namespaces(
                _preload_content=False, _request_timeout=10
            )
        else:
            response = self.autoscaling.list_namespaced_horizontal_pod_autoscaler(
                self.namespace, _preload_content=False, _request_timeout=10
            )
        items: list[Obj] = json.loads(response.data).get("items", [])
        return items

    def _sync(self, hpa: Obj) -> None:
        meta, spec = hpa["metadata"], hpa.get("spec", {})
        ref = spec.get("scaleTargetRef") or {}
        if ref.get("kind") != "Deployment" or ref.get("apiVersion", "apps/v1") != "apps/v1":
            return
        namespace, target = meta["namespace"], ref["name"]
        response: Any = self.apps.read_namespaced_deployment_scale(
            target, namespace, _preload_content=False, _request_timeout=10
        )
        current = int(json.loads(response.data).get("spec", {}).get("replicas", 0))
        minimum, maximum = int(spec.get("minReplicas", 1)), int(spec["maxReplicas"])
        desired, limited = bounded(replicas=current, minimum=minimum, maximum=maximum)
        status: Obj = dict(hpa.get("status") or {})
        if desired != current:
            self.apps.patch_namespaced_deployment_scale(
                target,
                namespace,
                {"spec": {"replicas": desired}},
                _content_type=MERGE,
                _request_timeout=10,
            )
            what = f"{namespace}/{target}: HPA {meta['name']}"
            log.info("%s scaled %d -> %d (%s)", what, current, desired, limited)
            status["lastScaleTime"] = timestamp(self.clock())
        status.update(currentReplicas=current, desiredReplicas=desired)
        status["conditions"] = self._conditions(status.get("conditions") or [], limited)
        if status != (hpa.get("status") or {}):
            self.autoscaling.patch_namespaced_horizontal_pod_autoscaler_status(
                meta["name"],
                namespace,
                {"status": status},
                _content_type=MERGE,
                _request_timeout=10,
            )

    def _conditions(self, old: list[Obj], limited: str | None) -> list[Obj]:
        reason = limited or "DesiredWithinRange"
        state = "True" if limited else "False"
        current = next((c for c in old if c.get("type") == "ScalingLimited"), None)
        if current is not None and (current.get("status"), current.get("reason")) == (
            state,
            reason,
        ):
            return old
        condition = {
            "type": "ScalingLimited",
            "status": state,
            "lastTransitionTime": timestamp(self.clock()),
            "reason": reason,
            "message": LIMITED.get(reason, IN_RANGE),
        }
        return [*(c for c in old if c.get("type") != "ScalingLimited"), condition]
