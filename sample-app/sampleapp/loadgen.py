"""aegisops-loadgen: plays a traffic profile against the sample app's replicas.

Open loop: seeded Poisson arrivals at the profile's rate, each sent on a bounded pool
(`max_in_flight`); an arrival finding the pool full is counted as dropped, never
queued. Requests go round-robin over the current targets. Bounded in time and count.

Python API (the sandbox and the demo run it in-process):

    gen = LoadGenerator(settings=LoadSettings(profile=Steady(rps=20), seed=1),
                        targets=["http://127.0.0.1:8081"])
    gen.start(); gen.set_targets([...]); gen.set_profile(Surge(rps=20, at_seconds=0))
    gen.stats(); gen.stop()
"""

from __future__ import annotations

import argparse
import http.client
import logging
import math
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

from sampleapp.cliutil import float_in, int_at_least, setup_logging
from sampleapp.loadstats import LoadStats, StatsRecorder
from sampleapp.profiles import (
    PROFILE_KINDS,
    Diurnal,
    Drop,
    Profile,
    ProfileError,
    Steady,
    Surge,
    candidates,
)
from sampleapp.targets import TargetError, Targets

log = logging.getLogger("sampleapp.loadgen")

TICK_SECONDS = 0.25  # the dispatcher's longest sleep: bounds reaction to stop/bounds


@dataclass(frozen=True)
class LoadSettings:
    profile: Profile
    seed: int = 0
    duration_seconds: float | None = None  # None: until stop()
    max_requests: int | None = None  # requests sent; None: no cap
    max_in_flight: int = 64
    timeout_seconds: float = 5.0
    allow_non_loopback: bool = False
    report_interval_seconds: float = 5.0  # 0: no periodic lines


class LoadGenerator:
    def __init__(
        self,
        *,
        settings: LoadSettings,
        targets: Sequence[str] = (),
        targets_file: Path | None = None,
        report: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Raises TargetError for a refused or malformed target, before sending."""
        self.settings = settings
        self._clock = clock
        self._report = report or (lambda line: log.info("%s", line))
        self._targets = Targets(
            urls=targets,
            file=targets_file,
            allow_non_loopback=settings.allow_non_loopback,
            clock=clock,
        )
        self._rng = random.Random(settings.seed)
        self._stats = StatsRecorder()
        self._slots = threading.BoundedSemaphore(settings.max_in_flight)
        self._pool = ThreadPoolExecutor(
            max_workers=settings.max_in_flight, thread_name_prefix="loadgen"
        )
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._finished = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loadgen-dispatch", daemon=True)
        self._started_at = 0.0
        self._profile = settings.profile
        self._epoch = 0.0
        self._candidates: Iterator[tuple[float, bool]] = iter(())
        self._pending: tuple[float, bool] | None = None

    # -- control -------------------------------------------------------------------

    def start(self) -> None:
        self._started_at = self._clock()
        self._restart_profile(self.settings.profile)
        self._thread.start()

    def set_profile(self, profile: Profile) -> None:
        """Switch profiles while running; the new profile's time starts at 0 now."""
        self._restart_profile(profile)
        self._wake.set()

    def set_targets(self, urls: Sequence[str]) -> None:
        """Replace the static targets (checked like the initial ones)."""
        self._targets.set(urls)

    def targets(self) -> tuple[str, ...]:
        return self._targets.current()

    def wait(self, timeout: float | None = None) -> bool:
        """True once the generator has stopped sending (bounds reached or stopped)."""
        return self._finished.wait(timeout)

    def stop(self, *, timeout: float | None = None) -> LoadStats:
        """Stop sending, wait (bounded) for in-flight requests, return final stats."""
        limit = self.settings.timeout_seconds + 1.0 if timeout is None else timeout
        deadline = self._clock() + limit
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=max(0.0, deadline - self._clock()))
        self._stats.wait_idle(timeout=max(0.0, deadline - self._clock()))
        self._pool.shutdown(wait=False, cancel_futures=True)
        return self.stats()

    def __enter__(self) -> LoadGenerator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stats(self, *, since: int | None = None) -> LoadStats:
        """Counts so far; with `since` (an earlier `stats().responses`), also the
        percentiles of the responses timed after it."""
        with self._lock:
            profile, epoch = self._profile, self._epoch
        now = self._clock()
        return self._stats.snapshot(
            elapsed=now - self._started_at if self._started_at else 0.0,
            profile=profile.kind,
            rate=profile.rate_at(now - epoch) if self._started_at else 0.0,
            targets=len(self._targets.current()),
            since=since,
        )

    # -- dispatcher ----------------------------------------------------------------

    def _restart_profile(self, profile: Profile) -> None:
        with self._lock:
            self._profile = profile
            self._epoch = self._clock()
            self._candidates = candidates(profile, rng=self._rng)
            self._pending = None

    def _run(self) -> None:
        next_report = self._started_at + self.settings.report_interval_seconds
        mark = 0
        try:
            while not self._stop.is_set() and not self._bounds_reached():
                self._targets.refresh()
                now = self._clock()
                if self.settings.report_interval_seconds > 0 and now >= next_report:
                    current = self.stats(since=mark)
                    self._report(current.line_with_recent())
                    mark = current.responses
                    next_report = now + self.settings.report_interval_seconds
                self._wake.clear()
                due = self._next_due()
                wait = TICK_SECONDS if due is None else min(TICK_SECONDS, due - now)
                if wait > 0:
                    self._wake.wait(wait)
                    continue
                self._fire()
        except Exception:  # keep the summary honest rather than dying silently
            log.exception("load generator dispatcher failed")
        finally:
            self._finished.set()

    def _bounds_reached(self) -> bool:
        s = self.settings
        elapsed = self._clock() - self._started_at
        if s.duration_seconds is not None and elapsed >= s.duration_seconds:
            return True
        return s.max_requests is not None and self._stats.sent_count() >= s.max_requests

    def _next_due(self) -> float | None:
        with self._lock:
            if self._pending is None:
                self._pending = next(self._candidates, None)
            return None if self._pending is None else self._epoch + self._pending[0]

    def _fire(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is None or not pending[1]:
            return  # a thinned-out candidate: nothing to send
        target = self._targets.next()
        if target is None:
            self._stats.count("no_target")
        elif not self._slots.acquire(blocking=False):
            self._stats.count("dropped")
        else:
            self._stats.sent(target)
            self._pool.submit(self._send, target)

    def _send(self, target: str) -> None:
        try:
            outcome, latency = request_once(target, timeout=self.settings.timeout_seconds)
            self._stats.finished(outcome=outcome, latency=latency)
        finally:
            self._slots.release()


def request_once(url: str, *, timeout: float) -> tuple[str, float | None]:
    """GET url -> (ok|errors|timeouts, latency if a response came back). No proxies,
    no retries, one connection per request."""
    parts = urlsplit(url)
    assert parts.hostname is not None  # checked by check_target
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    started = time.perf_counter()
    try:
        conn.request("GET", parts.path or "/", headers={"Connection": "close"})
        response = conn.getresponse()
        response.read()
    except TimeoutError:
        return "timeouts", None
    except (OSError, http.client.HTTPException):
        return "errors", None
    finally:
        conn.close()
    latency = time.perf_counter() - started
    return ("ok" if 200 <= response.status < 300 else "errors"), latency


# -- CLI ---------------------------------------------------------------------------


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aegisops-loadgen",
        description="Play a seeded traffic profile against sample-app replicas (round-robin).",
    )
    add = parser.add_argument
    add("--target", action="append", default=[], metavar="URL", help="repeatable")
    add("--targets-file", type=Path, metavar="FILE", help="one URL a line, re-read every second")
    add("--profile", choices=PROFILE_KINDS, default="steady")
    add("--rps", type=float_in(0.0), default=10.0, metavar="R", help="base (mean) rate, default 10")
    add(
        "--amplitude",
        type=float_in(0.0, 1.0),
        default=0.5,
        metavar="F",
        help="diurnal: fraction of rps",
    )
    add(
        "--period",
        type=float_in(0.0, low_open=True),
        default=60.0,
        metavar="S",
        help="diurnal: seconds",
    )
    add("--at", type=float_in(0.0), default=10.0, metavar="S", help="surge/drop: start, seconds")
    add(
        "--for",
        dest="for_",
        type=float_in(0.0, low_open=True),
        metavar="S",
        help="surge/drop: seconds",
    )
    add("--multiplier", type=float_in(1.0), default=3.0, metavar="M", help="surge: rate factor")
    add("--fraction", type=float_in(0.0, 1.0), default=0.2, metavar="F", help="drop: rate factor")
    add("--seed", type=int_at_least(0), default=0, metavar="N")
    add("--duration", type=float_in(0.0, low_open=True), default=60.0, metavar="S", help="seconds")
    add("--max-requests", type=int_at_least(1), metavar="N", help="stop after N sent")
    add("--max-in-flight", type=int_at_least(1), default=64, metavar="N")
    add(
        "--timeout", type=float_in(0.0, low_open=True), default=5.0, metavar="S", help="per request"
    )
    add("--report-every", type=float_in(0.0), default=5.0, metavar="SECONDS")
    add("--allow-non-loopback", action="store_true", help="in-cluster use only")
    return parser


def build_profile(args: argparse.Namespace) -> Profile:
    window = math.inf if args.for_ is None else args.for_
    if args.profile == "diurnal":
        return Diurnal(rps=args.rps, amplitude=args.amplitude, period_seconds=args.period)
    if args.profile == "surge":
        return Surge(
            rps=args.rps, at_seconds=args.at, multiplier=args.multiplier, duration_seconds=window
        )
    if args.profile == "drop":
        return Drop(
            rps=args.rps, at_seconds=args.at, fraction=args.fraction, duration_seconds=window
        )
    return Steady(rps=args.rps)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not args.target and args.targets_file is None:
        parser.error("give at least one --target URL or a --targets-file")
    setup_logging()
    try:
        settings = LoadSettings(
            profile=build_profile(args),
            seed=args.seed,
            duration_seconds=args.duration,
            max_requests=args.max_requests,
            max_in_flight=args.max_in_flight,
            timeout_seconds=args.timeout,
            allow_non_loopback=args.allow_non_loopback,
            report_interval_seconds=args.report_every,
        )
        gen = LoadGenerator(
            settings=settings,
            targets=args.target,
            targets_file=args.targets_file,
            report=lambda line: print(f"loadgen {line}", flush=True),
        )
    except (TargetError, ProfileError) as exc:
        parser.error(str(exc))
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(
        f"loadgen start profile={settings.profile} seed={settings.seed}"
        f" duration={args.duration}s max_requests={args.max_requests}"
        f" targets={','.join(gen.targets()) or '-'}",
        flush=True,
    )
    gen.start()
    while not stop.is_set() and not gen.wait(0.2):
        pass
    final = gen.stop()
    print(f"loadgen done {final.line()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
