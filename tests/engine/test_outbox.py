"""The Slack outbox over HTTP against the sandbox Slack receiver: in order, bounded, closable."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from aegisops.config import ConfigError, Secret, SlackConfig, parse_config
from aegisops.notify import RETRYABLE, SENT, Attempt, SlackNotifier
from aegisops.outbox import Outbox
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
            if r.name in ("aegisops.notify", "aegisops.outbox") and r.levelno >= logging.INFO
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


class Scripted:
    """A notifier at the outbox's boundary: answers from `script` (then sent), records every
    body; while `hold` is set a POST waits for `go` once it is in flight (`in_flight`)."""

    enabled = True

    def __init__(self, *script: Attempt) -> None:
        self.config = slack_config()
        self.script = list(script)
        self.bodies: list[str] = []
        self.hold, self.in_flight, self.go = threading.Event(), threading.Event(), threading.Event()
        self.lock = threading.Lock()

    def attempt(self, body: bytes, *, timeout: float | None = None) -> Attempt:
        with self.lock:
            self.bodies.append(json.loads(body)["text"])
        if self.hold.is_set():
            self.in_flight.set()
            assert self.go.wait(timeout=30)
        return self.script.pop(0) if self.script else Attempt(SENT)


class Pause:
    """The outbox's `sleep`: blocks (`asleep` set) until `wake` is set."""

    def __init__(self) -> None:
        self.asleep, self.wake = threading.Event(), threading.Event()

    def __call__(self, seconds: float) -> None:
        self.asleep.set()
        assert self.wake.wait(timeout=30)


def scripted_outbox(h: Harness, notifier: Scripted, **kwargs: Any) -> Outbox:
    box = Outbox(notifier=notifier, metrics=h.metrics, **kwargs)
    h.outboxes.append(box)
    return box


def test_a_full_queue_drops_the_oldest_waiting_never_the_one_in_flight(h: Harness) -> None:
    slack = Scripted()
    slack.hold.set()
    box = scripted_outbox(h, slack, max_queue=3)
    box.send(message(1))
    assert slack.in_flight.wait(timeout=10)  # message 1 is being POSTed: it is not waiting
    for n in range(2, 7):
        box.send(message(n))
    assert box.pending() == 4  # the one in flight, and three waiting
    assert [line for line in h.lines() if line[0] == "ERROR"] == [
        ("ERROR", 'Slack outbox full (3 messages): dropped the oldest, "message 2"'),
        ("ERROR", 'Slack outbox full (3 messages): dropped the oldest, "message 3"'),
    ]
    assert h.sample("aegisops_slack_dropped_total", reason="queue_full") == 2.0
    assert h.sample("aegisops_slack_queue_depth") == 4.0
    slack.go.set()
    box.close(timeout=10)
    assert slack.bodies == ["message 1", "message 4", "message 5", "message 6"]
    assert h.sample("aegisops_slack_messages_total", result="sent") == 4.0


def test_a_full_queue_may_drop_the_head_while_it_waits_out_a_backoff(h: Harness) -> None:
    slack, pause = Scripted(Attempt(RETRYABLE, "Slack answered HTTP 500")), Pause()
    box = scripted_outbox(h, slack, max_queue=2, sleep=pause)
    box.send(message(1))
    assert pause.asleep.wait(timeout=10)  # message 1 failed once and waits for its retry
    box.send(message(2))
    box.send(message(3))
    assert h.lines()[-1] == (
        "ERROR",
        'Slack outbox full (2 messages): dropped the oldest, "message 1"',
    )
    pause.wake.set()
    box.close(timeout=10)
    assert slack.bodies == ["message 1", "message 2", "message 3"]  # 1 is not posted again
    assert h.sample("aegisops_slack_messages_total", result="sent") == 2.0


class DepthFailsOnce:
    """Outbox metrics whose queue-depth gauge raises the first time it is set to 0."""

    def __init__(self) -> None:
        self.results: list[str] = []
        self.failed = False

    def slack_message(self, result: str) -> None:
        self.results.append(result)

    def slack_queue_depth(self, depth: int) -> None:
        if depth == 0 and not self.failed:
            self.failed = True
            raise RuntimeError("gauge is broken")

    def slack_dropped(self, reason: str) -> None:
        raise AssertionError(reason)


def test_a_metrics_error_never_stops_the_posting_thread(h: Harness) -> None:
    slack, metrics = Scripted(), DepthFailsOnce()
    box = Outbox(notifier=slack, metrics=metrics)
    h.outboxes.append(box)
    box.send(message(1))  # posted, then the depth gauge (0) raises in the posting thread
    wait_until(lambda: metrics.failed and box.pending() == 0, timeout=10, message="message 1")
    box.send(message(2))
    box.close(timeout=10)
    assert slack.bodies == ["message 1", "message 2"]
    assert metrics.results == ["sent", "sent"]
    assert ("ERROR", "Slack outbox: cannot report the queue depth (RuntimeError)") in h.lines()


class ConfigFailsOnce(Scripted):
    """A notifier whose settings the posting thread cannot read once (an error outside
    `attempt`)."""

    def __init__(self) -> None:
        super().__init__()
        self.broken = True
        self._config = slack_config()

    @property  # type: ignore[override]
    def config(self) -> SlackConfig:
        if self.broken and threading.current_thread().name == "aegisops-slack":
            self.broken = False
            raise KeyError("timeout_seconds")
        return self._config

    @config.setter
    def config(self, value: SlackConfig) -> None:
        self._config = value


def test_an_unexpected_error_in_the_thread_retries_the_head(h: Harness) -> None:
    slack = ConfigFailsOnce()
    box = scripted_outbox(h, slack, sleep=h.sleeps.append)
    box.send(message(1))
    box.close(timeout=10)
    assert slack.bodies == ["message 1"]
    assert h.sleeps == [1.0]
    assert h.lines()[0] == ("ERROR", "Slack outbox: unexpected KeyError; trying again in 1 s")


def test_close_twice_and_concurrent_senders(h: Harness) -> None:
    slack = Scripted()
    box = scripted_outbox(h, slack)
    senders, each = 4, 25
    start = threading.Barrier(senders)

    def sender(k: int) -> None:
        start.wait(timeout=10)
        for n in range(each):
            box.send(message(k * 100 + n))

    threads = [threading.Thread(target=sender, args=(k,)) for k in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    box.close(timeout=10)
    box.close(timeout=10)  # idempotent: nothing more happens, nothing more is logged
    assert sorted(slack.bodies) == sorted(
        f"message {k * 100 + n}" for k in range(senders) for n in range(each)
    )
    for k in range(senders):  # each sender's messages in its own order
        mine = [b for b in slack.bodies if int(b.split()[1]) // 100 == k]
        assert mine == [f"message {k * 100 + n}" for n in range(each)]
    assert h.lines() == [("INFO", "Slack outbox closed: every message was posted")]
    assert h.sample("aegisops_slack_messages_total", result="sent") == senders * each


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
