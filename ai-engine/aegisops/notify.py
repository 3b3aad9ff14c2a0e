"""Slack incoming webhook: Block Kit messages out, bounded retries, the URL never shown.

`SlackNotifier.send(payload) -> bool` posts one message. 429 and 5xx (and network errors)
are retried with backoff, honouring `Retry-After`, within `max_retries` and a total wait of
`max_retry_wait_seconds`; 400/403/404/410 (and any other 4xx) are permanent: one log line
with Slack's error text (`channel_is_archived`...), no retry. Without a webhook the notifier
is off: it says so once and `send` returns False. requests' exceptions carry the URL, so only
their type is ever logged. `send` never raises: an unusable URL (InvalidURL, urllib3's
LocationParseError...) or any other surprise is logged by type and the message dropped, never
retried. The whole send, posts and waits, is bounded by `deadline_seconds` (the CLI passes
min(max_retry_wait_seconds, poll_interval_seconds)), so a Slack outage cannot stall a pass.

The builders (`anomaly_message`, `action_message`, `resolved_message`) are pure: plain values
in, a payload with a `text` fallback and `blocks` out.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import requests

from aegisops.config import Secret, SlackConfig

log = logging.getLogger(__name__)

PERMANENT = frozenset({400, 403, 404, 410})
BACKOFF_SECONDS = 1.0  # first wait when Slack gives no Retry-After; doubles each retry
RESULT_SENT, RESULT_FAILED, RESULT_DISABLED = "sent", "failed", "disabled"
_PAST = {"scale_up": "scaled up", "scale_down": "scaled down"}


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
        try:
            body = json.dumps(payload, allow_nan=False, ensure_ascii=False).encode()
        except (TypeError, ValueError):
            log.error(
                "Slack message dropped: the payload is not valid JSON "
                "(NaN, Infinity or a type JSON cannot hold)"
            )
            return self._done(RESULT_FAILED)
        waited, started = 0.0, self._clock()
        attempts = self.config.max_retries + 1
        for attempt in range(1, attempts + 1):
            status, problem, retry_after = self._post(self._webhook, body, timeout=self._timeout())
            if 200 <= status < 300:
                return self._done(RESULT_SENT)
            if status < 0:
                log.error("%s; the message is dropped (not retried)", problem)
                return self._done(RESULT_FAILED)
            if status and not _retryable(status):
                log.error("%s; the message is dropped (not retried)", problem)
                return self._done(RESULT_FAILED)
            if attempt == attempts:
                tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
                log.error("%s; the message is dropped after %s", problem, tries)
                return self._done(RESULT_FAILED)
            wait = retry_after if retry_after is not None else BACKOFF_SECONDS * 2 ** (attempt - 1)
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


# --- messages ------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricLine:
    """One metric as seen now vs its baseline; direction "up"/"down" when it deviates."""

    metric: str
    value: float
    baseline: float | None = None
    direction: str | None = None


def metric_lines(
    *,
    values: Mapping[str, float],
    baseline: Mapping[str, float],
    directions: Mapping[str, str],
) -> tuple[MetricLine, ...]:
    """Zip an observation's values, baseline and deviation directions into lines."""
    return tuple(
        MetricLine(
            metric=metric,
            value=value,
            baseline=baseline.get(metric),
            direction=directions.get(metric),
        )
        for metric, value in values.items()
    )


def format_value(metric: str, value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    if metric.endswith("_seconds"):
        return f"{value * 1000:.0f} ms"
    if metric.endswith("_bytes"):
        return f"{value / 2**20:.1f} MiB"
    if metric == "rps":
        return f"{value:.2f} req/s"
    return f"{value:g}"


def describe_metrics(lines: Iterable[MetricLine]) -> str:
    """`rps 42.00 req/s (baseline 10.00 req/s) ▲ up`, one metric per line."""
    out = []
    for line in lines:
        text = f"{line.metric} {format_value(line.metric, line.value)}"
        if line.baseline is not None:
            text += f" (baseline {format_value(line.metric, line.baseline)})"
        if line.direction == "up":
            text += " ▲ up"
        elif line.direction == "down":
            text += " ▼ down"
        out.append(text)
    return "\n".join(out)


def anomaly_message(
    *,
    workload: str,
    score: float,
    threshold: float,
    metrics: Sequence[MetricLine],
    dry_run: bool,
) -> dict[str, Any]:
    """An anomaly was confirmed on `workload`."""
    summary = f"Anomaly on {workload}: score {score:.2f} (threshold {threshold:.2f})"
    fields = {
        "Workload": f"`{workload}`",
        "Anomaly score": f"{score:.2f} (threshold {threshold:.2f})",
    }
    return _message(
        title=f":rotating_light: Anomaly on {workload}",
        summary=summary,
        fields=fields,
        metrics=metrics,
        dry_run=dry_run,
    )


def action_message(
    *,
    workload: str,
    action: str,
    replicas_before: int,
    replicas_after: int,
    reason: str,
    score: float | None,
    threshold: float | None,
    metrics: Sequence[MetricLine],
    dry_run: bool,
) -> dict[str, Any]:
    """AegisOps acted (or, in dry-run, would have acted) on `workload`."""
    verb = action.replace("_", " ")
    done = f"would {verb}" if dry_run else _PAST.get(action, verb)
    icon = ":arrow_down:" if action == "scale_down" else ":arrow_up:"
    change = f"{replicas_before} -> {replicas_after} replicas"
    fields = {
        "Workload": f"`{workload}`",
        "Action": f"{action} ({'dry-run, not applied' if dry_run else 'applied'})",
        "Replicas": f"{replicas_before} → {replicas_after}",
        "Reason": reason,
    }
    if score is not None and threshold is not None:
        fields["Anomaly score"] = f"{score:.2f} (threshold {threshold:.2f})"
    return _message(
        title=f"{icon} {workload}: {done} {change}",
        summary=f"{workload}: {done} {change} ({reason})",
        fields=fields,
        metrics=metrics,
        dry_run=dry_run,
    )


def resolved_message(
    *,
    workload: str,
    duration_seconds: float | None,
    replicas: int | None,
    metrics: Sequence[MetricLine],
    dry_run: bool,
) -> dict[str, Any]:
    """The anomaly on `workload` is over."""
    fields = {"Workload": f"`{workload}`"}
    if duration_seconds is not None:
        fields["Lasted"] = _duration(duration_seconds)
    if replicas is not None:
        fields["Replicas"] = str(replicas)
    lasted = f" after {_duration(duration_seconds)}" if duration_seconds is not None else ""
    return _message(
        title=f":white_check_mark: Resolved on {workload}",
        summary=f"Resolved on {workload}{lasted}",
        fields=fields,
        metrics=metrics,
        dry_run=dry_run,
    )


def _message(
    *,
    title: str,
    summary: str,
    fields: Mapping[str, str],
    metrics: Sequence[MetricLine],
    dry_run: bool,
) -> dict[str, Any]:
    marker = "[DRY-RUN] " if dry_run else ""
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": (marker + title)[:150], "emoji": True},
        },
        {
            "type": "section",
            "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in fields.items()],
        },
    ]
    if metrics:
        blocks.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": "*Metrics vs baseline*\n```" + describe_metrics(metrics) + "```",
                },
            }
        )
    context = "AegisOps"
    if dry_run:
        context = "*DRY-RUN*: nothing was changed in the cluster · AegisOps"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    return {"text": f"{marker}AegisOps: {summary}", "blocks": blocks}


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"
