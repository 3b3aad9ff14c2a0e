"""Slack incoming webhook: one POST at a time, an in-order outbox, the URL never shown.

`SlackNotifier.attempt(body) -> Attempt` is one POST: `sent`, `permanent` (400/403/404/410,
any other 4xx, an unusable URL: retrying cannot help; `problem` holds Slack's error text such
as `channel_is_archived`) or `retryable` (429 with its `Retry-After`, 5xx, network errors).
requests' exceptions carry the URL, so only their type is ever put in `problem`.

`Outbox` is how the engine talks to Slack: `send(payload)` enqueues and returns at once, one
daemon thread posts in order. A transient failure keeps the head message and retries it
(Retry-After, else 1 s doubling; each wait capped at `slack.max_retry_wait_seconds`): never
reordered, never skipped; a permanent rejection drops it with one log line. At most
`slack.max_queue` messages wait: a new one beyond that drops the oldest waiting one (one log
line naming it) - never the message being POSTed right now, though the head may go while it
waits out a backoff. `close(timeout)` posts what it can within the timeout, logs what was
left, and stops; closing again does nothing.

`SlackNotifier.send(payload) -> bool` is the older synchronous path (bounded retries within
`max_retries`, `max_retry_wait_seconds` in total and `deadline_seconds`), kept for callers
that have not moved to the outbox. Both never raise. Without a webhook Slack is off: the
notifier says so once, and sending does nothing.

The Block Kit builders live in `aegisops.messages` and are re-exported here.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import requests

from aegisops.config import Secret, SlackConfig
from aegisops.messages import (
    MetricLine,
    action_message,
    alert_message,
    anomaly_message,
    describe_metrics,
    format_value,
    metric_lines,
    resolved_message,
)

__all__ = [
    "Attempt",
    "MetricLine",
    "Outbox",
    "SlackNotifier",
    "action_message",
    "alert_message",
    "anomaly_message",
    "describe_metrics",
    "encode",
    "format_value",
    "metric_lines",
    "resolved_message",
]

log = logging.getLogger(__name__)

BACKOFF_SECONDS = 1.0  # first wait when Slack gives no Retry-After; doubles each retry
MIN_WAIT_SECONDS = 0.1  # the outbox never retries faster, even with max_retry_wait_seconds 0
RESULT_SENT, RESULT_FAILED, RESULT_DISABLED = "sent", "failed", "disabled"
SENT, PERMANENT_REJECTION, RETRYABLE = "sent", "permanent", "retryable"
NAME_CHARS = 80  # how much of a message's text names it in the log


@dataclass(frozen=True)
class Attempt:
    """What one POST came to: `outcome` sent | permanent | retryable."""

    outcome: str
    problem: str = ""  # for the log: status and Slack's error text, never the URL
    retry_after: float | None = None

    def wait(self, failures: int) -> float:
        """Seconds to wait before the next try: Retry-After, else 1 s doubling."""
        if self.retry_after is not None:
            return self.retry_after
        return BACKOFF_SECONDS * 2 ** (failures - 1)


def encode(payload: Mapping[str, Any]) -> bytes | None:
    """The JSON body Slack gets; None (and one log line) when the payload is not valid JSON."""
    try:
        return json.dumps(payload, allow_nan=False, ensure_ascii=False).encode()
    except (TypeError, ValueError):
        log.error(
            "Slack message dropped: the payload is not valid JSON "
            "(NaN, Infinity or a type JSON cannot hold)"
        )
        return None


class SlackNotifier:
    """Posts payloads to one webhook. `on_result` gets "sent", "failed" or "disabled"."""

    def __init__(
        self,
        *,
        config: SlackConfig,
        webhook: Secret | None,
        sleep: Callable[[float], None] = time.sleep,
        session: requests.Session | None = None,
        on_result: Callable[[str], None] | None = None,
        deadline_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.deadline_seconds = deadline_seconds
        self._clock = clock
        self._webhook = webhook
        self._sleep = sleep
        self._session = session or requests.Session()
        self._on_result = on_result
        if webhook is None:
            log.warning(
                "Slack is off: %s is not set; alerts go to the log only", config.webhook_env
            )

    @property
    def enabled(self) -> bool:
        return self._webhook is not None

    def close(self) -> None:
        self._session.close()

    def send(self, payload: Mapping[str, Any]) -> bool:
        """Post `payload`; True when Slack answered 200. Never raises."""
        try:
            return self._send(payload)
        except Exception as err:  # a notification must never stop the caller
            log.error("Slack message dropped: unexpected %s", type(err).__name__)
            return self._done(RESULT_FAILED)

    def _send(self, payload: Mapping[str, Any]) -> bool:
        if self._webhook is None:
            return self._done(RESULT_DISABLED)
        body = encode(payload)
        if body is None:
            return self._done(RESULT_FAILED)
        waited, started = 0.0, self._clock()
        attempts = self.config.max_retries + 1
        for attempt in range(1, attempts + 1):
            result = self.attempt(body, timeout=self._timeout())
            if result.outcome == SENT:
                return self._done(RESULT_SENT)
            problem = result.problem
            if result.outcome == PERMANENT_REJECTION:
                log.error("%s; the message is dropped (not retried)", problem)
                return self._done(RESULT_FAILED)
            if attempt == attempts:
                tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
                log.error("%s; the message is dropped after %s", problem, tries)
                return self._done(RESULT_FAILED)
            wait = result.wait(attempt)
            if waited + wait > self.config.max_retry_wait_seconds:
                budget = self.config.max_retry_wait_seconds
                log.error(
                    "%s; the message is dropped: waiting %g s more would exceed the %g s "
                    "retry budget",
                    problem,
                    wait,
                    budget,
                )
                return self._done(RESULT_FAILED)
            deadline = self.deadline_seconds
            spent = self._clock() - started
            if deadline is not None and spent + wait + self._timeout() > deadline:
                log.error(
                    "%s; the message is dropped: another attempt would exceed the %g s deadline",
                    problem,
                    deadline,
                )
                return self._done(RESULT_FAILED)
            log.warning(
                "%s; retrying in %g s (attempt %d of %d)", problem, wait, attempt + 1, attempts
            )
            self._sleep(wait)
            waited += wait
        raise AssertionError("unreachable")  # pragma: no cover

    def attempt(self, body: bytes, *, timeout: float | None = None) -> Attempt:
        """One POST of an encoded payload (see `encode`); never raises, never logs."""
        if self._webhook is None:
            return Attempt(PERMANENT_REJECTION, "Slack is off")
        seconds = self.config.timeout_seconds if timeout is None else timeout
        status, problem, retry_after = self._post(self._webhook, body, timeout=seconds)
        if 200 <= status < 300:
            return Attempt(SENT)
        if status == 0 or _retryable(status):
            return Attempt(RETRYABLE, problem, retry_after)
        return Attempt(PERMANENT_REJECTION, problem)

    def _timeout(self) -> float:
        """The per-POST timeout, never longer than the whole send's deadline."""
        if self.deadline_seconds is None or self.deadline_seconds <= 0:
            return self.config.timeout_seconds
        return min(self.config.timeout_seconds, self.deadline_seconds)

    def _post(
        self, webhook: Secret, body: bytes, *, timeout: float
    ) -> tuple[int, str, float | None]:
        """(status, what happened, Retry-After seconds).

        Status 0: a transient network error (retried); -1: the request cannot work as
        configured (an unusable URL...), not retried. Exceptions carry the URL: type only.
        """
        try:
            response = self._session.post(
                webhook.reveal(),
                data=body,
                headers={"Content-Type": "application/json; charset=utf-8"},
                timeout=timeout,
                allow_redirects=False,
            )
        except requests.Timeout:
            return 0, f"Slack did not answer within {timeout:g} s", None
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as err:
            return 0, f"cannot reach Slack ({type(err).__name__})", None
        except Exception as err:  # InvalidURL, LocationParseError...: retrying cannot help
            return -1, f"cannot post to Slack ({type(err).__name__})", None
        text = response.text.strip().replace("\n", " ")[:200]
        problem = f"Slack answered HTTP {response.status_code} {text}".rstrip()
        return response.status_code, problem, _retry_after(response.headers.get("Retry-After"))

    def _done(self, result: str) -> bool:
        if self._on_result is not None:
            self._on_result(result)
        return result == RESULT_SENT


def _retryable(status: int) -> bool:
    return status == 429 or status >= 500


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (Slack sends whole seconds); None if absent or unreadable."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(seconds, 0.0) if math.isfinite(seconds) else None


# --- the outbox ------------------------------------------------------------------------


class OutboxNotifier(Protocol):
    """What the outbox needs of `SlackNotifier`: one POST, and its settings."""

    @property
    def enabled(self) -> bool: ...
    @property
    def config(self) -> SlackConfig: ...
    def attempt(self, body: bytes, *, timeout: float | None = None) -> Attempt: ...


class OutboxMetrics(Protocol):
    """What the outbox reports (`aegisops.selfmetrics.SelfMetrics` has these)."""

    def slack_message(self, result: str) -> None: ...
    def slack_queue_depth(self, depth: int) -> None: ...
    def slack_dropped(self, reason: str) -> None: ...


@dataclass(eq=False)
class _Queued:
    body: bytes
    name: str  # the first NAME_CHARS characters of its text, for the log
    failures: int = 0
    backoffs: int = 0  # failures without a Retry-After: the exponent of the next backoff


class Outbox:
    """Posts messages in order from one daemon thread; `send` never blocks and never raises.

    `sleep(seconds)` replaces the wait between retries (tests pass a recorder that returns at
    once); by default the wait is interruptible by `close`.
    """

    def __init__(
        self,
        *,
        notifier: OutboxNotifier,
        max_queue: int = 100,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
        metrics: OutboxMetrics | None = None,
    ) -> None:
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        self.notifier, self.max_queue = notifier, max_queue
        self._clock, self._sleep, self._metrics = clock, sleep, metrics
        self._queue: deque[_Queued] = deque()
        self._posting: _Queued | None = None  # the head while its POST is in flight
        self._cond = threading.Condition()
        self._closing = False
        self._deadline = math.inf
        self._thread: threading.Thread | None = None
        if notifier.enabled:
            self._thread = threading.Thread(target=self._run, name="aegisops-slack", daemon=True)
            self._thread.start()

    def send(self, payload: Mapping[str, Any]) -> None:
        """Queue `payload` for posting; returns at once."""
        try:
            self._enqueue(payload)
        except Exception as err:  # a notification must never stop the caller
            log.error("Slack message dropped: unexpected %s", type(err).__name__)

    def pending(self) -> int:
        """Messages not posted yet (the one being posted included)."""
        with self._cond:
            return len(self._queue)

    def close(self, timeout: float) -> None:
        """Post what can be posted within `timeout` seconds, then stop the thread."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._deadline = self._clock() + max(timeout, 0.0)
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=max(timeout, 0.0) + self.notifier.config.timeout_seconds)
        with self._cond:
            left = len(self._queue)
        if left:
            noun = "message" if left == 1 else "messages"
            log.warning("Slack outbox closed: %d %s left unsent", left, noun)
        elif self._thread is not None:
            log.info("Slack outbox closed: every message was posted")

    def _enqueue(self, payload: Mapping[str, Any]) -> None:
        if not self.notifier.enabled:
            self._count(RESULT_DISABLED)
            return
        body = encode(payload)
        if body is None:
            self._count(RESULT_FAILED, dropped="permanent")
            return
        item = _Queued(body=body, name=_name(payload))
        with self._cond:
            if self._closing:
                log.error('Slack outbox is closed: message dropped, "%s"', item.name)
                self._count(RESULT_FAILED)
                return
            waiting = len(self._queue) - (self._posting is not None)
            if waiting >= self.max_queue:
                oldest = self._drop_oldest_waiting()
                log.error(
                    'Slack outbox full (%d messages): dropped the oldest, "%s"',
                    self.max_queue,
                    oldest.name,
                )
                self._count(RESULT_FAILED, dropped="queue_full")
            self._queue.append(item)
            self._depth()
            self._cond.notify_all()

    def _drop_oldest_waiting(self) -> _Queued:
        """Off the queue (the caller holds the lock): the head unless its POST is in flight."""
        if self._posting is not None and self._queue[0] is self._posting:
            oldest = self._queue[1]
            del self._queue[1]
            return oldest
        return self._queue.popleft()  # the head waits out a backoff: _run re-reads the head

    def _run(self) -> None:
        while True:
            try:
                if not self._post_head():
                    return
            except Exception as err:  # never out of the thread: the head is tried again
                with self._cond:
                    self._posting = None
                log.error(
                    "Slack outbox: unexpected %s; trying again in %g s",
                    type(err).__name__,
                    BACKOFF_SECONDS,
                )
                if not self._pause(BACKOFF_SECONDS):
                    return

    def _post_head(self) -> bool:
        """One POST of the head message (and its backoff); False when the thread is done."""
        item = self._next()
        if item is None:
            return False
        timeout = self._post_timeout()
        try:
            result = self.notifier.attempt(item.body, timeout=timeout)
        except Exception as err:  # attempt never raises; stay alive regardless
            result = Attempt(PERMANENT_REJECTION, f"unexpected {type(err).__name__}")
        if result.outcome != RETRYABLE:
            self._finish(item, result)
            return True
        with self._cond:
            self._posting = None  # waiting out the backoff: it may be dropped as the oldest
        wait = self._wait_for(item, result)
        if item.failures == 1:
            log.warning("%s; retrying in %g s, kept first in line", result.problem, wait)
        else:
            log.debug("%s; retry %d in %g s", result.problem, item.failures, wait)
        return self._pause(wait)

    def _wait_for(self, item: _Queued, result: Attempt) -> float:
        """Retry-After, else 1 s doubling; capped at max_retry_wait_seconds, floored at 0.1 s."""
        item.failures += 1
        wait = result.retry_after
        if wait is None:
            wait = BACKOFF_SECONDS * 2**item.backoffs
            item.backoffs += 1
        cap = self.notifier.config.max_retry_wait_seconds
        return max(min(wait, cap), MIN_WAIT_SECONDS)

    def _next(self) -> _Queued | None:
        """The head message, once there is one; None when closing and it cannot be sent."""
        with self._cond:
            while not self._queue and not self._closing:
                self._cond.wait()
            if not self._queue or self._clock() >= self._deadline:
                return None
            self._posting = self._queue[0]
            return self._posting

    def _finish(self, item: _Queued, result: Attempt) -> None:
        """Sent or permanently rejected: off the queue (unless already dropped as the oldest)."""
        with self._cond:
            self._posting = None
            if self._queue and self._queue[0] is item:
                self._queue.popleft()
                self._depth()
        if result.outcome == SENT:
            if item.failures:
                log.info('Slack message posted after %d retries: "%s"', item.failures, item.name)
            self._count(RESULT_SENT)
            return
        log.error('%s; the message is dropped (not retried): "%s"', result.problem, item.name)
        self._count(RESULT_FAILED, dropped="permanent")

    def _pause(self, seconds: float) -> bool:
        """Wait before the next try; False when closing and the try would fall past the
        deadline (the wait is cut short by `close`)."""
        end = self._clock() + seconds
        with self._cond:
            if self._closing and end > self._deadline:
                return False
        if self._sleep is not None:
            self._sleep(seconds)
            return True
        with self._cond:
            while (remaining := end - self._clock()) > 0:
                if self._closing and end > self._deadline:
                    return False
                self._cond.wait(remaining)
        return True

    def _post_timeout(self) -> float:
        with self._cond:
            left = self._deadline - self._clock()
        return max(min(self.notifier.config.timeout_seconds, left), 0.001)

    def _count(self, result: str, *, dropped: str | None = None) -> None:
        if self._metrics is None:
            return
        try:
            self._metrics.slack_message(result)
            if dropped is not None:
                self._metrics.slack_dropped(dropped)
        except Exception as err:  # metrics must never stop the posting thread
            log.error("Slack outbox: cannot count a message (%s)", type(err).__name__)

    def _depth(self) -> None:
        if self._metrics is None:
            return
        try:
            self._metrics.slack_queue_depth(len(self._queue))
        except Exception as err:  # metrics must never stop the posting thread
            log.error("Slack outbox: cannot report the queue depth (%s)", type(err).__name__)


def _name(payload: Mapping[str, Any]) -> str:
    text = str(payload.get("text", "")).replace("\n", " ")
    return text[:NAME_CHARS]
