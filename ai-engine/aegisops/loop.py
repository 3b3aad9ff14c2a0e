"""The loop: one pass = query, score, decide, act, report; `run_forever` repeats it.

Per target: a `WorkloadDetector` and a `PolicyState` here; what must survive a restart
lives in the Deployment's annotations, read and written by `aegisops.act` (the Kubernetes
side). Kubernetes is called in proportion to actions: the Deployment is read when a
workload is first seen (a restarted engine knows its cooldown) and re-read, with its Scale
and the HPAs, only when the policy wants to act. Everything is caught and logged per pass
and per workload; the loop never stops for a bad sample, query, API call or Slack message.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from aegisops import notify
from aegisops.act import ACTIONS, Actor, Workload
from aegisops.detector import METRICS, Observation, WorkloadDetector
from aegisops.policy import Decision, Memory, counts, decide, is_load_shaped
from aegisops.prometheus import PrometheusError, Sample

if TYPE_CHECKING:
    from aegisops.config import Config
    from aegisops.kube import KubeClient
    from aegisops.notify import SlackNotifier
    from aegisops.prometheus import PrometheusSource
    from aegisops.selfmetrics import SelfMetrics

log = logging.getLogger("aegisops.loop")
__all__ = ["ACTIONS", "Engine", "PassResult", "Workload"]


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
        notifier: SlackNotifier,
        metrics: SelfMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.source = source
        self.kube = kube
        self.notifier = notifier
        self.metrics = metrics
        self.clock = clock
        self.passes = 0
        self.workloads = {
            t.key: Workload(target=t, detector=WorkloadDetector(params=config.detector))
            for t in config.targets
        }
        # cached cluster facts are re-read at most this often while they hold an action back
        self.reread_seconds = max(config.policy.cooldown_seconds / 10, config.poll_interval_seconds)
        self.actor = Actor(config=config, kube=kube, metrics=metrics, on_done=self._action_done)

    # -- start ---------------------------------------------------------------------------

    def train_from_history(self, *, now: float) -> None:
        """Learn the baseline from Prometheus history, so a restart needs no new learning."""
        step = self.config.poll_interval_seconds
        start = int(now - self.config.prometheus.history_lookback_seconds)
        try:
            history = self.source.history(start=start, end=int(now), step=step)
        except PrometheusError as err:
            log.warning("history unavailable, learning from live samples: %s", err)
            return
        needed = self.config.detector.baseline_samples
        for key, workload in self.workloads.items():
            past = history.get(key)
            if past is None or len(past.timestamps) == 0:
                log.info(
                    "no history, learning from live samples (%d needed)", needed, extra=_on(key)
                )
                continue
            try:
                gathered = workload.detector.fit_history(
                    timestamps=past.timestamps.tolist(), X=past.X.tolist()
                )
            except Exception as err:  # one workload's history never stops the start
                log.error(
                    "cannot train from history (%s: %s), learning from live samples",
                    type(err).__name__,
                    err,
                    extra=_on(key),
                )
                workload.detector = WorkloadDetector(params=self.config.detector)
                continue
            workload.last_t = float(past.timestamps[-1])
            state = "ready" if workload.detector.ready else "still learning"
            log.info(
                "trained from history: %d of %d points usable, %s (baseline %d samples)",
                gathered,
                len(past.timestamps),
                state,
                needed,
                extra=_on(key),
            )

    # -- one pass ------------------------------------------------------------------------

    def run_pass(self, now: float) -> PassResult:
        """Query, score, decide, act, report. Never raises for a peer's failure."""
        self.passes += 1
        started = time.monotonic()
        anomalies = actions = errors = 0
        self.actor.errors = 0
        try:
            sample: Sample | None = self.source.sample(now)
        except PrometheusError as err:
            log.error(
                "pass %d: Prometheus query failed, no decisions this pass: %s", self.passes, err
            )
            self._count_error("prometheus")
            sample, errors = None, 1
        if sample is not None:
            for key, workload in self.workloads.items():
                try:
                    decision = self._workload_pass(workload, sample=sample, now=now)
                except Exception as err:  # one workload never stops the pass
                    log.exception("pass failed: %s", err, extra=_on(key))
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
        log.info("%s", result)
        if self.metrics is not None:
            self.metrics.pass_done(duration_seconds=result.seconds)
            self.metrics.heartbeat(now)
        return result

    def _workload_pass(self, w: Workload, *, sample: Sample, now: float) -> Decision | None:
        key = w.target.key
        if now <= w.last_t:
            log.debug(
                "skipped: already learned up to %.0f (now %.0f)", w.last_t, now, extra=_on(key)
            )
            return None  # already learned from history up to here
        x = sample.values.get(key, np.full(len(METRICS), np.nan))
        obs = w.detector.observe(t=now, x=x)
        w.last_t = now
        if w.memory is None:
            self.actor.remember(w, now=now)
        decision = self._decide(w, obs=obs, now=now, hpa_managed=w.hpa_managed)
        if decision.confirmed:
            self._notify(
                notify.anomaly_message, w, obs=obs, score=obs.score or 0.0, threshold=obs.threshold
            )
        if decision.action in ACTIONS or self._worth_rereading(w, obs=obs, first=decision, now=now):
            decision = self.actor.act(w, first=decision, state=w.state, obs=obs, now=now)
        if decision.resolved:
            since = w.state.incident_since
            self._notify(
                notify.resolved_message,
                w,
                obs=obs,
                replicas=w.replicas,
                duration_seconds=None if since is None else now - since,
            )
        w.state = decision.state
        self._report(w, obs=obs, decision=decision, missing=sample.missing(key))
        return decision

    def _decide(self, w: Workload, *, obs: Observation, now: float, hpa_managed: bool) -> Decision:
        """The policy on what this process knows of the cluster (no API call)."""
        return decide(
            state=w.state,
            observation=obs,
            now=now,
            replicas=w.replicas if w.replicas is not None else w.target.min_replicas,
            memory=w.memory or Memory(),
            limits=w.target.limits,
            params=self.config.policy,
            hpa_managed=hpa_managed,
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
        params = self.config.policy
        if first.anomaly and counts(obs, params) and is_load_shaped(obs, params):
            return True  # an open, load-shaped incident that is not being acted on
        if not w.hpa_managed:
            return False
        return self._decide(w, obs=obs, now=now, hpa_managed=False).action in ACTIONS

    # -- reporting -----------------------------------------------------------------------

    def _report(
        self, w: Workload, *, obs: Observation, decision: Decision, missing: tuple[str, ...]
    ) -> None:
        key = w.target.key
        dry = "**DRY-RUN** " if self.config.dry_run and decision.action in ACTIONS else ""
        what: str = decision.action
        if decision.action in ACTIONS:
            what = f"{decision.action} {decision.replicas_before}->{decision.replicas_after}"
        gaps = f"; no data for {', '.join(missing)}" if missing else ""
        log.info(
            "%s%s; %s -> %s: %s%s",
            dry,
            _seen(obs),
            _score(obs),
            what,
            decision.reason,
            gaps,
            extra=_on(
                key,
                action=decision.action,
                score=obs.score,
                anomaly=decision.anomaly,
                dry_run=self.config.dry_run,
            ),
        )
        if self.metrics is not None:
            self.metrics.workload(
                key, score=obs.score, anomaly=decision.anomaly, replicas=w.replicas
            )

    def _notify(
        self, build: Callable[..., dict[str, Any]], w: Workload, *, obs: Observation, **fields: Any
    ) -> None:
        """One Slack message: anomaly confirmed, action taken, or resolved.

        Guarded: whatever goes wrong with Slack, the pass (and the action) goes on.
        """
        try:
            payload = build(
                workload=w.target.key,
                metrics=_metric_lines(obs),
                dry_run=self.config.dry_run,
                **fields,
            )
            self.notifier.send(payload)
        except Exception as err:  # the type only: an error may carry the webhook URL
            log.error("Slack notification failed (%s)", type(err).__name__, extra=_on(w.target.key))

    def _action_done(self, w: Workload, obs: Observation, decision: Decision) -> None:
        self._notify(
            notify.action_message,
            w,
            obs=obs,
            action=decision.action,
            replicas_before=decision.replicas_before,
            replicas_after=decision.replicas_after,
            reason=decision.reason,
            score=obs.score,
            threshold=obs.threshold,
        )

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


def _on(key: str, **fields: Any) -> dict[str, Any]:
    """`extra=` for a log record about one workload (text shows it, json gets the fields)."""
    return {"workload": key, **fields}


def _seen(obs: Observation) -> str:
    """`rps=9.00 req/s (baseline 9.89 req/s) p95_latency_seconds=73 ms (baseline 74 ms) ...`"""
    show, base = notify.format_value, obs.baseline
    return " ".join(
        f"{m}={show(m, obs.values.get(m))}"
        + (f" (baseline {show(m, base[m])})" if m in base else "")
        for m in METRICS
    )


def _score(obs: Observation) -> str:
    if obs.score is None:
        return f"{obs.status}, not scored"
    return f"score {obs.score:.2f} vs threshold {obs.threshold:.2f}"


def _metric_lines(obs: Observation) -> tuple[notify.MetricLine, ...]:
    directions = {d.metric: d.direction for d in obs.deviations}
    values: dict[str, Any] = {m: obs.values.get(m, float("nan")) for m in METRICS}
    return notify.metric_lines(values=values, baseline=obs.baseline, directions=directions)
