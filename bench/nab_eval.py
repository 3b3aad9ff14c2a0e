"""NAB score of `aegisops backtest`'s anomaly_score over the NAB corpus (41 files).

Copies the corpus's data/ tree to a temporary folder, moving each timestamp that is
not after the previous one (6 files repeat or go back an hour at DST changes) to 1 s
after it, runs `run_backtest` over the copy with the default detector parameters
(or `--set key=value` overrides, the same for every file), then runs the corpus's
scorer (NAB v1.1 rules, corpus-wide threshold per profile) on the output and prints
the three scores. Nothing is written outside the temporary folder. Usage:

    .venv/bin/python bench/nab_eval.py [--corpus ../shared/nab] [--set adapt_after_samples=500]

The detector never sees the labels; only the scorer reads them.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from aegisops.backtest import run_backtest
from aegisops.detector import DetectorParams

REPO = Path(__file__).resolve().parents[1]
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def patch_timestamps(source: Path, target: Path) -> int:
    """Copy a NAB CSV, making timestamps strictly increasing; returns rows moved."""
    with source.open(newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    column = header.index("timestamp")
    moved, previous = 0, None
    for row in body:
        stamp = datetime.strptime(row[column][:19], TIME_FORMAT)
        if previous is not None and stamp <= previous:
            stamp, moved = previous + timedelta(seconds=1), moved + 1
            row[column] = stamp.strftime(TIME_FORMAT)
        previous = stamp
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", newline="") as f:
        csv.writer(f).writerows([header, *body])
    return moved


def detector_params(settings: list[str]) -> DetectorParams:
    types = {f.name: f.type for f in dataclasses.fields(DetectorParams)}
    values: dict[str, object] = {}
    for setting in settings:
        key, _, text = setting.partition("=")
        if key not in types:
            raise SystemExit(f"--set {setting}: no detector parameter {key!r}")
        values[key] = float(text) if "float" in str(types[key]) else int(text)
    return DetectorParams(**values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "nab")
    parser.add_argument("--scorer", type=Path, help="default: <corpus>/../tools/nab_score.py")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    scorer = args.scorer or args.corpus.parent / "tools" / "nab_score.py"
    params = detector_params(args.set)
    with tempfile.TemporaryDirectory(prefix="aegisops-nab-") as tmp:
        data, scores = Path(tmp) / "data", Path(tmp) / "scores"
        files = sorted((args.corpus / "data").rglob("*.csv"))
        moved = {
            str(f.relative_to(args.corpus / "data")): n
            for f in files
            if (n := patch_timestamps(f, data / f.relative_to(args.corpus / "data")))
        }
        print(f"{len(files)} files; timestamps moved 1 s after the previous one: {moved}")
        start = time.perf_counter()
        summary = run_backtest(input_path=data, output_path=scores, detector_params=params)
        elapsed = time.perf_counter() - start
        print(f"backtest: {summary.rows} rows in {elapsed:.1f} s, {summary.incidents} incidents")
        changed = {
            k: v for k, v in dataclasses.asdict(params).items() if v != getattr(DetectorParams(), k)
        }
        print(f"detector params: defaults{' except ' + str(changed) if changed else ''}")
        out = subprocess.run(
            [
                sys.executable,
                str(scorer),
                "--corpus",
                str(args.corpus),
                "--scores",
                str(scores),
                "--json",
            ],
            check=True,
            capture_output=True,
            text=True,
        )
    result = json.loads(out.stdout)
    for profile in ("standard", "reward_low_FP_rate", "reward_low_FN_rate"):
        print(
            f"{profile:20s} {result[profile]:7.2f}  "
            f"(threshold {result[profile + '_threshold']:.4g})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
