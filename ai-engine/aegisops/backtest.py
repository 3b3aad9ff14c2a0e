"""Offline replay: the daemon's detector and policy over CSV files (`aegisops backtest`).

Input: a CSV with a `timestamp` column (ISO 8601, with or without Z/offset, naive
meaning UTC; or Unix seconds; not mixed) and numeric metric columns (any names, e.g.
`rps,p95_latency_seconds,memory_bytes` or a single `value`); an empty cell is a
missing value. Output, per input row: the input columns as given, then
`anomaly_score` (0..1; 0 when the row was not scored), `anomaly` (1 while the policy
holds a confirmed incident open), `action`, `replicas` and `reason`.

Learning is online and causal, exactly as in the daemon: one `WorkloadDetector`
observes the rows in time order and `decide()` acts on each observation, so a row's
output depends only on the rows up to it. There is no cluster: no HPA, every action
applies, and every replica the replay holds is ready. `action` names every action
(`scale_up`, `give_up`, `rollback`, `alert`, `release`...). A directory input mirrors
its CSV tree.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from aegisops.detector import DetectorParams, WorkloadDetector
from aegisops.policy import Limits, Memory, PolicyParams, PolicyState, decide

if TYPE_CHECKING:
    from aegisops.config import Config

TIMESTAMP = "timestamp"
OUTPUT_COLUMNS = ("anomaly_score", "anomaly", "action", "replicas", "reason")


class BacktestError(Exception):
    """A backtest input that cannot be replayed; the message names the file and row."""


@dataclass(frozen=True, kw_only=True)
class BacktestSummary:
    """What a backtest run did, over all files."""

    files: int
    rows: int
    scored: int
    incidents: int
    anomaly_rows: int
    actions: int
    outputs: tuple[Path, ...]


@dataclass(frozen=True, kw_only=True)
class Trace:
    """One parsed input file."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    metrics: tuple[str, ...]
    timestamps: np.ndarray
    values: np.ndarray


@dataclass(frozen=True, kw_only=True)
class _Setup:
    detector: DetectorParams
    policy: PolicyParams
    limits: Limits
    replicas: int


def run_backtest(
    *,
    input_path: str | Path,
    output_path: str | Path,
    config: Config | None = None,
    replicas: int = 1,
    detector_params: DetectorParams | None = None,
    policy_params: PolicyParams | None = None,
    limits: Limits | None = None,
) -> BacktestSummary:
    """Replay detector + policy over a CSV file or a directory tree of CSV files.

    Parameters come from `config` (detector, policy, the first target's limits),
    overridden by the explicit arguments, else the defaults. The output never replaces
    the input (nor lands inside an input directory). Raises BacktestError.
    """
    if replicas < 0:
        raise BacktestError(f"--replicas must be >= 0, got {replicas}")
    targets = config.targets if config is not None else ()
    setup = _Setup(
        detector=detector_params or (config.detector if config else DetectorParams()),
        policy=policy_params or (config.policy if config else PolicyParams()),
        limits=limits or (targets[0].limits if targets else Limits()),
        replicas=replicas,
    )
    source, target = Path(input_path), Path(output_path)
    pairs = list(_pairs(source, target))
    for src, dst in pairs:
        if dst.resolve() == src.resolve():
            raise BacktestError(f"{dst}: the output would overwrite the input; choose another path")
    summaries = [_replay_file(src, dst, setup=setup) for src, dst in pairs]
    return BacktestSummary(
        files=len(summaries),
        rows=sum(s.rows for s in summaries),
        scored=sum(s.scored for s in summaries),
        incidents=sum(s.incidents for s in summaries),
        anomaly_rows=sum(s.anomaly_rows for s in summaries),
        actions=sum(s.actions for s in summaries),
        outputs=tuple(dst for _, dst in pairs),
    )


def _pairs(source: Path, target: Path) -> Iterator[tuple[Path, Path]]:
    """(input file, output file) pairs; a directory's CSV tree is mirrored."""
    if source.is_file():
        yield source, (target / source.name if target.is_dir() else target)
        return
    if not source.is_dir():
        raise BacktestError(f"{source}: no such file or directory")
    if target.exists() and not target.is_dir():
        raise BacktestError(f"{target}: the input is a directory, so the output must be one")
    if target.resolve().is_relative_to(source.resolve()):
        raise BacktestError(
            f"{target}: the output directory is inside the input directory {source} "
            "(its CSV files would be read back as input); choose another path"
        )
    files = sorted(p for p in source.rglob("*.csv") if p.is_file())
    if not files:
        raise BacktestError(f"{source}: no .csv files in this directory")
    for path in files:
        yield path, target / path.relative_to(source)


def _replay_file(source: Path, target: Path, *, setup: _Setup) -> BacktestSummary:
    trace = read_trace(source)
    try:
        replayed = replay(trace, setup=setup)
    except ValueError as exc:
        raise BacktestError(f"{source}: {exc}") from None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow((*trace.header, *OUTPUT_COLUMNS))
            writer.writerows(
                (*row, *cells) for row, cells in zip(trace.rows, replayed.cells, strict=True)
            )
    except OSError as exc:
        raise BacktestError(f"{target}: cannot write the output: {exc.strerror}") from None
    return BacktestSummary(
        files=1,
        rows=len(replayed.cells),
        scored=replayed.scored,
        incidents=replayed.incidents,
        anomaly_rows=sum(cells[1] == "1" for cells in replayed.cells),
        actions=sum(cells[2] != "none" for cells in replayed.cells),
        outputs=(target,),
    )


@dataclass(frozen=True, kw_only=True)
class Replayed:
    """Per row: (anomaly_score, anomaly, action, replicas, reason), plus counts."""

    cells: Sequence[tuple[str, str, str, str, str]]
    scored: int
    incidents: int


def replay(trace: Trace, *, setup: _Setup) -> Replayed:
    """Run one WorkloadDetector and decide() over the trace, row by row in time order."""
    detector = WorkloadDetector(params=setup.detector, metrics=trace.metrics)
    observations = detector.observe_batch(timestamps=trace.timestamps, X=trace.values)
    state, memory, replicas = PolicyState(), Memory(), setup.replicas
    cells = []
    scored = incidents = 0
    for obs in observations:
        d = decide(
            state=state,
            observation=obs,
            now=obs.t,
            replicas=replicas,
            memory=memory,
            limits=setup.limits,
            params=setup.policy,
            ready_replicas=replicas,  # no cluster: every replica the replay holds is ready
        )
        state, memory, replicas = d.state, d.memory, d.replicas_after
        scored += obs.score is not None
        incidents += d.confirmed
        reason = f"confirmed: {d.reason}" if d.confirmed else d.reason
        score = "0" if obs.score is None else f"{obs.score:.4f}"
        cells.append((score, "1" if d.anomaly else "0", d.action, str(replicas), reason))
    return Replayed(cells=cells, scored=scored, incidents=incidents)


def read_trace(path: Path) -> Trace:
    """Parse and check one input CSV; BacktestError names the file and row."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            records = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise BacktestError(f"{path}: cannot read as CSV: {exc}") from None
    if not records or not any(cell.strip() for cell in records[0]):
        raise BacktestError(f"{path}: empty file (expected a header row with a timestamp column)")
    header = tuple(cell.strip() for cell in records[0])
    if TIMESTAMP not in header:
        raise BacktestError(
            f"{path}, row 1 (header): no {TIMESTAMP!r} column (columns: {', '.join(header)})"
        )
    metrics = tuple(name for name in header if name != TIMESTAMP)
    if not metrics or len(set(header)) != len(header) or "" in header:
        raise BacktestError(
            f"{path}, row 1 (header): need distinct, named metric columns besides "
            f"{TIMESTAMP!r}, got {', '.join(header)}"
        )
    rows = tuple(tuple(r) for r in records[1:] if r)
    if not rows:
        raise BacktestError(f"{path}: no data rows after the header")
    line_of = [i + 1 for i, r in enumerate(records) if r][1:]  # CSV records, header = 1
    time_col = header.index(TIMESTAMP)
    columns = [i for i, name in enumerate(header) if name != TIMESTAMP]
    for row, line in zip(rows, line_of, strict=True):
        if len(row) != len(header):
            raise BacktestError(
                f"{path}, row {line}: {len(row)} cells, the header has {len(header)}"
            )
    timestamps = _timestamps([r[time_col] for r in rows], lines=line_of, path=path)
    values = _values(rows, columns=columns, header=header, lines=line_of, path=path)
    return Trace(header=header, rows=rows, metrics=metrics, timestamps=timestamps, values=values)


def _timestamps(cells: Sequence[str], *, lines: Sequence[int], path: Path) -> np.ndarray:
    """ISO 8601 or Unix seconds (one kind per file) -> strictly increasing Unix seconds."""
    for cell, line in zip(cells, lines, strict=True):
        if not cell.strip():
            raise BacktestError(f"{path}, row {line}: empty timestamp")
    numeric = _is_number(cells[0])
    out = np.empty(len(cells))
    for k, (cell, line) in enumerate(zip(cells, lines, strict=True)):
        if _is_number(cell) != numeric:
            kinds = ("Unix seconds", "ISO 8601") if numeric else ("ISO 8601", "Unix seconds")
            raise BacktestError(
                f"{path}, row {line}: timestamp {cell!r} is {kinds[1]} but the first row's "
                f"is {kinds[0]}; mixed timestamp formats"
            )
        out[k] = float(cell) if numeric else _iso(cell, line=line, path=path)
    steps = np.diff(out)
    bad = np.flatnonzero(steps <= 0)
    if len(bad):
        k = int(bad[0]) + 1
        what = "duplicates" if steps[k - 1] == 0 else "is earlier than"
        raise BacktestError(
            f"{path}, row {lines[k]}: timestamp {cells[k]!r} {what} row {lines[k - 1]} "
            f"({cells[k - 1]!r}); rows must be sorted by time, without duplicates"
        )
    return out


def _iso(cell: str, *, line: int, path: Path) -> float:
    try:
        parsed = datetime.fromisoformat(cell.strip())
    except ValueError:
        raise BacktestError(
            f"{path}, row {line}: timestamp {cell!r} is neither ISO 8601 nor Unix seconds"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _is_number(cell: str) -> bool:
    try:
        return math.isfinite(float(cell))
    except ValueError:
        return False


def _values(
    rows: Sequence[Sequence[str]],
    *,
    columns: Sequence[int],
    header: Sequence[str],
    lines: Sequence[int],
    path: Path,
) -> np.ndarray:
    """The metric cells as floats; an empty cell is NaN (missing)."""
    cells = np.array([[row[c].strip() for c in columns] for row in rows], dtype=str)
    try:
        return np.where(cells == "", "nan", cells).astype(float)
    except ValueError:
        pass  # find the culprit for the message
    for k, row in enumerate(rows):
        for c in columns:
            cell = row[c].strip()
            if cell and not _is_float(cell):
                raise BacktestError(
                    f"{path}, row {lines[k]}, column {header[c]!r}: {cell!r} is not a number"
                )
    raise BacktestError(f"{path}: unreadable numbers")  # pragma: no cover - numpy agrees


def _is_float(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True
