"""Missing-data tracking: when a workload's data (or Prometheus itself) has been gone long
enough to say so, and when it is back. Pure: passes in, alert kinds out.

After `after` missing passes in a row: one `metrics_missing` (or `prometheus_down`); the
first pass with data after that: one `metrics_back` (or `prometheus_back`). A gap shorter
than `after` passes says nothing (a blip is not worth a message). Missing data never
leads to an action: the detector scores nothing, the policy holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PROMETHEUS = ""  # the key Prometheus itself is tracked under


@dataclass
class _Streak:
    missing: int = 0
    alerted: bool = False


@dataclass
class MissingData:
    after: int
    _streaks: dict[str, _Streak] = field(default_factory=dict)

    def workload(self, key: str, *, missing: bool) -> str | None:
        """`metrics_missing`, `metrics_back` or None for this pass of `key`."""
        return self._step(key, missing=missing, down="metrics_missing", back="metrics_back")

    def prometheus(self, *, ok: bool) -> str | None:
        """`prometheus_down`, `prometheus_back` or None for this pass."""
        return self._step(
            PROMETHEUS, missing=not ok, down="prometheus_down", back="prometheus_back"
        )

    def forget(self, key: str) -> None:
        self._streaks.pop(key, None)

    def _step(self, key: str, *, missing: bool, down: str, back: str) -> str | None:
        streak = self._streaks.setdefault(key, _Streak())
        if missing:
            streak.missing += 1
            if streak.missing >= self.after and not streak.alerted:
                streak.alerted = True
                return down
            return None
        was_alerted = streak.alerted
        streak.missing, streak.alerted = 0, False
        return back if was_alerted else None
