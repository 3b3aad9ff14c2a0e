"""What the detector learns from, when, and the model it trains (see docs/detector.md).

- `Model`/`train`: a calibrated scikit-learn Isolation Forest plus a robust-z envelope.
  The training set is split into two interleaved halves; each trains half of the
  trees and scores the other half out of sample to calibrate the thresholds.
- `Training`: the training set and the retrain schedule (counts only, so causal).
- `Clock`: stream time, which samples fall in a cold start.

Pure: numbers in, numbers out; no I/O, no clock reads, no globals.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

import numpy as np
from sklearn.ensemble import IsolationForest

_MAD_TO_SIGMA = 1.4826
_MEAN_AD_TO_SIGMA = 1.2533  # sqrt(pi / 2)


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


def robust(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-metric median and robust sigma.

    Sigma is 1.4826 * MAD, but at least 1.2533 * the mean absolute deviation from the
    median (both are sigma for normal noise): a series that is mostly one value with
    regular bursts (a disk idle 90% of the time) has MAD 0, and its bursts are normal.
    Floored at 0.1% of the median so a flat series works.
    """
    median = np.median(X, axis=0)
    deviation = np.abs(X - median)
    sigma = np.maximum(
        _MAD_TO_SIGMA * np.median(deviation, axis=0), _MEAN_AD_TO_SIGMA * deviation.mean(axis=0)
    )
    return median, np.maximum(sigma, np.maximum(1e-3 * np.abs(median), 1e-12))


@dataclass(frozen=True, kw_only=True)
class ForestParams:
    """The model's share of `DetectorParams`."""

    n_estimators: int
    max_samples: int
    seed: int
    threshold_quantile: float


@dataclass(frozen=True)
class Model:
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
    size: int
    """Samples it was trained on."""

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


def train(X: np.ndarray, *, params: ForestParams, metrics: Sequence[str]) -> Model:
    """Fit both half-forests on X and calibrate the forest and envelope thresholds.

    The envelope's median/MAD (and the `baseline` reported to people) come from the
    whole training set, the window the forest learned too.
    """
    size = len(X)
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
    (med_a, scale_a), (med_b, scale_b) = robust(halves[0]), robust(halves[1])
    held_z = np.concatenate(
        [
            np.abs((halves[0] - med_b) / scale_b).max(axis=1),
            np.abs((halves[1] - med_a) / scale_a).max(axis=1),
        ]
    )
    median, scale = robust(X)
    q = params.threshold_quantile
    return Model(
        forests=forests,
        weights=(trees[0] / params.n_estimators, trees[1] / params.n_estimators),
        raw_threshold=float(np.quantile(held_raw, q)),
        z_threshold=float(np.quantile(held_z, q)),
        median=median,
        scale=scale,
        baseline=MappingProxyType(dict(zip(metrics, median.tolist(), strict=True))),
        size=size,
    )


@dataclass(frozen=True, kw_only=True)
class Schedule:
    """When to retrain and on what (the detector's retrain/adapt params)."""

    max_training_samples: int
    retrain_every_samples: int
    adapt_after_samples: int
    min_samples: int
    """Fewest complete samples a re-baseline trains on (the baseline size)."""


Why = Literal["adapt", "grow", "period"]


class Training:
    """The samples the next model trains on, and when it trains: counts only.

    Retrain points depend only on counts of earlier samples, so scoring is causal
    and a block of rows gives the same result as the rows one at a time:

    - grow: the samples learned since the last fit equal the samples it was trained
      on (the training set doubled: 240 -> 480 -> 960 ...), until a fit used
      `max_training_samples`;
    - period: `retrain_every_samples` scored samples since the last fit;
    - adapt: `adapt_after_samples` (A) of the last 2A scored samples were anomalous (a
      level shift: A in a row; a flapping one: more than half of the time). The last
      A complete scored samples become the training set: the shift is the new normal.
    """

    def __init__(self, *, width: int, schedule: Schedule) -> None:
        self.schedule = schedule
        self.samples = np.empty((0, width))
        self._recent = np.empty((0, width))  # the last A complete scored samples
        self._flags = np.empty(0, dtype=bool)  # anomalous? for the last 2A scored samples
        self._learned = 0  # samples learned since the last fit
        self._scored = 0  # samples scored since the last fit
        self._fit_size = 0

    def fitted(self) -> np.ndarray:
        """Reset the counters for a fit on `samples`; returns them."""
        self._learned = self._scored = 0
        self._fit_size = len(self.samples)
        return self.samples

    def learn(self, X: np.ndarray) -> None:
        """Add baseline samples (before the first model)."""
        self.samples = np.concatenate([self.samples, X])

    @property
    def block(self) -> int:
        """Rows to score next: up to the periodic retrain, and no further than the rows
        needed to double the training set (scored rows past a retrain point are wasted)."""
        rows = self.schedule.retrain_every_samples - self._scored
        if self._fit_size < self.schedule.max_training_samples:
            rows = min(rows, self._fit_size - self._learned)
        return rows

    def cut(self, *, learned: np.ndarray, anomalous: np.ndarray) -> tuple[int, Why | None]:
        """(rows of this scored block to keep, why a retrain follows the last one, if any)."""
        n = len(learned)
        grow = n  # the row that completes the doubling; n: none in this block
        if self._fit_size < self.schedule.max_training_samples:
            hit = np.flatnonzero(np.cumsum(learned) >= self._fit_size - self._learned)
            grow = int(hit[0]) if hit.size else n
        adapt, window = self.schedule.adapt_after_samples, 2 * self.schedule.adapt_after_samples
        flags = np.concatenate([self._flags, anomalous])
        counts = np.concatenate([[0], np.cumsum(flags)])
        end = np.arange(len(self._flags) + 1, len(flags) + 1)  # after each new row
        shift = np.flatnonzero(counts[end] - counts[np.maximum(end - window, 0)] >= adapt)
        if shift.size and shift[0] <= grow:
            return int(shift[0]) + 1, "adapt"
        if grow < n:
            return grow + 1, "grow"
        return n, "period" if self._scored + n >= self.schedule.retrain_every_samples else None

    def advance(
        self,
        *,
        x: np.ndarray,
        learned: np.ndarray,
        anomalous: np.ndarray,
        complete: np.ndarray,
        why: Why | None,
    ) -> np.ndarray | None:
        """Take in the kept scored rows; the training set if a retrain is due now."""
        keep, adapt = self.schedule.max_training_samples, self.schedule.adapt_after_samples
        self.samples = np.concatenate([self.samples, x[learned]])[-keep:]
        self._learned += int(learned.sum())
        self._scored += len(x)
        self._recent = np.concatenate([self._recent, x[complete]])[-min(adapt, keep) :]
        self._flags = np.concatenate([self._flags, anomalous])[-2 * adapt :]
        if why == "adapt":  # (too few complete samples, e.g. a metric missing: just refit)
            if len(self._recent) >= self.schedule.min_samples:
                self.samples, self._recent = self._recent, self._recent[:0]
            self._flags = self._flags[:0]
        return None if why is None else self.fitted()


_STEP_WINDOW = 32


class Clock:
    """Stream time: which samples fall in a cold start (after the start or a gap).

    The typical step is the median of the previous (up to) 32 steps; a step longer
    than `gap_factor` times it is a gap (a restart, a scrape outage) and starts a new
    cold start of `cold_start_seconds`.
    """

    def __init__(self, *, gap_factor: float, cold_start_seconds: float) -> None:
        self._gap_factor = gap_factor
        self._cold_start_seconds = cold_start_seconds
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
        restart[first:] = dt > self._gap_factor * typical
        starts = np.where(restart, t, -np.inf)
        starts = np.maximum(
            np.maximum.accumulate(starts), self._restart_t if first == 0 else -np.inf
        )
        self._last_t, self._steps = float(t[-1]), seq[-_STEP_WINDOW:]
        self._restart_t = float(starts[-1])
        return np.asarray((t - starts) < self._cold_start_seconds)


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
