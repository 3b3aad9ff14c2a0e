"""What an anomaly looks like, and so whether more replicas can help (pure).

Only the *material* deviations count: those at least `min_relative_change` away from
their baseline, relatively. See docs/safety.md, rule 3.
"""

from __future__ import annotations

import math
from typing import Literal, Protocol

from aegisops.detector import Deviation, Observation

Shape = Literal["surge", "slow_dependency", "traffic_drop", "memory_leak", "other"]

RPS = "rps"
P95 = "p95_latency_seconds"
MEMORY = "memory_bytes"
LOAD_SIGNALS = ((RPS, "up"), (P95, "up"))
"""Deviations that more replicas can relieve, when traffic is up too."""

WHY: dict[Shape, str] = {
    "surge": "a traffic surge",
    "slow_dependency": "a slow dependency",
    "traffic_drop": "a traffic drop",
    "memory_leak": "a memory leak",
    "other": "not load-shaped",
}
"""How a reason names each shape."""


class Materiality(Protocol):
    """What classification needs of the policy's parameters (PolicyParams has it)."""

    @property
    def min_relative_change(self) -> float: ...


def material(obs: Observation, params: Materiality) -> tuple[Deviation, ...]:
    """The deviations at least `min_relative_change` away from their baseline."""
    ratio = params.min_relative_change
    return tuple(d for d in obs.deviations if abs(d.value - d.baseline) >= ratio * abs(d.baseline))


def counts(obs: Observation, params: Materiality) -> bool:
    """A scored, anomalous sample with a material deviation: it moves an incident's streak."""
    if obs.status != "scored" or not obs.anomalous:
        return False
    return params.min_relative_change == 0 or bool(material(obs, params))


def is_load_shaped(obs: Observation, params: Materiality) -> bool:
    """True when the anomaly is a traffic surge: more replicas can help."""
    return classify(obs, params) == "surge"


def classify(obs: Observation, params: Materiality) -> Shape:
    """The shape of the anomaly in `obs`, over its material deviations.

    `surge`: rps materially up, or p95 materially up while rps is at least half that
    margin up (rps reported as deviating up: a rise within its noise is normal traffic).
    `traffic_drop`: rps materially down. `slow_dependency`: p95 up at normal traffic.
    `memory_leak`: memory up without a load signal. Anything else: `other`.
    """
    moved = {(d.metric, d.direction) for d in material(obs, params)}
    if (RPS, "up") in moved:
        return "surge"
    if (P95, "up") in moved and _rps_rise(obs) >= params.min_relative_change / 2 > 0:
        return "surge"
    if (RPS, "down") in moved:
        return "traffic_drop"
    if (P95, "up") in moved:
        return "slow_dependency"
    if (MEMORY, "up") in moved:
        return "memory_leak"
    return "other"


def p95_excess(obs: Observation) -> float | None:
    """How far p95 latency is above its baseline (seconds); None when not measured."""
    value = obs.values.get(P95, math.nan)
    baseline = _baseline(obs, P95)
    if not (math.isfinite(value) and math.isfinite(baseline)):
        return None
    return value - baseline


def describe(obs: Observation) -> str:
    """'p95_latency_seconds 0.84 vs baseline 0.05 (up), rps 150 vs baseline 40 (up)'."""
    if not obs.deviations:
        return f"anomaly score {obs.score:.2f}"
    return ", ".join(
        f"{d.metric} {d.value:.3g} vs baseline {d.baseline:.3g} ({d.direction})"
        for d in obs.deviations
    )


def _rps_rise(obs: Observation) -> float:
    """How far rps is up relative to its baseline (0.1: 10% up), counting only a reported
    deviation (unusual for this workload): traffic within its noise is normal traffic."""
    for d in obs.deviations:
        if d.metric == RPS and d.direction == "up" and d.baseline > 0:
            return (d.value - d.baseline) / d.baseline
    return 0.0


def _baseline(obs: Observation, metric: str) -> float:
    for d in obs.deviations:
        if d.metric == metric:
            return d.baseline
    return obs.baseline.get(metric, math.nan)
