"""The loop with fakes at our own boundaries: PrometheusSource, KubeClient, SlackNotifier.

The detector and policy are the real, pure ones; time is injected; data is seeded.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping
from typing import Any

import pytest
from engine_fakes import (
    ACTING,
    BASELINE,
    KEY,
    T0,
    FakeKube,
    FakeLeader,
    FakeNotifier,
    FakeSource,
    MultiKube,
    decisions,
    make_config,
    metric,
    rig,
)

from aegisops.kube import Conflict, KubeUnavailable, ScaleInfo
from aegisops.loop import Engine
from aegisops.policy import (
    ANNOTATION_KEYS,
    COOLDOWN_UNTIL,
    LAST_ACTION,
    ORIGINAL_REPLICAS,
    REPLICAS_SET,
    format_time,
)
from aegisops.prometheus import History, Sample


def test_trains_from_history_then_scales_once_and_holds_the_cooldown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    # the surge never eases: pin the verification past this test's end
    policy = {"consecutive_anomalies": 3, "cooldown_seconds": 300, "verify_passes": 10}
    r = rig(config=make_config(policy=policy))
    assert "trained from history: 50 of 50 points usable, ready" in caplog.text
    quiet = r.passes(5, start=T0 + 1)
    assert [p.actions for p in quiet] == [0] * 5
    assert r.kube.names() == ["get_deployment"]  # memory read once, when first seen

    r.source.surge_from = T0 + 6
    results = r.passes(10, start=T0 + 6)
    assert [p.actions for p in results] == [0, 0, 1] + [0] * 7
    assert r.kube.names() == ["get_deployment", *ACTING]
    notes = r.kube.calls[4][1]
    assert notes == {
        **dict.fromkeys(ANNOTATION_KEYS),
        ORIGINAL_REPLICAS: "1",
        REPLICAS_SET: "2",
        LAST_ACTION: "scale_up 1->2",
        "aegisops.dev/last-action-at": format_time(T0 + 8),
        COOLDOWN_UNTIL: format_time(T0 + 8 + 300),
    }
    assert r.kube.calls[5] == ("patch_scale", 2)
    texts = r.notifier.texts()
    assert len(texts) == 2
    assert texts[0].startswith("AegisOps: Anomaly on shop/web: score ")
    assert texts[1].startswith("AegisOps: shop/web: scaled up 1 -> 2 replicas (")
    lines = decisions(caplog)
    acted = [line for line in lines if "-> scale_up 1->2: " in line]
    assert len(acted) == 1
    assert re.match(r"rps=40\.\d\d req/s \(baseline 10\.\d\d req/s\) ", acted[0])
    assert re.search(
        r"; score 0\.9\d vs threshold 0\.50 -> scale_up 1->2: p95_latency_seconds 0\.6 vs "
        r"baseline 0\.05\d* \(up\), rps 40 vs baseline 10 \(up\) for 3 consecutive samples; "
        r"scale_up 1->2$",
        acted[0],
    )
    held = [line for line in lines if "cooldown until " + format_time(T0 + 308) in line]
    assert len(held) == 7
    labels = {"namespace": "shop", "deployment": "web", "action": "scale_up", "result": "applied"}
    assert metric(r, "aegisops_actions_total", labels) == 1
    assert metric(r, "aegisops_replicas", {"namespace": "shop", "deployment": "web"}) == 2
    assert metric(r, "aegisops_anomaly", {"namespace": "shop", "deployment": "web"}) == 1


def acted_a_minute_ago() -> dict[str, str]:
    """The annotations an engine leaves after scaling 1 -> 2 at T0 - 60 (cooldown 300 s)."""
    return {
        ORIGINAL_REPLICAS: "1",
        LAST_ACTION: "scale_up 1->2",
        "aegisops.dev/last-action-at": format_time(T0 - 60),
        COOLDOWN_UNTIL: format_time(T0 + 240),
    }


def test_a_restarted_engine_reads_the_cooldown_and_does_not_act(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    remembered = acted_a_minute_ago()
    r = rig(kube=FakeKube(annotations=dict(remembered), replicas=2))
    r.source.surge_from = T0
    results = r.passes(8, start=T0 + 1)
    assert sum(p.actions for p in results) == 0
    assert r.kube.names() == ["get_deployment"]
    assert r.kube.annotations == remembered
    assert sum("cooldown until " + format_time(T0 + 240) in m for m in decisions(caplog)) == 6
    assert r.notifier.texts()[0].startswith("AegisOps: Anomaly on shop/web")
    assert len(r.notifier.sent) == 1


def test_an_hpa_on_the_deployment_means_alert_only() -> None:
    r = rig(kube=FakeKube(hpa_names={"web"}))
    r.source.surge_from = T0
    results = r.passes(6, start=T0 + 1)
    assert sum(p.actions for p in results) == 0
    assert "patch_scale" not in r.kube.names() and "patch_annotations" not in r.kube.names()
    [anomaly, hpa] = r.notifier.texts()
    assert anomaly.startswith("AegisOps: Anomaly on shop/web")
    assert hpa.startswith("AegisOps: shop/web is managed by an HPA — AegisOps does not scale it: ")
    assert hpa.endswith(
        " for 3 consecutive samples; an HPA web-hpa manages this Deployment, not scaling"
    )


def test_a_conflict_on_the_record_re_reads_and_decides_again_once_in_the_same_pass(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    kube = FakeKube(
        fail={"patch_annotations": Conflict("patch deployments shop/web: 409 Conflict")}
    )
    r = rig(kube=kube)
    r.source.surge_from = T0
    results = r.passes(5, start=T0 + 1)
    assert [(p.actions, p.errors) for p in results] == [(0, 0), (0, 0), (1, 0), (0, 0), (0, 0)]
    assert r.kube.names() == [
        "get_deployment",  # first seen
        "hpas",  # T0+3: the fresh read
        "get_deployment",
        "get_scale",
        "patch_annotations",  # 409: someone wrote since
        "hpas",  # re-read, decide again (never a blind retry)
        "get_deployment",
        "get_scale",
        "patch_annotations",
        "patch_scale",
    ]
    assert r.kube.replicas == 2
    [line] = [rec for rec in caplog.records if "record changed meanwhile" in rec.getMessage()]
    assert line.levelname == "INFO" and line.getMessage() == (
        "scale_up 1->2: record changed meanwhile (patch deployments shop/web: 409 Conflict); "
        "re-reading and deciding again"
    )
    assert "failed (conflict)" not in caplog.text
    labels = {"namespace": "shop", "deployment": "web", "action": "scale_up"}
    assert metric(r, "aegisops_actions_total", {**labels, "result": "conflict"}) is None
    assert metric(r, "aegisops_actions_total", {**labels, "result": "applied"}) == 1


def test_a_second_conflict_in_the_pass_gives_up_until_the_next_pass(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    conflict = Conflict("patch deployments shop/web: 409 Conflict")
    r = rig(kube=FakeKube())
    r.source.surge_from = T0
    r.passes(2, start=T0 + 1)

    class Always(dict):  # type: ignore[type-arg]
        def pop(self, key: str, *default: Any) -> Any:
            return conflict

        def __contains__(self, key: object) -> bool:
            return key == "patch_annotations"

    r.kube.fail = Always()
    [third] = r.passes(1, start=T0 + 3)
    assert (third.actions, third.errors) == (0, 1)  # only the second conflict is an error
    assert r.kube.names().count("patch_annotations") == 2
    assert "patch_scale" not in r.kube.names()
    assert any(m.endswith("(not applied: conflict)") for m in decisions(caplog))


def test_dry_run_changes_nothing_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    r = rig(config=make_config(dry_run=True))
    r.source.surge_from = T0
    results = r.passes(6, start=T0 + 1)
    assert [p.actions for p in results] == [0, 0, 1, 0, 0, 0]
    assert "patch_annotations" not in r.kube.names() and "patch_scale" not in r.kube.names()
    [marked] = [m for m in decisions(caplog) if m.startswith("**DRY-RUN** ")]
    assert "-> scale_up 1->2: " in marked
    texts = r.notifier.texts()
    assert texts[1].startswith("[DRY-RUN] AegisOps: shop/web: would have scaled up 1 -> 2 replicas")
    labels = {"namespace": "shop", "deployment": "web", "action": "scale_up", "result": "dry_run"}
    assert metric(r, "aegisops_actions_total", labels) == 1


def test_prometheus_down_logs_and_takes_no_action(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    r = rig()
    r.source.down = True
    [result] = r.passes(1, start=T0 + 1)
    assert (result.errors, result.actions, result.anomalies) == (1, 0, 0)
    assert r.kube.calls == []
    assert (
        "pass 1: Prometheus query failed, no decisions this pass: query rps: cannot connect"
        in caplog.text
    )
    assert re.search(
        r"pass 1: 1 workloads, 0 anomalies, 0 actions, 1 errors in \d\.\d\ds", caplog.text
    )
    assert metric(r, "aegisops_pass_errors_total", {"stage": "prometheus"}) == 1
    r.source.down = False
    [result] = r.passes(1, start=T0 + 2)
    assert result.errors == 0


def test_history_unavailable_falls_back_to_live_learning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    source, kube, notifier = FakeSource(), FakeKube(), FakeNotifier()
    source.down = True
    engine = Engine(
        config=make_config(),
        source=source,
        kube=kube,  # type: ignore[arg-type]
        notifier=notifier,
        clock=lambda: T0,
    )  # type: ignore[arg-type]
    engine.train_from_history(now=T0)
    assert "history unavailable, learning from live samples: query_range rps" in caplog.text
    source.down = False
    for i in range(BASELINE + 2):
        engine.run_pass(T0 + 1 + i)
    messages = decisions(caplog)
    assert messages[0].endswith("learning, not scored -> none: learning baseline")
    assert "score " in messages[-1]


def test_a_failing_workload_is_logged_and_the_pass_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    r = rig(kube=FakeKube(fail={"get_deployment": KubeUnavailable("get deployments: 503")}))
    [first, second] = r.passes(2, start=T0 + 1)
    assert first.errors == 1 and second.errors == 0  # logged and counted, then retried
    assert "cannot read the Deployment: get deployments: 503" in caplog.text
    assert r.kube.names() == ["get_deployment", "get_deployment"]
    r.kube.fail["get_deployment"] = RuntimeError("boom")
    r.engine.workloads[KEY].memory = None
    [third] = r.passes(1, start=T0 + 3)
    assert third.errors == 1
    assert "pass failed: boom" in caplog.text


def test_run_forever_stops_on_the_event_after_the_current_pass() -> None:
    stop = threading.Event()
    clock = iter(T0 + i for i in range(100))
    source, kube = FakeSource(), FakeKube()

    class Stopper(FakeNotifier):
        pass

    engine = Engine(
        config=make_config(poll_interval_seconds=0.01),
        source=source,  # type: ignore[arg-type]
        kube=kube,
        notifier=Stopper(),
        clock=lambda: next(clock),
    )  # type: ignore[arg-type]
    original = source.sample

    def sample(now: float) -> Sample:
        if source.calls.count("sample") == 2:
            stop.set()  # SIGTERM arrives during the third pass
        return original(now)

    source.sample = sample  # type: ignore[method-assign]
    engine.run_forever(stop=stop)
    assert engine.passes == 3
    assert source.calls == ["history", "sample", "sample", "sample"]


def test_resolution_is_announced_once_with_its_duration() -> None:
    r = rig(kube=FakeKube(hpa_names={"web"}))  # alert-only: no scaling in the way
    r.source.surge_from = T0 + 1
    r.passes(5, start=T0 + 1)  # confirmed at T0 + 3
    r.source.surge_from = float("inf")
    r.passes(6, start=T0 + 6)  # three normal samples resolve it
    texts = r.notifier.texts()
    assert len(texts) == 3
    assert texts[0].startswith("AegisOps: Anomaly on shop/web: score ")
    assert texts[1].startswith("AegisOps: shop/web is managed by an HPA")
    assert texts[2] == "AegisOps: Resolved on shop/web after 5 s"


def test_a_failed_scale_puts_the_annotations_back_so_the_next_pass_retries(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    kube = FakeKube(fail={"patch_scale": KubeUnavailable("patch deployments/scale: 503")})
    r = rig(kube=kube)
    r.source.surge_from = T0
    results = r.passes(5, start=T0 + 1)
    assert [p.actions for p in results] == [0, 0, 0, 1, 0]
    patches = [(name, arg) for name, arg in r.kube.calls if name.startswith("patch")]
    assert [name for name, _ in patches] == [
        "patch_annotations",  # T0+3: record the action
        "patch_scale",  # ... which fails
        "patch_annotations",  # ... so the record is undone
        "patch_annotations",  # T0+4: record again
        "patch_scale",  # ... and scale
    ]
    assert patches[2][1] == dict.fromkeys(ANNOTATION_KEYS)
    assert r.kube.replicas == 2
    assert r.kube.annotations[LAST_ACTION] == "scale_up 1->2"
    assert "scale_up 1->2 failed (error): patch deployments/scale: 503" in caplog.text
    assert "annotations put back; the next pass may try again" in caplog.text


class RaisingNotifier(FakeNotifier):
    """A notifier that blows up (what an unguarded bad webhook URL used to do)."""

    def send(self, payload: Mapping[str, Any]) -> bool:
        super().send(payload)
        raise ValueError("Failed to parse: https://hooks..slack.com/services/SECRET")


def test_slack_trouble_never_blocks_an_action(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    r = rig()
    r.engine.report.notifier = RaisingNotifier()
    r.source.surge_from = T0
    results = r.passes(5, start=T0 + 1)
    assert [p.actions for p in results] == [0, 0, 1, 0, 0]
    assert [p.errors for p in results] == [0] * 5
    assert r.kube.replicas == 2
    assert "Slack notification failed (ValueError)" in caplog.text
    assert "SECRET" not in caplog.text


class BrokenHistory(FakeSource):
    """History whose rows do not have the three metrics: the detector cannot train on it."""

    def history(self, *, start: float, end: float, step: float) -> dict[str, History]:
        past = super().history(start=start, end=end, step=step)[KEY]
        return {KEY: History(timestamps=past.timestamps, X=past.X[:, :2])}


def test_untrainable_history_is_logged_and_the_workload_learns_live(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    source = BrokenHistory()
    engine = Engine(
        config=make_config(),
        source=source,  # type: ignore[arg-type]
        kube=FakeKube(),  # type: ignore[arg-type]
        notifier=FakeNotifier(),  # type: ignore[arg-type]
        clock=lambda: T0,
    )
    engine.train_from_history(now=T0)  # does not raise
    assert "cannot train from history (" in caplog.text
    assert "learning from live samples" in caplog.text
    for i in range(BASELINE + 2):
        assert engine.run_pass(T0 + 1 + i).errors == 0
    assert "score " in decisions(caplog)[-1]


@pytest.mark.parametrize(
    ("fail", "errors", "actions"),
    [
        ({"hpas": KubeUnavailable("list horizontalpodautoscalers: 503")}, 1, 0),
        # a 409 resolved by re-reading within the pass is not an error
        ({"patch_annotations": Conflict("patch deployments shop/web: 409 Conflict")}, 0, 1),
        ({"patch_scale": KubeUnavailable("patch deployments/scale: 503")}, 1, 0),
    ],
)
def test_kubernetes_failures_count_as_pass_errors(
    fail: dict[str, Exception], errors: int, actions: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    r = rig(kube=FakeKube(fail=dict(fail)))
    r.source.surge_from = T0
    results = r.passes(3, start=T0 + 1)
    assert [p.errors for p in results] == [0, 0, errors]  # --once exits 1 on such a pass
    assert re.search(
        rf"pass 3: 1 workloads, 1 anomalies, {actions} actions, {errors} errors", caplog.text
    )
    assert (metric(r, "aegisops_pass_errors_total", {"stage": "kubernetes"}) or 0) == errors


class MovingKube(FakeKube):
    """The scale PATCH fails while the Deployment's resourceVersion moves (a status update)."""

    scale_takes_effect: bool = False

    def patch_scale(self, *, namespace: str, name: str, replicas: int) -> ScaleInfo:
        if self.names().count("patch_scale") == 0:
            self.calls.append(("patch_scale", replicas))
            self.rv += 1
            if self.scale_takes_effect:
                self.replicas = replicas
            raise KubeUnavailable("patch deployments/scale: 503")
        return super().patch_scale(namespace=namespace, name=name, replicas=replicas)


def test_a_409_on_the_undo_is_retried_with_the_fresh_version(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    r = rig(kube=MovingKube())
    r.source.surge_from = T0
    results = r.passes(4, start=T0 + 1)
    assert r.kube.names()[1:] == [
        "hpas",
        "get_deployment",
        "get_scale",
        "patch_annotations",  # T0+3: record the action
        "patch_scale",  # ... fails while the version moves
        "get_scale",  # read back: still 1 replica, the scale did not happen
        "patch_annotations",  # undo: 409, stale version
        "get_deployment",  # re-read: our record, still 1 replica
        "get_scale",
        "patch_annotations",  # undo again with the fresh version
        "hpas",  # T0+4: no cooldown was kept, so it tries again
        "get_deployment",
        "get_scale",
        "patch_annotations",
        "patch_scale",
    ]
    assert [p.actions for p in results] == [0, 0, 0, 1]
    assert r.kube.replicas == 2 and r.kube.annotations[LAST_ACTION] == "scale_up 1->2"
    assert "annotations changed version meanwhile; putting them back again" in caplog.text
    assert "annotations put back; the next pass may try again" in caplog.text


def test_when_the_failed_scale_took_effect_after_all_the_record_stays(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    kube = MovingKube()
    kube.scale_takes_effect = True
    r = rig(kube=kube)
    r.source.surge_from = T0
    r.passes(5, start=T0 + 1)
    assert r.kube.names().count("patch_annotations") == 1  # the record; read back, no undo
    assert r.kube.annotations[LAST_ACTION] == "scale_up 1->2"
    assert r.kube.replicas == 2
    took = "the read-back shows it took effect: applied"
    assert f"scale_up answered patch deployments/scale: 503, but {took}" in caplog.text
    assert "cooldown until" in decisions(caplog)[-1]


def test_an_operator_ending_the_cooldown_early_is_noticed_within_a_tenth_of_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    remembered = acted_a_minute_ago()
    # the surge never eases: pin the verification (give_up) past this test's end
    policy = {"consecutive_anomalies": 3, "cooldown_seconds": 300, "verify_passes": 10}
    config = make_config(policy=policy)
    r = rig(kube=FakeKube(annotations=dict(remembered), replicas=2), config=config)
    r.source.surge_from = T0
    r.passes(5, start=T0 + 1)
    # kubectl annotate deploy/web aegisops.dev/cooldown-until-
    del r.kube.annotations[COOLDOWN_UNTIL]
    results = r.passes(35, start=T0 + 6)
    # read at T0+1; re-read (cooldown_seconds / 10 = 30 s) at T0+31: scale at once
    assert [p.actions for p in results].index(1) == 25
    assert sum(p.actions for p in results) == 1
    assert r.kube.replicas == 3
    assert r.kube.names() == ["get_deployment", *ACTING]


def test_an_operator_scaling_down_below_max_is_noticed() -> None:
    r = rig(kube=FakeKube(replicas=4))  # at max_replicas (4): alert only
    r.source.surge_from = T0
    r.passes(5, start=T0 + 1)
    r.kube.replicas = 2  # kubectl scale --replicas=2
    results = r.passes(30, start=T0 + 6)
    assert sum(p.actions for p in results) == 1
    assert r.kube.replicas == 3


def test_a_persistent_anomaly_on_an_hpa_managed_deployment_makes_few_calls() -> None:
    r = rig(kube=FakeKube(hpa_names={"web"}))
    r.source.surge_from = T0
    results = r.passes(20, start=T0 + 1)
    assert sum(p.actions for p in results) == 0
    # read when first seen; the first proposal re-reads and learns about the HPA; then quiet
    assert r.kube.names() == ["get_deployment", "hpas", "get_deployment", "get_scale"]
    r.passes(30, start=T0 + 21)  # the HPA is re-checked every 30 s (cooldown_seconds / 10)
    assert len(r.kube.names()) == 4 + 3


@pytest.mark.parametrize("hpas", [set(), {"web"}])
def test_the_quiet_path_makes_no_calls_with_scale_down_enabled(hpas: set[str]) -> None:
    old = {ORIGINAL_REPLICAS: "1", COOLDOWN_UNTIL: format_time(T0 - 3600)}
    kube = FakeKube(annotations=old, replicas=3, hpa_names=hpas)
    config = make_config(
        policy={"consecutive_anomalies": 3, "cooldown_seconds": 300, "scale_down_after_seconds": 0},
        # one scale_down step per cooldown now: a step of 2 keeps this a single step 3 -> 1
        targets=[{"namespace": "shop", "deployment": "web", "max_replicas": 4, "scale_step": 2}],
    )
    r = rig(kube=kube, config=config)
    results = r.passes(30, start=T0 + 1)
    if hpas:  # the first restore proposal learns about the HPA: it owns replicas, release
        assert sum(p.actions for p in results) == 1 and r.kube.replicas == 3
        assert r.kube.names() == [
            "get_deployment",
            "hpas",
            "get_deployment",
            "get_scale",
            "patch_annotations",
        ]
        assert r.kube.annotations[LAST_ACTION] == "release (hpa)"
    else:  # scaled back once; then nothing
        assert sum(p.actions for p in results) == 1 and r.kube.replicas == 1
        assert len(r.kube.names()) == 6
    calls = len(r.kube.names())
    r.passes(25, start=T0 + 31)
    assert len(r.kube.names()) == calls  # nothing more to restore or release


def test_missing_data_alerts_once_after_n_passes_and_once_when_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    r = rig()
    r.passes(2, start=T0 + 1)
    r.source.no_data = {KEY}
    results = r.passes(5, start=T0 + 3)
    assert sum(p.actions for p in results) == 0
    assert r.notifier.texts() == [
        "AegisOps: No metrics for shop/web: no data for 3 passes in a row; "
        "no action is taken without data"
    ]
    assert (
        "no data for 3 passes in a row; no action is taken without data (alert metrics_missing)"
        in caplog.text
    )
    assert sum(m.endswith("-> none: no data") for m in decisions(caplog)) == 5
    r.source.no_data = set()
    r.passes(3, start=T0 + 8)
    assert r.notifier.texts()[1:] == ["AegisOps: Metrics are back for shop/web: data is back"]


def test_a_short_gap_in_the_data_says_nothing() -> None:
    r = rig()
    r.source.no_data = {KEY}
    r.passes(2, start=T0 + 1)
    r.source.no_data = set()
    r.passes(3, start=T0 + 3)
    assert r.notifier.texts() == []


def test_prometheus_down_alerts_once_after_n_passes_and_once_when_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    r = rig()
    r.source.down = True
    results = r.passes(6, start=T0 + 1)
    assert [p.errors for p in results] == [1] * 6
    assert r.kube.calls == []
    assert r.notifier.texts() == [
        "AegisOps: Prometheus is unreachable: Prometheus queries failed 3 passes in a row; "
        "no decisions meanwhile"
    ]
    r.source.down = False
    r.passes(2, start=T0 + 7)
    assert r.notifier.texts()[1:] == ["AegisOps: Prometheus is back: Prometheus answers again"]
    assert "Prometheus answers again (alert prometheus_back)" in caplog.text


def test_a_follower_scores_and_decides_but_makes_no_call_and_sends_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    leader = FakeLeader(leader=False)
    r = rig(leader=leader)
    r.source.surge_from = T0
    results = r.passes(6, start=T0 + 1)
    assert [p.actions for p in results] == [0] * 6
    assert r.kube.calls == [] and r.notifier.sent == []
    lines = decisions(caplog)
    assert all(m.startswith("standby ") for m in lines[1:])
    assert any(m.endswith("(not applied: standby, not the leader)") for m in lines)
    assert metric(r, "aegisops_leader") == 0
    assert re.search(r"standby pass 6: 1 workloads, 1 anomalies, 0 actions", caplog.text)
    # another engine (the old leader) scaled meanwhile; this one takes over the lease
    r.kube.annotations.update(acted_a_minute_ago())
    r.kube.replicas = 2
    leader.leader = True
    r.passes(3, start=T0 + 7)
    assert "became leader: re-reading every Deployment before acting" in caplog.text
    assert r.kube.names() == ["get_deployment"]  # re-read: the cooldown holds, no action
    assert "cooldown until " + format_time(T0 + 240) in decisions(caplog)[-1]
    assert metric(r, "aegisops_leader") == 1


def test_becoming_leader_drops_the_cached_facts_and_losing_it_stops_the_calls(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    leader = FakeLeader(leader=True)
    r = rig(leader=leader)
    r.passes(2, start=T0 + 1)
    assert r.kube.names() == ["get_deployment"]
    leader.leader = False
    r.passes(2, start=T0 + 3)
    assert "not the leader (any more): standby, no Kubernetes call, no Slack" in caplog.text
    leader.leader = True
    r.passes(1, start=T0 + 5)
    assert r.kube.names() == ["get_deployment", "get_deployment"]


def test_discovery_adds_opted_in_deployments_and_drops_those_losing_the_label(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    kube = MultiKube(("web", "api", "db"))
    enabled = {"aegisops.dev/enabled": "true"}
    kube.kubes["web"].labels = dict(enabled)  # also configured: the config's bounds win
    kube.kubes["api"].labels = dict(enabled)
    kube.kubes["api"].annotations = {
        "aegisops.dev/min-replicas": "2",
        "aegisops.dev/max-replicas": "6",
        "aegisops.dev/scale-step": "two",
    }
    discovery = {
        "label_selector": "aegisops.dev/enabled=true",
        "namespaces": ["shop"],
        "interval_seconds": 10,
    }
    r = rig(kube=kube, config=make_config(discovery=discovery))
    r.passes(1, start=T0 + 1)
    assert list(r.engine.workloads) == [KEY, "shop/api"]
    assert r.source.targets == (KEY, "shop/api")
    api = r.engine.workloads["shop/api"].target
    assert (api.min_replicas, api.max_replicas, api.scale_step) == (2, 6, 1)
    assert r.engine.workloads[KEY].target.max_replicas == 4  # from the config
    assert decisions(caplog, "shop/api")[:3] == [
        "annotation aegisops.dev/scale-step: 'two' is not a valid count; using 1",
        "discovered: joins the passes (replicas 2..6, step 1)",
        "trained from history: 50 of 50 points usable, ready (baseline 40 samples)",
    ]
    assert r.source.calls[:3] == ["history", "history", "sample"]  # at start; when it joins
    assert r.engine.workloads["shop/api"].detector.ready
    assert sum("trained" in m for m in decisions(caplog)) == 1  # web: at start, not again
    r.passes(9, start=T0 + 2)  # listed again only every 10 s
    lists = [call for name, call in kube.calls if call.startswith("list_deployments")]
    assert lists == ["list_deployments shop aegisops.dev/enabled=true"]
    kube.kubes["api"].labels = {}  # kubectl label deploy/api aegisops.dev/enabled-
    r.passes(1, start=T0 + 11)
    assert list(r.engine.workloads) == [KEY]
    assert decisions(caplog, "shop/api")[-1] == (
        "no longer matches discovery.label_selector: dropped"
    )


def test_discovery_is_the_leaders_job() -> None:
    discovery = {"label_selector": "aegisops.dev/enabled=true", "namespaces": ["shop"]}
    kube = MultiKube(("web", "api"))
    leader = FakeLeader(leader=True)
    kube.kubes["api"].labels = {"aegisops.dev/enabled": "true"}
    r = rig(kube=kube, config=make_config(discovery=discovery), leader=leader)
    r.passes(1, start=T0 + 1)
    leader.leader = False
    kube.calls.clear()
    kube.kubes["db"] = FakeKube(labels={"aegisops.dev/enabled": "true"})
    r.passes(3, start=T0 + 2)
    assert kube.calls == []  # a follower: not even a list
    leader.leader = True
    r.passes(1, start=T0 + 5)  # a new leader discovers at once (not 60 s later)
    assert kube.calls[0] == ("*", "list_deployments shop aegisops.dev/enabled=true")
    assert list(r.engine.workloads) == [KEY, "shop/api", "shop/db"]
    assert r.engine.workloads["shop/db"].detector.ready  # trained from history at once


class LeaseLostOnRead(FakeKube):
    """The lease expires while the fresh Scale is read (a slow call), just before the write."""

    leader: FakeLeader | None = None

    def get_scale(self, *, namespace: str, name: str) -> ScaleInfo:
        scale = super().get_scale(namespace=namespace, name=name)
        if self.leader is not None and self.names().count("get_scale") == 1:
            self.leader.leader = False
        return scale


def test_a_lease_lost_right_before_the_write_means_no_write_and_no_slack(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    leader, kube = FakeLeader(leader=True), LeaseLostOnRead()
    kube.leader = leader
    r = rig(leader=leader, kube=kube)
    r.source.surge_from = T0
    r.passes(3, start=T0 + 1)  # the action pass: the lease goes during the fresh read
    assert r.kube.names() == ["get_deployment", "hpas", "get_deployment", "get_scale"]
    [anomaly] = r.notifier.texts()  # sent while it still led; no action message after
    assert anomaly.startswith("AegisOps: Anomaly on shop/web: score ")
    assert "lost the lease during the pass: not acting" in caplog.text
    assert decisions(caplog)[-1].endswith("(not applied: standby, not the leader)")


def test_a_lease_lost_during_the_query_means_no_call_and_no_slack() -> None:
    leader = FakeLeader(leader=True)
    r = rig(leader=leader)
    r.source.surge_from = T0
    r.passes(2, start=T0 + 1)
    sample = r.source.sample

    def slow_sample(now: float) -> Sample:  # the lease runs out while Prometheus answers
        leader.leader = False
        return sample(now)

    r.source.sample = slow_sample  # type: ignore[method-assign]
    r.passes(1, start=T0 + 3)
    assert r.kube.names() == ["get_deployment"] and r.notifier.sent == []
