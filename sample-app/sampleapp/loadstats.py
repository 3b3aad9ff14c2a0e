"""Counters and client-side latency percentiles for the load generator."""

from __future__ import annotations

import math
import threading
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field

LATENCY_WINDOW = 50_000  # most recent completed requests kept for p50/p95


@dataclass(frozen=True)
class LoadStats:
    elapsed_seconds: float
    profile: str
    rate_rps: float
    targets: int  # currently known
    sent: int
    ok: int
    errors: int
    timeouts: int
    dropped: int  # not sent: the in-flight cap was reached
    no_target: int  # not sent: no target known at that moment
    in_flight: int
    p50_seconds: float | None  # whole run (last LATENCY_WINDOW responses)
    p95_seconds: float | None
    per_target: Mapping[str, int] = field(default_factory=dict)
    responses: int = 0  # responses timed so far; pass as `since` for a recent window
    recent_p50_seconds: float | None = None  # responses after `since` (None: not asked)
    recent_p95_seconds: float | None = None

    def line(self) -> str:
        return (
            f"t={self.elapsed_seconds:.1f}s profile={self.profile} rate={self.rate_rps:.1f}/s"
            f" targets={self.targets} sent={self.sent} ok={self.ok}"
            f" errors={self.errors} timeouts={self.timeouts} dropped={self.dropped}"
            f" no_target={self.no_target} in_flight={self.in_flight}"
            f" p50={_seconds(self.p50_seconds)} p95={_seconds(self.p95_seconds)}"
        )

    def line_with_recent(self) -> str:
        """`line()` plus the percentiles of the responses since the previous line."""
        return (
            f"{self.line()} recent_p50={_seconds(self.recent_p50_seconds)}"
            f" recent_p95={_seconds(self.recent_p95_seconds)}"
        )


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}s"


def nearest_rank(sorted_values: list[float], q: float) -> float | None:
    """The q-quantile by nearest rank (no interpolation); None for no values."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


class StatsRecorder:
    """Thread-safe tallies; `snapshot` turns them into a LoadStats."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._tally: Counter[str] = Counter()
        self._per_target: Counter[str] = Counter()
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._responses = 0

    def count(self, what: str) -> None:
        with self._lock:
            self._tally[what] += 1

    def sent(self, target: str) -> None:
        with self._lock:
            self._tally["sent"] += 1
            self._tally["in_flight"] += 1
            self._per_target[target] += 1

    def finished(self, *, outcome: str, latency: float | None) -> None:
        """outcome: ok | errors | timeouts; latency for requests that got a response."""
        with self._lock:
            self._tally["in_flight"] -= 1
            self._tally[outcome] += 1
            if latency is not None:
                self._latencies.append(latency)
                self._responses += 1
            if self._tally["in_flight"] == 0:
                self._lock.notify_all()

    def wait_idle(self, *, timeout: float) -> bool:
        """Wait until no request is in flight; False if `timeout` ran out first."""
        with self._lock:
            return self._lock.wait_for(lambda: self._tally["in_flight"] == 0, timeout=timeout)

    def sent_count(self) -> int:
        with self._lock:
            return self._tally["sent"]

    def in_flight(self) -> int:
        with self._lock:
            return self._tally["in_flight"]

    def snapshot(
        self, *, elapsed: float, profile: str, rate: float, targets: int, since: int | None = None
    ) -> LoadStats:
        with self._lock:
            tally = dict(self._tally)
            responses = self._responses
            window = list(self._latencies)
            per_target = dict(self._per_target)
        recent = None
        if since is not None:
            recent = sorted(window[len(window) - min(len(window), responses - since) :])
        latencies = sorted(window)
        return LoadStats(
            elapsed_seconds=elapsed,
            profile=profile,
            rate_rps=rate,
            targets=targets,
            sent=tally.get("sent", 0),
            ok=tally.get("ok", 0),
            errors=tally.get("errors", 0),
            timeouts=tally.get("timeouts", 0),
            dropped=tally.get("dropped", 0),
            no_target=tally.get("no_target", 0),
            in_flight=tally.get("in_flight", 0),
            p50_seconds=nearest_rank(latencies, 0.50),
            p95_seconds=nearest_rank(latencies, 0.95),
            per_target=per_target,
            responses=responses,
            recent_p50_seconds=None if recent is None else nearest_rank(recent, 0.50),
            recent_p95_seconds=None if recent is None else nearest_rank(recent, 0.95),
        )
