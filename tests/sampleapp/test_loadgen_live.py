"""The load generator against real sample-app subprocesses, as a CLI and in-process."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sampleapp_helpers import DEADLINE_SECONDS, Running, running_app

from sampleapp.cliutil import write_atomically
from sampleapp.loadgen import LoadGenerator, LoadSettings
from sampleapp.profiles import Steady, Surge
from sampleapp.targets import TargetError, check_target
from sandbox.procs import pid_alive, wait_until

OK = ("http_requests_total", (("code", "200"), ("method", "GET"), ("path", "/")))
FINAL = re.compile(
    r"loadgen done t=[\d.]+s profile=steady rate=50\.0/s targets=2 sent=(\d+) ok=(\d+)"
    r" errors=0 timeouts=0 dropped=0 no_target=0 in_flight=0 p50=[\d.]+s p95=[\d.]+s"
)


def loadgen(*args: str) -> list[str]:
    return [sys.executable, "-m", "sampleapp.loadgen", *args]


def served(app: Running) -> float:
    return app.samples().get(OK, 0.0)


def test_cli_bounded_run_spreads_over_replicas_and_matches_the_apps_counters(
    tmp_path: Path,
) -> None:
    with running_app(tmp_path) as a, running_app(tmp_path) as b:
        proc = subprocess.run(
            loadgen(
                "--target", a.url, "--target", f"http://localhost:{b.port}/",
                "--rps", "50", "--duration", "2", "--seed", "11", "--report-every", "1",
            ),
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.splitlines()
        assert lines[0].startswith("loadgen start profile=Steady(rps=50.0) seed=11 duration=2.0s")
        periodic = [line for line in lines if line.startswith("loadgen t=1.0s profile=steady")]
        assert len(periodic) == 1 and " recent_p95=0." in periodic[0], lines
        match = FINAL.fullmatch(lines[-1])
        assert match, lines[-1]
        sent, ok = int(match[1]), int(match[2])
        assert sent == ok and 60 <= ok <= 140  # ~100 expected
        on_a, on_b = served(a), served(b)
        assert on_a + on_b == ok
        assert abs(on_a - on_b) <= 1  # round-robin
        a.stop()
        b.stop()


def test_cli_refuses_non_loopback_before_sending_anything(tmp_path: Path) -> None:
    with running_app(tmp_path) as app:
        proc = subprocess.run(
            loadgen("--target", app.url, "--target", "http://10.0.0.1:8080", "--duration", "5"),
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
        assert proc.returncode == 2
        assert proc.stderr.splitlines()[-1] == (
            "aegisops-loadgen: error: refusing target http://10.0.0.1:8080: only loopback"
            " targets (127.0.0.0/8, ::1, localhost) are allowed; pass --allow-non-loopback"
            " to send elsewhere"
        )
        assert proc.stdout == ""
        assert served(app) == 0
        app.stop()


def test_cli_refuses_a_targets_file_line_naming_file_and_line(tmp_path: Path) -> None:
    targets = tmp_path / "targets"
    targets.write_text("# replicas\nhttp://127.0.0.1:1\n\nhttp://192.168.1.5:80\n")
    proc = subprocess.run(
        loadgen("--targets-file", str(targets)), capture_output=True, text=True, timeout=10
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1] == (
        f"aegisops-loadgen: error: {targets}:4: refusing target http://192.168.1.5:80: only"
        " loopback targets (127.0.0.0/8, ::1, localhost) are allowed; pass"
        " --allow-non-loopback to send elsewhere"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give at least one --target URL or a --targets-file"),
        (
            ["--target", "127.0.0.1:8080"],
            "bad target '127.0.0.1:8080': expected http://HOST[:PORT][/PATH]",
        ),
        (["--target", "http://127.0.0.1", "--rps", "-3"], "argument --rps: must be >= 0, got -3"),
        (
            ["--target", "http://127.0.0.1", "--profile", "spike"],
            "argument --profile: invalid choice: 'spike' (choose from ",  # quoting varies by Python
        ),
    ],
)
def test_cli_bad_usage_exits_2(args: list[str], message: str) -> None:
    proc = subprocess.run(loadgen(*args), capture_output=True, text=True, timeout=10)
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1].startswith(f"aegisops-loadgen: error: {message}")


def test_cli_sigterm_stops_promptly_with_a_final_summary(tmp_path: Path) -> None:
    with running_app(tmp_path) as app:
        script = Path(sys.executable).with_name("aegisops-loadgen")
        proc = subprocess.Popen(
            [str(script), "--target", app.url, "--rps", "20", "--duration", "60"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().startswith("loadgen start ")
            wait_until(
                lambda: served(app) >= 3, timeout=DEADLINE_SECONDS, message="some requests served"
            )
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert not pid_alive(proc.pid)
        final = out.splitlines()[-1]
        ok = int(re.search(r" ok=(\d+) ", final)[1])  # type: ignore[index]
        assert final.startswith("loadgen done ") and " in_flight=0 " in final
        assert served(app) == ok
        app.stop()


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://127.0.0.1:8080", True),
        ("http://127.8.9.10/", True),
        ("http://[::1]:8080", True),
        ("http://LOCALHOST:1", True),
        ("http://10.0.0.1", False),
        ("http://aegisops-app.aegisops.svc:8080", False),
        ("http://[::ffff:10.0.0.1]:80", False),
    ],
)
def test_loopback_guard(url: str, allowed: bool) -> None:
    if allowed:
        assert check_target(url, allow_non_loopback=False) == url
    else:
        with pytest.raises(TargetError, match=r"^refusing target "):
            check_target(url, allow_non_loopback=False)
        assert check_target(url, allow_non_loopback=True) == url


@pytest.mark.parametrize("url", ["https://127.0.0.1", "ftp://127.0.0.1", "http://127.0.0.1:99999"])
def test_malformed_targets(url: str) -> None:
    with pytest.raises(TargetError, match=r"^bad target "):
        check_target(url, allow_non_loopback=True)


def test_in_process_refusal_happens_at_construction() -> None:
    with pytest.raises(TargetError):
        LoadGenerator(settings=LoadSettings(profile=Steady(rps=1)), targets=["http://10.1.2.3"])


def test_in_flight_cap_drops_instead_of_queueing_and_stop_waits_for_in_flight(
    tmp_path: Path,
) -> None:
    # One worker at 0.5 s per request: two in flight occupy the cap for the whole run.
    with running_app(tmp_path, "--workers", "1", "--service-time", "0.5", "--jitter", "0") as app:
        settings = LoadSettings(
            profile=Steady(rps=50), seed=5, duration_seconds=0.4, max_in_flight=2
        )
        with LoadGenerator(settings=settings, targets=[app.url]) as gen:
            assert gen.wait(timeout=10)
        stats = gen.stats()  # after stop: in-flight requests have finished
        assert (stats.sent, stats.ok, stats.in_flight) == (2, 2, 0)
        assert stats.dropped >= 5  # ~20 arrivals expected in 0.4 s
        assert stats.p50_seconds is not None and stats.p50_seconds >= 0.5
        assert served(app) == 2
        app.stop()


def test_targets_file_is_re_read_and_profile_switch_restarts_time(tmp_path: Path) -> None:
    targets = tmp_path / "targets"
    with (
        running_app(tmp_path, "--service-time", "0.001") as a,
        running_app(tmp_path, "--service-time", "0.001") as b,
    ):
        write_atomically(targets, f"{a.url}\n")
        gen = LoadGenerator(
            settings=LoadSettings(profile=Steady(rps=0), seed=2, report_interval_seconds=0),
            targets_file=targets,
        )
        gen.start()
        try:
            gen.set_profile(Surge(rps=20, at_seconds=0.0, multiplier=2.0))
            stats = gen.stats()
            assert (stats.profile, stats.rate_rps, stats.targets) == ("surge", 40.0, 1)
            wait_until(
                lambda: served(a) >= 3,
                timeout=DEADLINE_SECONDS,
                message="traffic on the first replica",
            )
            write_atomically(targets, f"{b.url}\n")
            wait_until(
                lambda: served(b) >= 3,
                timeout=DEADLINE_SECONDS,
                message="traffic to move to the second replica",
            )
        finally:
            final = gen.stop()
        assert final.errors == final.timeouts == final.in_flight == 0
        assert served(a) + served(b) == final.ok == final.sent
        assert final.per_target == {a.url: served(a), b.url: served(b)}
        a.stop()
        b.stop()


def test_no_target_and_max_requests_bound_the_run(tmp_path: Path) -> None:
    missing = tmp_path / "not-yet"
    gen = LoadGenerator(
        settings=LoadSettings(profile=Steady(rps=200), seed=1, max_requests=5),
        targets_file=missing,
    )
    with gen, running_app(tmp_path, "--service-time", "0.001") as app:
        wait_until(
            lambda: gen.stats().no_target >= 3,
            timeout=DEADLINE_SECONDS,
            message="arrivals with no target",
        )
        gen.set_targets([app.url])
        assert gen.wait(timeout=10)
        final = gen.stop()
        assert (final.sent, final.ok) == (5, 5)
        assert served(app) == 5
        app.stop()
