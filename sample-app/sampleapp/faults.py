"""Fault switches: extra latency, a memory leak and injected errors.

`Faults` is an immutable value; the server swaps it atomically. `parse_fault_update`
turns a POST /fault body into a new value or a `FaultError` naming the bad key.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import asdict, dataclass, replace
from typing import Any

MAX_EXTRA_LATENCY_SECONDS = 60.0
MAX_LEAK_BYTES_PER_SECOND = 1 << 30
LEAK_TICK_SECONDS = 0.1


class FaultError(ValueError):
    """A fault setting that cannot be applied; the message names the key."""


@dataclass(frozen=True)
class Faults:
    extra_latency_seconds: float = 0.0
    leak_bytes_per_second: int = 0
    error_rate: float = 0.0

    def __post_init__(self) -> None:
        _check_number("extra_latency_seconds", self.extra_latency_seconds)
        if not 0.0 <= self.extra_latency_seconds <= MAX_EXTRA_LATENCY_SECONDS:
            raise FaultError(
                f"extra_latency_seconds: must be between 0 and {MAX_EXTRA_LATENCY_SECONDS:g},"
                f" got {self.extra_latency_seconds!r}"
            )
        if isinstance(self.leak_bytes_per_second, bool) or not isinstance(
            self.leak_bytes_per_second, int
        ):
            raise FaultError(
                f"leak_bytes_per_second: expected an integer, got {self.leak_bytes_per_second!r}"
            )
        if not 0 <= self.leak_bytes_per_second <= MAX_LEAK_BYTES_PER_SECOND:
            raise FaultError(
                f"leak_bytes_per_second: must be between 0 and {MAX_LEAK_BYTES_PER_SECOND},"
                f" got {self.leak_bytes_per_second!r}"
            )
        _check_number("error_rate", self.error_rate)
        if not 0.0 <= self.error_rate <= 1.0:
            raise FaultError(f"error_rate: must be between 0 and 1, got {self.error_rate!r}")
        # JSON 1 and 1.0 mean the same; keep the floats floats.
        object.__setattr__(self, "extra_latency_seconds", float(self.extra_latency_seconds))
        object.__setattr__(self, "error_rate", float(self.error_rate))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _check_number(key: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FaultError(f"{key}: expected a number, got {value!r}")
    if not math.isfinite(value):
        raise FaultError(f"{key}: expected a finite number, got {value!r}")


FAULT_KEYS = tuple(Faults.__dataclass_fields__)


def parse_fault_update(body: bytes, *, current: Faults) -> Faults:
    """Apply a JSON object with any of FAULT_KEYS to `current`; keys left out keep
    their value."""
    try:
        update = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FaultError(f"body is not valid JSON: {exc}") from None
    if not isinstance(update, dict):
        raise FaultError(f"body must be a JSON object with keys {', '.join(FAULT_KEYS)}")
    unknown = sorted(set(update) - set(FAULT_KEYS))
    if unknown:
        raise FaultError(
            f"unknown key(s) {', '.join(unknown)}; expected any of {', '.join(FAULT_KEYS)}"
        )
    return replace(current, **update)


class MemoryLeak:
    """Holds on to `rate` bytes more every second (pages really touched, so RSS grows),
    up to `max_bytes`. Setting the rate to 0 stops the growth; memory is kept, like a
    real leak."""

    def __init__(self, *, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._rate = 0
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-leak", daemon=True)

    @property
    def held_bytes(self) -> int:
        with self._lock:
            return self._held_bytes

    def set_rate(self, bytes_per_second: int) -> None:
        with self._lock:
            self._rate = bytes_per_second

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(LEAK_TICK_SECONDS):
            with self._lock:
                room = self._max_bytes - self._held_bytes
                chunk = min(int(self._rate * LEAK_TICK_SECONDS), room)
                if chunk > 0:
                    # b"\x01" * n writes every page, unlike bytes(n) (lazy zero pages).
                    self._held.append(b"\x01" * chunk)
                    self._held_bytes += chunk
