"""Traffic profiles for the load generator: pure `rate_at(t)` in requests per second,
t in seconds since the profile started, and seeded Poisson arrival times.

steady  -- a constant rate
diurnal -- a sinusoid around a mean: rps * (1 + amplitude * sin(2 pi t / period))
surge   -- rps, then rps * multiplier from `at_seconds` for `duration_seconds`
drop    -- rps, then rps * fraction from `at_seconds` for `duration_seconds`
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar


class ProfileError(ValueError):
    """A profile parameter out of range; the message names it."""


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ProfileError(message)


def _check_rps(rps: float) -> None:
    _require(math.isfinite(rps) and rps >= 0, f"rps: must be a finite number >= 0, got {rps!r}")


def _check_window(at_seconds: float, duration_seconds: float) -> None:
    _require(
        math.isfinite(at_seconds) and at_seconds >= 0,
        f"at_seconds: must be >= 0, got {at_seconds!r}",
    )
    _require(duration_seconds > 0, f"duration_seconds: must be > 0, got {duration_seconds!r}")


def _in_window(t: float, at_seconds: float, duration_seconds: float) -> bool:
    return at_seconds <= t < at_seconds + duration_seconds


@dataclass(frozen=True)
class Steady:
    kind: ClassVar[str] = "steady"
    rps: float

    def __post_init__(self) -> None:
        _check_rps(self.rps)

    def rate_at(self, t: float) -> float:
        return self.rps

    def peak_rps(self) -> float:
        return self.rps


@dataclass(frozen=True)
class Diurnal:
    kind: ClassVar[str] = "diurnal"
    rps: float
    amplitude: float = 0.5
    period_seconds: float = 60.0

    def __post_init__(self) -> None:
        _check_rps(self.rps)
        _require(
            0.0 <= self.amplitude <= 1.0,
            f"amplitude: must be between 0 and 1, got {self.amplitude!r}",
        )
        _require(
            math.isfinite(self.period_seconds) and self.period_seconds > 0,
            f"period_seconds: must be > 0, got {self.period_seconds!r}",
        )

    def rate_at(self, t: float) -> float:
        return self.rps * (1.0 + self.amplitude * math.sin(2.0 * math.pi * t / self.period_seconds))

    def peak_rps(self) -> float:
        return self.rps * (1.0 + self.amplitude)


@dataclass(frozen=True)
class Surge:
    kind: ClassVar[str] = "surge"
    rps: float
    at_seconds: float
    multiplier: float = 3.0
    duration_seconds: float = math.inf

    def __post_init__(self) -> None:
        _check_rps(self.rps)
        _check_window(self.at_seconds, self.duration_seconds)
        _require(
            math.isfinite(self.multiplier) and self.multiplier >= 1.0,
            f"multiplier: must be >= 1 (a drop lowers the rate), got {self.multiplier!r}",
        )

    def rate_at(self, t: float) -> float:
        if _in_window(t, self.at_seconds, self.duration_seconds):
            return self.rps * self.multiplier
        return self.rps

    def peak_rps(self) -> float:
        return self.rps * self.multiplier


@dataclass(frozen=True)
class Drop:
    kind: ClassVar[str] = "drop"
    rps: float
    at_seconds: float
    fraction: float = 0.2
    duration_seconds: float = math.inf

    def __post_init__(self) -> None:
        _check_rps(self.rps)
        _check_window(self.at_seconds, self.duration_seconds)
        _require(
            0.0 <= self.fraction <= 1.0,
            f"fraction: must be between 0 and 1, got {self.fraction!r}",
        )

    def rate_at(self, t: float) -> float:
        if _in_window(t, self.at_seconds, self.duration_seconds):
            return self.rps * self.fraction
        return self.rps

    def peak_rps(self) -> float:
        return self.rps


Profile = Steady | Diurnal | Surge | Drop
PROFILE_KINDS = ("steady", "diurnal", "surge", "drop")


def candidates(profile: Profile, *, rng: random.Random) -> Iterator[tuple[float, bool]]:
    """Candidate arrival times of a non-homogeneous Poisson process by thinning
    (Lewis-Shedler): a homogeneous process at the peak rate, each candidate kept with
    probability rate_at(t) / peak. Yields (t, kept); rejected candidates are yielded
    too, so a caller pacing itself on them never spins through a long zero-rate stretch.
    Empty when the peak rate is 0."""
    peak = profile.peak_rps()
    if peak <= 0:
        return
    t = 0.0
    while True:
        t += rng.expovariate(peak)
        yield t, rng.random() * peak < profile.rate_at(t)


def arrival_times(profile: Profile, *, rng: random.Random, until: float) -> list[float]:
    """The kept arrival times in [0, until)."""
    times: list[float] = []
    for t, kept in candidates(profile, rng=rng):
        if t >= until:
            break
        if kept:
            times.append(t)
    return times
