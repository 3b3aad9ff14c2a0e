"""Backtest: CSV in, the daemon's detector + policy replayed causally, CSV out."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from aegisops.backtest import OUTPUT_COLUMNS, BacktestError, run_backtest
from aegisops.config import parse_config
from aegisops.detector import DetectorParams
from aegisops.policy import Limits, PolicyParams

T0 = 1_700_000_000
PARAMS = DetectorParams(
    baseline_samples=60,
    cold_start_seconds=30,
    n_estimators=30,
    max_samples=64,
    retrain_every_samples=50,
    max_training_samples=300,
)
POLICY = PolicyParams(consecutive_anomalies=3, cooldown_seconds=150)
HEADER = ["timestamp", "rps", "p95_latency_seconds", "memory_bytes"]


def trace_rows(
    n: int = 300, *, seed: int = 4, surge: tuple[int, int] = (200, 240)
) -> list[list[str]]:
    """Rows every 15 s (Unix seconds) of steady traffic, with a surge of rps and latency."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        load = 3.0 if surge[0] <= i < surge[1] else 1.0
        rps = 40 * load + 4 * rng.standard_normal()
        p95 = 0.05 * load**2 + 0.004 * rng.standard_normal()
        memory = 100e6 + 1e6 * rng.standard_normal()
        rows.append([str(T0 + 15 * i), f"{rps:.3f}", f"{p95:.5f}", f"{memory:.0f}"])
    return rows


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def backtest(tmp_path: Path, rows: list[list[str]], *, header: list[str] = HEADER, **kw: object):
    source = write_csv(tmp_path / "in.csv", header, rows)
    kw = {"detector_params": PARAMS, "policy_params": POLICY, **kw}
    summary = run_backtest(input_path=source, output_path=tmp_path / "out.csv", **kw)  # type: ignore[arg-type]
    return summary, read_csv(tmp_path / "out.csv")


def test_surge_is_confirmed_scaled_and_written_per_row(tmp_path: Path) -> None:
    rows = trace_rows()
    summary, out = backtest(tmp_path, rows, replicas=2, limits=Limits(max_replicas=4))
    assert list(out[0]) == [*HEADER, *OUTPUT_COLUMNS]
    assert [[r[c] for c in HEADER] for r in out] == rows  # input cells as given
    assert {r["anomaly_score"] for r in out[:62]} == {"0"}  # cold start + learning
    assert out[1]["reason"] == "cold start, not scored"
    assert out[10]["reason"] == "learning baseline"
    actions = [(i, r["action"], r["replicas"]) for i, r in enumerate(out) if r["action"] != "none"]
    # confirmed on the 3rd surge row; one more step when the 150 s cooldown ends; then at max
    assert actions == [(202, "scale_up", "3"), (212, "scale_up", "4")]
    assert out[202]["reason"].startswith("confirmed: p95_latency_seconds")
    assert "; scale_up 2->3" in out[202]["reason"]
    assert "cooldown until" in out[205]["reason"]
    assert [r["anomaly"] for r in out[200:204]] == ["0", "0", "1", "1"]
    assert out[-1]["anomaly"] == "0"
    assert all(0.0 <= float(r["anomaly_score"]) <= 1.0 for r in out)
    assert summary.rows == 300 and summary.files == 1
    assert summary.incidents == 1
    assert summary.actions == len(actions)
    assert summary.scored == sum(r["anomaly_score"] != "0" for r in out)


@pytest.mark.parametrize("k", [1, 61, 62, 113, 150, 201, 203, 260])
def test_output_for_a_truncated_file_is_a_prefix_of_the_full_output(tmp_path: Path, k: int) -> None:
    rows = trace_rows()
    _, full = backtest(tmp_path / "full", rows)
    _, truncated = backtest(tmp_path / "cut", rows[:k])
    assert truncated == full[:k]


def test_single_value_column_with_iso_timestamps(tmp_path: Path) -> None:
    rows = trace_rows(200, surge=(150, 170))
    base = datetime.fromtimestamp(T0, tz=UTC)
    stamps = [
        base.replace(tzinfo=None).isoformat(sep=" "),  # NAB style, naive = UTC
        base.isoformat().replace("+00:00", "Z"),
        base.astimezone().isoformat(),  # an offset
    ]
    outputs = []
    for n, stamp in enumerate(stamps):
        shifted = [[_shift(stamp, 15 * i), r[1]] for i, r in enumerate(rows)]
        _, out = backtest(tmp_path / str(n), shifted, header=["timestamp", "value"])
        outputs.append([(r["anomaly_score"], r["action"], r["reason"]) for r in out])
    assert outputs[0] == outputs[1] == outputs[2]
    # `value` is not rps or latency: the surge is confirmed and alerted, never scaled
    actions = [(i, a) for i, (_, a, _) in enumerate(outputs[0]) if a != "none"]
    assert actions == [(152, "alert")]
    assert outputs[0][152][2].startswith("confirmed: value")
    assert "not load-shaped" in outputs[0][152][2]


def _shift(stamp: str, seconds: int) -> str:
    """The same textual style as `stamp`, `seconds` later."""
    parsed = datetime.fromisoformat(stamp)
    later = datetime.fromtimestamp(parsed.timestamp() + seconds, tz=parsed.tzinfo or UTC)
    if stamp.endswith("Z"):
        return later.isoformat().replace("+00:00", "Z")
    if parsed.tzinfo is None:
        return later.replace(tzinfo=None).isoformat(sep=" ")
    return later.isoformat()


def test_empty_cells_are_missing_values(tmp_path: Path) -> None:
    rows = trace_rows(120)
    rows[100][1:] = ["", "", ""]
    rows[101][2] = ""
    _, out = backtest(tmp_path, rows)
    assert (out[100]["anomaly_score"], out[100]["reason"]) == ("0", "no data")
    assert out[101]["anomaly_score"] != "0"
    assert out[101]["p95_latency_seconds"] == ""


def test_config_supplies_params_and_the_first_targets_limits(tmp_path: Path) -> None:
    config = parse_config(
        {
            "detector": {
                "baseline_samples": 60,
                "cold_start_seconds": 30,
                "n_estimators": 30,
                "max_samples": 64,
                "retrain_every_samples": 50,
                "max_training_samples": 300,
            },
            "policy": {"consecutive_anomalies": 3, "cooldown_seconds": 150},
            "targets": [{"namespace": "shop", "deployment": "web", "max_replicas": 2}],
        },
        env={},
    )
    _, out = backtest(
        tmp_path, trace_rows(), config=config, detector_params=None, policy_params=None
    )
    actions = [(r["action"], r["replicas"]) for r in out if r["action"] != "none"]
    assert actions[0] == ("scale_up", "2")
    assert all(replicas == "2" for _, replicas in actions)
    assert "at max replicas (2)" in " ".join(r["reason"] for r in out)


def test_a_directory_is_mirrored(tmp_path: Path) -> None:
    rows = trace_rows(80)
    write_csv(tmp_path / "in" / "a.csv", HEADER, rows)
    write_csv(
        tmp_path / "in" / "deep" / "er" / "b.csv", ["timestamp", "value"], [r[:2] for r in rows]
    )
    (tmp_path / "in" / "notes.txt").write_text("not a trace")
    summary = run_backtest(
        input_path=tmp_path / "in", output_path=tmp_path / "out", detector_params=PARAMS
    )
    written = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*"))
    assert written == ["a.csv", "deep", "deep/er", "deep/er/b.csv"]
    assert summary.files == 2 and summary.rows == 160
    assert len(read_csv(tmp_path / "out" / "deep" / "er" / "b.csv")) == 80


BAD_INPUTS = [
    ("", "in.csv: empty file"),
    ("time,rps\n1,2\n", r"in.csv, row 1 \(header\): no 'timestamp' column \(columns: time, rps\)"),
    ("timestamp\n1\n", "need distinct, named metric columns"),
    ("timestamp,rps\n", "in.csv: no data rows after the header"),
    ("timestamp,rps\n1,2\n2,fast\n", "in.csv, row 3, column 'rps': 'fast' is not a number"),
    ("timestamp,rps\n1,2\n3,2\n2,2\n", r"row 4: timestamp '2' is earlier than row 3 \('3'\)"),
    ("timestamp,rps\n1,2\n1,2\n", r"row 3: timestamp '1' duplicates row 2 \('1'\)"),
    ("timestamp,rps\n1,2\n2024-01-01T00:00:00Z,2\n", "row 3: .*mixed timestamp formats"),
    ("timestamp,rps\nyesterday,2\n", "row 2: timestamp 'yesterday' is neither ISO 8601 nor Unix"),
    ("timestamp,rps\n1,2\n2,2,3\n", "row 3: 3 cells, the header has 2"),
    ("timestamp,rps\n1,2\n,2\n", "in.csv, row 3: empty timestamp$"),
    ("timestamp,rps\n ,2\n2,2\n", "in.csv, row 2: empty timestamp$"),
]


@pytest.mark.parametrize(("text", "message"), BAD_INPUTS)
def test_bad_input_names_the_file_and_row(tmp_path: Path, text: str, message: str) -> None:
    source = tmp_path / "in.csv"
    source.write_text(text)
    with pytest.raises(BacktestError, match=message):
        run_backtest(input_path=source, output_path=tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()


def test_missing_input_and_empty_directory_are_clear(tmp_path: Path) -> None:
    with pytest.raises(BacktestError, match=r"nope\.csv: no such file or directory"):
        run_backtest(input_path=tmp_path / "nope.csv", output_path=tmp_path / "out.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BacktestError, match=r"empty: no \.csv files in this directory"):
        run_backtest(input_path=tmp_path / "empty", output_path=tmp_path / "out")
    with pytest.raises(BacktestError, match="--replicas must be >= 0"):
        run_backtest(input_path=tmp_path / "empty", output_path=tmp_path / "out", replicas=-1)
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(BacktestError, match="the input is a directory, so the output must be one"):
        run_backtest(input_path=tmp_path / "empty", output_path=tmp_path / "a-file")
    source = write_csv(tmp_path / "in.csv", HEADER, trace_rows(20))
    with pytest.raises(BacktestError, match=r"a-file/out\.csv: cannot write the output"):
        run_backtest(input_path=source, output_path=tmp_path / "a-file" / "out.csv")


def test_the_output_never_overwrites_the_input(tmp_path: Path) -> None:
    source = write_csv(tmp_path / "a.csv", HEADER, trace_rows(20))
    before = source.read_text()
    with pytest.raises(BacktestError, match=r"a\.csv: the output would overwrite the input"):
        run_backtest(input_path=source, output_path=source)
    with pytest.raises(BacktestError, match="the output would overwrite the input"):
        run_backtest(input_path=source, output_path=tmp_path)  # tmp_path/a.csv again
    write_csv(tmp_path / "in" / "b.csv", HEADER, trace_rows(20))
    for inside in (tmp_path / "in", tmp_path / "in" / "out"):
        with pytest.raises(BacktestError, match="the output directory is inside the input"):
            run_backtest(input_path=tmp_path / "in", output_path=inside)
    assert source.read_text() == before
    assert sorted(p.name for p in (tmp_path / "in").rglob("*")) == ["b.csv"]
