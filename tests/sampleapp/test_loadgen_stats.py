"""Load generator tallies and percentiles: pure, exact."""

from __future__ import annotations

from sampleapp.loadstats import StatsRecorder, nearest_rank


def test_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert nearest_rank(values, 0.50) == 50.0
    assert nearest_rank(values, 0.95) == 95.0
    assert nearest_rank([0.7], 0.95) == 0.7
    assert nearest_rank([], 0.5) is None


def test_snapshot_counts_and_recent_window() -> None:
    rec = StatsRecorder()
    for target in ("http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:1", "x"):
        rec.sent(target)
    rec.finished(outcome="ok", latency=0.1)
    rec.finished(outcome="ok", latency=0.3)
    rec.finished(outcome="errors", latency=0.2)
    rec.count("dropped")
    rec.count("no_target")
    first = rec.snapshot(elapsed=2.0, profile="surge", rate=60.0, targets=2)
    assert first.line() == (
        "t=2.0s profile=surge rate=60.0/s targets=2 sent=4 ok=2 errors=1 timeouts=0"
        " dropped=1 no_target=1 in_flight=1 p50=0.200s p95=0.300s"
    )
    assert first.per_target == {"http://127.0.0.1:1": 2, "http://127.0.0.1:2": 1, "x": 1}
    assert (first.responses, first.recent_p95_seconds) == (3, None)
    rec.finished(outcome="timeouts", latency=None)
    assert rec.wait_idle(timeout=0.0)
    rec.sent("x")
    rec.finished(outcome="ok", latency=0.9)
    later = rec.snapshot(elapsed=3.0, profile="surge", rate=60.0, targets=2, since=first.responses)
    assert later.line_with_recent() == (
        "t=3.0s profile=surge rate=60.0/s targets=2 sent=5 ok=3 errors=1 timeouts=1"
        " dropped=1 no_target=1 in_flight=0 p50=0.200s p95=0.900s"
        " recent_p50=0.900s recent_p95=0.900s"
    )
    empty = rec.snapshot(elapsed=4.0, profile="surge", rate=60.0, targets=2, since=later.responses)
    assert (empty.recent_p50_seconds, empty.recent_p95_seconds) == (None, None)
