"""Where the load generator sends requests: static URLs and/or a file re-read every
second (one URL per line, rewritten atomically by the sandbox as replicas change),
spread round-robin. Only loopback hosts unless explicitly allowed."""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlsplit

log = logging.getLogger("sampleapp.loadgen")

REFRESH_SECONDS = 1.0
LOOPBACK_HINT = "only loopback targets (127.0.0.0/8, ::1, localhost) are allowed"


class TargetError(ValueError):
    """A target URL that must not (or cannot) be used; the message says why."""


def check_target(url: str, *, allow_non_loopback: bool) -> str:
    """The URL, stripped, if it is an http:// URL the generator may send to."""
    url = url.strip()
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a malformed port
    except ValueError as exc:
        raise TargetError(f"bad target {url!r}: {exc}") from None
    if parts.scheme != "http" or not parts.hostname:
        raise TargetError(f"bad target {url!r}: expected http://HOST[:PORT][/PATH]")
    if not allow_non_loopback and not is_loopback(parts.hostname):
        raise TargetError(
            f"refusing target {url}: {LOOPBACK_HINT}; pass --allow-non-loopback to send elsewhere"
        )
    return url


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a DNS name: could resolve anywhere


def read_targets_file(path: Path, *, allow_non_loopback: bool) -> tuple[list[str], list[str]]:
    """(valid URLs, problems) from a targets file; blank lines and # comments skipped."""
    urls: list[str] = []
    problems: list[str] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            urls.append(check_target(line, allow_non_loopback=allow_non_loopback))
        except TargetError as exc:
            problems.append(f"{path}:{number}: {exc}")
    return urls, problems


class Targets:
    """The current target list and a round-robin cursor over it (thread-safe)."""

    def __init__(
        self,
        *,
        urls: Sequence[str],
        file: Path | None,
        allow_non_loopback: bool,
        clock: Callable[[], float],
    ) -> None:
        self._allow = allow_non_loopback
        self._static = [check_target(u, allow_non_loopback=allow_non_loopback) for u in urls]
        self._file = file
        self._file_urls: list[str] = []
        self._clock = clock
        self._last_read: float | None = None
        self._said: set[str] = set()
        self._cursor = 0
        self._lock = threading.Lock()
        if file is not None and file.exists():
            urls_in_file, problems = read_targets_file(file, allow_non_loopback=self._allow)
            if problems:
                raise TargetError("; ".join(problems))
            self._file_urls = urls_in_file

    def current(self) -> tuple[str, ...]:
        with self._lock:
            return (*self._static, *self._file_urls)

    def set(self, urls: Sequence[str]) -> None:
        """Replace the static targets (the file, if any, still adds its own)."""
        checked = [check_target(u, allow_non_loopback=self._allow) for u in urls]
        with self._lock:
            self._static = checked

    def next(self) -> str | None:
        with self._lock:
            pool = (*self._static, *self._file_urls)
            if not pool:
                return None
            url = pool[self._cursor % len(pool)]
            self._cursor += 1
            return url

    def refresh(self) -> None:
        """Re-read the file at most once per REFRESH_SECONDS; on trouble keep the old
        list and say so once."""
        if self._file is None:
            return
        now = self._clock()
        if self._last_read is not None and now - self._last_read < REFRESH_SECONDS:
            return
        self._last_read = now
        try:
            urls, problems = read_targets_file(self._file, allow_non_loopback=self._allow)
        except FileNotFoundError:
            self._say_once(f"targets file {self._file} not found; keeping {self.current()}")
            return
        except (OSError, UnicodeDecodeError) as exc:
            self._say_once(f"cannot read targets file {self._file}: {exc}")
            return
        for problem in problems:
            self._say_once(f"skipping {problem}")
        with self._lock:
            self._file_urls = urls

    def _say_once(self, problem: str) -> None:
        if problem not in self._said:
            log.warning("%s", problem)
            self._said.add(problem)
