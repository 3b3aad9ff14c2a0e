"""Memory: the Deployment's aegisops.dev/ annotations, round trips and tolerant parsing."""

from __future__ import annotations

from dataclasses import replace

import pytest

from aegisops.memory import (
    ANNOTATION_KEYS,
    COOLDOWN_UNTIL,
    HANDS_OFF,
    HPA_MIN_SET,
    HPA_ORIGINAL_MIN,
    LAST_ACTION,
    LAST_ACTION_AT,
    ORIGINAL_REPLICAS,
    REPLICAS_SET,
    ROLLBACK_TO,
    Memory,
    memory_from_annotations,
    memory_to_annotations,
)
from aegisops.policy import Memory as ReExported
from aegisops.policy import memory_from_annotations as re_exported

T0 = 1_764_151_200.0  # 2025-11-26T10:00:00Z


ROUND_TRIPS = [
    pytest.param(
        Memory(
            original_replicas=2,
            last_action="scale_up 2->3",
            last_action_at=T0,
            cooldown_until=T0 + 300,
        ),
        {
            ORIGINAL_REPLICAS: "2",
            LAST_ACTION: "scale_up 2->3",
            LAST_ACTION_AT: "2025-11-26T10:00:00Z",
            COOLDOWN_UNTIL: "2025-11-26T10:05:00Z",
        },
        None,
        id="a scale_up record",
    ),
    pytest.param(
        Memory(
            original_replicas=1,
            replicas_set=3,
            last_action="give_up 2->3 (not_helping)",
            last_action_at=T0,
            cooldown_until=T0 + 299.2,  # rounded up: a cooldown never shrinks
            rollback_to=2,
            hpa_original_min=1,
            hpa_min_set=2,
            hands_off=T0 + 60,
        ),
        {
            ORIGINAL_REPLICAS: "1",
            REPLICAS_SET: "3",
            LAST_ACTION: "give_up 2->3 (not_helping)",
            LAST_ACTION_AT: "2025-11-26T10:00:00Z",
            COOLDOWN_UNTIL: "2025-11-26T10:05:00Z",
            ROLLBACK_TO: "2",
            HPA_ORIGINAL_MIN: "1",
            HPA_MIN_SET: "2",
            HANDS_OFF: "2025-11-26T10:01:00Z",
        },
        {"cooldown_until": T0 + 300},
        id="every annotation, the cooldown rounded up",
    ),
]


@pytest.mark.parametrize(("memory", "annotations", "read_back_changes"), ROUND_TRIPS)
def test_memory_round_trips_through_annotations(
    memory: Memory, annotations: dict[str, str], read_back_changes: dict[str, float] | None
) -> None:
    written = memory_to_annotations(memory)
    assert written == annotations
    assert list(written) == [key for key in ANNOTATION_KEYS if key in written]  # in key order
    read_back = replace(memory, **(read_back_changes or {}))
    assert memory_from_annotations(written) == (read_back, ())


def test_an_empty_memory_writes_and_reads_no_annotation() -> None:
    assert memory_to_annotations(Memory()) == {}
    assert memory_from_annotations(None) == (Memory(), ())


def test_garbage_annotations_are_ignored_with_a_reason() -> None:
    memory, problems = memory_from_annotations(
        {
            ORIGINAL_REPLICAS: "three",
            COOLDOWN_UNTIL: "tomorrow",
            LAST_ACTION_AT: "2025-11-26T10:00:00",  # no offset: not RFC 3339
            LAST_ACTION: "scale_up 1->2",
            "unrelated/annotation": "x",
        }
    )
    assert memory == Memory(last_action="scale_up 1->2")
    assert problems == (
        "aegisops.dev/original-replicas: 'three' is not a replica count; ignored",
        "aegisops.dev/last-action-at: '2025-11-26T10:00:00' is not an RFC 3339 UTC timestamp;"
        " ignored",
        "aegisops.dev/cooldown-until: 'tomorrow' is not an RFC 3339 UTC timestamp; ignored",
    )


@pytest.mark.parametrize("raw", ["²", "٣", "1.5", "-1", ""])
def test_original_replicas_needs_ascii_digits_and_never_raises(raw: str) -> None:
    memory, problems = memory_from_annotations({ORIGINAL_REPLICAS: raw})
    assert memory.original_replicas is None
    assert problems == (f"aegisops.dev/original-replicas: {raw!r} is not a replica count; ignored",)


def test_offsets_are_accepted_in_annotations() -> None:
    memory, problems = memory_from_annotations({COOLDOWN_UNTIL: "2025-11-26T11:05:00+01:00"})
    assert problems == ()
    assert memory.cooldown_until == T0 + 300


@pytest.mark.parametrize("key", [REPLICAS_SET, ROLLBACK_TO, HPA_ORIGINAL_MIN, HPA_MIN_SET])
def test_new_counts_are_read_tolerantly(key: str) -> None:
    memory, problems = memory_from_annotations({key: "two", LAST_ACTION: "scale_up 1->2"})
    assert memory == Memory(last_action="scale_up 1->2")
    assert problems == (f"{key}: 'two' is not a replica count; ignored",)


def test_policy_re_exports_the_memory_names() -> None:
    assert ReExported is Memory and re_exported is memory_from_annotations


def test_a_hands_off_time_that_cannot_be_read_is_ignored() -> None:
    memory, problems = memory_from_annotations({HANDS_OFF: "yesterday"})
    assert memory == Memory()
    assert problems == (f"{HANDS_OFF}: 'yesterday' is not an RFC 3339 UTC timestamp; ignored",)
