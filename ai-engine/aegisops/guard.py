"""The engine's brakes around its peers: the Kubernetes backoff and the global action caps.

`KubeBackoff`: after a 429, a 5xx or a timeout (`KubeUnavailable`) no Kubernetes call is
made until the backoff ends (1 s doubling to 60 s, `Retry-After` honoured); one log line
when it starts, one when a call succeeds again. `ActionCaps`: at most `per_pass` actions
in one pass and `per_hour` in any rolling hour, counted in this process. `Throttle`: one
alert per key per period (the `action_cap` and `forbidden` alerts).

Time is the pass's `now`, passed in: no clock reads, so tests are deterministic.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import TypeVar

from aegisops.kube import KubeError, KubeUnavailable

log = logging.getLogger("aegisops.loop")
T = TypeVar("T")
HOUR = 3600.0


class InBackoff(KubeError):
    """Not called: the engine-wide Kubernetes backoff is running."""


class KubeBackoff:
    """Engine-wide: no Kubernetes call until `until` after the API said it is unavailable."""

    def __init__(self, *, initial_seconds: float = 1.0, max_seconds: float = 60.0) -> None:
        self.initial_seconds = initial_seconds
        self.max_seconds = max_seconds
        self.now = float("-inf")
        self.until: float | None = None  # set while backing off (and until a call succeeds)
        self._delay = initial_seconds

    def tick(self, now: float) -> None:
        """The current time (the pass's `now`) for the calls that follow."""
        self.now = now

    @property
    def active(self) -> bool:
        return self.until is not None and self.now < self.until

    def call(self, fn: Callable[[], T]) -> T:
        """`fn()` unless backing off (`InBackoff`); a `KubeUnavailable` starts or extends it."""
        if self.until is not None and self.now < self.until:
            raise InBackoff(f"Kubernetes API backoff until {self.until - self.now:.0f}s from now")
        try:
            result = fn()
        except KubeUnavailable as err:
            self._failed(err)
            raise
        if self.until is not None:
            log.warning("Kubernetes API answers again; backoff over")
            self.until, self._delay = None, self.initial_seconds
        return result

    def _failed(self, err: KubeUnavailable) -> None:
        retry_after = getattr(err, "retry_after", None)
        wait = self._delay if retry_after is None else float(retry_after)
        if self.until is None:
            log.error(
                "Kubernetes API unavailable (%s): no Kubernetes call for %gs (backoff)", err, wait
            )
        self.until = self.now + wait
        self._delay = min(self._delay * 2, self.max_seconds)


class Throttle:
    """At most one event per key per `period` seconds."""

    def __init__(self, *, period: float = HOUR) -> None:
        self.period = period
        self._last: dict[str, float] = {}

    def allow(self, key: str, *, now: float) -> bool:
        last = self._last.get(key)
        if last is not None and now - last < self.period:
            return False
        self._last[key] = now
        return True


class ActionCaps:
    """Global brakes: `per_pass` actions per pass, `per_hour` in any rolling hour."""

    def __init__(self, *, per_pass: int, per_hour: int) -> None:
        self.per_pass = per_pass
        self.per_hour = per_hour
        self.this_pass = 0
        self._times: deque[float] = deque()
        self.alerts = Throttle()

    def begin_pass(self) -> None:
        self.this_pass = 0

    def full(self, *, now: float) -> str | None:
        """Why no further action may be taken now, or None when one may."""
        while self._times and now - self._times[0] >= HOUR:
            self._times.popleft()
        if self.this_pass >= self.per_pass:
            return f"max_actions_per_pass ({self.per_pass}) reached this pass"
        if len(self._times) >= self.per_hour:
            return f"max_actions_per_hour ({self.per_hour}) reached in the last hour"
        return None

    def count(self, *, now: float) -> None:
        self.this_pass += 1
        self._times.append(now)
