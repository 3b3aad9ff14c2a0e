"""What one policy rule weighs (`Facts`) and what it decides (`Out`). Pure.

Shared by aegisops.rules and aegisops.verification (docs/safety.md, "Pure policy").
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from aegisops.detector import Observation
from aegisops.incident import HpaView, Limits, PolicyParams, PolicyState
from aegisops.memory import Memory
from aegisops.shape import Shape, describe

Action = Literal[
    "none",
    "alert",
    "scale_up",
    "scale_down",
    "rollback",
    "restart",
    "hpa_raise",
    "hpa_restore",
    "give_up",
    "release",
]
AlertKind = Literal["no_scale", "not_helping", "not_ready", "hands_off", "at_max", "hpa", "paused"]


@dataclass(frozen=True, kw_only=True)
class Facts:
    """What one decision knows: the observation, the cluster as last read, the state
    after the streaks moved, and the observation's shape (None when it does not count)."""

    observation: Observation
    now: float
    replicas: int
    memory: Memory
    limits: Limits
    params: PolicyParams
    hpa_managed: bool
    hpa: HpaView | None
    ready_replicas: int | None
    paused: bool
    state: PolicyState
    shape: Shape | None

    @property
    def cooling(self) -> bool:
        until = self.memory.cooldown_until
        return until is not None and self.now < until

    @property
    def calm_for(self) -> float:
        """Seconds since the last surge-shaped sample (or since the first one seen)."""
        clock = self.state.calm_clock
        return 0.0 if clock is None else self.now - clock

    def seen(self) -> str:
        return f"{describe(self.observation)} for {self.state.anomalous_streak} consecutive samples"


@dataclass(frozen=True, kw_only=True)
class Out:
    """What a rule decided: the action, the record and state to carry, the alert kind."""

    action: Action
    replicas_after: int
    reason: str
    memory: Memory
    state: PolicyState
    alert: AlertKind | None = None
    hpa_min_after: int | None = None


def mark_sent(state: PolicyState, kind: AlertKind | None) -> PolicyState:
    """`state` with alert `kind` recorded as sent (None: unchanged)."""
    return state if kind is None else replace(state, alerts_sent=state.alerts_sent | {kind})
