"""The pure policy: confirmation, bounded scale-up, cooldown from annotations, alerts."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from aegisops.detector import Deviation, Observation
from aegisops.policy import (
    COOLDOWN_UNTIL,
    LAST_ACTION,
    LAST_ACTION_AT,
    ORIGINAL_REPLICAS,
    Decision,
    Limits,
    Memory,
    PolicyParams,
    PolicyState,
    decide,
    memory_from_annotations,
    memory_to_annotations,
)

T0 = 1_764_151_200.0  # 2025-11-26T10:00:00Z
PARAMS = PolicyParams(consecutive_anomalies=3, cooldown_seconds=300)
LIMITS = Limits(min_replicas=1, max_replicas=3, scale_step=1)

SURGE = (
    Deviation(metric="p95_latency_seconds", value=0.84, baseline=0.05, direction="up", z=40.0),
    Deviation(metric="rps", value=150.0, baseline=40.0, direction="up", z=20.0),
)
LEAK = (Deviation(metric="memory_bytes", value=3e8, baseline=1e8, direction="up", z=60.0),)
DROP = (Deviation(metric="rps", value=4.0, baseline=40.0, direction="down", z=-9.0),)


def anomaly(t: float, deviations: tuple[Deviation, ...] = SURGE) -> Observation:
    return Observation(t=t, status="scored", score=0.95, anomalous=True, deviations=deviations)


def normal(t: float) -> Observation:
    return Observation(t=t, status="scored", score=0.2, anomalous=False)


class Workload:
    """Feeds observations through decide() every 15 s, carrying state, memory and replicas."""

    def __init__(self, *, replicas: int = 1, memory: Memory | None = None, **kw: object) -> None:
        self.replicas, self.memory, self.state, self.t = (
            replicas,
            memory or Memory(),
            PolicyState(),
            T0,
        )
        self.kw = {"limits": LIMITS, "params": PARAMS, **kw}

    def feed(self, make: object, count: int = 1) -> list[Decision]:
        decisions = []
        for _ in range(count):
            self.t += 15
            d = decide(
                state=self.state,
                observation=make(self.t),  # type: ignore[operator]
                now=self.t,
                replicas=self.replicas,
                memory=self.memory,
                **self.kw,  # type: ignore[arg-type]
            )
            self.state, self.memory, self.replicas = d.state, d.memory, d.replicas_after
            decisions.append(d)
        return decisions


def test_three_consecutive_anomalies_confirm_and_scale_up_once() -> None:
    w = Workload()
    first, second, third = w.feed(anomaly, 3)
    assert [d.action for d in (first, second, third)] == ["none", "none", "scale_up"]
    assert [d.confirmed for d in (first, second, third)] == [False, False, True]
    assert first.reason.endswith("(1/3 consecutive)")
    assert not second.anomaly and third.anomaly
    assert (third.replicas_before, third.replicas_after) == (1, 2)
    assert third.reason == (
        "p95_latency_seconds 0.84 vs baseline 0.05 (up), rps 150 vs baseline 40 (up)"
        " for 3 consecutive samples; scale_up 1->2"
    )
    assert third.memory == Memory(
        original_replicas=1,
        replicas_set=2,
        last_action="scale_up 1->2",
        last_action_at=T0 + 45,
        cooldown_until=T0 + 45 + 300,
    )


def test_a_normal_sample_breaks_the_streak() -> None:
    w = Workload()
    decisions = w.feed(anomaly, 2) + w.feed(normal) + w.feed(anomaly, 2)
    assert all(d.action == "none" and not d.confirmed for d in decisions)


def test_non_scored_samples_hold_the_streak() -> None:
    w = Workload()
    w.feed(anomaly, 2)
    held = w.feed(lambda t: Observation(t=t, status="missing"))[0]
    assert held.reason == "no data"
    assert w.state.anomalous_streak == 2
    assert w.feed(anomaly)[0].confirmed


def test_no_second_action_during_cooldown_then_another_step_after_it() -> None:
    w = Workload()
    w.feed(anomaly, 3)
    during = w.feed(anomaly, 19)  # 19 x 15 s = 285 s < 300 s of cooldown
    assert {d.action for d in during} == {"none"}
    assert not any(d.confirmed for d in during)
    assert during[-1].reason.endswith("; cooldown until 2025-11-26T10:05:45Z")
    after = w.feed(anomaly)[0]
    assert (after.action, after.replicas_before, after.replicas_after) == ("scale_up", 2, 3)
    assert after.memory.original_replicas == 1  # kept from the first action


def test_after_a_step_that_relieved_latency_more_traffic_alone_does_not_scale_again() -> None:
    busy = (SURGE[1],)  # rps still up, latency back at baseline

    def relieved(t: float) -> Observation:
        values = {"rps": 150.0, "p95_latency_seconds": 0.05, "memory_bytes": 1e8}
        return replace(anomaly(t, busy), values=values)

    w = Workload()
    w.feed(anomaly, 3)
    later = w.feed(relieved, 40)  # 600 s: well past the cooldown
    assert {d.action for d in later} == {"none"}
    assert later[-1].anomaly  # the incident stays open while traffic is up
    assert later[-1].reason.endswith(
        "p95 latency back at baseline since the last scale_up, holding"
    )
    again = w.feed(anomaly)[0]  # latency up again: another step
    assert (again.action, again.replicas_after) == ("scale_up", 3)


def test_a_missing_p95_is_not_read_as_latency_back_at_baseline() -> None:
    busy = (SURGE[1],)  # rps still up; p95 not measured this time (NaN from Prometheus)

    def unmeasured(t: float) -> Observation:
        values = {"rps": 150.0, "p95_latency_seconds": float("nan"), "memory_bytes": 1e8}
        return replace(anomaly(t, busy), values=values)

    w = Workload()
    w.feed(anomaly, 3)
    w.feed(unmeasured, 19)  # 285 s, still in the cooldown
    after = w.feed(unmeasured)[0]
    assert "back at baseline" not in after.reason
    assert (after.action, after.replicas_after) == ("scale_up", 3)


def test_cooldown_survives_a_restart_through_the_annotations() -> None:
    w = Workload()
    w.feed(anomaly, 3)
    annotations = memory_to_annotations(w.memory)
    restarted = Workload(replicas=2, memory=memory_from_annotations(annotations)[0])
    restarted.t = w.t + 60
    decisions = restarted.feed(anomaly, 3)
    assert decisions[-1].confirmed
    assert decisions[-1].action == "none"
    assert "cooldown until 2025-11-26T10:05:45Z" in decisions[-1].reason


def test_at_max_replicas_it_alerts_instead() -> None:
    w = Workload(replicas=3)
    d = w.feed(anomaly, 3)[-1]
    assert (d.action, d.replicas_after) == ("alert", 3)
    assert d.reason.endswith("; at max replicas (3)")
    assert d.memory == Memory()


def test_scale_up_is_bounded_by_max_and_lifted_to_min() -> None:
    big_step = Workload(replicas=2, limits=Limits(max_replicas=3, scale_step=5))
    assert big_step.feed(anomaly, 3)[-1].replicas_after == 3
    below_min = Workload(replicas=0, limits=Limits(min_replicas=2, max_replicas=5))
    assert below_min.feed(anomaly, 3)[-1].replicas_after == 2


@pytest.mark.parametrize(
    ("deviations", "why"),
    [
        (LEAK, "memory_bytes 3e+08 vs baseline 1e+08 (up) without more load: a memory leak"),
        (DROP, "rps 4 vs baseline 40 (down): a traffic drop, scaling cannot fix it"),
    ],
)
def test_memory_only_and_traffic_drops_only_alert(
    deviations: tuple[Deviation, ...], why: str
) -> None:
    w = Workload()
    decisions = w.feed(lambda t: anomaly(t, deviations), 10)
    assert [d.action for d in decisions] == ["none", "none", "alert"] + ["none"] * 7
    assert decisions[2].reason.startswith(why)
    assert decisions[2].alert == "no_scale"
    assert all(d.replicas_after == 1 for d in decisions)


def test_hpa_managed_workloads_only_alert() -> None:
    d = Workload(hpa_managed=True).feed(anomaly, 3)[-1]
    assert d.action == "alert"
    assert "an HPA manages this Deployment" in d.reason


def test_incident_resolves_after_as_many_normal_samples() -> None:
    w = Workload()
    w.feed(anomaly, 3)
    calm = w.feed(normal, 3)
    assert [d.anomaly for d in calm] == [True, True, False]
    assert [d.resolved for d in calm] == [False, False, True]
    assert calm[-1].reason == "back to normal after 3 normal samples"
    again = w.feed(anomaly, 3)[-1]
    assert again.confirmed  # a new incident, notified again


def test_scale_down_restores_original_replicas_after_calm_unless_disabled() -> None:
    params = replace(PARAMS, scale_down_after_seconds=600)
    w = Workload(params=params)
    w.feed(anomaly, 3)
    calm = w.feed(normal, 60)
    downs = [d for d in calm if d.action == "scale_down"]
    assert len(downs) == 1
    assert (downs[0].replicas_before, downs[0].replicas_after) == (2, 1)
    assert downs[0].memory.original_replicas is None
    assert downs[0].memory.last_action == "scale_down 2->1"
    # disabled with None: the same story never scales down
    default = Workload(params=replace(PARAMS, scale_down_after_seconds=None))
    default.feed(anomaly, 3)
    assert {d.action for d in default.feed(normal, 60)} == {"none"}


def test_memory_round_trips_through_annotations() -> None:
    memory = Memory(
        original_replicas=2,
        last_action="scale_up 2->3",
        last_action_at=T0,
        cooldown_until=T0 + 300,
    )
    annotations = memory_to_annotations(memory)
    assert annotations == {
        ORIGINAL_REPLICAS: "2",
        LAST_ACTION: "scale_up 2->3",
        LAST_ACTION_AT: "2025-11-26T10:00:00Z",
        COOLDOWN_UNTIL: "2025-11-26T10:05:00Z",
    }
    assert memory_from_annotations(annotations) == (memory, ())
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


def test_bad_params_and_limits_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="consecutive_anomalies must be >= 1, got 0"):
        PolicyParams(consecutive_anomalies=0)
    with pytest.raises(ValueError, match="min_replicas <= max_replicas, got 4 and 2"):
        Limits(min_replicas=4, max_replicas=2)
    with pytest.raises(ValueError, match="scale_step must be >= 1"):
        Limits(scale_step=0)


SMALL = (  # what a steady sandbox showed: statistically unusual, practically nothing
    Deviation(metric="p95_latency_seconds", value=0.080, baseline=0.074, direction="up", z=6.0),
    Deviation(metric="memory_bytes", value=1.01e8, baseline=1e8, direction="up", z=8.0),
)


def test_small_moves_of_a_steady_metric_neither_confirm_nor_scale() -> None:
    w = Workload()
    decisions = w.feed(lambda t: anomaly(t, SMALL), 10)
    assert [d.action for d in decisions] == ["none"] * 10
    assert not any(d.confirmed or d.anomaly for d in decisions)
    assert decisions[-1].reason == (
        "unusual but small: p95_latency_seconds 0.08 vs baseline 0.074 (up), "
        "memory_bytes 1.01e+08 vs baseline 1e+08 (up), none 20% off baseline"
    )
    assert w.replicas == 1


def test_small_moves_do_not_count_but_a_material_one_in_the_same_sample_does() -> None:
    mixed = (*SMALL, Deviation(metric="rps", value=60.0, baseline=40.0, direction="up", z=9.0))
    w = Workload()
    decisions = w.feed(lambda t: anomaly(t, mixed), 3)
    assert [d.action for d in decisions] == ["none", "none", "scale_up"]


def test_the_materiality_gate_can_be_turned_off() -> None:
    w = Workload(params=replace(PARAMS, min_relative_change=0.0))
    decisions = w.feed(lambda t: anomaly(t, SMALL), 3)
    assert decisions[-1].confirmed  # small moves count now; latency at normal traffic: alert
    assert (decisions[-1].action, decisions[-1].shape) == ("alert", "slow_dependency")


def test_min_relative_change_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match=re.escape("min_relative_change must be >= 0, got -0.1")):
        PolicyParams(min_relative_change=-0.1)
