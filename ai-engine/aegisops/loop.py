"""The loop: one pass = query, score, decide, act, report; `run_forever` repeats it.

Per target: a `WorkloadDetector` and a `PolicyState` here; what must survive a restart
lives in the Deployment's annotations, read and written by `aegisops.act` (the Kubernetes
side). Kubernetes is called in proportion to actions: the Deployment is read when a
workload is first seen (a restarted engine knows its cooldown) and re-read, with its Scale
and the HPAs, only when the policy wants to act. Everything is caught and logged per pass
and per workload; the loop never stops for a bad sample, query, API call or Slack message.

With leader election, only the leader calls Kubernetes and sends Slack messages; a
follower queries, scores and decides (its models and incident streaks stay warm) and logs
its decision lines marked `standby`. On becoming leader every cached Deployment fact is
dropped, so what the old leader did is read back from the annotations before acting.
Discovery lists Deployments, so it is the leader's job too (a follower makes no Kubernetes
call): a new leader discovers at once, and every Deployment discovery adds is trained
from Prometheus history right away, as the configured targets are at start.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from aegisops.act import ACTIONS, Actor, Workload
from aegisops.alerts import MissingData
from aegisops.detector import METRICS, Observation, WorkloadDetector
from aegisops.discovery import Discovery
from aegisops.guard import ActionCaps, KubeBackoff
from aegisops.logs import on
from aegisops.policy import Decision, Memory, counts, decide, is_load_shaped, unapplied
from aegisops.prometheus import PrometheusError, Sample
from aegisops.report import Reporter
from aegisops.training import train

if TYPE_CHECKING:
    from aegisops.config import Config, Target
    from aegisops.kube import KubeClient
    from aegisops.prometheus import PrometheusSource
    from aegisops.selfmetrics import SelfMetrics

log = logging.getLogger("aegisops.loop")
__all__ = ["ACTIONS", "Engine", "Leadership", "PassResult", "Workload"]


class Leadership(Protocol):
    """What the loop needs of `aegisops.leader.LeaderElector`."""

    def is_leader(self) -> bool: ...


class Notifier(Protocol):
    """`outbox.Outbox` (or a `SlackNotifier`): `send` never blocks the pass for long."""

    def send(self, payload: Any) -> Any: ...


@dataclass(frozen=True)
class PassResult:
    number: int
    workloads: int
    anomalies: int
    actions: int
    errors: int
    seconds: float

    def __str__(self) -> str:
        return (
            f"pass {self.number}: {self.workloads} workloads, {self.anomalies} anomalies, "
            f"{self.actions} actions, {self.errors} errors in {self.seconds:.2f}s"
        )


class Engine:
    """The daemon's core. Every peer is passed in (fakes in tests, real edges in `cli`)."""

    def __init__(
        self,
        *,
        config: Config,
        source: PrometheusSource,
        kube: KubeClient,
        notifier: Notifier,
        metrics: SelfMetrics | None = None,
        clock: Callable[[], float] = time.time,
        leader: Leadership | None = None,
    ) -> None:
        self.config = config
        self.source = source
        self.kube = kube
        self.metrics = metrics
        self.clock = clock
        self.leader = leader  # None: no leader election, this engine always acts
        self.leading = leader is None
        self.passes = 0
        self.workloads = {
            t.key: Workload(target=t, detector=WorkloadDetector(params=config.detector))
            for t in config.targets
        }
        # cached cluster facts are re-read at most this often while they hold an action back
        self.reread_seconds = max(config.policy.cooldown_seconds / 10, config.poll_interval_seconds)
        policy = config.policy
        self.caps = ActionCaps(
            per_pass=policy.max_actions_per_pass, per_hour=policy.max_actions_per_hour
        )
        self.missing = MissingData(after=config.alerts.missing_after_passes)
        self.actor = Actor(
            config=config,
            kube=kube,
            metrics=metrics,
            on_done=self._action_done,
            on_alert=self._actor_alert,
            caps=self.caps,
            backoff=KubeBackoff(),
            leading=self._still_leading,
        )
        self.report = Reporter(
            notifier=notifier,
            metrics=metrics,
            dry_run=self.actor.dry_run,
            actions=ACTIONS,
            still_leading=self._still_leading,
        )
        self.discovery = None
        if config.discovery.enabled:
            self.discovery = Discovery(
                config=config.discovery, kube=kube, call=self.actor.backoff.call
            )
        self.discovered: set[str] = set()  # keys of the workloads discovery added

    # -- start ---------------------------------------------------------------------------

    def train_from_history(self, *, now: float, keys: Collection[str] | None = None) -> None:
        """Learn the baseline from Prometheus history, so a restart needs no new learning;
        `keys`: only these workloads (the ones discovery just added), else all."""
        step = self.config.poll_interval_seconds
        start = int(now - self.config.prometheus.history_lookback_seconds)
        try:
            history = self.source.history(start=start, end=int(now), step=step)
        except PrometheusError as err:
            log.warning("history unavailable, learning from live samples: %s", err)
            return
        chosen = self.workloads if keys is None else {k: self.workloads[k] for k in keys}
        train(chosen, history=history, params=self.config.detector)

    # -- one pass ------------------------------------------------------------------------

    def run_pass(self, now: float) -> PassResult:
        """Query, score, decide, act, report. Never raises for a peer's failure."""
        self.passes += 1
        started = time.monotonic()
        anomalies = actions = errors = 0
        self._lead(now)
        self.actor.errors = 0
        self.actor.backoff.tick(now)
        self.caps.begin_pass()
        if self.discovery is not None and self.leading:
            found = self.discovery.scan(now=now)
            if found is not None:
                joined = self._join(found)
                if joined:
                    self.train_from_history(now=now, keys=joined)
        try:
            sample: Sample | None = self.source.sample(now)
        except PrometheusError as err:
            log.error(
                "pass %d: Prometheus query failed, no decisions this pass: %s", self.passes, err
            )
            self._count_error("prometheus")
            sample, errors = None, 1
        self._prometheus_alert(ok=sample is not None, now=now)
        if sample is not None:
            for key, workload in list(self.workloads.items()):
                try:
                    decision = self._workload_pass(workload, sample=sample, now=now)
                except Exception as err:  # one workload never stops the pass
                    log.exception("pass failed: %s", err, extra=on(key))
                    self._count_error("workload")
                    errors += 1
                    continue
                anomalies += int(decision is not None and decision.anomaly)
                actions += int(decision is not None and decision.action in ACTIONS)
        result = PassResult(
            number=self.passes,
            workloads=len(self.workloads),
            anomalies=anomalies,
            actions=actions,
            errors=errors + self.actor.errors,  # with every failed Kubernetes call
            seconds=time.monotonic() - started,
        )
        log.info("%s%s", "" if self.leading else "standby ", result)
        if self.metrics is not None:
            self.metrics.pass_done(duration_seconds=result.seconds)
            self.metrics.heartbeat(now)
        return result

    def _join(self, found: dict[str, Target]) -> list[str]:
        """Discovered Deployments join the passes; those gone are dropped. The keys joined
        (to be trained from history, as at start)."""
        joined: list[str] = []
        configured = {t.key for t in self.config.targets}
        for key, target in found.items():
            if key in configured:
                continue  # the config's own target wins
            workload = self.workloads.get(key)
            if workload is None:
                self.workloads[key] = Workload(
                    target=target, detector=WorkloadDetector(params=self.config.detector)
                )
                self.discovered.add(key)
                joined.append(key)
                log.info(
                    "discovered: joins the passes (replicas %d..%d, step %d)",
                    target.min_replicas,
                    target.max_replicas,
                    target.scale_step,
                    extra=on(key),
                )
            elif workload.target != target:
                workload.target = target
                log.info(
                    "discovered: bounds changed (replicas %d..%d, step %d)",
                    target.min_replicas,
                    target.max_replicas,
                    target.scale_step,
                    extra=on(key),
                )
        for key in sorted(self.discovered - set(found)):
            del self.workloads[key]
            self.discovered.discard(key)
            self.missing.forget(key)
            log.warning("no longer matches discovery.label_selector: dropped", extra=on(key))
        self.source.targets = tuple(self.workloads)
        return joined

    def _still_leading(self) -> bool:
        """Asked again right before each write and Slack message: the lease may be lost
        while a pass runs (a slow query), and a lost lease means no write, no message."""
        return self.leader is None or self.leader.is_leader()

    def _lead(self, now: float) -> None:
        """Whether this pass acts; on becoming leader every cached Deployment fact is dropped."""
        leading = self._still_leading()
        if leading and not self.leading:
            log.warning("became leader: re-reading every Deployment before acting")
            for workload in self.workloads.values():
                workload.memory = None
            if self.discovery is not None:
                self.discovery.next_at = float("-inf")  # discover (and train) at once
        elif self.leading and not leading:
            log.warning("not the leader (any more): standby, no Kubernetes call, no Slack")
        self.leading = self.report.leading = leading
        if self.metrics is not None:
            self.metrics.leader(leading)

    def _workload_pass(self, w: Workload, *, sample: Sample, now: float) -> Decision | None:
        key = w.target.key
        if now <= w.last_t:
            log.debug(
                "skipped: already learned up to %.0f (now %.0f)", w.last_t, now, extra=on(key)
            )
            return None  # already learned from history up to here
        if w.gone_until is not None and not (self.leading and self.actor.recheck_gone(w, now=now)):
            return None  # its Deployment is gone (404): dropped until a recheck finds it
        x = sample.values.get(key, np.full(len(METRICS), np.nan))
        obs = w.detector.observe(t=now, x=x)
        w.last_t = now
        self._missing_alert(w, obs=obs, now=now)
        if w.memory is None and self.leading:
            self.actor.remember(w, now=now)
            if w.gone_until is not None:
                return None
        decision = self._decide(w, obs=obs, now=now, hpa_managed=w.hpa_managed)
        if decision.confirmed:
            self.report.anomaly(w, obs=obs)
        if not self.leading:
            if decision.action in ACTIONS:
                decision = unapplied(decision, "standby, not the leader")
        elif decision.action in ACTIONS or self._worth_rereading(
            w, obs=obs, first=decision, now=now
        ):
            decision = self.actor.act(w, first=decision, state=w.state, obs=obs, now=now)
        if decision.alert is not None:
            self.report.alert(
                decision.alert,
                workload=key,
                reason=decision.reason,
                obs=obs,
                dry=self.actor.dry_run(w),
            )
        if decision.resolved:
            since = w.state.incident_since
            duration = None if since is None else now - since
            self.report.resolved(w, obs=obs, duration_seconds=duration)
        w.state = decision.state
        self.report.decision(w, obs=obs, decision=decision, missing=sample.missing(key))
        return decision

    def _decide(self, w: Workload, *, obs: Observation, now: float, hpa_managed: bool) -> Decision:
        """The policy on what this process knows of the cluster (no API call)."""
        return decide(
            state=w.state,
            observation=obs,
            now=now,
            replicas=w.replicas if w.replicas is not None else w.target.min_replicas,
            memory=w.known(),
            limits=w.target.limits,
            params=self.config.policy,
            hpa_managed=hpa_managed,
            paused=w.paused,
        )

    def _worth_rereading(
        self, w: Workload, *, obs: Observation, first: Decision, now: float
    ) -> bool:
        """Whether the cached cluster facts (cooldown, replicas, HPA) may be all that holds an
        action back, so the cluster is re-read (by `act`) though the policy did not ask to act.

        An operator may end a cooldown early or scale down by hand. Rate-limited to once per
        `reread_seconds` per workload, so API calls follow incidents, not passes.
        """
        if now - w.read_at < self.reread_seconds:
            return False
        memory = w.memory or Memory()
        managed = (memory.replicas_set, memory.rollback_to, memory.hpa_original_min)
        if w.state.verify is not None or any(value is not None for value in managed):
            return True  # a hand edit, unready pods or the end of a rollback's wait
        params = self.config.policy
        if first.anomaly and counts(obs, params) and is_load_shaped(obs, params):
            return True  # an open, load-shaped incident that is not being acted on
        if not w.hpa_managed:
            return False
        return self._decide(w, obs=obs, now=now, hpa_managed=False).action in ACTIONS

    # -- reporting -----------------------------------------------------------------------

    def _action_done(self, w: Workload, obs: Observation, decision: Decision, dry: bool) -> None:
        """The action message; give_up and release say why in their alert instead."""
        if decision.alert is None:
            self.report.action(w, obs=obs, decision=decision, dry=dry)

    def _actor_alert(self, w: Workload, kind: str, reason: str) -> None:
        self.report.alert(kind, workload=w.target.key, reason=reason, obs=None, dry=False)

    def _missing_alert(self, w: Workload, *, obs: Observation, now: float) -> None:
        """metrics_missing after `missing_after_passes` passes without data; metrics_back."""
        kind = self.missing.workload(w.target.key, missing=obs.status == "missing")
        if kind is None:
            return
        passes = self.config.alerts.missing_after_passes
        if kind == "metrics_missing":
            reason = f"no data for {passes} passes in a row; no action is taken without data"
            log.warning("%s (alert %s)", reason, kind, extra=on(w.target.key))
        else:
            reason = "data is back"
            log.info("%s (alert %s)", reason, kind, extra=on(w.target.key))
        self.report.alert(kind, workload=w.target.key, reason=reason, obs=None, dry=False)

    def _prometheus_alert(self, *, ok: bool, now: float) -> None:
        kind = self.missing.prometheus(ok=ok)
        if kind is None:
            return
        passes = self.config.alerts.missing_after_passes
        if kind == "prometheus_down":
            reason = f"Prometheus queries failed {passes} passes in a row; no decisions meanwhile"
            log.error("%s (alert %s)", reason, kind)
        else:
            reason = "Prometheus answers again"
            log.warning("%s (alert %s)", reason, kind)
        self.report.alert(kind, workload=None, reason=reason, obs=None, dry=False)

    def _count_error(self, stage: str) -> None:
        if self.metrics is not None:
            self.metrics.pass_error(stage=stage)

    # -- forever -------------------------------------------------------------------------

    def run_forever(self, *, stop: threading.Event) -> None:
        """Train, then pass after pass until `stop` is set (SIGTERM finishes the pass)."""
        self.train_from_history(now=self.clock())
        while not stop.is_set():
            began = time.monotonic()
            self.run_pass(self.clock())
            stop.wait(max(0.0, self.config.poll_interval_seconds - (time.monotonic() - began)))
