"""The policy's rules, in order of precedence (docs/safety.md, "Pure policy"). Pure.

`weigh` takes the facts of one observation (after the streaks moved) and returns what
to do: an action with the record to write, or a hold with its reason and alert kind.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

from aegisops.detector import Observation
from aegisops.incident import HpaView, Limits, PolicyParams, PolicyState, Verify, status_reason
from aegisops.memory import PAUSED, Memory, format_time
from aegisops.shape import P95, WHY, Shape, counts, describe, material, p95_excess

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
    def calm_for(self) -> float | None:
        """Seconds without an incident, or None while one is open (or not yet calm)."""
        since = self.state.calm_since
        return None if self.state.incident_open or since is None else self.now - since

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


def weigh(f: Facts, *, confirmed: bool, acting: bool) -> Out:
    """The first rule that applies decides (numbered as in docs/detector.md, "Policy").

    `acting`: an anomalous sample of an open incident. An empty reason lets the caller
    say what was seen.
    """
    if f.paused:  # 1
        why = status_reason(f.observation, f.state, f.params, resolved=False)
        return _hold(f, f"{why}; paused ({PAUSED}), no action", confirmed, "paused")
    released = _hands_off(f)  # 2
    if released is not None:
        return released
    f, verdict = _verify(f)  # 3, on every pass while a scale_up is verified, cooldown or not
    if verdict is not None:
        return verdict
    held = _on_incident(f, confirmed=confirmed) if acting else None  # 4, 5, 6
    if held is not None and held.action != "none":
        return held
    if f.memory.rollback_to is not None and not f.cooling and not f.hpa_managed:  # 7
        return _rollback(f)
    if held is not None:
        return held
    return _when_calm(f) or _hold(f, "", False, None)  # 8


def _hold(f: Facts, reason: str, confirmed: bool, alert: AlertKind | None) -> Out:
    """No write: `alert` (with its kind) when an incident was confirmed now, else none."""
    return Out(
        action="alert" if confirmed and alert else "none",
        replicas_after=f.replicas,
        reason=reason,
        memory=f.memory,
        state=f.state,
        alert=alert if confirmed else None,
    )


def _act(f: Facts, action: Action, after: int, reason: str, **memory: object) -> Out:
    """An action that writes the record: last-action, a new cooldown, and `memory` changes."""
    note = {"restart": "restart"}.get(action, f"{action} {f.replicas}->{after}")
    changes = {
        "last_action": note,
        "last_action_at": f.now,
        "cooldown_until": f.now + f.params.cooldown_seconds,
        **memory,
    }
    return Out(
        action=action,
        replicas_after=after,
        reason=reason,
        memory=replace(f.memory, **changes),  # type: ignore[arg-type]
        state=f.state,
    )


CLEARED = {"original_replicas": None, "replicas_set": None, "rollback_to": None}


def _hands_off(f: Facts) -> Out | None:
    """Rule 2: someone else set the replicas (or an HPA now owns them): clear the record."""
    memory, replicas = f.memory, f.replicas
    recorded = any(getattr(memory, key) is not None for key in CLEARED)
    if f.hpa_managed and recorded:
        name = f" {f.hpa.name}" if f.hpa else ""
        reason = f"an HPA{name} now manages this Deployment: record cleared, the HPA owns replicas"
        out = _act(f, "release", replicas, reason, **CLEARED)
        return replace(out, alert="hpa", memory=replace(out.memory, last_action="release (hpa)"))
    set_to = memory.replicas_set
    if set_to is None or f.hpa_managed or replicas == set_to:
        return None
    back = not f.state.incident_open and replicas == memory.original_replicas
    reason = (
        f"replicas are {replicas}, AegisOps set {set_to}: someone else changed them; "
        + ("back at original, record cleared" if back else "hands off, record cleared")
        + (", no scaling for the rest of this incident" if f.state.incident_open else "")
    )
    out = _act(f, "release", replicas, reason, **CLEARED)
    note = f"release {set_to}->{replicas} (set by someone else)"
    state = replace(f.state, hands_off=f.state.incident_open, verify=None)
    alert: AlertKind | None = None if back else "hands_off"
    return replace(out, memory=replace(out.memory, last_action=note), state=state, alert=alert)


def _on_incident(f: Facts, *, confirmed: bool) -> Out:
    """Rules 4-6 on an anomalous sample of an open incident: what its shape allows."""
    obs, memory, limits, replicas = f.observation, f.memory, f.limits, f.replicas
    if f.shape != "surge":
        return _no_scale(f, confirmed=confirmed)
    if f.hpa_managed:
        return _with_hpa(f, confirmed=confirmed)
    if f.state.hands_off:
        return _hold(
            f, f"{f.seen()}; hands off: the replicas were set by someone else", False, None
        )
    if f.state.gave_up:
        reason = f"{f.seen()}; scaling did not help in this incident, no more scale-ups"
        return _hold(f, reason, False, None)
    if f.cooling:
        return _hold(
            f, f"{f.seen()}; cooldown until {format_time(memory.cooldown_until or 0)}", False, None
        )
    if _relieved(f):
        reason = f"{f.seen()}; p95 latency back at baseline since the last scale_up, holding"
        return _hold(f, reason, False, None)
    if replicas >= limits.max_replicas:
        return _hold(f, f"{f.seen()}; at max replicas ({limits.max_replicas})", confirmed, "at_max")
    after = min(limits.max_replicas, max(replicas + limits.scale_step, limits.min_replicas))
    out = _act(
        f,
        "scale_up",
        after,
        f"{f.seen()}; scale_up {replicas}->{after}",
        original_replicas=replicas
        if memory.original_replicas is None
        else memory.original_replicas,
        replicas_set=after,
    )
    p95 = obs.values.get(P95, math.nan)
    verify = Verify(
        since=f.now, before=replicas, after=after, p95=p95 if math.isfinite(p95) else None
    )
    return replace(out, state=replace(f.state, verify=verify))


def _no_scale(f: Facts, *, confirmed: bool) -> Out:
    """Rule 4: not a surge. Alert why (once), or restart a leaking workload when enabled."""
    shape = f.shape or "other"
    context = {"slow_dependency": " at normal traffic", "memory_leak": " without more load"}
    why = f"{describe(f.observation)}{context.get(shape, '')}: {WHY[shape]}, scaling cannot fix it"
    if shape == "memory_leak" and f.params.restart_on_memory_leak:
        if f.cooling:
            until = format_time(f.memory.cooldown_until or 0)
            return _hold(f, f"{why}; cooldown until {until}", confirmed, "no_scale")
        return _act(f, "restart", f.replicas, f"{why}; restart (restart_on_memory_leak)")
    return _hold(f, why, confirmed, "no_scale")


def _with_hpa(f: Facts, *, confirmed: bool) -> Out:
    """Rule 5: an HPA targets the Deployment: alert, or raise its minReplicas."""
    hpa, seen = f.hpa, f.seen()
    if hpa is None or f.params.hpa_mode != "raise_min":
        name = f" {hpa.name}" if hpa else ""
        return _hold(
            f, f"{seen}; an HPA{name} manages this Deployment, not scaling", confirmed, "hpa"
        )
    if f.cooling:
        return _hold(
            f, f"{seen}; cooldown until {format_time(f.memory.cooldown_until or 0)}", False, None
        )
    target = min(f.replicas + f.limits.scale_step, hpa.max_replicas, f.limits.max_replicas)
    if target <= hpa.min_replicas:
        reason = f"{seen}; the HPA {hpa.name} minReplicas is {hpa.min_replicas} already, at max"
        return _hold(f, reason, confirmed, "at_max")
    original = f.memory.hpa_original_min
    out = _act(
        f,
        "hpa_raise",
        f.replicas,
        f"{seen}; hpa_raise {hpa.name} minReplicas {hpa.min_replicas}->{target}",
        hpa_original_min=hpa.min_replicas if original is None else original,
    )
    note = f"hpa_raise {hpa.min_replicas}->{target}"
    return replace(out, hpa_min_after=target, memory=replace(out.memory, last_action=note))


def _relieved(f: Facts) -> bool:
    """This incident was already scaled and latency (when measured) is no longer up.

    More traffic served at baseline latency is no reason to keep adding replicas.
    """
    memory, obs, since = f.memory, f.observation, f.state.incident_since
    scaled = (
        since is not None
        and memory.last_action_at is not None
        and memory.last_action_at >= since
        and (memory.last_action or "").startswith("scale_up")
    )
    latency_up = any(d.metric == P95 and d.direction == "up" for d in material(obs, f.params))
    measured = math.isfinite(obs.values.get(P95, math.nan))  # missing p95 arrives as NaN
    return scaled and measured and not latency_up


def _verify(f: Facts) -> tuple[Facts, Out | None]:
    """Rule 3: did the last scale_up work? Advances the check; `give_up` when it did not."""
    check = f.state.verify
    if check is None or f.hpa_managed:
        return f, None
    obs, params = f.observation, f.params
    passes = check.passes + (obs.status == "scored")
    ready = f.ready_replicas
    unready = ready is not None and ready < check.after
    if unready and f.now - check.since > params.verify_ready_seconds:
        waited = f.now - check.since
        step = f"scale_up {check.before}->{check.after}"
        why = f"{ready}/{check.after} replicas ready {waited:.0f}s after {step}"
        return f, _give_up(f, check, f"{why}: the new pods are not ready", "not_ready")
    if passes >= params.verify_passes and _not_helping(f, check):
        excess = p95_excess(obs) or 0.0
        why = (
            f"{describe(obs)} {passes} samples after scale_up {check.before}->{check.after}: "
            f"scaling did not help (p95 {excess:+.3g}s off baseline)"
        )
        return f, _give_up(f, check, why, "not_helping")
    done = passes >= params.verify_passes and not unready
    state = replace(f.state, verify=None if done else replace(check, passes=passes))
    return replace(f, state=state), None


def _not_helping(f: Facts, check: Verify) -> bool:
    """Still counting, and p95's excess over baseline not at least halved since the action
    (with no material excess at the action: p95 now materially up). Unmeasured p95: helped."""
    obs = f.observation
    now_excess = p95_excess(obs)
    if not counts(obs, f.params) or now_excess is None:
        return False
    baseline = obs.values[P95] - now_excess
    margin = f.params.min_relative_change * abs(baseline)
    at_action = 0.0 if check.p95 is None else check.p95 - baseline
    if at_action > margin:
        return now_excess > at_action / 2
    return now_excess >= margin and now_excess > 0


def _give_up(f: Facts, check: Verify, why: str, kind: AlertKind) -> Out:
    """Stop adding replicas this incident; roll back to `check.before` after the cooldown."""
    reason = (
        f"{why}; no more scale-ups this incident, rollback to {check.before} after the cooldown"
    )
    memory = replace(
        f.memory,
        rollback_to=check.before,
        last_action=f"give_up {check.before}->{check.after} ({kind})",
        last_action_at=f.now,
    )
    state = replace(f.state, verify=None, gave_up=True)
    return Out(
        action="give_up",
        replicas_after=f.replicas,
        reason=reason,
        memory=memory,
        state=state,
        alert=kind,
    )


def _rollback(f: Facts) -> Out:
    """Rule 7: a scale-up did not help and the cooldown is over: go back."""
    memory = f.memory
    target = max(memory.rollback_to or 0, f.limits.min_replicas)
    home = target == memory.original_replicas
    reason = f"scaling did not help and the cooldown is over: rollback {f.replicas}->{target}"
    if home:
        return _act(f, "rollback", target, reason, **CLEARED)
    return _act(f, "rollback", target, reason, rollback_to=None, replicas_set=target)


def _when_calm(f: Facts) -> Out | None:
    """Rule 8 (and the HPA's restore): after the calm window, step back; None: nothing."""
    calm_for, memory = f.calm_for, f.memory
    if calm_for is None or f.cooling:
        return None
    window = f.params.scale_down_after_seconds
    if memory.hpa_original_min is not None and f.hpa is not None and calm_for >= (window or 0):
        hpa, target = f.hpa, memory.hpa_original_min
        change = f"minReplicas {hpa.min_replicas}->{target}"
        reason = f"calm for {calm_for:.0f}s; hpa_restore {hpa.name} {change}"
        out = _act(f, "hpa_restore", f.replicas, reason, hpa_original_min=None)
        note = f"hpa_restore {hpa.min_replicas}->{target}"
        return replace(out, hpa_min_after=target, memory=replace(out.memory, last_action=note))
    if memory.hpa_original_min is not None and not f.hpa_managed:
        reason = "the HPA AegisOps raised is gone: hpa-original-min cleared"
        return _act(f, "release", f.replicas, reason, hpa_original_min=None)
    original = memory.original_replicas
    if window is None or original is None or f.hpa_managed or calm_for < window:
        return None
    target = max(original, f.limits.min_replicas)
    if f.replicas <= target:
        reason = (
            f"calm for {calm_for:.0f}s at {f.replicas} replicas (target {target}): record cleared"
        )
        return _act(f, "release", f.replicas, reason, **CLEARED)
    after = max(f.replicas - f.limits.scale_step, target)
    why = "original replicas" if after == target == original else f"toward {target}"
    reason = f"calm for {calm_for:.0f}s; scale_down {f.replicas}->{after} ({why})"
    if after == target:
        return _act(f, "scale_down", after, reason, **CLEARED)
    return _act(f, "scale_down", after, reason, replicas_set=after)
