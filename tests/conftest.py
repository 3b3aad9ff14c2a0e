"""Shared fixtures: a real Prometheus, the Slack receiver, the whole sandbox world.

Plus one session-level guard: when the run ends, no child process of pytest may be
left alive (every launcher stops its processes by PID).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from sandbox.procs import cmdline, live_children
from sandbox.prometheus import PrometheusServer
from sandbox.slack import SlackReceiver

if TYPE_CHECKING:
    from sandbox.world import World


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind() -> Iterator[None]:
    """Fail the session if any child process of pytest outlives the tests."""
    before = set(live_children())
    yield
    left = sorted(set(live_children()) - before)
    if left:
        described = "\n".join(f"{pid}: {cmdline(pid)}" for pid in left)
        pytest.fail(f"child processes left behind:\n{described}", pytrace=False)


@pytest.fixture
def prometheus() -> Iterator[PrometheusServer]:
    """A started Prometheus (1 s scrape) with no targets; `set_targets` to add some."""
    with PrometheusServer(scrape_interval="1s") as prom:
        yield prom


@pytest.fixture
def slack() -> Iterator[SlackReceiver]:
    """A started Slack receiver; `slack.url` is the webhook URL."""
    with SlackReceiver() as receiver:
        yield receiver


@pytest.fixture
def world() -> Iterator[World]:
    """The whole sandbox (see sandbox/world.py) with default settings: 1 replica, no load."""
    from sandbox.world import World

    with World() as w:
        yield w
