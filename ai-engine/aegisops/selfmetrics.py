"""The engine's own metrics and probes: /metrics, /healthz, /readyz on one small HTTP server.

`SelfMetrics` owns a private `CollectorRegistry` (never the global one, so tests and several
engines in one process do not collide) with the metrics named in docs/design.md.
/healthz is 200 while the loop's heartbeat is recent (`stale_after_seconds`, see
`stale_after`), 503 with the reason when it is not; /readyz is 200 once `set_ready(True)`,
503 with the reason text before that (e.g. "config invalid: ...").
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

log = logging.getLogger(__name__)

WORKLOAD = ("namespace", "deployment")
SLACK_RESULTS = ("sent", "failed", "disabled")
SLACK_DROP_REASONS = ("permanent", "queue_full")
PASS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def stale_after(poll_interval_seconds: float) -> float:
    """How old the last heartbeat may be before /healthz fails: three missed passes + 60 s
    (a pass may legitimately spend a few network timeouts)."""
    return 3 * poll_interval_seconds + 60.0


class SelfMetrics:
    """The metrics registry plus the heartbeat and readiness the probes report."""

    def __init__(
        self, *, stale_after_seconds: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.registry = CollectorRegistry()
        self.stale_after_seconds = stale_after_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._started = clock()
        self._heartbeat: float | None = None
        self._ready, self._not_ready_reason = False, "starting"
        r = self.registry
        self.anomaly_score = Gauge(
            "aegisops_anomaly_score", "Anomaly score 0..1 (0.5 = threshold)", WORKLOAD, registry=r
        )
        self.anomaly = Gauge(
            "aegisops_anomaly",
            "1 while an anomaly is confirmed by the policy",
            WORKLOAD,
            registry=r,
        )
        self.replicas = Gauge(
            "aegisops_replicas", "Replicas as last read from the Scale", WORKLOAD, registry=r
        )
        self.actions = Counter(
            "aegisops_actions_total",
            "Actions taken, by result",
            (*WORKLOAD, "action", "result"),
            registry=r,
        )
        self.passes = Counter("aegisops_passes_total", "Loop passes completed", registry=r)
        self.pass_errors = Counter(
            "aegisops_pass_errors_total", "Errors during a pass, by stage", ("stage",), registry=r
        )
        self.pass_duration = Histogram(
            "aegisops_pass_duration_seconds",
            "Duration of one loop pass",
            buckets=PASS_BUCKETS,
            registry=r,
        )
        self.slack_messages = Counter(
            "aegisops_slack_messages_total", "Slack messages, by result", ("result",), registry=r
        )
        for result in SLACK_RESULTS:
            self.slack_messages.labels(result)
        self.slack_queue = Gauge(
            "aegisops_slack_queue_depth", "Slack messages waiting in the outbox", registry=r
        )
        self.slack_drops = Counter(
            "aegisops_slack_dropped_total",
            "Slack messages dropped by the outbox, by reason (permanent|queue_full)",
            ("reason",),
            registry=r,
        )
        for reason in SLACK_DROP_REASONS:
            self.slack_drops.labels(reason)
        self.leading = Gauge(
            "aegisops_leader", "1 while this engine holds the leader lease", registry=r
        )

    # -- what the loop reports ---------------------------------------------------------

    def workload(
        self, key: str, *, score: float | None, anomaly: bool, replicas: int | None
    ) -> None:
        """One workload's state after a pass; `score` None (learning) is exported as NaN."""
        labels = _labels(key)
        self.anomaly_score.labels(*labels).set(float("nan") if score is None else score)
        self.anomaly.labels(*labels).set(1 if anomaly else 0)
        if replicas is not None:
            self.replicas.labels(*labels).set(replicas)

    def action(self, key: str, *, action: str, result: str) -> None:
        self.actions.labels(*_labels(key), action, result).inc()

    def pass_done(self, *, duration_seconds: float) -> None:
        self.passes.inc()
        self.pass_duration.observe(duration_seconds)

    def pass_error(self, *, stage: str) -> None:
        self.pass_errors.labels(stage).inc()

    def slack_message(self, result: str) -> None:
        """Wire as `SlackNotifier(on_result=metrics.slack_message)`."""
        self.slack_messages.labels(result).inc()

    def slack_queue_depth(self, depth: int) -> None:
        """Wire as `Outbox(metrics=...)`, with `slack_dropped` and `slack_message`."""
        self.slack_queue.set(depth)

    def slack_dropped(self, reason: str) -> None:
        if reason not in SLACK_DROP_REASONS:
            raise ValueError(f"drop reason must be one of {SLACK_DROP_REASONS}, got {reason!r}")
        self.slack_drops.labels(reason).inc()

    def leader(self, held: bool) -> None:
        """Whether this engine holds the lease now (1) or stands by (0)."""
        self.leading.set(1 if held else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    # -- probes ------------------------------------------------------------------------

    def heartbeat(self, now: float) -> None:
        with self._lock:
            self._heartbeat = now

    def set_ready(self, ready: bool, reason: str = "") -> None:
        with self._lock:
            self._ready, self._not_ready_reason = ready, reason

    def health(self) -> tuple[bool, str]:
        """(alive, why): alive while the last heartbeat (or the start) is recent enough."""
        now = self._clock()
        with self._lock:
            beat = self._heartbeat
        since = self._started if beat is None else beat
        age = now - since
        if age <= self.stale_after_seconds:
            return True, "ok"
        what = "no loop pass since start" if beat is None else "no loop pass"
        return False, f"stale: {what} for {age:.0f} s (limit {self.stale_after_seconds:g} s)"

    def readiness(self) -> tuple[bool, str]:
        with self._lock:
            return (True, "ready") if self._ready else (False, self._not_ready_reason)


def _labels(key: str) -> tuple[str, str]:
    namespace, _, deployment = key.partition("/")
    if not namespace or not deployment:
        raise ValueError(f"workload key must be 'namespace/deployment', got {key!r}")
    return namespace, deployment


class HealthServer:
    """Serves /metrics, /healthz and /readyz from a daemon thread. Port 0 picks a free port."""

    def __init__(self, *, port: int, metrics: SelfMetrics, host: str = "0.0.0.0") -> None:
        self.host, self.requested_port, self.metrics = host, port, metrics
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the health server is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> HealthServer:
        try:
            server = ThreadingHTTPServer((self.host, self.requested_port), _handler(self.metrics))
        except OSError as err:
            raise OSError(
                err.errno, f"cannot listen on {self.host}:{self.requested_port}: {err.strerror}"
            ) from None
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="aegisops-health",
            daemon=True,
        )
        self._thread.start()
        log.info("serving /metrics /healthz /readyz on %s:%d", self.host, self.port)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> HealthServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _handler(metrics: SelfMetrics) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._reply(200, metrics.render(), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/readyz"):
                ok, why = metrics.health() if path == "/healthz" else metrics.readiness()
                self._reply(200 if ok else 503, (why + "\n").encode(), "text/plain; charset=utf-8")
            else:
                self._reply(404, b"not found: try /metrics, /healthz, /readyz\n", "text/plain")

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return  # probes every few seconds would drown the decision lines

    return Handler
