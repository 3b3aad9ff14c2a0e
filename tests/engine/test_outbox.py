"""The Slack outbox over HTTP against the sandbox Slack receiver: in order, bounded, closable."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from aegisops.config import ConfigError, Secret, SlackConfig, parse_config
from aegisops.notify import Outbox, SlackNotifier
from aegisops.selfmetrics import SelfMetrics
from sandbox.procs import wait_until
from sandbox.slack import WEBHOOK_PATH, SlackReceiver

TARGET = {"namespace": "shop", "deployment": "api"}


def slack_config(*, max_retry_wait_seconds: float = 30.0) -> SlackConfig:
    return SlackConfig(
        webhook_env="SLACK_WEBHOOK_URL",
        timeout_seconds=2.0,
        max_retries=3,
        max_retry_wait_seconds=max_retry_wait_seconds,
        webhook=None,
    )


def message(n: int) -> dict[str, Any]:
    section = {"type": "section", "text": {"type": "mrkdwn", "text": str(n)}}
    return {"text": f"message {n}", "blocks": [section]}


class Harness:
    """Builds outboxes on one URL; closes them and checks the URL never reached the log."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self.caplog = caplog
        self.metrics = SelfMetrics(stale_after_seconds=60)
        self.sleeps: list[float] = []
        self.outboxes: list[Outbox] = []
        self.urls: list[str] = []

    def outbox(
        self,
        url: str | None,
        *,
        max_queue: int = 100,
        real_waits: bool = False,
        max_retry_wait_seconds: float = 30.0,
    ) -> Outbox:
        notifier = SlackNotifier(
            config=slack_config(max_retry_wait_seconds=max_retry_wait_seconds),
            webhook=None if url is None else Secret(url),
        )
        if url is not None:
            self.urls.append(url)
        box = Outbox(
            notifier=notifier,
            max_queue=max_queue,
            sleep=None if real_waits else self.sleeps.append,
            metrics=self.metrics,
        )
        self.outboxes.append(box)
        return box

    def lines(self) -> list[tuple[str, str]]:
        return [
            (r.levelname, r.getMessage())
            for r in self.caplog.records
            if r.name == "aegisops.notify" and r.levelno >= logging.INFO
        ]

    def sample(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, labels)


@pytest.fixture
def h(caplog: pytest.LogCaptureFixture) -> Iterator[Harness]:
    caplog.set_level(logging.DEBUG, logger="aegisops")
    harness = Harness(caplog)
    yield harness
    for box in harness.outboxes:
        box.close(timeout=0)
    text = "\n".join(f"{r.getMessage()} {r.args}" for r in caplog.records)
    assert WEBHOOK_PATH not in text
    for url in harness.urls:
        assert url not in text


def posted(slack: SlackReceiver, count: int) -> list[Any]:
    return wait_until(
        lambda: len(slack.messages()) >= count and slack.messages(),
        timeout=10,
        message=f"{count} messages posted",
    )


def test_order_is_kept_across_a_429_and_two_500s(slack: SlackReceiver, h: Harness) -> None:
    slack.script(429, retry_after=3)
    slack.script(500, times=2)
    box = h.outbox(slack.url)
    for n in range(1, 5):
        box.send(message(n))
    assert posted(slack, 4) == [message(n) for n in range(1, 5)]
    assert [r.status for r in slack.received()] == [429, 500, 500, 200, 200, 200, 200]
    assert [r.json["text"] for r in slack.received()[:4]] == ["message 1"] * 4
    assert h.sleeps == [3.0, 1.0, 2.0]
    assert h.lines() == [
        ("WARNING", "Slack answered HTTP 429 rate_limited; retrying in 3 s, kept first in line"),
        ("INFO", 'Slack message posted after 3 retries: "message 1"'),
    ]
    wait_until(lambda: box.pending() == 0, timeout=10, message="the queue drained")
    assert h.sample("aegisops_slack_messages_total", result="sent") == 4.0
    assert h.sample("aegisops_slack_queue_depth") == 0.0


def test_each_wait_is_capped(slack: SlackReceiver, h: Harness) -> None:
    slack.script(429, retry_after=60)
    slack.script(500, times=3)
    box = h.outbox(slack.url, max_retry_wait_seconds=1.5)
    box.send(message(1))
    assert posted(slack, 1) == [message(1)]
    assert h.sleeps == [1.5, 1.0, 1.5, 1.5]


@pytest.mark.parametrize(
    ("status", "text"), [(400, "invalid_payload"), (410, "channel_is_archived")]
)
def test_a_permanent_rejection_drops_that_message_only(
    slack: SlackReceiver, h: Harness, status: int, text: str
) -> None:
    slack.script(status)
    box = h.outbox(slack.url)
    for n in range(1, 4):
        box.send(message(n))
    assert posted(slack, 2) == [message(2), message(3)]
    assert [r.status for r in slack.received()] == [status, 200, 200]
    assert h.sleeps == []
    assert h.lines() == [
        (
            "ERROR",
            f"Slack answered HTTP {status} {text}; the message is dropped (not retried): "
            '"message 1"',
        )
    ]
    assert h.sample("aegisops_slack_dropped_total", reason="permanent") == 1.0
    assert h.sample("aegisops_slack_messages_total", result="failed") == 1.0


def test_a_full_queue_drops_the_oldest(slack: SlackReceiver, h: Harness) -> None:
    slack.script(500, times=50)
    box = h.outbox(slack.url, max_queue=3, real_waits=True)
    for n in range(1, 6):
        box.send(message(n))
    assert box.pending() == 3
    assert [line for line in h.lines() if line[0] == "ERROR"] == [
        ("ERROR", 'Slack outbox full (3 messages): dropped the oldest, "message 1"'),
        ("ERROR", 'Slack outbox full (3 messages): dropped the oldest, "message 2"'),
    ]
    assert h.sample("aegisops_slack_dropped_total", reason="queue_full") == 2.0
    assert h.sample("aegisops_slack_queue_depth") == 3.0
    # the first POST (of message 1 or 2) was answered 500: the thread waits 1 s before the next
    wait_until(lambda: slack.received(), timeout=10, message="the first POST")
    slack.clear()  # Slack recovers: what is left goes out in order
    assert posted(slack, 3) == [message(3), message(4), message(5)]


def test_close_with_a_dead_receiver_returns_and_counts_what_is_left(h: Harness) -> None:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}{WEBHOOK_PATH}"
    box = h.outbox(url, real_waits=True)
    for n in range(1, 4):
        box.send(message(n))
    wait_until(lambda: h.lines(), timeout=10, message="the first failed attempt")
    box.close(timeout=0.5)
    assert box.pending() == 3
    assert h.lines()[0] == (
        "WARNING",
        "cannot reach Slack (ConnectionError); retrying in 1 s, kept first in line",
    )
    assert h.lines()[-1] == ("WARNING", "Slack outbox closed: 3 messages left unsent")
    assert str(port) not in h.caplog.text


def test_close_does_not_retry_before_retry_after(slack: SlackReceiver, h: Harness) -> None:
    slack.script(429, retry_after=30)
    box = h.outbox(slack.url, real_waits=True)
    box.send(message(1))
    wait_until(lambda: slack.received(), timeout=10, message="the first POST")
    box.close(timeout=1)
    assert [r.status for r in slack.received()] == [429]
    assert h.lines()[-1] == ("WARNING", "Slack outbox closed: 1 message left unsent")


def test_close_flushes_what_is_queued(slack: SlackReceiver, h: Harness) -> None:
    slack.script(500)
    box = h.outbox(slack.url, real_waits=True)
    for n in range(1, 4):
        box.send(message(n))
    box.close(timeout=10)
    assert slack.messages() == [message(1), message(2), message(3)]
    assert h.lines()[-1] == ("INFO", "Slack outbox closed: every message was posted")
    box.send(message(4))
    assert h.lines()[-1] == ("ERROR", 'Slack outbox is closed: message dropped, "message 4"')


def test_send_never_raises(slack: SlackReceiver, h: Harness) -> None:
    box = h.outbox(slack.url)
    box.send({"text": "score", "score": float("nan")})
    box.send(None)  # type: ignore[arg-type]
    box.send(message(1))
    assert posted(slack, 1) == [message(1)]
    assert h.lines() == [
        (
            "ERROR",
            "Slack message dropped: the payload is not valid JSON "
            "(NaN, Infinity or a type JSON cannot hold)",
        ),
        ("ERROR", "Slack message dropped: unexpected AttributeError"),
    ]


def test_without_a_webhook_send_does_nothing(h: Harness) -> None:
    box = h.outbox(None)
    box.send(message(1))
    box.send(message(2))
    box.close(timeout=1)
    assert box.pending() == 0
    assert h.lines() == [
        ("WARNING", "Slack is off: SLACK_WEBHOOK_URL is not set; alerts go to the log only")
    ]
    assert h.sample("aegisops_slack_messages_total", result="disabled") == 2.0


def test_max_queue_is_configured_and_validated() -> None:
    assert parse_config({"targets": [TARGET]}, env={}).slack.max_queue == 100
    raw = {"targets": [TARGET], "slack": {"max_queue": 3}}
    assert parse_config(raw, env={}).slack.max_queue == 3
    with pytest.raises(ConfigError) as info:
        parse_config({"targets": [TARGET], "slack": {"max_queue": 0}}, env={})
    assert str(info.value) == "slack.max_queue: must be >= 1, got 0"
    with pytest.raises(ValueError) as bad:
        Outbox(notifier=SlackNotifier(config=slack_config(), webhook=None), max_queue=0)
    assert str(bad.value) == "max_queue must be >= 1, got 0"
