"""The incident bookkeeping of the policy (pure): its parameters, limits and state.

`advance` moves the streaks: when an incident is confirmed and when it resolves.
`status_reason` says what was seen when no rule had more to say.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, get_args

from aegisops.detector import Observation
from aegisops.shape import classify, counts, describe

HpaMode = Literal["alert", "raise_min"]
HPA_MODES: tuple[str, ...] = get_args(HpaMode)


@dataclass(frozen=True, kw_only=True)
class PolicyParams:
    """When an anomaly counts and how often AegisOps may act (config section `policy`)."""

    consecutive_anomalies: int = 3
    cooldown_seconds: float = 300.0
    scale_down_after_seconds: float | None = 300.0
    """Calm time after which replicas step back to original-replicas (HPA's stabilization
    window); None disables scaling down."""
    min_relative_change: float = 0.2
    """A sample counts toward an incident only if some metric is this far from its
    baseline, relatively (0.2: 20%). Statistically unusual but small moves of a very
    steady metric (memory 1% up, p95 74 -> 80 ms) are not worth waking anyone, or
    scaling. 0 disables the gate."""
    verify_ready_seconds: float = 120.0
    """After a scale_up, the new pods must be ready within this long."""
    verify_passes: int = 5
    """After a scale_up, the anomaly must ease within this many scored observations."""
    hpa_mode: str = "alert"
    """With an HPA: `alert` only, or `raise_min` (raise its minReplicas, restore it later)."""
    restart_on_memory_leak: bool = False
    max_actions_per_pass: int = 10
    """Enforced by the loop, carried here with the other policy settings."""
    max_actions_per_hour: int = 60
    """Enforced by the loop, carried here with the other policy settings."""

    def __post_init__(self) -> None:
        checks = (
            (self.consecutive_anomalies >= 1, "consecutive_anomalies", ">= 1"),
            (self.cooldown_seconds >= 0, "cooldown_seconds", ">= 0"),
            (self.min_relative_change >= 0, "min_relative_change", ">= 0"),
            (self.verify_ready_seconds >= 0, "verify_ready_seconds", ">= 0"),
            (self.verify_passes >= 1, "verify_passes", ">= 1"),
            (self.max_actions_per_pass >= 1, "max_actions_per_pass", ">= 1"),
            (self.max_actions_per_hour >= 1, "max_actions_per_hour", ">= 1"),
        )
        for ok, name, bound in checks:
            if not ok:
                raise ValueError(f"{name} must be {bound}, got {getattr(self, name)}")
        window = self.scale_down_after_seconds
        if window is not None and window < 0:
            raise ValueError(f"scale_down_after_seconds must be >= 0 or None, got {window}")
        if self.hpa_mode not in HPA_MODES:
            raise ValueError(f"hpa_mode must be one of alert, raise_min, got {self.hpa_mode!r}")


@dataclass(frozen=True, kw_only=True)
class Limits:
    """Per-target replica bounds (config `targets[]`)."""

    min_replicas: int = 1
    max_replicas: int = 5
    scale_step: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.min_replicas <= self.max_replicas:
            raise ValueError(
                f"need 0 <= min_replicas <= max_replicas, got {self.min_replicas}"
                f" and {self.max_replicas}"
            )
        if self.scale_step < 1:
            raise ValueError(f"scale_step must be >= 1, got {self.scale_step}")


@dataclass(frozen=True, kw_only=True)
class HpaView:
    """The HPA that targets a Deployment, as the policy needs it."""

    name: str
    min_replicas: int
    max_replicas: int


@dataclass(frozen=True, kw_only=True)
class Verify:
    """An applied scale_up being checked: since when, from/to, p95 then, scored passes since."""

    since: float
    before: int
    after: int
    p95: float | None
    passes: int = 0


@dataclass(frozen=True, kw_only=True)
class PolicyState:
    """In-memory, per workload: the current streaks and whether an incident is open.

    `normal_streak` counts up to consecutive_anomalies (all that resolving needs).
    `verify`: the scale_up being checked. `gave_up`: scaling did not help, no more
    scale-ups this incident. `hands_off`: someone else set the replicas, no scaling
    for the rest of this incident. `restarted`: a leak restart was done this incident.
    `alerts_sent`: the alert kinds sent this incident (each at most once). These end
    when the incident resolves (and start empty when one is confirmed).
    `calm_clock`: since when no surge-shaped sample was seen (the first sample after a
    start, else the last surge); scale-down and hands-off measure calm from it.
    """

    anomalous_streak: int = 0
    normal_streak: int = 0
    incident_open: bool = False
    incident_since: float | None = None
    calm_since: float | None = None
    verify: Verify | None = None
    gave_up: bool = False
    hands_off: bool = False
    restarted: bool = False
    alerts_sent: frozenset[str] = frozenset()
    calm_clock: float | None = None


def _fresh(state: PolicyState) -> PolicyState:
    """`state` without what an incident held (a new one starts, or the last one ended)."""
    return replace(state, gave_up=False, hands_off=False, restarted=False, alerts_sent=frozenset())


def advance(
    state: PolicyState, obs: Observation, *, now: float, params: PolicyParams
) -> tuple[PolicyState, bool, bool]:
    """The next streaks; (state, confirmed now, resolved now)."""
    surge = counts(obs, params) and classify(obs, params) == "surge"
    if surge or state.calm_clock is None:
        state = replace(state, calm_clock=now)
    if obs.status != "scored":
        return state, False, False
    needed = params.consecutive_anomalies
    if counts(obs, params):
        streak = state.anomalous_streak + 1
        confirm = not state.incident_open and streak >= needed
        next_state = replace(
            state,
            anomalous_streak=streak,
            normal_streak=0,
            incident_open=state.incident_open or confirm,
            incident_since=now if confirm else state.incident_since,
            calm_since=None,
        )
        if confirm:  # a new incident: nothing carried from an earlier one
            next_state = _fresh(next_state)
        return next_state, confirm, False
    if not state.incident_open and state.normal_streak >= needed and state.calm_since is not None:
        return state, False, False  # settled calm: nothing changes (the common case)
    calm = min(state.normal_streak + 1, needed)
    resolve = state.incident_open and calm >= needed
    still_open = state.incident_open and not resolve
    next_state = replace(
        state,
        anomalous_streak=0,
        normal_streak=calm,
        incident_open=still_open,
        incident_since=state.incident_since if still_open else None,
        calm_since=state.calm_since if state.calm_since is not None or still_open else now,
    )
    if resolve:  # the incident is over, and so is what it held
        next_state = replace(_fresh(next_state), verify=None)
    return next_state, False, resolve


def status_reason(
    obs: Observation, state: PolicyState, params: PolicyParams, *, resolved: bool
) -> str:
    if resolved:
        return f"back to normal after {state.normal_streak} normal samples"
    if counts(obs, params):
        needed = params.consecutive_anomalies
        return f"{describe(obs)} ({state.anomalous_streak}/{needed} consecutive)"
    if obs.status == "scored" and obs.anomalous:
        change = f"{params.min_relative_change:.0%}"
        return f"unusual but small: {describe(obs)}, none {change} off baseline"
    if obs.status == "scored" and state.incident_open:
        needed = params.consecutive_anomalies
        return f"normal sample during incident ({state.normal_streak}/{needed} to resolve)"
    if obs.status == "scored":
        return f"normal (score {obs.score:.2f})"
    return {
        "learning": "learning baseline",
        "cold_start": "cold start, not scored",
        "idle": "idle (rps below idle_rps_below), not scored",
        "missing": "no data",
    }[obs.status]
