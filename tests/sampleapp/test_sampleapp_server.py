"""The sample app as a real subprocess on a free port: metrics, capacity, faults, CLI."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sampleapp_helpers import DEADLINE_SECONDS, app_command, running_app

from sampleapp.metrics import LATENCY_BUCKETS
from sandbox.procs import pid_alive, wait_until

REQ = "http_requests_total"
BUCKET = "http_request_latency_seconds_bucket"


def bucket(samples: dict, le: float) -> float:
    key = "+Inf" if le == float("inf") else str(float(le))
    return samples[(BUCKET, (("le", key),))]


def test_exposes_exactly_the_engine_metrics_and_counts_only_work(tmp_path: Path) -> None:
    with running_app(tmp_path, "--service-time", "0.001", "--enable-faults") as app:
        for _ in range(3):
            assert app.request("GET", "/") == (200, b"ok\n")
        assert app.request("GET", "/healthz") == (200, b"ok\n")
        assert app.request("GET", "/fault")[0] == 200
        assert app.request("GET", "/nope") == (404, b"not found\n")
        families = app.families()
        err = app.stop()

    assert set(families) == {
        "http_requests",
        "http_request_latency_seconds",
        "process_virtual_memory_bytes",
        "process_resident_memory_bytes",
        "process_start_time_seconds",
        "process_cpu_seconds",
        "process_open_fds",
        "process_max_fds",
    }
    counter = {tuple(sorted(s.labels.items())): s.value for s in families["http_requests"]}
    assert counter == {
        (("code", "200"), ("method", "GET"), ("path", "/")): 3.0,
        (("code", "404"), ("method", "GET"), ("path", "other")): 1.0,
    }
    hist = families["http_request_latency_seconds"]
    les = [s.labels["le"] for s in hist if s.name.endswith("_bucket")]
    assert les == [*(str(float(b)) for b in LATENCY_BUCKETS), "+Inf"]
    assert len(LATENCY_BUCKETS) == 21 and LATENCY_BUCKETS[0] == 0.005
    assert LATENCY_BUCKETS[-1] == 10.0
    ratios = [b / a for a, b in itertools.pairwise(LATENCY_BUCKETS)]
    assert all(1.3 <= r <= 1.7 for r in ratios), ratios
    assert {s.name: s.value for s in hist if not s.name.endswith("_bucket")}.get(
        "http_request_latency_seconds_count"
    ) == 4.0
    assert families["process_resident_memory_bytes"][0].value > 1_000_000
    assert re.search(
        r"INFO sampleapp listening on http://127\.0\.0\.1:\d+ \(workers=4 service_time=0\.001s"
        r" jitter=0\.10 seed=0 extra_latency_seconds=0\.0 leak_bytes_per_second=0"
        r" error_rate=0\.0 fault_endpoint=on\)\n",
        err,
    ), err


def test_overload_queues_and_shows_in_the_histogram(tmp_path: Path) -> None:
    # 2 workers x 0.5 s and 6 requests at once: three waves done at 0.5, 1.0, 1.5 s.
    # Lower bounds only, with 0.25 s slack for a slow client thread on a busy machine.
    with running_app(tmp_path, "--workers", "2", "--service-time", "0.5", "--jitter", "0") as app:
        barrier = threading.Barrier(6)
        codes: list[int] = []

        def one() -> None:
            barrier.wait(timeout=5)
            codes.append(app.request("GET", "/")[0])

        threads = [threading.Thread(target=one) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=10)
        samples = app.samples()
        app.stop()
    assert codes == [200] * 6
    hist = {le: bucket(samples, le) for le in (0.3, 0.75, 1.0, float("inf"))}
    assert hist[float("inf")] == 6, hist
    assert hist[0.3] == 0, hist  # nobody is faster than the service time
    assert hist[float("inf")] - hist[0.75] >= 4, hist  # two waves queued behind the first
    assert hist[float("inf")] - hist[1.0] >= 2, hist  # the last wave waited 2 service times


def test_extra_latency_fault_shows_in_the_histogram(tmp_path: Path) -> None:
    with running_app(
        tmp_path, "--service-time", "0.001", "--jitter", "0", "--enable-faults"
    ) as app:
        assert app.request("GET", "/")[0] == 200
        assert app.set_faults(extra_latency_seconds=0.3) == {
            "error_rate": 0.0,
            "extra_latency_seconds": 0.3,
            "leak_bytes_per_second": 0,
        }
        assert app.request("GET", "/")[0] == 200
        samples = app.samples()
        app.stop()
    assert bucket(samples, 0.2) == 1
    assert bucket(samples, float("inf")) == 2


def test_error_rate_one_answers_500_and_counts_them(tmp_path: Path) -> None:
    with running_app(tmp_path, "--service-time", "0.001", "--enable-faults") as app:
        app.set_faults(error_rate=1)
        assert [app.request("GET", "/") for _ in range(3)] == [(500, b"injected error\n")] * 3
        app.set_faults(error_rate=0)
        assert app.request("GET", "/") == (200, b"ok\n")
        samples = app.samples()
        app.stop()
    assert samples[(REQ, (("code", "500"), ("method", "GET"), ("path", "/")))] == 3
    assert samples[(REQ, (("code", "200"), ("method", "GET"), ("path", "/")))] == 1


def test_leak_set_at_start_grows_rss(tmp_path: Path) -> None:
    with running_app(
        tmp_path, "--leak-bytes-per-second", str(200 * 2**20), "--enable-faults"
    ) as app:
        first = app.sample("process_resident_memory_bytes")
        wait_until(
            lambda: app.sample("process_resident_memory_bytes") >= first + 60 * 2**20,
            timeout=DEADLINE_SECONDS,
            message="RSS to grow by 60 MiB",
        )
        app.set_faults(leak_bytes_per_second=0)
        app.stop()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            b"{x",
            "body is not valid JSON: Expecting property name enclosed in double quotes:"
            " line 1 column 2 (char 1)",
        ),
        (
            b"[1]",
            "body must be a JSON object with keys extra_latency_seconds,"
            " leak_bytes_per_second, error_rate",
        ),
        (b'{"error_rate": 1.5}', "error_rate: must be between 0 and 1, got 1.5"),
        (b'{"error_rate": "x"}', "error_rate: expected a number, got 'x'"),
        (b'{"leak_bytes_per_second": 1.5}', "leak_bytes_per_second: expected an integer, got 1.5"),
        (
            b'{"extra_latency_seconds": -1}',
            "extra_latency_seconds: must be between 0 and 60, got -1",
        ),
        (
            b'{"latency": 1}',
            "unknown key(s) latency; expected any of extra_latency_seconds,"
            " leak_bytes_per_second, error_rate",
        ),
    ],
)
def test_bad_fault_bodies_get_400_and_change_nothing(
    tmp_path: Path, body: bytes, message: str
) -> None:
    with running_app(tmp_path, "--error-rate", "0.25", "--enable-faults") as app:
        status, reply = app.request("POST", "/fault", body)
        assert (status, json.loads(reply)) == (400, {"error": message})
        assert json.loads(app.request("GET", "/fault")[1]) == {
            "error_rate": 0.25,
            "extra_latency_seconds": 0.0,
            "leak_bytes_per_second": 0,
        }
        app.stop()


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--workers", "0"], {}, "argument --workers: must be >= 1, got 0"),
        (["--error-rate", "2"], {}, "argument --error-rate: must be >= 0 and <= 1, got 2"),
        (["--port", "x"], {}, "argument --port: expected an integer, got 'x'"),
        (
            [],
            {"APP_SERVICE_TIME": "fast"},
            "environment variable APP_SERVICE_TIME: expected a number, got 'fast'",
        ),
        (["--bogus"], {}, "unrecognized arguments: --bogus"),
        (
            [],
            {"APP_ENABLE_FAULTS": "maybe"},
            "environment variable APP_ENABLE_FAULTS: expected true or false, got 'maybe'",
        ),
    ],
)
def test_bad_flags_and_env_exit_2_with_a_clear_message(
    args: list[str], env: dict[str, str], message: str
) -> None:
    proc = subprocess.run(
        app_command(*args),
        capture_output=True,
        text=True,
        timeout=10,
        env={**os.environ, **env},
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f"aegisops-sample-app: error: {message}"
    assert "Traceback" not in proc.stderr


def test_console_script_env_config_and_sigint(tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    script = Path(sys.executable).with_name("aegisops-sample-app")
    env = {**os.environ, "APP_PORT": "0", "APP_PORT_FILE": str(port_file), "APP_WORKERS": "3"}
    proc = subprocess.Popen([str(script)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        port = int(
            wait_until(
                lambda: port_file.exists() and port_file.read_text(),
                timeout=DEADLINE_SECONDS,
                message="port",
            )
        )
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert f"listening on http://127.0.0.1:{port} (workers=3 " in line
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        assert not pid_alive(proc.pid)
        assert not list(tmp_path.glob(".port.*.tmp"))
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def test_bad_content_length_gets_400(tmp_path: Path) -> None:
    with running_app(tmp_path, "--enable-faults") as app:
        with socket.create_connection(("127.0.0.1", app.port), timeout=5) as sock:
            sock.sendall(b"POST /fault HTTP/1.0\r\nContent-Length: -5\r\n\r\n")
            reply = sock.makefile("rb").read()
        assert reply.startswith(b"HTTP/1.0 400 Bad Request\r\n")
        assert reply.endswith(b'\r\n\r\n{"error": "Content-Length: expected bytes, got \'-5\'"}\n')
        app.stop()


def test_port_in_use_and_unwritable_port_file_exit_1_without_traceback(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            app_command("--port", str(port)), capture_output=True, text=True, timeout=10
        )
    assert proc.returncode == 1
    assert proc.stderr.rstrip().endswith(
        f"ERROR sampleapp cannot listen on 127.0.0.1:{port}: [Errno 98] Address already in use"
    )
    missing = tmp_path / "no-such-dir" / "port"
    proc = subprocess.run(
        app_command("--port", "0", "--port-file", str(missing)),
        capture_output=True, text=True, timeout=10,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert f"ERROR sampleapp cannot write the port file {missing}: [Errno 2]" in proc.stderr


FAULTS_OFF = {
    "error": "fault injection is off: start the app with --enable-faults"
    " (APP_ENABLE_FAULTS=true) to use /fault"
}


@pytest.mark.parametrize(
    ("args", "env"),
    [([], {}), ([], {"APP_ENABLE_FAULTS": "false"}), (["--error-rate", "0.5"], {})],
)
def test_fault_endpoint_is_off_by_default(
    tmp_path: Path, args: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with running_app(tmp_path, "--service-time", "0.001", *args) as app:
        body = json.dumps({"leak_bytes_per_second": 10**9}).encode()
        for method, payload in (("POST", body), ("GET", None)):
            status, reply = app.request(method, "/fault", payload)
            assert (status, json.loads(reply)) == (403, FAULTS_OFF)
        err = app.stop()
    assert "fault_endpoint=off)" in err
    assert "faults set" not in err  # nothing changed


def test_fault_endpoint_switched_on_by_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APP_ENABLE_FAULTS", "true")
    with running_app(tmp_path) as app:
        assert app.set_faults(error_rate=0.5)["error_rate"] == 0.5
        app.stop()
