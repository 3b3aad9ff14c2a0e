"""The policy's rules, in order of precedence (docs/safety.md, "Pure policy"). Pure.

`weigh` takes the facts of one observation (after the streaks moved) and returns what
to do: an action with the record to write, or a hold with its reason and alert kind.
Rule 3 (verifying a scale_up) lives in aegisops.verification; `Facts` and `Out` in
aegisops.facts.
"""

from __future__ import annotations

import math
from dataclasses import replace

from aegisops.facts import Action, AlertKind, Facts, Out, mark_sent
from aegisops.incident import HpaView, Verify, status_reason
from aegisops.memory import PAUSED, format_time
from aegisops.shape import P95, WHY, describe, material
from aegisops.verification import verify, verifying


def weigh(f: Facts, *, acting: bool) -> Out:
    """The first rule that applies decides (numbered as in docs/detector.md, "Policy").

    `acting`: an anomalous sample of an open incident. An empty reason lets the caller
    say what was seen.
    """
    if f.paused:  # 1
        why = status_reason(f.observation, f.state, f.params, resolved=False)
        return _hold(f, f"{why}; paused ({PAUSED}), no action", "paused")
    released = _hands_off(f)  # 2
    if released is not None:
        return released
    f, verdict = verify(f)  # 3, on every pass while a scale_up is verified, cooldown or not
    if verdict is not None:
        return verdict
    held = _on_incident(f) if acting else None  # 4, 5, 6
    if held is not None and held.action != "none":
        return held
    if f.memory.rollback_to is not None and not f.cooling and not f.hpa_managed:  # 7
        return _rollback(f)
    return _when_calm(f) or held or _hold(f, "", None)  # 8


def _hold(f: Facts, reason: str, alert: AlertKind | None) -> Out:
    """No write; `alert` (action alert) when it applies in an open incident for the first time."""
    send = alert if f.state.incident_open and alert not in f.state.alerts_sent else None
    return Out(
        action="alert" if send else "none",
        replicas_after=f.replicas,
        reason=reason,
        memory=f.memory,
        state=mark_sent(f.state, send),
        alert=send,
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


def _alerting(out: Out, kind: AlertKind, note: str) -> Out:
    """`out` with its alert kind (recorded as sent) and last-action `note`."""
    memory = replace(out.memory, last_action=note)
    return replace(out, alert=kind, state=mark_sent(out.state, kind), memory=memory)


CLEARED = {"original_replicas": None, "replicas_set": None, "rollback_to": None}
HPA_CLEARED = {"hpa_original_min": None, "hpa_min_set": None}


def _hands_off(f: Facts) -> Out | None:
    """Rule 2: someone else set the replicas or the HPA's floor (or an HPA now owns them)."""
    memory, replicas, hpa = f.memory, f.replicas, f.hpa
    recorded = any(getattr(memory, key) is not None for key in CLEARED)
    if f.hpa_managed and recorded:
        name = f" {hpa.name}" if hpa else ""
        reason = f"an HPA{name} now manages this Deployment: record cleared, the HPA owns replicas"
        return _alerting(_act(f, "release", replicas, reason, **CLEARED), "hpa", "release (hpa)")
    floor = memory.hpa_min_set
    if hpa is not None and floor is not None and hpa.min_replicas != floor:
        reason = (
            f"the HPA {hpa.name} minReplicas is {hpa.min_replicas}, AegisOps set {floor}: "
            "someone else changed it; hands off, HPA record cleared"
        )
        out = _act(f, "release", replicas, reason, **HPA_CLEARED, hands_off=f.now)
        note = f"release hpa min {floor}->{hpa.min_replicas} (set by someone else)"
        return _alerting(out, "hands_off", note)
    set_to = memory.replicas_set
    if set_to is None or f.hpa_managed or replicas == set_to:
        return None
    back = not f.state.incident_open and replicas == memory.original_replicas
    reason = (
        f"replicas are {replicas}, AegisOps set {set_to}: someone else changed them; "
        + ("back at original, record cleared" if back else "hands off, record cleared")
        + (", no scaling for the rest of this incident" if f.state.incident_open else "")
    )
    out = _act(f, "release", replicas, reason, **CLEARED, hands_off=None if back else f.now)
    note = f"release {set_to}->{replicas} (set by someone else)"
    out = replace(out, state=replace(f.state, hands_off=f.state.incident_open, verify=None))
    if back:
        return replace(out, memory=replace(out.memory, last_action=note))
    return _alerting(out, "hands_off", note)


def _on_incident(f: Facts) -> Out:
    """Rules 4-6 on an anomalous sample of an open incident: what its shape allows."""
    obs, memory, limits, replicas, seen = f.observation, f.memory, f.limits, f.replicas, f.seen()
    if f.shape != "surge":
        return _no_scale(f)
    if f.hpa_managed:
        return _with_hpa(f)
    if f.state.hands_off or memory.hands_off is not None:
        return _hold(f, f"{seen}; hands off: the replicas were set by someone else", None)
    if f.state.gave_up:
        return _hold(f, f"{seen}; scaling did not help in this incident, no more scale-ups", None)
    if memory.rollback_to is not None:
        reason = (
            f"{seen}; rollback pending: to {memory.rollback_to} after the cooldown, no scale-ups"
        )
        return _hold(f, reason, "not_helping")
    if f.cooling:
        return _hold(f, f"{seen}; cooldown until {format_time(memory.cooldown_until or 0)}", None)
    if f.state.verify is not None:  # a cooldown shorter than the check: still no new step
        return _hold(f, f"{seen}; {verifying(f, f.state.verify)}", None)
    if _relieved(f):
        return _hold(
            f, f"{seen}; p95 latency back at baseline since the last scale_up, holding", None
        )
    if replicas >= limits.max_replicas:
        return _hold(f, f"{seen}; at max replicas ({limits.max_replicas})", "at_max")
    after = min(limits.max_replicas, max(replicas + limits.scale_step, limits.min_replicas))
    original = replicas if memory.original_replicas is None else memory.original_replicas
    reason = f"{seen}; scale_up {replicas}->{after}"
    out = _act(f, "scale_up", after, reason, original_replicas=original, replicas_set=after)
    p95 = obs.values.get(P95, math.nan)
    verify = Verify(
        since=f.now, before=replicas, after=after, p95=p95 if math.isfinite(p95) else None
    )
    return replace(out, state=replace(f.state, verify=verify))


def _no_scale(f: Facts) -> Out:
    """Rule 4: not a surge. Alert why (once), or restart a leaking workload when enabled."""
    shape = f.shape or "other"
    context = {"slow_dependency": " at normal traffic", "memory_leak": " without more load"}
    why = f"{describe(f.observation)}{context.get(shape, '')}: {WHY[shape]}, scaling cannot fix it"
    if shape != "memory_leak" or not f.params.restart_on_memory_leak:
        return _hold(f, why, "no_scale")
    until = format_time(f.memory.cooldown_until or 0)
    if f.state.restarted and f.cooling:
        return _hold(f, f"{why}; restarted, cooldown until {until}", None)
    if f.state.restarted:  # at most one restart per incident
        reason = f"{why}; the leak persists after the restart's cooldown: restarting did not help"
        return _hold(f, reason, "not_helping")
    if f.cooling:
        return _hold(f, f"{why}; cooldown until {until}", "no_scale")
    out = _act(f, "restart", f.replicas, f"{why}; restart (restart_on_memory_leak)")
    return replace(out, state=replace(f.state, restarted=True))


def _with_hpa(f: Facts) -> Out:
    """Rule 5: an HPA targets the Deployment: alert, or raise its minReplicas."""
    hpa, seen = f.hpa, f.seen()
    if hpa is None or f.params.hpa_mode != "raise_min":
        name = f" {hpa.name}" if hpa else ""
        return _hold(f, f"{seen}; an HPA{name} manages this Deployment, not scaling", "hpa")
    if f.state.hands_off or f.memory.hands_off is not None:
        return _hold(f, f"{seen}; hands off: the HPA's minReplicas was set by someone else", None)
    if f.cooling:
        return _hold(f, f"{seen}; cooldown until {format_time(f.memory.cooldown_until or 0)}", None)
    target = min(f.replicas + f.limits.scale_step, hpa.max_replicas, f.limits.max_replicas)
    if target <= hpa.min_replicas:
        reason = f"{seen}; the HPA {hpa.name} minReplicas is {hpa.min_replicas} already, at max"
        return _hold(f, reason, "at_max")
    original = f.memory.hpa_original_min
    first = hpa.min_replicas if original is None else original
    reason = f"{seen}; hpa_raise {hpa.name} minReplicas {hpa.min_replicas}->{target}"
    out = _act(f, "hpa_raise", f.replicas, reason, hpa_original_min=first, hpa_min_set=target)
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


def _rollback(f: Facts) -> Out:
    """Rule 7: a scale-up did not help and the cooldown is over: go back (within bounds).

    A rollback-to not below the replicas now (bounds, a lowered max) is only cleared.
    After a rollback, no more scale-ups in this incident.
    """
    memory, limits, rollback_to = f.memory, f.limits, f.memory.rollback_to or 0
    target = min(max(rollback_to, limits.min_replicas), limits.max_replicas, f.replicas)
    if target >= f.replicas:
        reason = (
            f"rollback-to {rollback_to} is not below the {f.replicas} replicas now "
            f"(bounds {limits.min_replicas}-{limits.max_replicas}): rollback-to cleared"
        )
        out = _act(
            f, "release", f.replicas, reason, rollback_to=None, cooldown_until=memory.cooldown_until
        )
        note = f"release (rollback-to {rollback_to} cleared)"
        return replace(out, memory=replace(out.memory, last_action=note))
    reason = f"scaling did not help and the cooldown is over: rollback {f.replicas}->{target}"
    if target == memory.original_replicas:
        out = _act(f, "rollback", target, reason, **CLEARED)
    else:
        out = _act(f, "rollback", target, reason, rollback_to=None, replicas_set=target)
    return replace(out, state=replace(f.state, gave_up=f.state.incident_open))


def _when_calm(f: Facts) -> Out | None:
    """Rule 8 (and the HPA's restore): calm (no surge-shaped sample) for the window: clear
    a hands-off, restore the HPA, step back; None: nothing."""
    memory, window, calm_for = f.memory, f.params.scale_down_after_seconds, f.calm_for
    if f.shape == "surge" or f.cooling:
        return None
    if memory.hands_off is not None:
        since = f.now - max(memory.hands_off, f.now - calm_for)
        if since < (f.params.cooldown_seconds if window is None else window):
            return None  # no scaling while someone else's change holds
        reason = f"calm for {since:.0f}s after someone else's change: hands-off cleared"
        out = _act(
            f, "release", f.replicas, reason, hands_off=None, cooldown_until=memory.cooldown_until
        )
        return replace(out, memory=replace(out.memory, last_action="release (hands-off cleared)"))
    if memory.hpa_original_min is not None and f.hpa is not None:
        return _hpa_restore(f, f.hpa, memory.hpa_original_min)
    if memory.hpa_original_min is not None and not f.hpa_managed:
        reason = "the HPA AegisOps raised is gone: hpa-original-min cleared"
        return _act(f, "release", f.replicas, reason, **HPA_CLEARED)
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


def _hpa_restore(f: Facts, hpa: HpaView, target: int) -> Out | None:
    """After the calm window (without one: once the cooldown is over), restore the HPA's
    minReplicas to what it was before AegisOps raised it."""
    window, calm_for = f.params.scale_down_after_seconds, f.calm_for
    if window is not None and calm_for < window:
        return None
    change = f"{hpa.name} minReplicas {hpa.min_replicas}->{target}"
    calm = "cooldown over" if window is None else f"calm for {calm_for:.0f}s"
    out = _act(f, "hpa_restore", f.replicas, f"{calm}; hpa_restore {change}", **HPA_CLEARED)
    note = f"hpa_restore {hpa.min_replicas}->{target}"
    return replace(out, hpa_min_after=target, memory=replace(out.memory, last_action=note))
