"""Pure policy: detector observations, time and replica state in, decisions out.

Time is Unix seconds, passed in. The state that must survive a restart (the
cooldown, the replica count before AegisOps first acted) is `Memory`, stored by the
loop as annotations on the Deployment. See docs/detector.md for the rules.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from aegisops.detector import Deviation, Observation

Action = Literal["none", "alert", "scale_up", "scale_down"]

ANNOTATION_PREFIX = "aegisops.dev/"
ORIGINAL_REPLICAS = "aegisops.dev/original-replicas"
LAST_ACTION = "aegisops.dev/last-action"
LAST_ACTION_AT = "aegisops.dev/last-action-at"
COOLDOWN_UNTIL = "aegisops.dev/cooldown-until"
ANNOTATION_KEYS = (ORIGINAL_REPLICAS, LAST_ACTION, LAST_ACTION_AT, COOLDOWN_UNTIL)

P95 = "p95_latency_seconds"
LOAD_SIGNALS = (("rps", "up"), (P95, "up"))
"""Deviations that more replicas can relieve; any other anomaly only alerts."""


@dataclass(frozen=True, kw_only=True)
class PolicyParams:
    """When an anomaly counts and how often AegisOps may act (config section `policy`)."""

    consecutive_anomalies: int = 3
    cooldown_seconds: float = 300.0
    scale_down_after_seconds: float | None = None
    """Calm time after which replicas go back to original-replicas; None disables."""
    min_relative_change: float = 0.2
    """A sample counts toward an incident only if some metric is this far from its
    baseline, relatively (0.2: 20%). Statistically unusual but small moves of a very
    steady metric (memory 1% up, p95 74 -> 80 ms) are not worth waking anyone, or
    scaling. 0 disables the gate."""

    def __post_init__(self) -> None:
        if self.consecutive_anomalies < 1:
            raise ValueError(
                f"consecutive_anomalies must be >= 1, got {self.consecutive_anomalies}"
            )
        if self.cooldown_seconds < 0:
            raise ValueError(f"cooldown_seconds must be >= 0, got {self.cooldown_seconds}")
        if self.scale_down_after_seconds is not None and self.scale_down_after_seconds < 0:
            raise ValueError("scale_down_after_seconds must be >= 0 or None")
        if self.min_relative_change < 0:
            raise ValueError(f"min_relative_change must be >= 0, got {self.min_relative_change}")


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
class Memory:
    """What AegisOps remembers across restarts (the Deployment's annotations)."""

    original_replicas: int | None = None
    last_action: str | None = None
    last_action_at: float | None = None
    cooldown_until: float | None = None


@dataclass(frozen=True, kw_only=True)
class PolicyState:
    """In-memory, per workload: the current streaks and whether an incident is open.

    `normal_streak` counts up to consecutive_anomalies (all that resolving needs).
    """

    anomalous_streak: int = 0
    normal_streak: int = 0
    incident_open: bool = False
    incident_since: float | None = None
    calm_since: float | None = None


@dataclass(frozen=True, kw_only=True)
class Decision:
    """What to do about one observation, why, and the state to carry forward.

    `confirmed`: an incident was confirmed by this observation (notify once).
    `resolved`: the open incident ended with this observation.
    `anomaly`: an incident is open after this observation (the `aegisops_anomaly` gauge).
    `memory`: the annotations to hold after acting (equal to the input when not acting).
    """

    action: Action
    replicas_before: int
    replicas_after: int
    reason: str
    confirmed: bool
    resolved: bool
    anomaly: bool
    state: PolicyState
    memory: Memory


def format_time(t: float) -> str:
    """Unix seconds -> RFC 3339 UTC, whole seconds (rounded up: a cooldown never shrinks)."""
    return datetime.fromtimestamp(math.ceil(t), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> float:
    """RFC 3339 (with Z or an offset) -> Unix seconds; ValueError otherwise."""
    parsed = datetime.fromisoformat(text.strip())
    if parsed.tzinfo is None:
        raise ValueError("no UTC offset")
    return parsed.timestamp()


def memory_to_annotations(memory: Memory) -> dict[str, str]:
    """The annotations for `memory`; keys whose value is None are left out.

    A merge patch should set the others in ANNOTATION_KEYS to null to clear them.
    """
    values = {
        ORIGINAL_REPLICAS: None
        if memory.original_replicas is None
        else str(memory.original_replicas),
        LAST_ACTION: memory.last_action,
        LAST_ACTION_AT: None
        if memory.last_action_at is None
        else format_time(memory.last_action_at),
        COOLDOWN_UNTIL: None
        if memory.cooldown_until is None
        else format_time(memory.cooldown_until),
    }
    return {key: value for key, value in values.items() if value is not None}


def memory_from_annotations(
    annotations: Mapping[str, str] | None,
) -> tuple[Memory, tuple[str, ...]]:
    """Read Memory from a Deployment's annotations, tolerantly.

    Returns the memory and one message per annotation that was ignored because it
    could not be read (the loop logs them); never raises on bad values.
    """
    annotations = annotations or {}
    problems: list[str] = []
    original: int | None = None
    raw = annotations.get(ORIGINAL_REPLICAS)
    if raw is not None:
        if re.fullmatch(r"[0-9]+", raw.strip()):  # ASCII digits only: "²".isdigit() is True
            original = int(raw)
        else:
            problems.append(f"{ORIGINAL_REPLICAS}: {raw!r} is not a replica count; ignored")
    times: dict[str, float | None] = {}
    for key in (LAST_ACTION_AT, COOLDOWN_UNTIL):
        raw = annotations.get(key)
        times[key] = None
        if raw is not None:
            try:
                times[key] = parse_time(raw)
            except ValueError:
                problems.append(f"{key}: {raw!r} is not an RFC 3339 UTC timestamp; ignored")
    memory = Memory(
        original_replicas=original,
        last_action=annotations.get(LAST_ACTION),
        last_action_at=times[LAST_ACTION_AT],
        cooldown_until=times[COOLDOWN_UNTIL],
    )
    return memory, tuple(problems)


def decide(
    *,
    state: PolicyState,
    observation: Observation,
    now: float,
    replicas: int,
    memory: Memory,
    limits: Limits,
    params: PolicyParams,
    hpa_managed: bool = False,
) -> Decision:
    """Decide what to do about one observation of one workload.

    Only scored observations move the streaks; learning, cold-start, idle and
    missing samples hold them (neither confirm nor break an incident).
    """
    new_state, confirmed, resolved = _advance(state, observation, now=now, params=params)
    acting = new_state.incident_open and counts(observation, params)
    restoring = params.scale_down_after_seconds is not None and memory.original_replicas is not None
    action: Action = "none"
    after, reason, new_memory = replicas, "", memory
    if acting or restoring:
        context = _Context(
            observation=observation,
            now=now,
            replicas=replicas,
            memory=memory,
            limits=limits,
            params=params,
            hpa_managed=hpa_managed,
            state=new_state,
        )
        action, after, reason, new_memory = _weigh(context, confirmed=confirmed, acting=acting)
    if not reason:  # nothing weighed up: say what was seen
        reason = _status_reason(observation, new_state, params, resolved=resolved)
    return Decision(
        action=action,
        replicas_before=replicas,
        replicas_after=after,
        reason=reason,
        confirmed=confirmed,
        resolved=resolved,
        anomaly=new_state.incident_open,
        state=new_state,
        memory=new_memory,
    )


@dataclass(frozen=True, kw_only=True)
class _Context:
    observation: Observation
    now: float
    replicas: int
    memory: Memory
    limits: Limits
    params: PolicyParams
    hpa_managed: bool
    state: PolicyState


_Outcome = tuple[Action, int, str, Memory]


def _advance(
    state: PolicyState, obs: Observation, *, now: float, params: PolicyParams
) -> tuple[PolicyState, bool, bool]:
    """The next streaks; (state, confirmed now, resolved now)."""
    if obs.status != "scored":
        return state, False, False
    needed = params.consecutive_anomalies
    if counts(obs, params):
        streak = state.anomalous_streak + 1
        confirm = not state.incident_open and streak >= needed
        next_state = PolicyState(
            anomalous_streak=streak,
            normal_streak=0,
            incident_open=state.incident_open or confirm,
            incident_since=now if confirm else state.incident_since,
            calm_since=None,
        )
        return next_state, confirm, False
    if not state.incident_open and state.normal_streak >= needed and state.calm_since is not None:
        return state, False, False  # settled calm: nothing changes (the common case)
    calm = min(state.normal_streak + 1, needed)
    resolve = state.incident_open and calm >= needed
    still_open = state.incident_open and not resolve
    next_state = PolicyState(
        anomalous_streak=0,
        normal_streak=calm,
        incident_open=still_open,
        incident_since=state.incident_since if still_open else None,
        calm_since=state.calm_since if state.calm_since is not None or still_open else now,
    )
    return next_state, False, resolve


def _on_incident(ctx: _Context, *, confirmed: bool) -> _Outcome:
    """An anomalous sample while an incident is open: scale, alert, or hold."""
    obs, memory, limits, replicas = ctx.observation, ctx.memory, ctx.limits, ctx.replicas
    seen = f"{describe(obs)} for {ctx.state.anomalous_streak} consecutive samples"
    hold: Action = "alert" if confirmed else "none"
    if not is_load_shaped(obs, ctx.params):
        return hold, replicas, f"{seen}; not load-shaped, scaling cannot fix it", memory
    if ctx.hpa_managed:
        return hold, replicas, f"{seen}; an HPA manages this Deployment, not scaling", memory
    if memory.cooldown_until is not None and ctx.now < memory.cooldown_until:
        until = format_time(memory.cooldown_until)
        return "none", replicas, f"{seen}; cooldown until {until}", memory
    if _relieved(ctx):
        reason = f"{seen}; p95 latency back at baseline since the last scale_up, holding"
        return "none", replicas, reason, memory
    if replicas >= limits.max_replicas:
        return hold, replicas, f"{seen}; at max replicas ({limits.max_replicas})", memory
    after = min(limits.max_replicas, max(replicas + limits.scale_step, limits.min_replicas))
    return (
        "scale_up",
        after,
        f"{seen}; scale_up {replicas}->{after}",
        _acted(ctx, "scale_up", after),
    )


def _weigh(ctx: _Context, *, confirmed: bool, acting: bool) -> _Outcome:
    if acting:
        return _on_incident(ctx, confirmed=confirmed)
    target = _restore_target(ctx)
    if target is None:
        return "none", ctx.replicas, "", ctx.memory
    calm_for = ctx.now - (ctx.state.calm_since or ctx.now)
    reason = f"calm for {calm_for:.0f}s; scale_down {ctx.replicas}->{target} (original replicas)"
    return "scale_down", target, reason, _acted(ctx, "scale_down", target)


def _restore_target(ctx: _Context) -> int | None:
    """original-replicas, when scale-down is enabled and the workload has been calm long enough."""
    params, memory, state = ctx.params, ctx.memory, ctx.state
    if params.scale_down_after_seconds is None or memory.original_replicas is None:
        return None
    target = max(memory.original_replicas, ctx.limits.min_replicas)
    calm = (
        state.calm_since is not None
        and ctx.now - state.calm_since >= params.scale_down_after_seconds
    )
    cooling = memory.cooldown_until is not None and ctx.now < memory.cooldown_until
    if ctx.replicas <= target or not calm or cooling or ctx.hpa_managed or state.incident_open:
        return None
    return target


def _acted(ctx: _Context, action: Action, after: int) -> Memory:
    original = ctx.memory.original_replicas
    if action == "scale_up" and original is None:
        original = ctx.replicas
    elif action == "scale_down":
        original = None
    return Memory(
        original_replicas=original,
        last_action=f"{action} {ctx.replicas}->{after}",
        last_action_at=ctx.now,
        cooldown_until=ctx.now + ctx.params.cooldown_seconds,
    )


def _status_reason(
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


def _relieved(ctx: _Context) -> bool:
    """This incident was already scaled and latency (when measured) is no longer up.

    More traffic served at baseline latency is no reason to keep adding replicas.
    """
    memory, obs, since = ctx.memory, ctx.observation, ctx.state.incident_since
    scaled = (
        since is not None
        and memory.last_action_at is not None
        and memory.last_action_at >= since
        and (memory.last_action or "").startswith("scale_up")
    )
    latency_up = any(d.metric == P95 and d.direction == "up" for d in material(obs, ctx.params))
    measured = math.isfinite(obs.values.get(P95, math.nan))  # missing p95 arrives as NaN
    return scaled and measured and not latency_up


def material(obs: Observation, params: PolicyParams) -> tuple[Deviation, ...]:
    """The deviations at least `min_relative_change` away from their baseline."""
    ratio = params.min_relative_change
    return tuple(d for d in obs.deviations if abs(d.value - d.baseline) >= ratio * abs(d.baseline))


def counts(obs: Observation, params: PolicyParams) -> bool:
    """A scored, anomalous sample with a material deviation: it moves an incident's streak."""
    if obs.status != "scored" or not obs.anomalous:
        return False
    return params.min_relative_change == 0 or bool(material(obs, params))


def is_load_shaped(obs: Observation, params: PolicyParams) -> bool:
    """True when rps and/or p95 latency are materially up: more replicas can help."""
    return any((d.metric, d.direction) in LOAD_SIGNALS for d in material(obs, params))


def describe(obs: Observation) -> str:
    """'p95_latency_seconds 0.84 vs baseline 0.05 (up), rps 150 vs baseline 40 (up)'."""
    if not obs.deviations:
        return f"anomaly score {obs.score:.2f}"
    return ", ".join(
        f"{d.metric} {d.value:.3g} vs baseline {d.baseline:.3g} ({d.direction})"
        for d in obs.deviations
    )
