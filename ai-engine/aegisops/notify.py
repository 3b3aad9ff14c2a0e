"""Slack incoming webhook: one POST at a time, an in-order outbox, the URL never shown.

`SlackNotifier.attempt(body) -> Attempt` is one POST: `sent`, `permanent` (400/403/404/410,
any other 4xx, an unusable URL: retrying cannot help; `problem` holds Slack's error text such
as `channel_is_archived`) or `retryable` (429 with its `Retry-After`, 5xx, network errors).
requests' exceptions carry the URL, so only their type is ever put in `problem`.

`aegisops.outbox.Outbox` is how the engine talks to Slack: it queues messages and posts them
in order from one thread, through `attempt`.

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
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

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
