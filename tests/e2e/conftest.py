"""End-to-end fixtures: one sandbox World for the e2e package (starting it and
training a baseline's worth of history is the expensive part), a calm world before each
test that asks for it, and engines stopped by PID after each test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.e2e_engine import BASELINE_SAMPLES, NORMAL, RBAC, RBAC_HPA_RAISE_MIN, RPS, EngineProcess
from e2e.e2e_world import calm
from sandbox.world import AppSpec, World


@pytest.fixture(scope="package")
def world() -> Iterator[World]:
    """One sandbox, RBAC from kubernetes/rbac.yaml plus the opt-in raise_min Role (its own
    Role: the engine's stays least-privilege), normal load running, and enough of it in
    Prometheus for a baseline learned from history."""
    with World(
        app=AppSpec(replicas=1, workers=2, service_time_seconds=0.05),
        rbac_files=[RBAC, RBAC_HPA_RAISE_MIN],
        seed=11,
    ) as w:
        w.set_load(NORMAL)
        history = f"count_over_time(({RPS})[5m:1s])"

        def enough_history() -> bool:
            found = w.prometheus.query(history)
            return bool(found) and float(found[0]["value"][1]) >= BASELINE_SAMPLES + 12

        w.wait_for(enough_history, timeout=120, message="a baseline's worth of history")
        yield w


@pytest.fixture
def calm_world(world: World) -> World:
    """The world back at its starting point (e2e_world.calm) before the test."""
    calm(world)
    return world


@pytest.fixture
def engines(tmp_path: Path) -> Iterator[list[EngineProcess]]:
    """Engines started by a test are stopped (by PID) at its end, whatever happens."""
    started: list[EngineProcess] = []
    yield started
    for engine in started:
        engine.stop()
