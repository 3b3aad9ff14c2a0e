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
from typing import Literal

import numpy as np

from aegisops.forest import Clock, ForestParams, Model, Schedule, Training, train
from aegisops.forest import to_score as to_score  # re-exported: part of the public API

METRICS: tuple[str, ...] = ("rps", "p95_latency_seconds", "memory_bytes")
MAX_SEED = 2**32 - 2
"""numpy seeds are < 2**32 and the forest's second half uses seed + 1."""
RPS = "rps"

Status = Literal["learning", "cold_start", "idle", "missing", "scored"]
Direction = Literal["up", "down"]

SCORE_THRESHOLD = 0.5
"""On the anomaly-score scale the calibrated threshold is always 0.5 (see `to_score`)."""


@dataclass(frozen=True, kw_only=True)
class DetectorParams:
    """How a workload's detector learns and scores (config section `detector`)."""

    baseline_samples: int = 240
    cold_start_seconds: float = 120.0
    idle_rps_below: float = 0.05
    n_estimators: int = 50
    max_samples: int = 256
    seed: int = 42
    threshold_quantile: float = 0.995
    retrain_every_samples: int = 5760
    """Scored samples between two retrains once the training window is full (a day at 15 s)."""
    max_training_samples: int = 5760
    """Most recent normal samples trained on (a day at 15 s, so a daily cycle is normal)."""
    gap_factor: float = 5.0
    """A step longer than gap_factor x the typical step restarts the cold start."""
    deviation_z: float = 3.0
    """|robust z| at or above which a metric is reported as deviating."""
    learn_score_below: float = 0.75
    """Scored samples up to this anomaly score are learned (clear anomalies never are)."""
    adapt_after_samples: int | None = None
    """When this many of the last 2x as many scored samples were anomalous (a level
    shift: this many in a row), re-baseline on the latest this many: the shift is the
    new normal. None: 4 x baseline_samples. At least baseline_samples."""

    @property
    def adapt_after(self) -> int:
        """`adapt_after_samples`, resolved."""
        return self.adapt_after_samples or 4 * self.baseline_samples

    @property
    def schedule(self) -> Schedule:
        return Schedule(
            max_training_samples=self.max_training_samples,
            retrain_every_samples=self.retrain_every_samples,
            adapt_after_samples=self.adapt_after,
            min_samples=self.baseline_samples,
        )

    @property
    def forest(self) -> ForestParams:
        return ForestParams(
            n_estimators=self.n_estimators,
            max_samples=self.max_samples,
            seed=self.seed,
            threshold_quantile=self.threshold_quantile,
        )

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
        (0 <= p.seed <= MAX_SEED, f"seed must be in 0..{MAX_SEED}"),
        (0 < p.threshold_quantile < 1, "threshold_quantile must be in (0, 1)"),
        (p.retrain_every_samples >= 1, "retrain_every_samples must be >= 1"),
        (
            p.max_training_samples >= p.baseline_samples,
            "max_training_samples must be >= baseline_samples",
        ),
        (p.gap_factor > 1, "gap_factor must be > 1"),
        (p.deviation_z > 0, "deviation_z must be > 0"),
        (SCORE_THRESHOLD <= p.learn_score_below <= 1, "learn_score_below must be in [0.5, 1]"),
        (
            p.adapt_after_samples is None or p.adapt_after_samples >= p.baseline_samples,
            "adapt_after_samples must be >= baseline_samples (or None)",
        ),
    ]
    return [f"{message}, got {_got(p, message)}" for ok, message in checks if not ok]


def _got(p: DetectorParams, message: str) -> object:
    return getattr(p, message.split()[0])


@dataclass(frozen=True, kw_only=True)
class Deviation:
    """One metric away from its baseline: robust z = (value - median) / robust sigma."""

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
        self._clock = Clock(
            gap_factor=self.params.gap_factor,
            cold_start_seconds=self.params.cold_start_seconds,
        )
        self._training = Training(width=len(self.metrics), schedule=self.params.schedule)
        self._model: Model | None = None

    def _fit(self, X: np.ndarray) -> None:
        self._model = train(X, params=self.params.forest, metrics=self.metrics)

    @property
    def ready(self) -> bool:
        """True once the baseline is learned and samples get scored."""
        return self._model is not None

    @property
    def training_samples(self) -> int:
        """How many normal samples the next (re)training would use."""
        return len(self._training.samples)

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
        self, batch: _Batch, *, status: np.ndarray, rows: range, model: Model | None
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
        need = self.params.baseline_samples - self.training_samples
        take = clean[:need]
        end = len(usable) if len(take) < need else u + int(np.searchsorted(pending, take[-1])) + 1
        self._training.learn(values[take])
        for i in usable[u:end]:
            out[i] = Observation(t=float(t[i]), status="learning", values=self._values(values[i]))
        if self.training_samples >= self.params.baseline_samples:
            self._fit(self._training.fitted())
        return end

    def _score(self, batch: _Batch, *, usable: np.ndarray, u: int) -> int:
        """Score usable rows up to the next retrain point with one score_samples call.

        The block is cut right after the row that triggers a retrain (see `_cut`);
        later rows are scored by the next call, under the new model.
        """
        model = self._model
        assert model is not None
        idx = usable[u : u + self._training.block]
        holes = np.isnan(batch.values[idx])
        x = np.where(holes, model.median, batch.values[idx])
        score, raw, z = model.scores(x)
        anomalous = score > SCORE_THRESHOLD
        complete = ~holes.any(axis=1)
        learned = (score <= self.params.learn_score_below) & complete
        cut, why = self._training.cut(learned=learned, anomalous=anomalous)
        self._emit(batch, idx=idx[:cut], x=x, holes=holes, score=score, raw=raw, z=z, model=model)
        retrain = self._training.advance(
            x=x[:cut],
            learned=learned[:cut],
            anomalous=anomalous[:cut],
            complete=complete[:cut],
            why=why,
        )
        if retrain is not None:
            self._fit(retrain)
        return u + cut

    def _emit(
        self,
        batch: _Batch,
        *,
        idx: np.ndarray,
        x: np.ndarray,
        holes: np.ndarray,
        score: np.ndarray,
        raw: np.ndarray,
        z: np.ndarray,
        model: Model,
    ) -> None:
        """Observations of the scored rows `idx` (x, holes, score... are aligned with it)."""
        n = len(idx)
        anomalous = score[:n] > SCORE_THRESHOLD
        flagged = (np.abs(z[:n]) >= self.params.deviation_z).any(axis=1) | anomalous
        rows = zip(
            idx.tolist(),
            batch.t[idx].tolist(),
            score[:n].tolist(),
            anomalous.tolist(),
            raw[:n].tolist(),
            flagged.tolist(),
            np.asarray(holes[:n].any(axis=1)).tolist(),
            batch.values[idx].tolist(),
            strict=True,
        )
        for j, (i, ti, sj, aj, rj, fj, hj, vj) in enumerate(rows):
            batch.out[i] = Observation(
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

    def _deviations(
        self, *, values: np.ndarray, z: np.ndarray, model: Model, force: bool
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
