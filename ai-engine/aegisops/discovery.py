"""Discovery: Deployments opted in by label (`discovery.label_selector`) join the targets.

Every `interval_seconds` the leader lists the Deployments matching the selector in each of
`discovery.namespaces` (a new leader at once; a follower never: it makes no Kubernetes
call). Each Deployment that joins is trained from Prometheus history right away.
A Deployment's bounds come from its annotations `aegisops.dev/min-replicas`,
`max-replicas`, `scale-step`, else the `discovery` defaults;
an unreadable or inconsistent annotation is logged and the default used. A configured
target with the same namespace/name wins. A failed list keeps the last known set (a
Deployment is only dropped when a successful list no longer shows it).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

from aegisops.config import Target
from aegisops.kube import KubeError

if TYPE_CHECKING:
    from aegisops.config import DiscoveryConfig
    from aegisops.kube import DeploymentInfo, KubeClient

log = logging.getLogger("aegisops.loop")
BOUNDS = {
    "min_replicas": "aegisops.dev/min-replicas",
    "max_replicas": "aegisops.dev/max-replicas",
    "scale_step": "aegisops.dev/scale-step",
}


def target_from(
    *, namespace: str, name: str, annotations: Mapping[str, str], defaults: DiscoveryConfig
) -> tuple[Target, tuple[str, ...]]:
    """The target for a discovered Deployment, and one message per annotation ignored."""
    values: dict[str, int] = {}
    problems: list[str] = []
    for field, key in BOUNDS.items():
        default: int = getattr(defaults, field)
        raw = annotations.get(key)
        if raw is None:
            values[field] = default
        elif re.fullmatch(r"[0-9]+", raw.strip()) and (int(raw) >= 1 or field == "min_replicas"):
            values[field] = int(raw)
        else:
            problems.append(f"{key}: {raw!r} is not a valid count; using {default}")
            values[field] = default
    if values["max_replicas"] < values["min_replicas"]:
        problems.append(
            f"{BOUNDS['max_replicas']} ({values['max_replicas']}) < {BOUNDS['min_replicas']} "
            f"({values['min_replicas']}); using the defaults "
            f"{defaults.min_replicas}..{defaults.max_replicas}"
        )
        values["min_replicas"], values["max_replicas"] = (
            defaults.min_replicas,
            defaults.max_replicas,
        )
    target = Target(
        namespace=namespace,
        deployment=name,
        min_replicas=values["min_replicas"],
        max_replicas=values["max_replicas"],
        scale_step=values["scale_step"],
    )
    return target, tuple(problems)


class Discovery:
    """Lists the opted-in Deployments at most every `interval_seconds`."""

    def __init__(
        self,
        *,
        config: DiscoveryConfig,
        kube: KubeClient,
        call: Callable[[Callable[[], Any]], Any],
    ) -> None:
        self.config = config
        self.kube = kube
        self.call = call  # through the engine-wide Kubernetes backoff
        self.next_at = float("-inf")

    def scan(self, *, now: float) -> dict[str, Target] | None:
        """The discovered targets by key, when due and every list worked; else None."""
        if now < self.next_at or self.config.label_selector is None:
            return None
        self.next_at = now + self.config.interval_seconds
        selector = self.config.label_selector
        found: dict[str, Target] = {}
        for namespace in self.config.namespaces:
            try:
                lister = partial(
                    self.kube.list_deployments, namespace=namespace, label_selector=selector
                )
                listed: dict[str, DeploymentInfo] = self.call(lister)
            except KubeError as err:
                log.error("discovery: cannot list deployments in %s: %s", namespace, err)
                return None
            for name, info in sorted(listed.items()):
                target, problems = target_from(
                    namespace=namespace,
                    name=name,
                    annotations=info.annotations,
                    defaults=self.config,
                )
                for problem in problems:
                    log.warning("annotation %s", problem, extra={"workload": target.key})
                found[target.key] = target
        return found
