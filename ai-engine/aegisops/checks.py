"""`aegisops check`: a short checklist of what the engine needs, one line per item.

Prometheus answers the queries; the Kubernetes identity may make every call the engine
makes (SelfSubjectAccessReviews), including the Lease calls when leader election is on;
every target exists.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from functools import partial

from aegisops.config import Config
from aegisops.kube import KubeClient, KubeError
from aegisops.leader import LeaderParams
from aegisops.prometheus import PrometheusSource

# (verb, group, resource, subresource): every call the engine makes (docs/design.md).
KUBE_CALLS = (
    ("get", "apps", "deployments", ""),
    ("patch", "apps", "deployments", ""),
    ("get", "apps", "deployments", "scale"),
    ("patch", "apps", "deployments", "scale"),
    ("list", "autoscaling", "horizontalpodautoscalers", ""),
)
HPA_RAISE = (("patch", "autoscaling", "horizontalpodautoscalers", ""),)  # hpa_mode raise_min
DISCOVERY = (("list", "apps", "deployments", ""),)  # discovery.label_selector
# (verb, named): the Lease calls of leader election (create cannot name the object)
LEASE_CALLS = (("get", True), ("update", True), ("create", False))


def line(ok: bool | None, text: str) -> None:
    mark = {True: "[ok]  ", False: "[FAIL]", None: "[--]  "}[ok]
    print(f"{mark} {text}")


def check_prometheus(config: Config) -> bool:
    keys = [t.key for t in config.targets]
    with PrometheusSource(config=config.prometheus, targets=keys) as source:
        checks = source.check(now=time.time())
    for item in checks:
        name = item.name if item.name.startswith("prometheus") else f"prometheus {item.name}"
        line(item.ok, f"{name}: {item.detail}")
    return bool(checks) and all(item.ok for item in checks)


def check_kubernetes(config: Config, *, env: Mapping[str, str], lease: LeaderParams | None) -> bool:
    try:
        kube = KubeClient(config=config.kubernetes, environ=env)
    except KubeError as err:
        line(False, f"kubernetes: {err}")
        return False
    ok = True
    with kube:
        line(True, f"kubernetes: {kube.auth.mode} auth against {kube.auth.host}")
        calls = KUBE_CALLS + (HPA_RAISE if config.policy.hpa_mode == "raise_min" else ())
        namespaces = {t.namespace for t in config.targets}
        if config.discovery.enabled:
            namespaces |= set(config.discovery.namespaces)
            calls += DISCOVERY
        for namespace in sorted(namespaces):
            for verb, group, resource, sub in calls:
                what = f"{verb} {resource}{'/' + sub if sub else ''} in {namespace}"
                probe = partial(
                    kube.can_i,
                    verb=verb,
                    group=group,
                    resource=resource,
                    subresource=sub,
                    namespace=namespace,
                )
                ok &= _try(what, probe)
        for target in config.targets:
            exists = partial(_exists, kube, target.namespace, target.deployment)
            ok &= _try(f"deployment {target.key} exists", exists)
        if lease is not None:
            ok &= _check_lease(kube, lease)
    return ok


def _check_lease(kube: KubeClient, params: LeaderParams) -> bool:
    """The Lease permissions of leader election (kubernetes/rbac.yaml)."""
    ok = True
    for verb, named in LEASE_CALLS:
        name = params.lease_name if named else ""
        what = f"{verb} leases{'/' + name if name else ''} in {params.namespace}"
        probe = partial(
            kube.can_i,
            verb=verb,
            group="coordination.k8s.io",
            resource="leases",
            namespace=params.namespace,
            name=name,
        )
        ok &= _try(what, probe)
    return ok


def _exists(kube: KubeClient, namespace: str, name: str) -> bool:
    kube.get_deployment(namespace=namespace, name=name)
    return True


def _try(what: str, probe: Callable[[], bool]) -> bool:
    try:
        allowed = probe()
    except KubeError as err:
        line(False, f"kubernetes {what}: {err}")
        return False
    line(allowed, f"kubernetes {what}" + ("" if allowed else ": not allowed"))
    return allowed
