"""The pure detector: learning, filters, calibrated scores, deviations, retraining."""

from __future__ import annotations

import math

import numpy as np
import pytest

from aegisops.detector import (
    METRICS,
    SCORE_THRESHOLD,
    DetectorParams,
    Observation,
    WorkloadDetector,
    to_score,
)

STEP = 15.0
T0 = 1_700_000_000.0
FAST = DetectorParams(
    baseline_samples=60,
    cold_start_seconds=30,
    n_estimators=30,
    max_samples=64,
    retrain_every_samples=40,
    max_training_samples=200,
)


def normal_trace(n: int, *, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """n samples every 15 s of steady traffic with noise: rps ~40, p95 ~50 ms, memory ~100 MB."""
    rng = np.random.default_rng(seed)
    t = T0 + STEP * np.arange(n)
    X = np.column_stack(
        [
            40 + 4 * rng.standard_normal(n),
            0.05 + 0.004 * rng.standard_normal(n),
            100e6 + 1e6 * rng.standard_normal(n),
        ]
    )
    return t, X


def run(params: DetectorParams, t: np.ndarray, X: np.ndarray, **kw: object) -> list[Observation]:
    return WorkloadDetector(params=params, **kw).observe_batch(timestamps=t, X=X)  # type: ignore[arg-type]


def test_rows_one_at_a_time_or_in_any_chunks_give_identical_observations() -> None:
    t, X = normal_trace(400)
    t[150:] += 600  # a gap: a second cold start
    X[200:215, 0] *= 3  # a surge
    X[220:230, 1] = np.nan  # partial samples
    X[240:245] = np.nan  # no data at all
    X[260:270, 0] = 0.0  # idle
    whole = run(FAST, t, X)
    single = WorkloadDetector(params=FAST)
    one_by_one = [single.observe(t=float(ti), x=xi) for ti, xi in zip(t, X, strict=True)]
    chunked = WorkloadDetector(params=FAST)
    rng = np.random.default_rng(3)
    cuts = np.unique(rng.integers(1, len(t), size=25))
    pieces = [
        chunked.observe_batch(timestamps=ts, X=xs)
        for ts, xs in zip(np.split(t, cuts), np.split(X, cuts), strict=True)
    ]
    in_chunks = [o for piece in pieces for o in piece]
    assert {o.status for o in whole} == {"learning", "cold_start", "idle", "missing", "scored"}
    assert sum(o.anomalous for o in whole) > 10
    assert [repr(o) for o in one_by_one] == [repr(o) for o in whole]
    assert [repr(o) for o in in_chunks] == [repr(o) for o in whole]


def test_first_baseline_samples_are_learning_then_scored_in_unit_range() -> None:
    t, X = normal_trace(200)
    detector = WorkloadDetector(params=FAST)
    obs = detector.observe_batch(timestamps=t, X=X)
    statuses = [o.status for o in obs]
    assert statuses[:2] == ["cold_start", "cold_start"]  # t0 and t0+15 are inside 30 s
    assert statuses[2:62] == ["learning"] * 60
    assert set(statuses[62:]) == {"scored"}
    assert detector.ready
    assert all(o.score is None for o in obs[:62])
    scores = [o.score for o in obs[62:]]
    assert all(s is not None and 0.0 <= s <= 1.0 for s in scores)
    assert all(o.anomalous == (o.score is not None and o.score > SCORE_THRESHOLD) for o in obs)
    assert obs[100].baseline["rps"] == pytest.approx(40, abs=2)


def test_a_gap_much_longer_than_the_step_restarts_the_cold_start() -> None:
    params = DetectorParams(baseline_samples=8, cold_start_seconds=60, gap_factor=5)
    t = T0 + STEP * np.arange(30)
    t[10:] += 3 * STEP  # a 4-step gap: shorter than 5x, not a restart
    t[20:] += 10 * STEP  # an 11-step gap: a restart
    X = np.tile([40.0, 0.05, 1e8], (30, 1))
    obs = run(params, t, X)
    cold = [i for i, o in enumerate(obs) if o.status == "cold_start"]
    assert cold == [0, 1, 2, 3, 20, 21, 22, 23]  # 60 s = 4 steps each time


def test_idle_and_missing_samples_are_not_learned() -> None:
    t, X = normal_trace(120)
    X[10:40, 0] = 0.01  # idle: rps below 0.05
    X[40:50] = np.nan  # missing
    X[50:55, 2] = np.nan  # partial, while learning
    detector = WorkloadDetector(params=FAST)
    obs = detector.observe_batch(timestamps=t, X=X)
    assert [o.status for o in obs[10:40]] == ["idle"] * 30
    assert [o.status for o in obs[40:50]] == ["missing"] * 10
    assert [o.status for o in obs[50:55]] == ["learning"] * 5
    # 120 rows - 2 cold - 30 idle - 10 missing - 5 partial = 73 usable: 60 learn, 13 scored
    assert [o.status for o in obs].count("scored") == 13
    assert math.isnan(obs[45].values["memory_bytes"])


def test_idle_needs_an_rps_metric() -> None:
    t, X = normal_trace(100)
    obs = run(FAST, t, X[:, :1] * 0 + 0.01, metrics=("value",))
    assert "idle" not in {o.status for o in obs}
    assert obs[-1].status == "scored"


def test_partial_samples_are_imputed_with_the_baseline_median_and_say_so() -> None:
    t, X = normal_trace(120)
    X[100, 1] = np.nan
    X[101, 1] = np.inf  # histogram_quantile can return +Inf: treated as missing
    obs = run(FAST, t, X)
    for o in obs[100:102]:
        assert o.status == "scored"
        assert o.imputed == ("p95_latency_seconds",)
        assert not o.anomalous
    assert obs[102].imputed == ()


def test_all_missing_is_reported_not_scored() -> None:
    t, X = normal_trace(100)
    X[90] = np.nan
    obs = run(FAST, t, X)
    assert obs[90].status == "missing"
    assert obs[90].score is None
    assert not obs[90].anomalous


def test_surge_is_anomalous_and_names_rps_and_latency_up() -> None:
    t, X = normal_trace(300)
    X[250:260, 0] *= 3
    X[250:260, 1] *= 8
    obs = run(FAST, t, X)
    for o in obs[250:260]:
        assert o.anomalous
        assert o.score is not None and o.score > 0.9
        assert [(d.metric, d.direction) for d in o.deviations[:2]] == [
            ("p95_latency_seconds", "up"),
            ("rps", "up"),
        ]
    latency = obs[255].deviations[0]
    assert latency.value == pytest.approx(X[255, 1])
    assert latency.baseline == pytest.approx(0.05, abs=0.003)
    assert latency.z > 20


def test_memory_only_and_drop_anomalies_name_their_metric_and_direction() -> None:
    t, X = normal_trace(300)
    X[240:250, 2] *= 1.5  # a leak: beyond the forest's envelope, caught by robust z
    X[270:280, 0] *= 0.3  # a traffic drop (not idle)
    obs = run(FAST, t, X)
    assert all(o.anomalous for o in obs[240:250])
    assert {(d.metric, d.direction) for o in obs[240:250] for d in o.deviations} == {
        ("memory_bytes", "up")
    }
    assert all(o.anomalous for o in obs[270:280])
    assert all(o.deviations[0].metric == "rps" for o in obs[270:280])
    assert all(o.deviations[0].direction == "down" for o in obs[270:280])


def test_threshold_is_calibrated_on_held_out_baseline_scores() -> None:
    t, X = normal_trace(1500, seed=11)

    def false_positive_rate(quantile: float) -> float:
        params = DetectorParams(
            baseline_samples=400,
            cold_start_seconds=0,
            n_estimators=50,
            retrain_every_samples=2000,
            max_training_samples=400,
            threshold_quantile=quantile,
        )
        scored = [o for o in run(params, t, X) if o.status == "scored"]
        return sum(o.anomalous for o in scored) / len(scored)

    loose, strict = false_positive_rate(0.9), false_positive_rate(0.995)
    # two held-out tests (forest and robust z) at quantile q: about 1-q to 2(1-q) flagged
    assert 0.05 <= loose <= 0.3
    assert strict <= 0.03
    assert strict < loose


def test_retraining_follows_slow_drift_but_not_a_sustained_incident() -> None:
    n = 1200
    t, X = normal_trace(n, seed=5)
    X[:, 0] *= np.linspace(1.0, 2.0, n)  # traffic doubles slowly
    X[900:1100, 2] *= 1.5  # a memory incident longer than several retrain periods
    frozen = DetectorParams(
        **{**FAST.__dict__, "retrain_every_samples": 10_000, "adapt_after_samples": 10_000}
    )

    def flagged(obs: list[Observation], rows: slice) -> float:
        return sum(o.anomalous for o in obs[rows]) / len(obs[rows])

    adapting, never_retrained = run(FAST, t, X), run(frozen, t, X)
    assert flagged(adapting, slice(600, 900)) < 0.15
    assert flagged(never_retrained, slice(600, 900)) > 0.7
    assert adapting[899].baseline["rps"] > 60  # up from ~40 with the drift
    assert all(o.anomalous for o in adapting[900:1100])
    assert adapting[1099].baseline["memory_bytes"] == pytest.approx(100e6, rel=0.02)


def test_fit_history_then_live_equals_one_stream() -> None:
    t, X = normal_trace(160)
    X[90:96, 0] *= 3  # a surge in the history: clearly anomalous, so not learned
    X[150:155, 0] *= 3
    live = WorkloadDetector(params=FAST)
    history = run(FAST, t[:100], X[:100])
    assert all(o.score is not None and o.score > FAST.learn_score_below for o in history[90:96])
    # 2 cold + 60 learning + 38 scored, of which the 6 surge samples are left out
    assert live.fit_history(timestamps=t[:100], X=X[:100]) == 60 + 32
    assert live.ready
    after = [live.observe(t=float(ti), x=xi) for ti, xi in zip(t[100:], X[100:], strict=True)]
    assert [repr(o) for o in after] == [repr(o) for o in run(FAST, t, X)[100:]]
    assert live.fit_history(timestamps=[], X=[]) == 0
    assert not live.ready


def test_seed_makes_scores_reproducible() -> None:
    t, X = normal_trace(150)
    first = [o.raw_score for o in run(FAST, t, X)]
    again = [o.raw_score for o in run(FAST, t, X)]
    other = [o.raw_score for o in run(DetectorParams(**{**FAST.__dict__, "seed": 1}), t, X)]
    assert first == again
    assert first != other


def test_score_mapping_puts_the_threshold_at_one_half() -> None:
    raw = np.array([0.0, 0.3, 0.6, 0.8, 1.0])
    assert to_score(raw, 0.6, top=1.0).tolist() == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])
    z = np.array([0.0, 2.0, 4.0, 8.0, 1e9])
    assert to_score(z, 4.0, top=None).tolist() == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])


@pytest.mark.parametrize(
    ("timestamps", "values", "message"),
    [
        ([T0, T0], [[1.0, 1.0, 1.0]] * 2, "strictly increasing"),
        ([T0 + 1, T0], [[1.0, 1.0, 1.0]] * 2, "strictly increasing"),
        ([math.nan], [[1.0, 1.0, 1.0]], "finite"),
        ([T0], [[1.0, 1.0]], "expected 1 rows of 3 values"),
        ([T0], [[1.0, "fast", 1.0]], "must be numbers"),
    ],
)
def test_bad_samples_raise_clear_errors(
    timestamps: list[float], values: list[list[object]], message: str
) -> None:
    detector = WorkloadDetector(params=FAST)
    with pytest.raises(ValueError, match=message):
        detector.observe_batch(timestamps=timestamps, X=values)  # type: ignore[arg-type]


def test_time_must_move_forward_across_calls() -> None:
    detector = WorkloadDetector(params=FAST)
    detector.observe(t=T0, x=[1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="strictly increasing"):
        detector.observe(t=T0, x=[1.0, 1.0, 1.0])


def test_bad_params_and_metrics_are_named() -> None:
    with pytest.raises(ValueError, match=r"baseline_samples must be >= 8, got 2"):
        DetectorParams(baseline_samples=2)
    with pytest.raises(
        ValueError, match="max_training_samples must be >= baseline_samples, got 100"
    ):
        DetectorParams(baseline_samples=240, max_training_samples=100)
    with pytest.raises(ValueError, match="threshold_quantile"):
        DetectorParams(threshold_quantile=1.0)
    with pytest.raises(ValueError, match=r"learn_score_below must be in \[0.5, 1\], got 0.3"):
        DetectorParams(learn_score_below=0.3)
    with pytest.raises(ValueError, match="distinct"):
        WorkloadDetector(params=FAST, metrics=("rps", "rps"))
    assert WorkloadDetector(params=FAST).metrics == METRICS


def fit_points(obs: list[Observation]) -> list[int]:
    """Rows scored by a new model: where (raw_threshold, z_threshold) change."""
    scored = [(i, (o.raw_threshold, o.z_threshold)) for i, o in enumerate(obs) if o.score]
    return [i for (i, m), (_, prev) in zip(scored[1:], scored, strict=False) if m != prev]


def test_retrains_when_the_training_set_doubled_then_periodically() -> None:
    t, X = normal_trace(1000)
    params = DetectorParams(
        **{
            **FAST.__dict__,
            "retrain_every_samples": 200,
            "max_training_samples": 240,
            "learn_score_below": 1.0,  # every scored sample is learned: counts are exact
        }
    )
    obs = run(params, t, X)
    # first fit on 60 learned (rows 2..61); refits after 60, 120 more learned, then the
    # 240-sample window is full: every 200 scored samples
    assert fit_points(obs) == [122, 242, 442, 642, 842]
    capped = run(DetectorParams(**{**params.__dict__, "retrain_every_samples": 50}), t, X)
    assert fit_points(capped)[:3] == [112, 162, 212]  # the period also bounds the doubling


def test_a_lasting_level_shift_becomes_the_new_normal_a_short_surge_does_not() -> None:
    t, X = normal_trace(900)
    X[300:340, 0] *= 3  # a surge of 40 samples: an incident, then back to normal
    X[500:, 0] *= 3  # a launch triples traffic for good (too clear to be learned as drift)
    params = DetectorParams(**{**FAST.__dict__, "adapt_after_samples": 120})
    obs = run(params, t, X)
    assert all(o.anomalous for o in obs[300:340])
    assert sum(o.anomalous for o in obs[340:500]) < 8  # the surge was not adapted to
    # 120 of the last 240 samples anomalous (a stray one after the surge counts too)...
    assert all(o.anomalous for o in obs[500:615])
    assert sum(o.anomalous for o in obs[620:]) < 15  # ...then the shift is the baseline
    assert obs[-1].baseline["rps"] == pytest.approx(120, rel=0.1)
    never = run(DetectorParams(**{**params.__dict__, "adapt_after_samples": 10_000}), t, X)
    assert all(o.anomalous for o in never[500:])
    holes = X.copy()
    holes[500:, 2] = np.nan  # memory missing during the shift: nothing complete to adapt to
    stuck = run(params, t, holes)
    assert sum(o.anomalous for o in stuck[500:]) > 380
    assert stuck[-1].baseline["rps"] == pytest.approx(40, rel=0.1)
    flapping = X.copy()
    flapping[500::3, 0] /= 3  # the new level two samples out of three: adapted to as well
    flaps = run(params, t, flapping)
    assert sum(o.anomalous for o in flaps[820:]) < 8
    single = WorkloadDetector(params=params)
    one_by_one = [single.observe(t=float(ti), x=xi) for ti, xi in zip(t, X, strict=True)]
    assert [repr(o) for o in one_by_one] == [repr(o) for o in obs]


def test_the_default_adaptation_is_four_baselines_and_never_shorter_than_one() -> None:
    assert DetectorParams(baseline_samples=60).adapt_after == 240
    assert DetectorParams(baseline_samples=60, adapt_after_samples=100).adapt_after == 100
    with pytest.raises(ValueError, match="adapt_after_samples must be >= baseline_samples"):
        DetectorParams(baseline_samples=60, adapt_after_samples=59)
