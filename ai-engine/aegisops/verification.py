"""Rule 3: did the last scale_up work? Pure.

While a scale_up is verified (docs/safety.md, "Pure policy"): its new
pods must be ready within `verify_ready_seconds`, and after `verify_passes` passes the
p95 excess must have eased; otherwise `give_up` with a rollback after the cooldown.
"""

from __future__ import annotations

from dataclasses import replace

from aegisops.facts import AlertKind, Facts, Out, mark_sent
from aegisops.incident import Verify
from aegisops.shape import P95, counts, describe, p95_excess


def verify(f: Facts) -> tuple[Facts, Out | None]:
    """Rule 3: did the last scale_up work? Advances the check; `give_up` when it did not."""
    check = f.state.verify
    if check is None or f.hpa_managed:
        return f, None
    if f.replicas != check.after:  # the scale is not in effect (not applied): nothing to check
        return replace(f, state=replace(f.state, verify=None)), None
    obs, params = f.observation, f.params
    ready = f.ready_replicas
    unready = ready is not None and ready < check.after
    # the new pods' effect is judged from when they serve: passes count once they are ready
    passes = check.passes + (obs.status == "scored" and not unready)
    if unready and f.now - check.since > params.verify_ready_seconds:
        waited = f.now - check.since
        step = f"scale_up {check.before}->{check.after}"
        why = f"{ready}/{check.after} replicas ready {waited:.0f}s after {step}"
        return f, _give_up(f, check, f"{why}: the new pods are not ready", "not_ready")
    if passes >= params.verify_passes and _not_helping(f, check):
        now_p95 = obs.values[P95]
        baseline = now_p95 - (p95_excess(obs) or 0.0)
        then = "not measured" if check.p95 is None else f"{check.p95:.3g}s"
        why = (
            f"{describe(obs)} {passes} samples after scale_up {check.before}->{check.after}: "
            f"scaling did not help (p95 {then} at the scale_up, {now_p95:.3g}s now, "
            f"baseline {baseline:.3g}s)"
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
    """Stop adding replicas this incident; roll back to `check.before` (or an earlier
    pending rollback-to, when lower) after the cooldown."""
    pending = f.memory.rollback_to
    target = check.before if pending is None else min(pending, check.before)
    reason = f"{why}; no more scale-ups this incident, rollback to {target} after the cooldown"
    note = f"give_up {check.before}->{check.after} ({kind})"
    memory = replace(f.memory, rollback_to=target, last_action=note, last_action_at=f.now)
    state = mark_sent(replace(f.state, verify=None, gave_up=True), kind)
    return Out(
        action="give_up",
        replicas_after=f.replicas,
        reason=reason,
        memory=memory,
        state=state,
        alert=kind,
    )


def verifying(f: Facts, check: Verify) -> str:
    """'verifying scale_up 1->2: ready 1/2, pass 2/5' (ready only when known)."""
    ready = "" if f.ready_replicas is None else f"ready {f.ready_replicas}/{check.after}, "
    step = f"scale_up {check.before}->{check.after}"
    needed = f.params.verify_passes
    return f"verifying {step}: {ready}pass {min(check.passes, needed)}/{needed}"
