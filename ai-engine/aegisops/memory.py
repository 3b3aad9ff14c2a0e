"""What AegisOps remembers across restarts: the Deployment's `aegisops.dev/` annotations.

Pure: parsing and formatting only. The loop reads them before acting and writes them
(with the resourceVersion precondition) before the write an action needs. See
docs/safety.md, "State on the Deployment".
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

ANNOTATION_PREFIX = "aegisops.dev/"
ORIGINAL_REPLICAS = "aegisops.dev/original-replicas"
REPLICAS_SET = "aegisops.dev/replicas-set"
LAST_ACTION = "aegisops.dev/last-action"
LAST_ACTION_AT = "aegisops.dev/last-action-at"
COOLDOWN_UNTIL = "aegisops.dev/cooldown-until"
ROLLBACK_TO = "aegisops.dev/rollback-to"
HPA_ORIGINAL_MIN = "aegisops.dev/hpa-original-min"
HPA_MIN_SET = "aegisops.dev/hpa-min-set"
HANDS_OFF = "aegisops.dev/hands-off"
ANNOTATION_KEYS = (
    ORIGINAL_REPLICAS,
    REPLICAS_SET,
    LAST_ACTION,
    LAST_ACTION_AT,
    COOLDOWN_UNTIL,
    ROLLBACK_TO,
    HPA_ORIGINAL_MIN,
    HPA_MIN_SET,
    HANDS_OFF,
)
"""Written by the engine only; a merge patch sets the unset ones to null to clear them."""

PAUSED = "aegisops.dev/paused"
"""Annotation set by people: "true" stops every action on the Deployment."""
DRY_RUN = "aegisops.dev/dry-run"
"""Annotation set by people: "true" decides and reports only, for this Deployment."""
ENABLED_LABEL = "aegisops.dev/enabled"
"""Label set by people: "true" opts a Deployment in through discovery."""

_COUNTS = (ORIGINAL_REPLICAS, REPLICAS_SET, ROLLBACK_TO, HPA_ORIGINAL_MIN, HPA_MIN_SET)
_TIMES = (LAST_ACTION_AT, COOLDOWN_UNTIL, HANDS_OFF)


@dataclass(frozen=True, kw_only=True)
class Memory:
    """What AegisOps remembers across restarts (the Deployment's annotations).

    `original_replicas`: replicas before the first action of this episode.
    `replicas_set`: the count AegisOps last set; any other count seen later was set
    by someone else. `rollback_to`: a scale-up did not help, go back to this count once
    the cooldown ends. `hpa_original_min`: the HPA's minReplicas before AegisOps raised it;
    `hpa_min_set`: the minReplicas AegisOps set (any other value later: a human's).
    `hands_off`: when someone else's change was released; no scaling until the workload
    has been calm for the scale-down window after it.
    """

    original_replicas: int | None = None
    last_action: str | None = None
    last_action_at: float | None = None
    cooldown_until: float | None = None
    replicas_set: int | None = None
    rollback_to: int | None = None
    hpa_original_min: int | None = None
    hpa_min_set: int | None = None
    hands_off: float | None = None


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
    counts = {
        ORIGINAL_REPLICAS: memory.original_replicas,
        REPLICAS_SET: memory.replicas_set,
        ROLLBACK_TO: memory.rollback_to,
        HPA_ORIGINAL_MIN: memory.hpa_original_min,
        HPA_MIN_SET: memory.hpa_min_set,
    }
    times = {
        LAST_ACTION_AT: memory.last_action_at,
        COOLDOWN_UNTIL: memory.cooldown_until,
        HANDS_OFF: memory.hands_off,
    }
    values: dict[str, str | None] = {
        **{key: None if n is None else str(n) for key, n in counts.items()},
        LAST_ACTION: memory.last_action,
        **{key: None if t is None else format_time(t) for key, t in times.items()},
    }
    return {key: value for key in ANNOTATION_KEYS if (value := values[key]) is not None}


def memory_from_annotations(
    annotations: Mapping[str, str] | None,
) -> tuple[Memory, tuple[str, ...]]:
    """Read Memory from a Deployment's annotations, tolerantly.

    Returns the memory and one message per annotation that was ignored because it
    could not be read (the loop logs them); never raises on bad values.
    """
    annotations = annotations or {}
    problems: list[str] = []
    counts: dict[str, int | None] = {}
    times: dict[str, float | None] = {}
    for key in ANNOTATION_KEYS:
        raw = annotations.get(key)
        if raw is None or key not in (*_COUNTS, *_TIMES):
            continue
        if key in _COUNTS:
            if re.fullmatch(r"[0-9]+", raw.strip()):  # ASCII digits only: "²".isdigit() is True
                counts[key] = int(raw)
            else:
                problems.append(f"{key}: {raw!r} is not a replica count; ignored")
            continue
        try:
            times[key] = parse_time(raw)
        except ValueError:
            problems.append(f"{key}: {raw!r} is not an RFC 3339 UTC timestamp; ignored")
    memory = Memory(
        original_replicas=counts.get(ORIGINAL_REPLICAS),
        last_action=annotations.get(LAST_ACTION),
        last_action_at=times.get(LAST_ACTION_AT),
        cooldown_until=times.get(COOLDOWN_UNTIL),
        replicas_set=counts.get(REPLICAS_SET),
        rollback_to=counts.get(ROLLBACK_TO),
        hpa_original_min=counts.get(HPA_ORIGINAL_MIN),
        hpa_min_set=counts.get(HPA_MIN_SET),
        hands_off=times.get(HANDS_OFF),
    )
    return memory, tuple(problems)
