"""Pure policy: detector observations, time and replica state in, decisions out.

Time is Unix seconds, passed in. The state that must survive a restart is `Memory`
(aegisops.memory), stored by the loop as annotations on the Deployment; the shape of an
anomaly comes from aegisops.shape; the streaks, parameters and state from
aegisops.incident; the rules, in order, from aegisops.rules (docs/safety.md, "Pure
policy", and docs/detector.md). This module is the public surface: `decide`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from aegisops.detector import Observation
from aegisops.facts import Action, AlertKind, Facts
from aegisops.incident import (
    HPA_MODES,
    HpaView,
    Limits,
    PolicyParams,
    PolicyState,
    Verify,
    advance,
    status_reason,
)
from aegisops.memory import (
    ANNOTATION_KEYS,
    ANNOTATION_PREFIX,
    COOLDOWN_UNTIL,
    DRY_RUN,
    ENABLED_LABEL,
    HANDS_OFF,
    HPA_MIN_SET,
    HPA_ORIGINAL_MIN,
    LAST_ACTION,
    LAST_ACTION_AT,
    ORIGINAL_REPLICAS,
    PAUSED,
    REPLICAS_SET,
    ROLLBACK_TO,
    Memory,
    format_time,
    memory_from_annotations,
    memory_to_annotations,
    parse_time,
)
from aegisops.rules import weigh
from aegisops.shape import (
    LOAD_SIGNALS,
    P95,
    Shape,
    classify,
    counts,
    describe,
    is_load_shaped,
    material,
)

__all__ = [
    "ANNOTATION_KEYS",
    "ANNOTATION_PREFIX",
    "COOLDOWN_UNTIL",
    "DRY_RUN",
    "ENABLED_LABEL",
    "HANDS_OFF",
    "HPA_MIN_SET",
    "HPA_MODES",
    "HPA_ORIGINAL_MIN",
    "LAST_ACTION",
    "LAST_ACTION_AT",
    "LOAD_SIGNALS",
    "ORIGINAL_REPLICAS",
    "P95",
    "PAUSED",
    "REPLICAS_SET",
    "ROLLBACK_TO",
    "Action",
    "AlertKind",
    "Decision",
    "HpaView",
    "Limits",
    "Memory",
    "PolicyParams",
    "PolicyState",
    "Shape",
    "Verify",
    "classify",
    "counts",
    "decide",
    "describe",
    "dry_run_memory",
    "dry_run_state",
    "format_time",
    "is_load_shaped",
    "material",
    "memory_from_annotations",
    "memory_to_annotations",
    "parse_time",
    "unapplied",
]


@dataclass(frozen=True, kw_only=True)
class Decision:
    """What to do about one observation, why, and the state to carry forward.

    `confirmed`: an incident was confirmed by this observation (notify once).
    `resolved`: the open incident ended with this observation.
    `anomaly`: an incident is open after this observation (the `aegisops_anomaly` gauge).
    `memory`: the annotations to hold after acting (equal to the input when not acting).
    `shape`: the shape of this observation's anomaly (None when it does not count).
    `alert`: the alert kind to send now (None: nothing beyond confirmed/resolved).
    `hpa_min_after`: the HPA's minReplicas for hpa_raise / hpa_restore.
    `memory_before`, `state_before`: what decide() was given (None: not known).
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
    shape: Shape | None = None
    alert: AlertKind | None = None
    hpa_min_after: int | None = None
    memory_before: Memory | None = None
    state_before: PolicyState | None = None


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
    ready_replicas: int | None = None,
    hpa: HpaView | None = None,
    paused: bool = False,
) -> Decision:
    """Decide what to do about one observation of one workload.

    Only scored observations move the streaks; learning, cold-start, idle and
    missing samples hold them (neither confirm nor break an incident). `hpa` implies
    `hpa_managed`; `ready_replicas` None means readiness is not checked.
    """
    new_state, confirmed, resolved = advance(state, observation, now=now, params=params)
    counting = counts(observation, params)
    facts = Facts(
        observation=observation,
        now=now,
        replicas=replicas,
        memory=memory,
        limits=limits,
        params=params,
        hpa_managed=hpa_managed or hpa is not None,
        hpa=hpa,
        ready_replicas=ready_replicas,
        paused=paused,
        state=new_state,
        shape=classify(observation, params) if counting else None,
    )
    out = weigh(facts, acting=new_state.incident_open and counting)
    reason = out.reason or status_reason(observation, out.state, params, resolved=resolved)
    return Decision(
        action=out.action,
        replicas_before=replicas,
        replicas_after=out.replicas_after,
        reason=reason,
        confirmed=confirmed,
        resolved=resolved,
        anomaly=out.state.incident_open,
        state=out.state,
        memory=out.memory,
        shape=facts.shape,
        alert=out.alert,
        hpa_min_after=out.hpa_min_after,
        memory_before=memory,
        state_before=state,
    )


def unapplied(decision: Decision, why: str) -> Decision:
    """`decision` as it stands when its action was not applied (dry-run, a failed write).

    Action none, replicas and memory as they were, no verification started, no alert
    for the action; the reason says why. Streaks and incident state are kept; what the
    action itself would have changed (a give_up's verdict, a restart done) is not, so
    the next pass judges again.
    """
    if decision.action == "none":
        return decision
    state, before = decision.state, decision.state_before or decision.state
    if decision.action == "scale_up":
        state = replace(state, verify=None)
    if decision.action in ("give_up", "restart"):
        state = replace(state, verify=before.verify, gave_up=before.gave_up, restarted=False)
    if decision.alert is not None:
        state = replace(state, alerts_sent=state.alerts_sent - {decision.alert})
    return replace(
        decision,
        action="none",
        replicas_after=decision.replicas_before,
        reason=f"{decision.reason} (not applied: {why})",
        state=state,
        memory=decision.memory_before if decision.memory_before is not None else decision.memory,
        alert=None,
        hpa_min_after=None,
    )


def dry_run_memory(decision: Decision) -> Memory:
    """The memory to carry after `decision` ran in dry-run (nothing was written).

    The cooldown and last action hold (one would-be action per cooldown), and a
    hands-off stands; nothing that says AegisOps manages the workload (replicas-set,
    original, rollback-to, the HPA record), since it changed nothing.
    """
    memory = decision.memory
    return Memory(
        last_action=memory.last_action,
        last_action_at=memory.last_action_at,
        cooldown_until=memory.cooldown_until,
        hands_off=memory.hands_off,
    )


def dry_run_state(decision: Decision) -> PolicyState:
    """The state to carry after `decision` ran in dry-run: no verification started."""
    if decision.action == "scale_up":
        return replace(decision.state, verify=None)
    return decision.state
