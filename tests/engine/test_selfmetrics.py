"""Self-metrics as exposed over HTTP, and the liveness/readiness probes."""

from __future__ import annotations

import math
import socket
from collections.abc import Iterator

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from aegisops.selfmetrics import HealthServer, SelfMetrics, stale_after

T0 = 1_795_687_200.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def metrics(clock: Clock) -> SelfMetrics:
    return SelfMetrics(stale_after_seconds=stale_after(15), clock=clock)


@pytest.fixture
def server(metrics: SelfMetrics) -> Iterator[HealthServer]:
    with HealthServer(port=0, metrics=metrics, host="127.0.0.1") as running:
        yield running


def samples(server: HealthServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = requests.get(f"{server.url}/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_metrics_are_named_as_designed(server: HealthServer, metrics: SelfMetrics) -> None:
    metrics.workload("aegisops/aegisops-app", score=0.81, anomaly=True, replicas=2)
    metrics.workload("shop/api", score=None, anomaly=False, replicas=None)
    metrics.action("aegisops/aegisops-app", action="scale_up", result="applied")
    metrics.action("aegisops/aegisops-app", action="scale_up", result="applied")
    metrics.action("shop/api", action="scale_up", result="dry_run")
    metrics.pass_done(duration_seconds=0.3)
    metrics.pass_done(duration_seconds=7.0)
    metrics.pass_error(stage="query")
    metrics.slack_message("sent")
    metrics.slack_queue_depth(4)
    metrics.slack_dropped("queue_full")
    metrics.slack_dropped("queue_full")
    metrics.leader(True)
    app = (("deployment", "aegisops-app"), ("namespace", "aegisops"))
    api = (("deployment", "api"), ("namespace", "shop"))
    got = samples(server)
    assert math.isnan(got.pop(("aegisops_anomaly_score", api)))
    buckets = {k: v for k, v in got.items() if k[0] == "aegisops_pass_duration_seconds_bucket"}
    assert buckets[("aegisops_pass_duration_seconds_bucket", (("le", "0.5"),))] == 1.0
    assert buckets[("aegisops_pass_duration_seconds_bucket", (("le", "+Inf"),))] == 2.0
    assert {k: v for k, v in got.items() if k not in buckets} == {
        ("aegisops_anomaly_score", app): 0.81,
        ("aegisops_anomaly", app): 1.0,
        ("aegisops_anomaly", api): 0.0,
        ("aegisops_replicas", app): 2.0,
        (
            "aegisops_actions_total",
            (("action", "scale_up"), *app, ("result", "applied")),
        ): 2.0,
        ("aegisops_actions_total", (("action", "scale_up"), *api, ("result", "dry_run"))): 1.0,
        ("aegisops_passes_total", ()): 2.0,
        ("aegisops_pass_errors_total", (("stage", "query"),)): 1.0,
        ("aegisops_pass_duration_seconds_count", ()): 2.0,
        ("aegisops_pass_duration_seconds_sum", ()): 7.3,
        ("aegisops_slack_messages_total", (("result", "sent"),)): 1.0,
        ("aegisops_slack_messages_total", (("result", "failed"),)): 0.0,
        ("aegisops_slack_messages_total", (("result", "disabled"),)): 0.0,
        ("aegisops_slack_queue_depth", ()): 4.0,
        ("aegisops_slack_dropped_total", (("reason", "permanent"),)): 0.0,
        ("aegisops_slack_dropped_total", (("reason", "queue_full"),)): 2.0,
        ("aegisops_leader", ()): 1.0,
    }


def test_leader_gauge_follows_the_lease(metrics: SelfMetrics) -> None:
    assert metrics.registry.get_sample_value("aegisops_leader") == 0.0  # standby until told
    metrics.leader(True)
    assert metrics.registry.get_sample_value("aegisops_leader") == 1.0
    metrics.leader(False)
    assert metrics.registry.get_sample_value("aegisops_leader") == 0.0


def test_unknown_drop_reason_is_a_clear_error(metrics: SelfMetrics) -> None:
    with pytest.raises(ValueError) as info:
        metrics.slack_dropped("full")
    assert str(info.value) == ("drop reason must be one of ('permanent', 'queue_full'), got 'full'")


def test_each_instance_has_its_own_registry(clock: Clock) -> None:
    one, two = (SelfMetrics(stale_after_seconds=60, clock=clock) for _ in range(2))
    one.pass_done(duration_seconds=1)
    assert b"aegisops_passes_total 1.0" in one.render()
    assert b"aegisops_passes_total 0.0" in two.render()


def test_bad_workload_key_is_a_clear_error(metrics: SelfMetrics) -> None:
    with pytest.raises(ValueError) as info:
        metrics.workload("aegisops-app", score=0.1, anomaly=False, replicas=1)
    assert str(info.value) == "workload key must be 'namespace/deployment', got 'aegisops-app'"


def get(server: HealthServer, path: str) -> tuple[int, str]:
    response = requests.get(f"{server.url}{path}", timeout=5)
    return response.status_code, response.text


def test_healthz_follows_the_heartbeat(
    server: HealthServer, metrics: SelfMetrics, clock: Clock
) -> None:
    assert stale_after(15) == 105.0
    assert get(server, "/healthz") == (200, "ok\n")  # grace period from the start
    clock.now = T0 + 106
    assert get(server, "/healthz") == (
        503,
        "stale: no loop pass since start for 106 s (limit 105 s)\n",
    )
    metrics.heartbeat(T0 + 100)
    assert get(server, "/healthz") == (200, "ok\n")
    clock.now = T0 + 300
    assert get(server, "/healthz") == (503, "stale: no loop pass for 200 s (limit 105 s)\n")


def test_readyz_reports_the_reason(server: HealthServer, metrics: SelfMetrics) -> None:
    assert get(server, "/readyz") == (503, "starting\n")
    metrics.set_ready(True)
    assert get(server, "/readyz") == (200, "ready\n")
    metrics.set_ready(False, "config invalid: targets[0].max_replicas: must be >= 1, got 0")
    assert get(server, "/readyz") == (
        503,
        "config invalid: targets[0].max_replicas: must be >= 1, got 0\n",
    )


def test_unknown_paths_are_404(server: HealthServer) -> None:
    assert get(server, "/") == (404, "not found: try /metrics, /healthz, /readyz\n")


def test_stop_closes_the_port(metrics: SelfMetrics) -> None:
    server = HealthServer(port=0, metrics=metrics, host="127.0.0.1").start()
    port = server.port
    server.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    with pytest.raises(RuntimeError):
        _ = server.port


def test_a_taken_port_is_a_clear_error(metrics: SelfMetrics) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(OSError) as info:
            HealthServer(port=port, metrics=metrics, host="127.0.0.1").start()
    assert str(info.value).startswith(f"[Errno 98] cannot listen on 127.0.0.1:{port}: ")
