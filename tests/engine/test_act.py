"""Acting on the cluster, through the loop, with fakes at our own boundaries: dry-run per
target and per annotation, pause on the fresh read, 403, 404, the Kubernetes backoff and
the global action caps (docs/safety.md, "Loop and acting")."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import pytest
from engine_fakes import (
    ACTING,
    KEY,
    T0,
    FakeKube,
    FakeSource,
    MultiKube,
    Rig,
    decisions,
    make_config,
    metric,
    rig,
)

from aegisops.guard import ActionCaps
from aegisops.kube import Forbidden, KubeUnavailable, NotFound, ScaleInfo
from aegisops.policy import (
    ANNOTATION_KEYS,
    COOLDOWN_UNTIL,
    LAST_ACTION,
    LAST_ACTION_AT,
    ORIGINAL_REPLICAS,
    REPLICAS_SET,
    ROLLBACK_TO,
    format_time,
)

TARGET = {"namespace": "shop", "deployment": "web", "max_replicas": 4}
READ = ["hpas", "get_deployment", "get_scale"]


def writes(kube: FakeKube) -> list[str]:
    return [name for name in kube.names() if name.startswith("patch")]


@pytest.mark.parametrize(
    ("config", "annotations"),
    [
        (make_config(targets=[{**TARGET, "dry_run": True}]), {}),
        (make_config(), {"aegisops.dev/dry-run": "true"}),
        (make_config(dry_run=True, targets=[{**TARGET, "dry_run": False}]), {"x": "y"}),
    ],
    ids=["target", "annotation", "target-false-wins-over-global"],
)
def test_dry_run_per_target_and_per_annotation(
    config: object, annotations: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    r = rig(config=config, kube=FakeKube(annotations=dict(annotations)))  # type: ignore[arg-type]
    r.source.surge_from = T0
    results = r.passes(6, start=T0 + 1)
    assert [p.actions for p in results] == [0, 0, 1, 0, 0, 0]
    dry = "x" not in annotations
    if not dry:  # the target's own `false` beats the global `true`
        assert writes(r.kube) == ["patch_annotations", "patch_scale"]
        assert not any(m.startswith("**DRY-RUN** ") for m in decisions(caplog))
        return
    assert writes(r.kube) == []
    assert r.kube.names() == ["get_deployment", *READ]
    [marked] = [m for m in decisions(caplog) if m.startswith("**DRY-RUN** ")]
    assert "-> scale_up 1->2: " in marked
    [action] = [t for t in r.notifier.texts() if "scale" in t]
    assert action.startswith("[DRY-RUN] AegisOps: shop/web: would have scaled up 1 -> 2 replicas")
    labels = {"namespace": "shop", "deployment": "web", "action": "scale_up", "result": "dry_run"}
    assert metric(r, "aegisops_actions_total", labels) == 1
    # the cooldown holds in this process: no second proposal
    assert sum("cooldown until" in m for m in decisions(caplog)) == 3


def test_the_paused_annotation_is_honoured_on_the_fresh_read(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    r = rig()
    r.source.surge_from = T0
    r.passes(1, start=T0 + 1)  # first seen: not paused
    r.kube.annotations["aegisops.dev/paused"] = "true"  # kubectl annotate ... paused=true
    results = r.passes(4, start=T0 + 2)
    assert sum(p.actions for p in results) == 0
    assert writes(r.kube) == []
    assert r.kube.names()[:4] == ["get_deployment", *READ]
    assert sum(m.endswith("(aegisops.dev/paused), no action") for m in decisions(caplog)) == 3
    assert r.notifier.texts()[-1].startswith(
        "AegisOps: shop/web is paused — AegisOps takes no action: "
    )


def test_forbidden_names_the_permission_and_alerts_once_per_hour(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    denied = "patch deployments shop/web: 403 Forbidden"
    permission = "patch deployments in apps, namespace shop"
    r = rig(kube=FakeKube(fail={"patch_annotations": Forbidden(denied, permission=permission)}))
    r.source.surge_from = T0
    r.passes(3, start=T0 + 1)
    r.kube.fail["patch_annotations"] = Forbidden(denied, permission=permission)
    r.engine.workloads[KEY].read_at = float("-inf")  # the next pass would re-read at once
    r.engine.workloads[KEY].memory = None
    calls = len(r.kube.calls)
    r.passes(2, start=T0 + 4)
    assert r.kube.names()[calls:] == ["get_deployment"]  # held: no action attempt
    assert (
        f"forbidden: the engine may not {permission} (grant it in its Role; {denied}); no "
        f"action attempt on this workload until {format_time(T0 + 3 + 300)}" in caplog.text
    )
    alerts = [t for t in r.notifier.texts() if "not allowed" in t]
    assert alerts == [
        f"AegisOps: AegisOps is not allowed to act on shop/web: the engine may not {permission}"
    ]
    labels = {"namespace": "shop", "deployment": "web", "action": "scale_up"}
    assert metric(r, "aegisops_actions_total", {**labels, "result": "forbidden"}) == 1


def test_a_gone_deployment_is_dropped_and_rechecked_with_one_get(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    gone = NotFound("get deployments shop/web: 404 NotFound")
    r = rig(
        kube=FakeKube(fail={"get_deployment": gone}),
        config=make_config(kubernetes={"recheck_gone_seconds": 10}),
    )
    r.passes(10, start=T0 + 1)  # 404 at T0+1, dropped until T0+11
    assert r.kube.names() == ["get_deployment"]
    assert (
        "Deployment not found (get deployments shop/web: 404 NotFound): dropped from the "
        "passes, looking again every 10s" in caplog.text
    )
    assert not any(" -> " in m for m in decisions(caplog))  # nothing scored meanwhile
    r.kube.fail["get_deployment"] = gone
    r.passes(10, start=T0 + 11)  # one GET at T0+11: still gone, until T0+21
    assert r.kube.names() == ["get_deployment", "get_deployment"]
    r.passes(3, start=T0 + 21)  # back
    assert r.kube.names() == ["get_deployment"] * 3
    assert "Deployment found again; back in the passes" in caplog.text
    assert sum("-> none: " in m for m in decisions(caplog)) == 3


def test_kubernetes_unavailable_backs_off_engine_wide_honouring_retry_after(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    busy = KubeUnavailable("list horizontalpodautoscalers shop: 429 TooManyRequests")
    busy.retry_after = 5.0  # type: ignore[attr-defined]
    r = rig(kube=FakeKube(fail={"hpas": busy}))
    r.source.surge_from = T0
    results = r.passes(8, start=T0 + 1)  # T0+3: 429, Retry-After 5 s: no calls until T0+8
    # T0+8: the Deployment is read again (its cached facts were dropped), then the action
    assert r.kube.names() == ["get_deployment", "hpas", "get_deployment", *ACTING]
    assert [p.actions for p in results] == [0, 0, 0, 0, 0, 0, 0, 1]
    held = [m for m in decisions(caplog) if m.endswith("(not applied: Kubernetes API backoff)")]
    assert len(held) == 5  # T0+3 .. T0+7
    assert caplog.text.count("Kubernetes API unavailable (") == 1
    assert (
        "Kubernetes API unavailable (list horizontalpodautoscalers shop: 429 TooManyRequests): "
        "no Kubernetes call for 5s (backoff)" in caplog.text
    )
    assert caplog.text.count("Kubernetes API answers again; backoff over") == 1


@dataclass
class DownKube(FakeKube):
    """Every call fails with a 503 while `down`; records the pass time of each call."""

    down: bool = False
    times: list[float] = field(default_factory=list)
    engine: Any = None

    def _call(self, name: str, arg: Any = None) -> None:
        super()._call(name, arg)
        if self.down:
            self.times.append(self.engine.actor.backoff.now - T0)
            raise KubeUnavailable(f"{name}: 503 ServiceUnavailable")


def test_the_backoff_doubles_to_a_minute_while_the_api_stays_unavailable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    kube = DownKube()
    r = rig(kube=kube)
    kube.engine = r.engine
    r.source.surge_from = T0
    r.passes(2, start=T0 + 1)
    kube.down = True
    r.passes(300, start=T0 + 3)
    assert kube.times == [3, 4, 6, 10, 18, 34, 66, 126, 186, 246]  # 1, 2, 4 ... 60 s apart
    assert caplog.text.count("Kubernetes API unavailable (") == 1
    kube.down = False
    calls = len(kube.calls)
    r.passes(60, start=T0 + 303)  # the backoff ends at T0+306
    assert len(kube.calls) > calls
    assert caplog.text.count("Kubernetes API answers again; backoff over") == 1


def caps_rig(**policy: int) -> Rig:
    names = ("a", "b", "c")
    keys = tuple(f"shop/{n}" for n in names)
    targets = [{"namespace": "shop", "deployment": n, "max_replicas": 4} for n in names]
    config = make_config(targets=targets, policy={"consecutive_anomalies": 3, **policy})
    return rig(kube=MultiKube(names), config=config, source=FakeSource(keys=keys))


def test_action_caps_hold_back_the_rest_of_the_pass_and_alert_once_per_hour(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    r = caps_rig(cooldown_seconds=300)
    r.engine.caps.per_pass = 2
    r.source.surge_from = T0
    results = r.passes(4, start=T0 + 1)
    assert [p.actions for p in results] == [0, 0, 2, 1]
    scaled = [name for name, call in r.kube.calls if call == "patch_scale"]
    assert scaled == ["a", "b", "c"]  # c held back at T0+3, scaled at T0+4
    held = [m for m in decisions(caplog, "shop/c") if m.startswith("held back: ")]
    assert held == ["held back: scale_up 1->2 max_actions_per_pass (2) reached this pass"]
    caps = [t for t in r.notifier.texts() if "Action cap" in t]
    assert caps == [
        "AegisOps: Action cap reached — no action on shop/c: scale_up 1->2 held back: "
        "max_actions_per_pass (2) reached this pass"
    ]


def test_the_hourly_cap_counts_a_rolling_hour() -> None:
    caps = ActionCaps(per_pass=10, per_hour=2)
    caps.count(now=T0)
    caps.count(now=T0 + 1000)
    caps.begin_pass()
    assert caps.full(now=T0 + 3599) == "max_actions_per_hour (2) reached in the last hour"
    assert caps.full(now=T0 + 3600) is None  # the first one is an hour old
    caps.count(now=T0 + 3600)
    assert caps.full(now=T0 + 4599) == "max_actions_per_hour (2) reached in the last hour"
    assert caps.full(now=T0 + 4600) is None


def patches(kube: FakeKube) -> list[tuple[str, Any]]:
    return [(name, arg) for name, arg in kube.calls if name.startswith(("patch", "restart"))]


def test_a_hand_edit_releases_the_record_and_alerts_hands_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    ours = {
        ORIGINAL_REPLICAS: "1",
        REPLICAS_SET: "2",
        LAST_ACTION: "scale_up 1->2",
        LAST_ACTION_AT: format_time(T0 - 600),
        COOLDOWN_UNTIL: format_time(T0 - 300),
    }
    r = rig(kube=FakeKube(annotations=dict(ours), replicas=3))  # kubectl scale --replicas=3
    r.source.surge_from = T0
    results = r.passes(6, start=T0 + 1)
    assert sum(p.actions for p in results) == 1
    assert r.kube.names()[:5] == ["get_deployment", *READ, "patch_annotations"]
    assert "patch_scale" not in r.kube.names()
    assert patches(r.kube)[0][1] == {
        **dict.fromkeys(ANNOTATION_KEYS),
        LAST_ACTION: "release 2->3 (set by someone else)",
        LAST_ACTION_AT: format_time(T0 + 1),
        "aegisops.dev/hands-off": format_time(T0 + 1),  # no scaling until calm after it
        COOLDOWN_UNTIL: format_time(T0 + 301),
    }
    [alert] = [t for t in r.notifier.texts() if "by hand" in t]
    assert alert.startswith(
        "AegisOps: shop/web replicas changed by hand — AegisOps backs off: replicas are 3, "
        "AegisOps set 2: someone else changed them; hands off, record cleared"
    )
    assert not any("released" in t for t in r.notifier.texts())  # the alert says it all


def test_a_scale_up_that_does_not_help_gives_up_then_rolls_back_after_the_cooldown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    policy = {"consecutive_anomalies": 3, "cooldown_seconds": 10, "verify_passes": 3}
    r = rig(config=make_config(policy=policy))
    r.source.surge_from = T0
    r.passes(16, start=T0 + 1)
    assert [(n, a if n == "patch_scale" else a[LAST_ACTION]) for n, a in patches(r.kube)] == [
        ("patch_annotations", "scale_up 1->2"),  # T0+3
        ("patch_scale", 2),
        ("patch_annotations", "give_up 1->2 (not_helping)"),  # 3 passes later
        ("patch_annotations", "rollback 2->1"),  # the cooldown is over at T0+13
        ("patch_scale", 1),
    ]
    assert patches(r.kube)[2][1][ROLLBACK_TO] == "1"
    texts = r.notifier.texts()
    assert [t.split(":")[1] for t in texts] == [
        " Anomaly on shop/web",
        " shop/web",  # scaled up
        " Scaling did not help shop/web",
        " shop/web",  # rolled back
    ]
    assert texts[3].startswith("AegisOps: shop/web: rolled back 2 -> 1 replicas (")
    assert r.kube.replicas == 1


def test_new_pods_not_ready_in_time_give_up_with_not_ready() -> None:
    policy = {"consecutive_anomalies": 3, "cooldown_seconds": 10, "verify_ready_seconds": 4}
    r = rig(config=make_config(policy=policy), kube=FakeKube(ready=1))  # capacity: 1 pod
    r.source.surge_from = T0
    r.passes(10, start=T0 + 1)
    notes = [a[LAST_ACTION] for n, a in patches(r.kube) if n == "patch_annotations"]
    assert notes[:2] == ["scale_up 1->2", "give_up 1->2 (not_ready)"]
    assert any(
        t.startswith("AegisOps: New pods of shop/web did not become ready")
        for t in (r.notifier.texts())
    )


def test_calm_steps_back_down_one_step_per_cooldown_to_the_original() -> None:
    ours = {ORIGINAL_REPLICAS: "1", REPLICAS_SET: "3", COOLDOWN_UNTIL: format_time(T0 - 60)}
    policy = {"consecutive_anomalies": 3, "cooldown_seconds": 10, "scale_down_after_seconds": 5}
    r = rig(config=make_config(policy=policy), kube=FakeKube(annotations=ours, replicas=3))
    r.passes(30, start=T0 + 1)
    assert [a for n, a in patches(r.kube) if n == "patch_scale"] == [2, 1]
    assert LAST_ACTION in r.kube.annotations and ORIGINAL_REPLICAS not in r.kube.annotations
    assert [t.split(" (")[0] for t in r.notifier.texts()] == [
        "AegisOps: shop/web: scaled down 3 -> 2 replicas",
        "AegisOps: shop/web: scaled down 2 -> 1 replicas",
    ]


def test_raise_min_raises_the_hpa_floor_instead_of_scaling() -> None:
    policy = {"consecutive_anomalies": 3, "cooldown_seconds": 300, "hpa_mode": "raise_min"}
    r = rig(config=make_config(policy=policy), kube=FakeKube(hpa_names={"web"}))
    r.source.surge_from = T0
    r.passes(5, start=T0 + 1)
    assert [n for n, _ in patches(r.kube)] == ["patch_annotations", "patch_hpa_min"]
    assert patches(r.kube)[1][1] == ("web-hpa", 2)
    assert r.kube.annotations["aegisops.dev/hpa-original-min"] == "1"
    [raised] = [t for t in r.notifier.texts() if "minReplicas" in t]
    assert raised.startswith("AegisOps: shop/web: raised minReplicas of HPA web-hpa 1 -> 2 (")


def test_a_memory_leak_restarts_the_pods_when_enabled() -> None:
    policy = {"consecutive_anomalies": 3, "cooldown_seconds": 300, "restart_on_memory_leak": True}
    r = rig(config=make_config(policy=policy))
    r.source.surge, r.source.surge_from = (10.0, 0.05, 60e6), T0
    r.passes(5, start=T0 + 1)
    assert [n for n, _ in patches(r.kube)] == ["patch_annotations", "restart"]
    assert patches(r.kube)[1][1] == format_time(T0 + 3)
    assert r.kube.annotations[LAST_ACTION] == "restart"


# -- an action write that failed without a refusal may have happened: read it back -------

LOST = "the answer was lost: ReadTimeoutError"
ACTION = {"namespace": "shop", "deployment": "web"}


def test_a_timed_out_scale_that_took_effect_counts_as_applied(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    policy = {"consecutive_anomalies": 3, "cooldown_seconds": 300, "max_actions_per_hour": 1}
    kube = FakeKube(fail_after={"patch_scale": KubeUnavailable(LOST)})
    r = rig(config=make_config(policy=policy), kube=kube)
    r.source.surge_from = T0
    results = r.passes(10, start=T0 + 1)
    assert [p.actions for p in results][:4] == [0, 0, 1, 0]
    assert r.kube.names()[4:7] == ["patch_annotations", "patch_scale", "get_scale"]  # read back
    assert writes(r.kube) == ["patch_annotations", "patch_scale"]  # the record stays
    assert r.kube.annotations[LAST_ACTION] == "scale_up 1->2" and r.kube.replicas == 2
    assert f"scale_up answered {LOST}, but the read-back shows it took effect: applied" in (
        caplog.text
    )
    assert r.notifier.texts()[1].startswith("AegisOps: shop/web: scaled up 1 -> 2 replicas (")
    labels = {**ACTION, "action": "scale_up", "result": "applied"}
    assert metric(r, "aegisops_actions_total", labels) == 1
    assert r.engine.caps.full(now=T0 + 11) == "max_actions_per_hour (1) reached in the last hour"


class UnreadableAfterScale(FakeKube):
    """The scale PATCH times out, and so does every read of the Scale after it."""

    def get_scale(self, *, namespace: str, name: str) -> ScaleInfo:
        if "patch_scale" in self.names():
            self._call("get_scale")
            raise KubeUnavailable("get deployments/scale shop/web: ReadTimeoutError")
        return super().get_scale(namespace=namespace, name=name)


def test_a_timed_out_scale_that_cannot_be_read_back_keeps_its_record(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    r = rig(kube=UnreadableAfterScale(fail_after={"patch_scale": KubeUnavailable(LOST)}))
    r.source.surge_from = T0
    r.passes(10, start=T0 + 1)
    assert writes(r.kube) == ["patch_annotations", "patch_scale"]  # never a second scale
    assert r.kube.annotations[LAST_ACTION] == "scale_up 1->2"
    assert (
        f"scale_up 1->2: {LOST}; cannot read it back: the outcome is unknown; keeping the "
        "record, so it is not done twice" in caplog.text
    )
    labels = {**ACTION, "action": "scale_up", "result": "unknown"}
    assert metric(r, "aegisops_actions_total", labels) == 1


def test_a_timed_out_restart_that_took_effect_is_not_done_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    policy = {"consecutive_anomalies": 3, "cooldown_seconds": 300, "restart_on_memory_leak": True}
    r = rig(
        config=make_config(policy=policy),
        kube=FakeKube(fail_after={"restart": KubeUnavailable(LOST)}),
    )
    r.source.surge, r.source.surge_from = (10.0, 0.05, 60e6), T0
    r.passes(20, start=T0 + 1)
    assert patches(r.kube) == [
        ("patch_annotations", patches(r.kube)[0][1]),
        ("restart", format_time(T0 + 3)),
    ]
    assert r.kube.names()[6] == "get_deployment"  # the read-back of the template
    assert r.kube.annotations[LAST_ACTION] == "restart"
    assert "restart answered" in caplog.text and "took effect: applied" in caplog.text
    assert any(t.startswith("AegisOps: shop/web: restarted") for t in r.notifier.texts())


def test_a_timed_out_hpa_raise_that_took_effect_is_recorded_and_restored_later() -> None:
    policy = {
        "consecutive_anomalies": 3,
        "cooldown_seconds": 10,
        "hpa_mode": "raise_min",
        "scale_down_after_seconds": 5,
    }
    kube = FakeKube(hpa_names={"web"}, fail_after={"patch_hpa_min": KubeUnavailable(LOST)})
    r = rig(config=make_config(policy=policy), kube=kube)
    r.source.surge_from = T0
    r.passes(5, start=T0 + 1)
    assert r.kube.annotations["aegisops.dev/hpa-original-min"] == "1"  # the record stays
    r.source.surge_from = float("inf")
    r.passes(40, start=T0 + 6)
    assert [a for n, a in patches(r.kube) if n == "patch_hpa_min"] == [
        ("web-hpa", 2),  # timed out, but it took effect
        ("web-hpa", 1),  # restored once calm
    ]
    assert r.kube.hpa_min == 1


def test_dry_run_proposes_once_per_cooldown_across_re_reads_and_spares_the_caps() -> None:
    policy = {"consecutive_anomalies": 3, "cooldown_seconds": 20, "max_actions_per_hour": 1}
    r = rig(config=make_config(dry_run=True, policy=policy))
    r.source.surge_from = T0
    results = r.passes(50, start=T0 + 1)
    # re-read every reread_seconds (2 s) meanwhile; the cluster has no record of a dry run
    assert r.kube.names().count("get_deployment") == 25 and writes(r.kube) == []
    assert [n + 1 for n, p in enumerate(results) if p.actions] == [3, 23, 43]
    would = [t for t in r.notifier.texts() if "would have" in t]
    assert [t.split(" (")[0] for t in would] == [
        "[DRY-RUN] AegisOps: shop/web: would have scaled up 1 -> 2 replicas"
    ] * 3
    assert r.engine.caps.full(now=T0 + 51) is None  # a dry run never uses up the real cap
    labels = {**ACTION, "action": "scale_up", "result": "dry_run"}
    assert metric(r, "aegisops_actions_total", labels) == 3


class NoScalePermission(FakeKube):
    """The Role lacks `patch deployments/scale`: every scale PATCH is refused."""

    def patch_scale(self, *, namespace: str, name: str, replicas: int) -> ScaleInfo:
        self._call("patch_scale", replicas)
        permission = "patch deployments/scale in apps, namespace shop"
        raise Forbidden("patch deployments/scale shop/web: 403", permission=permission)


def test_a_403_on_the_action_holds_the_workload_without_calls_until_the_hold_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    r = rig(kube=NoScalePermission())
    r.source.surge_from = T0
    r.passes(60, start=T0 + 1)
    assert r.kube.names() == [
        "get_deployment",
        *READ,
        "patch_annotations",  # T0+3: the record
        "patch_scale",  # ... refused
        "patch_annotations",  # ... so the record is put back; then the hold: no call
    ]
    assert caplog.text.count("may not patch deployments/scale in apps, namespace shop") == 1
    assert sum("not allowed" in t for t in r.notifier.texts()) == 1
    calls = len(r.kube.calls)
    r.passes(1, start=T0 + 3 + 3600)  # the hold is over: one attempt again
    assert r.kube.names()[calls:] == [
        *READ,
        "patch_annotations",
        "patch_scale",
        "patch_annotations",
    ]


def test_with_the_cap_reached_a_held_back_workload_costs_no_call() -> None:
    policy = {"consecutive_anomalies": 3, "cooldown_seconds": 300, "max_actions_per_hour": 1}
    r = rig(config=make_config(policy=policy))
    r.engine.caps.count(now=T0)  # one action already this hour
    r.source.surge_from = T0
    r.passes(60, start=T0 + 1)
    assert r.kube.names() == ["get_deployment"]  # the first read only
    [held] = [t for t in r.notifier.texts() if "cap" in t]
    assert held.startswith("AegisOps: Action cap reached — no action on shop/web: scale_up 1->2 ")
