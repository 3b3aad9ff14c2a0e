"""shape.classify: which anomalies more replicas can help (only a surge)."""

from __future__ import annotations

import pytest

from aegisops.detector import Deviation, Observation
from aegisops.policy import PolicyParams
from aegisops.shape import classify, is_load_shaped

PARAMS = PolicyParams(min_relative_change=0.2)


def dev(metric: str, value: float, baseline: float) -> Deviation:
    direction = "up" if value > baseline else "down"
    return Deviation(metric=metric, value=value, baseline=baseline, direction=direction, z=9.0)


P95_UP = dev("p95_latency_seconds", 0.5, 0.05)


@pytest.mark.parametrize(
    ("deviations", "shape"),
    [
        ((dev("rps", 60, 40),), "surge"),  # rps materially up, latency fine
        ((P95_UP, dev("rps", 60, 40)), "surge"),
        ((P95_UP, dev("rps", 44, 40)), "surge"),  # 10% up: half the 20% margin
        ((P95_UP, dev("rps", 43, 40)), "slow_dependency"),  # 7.5%: normal traffic
        ((P95_UP,), "slow_dependency"),
        ((dev("rps", 10, 40),), "traffic_drop"),
        ((P95_UP, dev("rps", 10, 40)), "traffic_drop"),
        ((dev("memory_bytes", 3e8, 1e8),), "memory_leak"),
        ((dev("memory_bytes", 3e8, 1e8), dev("rps", 60, 40)), "surge"),
        ((dev("value", 9, 1),), "other"),
        ((dev("rps", 45, 40), dev("memory_bytes", 1.1e8, 1e8)), "other"),  # none material
        ((), "other"),
    ],
)
def test_classify(deviations: tuple[Deviation, ...], shape: str) -> None:
    obs = Observation(t=0.0, status="scored", score=0.9, anomalous=True, deviations=deviations)
    assert classify(obs, PARAMS) == shape


@pytest.mark.parametrize(
    ("deviations", "load_shaped"),
    [
        ((dev("rps", 60, 40),), True),
        ((P95_UP, dev("rps", 44, 40)), True),
        ((P95_UP, dev("rps", 43, 40)), False),
        ((dev("rps", 10, 40),), False),
        ((dev("memory_bytes", 3e8, 1e8),), False),
        ((dev("rps", 45, 40),), False),  # not material
    ],
)
def test_only_a_surge_is_load_shaped(deviations: tuple[Deviation, ...], load_shaped: bool) -> None:
    obs = Observation(t=0.0, status="scored", score=0.9, anomalous=True, deviations=deviations)
    assert is_load_shaped(obs, PARAMS) is load_shaped


def test_rps_within_its_noise_is_normal_traffic() -> None:
    """rps 10% up in values but not reported as deviating (within noise): not a surge."""
    obs = Observation(
        t=0.0,
        status="scored",
        score=0.9,
        anomalous=True,
        deviations=(P95_UP,),
        values={"rps": 44.0, "p95_latency_seconds": 0.5},
        baseline={"rps": 40.0, "p95_latency_seconds": 0.05},
    )
    assert classify(obs, PARAMS) == "slow_dependency"
