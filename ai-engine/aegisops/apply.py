"""The engine's writes for one decided action: the record first, then the action's own write.

The record (our annotations) is written with the resourceVersion precondition, so two
engines (or an engine and a stale copy of itself) cannot both record the same action;
then the write the action needs (scale, HPA minReplicas, restart; none for give_up and
release). A crash in between errs on the side of not acting twice. An action write the
server refused (409/403/404) puts the annotations back (again with a precondition) so the
next pass may try again. Any other failure (a timeout, a 5xx) may have taken effect on the
server: the target is read back first, and the record is only put back when the read shows
the write did not happen; applied, it stays (the action counts as applied); unreadable, it
stays too (`OutcomeUnknown`: never a second restart or a forgotten HPA floor).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aegisops.kube import Conflict, Forbidden, KubeError, NotFound
from aegisops.logs import on
from aegisops.policy import (
    ANNOTATION_KEYS,
    Decision,
    Memory,
    format_time,
    memory_from_annotations,
    memory_to_annotations,
)

if TYPE_CHECKING:
    from aegisops.act import Workload
    from aegisops.kube import KubeClient

log = logging.getLogger("aegisops.loop")
UNDO_ATTEMPTS = 3
SCALES = ("scale_up", "scale_down", "rollback")
"""The actions whose own write is `PATCH deployments/scale`."""
HPA_WRITES = ("hpa_raise", "hpa_restore")
WRITES = (*SCALES, "restart", *HPA_WRITES, "give_up", "release")
"""The actions that write the record (and, but for give_up and release, their own write)."""


class NotSent(KubeError):
    """The action's own write was not sent (e.g. its HPA is gone): nothing to read back."""


class OutcomeUnknown(KubeError):
    """The action's own write failed without a refusal and could not be read back: it may
    have taken effect, so the record stays (the safe side: no second action)."""


REFUSED = (Conflict, Forbidden, NotFound, NotSent)
"""Failures of the action's write that mean it did not happen (no read-back needed)."""

RESULTS: dict[type[KubeError], str] = {
    Conflict: "conflict",
    Forbidden: "forbidden",
    NotFound: "not_found",
    OutcomeUnknown: "unknown",
}


def result_of(err: KubeError) -> str:
    """The `aegisops_actions_total` result label for a failed write."""
    for kind, label in RESULTS.items():
        if isinstance(err, kind):
            return label
    return "error"


class Applier:
    """Writes one decision: annotations (precondition), then the action's write.

    `call` runs each Kubernetes call (through the engine-wide backoff); `on_error` is told
    of every failed call of the undo (logged and counted by the caller). The undo itself
    bypasses the backoff: it repairs our own record right after the failure, at most
    UNDO_ATTEMPTS writes, so no cooldown is claimed for an action that did not happen.
    """

    def __init__(
        self,
        *,
        kube: KubeClient,
        call: Callable[[Callable[[], Any]], Any],
        on_error: Callable[[Workload, KubeError], None],
    ) -> None:
        self.kube = kube
        self.call = call
        self.on_error = on_error

    def apply(
        self, w: Workload, *, decision: Decision, before: Memory, resource_version: str, now: float
    ) -> KubeError | None:
        """None when applied; else the error (the annotations were put back if written)."""
        ns, name = w.target.namespace, w.target.deployment
        try:
            written = self.call(
                lambda: self.kube.patch_annotations(
                    namespace=ns,
                    name=name,
                    annotations=record_patch(decision.memory),
                    resource_version=resource_version,
                )
            )
        except KubeError as err:
            return err
        w.memory = decision.memory
        at = format_time(now)
        try:
            self._action_write(w, decision=decision, at=at)
        except KubeError as err:
            if not isinstance(err, REFUSED):
                took = self._took_effect(w, decision=decision, at=at)
                if took is None:
                    return OutcomeUnknown(f"{err}; cannot read it back: the outcome is unknown")
                if took:
                    log.warning(
                        "%s answered %s, but the read-back shows it took effect: applied",
                        decision.action,
                        err,
                        extra=on(w.target.key),
                    )
                    self._applied(w, decision=decision)
                    return None
            self._undo(w, decision=decision, before=before, version=written.resource_version)
            return err
        self._applied(w, decision=decision)
        return None

    def _applied(self, w: Workload, *, decision: Decision) -> None:
        if decision.action in SCALES:
            w.replicas = decision.replicas_after

    def _took_effect(self, w: Workload, *, decision: Decision, at: str) -> bool | None:
        """Whether the action's write shows on the server (read directly: the backoff that
        the failure just started must not hide it); None when it cannot be read."""
        ns, name, key = w.target.namespace, w.target.deployment, w.target.key
        try:
            if decision.action in SCALES:
                replicas = self.kube.get_scale(namespace=ns, name=name).replicas
                return replicas == decision.replicas_after
            if decision.action == "restart":
                return self.kube.get_deployment(namespace=ns, name=name).restarted_at == at
            hpa = self.kube.hpas(namespace=ns).get(name)
        except KubeError as err:
            log.error("cannot read back the %s: %s", decision.action, err, extra=on(key))
            self.on_error(w, err)
            return None
        if hpa is None or w.hpa is None or hpa.name != w.hpa.name:
            return False  # the HPA is gone (or another one scales it): its floor was not set
        return hpa.min_replicas == decision.hpa_min_after

    def _action_write(self, w: Workload, *, decision: Decision, at: str) -> None:
        """The action's own write: the Scale, the pod template, or the HPA's minReplicas."""
        ns, name, kube = w.target.namespace, w.target.deployment, self.kube
        if decision.action in SCALES:
            replicas = decision.replicas_after
            self.call(lambda: kube.patch_scale(namespace=ns, name=name, replicas=replicas))
        elif decision.action == "restart":
            self.call(lambda: kube.restart(namespace=ns, name=name, at=at))
        elif decision.action in HPA_WRITES:
            if w.hpa is None or decision.hpa_min_after is None:
                raise NotSent(f"{decision.action}: no HPA targets {w.target.key} any more")
            hpa, floor = w.hpa.name, decision.hpa_min_after
            self.call(lambda: kube.patch_hpa_min(namespace=ns, name=hpa, min_replicas=floor))

    def _undo(self, w: Workload, *, decision: Decision, before: Memory, version: str) -> None:
        """Put the annotations back after a failed action write, so no cooldown is claimed for
        an action that did not happen. On a 409 (the Deployment moved meanwhile, e.g. its
        status), re-read: while our record is still there and the Scale still shows the old
        replicas, undo again with the fresh resourceVersion, at most UNDO_ATTEMPTS times."""
        ns, name, key = w.target.namespace, w.target.deployment, w.target.key
        for _ in range(UNDO_ATTEMPTS):
            try:
                self.kube.patch_annotations(
                    namespace=ns,
                    name=name,
                    annotations=record_patch(before),
                    resource_version=version,
                )
            except Conflict:
                fresh = self._still_ours(w, decision=decision)
                if fresh is None:
                    return
                version = fresh
                continue
            except KubeError as err:
                log.error("could not put the annotations back: %s", err, extra=on(key))
                self.on_error(w, err)
                return
            w.memory = before
            log.warning("annotations put back; the next pass may try again", extra=on(key))
            return
        log.error(
            "could not put the annotations back: %d conflicts in a row; the recorded cooldown "
            "stays although nothing was changed",
            UNDO_ATTEMPTS,
            extra=on(key),
        )
        self.on_error(w, Conflict("undo: conflicts in a row"))

    def _still_ours(self, w: Workload, *, decision: Decision) -> str | None:
        """After a 409 on the undo: the fresh resourceVersion if the undo should be retried
        (our record still there, the Scale still at the old replicas), else None (logged)."""
        ns, name, key = w.target.namespace, w.target.deployment, w.target.key
        try:
            deployment = self.kube.get_deployment(namespace=ns, name=name)
            scale = self.kube.get_scale(namespace=ns, name=name)
        except KubeError as err:
            log.error("could not put the annotations back, cannot re-read: %s", err, extra=on(key))
            self.on_error(w, err)
            return None
        ours = {k: deployment.annotations.get(k) for k in ANNOTATION_KEYS}
        w.memory, w.replicas = memory_from_annotations(deployment.annotations)[0], scale.replicas
        if ours != record_patch(decision.memory):
            log.warning(
                "annotations changed by someone else since our record; leaving them", extra=on(key)
            )
            return None
        if decision.action in SCALES and scale.replicas != decision.replicas_before:
            log.warning(
                "replicas are %d now (not %d): the scale took effect after all, keeping the record",
                scale.replicas,
                decision.replicas_before,
                extra=on(key),
            )
            return None
        log.info("annotations changed version meanwhile; putting them back again", extra=on(key))
        return deployment.resource_version


def record_patch(memory: Memory) -> dict[str, str | None]:
    """The merge patch for `memory`: our keys it does not set are removed (null)."""
    patch: dict[str, str | None] = dict.fromkeys(ANNOTATION_KEYS)
    patch.update(memory_to_annotations(memory))
    return patch


def what(decision: Decision) -> str:
    """`scale_up 1->2`, or the bare action name when no replicas change."""
    if decision.replicas_before != decision.replicas_after:
        return f"{decision.action} {decision.replicas_before}->{decision.replicas_after}"
    return decision.action
