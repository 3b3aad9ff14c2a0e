"""Acting: the Kubernetes side of one workload, the engine's only writes.

`Workload` holds what this process knows of a target's Deployment (its annotations as
`Memory`, its replicas), read when the workload is first seen. `Actor.act` re-reads the
cluster (HPAs, Deployment, Scale), decides again on those fresh facts from the same prior
state, and applies: the annotations first (resourceVersion precondition), then the scale.
A crash in between errs on the side of not acting twice; a failed scale PATCH puts the
annotations back so the next pass may try again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from aegisops.detector import Observation, WorkloadDetector
from aegisops.kube import Conflict, Forbidden, KubeError, NotFound
from aegisops.policy import (
    ANNOTATION_KEYS,
    Decision,
    Memory,
    PolicyState,
    decide,
    memory_from_annotations,
    memory_to_annotations,
)

if TYPE_CHECKING:
    from aegisops.config import Config, Target
    from aegisops.kube import KubeClient
    from aegisops.selfmetrics import SelfMetrics

log = logging.getLogger("aegisops.loop")
ACTIONS = ("scale_up", "scale_down")
UNDO_ATTEMPTS = 3


@dataclass
class Workload:
    """One target's live state in this process."""

    target: Target
    detector: WorkloadDetector
    state: PolicyState = field(default_factory=PolicyState)
    memory: Memory | None = None  # None: not read from the cluster yet (or stale)
    replicas: int | None = None
    last_t: float = float("-inf")
    hpa_managed: bool = False  # as of the last `act` (an HPA was found targeting it)
    read_at: float = float("-inf")  # when memory/replicas were last read from the cluster


class Actor:
    """Reads and writes the cluster for the loop; `on_done(w, obs, decision, result)` is
    called for an action that was applied (or would have been, in dry-run)."""

    def __init__(
        self,
        *,
        config: Config,
        kube: KubeClient,
        metrics: SelfMetrics | None,
        on_done: Callable[[Workload, Observation, Decision], None],
    ) -> None:
        self.config = config
        self.kube = kube
        self.metrics = metrics
        self.on_done = on_done
        self.errors = 0  # failed Kubernetes calls; the loop reads and resets it per pass

    def remember(self, w: Workload, *, now: float) -> None:
        """Read the Deployment's annotations (Memory) and replicas; failures are logged."""
        ns, name = w.target.namespace, w.target.deployment
        try:
            deployment = self.kube.get_deployment(namespace=ns, name=name)
        except KubeError as err:
            log.error("cannot read the Deployment: %s", err, extra=_on(w.target.key))
            self._kube_error()
            return
        memory, problems = memory_from_annotations(deployment.annotations)
        for problem in problems:
            log.warning("annotation %s", problem, extra=_on(w.target.key))
        w.memory, w.replicas, w.read_at = memory, deployment.replicas, now

    def act(
        self, w: Workload, *, first: Decision, state: PolicyState, obs: Observation, now: float
    ) -> Decision:
        """Re-read the cluster, decide again on fresh facts (from the same prior state), apply.

        `first` is the decision on cached facts: an action, or a re-read the loop asked for.
        """
        t, ns, name = w.target, w.target.namespace, w.target.deployment
        try:
            hpa_managed = name in self.kube.hpa_targets(namespace=ns)
            deployment = self.kube.get_deployment(namespace=ns, name=name)
            scale = self.kube.get_scale(namespace=ns, name=name)
        except KubeError as err:
            log.error("not acting, cannot read the cluster: %s", err, extra=_on(t.key))
            self._kube_error()
            w.memory = None
            if first.action not in ACTIONS:
                return first
            return _not_applied(first, why="cannot read the cluster")
        memory, _ = memory_from_annotations(deployment.annotations)
        w.memory, w.replicas, w.read_at = memory, scale.replicas, now
        w.hpa_managed = hpa_managed
        decision = decide(
            state=state,
            observation=obs,
            now=now,
            replicas=scale.replicas,
            memory=memory,
            limits=t.limits,
            params=self.config.policy,
            hpa_managed=hpa_managed,
        )
        if decision.action not in ACTIONS:
            return decision
        if self.config.dry_run:
            w.memory = decision.memory  # the cooldown holds in this process
            self._action_done(w, obs=obs, decision=decision, result="dry_run")
            return decision
        result = self._apply(
            w, decision=decision, before=memory, resource_version=deployment.resource_version
        )
        if result != "applied":
            return _not_applied(decision, why=result)
        self._action_done(w, obs=obs, decision=decision, result=result)
        return decision

    def _apply(
        self, w: Workload, *, decision: Decision, before: Memory, resource_version: str
    ) -> str:
        """Annotations (with the precondition), then the scale. Returns the result label.

        If the scale PATCH fails after the annotations were written, they are put back
        (best effort, again with a precondition) so the next pass may try again.
        """
        ns, name = w.target.namespace, w.target.deployment
        written = None
        try:
            written = self.kube.patch_annotations(
                namespace=ns,
                name=name,
                annotations=_annotations(decision.memory),
                resource_version=resource_version,
            )
            w.memory = decision.memory
            self.kube.patch_scale(namespace=ns, name=name, replicas=decision.replicas_after)
        except KubeError as err:
            result = RESULTS.get(type(err), "error")
            self._failed(w, decision=decision, result=result, err=err)
            if written is not None:
                self._undo(w, decision=decision, before=before, version=written.resource_version)
            elif result == "conflict":
                w.memory = None  # someone else wrote: re-read before the next decision
            return result
        w.replicas = decision.replicas_after
        return "applied"

    def _undo(self, w: Workload, *, decision: Decision, before: Memory, version: str) -> None:
        """Put the annotations back after a failed scale PATCH, so no cooldown is claimed for
        an action that did not happen. On a 409 (the Deployment moved meanwhile, e.g. its
        status), re-read: while our record is still there and the Scale still shows the old
        replicas, undo again with the fresh resourceVersion, at most UNDO_ATTEMPTS times."""
        ns, name, key = w.target.namespace, w.target.deployment, w.target.key
        for _ in range(UNDO_ATTEMPTS):
            try:
                self.kube.patch_annotations(
                    namespace=ns,
                    name=name,
                    annotations=_annotations(before),
                    resource_version=version,
                )
            except Conflict:
                fresh = self._still_ours(w, decision=decision)
                if fresh is None:
                    return
                version = fresh
                continue
            except KubeError as err:
                log.error("could not put the annotations back: %s", err, extra=_on(key))
                self._kube_error()
                return
            w.memory = before
            log.warning("annotations put back; the next pass may try again", extra=_on(key))
            return
        log.error(
            "could not put the annotations back: %d conflicts in a row; the recorded cooldown "
            "stays although nothing was scaled",
            UNDO_ATTEMPTS,
            extra=_on(key),
        )
        self._kube_error()

    def _still_ours(self, w: Workload, *, decision: Decision) -> str | None:
        """After a 409 on the undo: the fresh resourceVersion if the undo should be retried
        (our record still there, the Scale still at the old replicas), else None (logged)."""
        ns, name, key = w.target.namespace, w.target.deployment, w.target.key
        try:
            deployment = self.kube.get_deployment(namespace=ns, name=name)
            scale = self.kube.get_scale(namespace=ns, name=name)
        except KubeError as err:
            log.error("could not put the annotations back, cannot re-read: %s", err, extra=_on(key))
            self._kube_error()
            return None
        ours = {k: deployment.annotations.get(k) for k in ANNOTATION_KEYS}
        w.memory, w.replicas = memory_from_annotations(deployment.annotations)[0], scale.replicas
        if ours != _annotations(decision.memory):
            log.warning(
                "annotations changed by someone else since our record; leaving them", extra=_on(key)
            )
            return None
        if scale.replicas != decision.replicas_before:
            log.warning(
                "replicas are %d now (not %d): the scale took effect after all, keeping the record",
                scale.replicas,
                decision.replicas_before,
                extra=_on(key),
            )
            return None
        log.info("annotations changed version meanwhile; putting them back again", extra=_on(key))
        return deployment.resource_version

    def _failed(self, w: Workload, *, decision: Decision, result: str, err: KubeError) -> None:
        log.error(
            "%s %d->%d failed (%s): %s",
            decision.action,
            decision.replicas_before,
            decision.replicas_after,
            result,
            err,
            extra=_on(w.target.key, action=decision.action, result=result),
        )
        self._count_action(w, action=decision.action, result=result)
        self._kube_error()

    def _action_done(
        self, w: Workload, *, obs: Observation, decision: Decision, result: str
    ) -> None:
        self._count_action(w, action=decision.action, result=result)
        self.on_done(w, obs, decision)

    def _count_action(self, w: Workload, *, action: str, result: str) -> None:
        if self.metrics is not None:
            self.metrics.action(w.target.key, action=action, result=result)

    def _kube_error(self) -> None:
        """A Kubernetes call failed: counted in the pass's errors and the metric."""
        self.errors += 1
        if self.metrics is not None:
            self.metrics.pass_error(stage="kubernetes")


def _annotations(memory: Memory) -> dict[str, str | None]:
    """The merge patch for `memory`: our keys it does not set are removed (null)."""
    annotations: dict[str, str | None] = dict.fromkeys(ANNOTATION_KEYS)
    annotations.update(memory_to_annotations(memory))
    return annotations


def _on(key: str, **fields: Any) -> dict[str, Any]:
    """`extra=` for a log record about one workload (text shows it, json gets the fields)."""
    return {"workload": key, **fields}


def _not_applied(decision: Decision, *, why: str) -> Decision:
    """The decision as it stands when the action could not be applied: nothing changed."""
    return replace(
        decision,
        action="none",
        replicas_after=decision.replicas_before,
        reason=f"{decision.reason}; NOT applied ({why})",
    )


RESULTS: dict[type[KubeError], str] = {
    Conflict: "conflict",
    Forbidden: "forbidden",
    NotFound: "not_found",
}
