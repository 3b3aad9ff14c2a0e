"""Backtest: CSV in, the daemon's detector + policy replayed causally, CSV out."""

from __future__ import annotations

import csv
from collections.abc import Callable
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
    # confirmed on the 3rd surge row; latency stays up (a replayed trace does not react to
    # replicas), so after 5 passes scaling did not help; back when the 150 s cooldown ends
    assert actions == [(202, "scale_up", "3"), (207, "give_up", "3"), (212, "rollback", "2")]
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
    assert outputs[0][152][2].endswith(": not load-shaped, scaling cannot fix it")


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
        tmp_path, trace_rows(), config=config, detector_params=None, policy_params=None, replicas=2
    )
    actions = [(i, r["action"], r["replicas"]) for i, r in enumerate(out) if r["action"] != "none"]
    assert actions == [(202, "alert", "2")]
    assert out[202]["reason"].endswith("; at max replicas (2)")


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


# -- direction-aware remediation, verification, rollback and scale-down (issue 5) --------

SAFE = PolicyParams(
    consecutive_anomalies=3, cooldown_seconds=150, scale_down_after_seconds=150, verify_passes=5
)
LIMITS = Limits(max_replicas=4)
Profile = Callable[[int], float]


def shaped_rows(
    *,
    rps: Profile = lambda i: 1.0,
    p95: Profile = lambda i: 1.0,
    memory: Profile = lambda i: 1.0,
    n: int = 300,
    seed: int = 4,
) -> list[list[str]]:
    """Rows every 15 s around rps 40, p95 50 ms, memory 100 MB, times the given factors."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        r = 40 * rps(i) + 4 * rng.standard_normal()
        p = 0.05 * p95(i) + 0.004 * rng.standard_normal()
        m = 100e6 * memory(i) + 1e6 * rng.standard_normal()
        rows.append([str(T0 + 15 * i), f"{r:.3f}", f"{p:.5f}", f"{m:.0f}"])
    return rows


def during(start: int, end: int, factor: float) -> Profile:
    return lambda i: factor if start <= i < end else 1.0


def acted(out: list[dict[str, str]]) -> list[tuple[int, str, str]]:
    return [(i, r["action"], r["replicas"]) for i, r in enumerate(out) if r["action"] != "none"]


@pytest.mark.parametrize(
    ("profile", "confirmed_at", "why"),
    [
        pytest.param(
            {"rps": during(200, 240, 0.25)},
            202,
            "rps 3.98 vs baseline 40.5 (down): a traffic drop, scaling cannot fix it",
            id="traffic-drop",
        ),
        pytest.param(
            {"p95": during(200, 240, 8.0)},
            202,
            "p95_latency_seconds 0.403 vs baseline 0.0497 (up) at normal traffic: "
            "a slow dependency, scaling cannot fix it",
            id="latency-at-normal-traffic",
        ),
        pytest.param(
            {"memory": lambda i: 1.0 + max(0, i - 200) * 0.02},
            213,
            "memory_bytes 1.27e+08 vs baseline 9.99e+07 (up) without more load: "
            "a memory leak, scaling cannot fix it",
            id="memory-leak",
        ),
    ],
)
def test_anomalies_scaling_cannot_fix_alert_with_the_shape_and_never_scale(
    tmp_path: Path, profile: dict[str, Profile], confirmed_at: int, why: str
) -> None:
    _, out = backtest(tmp_path, shaped_rows(**profile), policy_params=SAFE, limits=LIMITS)
    assert acted(out) == [(confirmed_at, "alert", "1")]  # alerted once, never scaled
    assert out[confirmed_at]["reason"] == f"confirmed: {why}"
    assert {r["replicas"] for r in out} == {"1"}
    assert out[confirmed_at + 5]["anomaly"] == "1"  # the incident stays open


def test_a_surge_scales_up_then_steps_back_down_after_recovery(tmp_path: Path) -> None:
    """rps x3 for 40 rows; p95 x9, easing to x3 after the first step and to x1 after the
    second (as more replicas would make it); then traffic back to normal."""

    def latency(i: int) -> float:
        if not 200 <= i < 240:
            return 1.0
        return 9.0 if i < 203 else 3.0 if i < 213 else 1.0

    rows = shaped_rows(rps=during(200, 240, 3.0), p95=latency)
    _, out = backtest(tmp_path, rows, policy_params=SAFE, limits=LIMITS)
    assert acted(out) == [
        (202, "scale_up", "2"),
        (212, "scale_up", "3"),  # p95 eased (its excess more than halved) but is still up
        (249, "scale_down", "2"),  # calm for 150 s since the last surge row (239)
        (259, "scale_down", "1"),  # one step per 150 s cooldown, back to the start
    ]
    assert [r["anomaly"] for r in out[240:244]] == ["1", "1", "0", "0"]  # resolved at 242
    assert out[230]["reason"].endswith(
        "; p95 latency back at baseline since the last scale_up, holding"
    )
    assert out[249]["reason"] == "calm for 150s; scale_down 3->2 (toward 1)"
    assert out[259]["reason"] == "calm for 300s; scale_down 2->1 (original replicas)"
    assert {r["replicas"] for r in out[259:]} == {"1"}


def test_a_surge_that_scaling_does_not_ease_gives_up_and_rolls_back(tmp_path: Path) -> None:
    rows = shaped_rows(rps=during(200, 240, 3.0), p95=during(200, 240, 9.0))
    _, out = backtest(tmp_path, rows, policy_params=SAFE, limits=LIMITS)
    assert acted(out) == [(202, "scale_up", "2"), (207, "give_up", "2"), (212, "rollback", "1")]
    assert out[207]["reason"] == (
        "p95_latency_seconds 0.454 vs baseline 0.0497 (up), rps 122 vs baseline 40.5 (up) "
        "5 samples after scale_up 1->2: scaling did not help (p95 0.453s at the scale_up, "
        "0.454s now, baseline 0.0497s); "
        "no more scale-ups this incident, rollback to 1 after the cooldown"
    )
    assert out[212]["reason"] == "scaling did not help and the cooldown is over: rollback 2->1"
    assert all(r["anomaly"] == "1" for r in out[202:242])  # one incident: no scale_up after
    assert out[230]["reason"].endswith("; scaling did not help in this incident, no more scale-ups")
