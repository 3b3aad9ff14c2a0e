"""Traffic profiles and arrival times: pure, no I/O, no clock."""

from __future__ import annotations

import math
import random

import pytest

from sampleapp.profiles import (
    Diurnal,
    Drop,
    ProfileError,
    Steady,
    Surge,
    arrival_times,
    candidates,
)


def test_steady_is_constant() -> None:
    p = Steady(rps=12.5)
    assert [p.rate_at(t) for t in (0.0, 1.0, 1e6)] == [12.5, 12.5, 12.5]
    assert p.peak_rps() == 12.5
    assert p.kind == "steady"


def test_diurnal_is_a_sinusoid_around_the_mean() -> None:
    p = Diurnal(rps=10.0, amplitude=0.5, period_seconds=60.0)
    assert p.rate_at(0.0) == 10.0
    assert p.rate_at(15.0) == 15.0  # peak a quarter period in
    assert p.rate_at(45.0) == 5.0  # trough three quarters in
    assert p.rate_at(75.0) == 15.0  # periodic
    assert p.rate_at(30.0) == pytest.approx(10.0, abs=1e-12)
    assert p.rate_at(7.5) == pytest.approx(10.0 * (1 + 0.5 * math.sqrt(0.5)), abs=1e-12)
    assert p.peak_rps() == 15.0


def test_surge_multiplies_inside_its_window_only() -> None:
    p = Surge(rps=10.0, at_seconds=5.0, multiplier=3.0, duration_seconds=10.0)
    assert [p.rate_at(t) for t in (0.0, 4.999, 5.0, 14.999, 15.0, 100.0)] == [
        10.0,
        10.0,
        30.0,
        30.0,
        10.0,
        10.0,
    ]
    assert p.peak_rps() == 30.0
    assert Surge(rps=10.0, at_seconds=5.0).rate_at(1e9) == 30.0  # default: until the end


def test_drop_scales_down_inside_its_window_only() -> None:
    p = Drop(rps=10.0, at_seconds=2.0, fraction=0.2, duration_seconds=3.0)
    assert [p.rate_at(t) for t in (1.999, 2.0, 4.999, 5.0)] == [10.0, 2.0, 2.0, 10.0]
    assert p.peak_rps() == 10.0


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Steady(rps=-1), "rps: must be a finite number >= 0, got -1"),
        (lambda: Steady(rps=math.nan), "rps: must be a finite number >= 0, got nan"),
        (lambda: Diurnal(rps=1, amplitude=1.5), "amplitude: must be between 0 and 1, got 1.5"),
        (lambda: Diurnal(rps=1, period_seconds=0), "period_seconds: must be > 0, got 0"),
        (lambda: Surge(rps=1, at_seconds=-2), "at_seconds: must be >= 0, got -2"),
        (
            lambda: Surge(rps=1, at_seconds=0, multiplier=0.5),
            "multiplier: must be >= 1 (a drop lowers the rate), got 0.5",
        ),
        (lambda: Drop(rps=1, at_seconds=0, fraction=2), "fraction: must be between 0 and 1, got 2"),
        (
            lambda: Drop(rps=1, at_seconds=0, duration_seconds=0),
            "duration_seconds: must be > 0, got 0",
        ),
    ],
)
def test_bad_parameters_are_named(build, message: str) -> None:
    with pytest.raises(ProfileError) as info:
        build()
    assert str(info.value) == message


def test_arrivals_are_seeded_and_poisson_at_the_rate() -> None:
    p = Steady(rps=10.0)
    first = arrival_times(p, rng=random.Random(7), until=100.0)
    assert first == arrival_times(p, rng=random.Random(7), until=100.0)
    assert first != arrival_times(p, rng=random.Random(8), until=100.0)
    assert first == sorted(first) and first[0] > 0 and first[-1] < 100.0
    assert 900 <= len(first) <= 1100  # 1000 expected, sd ~32
    gaps = [b - a for a, b in zip([0.0, *first], first, strict=False)]
    assert sum(gaps) / len(gaps) == pytest.approx(0.1, rel=0.1)


def test_surge_arrivals_follow_the_rate_by_thinning() -> None:
    p = Surge(rps=20.0, at_seconds=10.0, multiplier=4.0, duration_seconds=10.0)
    times = arrival_times(p, rng=random.Random(3), until=30.0)
    before = sum(1 for t in times if t < 10.0)
    during = sum(1 for t in times if 10.0 <= t < 20.0)
    after = sum(1 for t in times if t >= 20.0)
    assert 140 <= before <= 260 and 140 <= after <= 260  # 200 expected each
    assert 680 <= during <= 920  # 800 expected


def test_zero_rate_stretches_still_yield_candidates_and_zero_peak_yields_none() -> None:
    # A caller paced by candidates never spins: they keep coming, none is kept.
    p = Drop(rps=10.0, at_seconds=0.0, fraction=0.0, duration_seconds=50.0)
    assert arrival_times(p, rng=random.Random(1), until=50.0) == []
    assert list(candidates(Steady(rps=0.0), rng=random.Random(1))) == []
