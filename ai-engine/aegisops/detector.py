"""Pure anomaly detection: numbers and time in, scores out (see docs/detector.md).

One `WorkloadDetector` per workload. It learns a baseline of usable samples, trains a
scikit-learn Isolation Forest on it, scores every later sample on a [0, 1] scale whose
0.5 is the threshold calibrated on held-out baseline scores, names the metrics that
deviate (robust z against the baseline median/MAD) and retrains on recent normal data.

No I/O, no clock reads, no globals: time is passed in as Unix seconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

import numpy as np
from sklearn.ensemble import IsolationForest

METRICS: tuple[str, ...] = ("rps", "p95_latency_seconds", "memory_bytes")
RPS = "rps"

Status = Literal["learning", "cold_start", "idle", "missing", "scored"]
Direction = Literal["up", "down"]

SCORE_THRESHOLD = 0.5
"""On the anomaly-score scale the calibrated threshold is always 0.5 (see `to_score`)."""

_MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True, kw_only=True)
class DetectorParams:
    """How a workload's detector learns and scores (config section `detector`)."""

    baseline_samples: int = 240
    cold_start_seconds: float = 120.0
    idle_rps_below: float = 0.05
    n_estimators: int = 100
    max_samples: int = 256
    seed: int = 42
    threshold_quantile: float = 0.995
    retrain_every_samples: int = 240
    max_training_samples: int = 2000
    gap_factor: float = 5.0
    """A step longer than gap_factor x the typical step restarts the cold start."""
    deviation_z: float = 3.0
    """|robust z| at or above which a metric is reported as deviating."""
    learn_score_below: float = 0.75
    """Scored samples up to this anomaly score are learned (clear anomalies never are)."""

    def __post_init__(self) -> None:
        problems = _param_problems(self)
        if problems:
            raise ValueError("invalid detector parameters: " + "; ".join(problems))


def _param_problems(p: DetectorParams) -> list[str]:
    checks = [
        (p.baseline_samples >= 8, "baseline_samples must be >= 8"),
        (p.cold_start_seconds >= 0, "cold_start_seconds must be >= 0"),
        (p.idle_rps_below >= 0, "idle_rps_below must be >= 0"),
        (p.n_estimators >= 2, "n_estimators must be >= 2"),
        (p.max_samples >= 2, "max_samples must be >= 2"),
        (p.seed >= 0, "seed must be >= 0"),
        (0 < p.threshold_quantile < 1, "threshold_quantile must be in (0, 1)"),
        (p.retrain_every_samples >= 1, "retrain_every_samples must be >= 1"),
        (
            p.max_training_samples >= p.baseline_samples,
            "max_training_samples must be >= baseline_samples",
        ),
        (p.gap_factor > 1, "gap_factor must be > 1"),
        (p.deviation_z > 0, "deviation_z must be > 0"),
        (SCORE_THRESHOLD <= p.learn_score_below <= 1, "learn_score_below must be in [0.5, 1]"),
    ]
    return [f"{message}, got {_got(p, message)}" for ok, message in checks if not ok]


def _got(p: DetectorParams, message: str) -> object:
    return getattr(p, message.split()[0])


@dataclass(frozen=True, kw_only=True)
class Deviation:
    """One metric away from its baseline: robust z = (value - median) / (1.4826 * MAD)."""

    metric: str
    value: float
    baseline: float
    direction: Direction
    z: float


@dataclass(frozen=True, kw_only=True)
class Observation:
    """What the detector made of one sample.

    `score` is None unless `status == "scored"`; `anomalous` is this sample alone
    (the policy confirms incidents). `values` holds the sample as given (NaN when
    missing); `imputed` names the metrics filled with the baseline median to score it.
    `raw_score`/`raw_threshold` are on Isolation Forest's own scale (Liu et al.'s
    s(x) = -score_samples(x), in (0, 1]).
    """

    t: float
    status: Status
    score: float | None = None
    anomalous: bool = False
    threshold: float = SCORE_THRESHOLD
    raw_score: float | None = None
    raw_threshold: float | None = None
    z_threshold: float | None = None
    deviations: tuple[Deviation, ...] = ()
    values: Mapping[str, float] = field(default_factory=dict)
    baseline: Mapping[str, float] = field(default_factory=dict)
    imputed: tuple[str, ...] = ()


def to_score(value: np.ndarray, threshold: float, *, top: float | None) -> np.ndarray:
    """Map a raw anomaly measure to [0, 1] so that the calibrated threshold lands on 0.5.

    Monotonic: 0 -> 0 and `threshold` -> 0.5, linearly. Above the threshold it is
    linear up to `top` -> 1 for a bounded measure (Isolation Forest's s(x) <= 1), or
    1 - 0.5 * threshold / value for an unbounded one (robust z; twice the threshold
    gives 0.75).
    """
    threshold = max(threshold, 1e-12)
    low = 0.5 * value / threshold
    if top is None:
        high = 1.0 - 0.5 * threshold / np.maximum(value, threshold)
    else:
        high = 0.5 + 0.5 * (value - threshold) / max(top - threshold, 1e-12)
    return np.clip(np.where(value <= threshold, low, high), 0.0, 1.0)


def _robust(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-metric median and robust sigma (1.4826 * MAD, floored so flat series work)."""
    median = np.median(X, axis=0)
    mad = np.median(np.abs(X - median), axis=0)
    return median, np.maximum(_MAD_TO_SIGMA * mad, np.maximum(1e-3 * np.abs(median), 1e-12))


@dataclass(frozen=True)
class _Model:
    """Two half-forests trained on interleaved halves of the training set.

    Together they are one forest of `n_estimators` trees (each tree saw half the
    data); each half scores the other half's samples out of sample, and the
    thresholds are the `threshold_quantile` of those held-out values.
    """

    forests: tuple[IsolationForest, IsolationForest]
    weights: tuple[float, float]
    raw_threshold: float
    z_threshold: float
    median: np.ndarray
    scale: np.ndarray
    baseline: Mapping[str, float]

    def raw_scores(self, X: np.ndarray) -> np.ndarray:
        """Isolation Forest s(x) in (0, 1] of the whole forest (mean path length over trees)."""
        log_a = np.log2(-self.forests[0].score_samples(X))
        log_b = np.log2(-self.forests[1].score_samples(X))
        return np.asarray(np.exp2(self.weights[0] * log_a + self.weights[1] * log_b))

    def scores(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(anomaly score in [0, 1], forest s(x), robust z per metric) for complete rows."""
        raw = self.raw_scores(X)
        z = (X - self.median) / self.scale
        forest = to_score(raw, self.raw_threshold, top=1.0)
        envelope = to_score(np.abs(z).max(axis=1), self.z_threshold, top=None)
        return np.maximum(forest, envelope), raw, z


def _train(X: np.ndarray, *, params: DetectorParams, metrics: Sequence[str]) -> _Model:
    X = X[len(X) % 2 :]  # equal halves, so both half-forests share one path-length scale
    halves = (X[0::2], X[1::2])
    psi = min(params.max_samples, len(halves[0]))
    trees = (params.n_estimators // 2, params.n_estimators - params.n_estimators // 2)
    forests = (
        IsolationForest(n_estimators=trees[0], max_samples=psi, random_state=params.seed),
        IsolationForest(n_estimators=trees[1], max_samples=psi, random_state=params.seed + 1),
    )
    forests[0].fit(halves[0])
    forests[1].fit(halves[1])
    held_raw = np.concatenate(
        [-forests[1].score_samples(halves[0]), -forests[0].score_samples(halves[1])]
    )
    recent = X[-params.baseline_samples :]  # the baseline for robust z: the latest normal data
    pair = (recent[0::2], recent[1::2])
    (med_a, scale_a), (med_b, scale_b) = _robust(pair[0]), _robust(pair[1])
    held_z = np.concatenate(
        [
            np.abs((pair[0] - med_b) / scale_b).max(axis=1),
            np.abs((pair[1] - med_a) / scale_a).max(axis=1),
        ]
    )
    median, scale = _robust(recent)
    q = params.threshold_quantile
    return _Model(
        forests=forests,
        weights=(trees[0] / params.n_estimators, trees[1] / params.n_estimators),
        raw_threshold=float(np.quantile(held_raw, q)),
        z_threshold=float(np.quantile(held_z, q)),
        median=median,
        scale=scale,
        baseline=MappingProxyType(dict(zip(metrics, median.tolist(), strict=True))),
    )


_STEP_WINDOW = 32


class _Clock:
    """Stream time: which samples fall in a cold start (after the start or a gap).

    The typical step is the median of the previous (up to) 32 steps; a step longer
    than `gap_factor` times it is a gap (a restart, a scrape outage) and starts a new
    cold start of `cold_start_seconds`.
    """

    def __init__(self, *, params: DetectorParams) -> None:
        self._params = params
        self._last_t: float | None = None
        self._steps = np.empty(0)
        self._restart_t = 0.0

    def cold(self, t: np.ndarray) -> np.ndarray:
        """Cold-start mask for the next timestamps (strictly increasing); advances the clock."""
        if not np.all(np.isfinite(t)):
            raise ValueError("timestamps must be finite numbers")
        prev = np.concatenate([[] if self._last_t is None else [self._last_t], t])
        if np.any(np.diff(prev) <= 0):
            raise ValueError("timestamps must be strictly increasing")
        dt = np.diff(prev)
        restart = np.zeros(len(t), dtype=bool)
        first = 0
        if self._last_t is None:
            restart[0], first = True, 1
        seq = np.concatenate([self._steps, dt])
        typical = _typical_steps(seq, offset=len(self._steps))
        restart[first:] = dt > self._params.gap_factor * typical
        starts = np.where(restart, t, -np.inf)
        starts = np.maximum(
            np.maximum.accumulate(starts), self._restart_t if first == 0 else -np.inf
        )
        self._last_t, self._steps = float(t[-1]), seq[-_STEP_WINDOW:]
        self._restart_t = float(starts[-1])
        return np.asarray((t - starts) < self._params.cold_start_seconds)


def _typical_steps(seq: np.ndarray, *, offset: int) -> np.ndarray:
    """For each step seq[i], i >= offset: median of the up-to-32 steps before it (NaN: none)."""
    out = np.full(len(seq) - offset, np.nan)
    for i in range(offset, min(len(seq), _STEP_WINDOW)):
        if i > 0:
            out[i - offset] = np.median(seq[:i])
    start = max(offset, _STEP_WINDOW)
    if start < len(seq):
        windows = np.lib.stride_tricks.sliding_window_view(seq[:-1], _STEP_WINDOW)
        out[start - offset :] = np.median(windows[start - _STEP_WINDOW :], axis=1)
    return out


class WorkloadDetector:
    """Learns one workload's normal behaviour online and scores each new sample.

    `observe` (one sample, the daemon) and `observe_batch` (many, the backtest) run
    the same causal code: feeding rows one at a time or in chunks of any size gives
    identical observations. A sample is learned only when it is usable (not missing,
    cold or idle), complete, and, once scored, at most `learn_score_below`.
    """

    def __init__(self, *, params: DetectorParams, metrics: Sequence[str] = METRICS) -> None:
        if not metrics or len(set(metrics)) != len(metrics):
            raise ValueError(f"metrics must be distinct names, got {list(metrics)}")
        self.params = params
        self.metrics = tuple(metrics)
        self._rps = self.metrics.index(RPS) if RPS in self.metrics else None
        self._reset()

    def _reset(self) -> None:
        self._clock = _Clock(params=self.params)
        self._buffer = np.empty((0, len(self.metrics)))
        self._model: _Model | None = None
        self._since_train = 0

    @property
    def ready(self) -> bool:
        """True once the baseline is learned and samples get scored."""
        return self._model is not None

    @property
    def training_samples(self) -> int:
        """How many normal samples the next (re)training would use."""
        return len(self._buffer)

    def fit_history(
        self, *, timestamps: Sequence[float], X: Sequence[Sequence[float | None]]
    ) -> int:
        """Start afresh from history (e.g. Prometheus query_range) replayed as a stream.

        Returns the number of training samples gathered; `ready` tells whether that
        was enough for a model. Live samples must come after the last timestamp.
        """
        self._reset()
        if len(timestamps):
            self.observe_batch(timestamps=timestamps, X=X)
        return self.training_samples

    def observe(self, *, t: float, x: Sequence[float | None] | np.ndarray) -> Observation:
        """Score one live sample (values in `metrics` order; None/NaN = missing)."""
        return self.observe_batch(timestamps=[t], X=[list(x)])[0]

    def observe_batch(
        self,
        *,
        timestamps: Sequence[float] | np.ndarray,
        X: Sequence[Sequence[float | None]] | np.ndarray,
    ) -> list[Observation]:
        """Observe rows in time order; identical to calling `observe` on each row."""
        t, values = self._as_arrays(timestamps, X)
        if len(t) == 0:
            return []
        cold = self._clock.cold(t)
        nan = np.isnan(values)
        missing = nan.all(axis=1)
        partial = nan.any(axis=1) & ~missing
        idle = np.zeros(len(t), dtype=bool)
        if self._rps is not None:
            idle = values[:, self._rps] < self.params.idle_rps_below  # NaN compares False
        status = np.where(
            missing, "missing", np.where(cold, "cold_start", np.where(idle, "idle", ""))
        )
        batch = _Batch(t=t, values=values, partial=partial, out=[None] * len(t))
        usable = np.flatnonzero(status == "")
        done = u = 0  # rows before `done` have their observation
        while u < len(usable):
            model = self._model
            u = (self._learn if model is None else self._score)(batch, usable=usable, u=u)
            end = int(usable[u - 1]) + 1
            self._unscored(batch, status=status, rows=range(done, end), model=model)
            done = end
        self._unscored(batch, status=status, rows=range(done, len(t)), model=self._model)
        observations = [o for o in batch.out if o is not None]
        assert len(observations) == len(t), "every row gets an observation"
        return observations

    def _unscored(
        self, batch: _Batch, *, status: np.ndarray, rows: range, model: _Model | None
    ) -> None:
        """Observations for the missing/cold/idle rows in `rows`, under `model`'s baseline."""
        baseline = model.baseline if model else {}
        for i in np.flatnonzero(status[rows.start : rows.stop] != "") + rows.start:
            batch.out[i] = Observation(
                t=float(batch.t[i]),
                status=str(status[i]),  # type: ignore[arg-type]
                values=self._values(batch.values[i]),
                baseline=baseline,
            )

    def _learn(self, batch: _Batch, *, usable: np.ndarray, u: int) -> int:
        """Gather baseline samples from usable[u:]; train once there are enough."""
        t, values, partial, out = batch.t, batch.values, batch.partial, batch.out
        pending = usable[u:]
        clean = pending[~partial[pending]]
        need = self.params.baseline_samples - len(self._buffer)
        take = clean[:need]
        end = len(usable) if len(take) < need else u + int(np.searchsorted(pending, take[-1])) + 1
        self._buffer = np.concatenate([self._buffer, values[take]])
        for i in usable[u:end]:
            out[i] = Observation(t=float(t[i]), status="learning", values=self._values(values[i]))
        if len(self._buffer) >= self.params.baseline_samples:
            self._model = _train(self._buffer, params=self.params, metrics=self.metrics)
            self._since_train = 0
        return end

    def _score(self, batch: _Batch, *, usable: np.ndarray, u: int) -> int:
        """Score usable rows up to the next retrain point with one score_samples call."""
        t, values, out = batch.t, batch.values, batch.out
        model = self._model
        assert model is not None
        idx = usable[u : u + self.params.retrain_every_samples - self._since_train]
        x = values[idx]
        holes = np.isnan(x)
        x = np.where(holes, model.median, x)
        score, raw, z = model.scores(x)
        anomalous = score > SCORE_THRESHOLD
        learned = (score <= self.params.learn_score_below) & ~holes.any(axis=1)
        self._buffer = np.concatenate([self._buffer, x[learned]])[
            -self.params.max_training_samples :
        ]
        flagged = (np.abs(z) >= self.params.deviation_z).any(axis=1) | anomalous
        rows = zip(
            idx.tolist(),
            t[idx].tolist(),
            score.tolist(),
            anomalous.tolist(),
            raw.tolist(),
            flagged.tolist(),
            holes.any(axis=1).tolist(),
            values[idx].tolist(),
            strict=True,
        )
        for j, (i, ti, sj, aj, rj, fj, hj, vj) in enumerate(rows):
            out[i] = Observation(
                t=ti,
                status="scored",
                score=sj,
                anomalous=aj,
                raw_score=rj,
                raw_threshold=model.raw_threshold,
                z_threshold=model.z_threshold,
                deviations=self._deviations(values=x[j], z=z[j], model=model, force=aj)
                if fj
                else (),
                values=dict(zip(self.metrics, vj, strict=True)),
                baseline=model.baseline,
                imputed=self._holes(holes[j]) if hj else (),
            )
        self._since_train += len(idx)
        if self._since_train >= self.params.retrain_every_samples:
            self._model = _train(self._buffer, params=self.params, metrics=self.metrics)
            self._since_train = 0
        return u + len(idx)

    def _deviations(
        self, *, values: np.ndarray, z: np.ndarray, model: _Model, force: bool
    ) -> tuple[Deviation, ...]:
        """Metrics with |z| >= deviation_z, largest first; at least the top one if `force`."""
        order = np.argsort(-np.abs(z), kind="stable")
        chosen = [k for k in order if abs(z[k]) >= self.params.deviation_z]
        if force and not chosen:
            chosen = [int(order[0])]
        return tuple(
            Deviation(
                metric=self.metrics[k],
                value=float(values[k]),
                baseline=float(model.median[k]),
                direction="up" if z[k] > 0 else "down",
                z=float(z[k]),
            )
            for k in chosen
        )

    def _values(self, row: np.ndarray) -> dict[str, float]:
        return dict(zip(self.metrics, row.tolist(), strict=True))

    def _holes(self, row: np.ndarray) -> tuple[str, ...]:
        return tuple(m for m, hole in zip(self.metrics, row.tolist(), strict=True) if hole)

    def _as_arrays(
        self,
        timestamps: Sequence[float] | np.ndarray,
        X: Sequence[Sequence[float | None]] | np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        t = np.asarray(timestamps, dtype=float).reshape(-1)
        try:
            values = np.array(X, dtype=float)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"sample values must be numbers or None: {exc}") from None
        width = len(self.metrics)
        if values.size == 0 and len(t) == 0:
            return t, values.reshape(0, width)
        if values.ndim != 2 or values.shape != (len(t), width):
            raise ValueError(
                f"expected {len(t)} rows of {width} values ({', '.join(self.metrics)}), "
                f"got shape {values.shape}"
            )
        values[~np.isfinite(values)] = np.nan  # +/-Inf (e.g. histogram_quantile) is missing
        return t, values


@dataclass(frozen=True)
class _Batch:
    """The rows of one observe_batch call; `out` is filled in row order."""

    t: np.ndarray
    values: np.ndarray
    partial: np.ndarray
    out: list[Observation | None]
