"""The loop: one pass = query, score, decide, act, report; `run_forever` repeats it.

Per target: a `WorkloadDetector` and a `PolicyState` here; what must survive a restart
lives in the Deployment's annotations. Kubernetes is called in proportion to actions: the
Deployment is read when a workload is first seen (a restarted engine knows its cooldown)
and re-read, with its Scale and the HPAs, only when the policy wants to act. Acting writes
the annotations first (resourceVersion precondition), then patches the scale: a crash in
between errs on the side of not acting twice. Everything is caught and logged per pass
and per workload; the loop never stops for a bad sample, query or API call.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from aegisops import notify
from aegisops.detector import METRICS, Observation, WorkloadDetector
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
from aegisops.prometheus import PrometheusError, Sample

if TYPE_CHECKING:
    from aegisops.config import Config, Target
    from aegisops.kube import KubeClient
    from aegisops.notify import SlackNotifier
    from aegisops.prometheus import PrometheusSource
    from aegisops.selfmetrics import SelfMetrics

log = logging.getLogger("aegisops.loop")
ACTIONS = ("scale_up", "scale_down")


@dataclass
class Workload:
    """One target's live state in this process."""

    target: Target
    detector: WorkloadDetector
    state: PolicyState = field(default_factory=PolicyState)
    memory: Memory | None = None  # None: not read from the cluster yet (or stale)
    replicas: int | None = None
    last_t: float = float("-inf")


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
            errors=errors,
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
            return None  # already learned from history up to here
        x = sample.values.get(key, np.full(len(METRICS), np.nan))
        obs = w.detector.observe(t=now, x=x)
        w.last_t = now
        if w.memory is None:
            self._remember(w)
        replicas = w.replicas if w.replicas is not None else w.target.min_replicas
        decision = decide(
            state=w.state,
            observation=obs,
            now=now,
            replicas=replicas,
            memory=w.memory or Memory(),
            limits=w.target.limits,
            params=self.config.policy,
        )
        if decision.confirmed:
            self._notify(
                notify.anomaly_message, w, obs=obs, score=obs.score or 0.0, threshold=obs.threshold
            )
        if decision.action in ACTIONS:
            decision = self._act(w, first=decision, state=w.state, obs=obs, now=now)
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

    def _remember(self, w: Workload) -> None:
        """Read the Deployment's annotations (Memory) and replicas; failures are logged."""
        ns, name = w.target.namespace, w.target.deployment
        try:
            deployment = self.kube.get_deployment(namespace=ns, name=name)
        except KubeError as err:
            log.error("cannot read the Deployment: %s", err, extra=_on(w.target.key))
            self._count_error("kubernetes")
            return
        memory, problems = memory_from_annotations(deployment.annotations)
        for problem in problems:
            log.warning("annotation %s", problem, extra=_on(w.target.key))
        w.memory, w.replicas = memory, deployment.replicas

    # -- acting --------------------------------------------------------------------------

    def _act(
        self, w: Workload, *, first: Decision, state: PolicyState, obs: Observation, now: float
    ) -> Decision:
        """Re-read the cluster, decide again on fresh facts (from the same prior state), apply."""
        t, ns, name = w.target, w.target.namespace, w.target.deployment
        try:
            hpa_managed = name in self.kube.hpa_targets(namespace=ns)
            deployment = self.kube.get_deployment(namespace=ns, name=name)
            scale = self.kube.get_scale(namespace=ns, name=name)
        except KubeError as err:
            log.error("not acting, cannot read the cluster: %s", err, extra=_on(t.key))
            self._count_error("kubernetes")
            w.memory = None
            return _not_applied(first, why="cannot read the cluster")
        memory, _ = memory_from_annotations(deployment.annotations)
        w.memory, w.replicas = memory, scale.replicas
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
                self._undo(w, before=before, resource_version=written.resource_version)
            elif result == "conflict":
                w.memory = None  # someone else wrote: re-read before the next decision
            return result
        w.replicas = decision.replicas_after
        return "applied"

    def _undo(self, w: Workload, *, before: Memory, resource_version: str) -> None:
        ns, name, key = w.target.namespace, w.target.deployment, w.target.key
        try:
            self.kube.patch_annotations(
                namespace=ns,
                name=name,
                annotations=_annotations(before),
                resource_version=resource_version,
            )
        except KubeError as err:
            log.error("could not put the annotations back: %s", err, extra=_on(key))
            return
        w.memory = before
        log.warning("annotations put back; the next pass may try again", extra=_on(key))

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

    def _action_done(
        self, w: Workload, *, obs: Observation, decision: Decision, result: str
    ) -> None:
        self._count_action(w, action=decision.action, result=result)
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

    def _count_action(self, w: Workload, *, action: str, result: str) -> None:
        if self.metrics is not None:
            self.metrics.action(w.target.key, action=action, result=result)

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
