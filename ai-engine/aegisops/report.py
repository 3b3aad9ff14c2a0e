"""Reporting for the loop: one log line per decision, and the Slack messages.

A follower (standby) logs its decision lines marked `standby` and sends nothing. Sending is
guarded: whatever goes wrong with Slack, the pass (and the action) goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aegisops import messages
from aegisops.apply import what
from aegisops.detector import METRICS, Observation
from aegisops.logs import on
from aegisops.policy import Decision

if TYPE_CHECKING:
    from aegisops.act import Workload
    from aegisops.selfmetrics import SelfMetrics

log = logging.getLogger("aegisops.loop")


class Reporter:
    """Decision lines, metrics and Slack messages; `leading` False: log only (standby)."""

    def __init__(
        self,
        *,
        notifier: Any,
        metrics: SelfMetrics | None,
        dry_run: Callable[[Workload], bool],
        actions: tuple[str, ...],
        still_leading: Callable[[], bool] = lambda: True,
    ) -> None:
        self.notifier = notifier
        self.still_leading = still_leading  # asked at each send: the lease can go mid-pass
        self.metrics = metrics
        self.dry_run = dry_run
        self.actions = actions
        self.leading = True

    def decision(
        self, w: Workload, *, obs: Observation, decision: Decision, missing: tuple[str, ...]
    ) -> None:
        key = w.target.key
        dry = self.dry_run(w)
        marker = "**DRY-RUN** " if dry and decision.action in self.actions else ""
        standby = "" if self.leading else "standby "
        gaps = f"; no data for {', '.join(missing)}" if missing else ""
        log.info(
            "%s%s%s; %s -> %s: %s%s",
            standby,
            marker,
            seen(obs),
            score_text(obs),
            what(decision),
            decision.reason,
            gaps,
            extra={
                "workload": key,
                "action": decision.action,
                "score": obs.score,
                "anomaly": decision.anomaly,
                "dry_run": dry,
                "standby": not self.leading,
            },
        )
        if self.metrics is not None:
            self.metrics.workload(
                key, score=obs.score, anomaly=decision.anomaly, replicas=w.replicas
            )

    def anomaly(self, w: Workload, *, obs: Observation) -> None:
        self.send(
            messages.anomaly_message,
            w,
            obs=obs,
            score=obs.score or 0.0,
            threshold=obs.threshold,
        )

    def resolved(self, w: Workload, *, obs: Observation, duration_seconds: float | None) -> None:
        self.send(
            messages.resolved_message,
            w,
            obs=obs,
            replicas=w.replicas,
            duration_seconds=duration_seconds,
        )

    def action(self, w: Workload, *, obs: Observation, decision: Decision, dry: bool) -> None:
        hpa: dict[str, Any] = {}
        if decision.action in ("hpa_raise", "hpa_restore") and w.hpa is not None:
            hpa = {
                "hpa": w.hpa.name,
                "hpa_min_before": w.hpa.min_replicas,  # as read just before the write
                "hpa_min_after": decision.hpa_min_after,
            }
        self.send(
            messages.action_message,
            w,
            obs=obs,
            dry=dry,
            action=decision.action,
            replicas_before=decision.replicas_before,
            replicas_after=decision.replicas_after,
            reason=decision.reason,
            score=obs.score,
            threshold=obs.threshold,
            **hpa,
        )

    def alert(
        self, kind: str, *, workload: str | None, reason: str, obs: Observation | None, dry: bool
    ) -> None:
        """One alert message (`decision.alert` kinds, missing data, caps, forbidden);
        `workload` None: about the whole engine (Prometheus down)."""
        self._post(
            workload,
            build=lambda: messages.alert_message(
                kind=kind,
                workload=workload,
                reason=reason,
                metrics=() if obs is None else metric_lines(obs),
                dry_run=dry,
            ),
        )

    def send(
        self,
        build: Callable[..., dict[str, Any]],
        w: Workload,
        *,
        obs: Observation,
        dry: bool | None = None,
        **fields: Any,
    ) -> None:
        """One Slack message: anomaly confirmed, action taken, or resolved (leader only)."""
        self._post(
            w.target.key,
            build=lambda: build(
                workload=w.target.key,
                metrics=metric_lines(obs),
                dry_run=self.dry_run(w) if dry is None else dry,
                **fields,
            ),
        )

    def _post(self, key: str | None, *, build: Callable[[], dict[str, Any]]) -> None:
        """Build and send one message, leader only; a failure is logged, never raised.
        `key` None: about the whole engine, the log line names no workload."""
        if not self.leading or not self.still_leading():
            return
        try:
            self.notifier.send(build())
        except Exception as err:  # the type only: an error may carry the webhook URL
            log.error(
                "Slack notification failed (%s)", type(err).__name__, extra=on(key) if key else {}
            )


def seen(obs: Observation) -> str:
    """`rps=9.00 req/s (baseline 9.89 req/s) p95_latency_seconds=73 ms (baseline 74 ms) ...`"""
    show, base = messages.format_value, obs.baseline
    return " ".join(
        f"{m}={show(m, obs.values.get(m))}"
        + (f" (baseline {show(m, base[m])})" if m in base else "")
        for m in METRICS
    )


def score_text(obs: Observation) -> str:
    if obs.score is None:
        return f"{obs.status}, not scored"
    return f"score {obs.score:.2f} vs threshold {obs.threshold:.2f}"


def metric_lines(obs: Observation) -> tuple[messages.MetricLine, ...]:
    directions = {d.metric: d.direction for d in obs.deviations}
    values: dict[str, Any] = {m: obs.values.get(m, float("nan")) for m in METRICS}
    return messages.metric_lines(values=values, baseline=obs.baseline, directions=directions)
