"""Backtest throughput: rows/s of `run_backtest` end to end (CSV in, CSV out).

Generates a seeded 3-metric trace (15 s steps, noise, traffic drifting slowly up
by 25% over the trace, optionally a daily cycle, and six injected incidents), then
times run_backtest over it once per retrain interval asked for. Prints one line per
run: throughput, and how many confirmed incidents match an injected one. Usage:

    .venv/bin/python bench/backtest_throughput.py [--rows 50000] [--seed 7]
        [--retrain-every N,N...] [--repeat 3] [--daily-amplitude 0,0.3]

By default it runs the detector defaults on two traces: steady (with drift) and a
+/-30% daily cycle.

The best of --repeat runs is reported (the machine is shared; the best run is the
least disturbed one). Each retrain fits 100 trees (~0.1 s) and each block between
retrains costs one score_samples call (~7 ms), so throughput is set by the number
of retrains; see bench/README.md.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from aegisops.backtest import run_backtest
from aegisops.detector import DetectorParams

STEP_SECONDS = 15
DAY_STEPS = 86_400 // STEP_SECONDS


def write_trace(
    path: Path, *, rows: int, seed: int, daily_amplitude: float = 0.0
) -> list[tuple[str, int, int]]:
    """A seeded trace; returns the injected incidents as (kind, start row, length)."""
    rng = np.random.default_rng(seed)
    i = np.arange(rows)
    level = np.linspace(1.0, 1.25, rows) * (1 + daily_amplitude * np.sin(2 * np.pi * i / DAY_STEPS))
    rps = 40 * level * (1 + 0.08 * rng.standard_normal(rows))
    p95 = 0.05 * (1 + 0.1 * rng.standard_normal(rows))
    memory = 120e6 * (1 + 0.01 * rng.standard_normal(rows))
    incidents = []
    for n, start in enumerate(range(rows // 8, rows, rows // 6)):
        kind = ("surge", "memory_leak", "latency")[n % 3]
        length = 40
        window = slice(start, start + length)
        if kind == "surge":
            rps[window] *= 3
            p95[window] *= 6
        elif kind == "memory_leak":
            memory[window] *= np.linspace(1.2, 2.0, len(rps[window]))
        else:
            p95[window] *= 5
        incidents.append((kind, start, length))
    t0 = 1_760_000_000
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["timestamp", "rps", "p95_latency_seconds", "memory_bytes"])
        for k in range(rows):
            writer.writerow(
                [t0 + STEP_SECONDS * k, f"{rps[k]:.3f}", f"{p95[k]:.5f}", f"{memory[k]:.0f}"]
            )
    return incidents


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--retrain-every", default="", help="comma-separated; default: the detector default"
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--daily-amplitude", default="0,0.3", help="comma-separated, e.g. 0.3 = +/-30%%"
    )
    args = parser.parse_args(argv)
    default = DetectorParams().retrain_every_samples
    intervals = [int(x) for x in args.retrain_every.split(",") if x] or [default]
    print(f"cpus: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.2f}")
    for amplitude in [float(a) for a in args.daily_amplitude.split(",")]:
        _trace_runs(args, amplitude=amplitude, intervals=intervals)
    return 0


def _trace_runs(args: argparse.Namespace, *, amplitude: float, intervals: list[int]) -> None:
    with tempfile.TemporaryDirectory(prefix="aegisops-bench-") as tmp:
        source, output = Path(tmp) / "trace.csv", Path(tmp) / "scored.csv"
        incidents = write_trace(source, rows=args.rows, seed=args.seed, daily_amplitude=amplitude)
        print(
            f"trace: {args.rows} rows x 3 metrics, seed {args.seed}, "
            f"daily amplitude {amplitude}, incidents {incidents}"
        )
        for every in intervals:
            params = DetectorParams(retrain_every_samples=every)
            best = float("inf")
            for _ in range(args.repeat):
                start = time.perf_counter()
                summary = run_backtest(
                    input_path=source, output_path=output, detector_params=params
                )
                best = min(best, time.perf_counter() - start)
            caught, false = _match(output, incidents)
            print(
                f"  retrain_every_samples={every} (other detector params default): "
                f"{summary.rows / best:,.0f} rows/s ({best:.2f} s best of {args.repeat}); "
                f"confirmed incidents: {caught}/{len(incidents)} injected caught, "
                f"{false} false"
            )


def _match(output: Path, incidents: list[tuple[str, int, int]]) -> tuple[int, int]:
    """(injected incidents confirmed while they lasted, other confirmations)."""
    with output.open(newline="") as f:
        confirmed = [
            k for k, row in enumerate(csv.DictReader(f)) if row["reason"].startswith("confirmed")
        ]
    hits = {
        n
        for n, (_, start, length) in enumerate(incidents)
        for k in confirmed
        if start <= k < start + length
    }
    inside = sum(any(s <= k < s + n for _, s, n in incidents) for k in confirmed)
    return len(hits), len(confirmed) - inside


if __name__ == "__main__":
    sys.exit(main())
