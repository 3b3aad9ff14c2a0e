"""The pure policy: confirmation, bounded scale-up, cooldown from annotations, alerts."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from aegisops.detector import Deviation, Observation
from aegisops.policy import (
    Decision,
    HpaView,
    Limits,
    Memory,
    PolicyParams,
    PolicyState,
    Verify,
    decide,
    dry_run_memory,
    dry_run_state,
    memory_from_annotations,
    memory_to_annotations,
    unapplied,
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
    w = Workload(hpa_managed=True)
    decisions = w.feed(anomaly, 40) + w.feed(normal, 40)  # past cooldowns and calm windows
    assert [d.action for d in decisions] == ["none", "none", "alert"] + ["none"] * 77
    assert decisions[2].alert == "hpa"
    assert decisions[2].reason.endswith("; an HPA manages this Deployment, not scaling")
    assert w.replicas == 1 and w.memory == Memory()


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


# -- the safe-autonomy rules, in order (docs/safety.md, "Pure policy") ------------------


def hot(t: float, p95: float = 0.84) -> Observation:
    """A surge with p95 measured: rps 150 vs 40, p95 `p95` vs 0.05."""
    deviations = tuple(d for d in SURGE if d.metric == "rps")
    if p95 >= 0.06:  # materially up (20% of 0.05 = 0.01)
        deviations = (replace(SURGE[0], value=p95), *deviations)
    values = {"rps": 150.0, "p95_latency_seconds": p95, "memory_bytes": 1e8}
    return replace(anomaly(t, deviations), values=values)


SCALED = Memory(  # what a scale_up 1->2 at T0 left on the Deployment
    original_replicas=1,
    replicas_set=2,
    last_action="scale_up 1->2",
    last_action_at=T0,
    cooldown_until=T0 + 300,
)


def test_paused_never_acts_but_alerts_once() -> None:
    w = Workload(paused=True)
    decisions = w.feed(hot, 25)
    assert [d.action for d in decisions] == ["none", "none", "alert"] + ["none"] * 22
    assert [d.alert for d in decisions][2:4] == ["paused", None]
    assert decisions[2].reason == (
        "p95_latency_seconds 0.84 vs baseline 0.05 (up), rps 150 vs baseline 40 (up) "
        "(3/3 consecutive); paused (aegisops.dev/paused), no action"
    )
    assert w.replicas == 1 and w.memory == Memory()


def test_a_hand_edit_releases_the_record_and_holds_off_until_calm() -> None:
    w = Workload(replicas=3, memory=replace(SCALED, cooldown_until=T0 - 1))  # a human set 3
    first, *rest = w.feed(hot, 30)
    assert (first.action, first.alert, first.replicas_after) == ("release", "hands_off", 3)
    assert first.memory == Memory(
        last_action="release 2->3 (set by someone else)",
        last_action_at=T0 + 15,
        cooldown_until=T0 + 315,
        hands_off=T0 + 15,
    )
    assert first.reason == (
        "replicas are 3, AegisOps set 2: someone else changed them; hands off, record cleared"
    )
    assert rest[1].confirmed and rest[1].action == "none"  # confirmed, never scaled
    assert {d.action for d in rest} == {"none"} and w.replicas == 3
    assert rest[-1].reason.endswith("; hands off: the replicas were set by someone else")
    calm = w.feed(normal, 20)  # the last surge sample at T0 + 450: calm for 300 s at T0 + 750
    assert [d.action for d in calm] == ["none"] * 19 + ["release"]
    assert calm[-1].reason == "calm for 300s after someone else's change: hands-off cleared"
    assert calm[-1].memory == replace(
        first.memory,
        hands_off=None,
        last_action="release (hands-off cleared)",
        last_action_at=T0 + 750,
    )
    again = w.feed(hot, 3)[-1]  # the next surge is ours again (3 is the max)
    assert (again.action, again.alert) == ("alert", "at_max")
    assert again.reason.endswith("; at max replicas (3)")


def test_a_hands_off_survives_a_restart_through_its_annotation() -> None:
    w = Workload()
    w.feed(hot, 3)  # scale_up 1->2
    w.replicas = 1  # kubectl scale --replicas=1
    released = w.feed(hot)[0]
    assert released.action == "release"
    memory, problems = memory_from_annotations(memory_to_annotations(released.memory))
    assert problems == () and memory.hands_off == T0 + 60
    restarted = Workload(replicas=1, memory=memory)  # a fresh engine, the same surge
    restarted.t = w.t + 60
    decisions = restarted.feed(hot, 40)  # 600 s: past the cooldown
    assert decisions[2].confirmed
    assert {d.action for d in decisions} == {"none"} and restarted.replicas == 1
    assert decisions[-1].reason.endswith("; hands off: the replicas were set by someone else")


def test_hands_off_holds_for_the_rest_of_the_incident() -> None:
    w = Workload()
    w.feed(hot, 3)  # scale_up 1->2, replicas_set 2
    w.replicas = 1  # kubectl scale --replicas=1
    released = w.feed(hot)[0]
    assert (released.action, released.alert) == ("release", "hands_off")
    assert released.reason == (
        "replicas are 1, AegisOps set 2: someone else changed them; hands off, record cleared,"
        " no scaling for the rest of this incident"
    )
    assert released.state.hands_off and released.state.verify is None
    later = w.feed(hot, 40)  # 600 s, past the cooldown
    assert {d.action for d in later} == {"none"}
    assert later[-1].reason.endswith("; hands off: the replicas were set by someone else")
    w.feed(normal, 3)
    assert not w.state.hands_off  # resolved: the next incident may scale


def test_a_human_scaling_back_to_original_when_calm_just_clears_the_record() -> None:
    w = Workload(replicas=1, memory=SCALED)
    d = w.feed(normal)[0]
    assert (d.action, d.alert) == ("release", None)
    assert d.reason == (
        "replicas are 1, AegisOps set 2: someone else changed them; back at original, "
        "record cleared"
    )
    assert d.memory.original_replicas is None and d.memory.replicas_set is None


def test_latency_at_normal_traffic_is_a_slow_dependency() -> None:
    slow = (SURGE[0],)
    d = Workload().feed(lambda t: anomaly(t, slow), 3)[-1]
    assert (d.action, d.alert, d.shape) == ("alert", "no_scale", "slow_dependency")
    assert d.reason == (
        "p95_latency_seconds 0.84 vs baseline 0.05 (up) at normal traffic: "
        "a slow dependency, scaling cannot fix it"
    )


def test_a_memory_leak_restarts_once_per_incident_when_enabled() -> None:
    w = Workload(params=replace(PARAMS, restart_on_memory_leak=True))
    decisions = w.feed(lambda t: anomaly(t, LEAK), 4 * 60 * 2)  # two hours of a leak
    assert [(i, d.action, d.alert) for i, d in enumerate(decisions) if d.action != "none"] == [
        (2, "restart", None),
        (22, "alert", "not_helping"),  # the cooldown is over, the leak is not
    ]
    assert decisions[22].reason == (
        "memory_bytes 3e+08 vs baseline 1e+08 (up) without more load: a memory leak, scaling"
        " cannot fix it; the leak persists after the restart's cooldown: restarting did not help"
    )
    assert decisions[-1].memory == decisions[2].memory  # nothing written after the restart
    restart = decisions[2]
    assert (restart.action, restart.replicas_after, restart.shape) == ("restart", 1, "memory_leak")
    assert restart.reason.endswith(
        "a memory leak, scaling cannot fix it; restart (restart_on_memory_leak)"
    )
    assert restart.memory == Memory(
        last_action="restart", last_action_at=T0 + 45, cooldown_until=T0 + 345
    )
    assert decisions[3].reason.endswith("; restarted, cooldown until 2025-11-26T10:05:45Z")
    w.feed(normal, 3)  # resolved: the next incident may restart once again
    again = w.feed(lambda t: anomaly(t, LEAK), 3)
    assert [d.action for d in again] == ["none", "none", "restart"]


def test_an_hpa_in_alert_mode_is_only_alerted() -> None:
    hpa = HpaView(name="web", min_replicas=1, max_replicas=5)
    d = Workload(hpa=hpa).feed(hot, 3)[-1]
    assert (d.action, d.alert) == ("alert", "hpa")
    assert d.reason.endswith("; an HPA web manages this Deployment, not scaling")


def test_raise_min_raises_the_hpa_floor_then_restores_it_after_the_calm_window() -> None:
    hpa = HpaView(name="web", min_replicas=2, max_replicas=6)
    w = Workload(replicas=2, hpa=hpa, params=replace(PARAMS, hpa_mode="raise_min"))
    raised = w.feed(hot, 3)[-1]
    assert (raised.action, raised.hpa_min_after, raised.replicas_after) == ("hpa_raise", 3, 2)
    assert raised.reason.endswith("; hpa_raise web minReplicas 2->3")
    assert raised.memory == Memory(
        last_action="hpa_raise 2->3",
        last_action_at=T0 + 45,
        cooldown_until=T0 + 345,
        hpa_original_min=2,
        hpa_min_set=3,
    )
    w.kw["hpa"] = replace(hpa, min_replicas=3)
    calm = w.feed(normal, 30)
    restores = [d for d in calm if d.action != "none"]
    assert [(d.action, d.hpa_min_after) for d in restores] == [("hpa_restore", 2)]
    assert restores[0].reason == "calm for 300s; hpa_restore web minReplicas 3->2"
    assert restores[0].memory.hpa_original_min is None and restores[0].memory.hpa_min_set is None


def test_an_hpa_appearing_after_aegisops_scaled_takes_over_the_record() -> None:
    hpa = HpaView(name="web", min_replicas=1, max_replicas=5)
    d = Workload(replicas=2, memory=SCALED, hpa=hpa).feed(normal)[0]
    assert (d.action, d.alert, d.replicas_after) == ("release", "hpa", 2)
    assert (
        d.reason == "an HPA web now manages this Deployment: record cleared, the HPA owns replicas"
    )
    assert d.memory.original_replicas is None and d.memory.replicas_set is None


def test_pods_not_ready_in_time_give_up_then_roll_back_after_the_cooldown() -> None:
    w = Workload()
    up = w.feed(hot, 3)[-1]
    assert up.state.verify == Verify(since=T0 + 45, before=1, after=2, p95=0.84)
    w.kw["ready_replicas"] = 1
    eased = w.feed(lambda t: hot(t, p95=0.1), 9)  # latency eased: only readiness fails
    assert [d.action for d in eased] == ["none"] * 8 + ["give_up"]
    gave_up = eased[-1]
    assert (gave_up.alert, gave_up.state.gave_up) == ("not_ready", True)
    assert gave_up.reason == (
        "1/2 replicas ready 135s after scale_up 1->2: the new pods are not ready; "
        "no more scale-ups this incident, rollback to 1 after the cooldown"
    )
    assert gave_up.memory == replace(
        up.memory, rollback_to=1, last_action="give_up 1->2 (not_ready)", last_action_at=T0 + 180
    )
    later = w.feed(hot, 11)  # up to T0 + 345: the cooldown ends
    assert [d.action for d in later] == ["none"] * 10 + ["rollback"]
    rollback = later[-1]
    assert rollback.reason == "scaling did not help and the cooldown is over: rollback 2->1"
    assert rollback.memory == Memory(
        last_action="rollback 2->1", last_action_at=T0 + 345, cooldown_until=T0 + 645
    )
    assert {d.action for d in w.feed(hot, 40)} == {"none"}  # no scale_up this incident


def test_latency_not_easing_after_verify_passes_gives_up() -> None:
    w = Workload()
    w.feed(hot, 3)
    after = w.feed(hot, 5)
    assert [d.action for d in after] == ["none"] * 4 + ["give_up"]
    assert (after[-1].alert, after[-1].memory.rollback_to) == ("not_helping", 1)
    assert after[-1].reason == (
        "p95_latency_seconds 0.84 vs baseline 0.05 (up), rps 150 vs baseline 40 (up) "
        "5 samples after scale_up 1->2: scaling did not help (p95 0.84s at the scale_up, "
        "0.84s now, baseline 0.05s); "
        "no more scale-ups this incident, rollback to 1 after the cooldown"
    )


def test_verify_passes_count_from_when_the_new_pods_are_ready() -> None:
    w = Workload()
    w.feed(hot, 3)
    w.kw["ready_replicas"] = 1
    waiting = w.feed(hot, 6)  # the new pod starts: nothing to judge yet
    assert [d.action for d in waiting] == ["none"] * 6
    assert w.state.verify is not None and w.state.verify.passes == 0
    w.kw["ready_replicas"] = 2
    judged = w.feed(hot, 5)
    assert [d.action for d in judged] == ["none"] * 4 + ["give_up"]
    assert judged[-1].alert == "not_helping"
    assert "5 samples after scale_up 1->2" in judged[-1].reason


def test_latency_halved_passes_the_verification() -> None:
    w = Workload()
    w.feed(hot, 3)
    after = w.feed(lambda t: hot(t, p95=0.4), 5)  # excess 0.35 <= 0.79 / 2
    assert {d.action for d in after} == {"none"}
    assert w.state.verify is None and not w.state.gave_up


def test_scale_down_steps_once_per_cooldown_to_the_original_and_clears_the_record() -> None:
    w = Workload(replicas=3, memory=replace(SCALED, replicas_set=3, cooldown_until=T0))
    steps = [d for d in w.feed(normal, 60) if d.action != "none"]
    assert [(d.action, d.replicas_after, d.reason) for d in steps] == [
        ("scale_down", 2, "calm for 300s; scale_down 3->2 (toward 1)"),
        ("scale_down", 1, "calm for 600s; scale_down 2->1 (original replicas)"),
    ]
    assert steps[0].memory == replace(
        SCALED,
        replicas_set=2,
        last_action="scale_down 3->2",
        last_action_at=T0 + 315,
        cooldown_until=T0 + 615,
    )
    assert steps[1].memory == Memory(
        last_action="scale_down 2->1", last_action_at=T0 + 615, cooldown_until=T0 + 915
    )


def test_below_the_minimum_the_record_is_cleared_without_scaling() -> None:
    limits = Limits(min_replicas=2, max_replicas=3)
    w = Workload(replicas=2, memory=replace(SCALED, cooldown_until=T0), limits=limits)
    steps = [d for d in w.feed(normal, 30) if d.action != "none"]
    assert [(d.action, d.replicas_after, d.reason) for d in steps] == [
        ("release", 2, "calm for 300s at 2 replicas (target 2): record cleared")
    ]
    assert steps[0].memory.original_replicas is None


def test_unapplied_is_the_decision_as_if_nothing_had_been_done() -> None:
    up = Workload().feed(hot, 3)[-1]
    held = unapplied(up, "dry-run")
    assert (held.action, held.replicas_after, held.alert) == ("none", 1, None)
    assert held.reason == f"{up.reason} (not applied: dry-run)"
    assert held.memory == Memory() and held.state.verify is None
    assert held.confirmed and held.state.incident_open  # the incident itself stands
    assert unapplied(held, "again") is held


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("verify_passes", 0, "verify_passes must be >= 1, got 0"),
        ("verify_ready_seconds", -1, "verify_ready_seconds must be >= 0, got -1"),
        ("max_actions_per_pass", 0, "max_actions_per_pass must be >= 1, got 0"),
        ("max_actions_per_hour", 0, "max_actions_per_hour must be >= 1, got 0"),
        ("scale_down_after_seconds", -5, "scale_down_after_seconds must be >= 0 or None, got -5"),
        ("hpa_mode", "x", "hpa_mode must be one of alert, raise_min, got 'x'"),
        ("cooldown_seconds", -1, "cooldown_seconds must be >= 0, got -1"),
    ],
)
def test_bad_policy_params_name_the_field(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        PolicyParams(**{field: value})  # type: ignore[arg-type]


def test_policy_params_defaults() -> None:
    p = PolicyParams()
    assert (p.scale_down_after_seconds, p.verify_ready_seconds, p.verify_passes) == (300, 120, 5)
    assert (p.hpa_mode, p.restart_on_memory_leak) == ("alert", False)
    assert (p.max_actions_per_pass, p.max_actions_per_hour) == (10, 60)
    assert PolicyParams(scale_down_after_seconds=None).scale_down_after_seconds is None


def test_a_restart_after_give_up_still_rolls_back_from_the_annotations() -> None:
    """No in-process state survives a restart; the rollback-to annotation does."""
    gave_up = replace(SCALED, rollback_to=1, last_action="give_up 1->2 (not_helping)")
    memory, problems = memory_from_annotations(memory_to_annotations(gave_up))
    w = Workload(replicas=2, memory=memory)
    w.t = T0 + 285  # first sample at T0 + 300, when the cooldown ends
    d = w.feed(hot)[0]
    assert problems == () and (d.action, d.replicas_after) == ("rollback", 1)
    assert d.memory.original_replicas is None and d.memory.rollback_to is None


# -- regressions (review of the safe-autonomy policy) -----------------------------------


def test_a_rollback_stays_within_the_bounds_and_never_scales_up() -> None:
    gave_up = replace(SCALED, replicas_set=9, rollback_to=8, cooldown_until=T0)
    lowered = Workload(replicas=9, memory=gave_up, limits=Limits(min_replicas=1, max_replicas=3))
    steps = [(d.action, d.replicas_after) for d in lowered.feed(normal, 10) if d.action != "none"]
    assert steps == [("rollback", 3)]  # max lowered from 10 to 3 since the give_up
    hand_written = Memory(replicas_set=2, rollback_to=40)  # not below the replicas now
    w = Workload(replicas=2, memory=hand_written)
    decisions = w.feed(normal, 10)
    assert [d.action for d in decisions] == ["release"] + ["none"] * 9
    assert decisions[0].reason == (
        "rollback-to 40 is not below the 2 replicas now (bounds 1-3): rollback-to cleared"
    )
    assert decisions[0].memory == Memory(
        replicas_set=2, last_action="release (rollback-to 40 cleared)", last_action_at=T0 + 15
    )
    assert w.replicas == 2


def test_a_pending_rollback_after_a_restart_holds_scale_ups_then_rolls_back() -> None:
    gave_up = replace(SCALED, rollback_to=1, last_action="give_up 1->2 (not_helping)")
    memory, _ = memory_from_annotations(memory_to_annotations(gave_up))
    w = Workload(replicas=2, memory=memory)
    w.t = T0 + 200  # restarted while the cooldown (until T0 + 300) runs; the surge goes on
    decisions = w.feed(hot, 40)
    acted = [
        (w.t - 15 * (39 - i) - T0, d.action, d.replicas_after, d.alert)
        for i, d in enumerate(decisions)
        if d.action != "none"
    ]
    assert acted == [(245, "alert", 2, "not_helping"), (305, "rollback", 1, None)]
    assert decisions[2].reason.endswith("; rollback pending: to 1 after the cooldown, no scale-ups")
    assert decisions[-1].reason.endswith(
        "; scaling did not help in this incident, no more scale-ups"
    )


def test_a_new_incident_within_the_cooldown_does_not_overwrite_the_rollback() -> None:
    w = Workload()
    w.feed(hot, 3)
    assert w.feed(hot, 5)[-1].action == "give_up"  # at T0 + 120, cooldown until T0 + 345
    w.feed(normal, 3)  # resolved at T0 + 165
    later = w.feed(hot, 20)
    acted = [
        (d.action, d.replicas_after, d.memory.rollback_to) for d in later if d.action != "none"
    ]
    assert acted == [("alert", 2, 1), ("rollback", 1, None)]


def test_give_up_keeps_an_earlier_lower_rollback_target() -> None:
    check = Verify(since=T0, before=2, after=3, p95=0.84)
    w = Workload(replicas=3, memory=replace(SCALED, replicas_set=3, rollback_to=1))
    w.state = PolicyState(anomalous_streak=3, incident_open=True, incident_since=T0, verify=check)
    decisions = w.feed(hot, 5)
    assert [d.action for d in decisions] == ["alert"] + ["none"] * 3 + ["give_up"]
    assert decisions[0].reason.endswith("; rollback pending: to 1 after the cooldown, no scale-ups")
    assert decisions[-1].memory.rollback_to == 1
    assert decisions[-1].reason.endswith("rollback to 1 after the cooldown")


def test_no_scale_up_while_the_last_one_is_being_verified() -> None:
    params = replace(PARAMS, cooldown_seconds=60)  # shorter than the verification
    w = Workload(params=params, limits=Limits(max_replicas=10), ready_replicas=1)
    decisions = w.feed(hot, 3) + w.feed(lambda t: hot(t, p95=0.1), 57)  # eased: only readiness
    acted = [
        (i, d.action, d.replicas_after, d.alert)
        for i, d in enumerate(decisions)
        if d.action != "none"
    ]
    assert acted == [
        (2, "scale_up", 2, None),
        (11, "give_up", 2, "not_ready"),
        (12, "rollback", 1, None),
    ]
    assert decisions[5].reason.endswith("; cooldown until 2025-11-26T10:01:45Z")
    # passes are not counted while the new pod is not ready
    assert decisions[6].reason.endswith("; verifying scale_up 1->2: ready 1/2, pass 0/5")
    assert decisions[10].reason.endswith("; verifying scale_up 1->2: ready 1/2, pass 0/5")
    assert decisions[11].memory.rollback_to == 1
    assert w.replicas == 1


def idle(t: float) -> Observation:
    return Observation(t=t, status="idle")


@pytest.mark.parametrize(
    "after_surge", [idle, lambda t: anomaly(t, DROP)], ids=["idle", "traffic_drop"]
)
def test_scale_down_when_traffic_goes_idle_or_drops_after_a_surge(after_surge: object) -> None:
    w = Workload()
    w.feed(hot, 3)  # scale_up 1->2 at T0 + 45
    w.state = replace(w.state, verify=None)  # verified (readiness is not the point here)
    later = w.feed(after_surge, 40)
    downs = [(d.action, d.replicas_after, d.reason) for d in later if d.action == "scale_down"]
    assert downs == [("scale_down", 1, "calm for 300s; scale_down 2->1 (original replicas)")]
    assert later[19].memory.last_action_at == T0 + 345  # 300 s after the last surge sample
    assert w.replicas == 1 and w.memory.original_replicas is None


def test_never_scale_down_during_a_surge() -> None:
    limits = Limits(max_replicas=2)
    w = Workload(replicas=2, memory=replace(SCALED, cooldown_until=T0), limits=limits)
    decisions = w.feed(hot, 60)  # at max: nothing more to add, and nothing to take away
    assert [d.action for d in decisions] == ["none"] * 2 + ["alert"] + ["none"] * 57
    assert decisions[2].alert == "at_max" and w.replicas == 2


def test_a_restart_while_idle_starts_the_calm_clock_at_the_first_sample() -> None:
    w = Workload(replicas=2, memory=replace(SCALED, cooldown_until=T0))
    decisions = w.feed(idle, 40)
    acted = [(i, d.action, d.replicas_after) for i, d in enumerate(decisions) if d.action != "none"]
    assert acted == [(20, "scale_down", 1)]  # first sample at T0 + 15, calm 300 s later
    assert decisions[20].reason == "calm for 300s; scale_down 2->1 (original replicas)"


RAISE_MIN = replace(PARAMS, hpa_mode="raise_min")
HPA = HpaView(name="web", min_replicas=2, max_replicas=6)


def test_a_human_changing_the_raised_hpa_floor_wins_over_the_restore() -> None:
    w = Workload(replicas=2, hpa=HPA, params=RAISE_MIN)
    assert w.feed(hot, 3)[-1].action == "hpa_raise"  # minReplicas 2->3
    w.kw["hpa"] = replace(HPA, min_replicas=5)  # a human set 5
    first, *rest = w.feed(hot, 30)
    assert (first.action, first.alert, first.hpa_min_after) == ("release", "hands_off", None)
    assert first.reason == (
        "the HPA web minReplicas is 5, AegisOps set 3: someone else changed it; "
        "hands off, HPA record cleared"
    )
    assert (first.memory.hpa_original_min, first.memory.hpa_min_set) == (None, None)
    assert {d.action for d in rest} == {"none"}  # no raise over the human's floor
    assert rest[-1].reason.endswith("; hands off: the HPA's minReplicas was set by someone else")
    calm = w.feed(normal, 30)
    assert [d.action for d in calm if d.action != "none"] == ["release"]  # hands-off cleared
    assert not any(d.hpa_min_after for d in calm)  # 5 stays


def test_without_a_scale_down_window_the_hpa_floor_is_restored_after_the_cooldown() -> None:
    w = Workload(replicas=2, hpa=HPA, params=replace(RAISE_MIN, scale_down_after_seconds=None))
    w.feed(hot, 3)  # hpa_raise at T0 + 45, cooldown until T0 + 345
    w.kw["hpa"] = replace(HPA, min_replicas=3)
    calm = w.feed(normal, 30)
    acted = [
        (i, d.action, d.hpa_min_after, d.reason) for i, d in enumerate(calm) if d.action != "none"
    ]
    assert acted == [(19, "hpa_restore", 2, "cooldown over; hpa_restore web minReplicas 3->2")]


def test_dry_run_memory_and_state_never_look_managed() -> None:
    """A dry-run caller keeps only the cooldown: no hand edit, no give_up, no release."""
    w = Workload(ready_replicas=1)
    decisions = []
    for _ in range(120):  # 30 min of a surge the replicas never follow (nothing is applied)
        d = w.feed(hot)[0]
        w.memory, w.state, w.replicas = dry_run_memory(d), dry_run_state(d), 1
        decisions.append(d)
    acted = [(i, d.action) for i, d in enumerate(decisions) if d.action != "none"]
    assert acted == [(i, "scale_up") for i in (2, 22, 42, 62, 82, 102)]  # once per cooldown
    assert decisions[22].reason.endswith("; scale_up 1->2")
    assert decisions[3].reason.endswith("; cooldown until 2025-11-26T10:05:45Z")
    assert w.memory == Memory(
        last_action="scale_up 1->2", last_action_at=T0 + 1545, cooldown_until=T0 + 1845
    )
    assert w.state.verify is None and not w.state.gave_up and not w.state.hands_off


def test_an_unapplied_give_up_is_judged_again_on_the_next_pass() -> None:
    w = Workload()
    w.feed(hot, 3)
    gave_up = w.feed(hot, 5)[-1]
    assert gave_up.action == "give_up"
    held = unapplied(gave_up, "409 Conflict")
    assert (held.action, held.state.gave_up, held.memory.rollback_to) == ("none", False, None)
    assert held.state.verify == replace(gave_up.state_before.verify, passes=4)  # type: ignore[union-attr]
    w.state, w.memory = held.state, held.memory
    again = w.feed(hot, 20)
    acted = [(d.action, d.alert, d.replicas_after) for d in again if d.action != "none"]
    assert acted == [("give_up", "not_helping", 2), ("rollback", None, 1)]


def test_each_alert_goes_once_per_incident_when_it_first_applies() -> None:
    limits = Limits(max_replicas=2)
    w = Workload(limits=limits)
    decisions = w.feed(hot, 3) + w.feed(lambda t: hot(t, p95=0.4), 40)  # eased: verified
    slow = (replace(SURGE[0], value=0.4),)
    decisions += w.feed(lambda t: replace(hot(t, p95=0.4), deviations=slow), 10)
    alerts = [(i, d.action, d.alert) for i, d in enumerate(decisions) if d.alert]
    assert alerts == [(22, "alert", "at_max"), (43, "alert", "no_scale")]  # none repeated
    assert decisions[22].reason.endswith("; at max replicas (2)")  # after the cooldown
    assert decisions[43].reason.endswith(
        "at normal traffic: a slow dependency, scaling cannot fix it"
    )
    w.feed(normal, 3)  # resolved: a new incident alerts again
    assert [d.alert for d in w.feed(hot, 3)] == [None, None, "at_max"]


def test_a_scale_up_that_did_not_take_effect_is_not_verified() -> None:
    """A caller that keeps the state of a failed scale (record put back, replicas as they
    were, no cooldown claimed): the stale check is dropped and the step is tried again."""
    w = Workload()
    up = w.feed(hot, 3)[-1]
    w.replicas, w.memory = 1, Memory()  # the scale PATCH failed, the annotations put back
    later = w.feed(hot, 5)
    assert up.state.verify == Verify(since=T0 + 45, before=1, after=2, p95=0.84)
    assert later[0].state.verify == Verify(since=T0 + 60, before=1, after=2, p95=0.84)
    assert [(d.action, d.replicas_after) for d in later] == [("scale_up", 2)] + [("none", 2)] * 4
