"""Safe autonomy end to end (issue 5): `aegisops run` as subprocesses against the world.

Each test starts from a calm world (one replica, normal load, no record, no HPA, no Lease)
and uses docs/safety.md's accelerated settings (e2e_engine.safety_config): a 4 s Lease,
10 s cooldowns, a 6 s calm window, verification after 6 s / 5 passes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from e2e.e2e_engine import DECISION, LEASE, WORKLOAD, EngineProcess, safety_config
from e2e.e2e_world import (
    DEPLOYMENT_PATH,
    HPA_PATH,
    SCALE_PATH,
    SECOND_USER,
    assert_scales_bounded_and_once,
    last_seq,
    lease,
    restart_replicas,
    scale_patches,
    second_identity,
    set_app_args,
    slack_texts,
    wait_slack,
    writes,
)
from sampleapp.profiles import Steady
from sandbox.hpa import HPA_USER
from sandbox.world import DEPLOYMENT, ENGINE_USER, NAMESPACE, World

pytestmark = pytest.mark.slow

W = re.escape(WORKLOAD)
STANDBY = W + r": standby rps=.*; score \d\.\d\d vs threshold \d\.\d\d -> "
LEASE_REF = f"{NAMESPACE}/{LEASE}"  # how the engine names its Lease in the log
SURGE = Steady(rps=60.0)  # 1.5x one replica's capacity; two replicas cope
OVERLOAD = Steady(rps=80.0)  # 2x one replica's capacity
RECORD_KEYS = (
    "aegisops.dev/original-replicas",
    "aegisops.dev/replicas-set",
    "aegisops.dev/last-action",
    "aegisops.dev/last-action-at",
    "aegisops.dev/cooldown-until",
    "aegisops.dev/rollback-to",
    "aegisops.dev/hpa-original-min",
)


def start(
    world: World,
    engines: list[EngineProcess],
    tmp_path: Path,
    name: str,
    *,
    serviceaccount_dir: Path | None = None,
    **sections: Any,
) -> EngineProcess:
    engine = EngineProcess(
        world=world,
        config=safety_config(world, identity=f"e2e-{name}", **sections),
        workdir=tmp_path,
        name=name,
        serviceaccount_dir=serviceaccount_dir,
    )
    engines.append(engine.start())
    return engine


def records(world: World, *, after: int) -> list[dict[str, Any]]:
    """The aegisops.dev annotations of every record PATCH the engine got applied."""
    return [
        e.body["metadata"]["annotations"]
        for e in writes(world, after=after)
        if e.subresource is None and e.code == 200 and e.path == DEPLOYMENT_PATH
    ]


def test_two_engines_one_acts_the_other_takes_over_and_a_restart_still_scales_down(
    calm_world: World, engines: list[EngineProcess], tmp_path: Path
) -> None:
    world, mark = calm_world, last_seq(calm_world)
    # A cooldown that outlasts the takeover, the restart and the surge's fading rate
    # windows; verification is not what this test is about.
    policy = {"cooldown_seconds": 30, "verify_passes": 30}
    a = start(world, engines, tmp_path, "a", policy=policy)
    a.wait_lines(rf"became leader \(lease {LEASE_REF}, identity e2e-a\)", timeout=30)
    b_dir = second_identity(world, tmp_path / "sa-b")
    b = start(world, engines, tmp_path, "b", serviceaccount_dir=b_dir, policy=policy)
    b.wait_lines(rf"following e2e-a \(lease {LEASE_REF}\)", timeout=30)
    b.wait_lines(STANDBY, count=3, timeout=40)
    a.wait_lines(DECISION, count=3, timeout=40)

    world.set_load(SURGE)
    a.wait_lines(DECISION + r"scale_up 1->2: ", timeout=60)
    assert lease(world)["spec"]["holderIdentity"] == "e2e-a"
    # The follower scored the same surge but made no Kubernetes call beyond the Lease.
    followed = b.mark()
    assert [e.resource for e in world.api.requests(user=SECOND_USER)] == ["leases"] * len(
        world.api.requests(user=SECOND_USER)
    )
    assert b.lines(W + r": rps=") == []  # every decision line of b is marked standby

    killed = a.kill()  # no release: b must wait the Lease out
    assert killed != 0
    b.wait_lines(
        rf"became leader \(lease {LEASE_REF}, identity e2e-b\)", timeout=4 + 4, after=followed
    )
    taken = lease(world)["spec"]
    assert taken["holderIdentity"] == "e2e-b" and taken["leaseTransitions"] >= 1
    # The new leader re-read the Deployment and found the cooldown a's record started.
    b.wait_lines(DECISION + r"none: .*cooldown until ", count=3, timeout=20, after=followed)
    reread = [e for e in world.api.requests(user=SECOND_USER) if e.resource == "deployments"]
    assert reread and {e.verb for e in reread} == {"get"}  # re-read on taking over, no write
    assert b.lines(DECISION + r"scale_up ") == []  # as a follower it only said what it would do
    assert b.lines(STANDBY + r"none: .*; scale_up 1->2 \(not applied: standby, not the leader\)$")
    assert scale_patches(world, after=mark, user=SECOND_USER) == []
    world.set_load(Steady(rps=10.0))  # the incident may end; the scale-down is c's
    assert b.stop() == 0
    assert b.lines(rf"released lease {LEASE_REF} \(identity e2e-b\)")

    # A restart mid-incident: the record holds the cooldown, then the scale-down comes.
    c = start(world, engines, tmp_path, "c", policy=policy)
    c.wait_lines(rf"became leader \(lease {LEASE_REF}, identity e2e-c\)", timeout=30)
    c.wait_lines(DECISION + r"none: ", count=2, timeout=30)
    [down] = c.wait_lines(DECISION + r"scale_down 2->1: calm for \d+s; ", timeout=90)
    assert down.endswith("; scale_down 2->1 (original replicas)"), down
    assert c.lines(r"scale_up \d->\d") == []
    assert c.stop() == 0

    assert assert_scales_bounded_and_once(world, after=mark, low=1, high=4) == [2, 1]
    assert [e.body for e in scale_patches(world, after=mark)] == [
        {"spec": {"replicas": 2}},
        {"spec": {"replicas": 1}},
    ]
    assert writes(world, user=SECOND_USER, after=mark) == []
    up, down_record = records(world, after=mark)
    assert up["aegisops.dev/last-action"] == "scale_up 1->2"
    assert (up["aegisops.dev/original-replicas"], up["aegisops.dev/replicas-set"]) == ("1", "2")
    assert down_record["aegisops.dev/last-action"] == "scale_down 2->1"
    assert down_record["aegisops.dev/original-replicas"] is None  # back home: record cleared
    assert down_record["aegisops.dev/replicas-set"] is None
    texts = slack_texts(world)
    assert len([t for t in texts if " scaled up " in t]) == 1
    assert len([t for t in texts if " scaled down " in t]) == 1
    scaled_down = f"AegisOps: {WORKLOAD}: scaled down 2 -> 1 replicas ("
    assert [t for t in texts if t.startswith(scaled_down)]
    world.wait_for(lambda: world.replicas() == 1, timeout=30, message="back to 1 replica")


def test_hpa_alert_mode_only_alerts_and_raise_min_raises_then_restores(
    calm_world: World, engines: list[EngineProcess], tmp_path: Path
) -> None:
    world, mark = calm_world, last_seq(calm_world)
    world.add_hpa(min_replicas=1, max_replicas=4)
    alerting = start(world, engines, tmp_path, "hpa-alert")
    alerting.wait_lines(DECISION, count=3, timeout=40)
    world.set_load(SURGE)
    alerting.wait_lines(
        DECISION + r"(alert|none): .*an HPA aegisops-app manages this Deployment, not scaling",
        timeout=60,
    )
    hpa_alert = wait_slack(
        world,
        f"AegisOps: {WORKLOAD} is managed by an HPA — AegisOps does not scale it: ",
        timeout=20,
    )[0]
    assert "an HPA aegisops-app manages this Deployment, not scaling" in hpa_alert
    assert alerting.stop() == 0
    assert writes(world, after=mark) == []  # alert mode: no write at all

    # The cooldown outlasts the queue the surge left behind: one raise for this incident.
    policy = {"hpa_mode": "raise_min", "cooldown_seconds": 20}
    raising = start(world, engines, tmp_path, "hpa-raise", policy=policy)
    [raised] = raising.wait_lines(DECISION + r"hpa_raise: ", timeout=60)
    world.set_load(Steady(rps=10.0))
    assert raised.endswith("; hpa_raise aegisops-app minReplicas 1->2"), raised
    world.wait_for(lambda: world.replicas() == 2, timeout=30, message="the HPA's 2 replicas")
    [restored] = raising.wait_lines(DECISION + r"hpa_restore: calm for \d+s; ", timeout=90)
    assert restored.endswith("hpa_restore aegisops-app minReplicas 2->1"), restored
    assert raising.stop() == 0
    assert len(raising.lines(DECISION + r"hpa_raise: ")) == 1

    hpa_patches = [e for e in writes(world, after=mark) if e.resource == "horizontalpodautoscalers"]
    assert [(e.path, e.content_type, e.body, e.code) for e in hpa_patches] == [
        (HPA_PATH, "application/merge-patch+json", {"spec": {"minReplicas": 2}}, 200),
        (HPA_PATH, "application/merge-patch+json", {"spec": {"minReplicas": 1}}, 200),
    ]
    assert world.hpa()["spec"]["minReplicas"] == 1
    assert scale_patches(world, after=mark) == []  # never the Deployment's scale
    # The HPA controller did the scaling the raised minimum asked for.
    assert [e.body for e in scale_patches(world, after=mark, user=HPA_USER)] == [
        {"spec": {"replicas": 2}}
    ]
    raise_record, restore_record = records(world, after=mark)
    assert raise_record["aegisops.dev/last-action"] == "hpa_raise 1->2"
    assert raise_record["aegisops.dev/hpa-original-min"] == "1"
    assert restore_record["aegisops.dev/last-action"] == "hpa_restore 2->1"
    assert restore_record["aegisops.dev/hpa-original-min"] is None
    texts = slack_texts(world)
    raised_text = f"AegisOps: {WORKLOAD}: raised minReplicas of HPA aegisops-app 1 -> 2 ("
    restored_text = f"AegisOps: {WORKLOAD}: restored minReplicas of HPA aegisops-app 2 -> 1 ("
    assert [t for t in texts if t.startswith(raised_text)], texts
    assert [t for t in texts if t.startswith(restored_text)], texts


def test_replicas_edited_by_hand_during_an_incident_make_aegisops_back_off(
    calm_world: World, engines: list[EngineProcess], tmp_path: Path
) -> None:
    world, mark = calm_world, last_seq(calm_world)
    engine = start(world, engines, tmp_path, "hands", policy={"verify_passes": 30})
    engine.wait_lines(DECISION, count=3, timeout=40)
    world.set_load(OVERLOAD)
    engine.wait_lines(DECISION + r"scale_up 1->2: ", timeout=60)
    edited, seen = last_seq(world), engine.mark()
    world.scale(3)  # a human, as the admin

    [released] = engine.wait_lines(DECISION + r"release: ", timeout=20, after=seen)
    assert released.endswith(
        "release: replicas are 3, AegisOps set 2: someone else changed them; hands off, "
        "record cleared, no scaling for the rest of this incident"
    ), released
    hands_off = wait_slack(
        world, f"AegisOps: {WORKLOAD} replicas changed by hand — AegisOps backs off: ", timeout=20
    )[0]
    assert "replicas are 3, AegisOps set 2: someone else changed them" in hands_off
    # The incident goes on past the release's cooldown: still no scaling.
    held = engine.wait_lines(
        DECISION + r"none: .*hands off: the replicas were set by someone else",
        count=14,
        timeout=40,
        after=seen,
    )
    assert len(held) >= 14
    assert engine.stop() == 0

    assert scale_patches(world, after=edited) == []
    [record] = records(world, after=edited)
    assert record["aegisops.dev/last-action"] == "release 2->3 (set by someone else)"
    assert [record[k] for k in RECORD_KEYS[:2]] == [None, None]
    assert assert_scales_bounded_and_once(world, after=mark, low=1, high=4) == [2]
    assert world.deployment()["spec"]["replicas"] == 3


def test_new_pods_that_never_become_ready_stop_scaling_and_roll_back(
    calm_world: World, engines: list[EngineProcess], tmp_path: Path
) -> None:
    world, mark = calm_world, last_seq(calm_world)
    world.set_capacity(1)  # the cluster is full: a second replica stays Pending
    engine = start(world, engines, tmp_path, "unready", policy={"verify_passes": 30})
    engine.wait_lines(DECISION, count=3, timeout=40)
    world.set_load(OVERLOAD)
    engine.wait_lines(DECISION + r"scale_up 1->2: ", timeout=60)
    [gave_up] = engine.wait_lines(DECISION + r"give_up: ", timeout=30)
    assert re.search(
        r"give_up: 1/2 replicas ready \d+s after scale_up 1->2: the new pods are not ready; "
        r"no more scale-ups this incident, rollback to 1 after the cooldown$",
        gave_up,
    ), gave_up
    not_ready = wait_slack(
        world, f"AegisOps: New pods of {WORKLOAD} did not become ready: ", timeout=20
    )[0]
    assert "1/2 replicas ready" in not_ready
    [rolled] = engine.wait_lines(DECISION + r"rollback 2->1: ", timeout=30)
    assert rolled.endswith("scaling did not help and the cooldown is over: rollback 2->1"), rolled
    after = engine.mark()
    engine.wait_lines(DECISION + r"none: .*no more scale-ups", count=3, timeout=20, after=after)
    assert engine.stop() == 0

    assert engine.lines(r"scale_up 2->3") == []
    assert assert_scales_bounded_and_once(world, after=mark, low=1, high=4) == [2, 1]
    up, give_up, rollback = records(world, after=mark)
    assert up["aegisops.dev/last-action"] == "scale_up 1->2"
    assert give_up["aegisops.dev/last-action"] == "give_up 1->2 (not_ready)"
    assert give_up["aegisops.dev/rollback-to"] == "1"
    assert rollback["aegisops.dev/last-action"] == "rollback 2->1"
    assert rollback["aegisops.dev/rollback-to"] is None
    assert [t for t in slack_texts(world) if " rolled back 2 -> 1 replicas " in t]


def test_a_scale_up_that_does_not_ease_the_anomaly_stops_and_rolls_back(
    calm_world: World, engines: list[EngineProcess], tmp_path: Path
) -> None:
    """Latency that is not load: every replica (new ones too) adds 0.4 s per request, so
    more replicas cannot bring p95 down, while traffic rises enough to look like a surge.
    16 workers per replica keep the traffic served (no drop in rps)."""
    world, mark = calm_world, last_seq(calm_world)
    set_app_args(world, "--workers 16 --service-time 0.05 --extra-latency 0.4")
    restart_replicas(world)
    engine = start(world, engines, tmp_path, "nothelp")
    engine.wait_lines(DECISION, count=3, timeout=40)
    world.set_load(Steady(rps=20.0))
    engine.wait_lines(DECISION + r"scale_up 1->2: ", timeout=60)
    world.wait_for(lambda: world.replicas() == 2, timeout=30, message="2 replicas")
    flags = [r.proc.args for r in world.kubelet.replicas(namespace=NAMESPACE, name=DEPLOYMENT)]
    assert all("--extra-latency" in list(map(str, args)) for args in flags), flags

    [gave_up] = engine.wait_lines(DECISION + r"give_up: ", timeout=40)
    assert re.search(
        r"give_up: .* \d+ samples after scale_up 1->2: scaling did not help "
        r"\(p95 [\d.]+s at the scale_up, [\d.]+s now, baseline [\d.]+s\); "
        r"no more scale-ups this incident, rollback to 1 after the cooldown$",
        gave_up,
    ), gave_up
    not_helping = wait_slack(world, f"AegisOps: Scaling did not help {WORKLOAD}: ", timeout=20)[0]
    assert "scaling did not help" in not_helping
    [rolled] = engine.wait_lines(DECISION + r"rollback 2->1: ", timeout=30)
    assert rolled.endswith("scaling did not help and the cooldown is over: rollback 2->1"), rolled
    assert engine.stop() == 0

    assert engine.lines(r"scale_up 2->3") == []
    assert assert_scales_bounded_and_once(world, after=mark, low=1, high=4) == [2, 1]
    give_up = records(world, after=mark)[1]
    assert give_up["aegisops.dev/last-action"] == "give_up 1->2 (not_helping)"
    assert [e.path for e in scale_patches(world, after=mark)] == [SCALE_PATH, SCALE_PATH]
    assert not [e for e in writes(world, after=mark) if e.user != ENGINE_USER]
