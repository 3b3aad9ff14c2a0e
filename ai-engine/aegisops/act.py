"""Acting: the Kubernetes side of one workload, the engine's only reads and writes of it.

`Workload` holds what this process knows of a target's Deployment (its annotations as
`Memory`, its replicas, paused/dry-run annotations), read when the workload is first seen.
`Actor.act` re-reads the cluster (HPAs, Deployment, Scale), decides again on those fresh
facts from the same prior state, and applies through `aegisops.apply`. Faults, per
docs/safety.md: a 409 on the record re-reads and decides again once in the same pass (an
error only if it repeats); a 403 names the missing permission once and holds the workload
for an hour (one `forbidden` alert per permission per hour, no call meanwhile); a 404
drops the target until a recheck finds it; 429/5xx/timeouts start the engine-wide backoff.
Leadership is asked again right before acting; with the caps full nothing is re-read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from aegisops.apply import WRITES, Applier, OutcomeUnknown, result_of, what
from aegisops.detector import Observation, WorkloadDetector
from aegisops.guard import ActionCaps, InBackoff, KubeBackoff, Throttle
from aegisops.kube import (
    Conflict,
    DeploymentInfo,
    Forbidden,
    HpaInfo,
    KubeError,
    NotFound,
    ScaleInfo,
)
from aegisops.logs import on
from aegisops.policy import (
    DRY_RUN,
    PAUSED,
    Decision,
    HpaView,
    Memory,
    PolicyState,
    decide,
    dry_run_memory,
    dry_run_state,
    format_time,
    memory_from_annotations,
    unapplied,
)

if TYPE_CHECKING:
    from aegisops.config import Config, Target
    from aegisops.kube import KubeClient
    from aegisops.selfmetrics import SelfMetrics

log = logging.getLogger("aegisops.loop")
ACTIONS = WRITES


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
    hpa: HpaInfo | None = None  # that HPA, as of the last `act`
    read_at: float = float("-inf")  # when memory/replicas were last read from the cluster
    paused: bool = False  # aegisops.dev/paused, as of the last read
    dry_run_annotation: bool = False  # aegisops.dev/dry-run, as of the last read
    gone_until: float | None = None  # 404: dropped from the passes until this recheck time
    forbidden_until: float | None = None  # 403: no action attempt until then (the hold)
    dry_memory: Memory | None = None  # the last dry-run action's cooldown (never written)

    def known(self) -> Memory:
        """What the policy decides from: the cluster's record, with the dry-run cooldown and
        hands-off merged in (the later one wins), so a fresh read cannot forget them."""
        memory, dry = self.memory or Memory(), self.dry_memory
        if dry is None:
            return memory
        if (dry.cooldown_until or 0) > (memory.cooldown_until or 0):
            memory = replace(
                memory,
                cooldown_until=dry.cooldown_until,
                last_action=dry.last_action,
                last_action_at=dry.last_action_at,
            )
        if (dry.hands_off or 0) > (memory.hands_off or 0):
            memory = replace(memory, hands_off=dry.hands_off)
        return memory


@dataclass(frozen=True)
class _Fresh:
    deployment: DeploymentInfo
    scale: ScaleInfo
    hpa: HpaInfo | None
    memory: Memory  # the Deployment's annotations, as read with it


class Actor:
    """Reads and writes the cluster for the loop.

    `on_done(w, obs, decision, dry_run)`: an action was applied (or would have been, in
    dry-run). `on_alert(w, kind, reason)`: an alert the acting side raises (`forbidden`,
    `action_cap`).
    """

    def __init__(
        self,
        *,
        config: Config,
        kube: KubeClient,
        metrics: SelfMetrics | None,
        on_done: Callable[[Workload, Observation, Decision, bool], None],
        on_alert: Callable[[Workload, str, str], None],
        caps: ActionCaps,
        backoff: KubeBackoff | None = None,
        leading: Callable[[], bool] = lambda: True,
    ) -> None:
        self.config = config
        self.kube = kube
        self.metrics = metrics
        self.on_done = on_done
        self.on_alert = on_alert
        self.caps = caps
        self.leading = leading  # asked again right before acting: the lease can go mid-pass
        self.backoff = backoff or KubeBackoff()
        self.forbidden = Throttle()
        self.errors = 0  # failed Kubernetes calls; the loop reads and resets it per pass
        self.applier = Applier(kube=kube, call=self.backoff.call, on_error=self._kube_error)

    def dry_run(self, w: Workload) -> bool:
        """Global `dry_run`, the target's own, or the Deployment's aegisops.dev/dry-run."""
        own = self.config.dry_run if w.target.dry_run is None else w.target.dry_run
        return own or w.dry_run_annotation

    # -- reads ---------------------------------------------------------------------------

    def remember(self, w: Workload, *, now: float) -> None:
        """Read the Deployment's annotations (Memory) and replicas; failures are logged."""
        ns, name = w.target.namespace, w.target.deployment
        try:
            deployment = self.backoff.call(
                lambda: self.kube.get_deployment(namespace=ns, name=name)
            )
        except KubeError as err:
            self._read_failed(w, err, now=now, what="cannot read the Deployment")
            return
        self._learn(w, deployment, replicas=deployment.replicas, now=now, log_problems=True)

    def recheck_gone(self, w: Workload, *, now: float) -> bool:
        """A dropped (404) target: one GET once `recheck_gone_seconds` passed; True when back."""
        if w.gone_until is None or now < w.gone_until:
            return w.gone_until is None
        w.gone_until = None
        self.remember(w, now=now)
        if w.gone_until is None and w.memory is not None:
            log.warning("Deployment found again; back in the passes", extra=on(w.target.key))
            return True
        return False

    def _learn(
        self,
        w: Workload,
        deployment: DeploymentInfo,
        *,
        replicas: int,
        now: float,
        log_problems: bool = False,
    ) -> Memory:
        memory, problems = memory_from_annotations(deployment.annotations)
        if log_problems:
            for problem in problems:
                log.warning("annotation %s", problem, extra=on(w.target.key))
        w.memory, w.replicas, w.read_at = memory, replicas, now
        w.paused = deployment.annotations.get(PAUSED, "").strip().lower() == "true"
        w.dry_run_annotation = deployment.annotations.get(DRY_RUN, "").strip().lower() == "true"
        if not self.dry_run(w):
            w.dry_memory = None  # acting for real now: only the cluster's record counts
        return memory

    def _read(self, w: Workload, *, now: float) -> _Fresh | None:
        """HPAs, Deployment and Scale, fresh; None (logged) when they cannot be read."""
        ns, name = w.target.namespace, w.target.deployment
        call = self.backoff.call
        try:
            hpa = call(lambda: self.kube.hpas(namespace=ns)).get(name)
            deployment = call(lambda: self.kube.get_deployment(namespace=ns, name=name))
            scale = call(lambda: self.kube.get_scale(namespace=ns, name=name))
        except KubeError as err:
            self._read_failed(w, err, now=now, what="not acting, cannot read the cluster")
            w.memory = None
            return None
        memory = self._learn(w, deployment, replicas=scale.replicas, now=now)
        w.hpa, w.hpa_managed = hpa, hpa is not None
        return _Fresh(deployment=deployment, scale=scale, hpa=hpa, memory=memory)

    def _read_failed(self, w: Workload, err: KubeError, *, now: float, what: str) -> None:
        key = w.target.key
        if isinstance(err, InBackoff):
            log.debug("%s: %s", what, err, extra=on(key))
            return
        if isinstance(err, NotFound):
            self._gone(w, err, now=now)
            return
        if isinstance(err, Forbidden):
            self._forbidden(w, err, now=now)
            return
        log.error("%s: %s", what, err, extra=on(key))
        self._kube_error(w, err)

    def _gone(self, w: Workload, err: KubeError, *, now: float) -> None:
        every = self.config.kubernetes.recheck_gone_seconds
        w.gone_until, w.memory = now + every, None
        log.warning(
            "Deployment not found (%s): dropped from the passes, looking again every %gs",
            err,
            every,
            extra=on(w.target.key),
        )

    def _forbidden(self, w: Workload, err: Forbidden, *, now: float) -> None:
        """A 403: named once, then no action attempt on `w` for `forbidden_hold_seconds` (the
        hold), so a missing permission costs no API call per pass; an RBAC fix is picked up
        at the next attempt after the hold."""
        permission = err.permission or str(err)
        w.forbidden_until = now + self.config.kubernetes.forbidden_hold_seconds
        log.error(
            "forbidden: the engine may not %s (grant it in its Role; %s); no action attempt "
            "on this workload until %s",
            permission,
            err,
            format_time(w.forbidden_until),
            extra=on(w.target.key, permission=permission),
        )
        self._kube_error(w, err)
        if self.forbidden.allow(permission, now=now):
            self.on_alert(w, "forbidden", f"the engine may not {permission}")

    # -- acting --------------------------------------------------------------------------

    def act(
        self, w: Workload, *, first: Decision, state: PolicyState, obs: Observation, now: float
    ) -> Decision:
        """Re-read the cluster, decide again on fresh facts (from the same prior state), apply.

        `first` is the decision on cached facts: an action, or a re-read the loop asked for.
        A 409 on the record means someone wrote since our read: re-read and decide again,
        once, in this pass (never a blind retry).
        """
        for attempt in (1, 2):
            held = self._held_before_reading(w, first=first, now=now)
            if held is not None:
                return held
            fresh = self._read(w, now=now)
            if fresh is None:
                if first.action not in ACTIONS:
                    return first
                busy = self.backoff.active
                return unapplied(first, "Kubernetes API backoff" if busy else "cannot read")
            decision = self._decide(w, fresh, state=state, obs=obs, now=now)
            if decision.action not in ACTIONS:
                return decision
            held = self._held(w, decision=decision, now=now)
            if held is not None:
                return held
            if self.dry_run(w):  # the cooldown holds in this process; nothing else changed
                w.dry_memory = dry_run_memory(decision)  # not a real action: caps not counted
                decision = replace(decision, state=dry_run_state(decision))
                self._action_done(w, obs=obs, decision=decision, result="dry_run", dry=True)
                return decision
            if not self._still_leading(w):
                return unapplied(decision, "standby, not the leader")
            err = self.applier.apply(
                w,
                now=now,
                decision=decision,
                before=fresh.memory,
                resource_version=fresh.deployment.resource_version,
            )
            if err is None:
                self.caps.count(now=now)
                self._action_done(w, obs=obs, decision=decision, result="applied", dry=False)
                return decision
            if isinstance(err, OutcomeUnknown):
                return self._unknown(w, decision=decision, err=err, now=now)
            if isinstance(err, Conflict) and attempt == 1:  # not an error unless it repeats
                log.info(
                    "%s: record changed meanwhile (%s); re-reading and deciding again",
                    what(decision),
                    err,
                    extra=on(w.target.key),
                )
                continue
            self._failed(w, decision=decision, err=err, now=now)
            return unapplied(decision, result_of(err))
        raise AssertionError("unreachable")  # pragma: no cover

    def _still_leading(self, w: Workload) -> bool:
        if self.leading():
            return True
        log.warning("lost the lease during the pass: not acting", extra=on(w.target.key))
        return False

    def _decide(
        self, w: Workload, fresh: _Fresh, *, state: PolicyState, obs: Observation, now: float
    ) -> Decision:
        hpa = fresh.hpa
        view = None
        if hpa is not None:
            view = HpaView(
                name=hpa.name, min_replicas=hpa.min_replicas, max_replicas=hpa.max_replicas
            )
        return decide(
            state=state,
            observation=obs,
            now=now,
            replicas=fresh.scale.replicas,
            memory=w.known(),
            limits=w.target.limits,
            params=self.config.policy,
            hpa=view,
            ready_replicas=fresh.deployment.ready_replicas,
            paused=w.paused,
        )

    def _held_before_reading(self, w: Workload, *, first: Decision, now: float) -> Decision | None:
        """Held back without a read: the lease is gone, a 403 hold runs, or the caps are full
        (no API call per pass while nothing can be done), else None to go on and read."""
        if not self._still_leading(w):
            return unapplied(first, "standby, not the leader")
        if w.forbidden_until is not None:
            if now < w.forbidden_until:
                return unapplied(first, f"forbidden, held until {format_time(w.forbidden_until)}")
            w.forbidden_until = None
        if self.caps.full(now=now) is None:
            return None
        if first.action not in ACTIONS:
            return first  # a re-read could only lead to an action the caps hold back
        return self._capped(w, decision=first, now=now)

    def _held(self, w: Workload, *, decision: Decision, now: float) -> Decision | None:
        """The decision held back by a brake (paused, action caps), or None to go ahead."""
        if w.paused:
            log.info("paused (%s): not acting", PAUSED, extra=on(w.target.key))
            return unapplied(decision, f"paused by {PAUSED}")
        if self.caps.full(now=now) is None:
            return None
        return self._capped(w, decision=decision, now=now)

    def _capped(self, w: Workload, *, decision: Decision, now: float) -> Decision:
        key, why = w.target.key, self.caps.full(now=now) or ""
        log.warning("held back: %s %s", what(decision), why, extra=on(key, action="held"))
        if self.caps.alerts.allow("action_cap", now=now):
            self.on_alert(w, "action_cap", f"{what(decision)} held back: {why}")
        return unapplied(decision, why)

    def _unknown(
        self, w: Workload, *, decision: Decision, err: OutcomeUnknown, now: float
    ) -> Decision:
        """The action's write may have happened: its record stays and it counts toward the
        caps (the safe side: no second action); the next fresh read shows what happened."""
        self.caps.count(now=now)
        log.error(
            "%s: %s; keeping the record, so it is not done twice",
            what(decision),
            err,
            extra=on(w.target.key, action=decision.action, result="unknown"),
        )
        self._count_action(w, action=decision.action, result="unknown")
        return replace(decision, reason=f"{decision.reason} (outcome unknown)")

    def _failed(self, w: Workload, *, decision: Decision, err: KubeError, now: float) -> None:
        result = result_of(err)
        if isinstance(err, InBackoff):
            log.info("%s not applied: %s", what(decision), err, extra=on(w.target.key))
            return
        log.error(
            "%s failed (%s): %s",
            what(decision),
            result,
            err,
            extra=on(w.target.key, action=decision.action, result=result),
        )
        self._count_action(w, action=decision.action, result=result)
        if isinstance(err, NotFound):
            self._gone(w, err, now=now)
            self.errors += 1
        elif isinstance(err, Forbidden):
            self._forbidden(w, err, now=now)
        else:
            self._kube_error(w, err)
        if isinstance(err, Conflict):
            w.memory = None  # someone else wrote: re-read before the next decision

    def _action_done(
        self, w: Workload, *, obs: Observation, decision: Decision, result: str, dry: bool
    ) -> None:
        self._count_action(w, action=decision.action, result=result)
        self.on_done(w, obs, decision, dry)

    def _count_action(self, w: Workload, *, action: str, result: str) -> None:
        if self.metrics is not None:
            self.metrics.action(w.target.key, action=action, result=result)

    def _kube_error(self, w: Workload, err: KubeError) -> None:
        """A Kubernetes call failed: counted in the pass's errors and the metric."""
        self.errors += 1
        if self.metrics is not None:
            self.metrics.pass_error(stage="kubernetes")
