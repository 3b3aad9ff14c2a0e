"""PrometheusSource against a real Prometheus with backfilled history, and a fake for faults."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest

from aegisops.config import DEFAULT_QUERIES, PrometheusConfig, Queries, WorkloadLabels
from aegisops.prometheus import (
    Check,
    Gap,
    PrometheusBadResponse,
    PrometheusSource,
    PrometheusUnavailable,
)
from sandbox.prometheus import PrometheusServer

# Whole hours, a few hours back: inside the launcher's 30 d retention, outside the head block.
T0 = (int(time.time()) // 3600) * 3600 - 3 * 3600
STEPS = 40  # samples every 15 s: T0 .. T0 + 600
END = T0 + 15 * STEPS
A, B, GHOST = "aegisops/app-a", "aegisops/app-b", "aegisops/ghost"
# Four buckets: 100 of every 150 requests <= 0.1 s, all <= 0.5 s: p95 falls in (0.1, 0.5].
P95_A = 0.1 + (0.5 - 0.1) * (0.95 * 150 - 100) / (150 - 100)


def prom_config(url: str, *, timeout: float = 5.0) -> PrometheusConfig:
    return PrometheusConfig(
        url=url,
        timeout_seconds=timeout,
        workload_labels=WorkloadLabels(namespace="namespace", deployment="deployment"),
        queries=Queries(**DEFAULT_QUERIES),
        history_lookback_seconds=600.0,
    )


def _series(name: str, labels: str, per_step: float) -> list[str]:
    return [f"{name}{{{labels}}} {per_step * i:.0f} {T0 + 15 * i}" for i in range(STEPS + 1)]


def backfill_text() -> str:
    a1 = 'namespace="aegisops",deployment="app-a",pod="a1"'
    a2 = 'namespace="aegisops",deployment="app-a",pod="a2"'
    b1 = 'namespace="aegisops",deployment="app-b",pod="b1"'
    lines = ["# TYPE http_requests counter"]
    lines += _series("http_requests_total", a1, 150) + _series("http_requests_total", a2, 150)
    lines += _series("http_requests_total", b1, 0)  # idle: rate 0
    lines.append("# TYPE http_request_latency_seconds histogram")
    for pod, per_le in ((a1, (100, 150, 150)), (b1, (0, 0, 0))):  # app-b: no requests -> NaN
        for le, count in zip(("0.1", "0.5", "+Inf"), per_le, strict=True):
            lines += _series("http_request_latency_seconds_bucket", f'{pod},le="{le}"', count)
    lines.append("# TYPE process_resident_memory_bytes gauge")
    for labels, value in (
        (a1, 100e6),
        (a2, 200e6),
        ('namespace="kube-system",deployment="other",pod="o1"', 7e6),  # not a target
        ('job="prometheus"', 9e6),  # no workload labels: ignored
    ):
        lines += [
            f"process_resident_memory_bytes{{{labels}}} {value:.0f} {T0 + 15 * i}"
            for i in range(STEPS + 1)
        ]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def backfilled() -> Iterator[PrometheusServer]:
    server = PrometheusServer(scrape_interval="15s")
    try:
        server.backfill(backfill_text())
        server.start()
        yield server
    finally:
        server.close()


def test_sample_maps_series_to_targets_and_says_what_is_missing(
    backfilled: PrometheusServer,
) -> None:
    with PrometheusSource(config=prom_config(backfilled.url), targets=[A, B, GHOST]) as source:
        sample = source.sample(float(END))
    assert sample.t == END
    assert sorted(sample.values) == [A, B, GHOST]
    assert sample.values[A][0] == 20.0
    assert sample.values[A][1] == pytest.approx(P95_A, rel=1e-12)
    assert sample.values[A][2] == 150e6
    assert sample.values[B][0] == 0.0
    assert np.isnan(sample.values[B][1:]).all()
    assert np.isnan(sample.values[GHOST]).all()
    assert sample.gaps == (
        Gap(key=GHOST, metric="rps", reason="no series"),
        Gap(key=B, metric="p95_latency_seconds", reason="NaN"),
        Gap(key=GHOST, metric="p95_latency_seconds", reason="no series"),
        Gap(key=B, metric="memory_bytes", reason="no series"),
        Gap(key=GHOST, metric="memory_bytes", reason="no series"),
    )
    assert sample.missing(A) == ()
    assert sample.missing(B) == ("p95_latency_seconds", "memory_bytes")


def test_history_is_aligned_by_timestamp_with_nan_for_gaps(backfilled: PrometheusServer) -> None:
    with PrometheusSource(config=prom_config(backfilled.url), targets=[A, B, GHOST]) as source:
        history = source.history(start=T0, end=END, step=15)
    timestamps, X = history[A]
    assert timestamps.tolist() == [float(T0 + 15 * i) for i in range(STEPS + 1)]
    assert X.shape == (STEPS + 1, 3)
    # rate() needs two samples: the first row has memory only.
    assert np.isnan(X[0, :2]).all() and X[0, 2] == 150e6
    assert X[1, 0] == 5.0  # Prometheus' extrapolation clamps at the counter's zero point
    assert X[-1, 0] == 20.0 and X[-1, 2] == 150e6
    assert X[-1, 1] == pytest.approx(P95_A, rel=1e-12)
    timestamps_b, X_b = history[B]
    assert timestamps_b.tolist() == timestamps.tolist()[1:]
    assert (X_b[:, 0] == 0.0).all() and np.isnan(X_b[:, 1:]).all()
    assert history[GHOST].timestamps.shape == (0,) and history[GHOST].X.shape == (0, 3)


def test_history_in_chunks_equals_one_query(backfilled: PrometheusServer) -> None:
    with PrometheusSource(config=prom_config(backfilled.url), targets=[A, B]) as source:
        whole = source.history(start=T0, end=END, step=15)
        chunked = source.history(start=T0, end=END, step=15, max_points=7)
    for key in (A, B):
        np.testing.assert_array_equal(whole[key].timestamps, chunked[key].timestamps)
        np.testing.assert_array_equal(whole[key].X, chunked[key].X)


def test_check_lists_each_query_and_the_targets_without_series(
    backfilled: PrometheusServer,
) -> None:
    with PrometheusSource(config=prom_config(backfilled.url), targets=[A, B, GHOST]) as source:
        checks = source.check(now=float(END))
    assert checks == [
        Check(name="prometheus", ok=True, detail=f"reachable at {backfilled.url}"),
        Check(name="query rps", ok=False, detail="2 series; no series for aegisops/ghost"),
        Check(
            name="query p95_latency_seconds",
            ok=False,
            detail="2 series; no series for aegisops/ghost; "
            "no value right now (NaN: no traffic?) for aegisops/app-b",
        ),
        Check(
            name="query memory_bytes",
            ok=False,
            detail="2 series; no series for aegisops/app-b, aegisops/ghost",
        ),
    ]


# --- faults, against a fake Prometheus over HTTP -----------------------------------------


@dataclass
class Fake:
    """Scripted answers: (status, content_type, body) per request; records every request."""

    answers: list[tuple[int, str, bytes]] = field(default_factory=list)
    requests: list[tuple[str, dict[str, list[str]]]] = field(default_factory=list)
    hang: threading.Event | None = None
    url: str = ""

    def answer(self, status: int, body: Any, content_type: str = "application/json") -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.answers.append((status, content_type, raw))


@pytest.fixture
def fake() -> Iterator[Fake]:
    state = Fake()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            state.requests.append((parts.path, parse_qs(parts.query)))
            if state.hang is not None:
                state.hang.wait(timeout=10)
                return
            status, content_type, body = (
                state.answers.pop(0) if state.answers else (404, "text/plain", b"not scripted")
            )
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        if state.hang is not None:
            state.hang.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def vector(*series: tuple[dict[str, str], str]) -> dict[str, Any]:
    result = [{"metric": labels, "value": [1700000000, value]} for labels, value in series]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


def test_one_instant_query_per_metric_whatever_the_number_of_targets(fake: Fake) -> None:
    targets = [f"ns/app-{i}" for i in range(25)]
    for value in ("3", "0.25", "1e8"):
        fake.answer(200, vector(({"namespace": "ns", "deployment": "app-7"}, value)))
    with PrometheusSource(config=prom_config(fake.url, timeout=2.5), targets=targets) as source:
        sample = source.sample(1700000000.5)
    assert [(path, q["query"][0], q["time"][0], q["timeout"][0]) for path, q in fake.requests] == [
        ("/api/v1/query", DEFAULT_QUERIES[metric], "1700000000.500", "2.5")
        for metric in ("rps", "p95_latency_seconds", "memory_bytes")
    ]
    assert sample.values["ns/app-7"].tolist() == [3.0, 0.25, 1e8]
    assert len(sample.gaps) == 24 * 3


@pytest.mark.parametrize(
    ("status", "body", "content_type", "error", "message"),
    [
        (
            200,
            b"<html>hello</html>",
            "text/html",
            PrometheusBadResponse,
            "query rps: Prometheus at {url} answered with something not JSON",
        ),
        (
            503,
            b"overloaded",
            "text/plain",
            PrometheusUnavailable,
            "query rps: Prometheus at {url} answered HTTP 503",
        ),
        (
            503,
            {"status": "error", "errorType": "timeout", "error": "query timed out"},
            "application/json",
            PrometheusUnavailable,
            "query rps: Prometheus at {url} answered HTTP 503 (timeout: query timed out)",
        ),
        (
            400,
            {"status": "error", "errorType": "bad_data", "error": "parse error"},
            "application/json",
            PrometheusBadResponse,
            "query rps: Prometheus at {url} answered HTTP 400 (bad_data: parse error)",
        ),
        (
            200,
            {"status": "error", "errorType": "execution", "error": "boom"},
            "application/json",
            PrometheusBadResponse,
            "query rps: Prometheus at {url} answered status 'error' (execution: boom)",
        ),
        (
            200,
            {"status": "success"},
            "application/json",
            PrometheusBadResponse,
            "query rps: Prometheus at {url} answered without data.result",
        ),
        (
            200,
            {"status": "success", "data": {"resultType": "scalar", "result": [1, "2"]}},
            "application/json",
            PrometheusBadResponse,
            "query rps: expected a vector result, got 'scalar'",
        ),
        (
            200,
            vector(({"namespace": "ns", "deployment": "a"}, "many")),
            "application/json",
            PrometheusBadResponse,
            "query rps: sample value 'many' is not a number",
        ),
    ],
)
def test_bad_answers_are_clear_errors_and_not_retried(
    fake: Fake, status: int, body: Any, content_type: str, error: type, message: str
) -> None:
    fake.answer(status, body, content_type)
    with (
        PrometheusSource(config=prom_config(fake.url), targets=["ns/a"]) as source,
        pytest.raises(error) as info,
    ):
        source.sample(1700000000.0)
    assert str(info.value) == message.format(url=fake.url)
    assert len(fake.requests) == 1


def test_duplicate_series_are_a_gap_for_that_target_and_ignored_for_others(fake: Fake) -> None:
    twice = [
        ({"namespace": "ns", "deployment": "a", "pod": "1"}, "1"),
        ({"namespace": "ns", "deployment": "a", "pod": "2"}, "2"),
        ({"namespace": "other", "deployment": "x", "pod": "1"}, "junk"),
        ({"namespace": "other", "deployment": "x", "pod": "2"}, "junk"),
    ]
    fake.answer(200, vector(*twice))  # rps: ns/a twice, a non-target twice (and unreadable)
    fake.answer(200, vector(({"namespace": "ns", "deployment": "a"}, "0.2"), *twice[2:]))
    fake.answer(200, vector(({"namespace": "ns", "deployment": "b"}, "1e8"), *twice[2:]))
    with PrometheusSource(config=prom_config(fake.url), targets=["ns/a", "ns/b"]) as source:
        sample = source.sample(1700000000.0)
    assert np.isnan(sample.values["ns/a"][0]) and sample.values["ns/a"][1] == 0.2
    assert sample.values["ns/b"][2] == 1e8
    assert Gap(key="ns/a", metric="rps", reason="duplicate series") in sample.gaps
    assert sample.missing("ns/a") == ("rps (duplicate series)", "memory_bytes")


def test_history_skips_a_targets_duplicate_series_and_other_workloads(fake: Fake) -> None:
    def matrix(*series: tuple[dict[str, str], str]) -> dict[str, Any]:
        result = [{"metric": m, "values": [[1700000000, v]]} for m, v in series]
        return {"status": "success", "data": {"resultType": "matrix", "result": result}}

    a1, a2 = (
        {"namespace": "ns", "deployment": "a", "pod": "1"},
        {"namespace": "ns", "deployment": "a", "pod": "2"},
    )
    other = {"namespace": "other", "deployment": "x"}
    fake.answer(200, matrix((a1, "1"), (a2, "2"), (other, "junk"), (other, "junk")))
    fake.answer(200, matrix((a1, "0.2")))
    fake.answer(200, matrix((a1, "1e8")))
    with PrometheusSource(config=prom_config(fake.url), targets=["ns/a"]) as source:
        history = source.history(start=1700000000, end=1700000000, step=15)
    assert history["ns/a"].timestamps.tolist() == [1700000000.0]
    row = history["ns/a"].X[0]
    assert np.isnan(row[0]) and row[1:].tolist() == [0.2, 1e8]


def test_check_names_duplicates_and_series_without_workload_labels(fake: Fake) -> None:
    fake.answer(200, vector(({"job": "app"}, "3"), ({"job": "app2"}, "4")))
    fake.answer(
        200,
        vector(
            ({"namespace": "ns", "deployment": "a", "pod": "1"}, "1"),
            ({"namespace": "ns", "deployment": "a", "pod": "2"}, "2"),
        ),
    )
    fake.answer(200, vector(({"namespace": "ns", "deployment": "a"}, "1e8")))
    with PrometheusSource(config=prom_config(fake.url), targets=["ns/a"]) as source:
        checks = source.check(now=1700000000.0)
    assert checks[1:] == [
        Check(
            name="query rps",
            ok=False,
            detail="2 series, but they lack the workload labels namespace/deployment; "
            "no series for ns/a",
        ),
        Check(
            name="query p95_latency_seconds",
            ok=False,
            detail="1 series; more than one series for ns/a: aggregate it by the workload "
            "labels (namespace, deployment)",
        ),
        Check(name="query memory_bytes", ok=True, detail="1 series"),
    ]


def test_userinfo_in_the_url_is_masked_in_errors() -> None:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
    url = f"http://admin:hunter2@127.0.0.1:{port}"
    with (
        PrometheusSource(config=prom_config(url), targets=["ns/a"]) as source,
        pytest.raises(PrometheusUnavailable) as info,
    ):
        source.sample(1700000000.0)
    assert (
        str(info.value) == f"query rps: cannot connect to Prometheus at http://***@127.0.0.1:{port}"
    )
    assert "hunter2" not in str(info.value)


def test_a_hanging_prometheus_times_out_once(fake: Fake) -> None:
    fake.hang = threading.Event()
    with (
        PrometheusSource(config=prom_config(fake.url, timeout=0.2), targets=["ns/a"]) as source,
        pytest.raises(PrometheusUnavailable) as info,
    ):
        source.history(start=T0, end=END, step=15)
    assert str(info.value) == (
        f"query_range rps: Prometheus at {fake.url} did not answer within 0.2 s"
    )
    assert [path for path, _ in fake.requests] == ["/api/v1/query_range"]


def test_a_dead_prometheus_is_tried_once_not_retried() -> None:
    """The client's default Retry would reconnect 3 times with backoff; we must not."""
    accepted = []
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop = threading.Event()

    def slam() -> None:  # accept and hang up at once, like a crashing server
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            accepted.append(1)
            conn.close()

    thread = threading.Thread(target=slam, daemon=True)
    thread.start()
    try:
        with (
            PrometheusSource(config=prom_config(url), targets=["ns/a"]) as source,
            pytest.raises(PrometheusUnavailable) as info,
        ):
            source.sample(1700000000.0)
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()
    assert str(info.value) == f"query rps: cannot connect to Prometheus at {url}"
    assert accepted == [1]


def test_nothing_listening_is_unavailable() -> None:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with (
        PrometheusSource(config=prom_config(url), targets=["ns/a"]) as source,
        pytest.raises(PrometheusUnavailable) as info,
    ):
        source.history(start=T0, end=END, step=15)
    assert str(info.value) == f"query_range rps: cannot connect to Prometheus at {url}"


def test_check_reports_a_bad_query_and_goes_on(fake: Fake) -> None:
    fake.answer(400, {"status": "error", "errorType": "bad_data", "error": "unknown function"})
    fake.answer(200, vector(({"namespace": "ns", "deployment": "a"}, "0.2")))
    fake.answer(200, vector(({"namespace": "ns", "deployment": "a"}, "1e8")))
    with PrometheusSource(config=prom_config(fake.url), targets=["ns/a"]) as source:
        checks = source.check(now=1700000000.0)
    assert checks == [
        Check(name="prometheus", ok=True, detail=f"reachable at {fake.url}"),
        Check(
            name="query rps",
            ok=False,
            detail=f"query rps: Prometheus at {fake.url} answered HTTP 400 "
            "(bad_data: unknown function)",
        ),
        Check(name="query p95_latency_seconds", ok=True, detail="1 series"),
        Check(name="query memory_bytes", ok=True, detail="1 series"),
    ]


def test_check_reports_an_unreachable_prometheus_once() -> None:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with PrometheusSource(config=prom_config(url), targets=["ns/a"]) as source:
        checks = source.check(now=1700000000.0)
    assert checks == [
        Check(
            name="prometheus", ok=False, detail=f"query rps: cannot connect to Prometheus at {url}"
        )
    ]
