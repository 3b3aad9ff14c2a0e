"""aegisops-sample-app: the instrumented workload AegisOps watches.

Capacity is bounded like a real service's: a fixed pool of N workers, each request
holding one for its service time (sleep-based, CPU-light). The HTTP front end accepts
many concurrent connections (one thread each); only N do work at a time, the rest
queue, and latency is measured from arrival, so overload shows in the histogram.

Endpoints: GET / (work), GET /healthz, GET /metrics, GET|POST /fault. /fault (runtime
fault switches) is off unless started with --enable-faults / APP_ENABLE_FAULTS=true:
anyone who can reach the port could otherwise leak its memory to an OOM kill.
Only / (and unknown paths, as path="other") count in http_requests_total.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import CancelledError, ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, disable_created_metrics, generate_latest

from sampleapp.cliutil import boolean, env_default, float_in, int_at_least, setup_logging
from sampleapp.cliutil import write_atomically as write_port_file
from sampleapp.faults import FaultError, Faults, MemoryLeak, parse_fault_update
from sampleapp.metrics import AppMetrics, build_metrics

log = logging.getLogger("sampleapp")

MAX_FAULT_BODY_BYTES = 64 * 1024
FAULTS_OFF = {
    "error": "fault injection is off: start the app with --enable-faults"
    " (APP_ENABLE_FAULTS=true) to use /fault"
}


@dataclass(frozen=True)
class AppSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 4
    service_time_seconds: float = 0.05
    jitter: float = 0.1  # service time varies uniformly by +-jitter (fraction)
    seed: int = 0
    faults: Faults = field(default_factory=Faults)
    max_leak_bytes: int = 512 * 1024 * 1024
    enable_faults: bool = False  # the /fault endpoint; start-up fault flags work regardless


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024

    def __init__(self, *, app: SampleApp, host: str, port: int) -> None:
        if ":" in host:
            self.address_family = socket.AF_INET6
        self.app = app
        super().__init__((host, port), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    timeout = 30  # idle connections do not hold a thread forever
    server_version = "aegisops-sample-app"

    def do_GET(self) -> None:
        arrived = time.perf_counter()
        path = self.path.split("?", 1)[0]
        app = self.server.app
        if path == "/":
            code = app.work()
            # Counted before the reply goes out: a client that has its answer can
            # already see it in /metrics.
            app.record(method="GET", path="/", code=code, arrived=arrived)
            self._reply(code, b"ok\n" if code == 200 else _error_body(code))
        elif path == "/healthz":
            self._reply(200, b"ok\n")
        elif path == "/metrics":
            self._reply(200, app.metrics_payload(), content_type=CONTENT_TYPE_LATEST)
        elif path == "/fault":
            if app.settings.enable_faults:
                self._reply_json(200, app.faults.to_json())
            else:
                self._reply_json(403, FAULTS_OFF)
        else:
            self._not_found(arrived)

    def do_POST(self) -> None:
        arrived = time.perf_counter()
        if self.path.split("?", 1)[0] != "/fault":
            self._not_found(arrived)
            return
        if not self.server.app.settings.enable_faults:
            self._reply_json(403, FAULTS_OFF)
            return
        raw_length = self.headers.get("Content-Length") or "0"
        length = int(raw_length) if raw_length.isdigit() else -1
        if length < 0:
            self._reply_json(400, {"error": f"Content-Length: expected bytes, got {raw_length!r}"})
            return
        if length > MAX_FAULT_BODY_BYTES:
            self._reply_json(413, {"error": f"body larger than {MAX_FAULT_BODY_BYTES} bytes"})
            return
        try:
            faults = self.server.app.set_faults_from_json(self.rfile.read(length))
        except FaultError as exc:
            self._reply_json(400, {"error": str(exc)})
            return
        self._reply_json(200, faults.to_json())

    def _not_found(self, arrived: float) -> None:
        self.server.app.record(method=self.command, path="other", code=404, arrived=arrived)
        self._reply(404, b"not found\n")

    def _reply_json(self, code: int, payload: object) -> None:
        body = (json.dumps(payload, sort_keys=True) + "\n").encode()
        self._reply(code, body, content_type="application/json")

    def _reply(self, code: int, body: bytes, *, content_type: str = "text/plain") -> None:
        try:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the client went away (e.g. its timeout fired); nothing to tell it

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)


def _error_body(code: int) -> bytes:
    return b"injected error\n" if code == 500 else b"shutting down\n"


class SampleApp:
    """The service: worker pool, faults, metrics and the HTTP server around them."""

    def __init__(self, *, settings: AppSettings) -> None:
        self.settings = settings
        self.metrics: AppMetrics = build_metrics()
        self._faults = settings.faults
        self._rng = random.Random(settings.seed)
        self._rng_lock = threading.Lock()
        self._stopping = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="worker")
        self._leak = MemoryLeak(max_bytes=settings.max_leak_bytes)
        self._leak.set_rate(settings.faults.leak_bytes_per_second)
        self._http: _HTTPServer | None = None
        self._serve_thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._http is None:
            raise RuntimeError("the app is not started")
        return int(self._http.server_address[1])

    @property
    def url(self) -> str:
        host = self.settings.host
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    @property
    def faults(self) -> Faults:
        return self._faults

    def set_faults(self, faults: Faults) -> None:
        self._faults = faults
        self._leak.set_rate(faults.leak_bytes_per_second)
        log.info("faults set: %s", _describe_faults(faults))

    def set_faults_from_json(self, body: bytes) -> Faults:
        faults = parse_fault_update(body, current=self._faults)
        self.set_faults(faults)
        return faults

    def start(self) -> None:
        self._http = _HTTPServer(app=self, host=self.settings.host, port=self.settings.port)
        self._leak.start()
        self._serve_thread = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.2}, name="http"
        )
        self._serve_thread.start()

    def stop(self) -> None:
        """Stop accepting, cancel queued work, cut running work short; bounded."""
        self._stopping.set()
        if self._http is not None and self._serve_thread is not None:
            self._http.shutdown()
            self._serve_thread.join(timeout=5)
            self._http.server_close()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._leak.stop()

    def work(self) -> int:
        """Queue for a worker, do the work; the HTTP status to answer."""
        try:
            failed = self._pool.submit(self._serve_one).result()
        except (CancelledError, RuntimeError):  # RuntimeError: pool already shut down
            return 503
        return 500 if failed else 200

    def _serve_one(self) -> bool:
        faults = self._faults
        with self._rng_lock:
            jitter = self._rng.uniform(-self.settings.jitter, self.settings.jitter)
            fail = faults.error_rate > 0 and self._rng.random() < faults.error_rate
        duration = self.settings.service_time_seconds * (1.0 + jitter)
        # Interruptible, so a stop does not wait out a long injected latency.
        self._stopping.wait(duration + faults.extra_latency_seconds)
        return fail

    def record(self, *, method: str, path: str, code: int, arrived: float) -> None:
        self.metrics.requests.labels(method=method, path=path, code=str(code)).inc()
        self.metrics.latency.observe(time.perf_counter() - arrived)

    def metrics_payload(self) -> bytes:
        return generate_latest(self.metrics.registry)


def _describe_faults(faults: Faults) -> str:
    return " ".join(f"{key}={value}" for key, value in faults.to_json().items())


@dataclass(frozen=True)
class _Option:
    flag: str
    env: str
    convert: Callable[[str], Any]
    fallback: Any
    metavar: str
    help: str


_D = AppSettings()
_OPTIONS = (
    _Option("--host", "APP_HOST", str, _D.host, "ADDR", "bind address"),
    _Option("--port", "APP_PORT", int_at_least(0), _D.port, "N", "0 picks a free port"),
    _Option("--port-file", "APP_PORT_FILE", Path, None, "PATH", "write the port here atomically"),
    _Option("--workers", "APP_WORKERS", int_at_least(1), _D.workers, "N", "worker pool size"),
    _Option(
        "--service-time",
        "APP_SERVICE_TIME",
        float_in(0.0),
        _D.service_time_seconds,
        "SECONDS",
        "service time per request",
    ),
    _Option("--jitter", "APP_JITTER", float_in(0.0, 1.0), _D.jitter, "F", "+- fraction of it"),
    _Option("--seed", "APP_SEED", int_at_least(0), _D.seed, "N", "seeds jitter and errors"),
    _Option("--extra-latency", "APP_EXTRA_LATENCY_SECONDS", float_in(0.0), 0.0, "SECONDS", "fault"),
    _Option(
        "--leak-bytes-per-second", "APP_LEAK_BYTES_PER_SECOND", int_at_least(0), 0, "N", "fault"
    ),
    _Option("--error-rate", "APP_ERROR_RATE", float_in(0.0, 1.0), 0.0, "F", "fault, 0..1"),
    _Option(
        "--max-leak-bytes", "APP_MAX_LEAK_BYTES", int_at_least(0), _D.max_leak_bytes, "N", "cap"
    ),
)


@dataclass(frozen=True)
class _Cli:
    settings: AppSettings
    port_file: Path | None


def parse_args(argv: Sequence[str], *, env: Mapping[str, str]) -> _Cli:
    """Flags win over APP_* environment variables, which win over the defaults."""
    parser = argparse.ArgumentParser(
        prog="aegisops-sample-app",
        description="Instrumented sample workload with bounded capacity and fault switches.",
    )
    for opt in _OPTIONS:
        parser.add_argument(
            opt.flag,
            type=opt.convert,
            metavar=opt.metavar,
            help=f"{opt.help} [{opt.env}, default {opt.fallback}]",
        )
        dest = opt.flag.removeprefix("--").replace("-", "_")
        parser.set_defaults(**{dest: env_default(parser, env, opt.env, opt.convert, opt.fallback)})
    parser.add_argument(
        "--enable-faults",
        action="store_true",
        help="serve POST/GET /fault (runtime fault switches); keep off where others can reach"
        " the port [APP_ENABLE_FAULTS, default false]",
    )
    parser.set_defaults(enable_faults=env_default(parser, env, "APP_ENABLE_FAULTS", boolean, False))
    args = parser.parse_args(argv)
    try:
        faults = Faults(
            extra_latency_seconds=args.extra_latency,
            leak_bytes_per_second=args.leak_bytes_per_second,
            error_rate=args.error_rate,
        )
    except FaultError as exc:
        parser.error(str(exc))
    settings = AppSettings(
        host=args.host,
        port=args.port,
        workers=args.workers,
        service_time_seconds=args.service_time,
        jitter=args.jitter,
        seed=args.seed,
        faults=faults,
        max_leak_bytes=args.max_leak_bytes,
        enable_faults=args.enable_faults,
    )
    return _Cli(settings=settings, port_file=args.port_file)


def main(argv: Sequence[str] | None = None, *, env: Mapping[str, str] | None = None) -> int:
    cli = parse_args(sys.argv[1:] if argv is None else argv, env=os.environ if env is None else env)
    setup_logging()
    disable_created_metrics()  # no *_created series: exactly the metrics the engine reads
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    app = SampleApp(settings=cli.settings)
    try:
        app.start()
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", cli.settings.host, cli.settings.port, exc)
        return 1
    s = cli.settings
    if cli.port_file is not None:
        try:
            write_port_file(cli.port_file, f"{app.port}\n")
        except OSError as exc:
            log.error("cannot write the port file %s: %s", cli.port_file, exc)
            app.stop()
            return 1
    log.info(
        "listening on %s (workers=%d service_time=%.3fs jitter=%.2f seed=%d %s fault_endpoint=%s)",
        app.url,
        s.workers,
        s.service_time_seconds,
        s.jitter,
        s.seed,
        _describe_faults(s.faults),
        "on" if s.enable_faults else "off",
    )
    while not stop.wait(1.0):
        pass
    log.info("signal received, stopping")
    app.stop()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
