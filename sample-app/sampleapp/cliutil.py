"""Small argparse helpers shared by the server and the load generator: typed
converters with clear messages, and environment variables as defaults."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def int_at_least(minimum: int) -> Callable[[str], int]:
    def convert(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {raw!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return convert


def float_in(
    low: float, high: float | None = None, *, low_open: bool = False
) -> Callable[[str], float]:
    def convert(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {raw!r}") from None
        too_low = value <= low if low_open else value < low
        too_high = high is not None and value > high
        if too_low or too_high or value != value:
            bound = ">" if low_open else ">="
            limit = f" and <= {high:g}" if high is not None else ""
            raise argparse.ArgumentTypeError(f"must be {bound} {low:g}{limit}, got {raw}")
        return value

    return convert


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def boolean(raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE or value in _FALSE:
        return value in _TRUE
    raise argparse.ArgumentTypeError(f"expected true or false, got {raw!r}")


def env_default(
    parser: argparse.ArgumentParser,
    env: Mapping[str, str],
    name: str,
    convert: Callable[[str], T],
    fallback: T,
) -> T:
    """The value of environment variable `name` converted, or `fallback` when unset;
    a bad value stops with a usage error naming the variable (exit 2)."""
    raw = env.get(name)
    if raw is None or raw == "":
        return fallback
    try:
        return convert(raw)
    except argparse.ArgumentTypeError as exc:
        parser.error(f"environment variable {name}: {exc}")


def write_atomically(path: Path, text: str) -> None:
    """Write temp + rename in the same directory, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def setup_logging() -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
