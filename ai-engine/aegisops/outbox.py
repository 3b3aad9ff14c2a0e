"""The Slack outbox: how the engine talks to Slack without ever waiting on it.

`send(payload)` enqueues and returns at once; one daemon thread posts in order through
`SlackNotifier.attempt`. A transient failure keeps the head message and retries it
(Retry-After, else 1 s doubling; each wait capped at `slack.max_retry_wait_seconds`): never
reordered, never skipped; a permanent rejection drops it with one log line. At most
`slack.max_queue` messages wait: a new one beyond that drops the oldest waiting one (one log
line naming it) - never the message being POSTed right now, though the head may go while it
waits out a backoff. `close(timeout)` posts what it can within the timeout, logs what was
left, and stops; closing again does nothing.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aegisops.config import SlackConfig
from aegisops.notify import (
    BACKOFF_SECONDS,
    MIN_WAIT_SECONDS,
    PERMANENT_REJECTION,
    RESULT_DISABLED,
    RESULT_FAILED,
    RESULT_SENT,
    RETRYABLE,
    SENT,
    Attempt,
    encode,
)

__all__ = ["Outbox", "OutboxMetrics", "OutboxNotifier"]

log = logging.getLogger(__name__)
NAME_CHARS = 80  # how much of a message's text names it in the log


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
