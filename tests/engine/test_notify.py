"""SlackNotifier over HTTP against the sandbox Slack receiver: one attempt, the synchronous send."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import pytest

from aegisops.config import Secret, SlackConfig
from aegisops.messages import MetricLine, alert_message, anomaly_message, resolved_message
from aegisops.notify import Attempt, SlackNotifier, encode
from sandbox.slack import WEBHOOK_PATH, SlackReceiver

PAYLOAD = {
    "text": "hello",
    "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}],
}


def slack_config(**overrides: float) -> SlackConfig:
    values: dict[str, float] = {
        "timeout_seconds": 2.0,
        "max_retries": 3,
        "max_retry_wait_seconds": 30.0,
        **overrides,
    }
    return SlackConfig(
        webhook_env="SLACK_WEBHOOK_URL",
        timeout_seconds=values["timeout_seconds"],
        max_retries=int(values["max_retries"]),
        max_retry_wait_seconds=values["max_retry_wait_seconds"],
        webhook=None,
    )


class Recorder:
    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self.results: list[str] = []


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
def caplog_aegisops(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG, logger="aegisops")
    yield caplog


def notifier(url: str, rec: Recorder, **overrides: float) -> SlackNotifier:
    return SlackNotifier(
        config=slack_config(**overrides),
        webhook=Secret(url),
        sleep=rec.sleeps.append,
        on_result=rec.results.append,
    )


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "aegisops.notify"]


def assert_url_hidden(caplog: pytest.LogCaptureFixture, url: str) -> None:
    assert WEBHOOK_PATH not in caplog.text
    assert url not in caplog.text


def test_a_message_is_posted_as_json_once(
    slack: SlackReceiver, rec: Recorder, caplog_aegisops: pytest.LogCaptureFixture
) -> None:
    assert notifier(slack.url, rec).send(PAYLOAD) is True
    received = slack.received()
    assert [(r.path, r.json, r.status) for r in received] == [(WEBHOOK_PATH, PAYLOAD, 200)]
    assert received[0].headers["content-type"] == "application/json; charset=utf-8"
    assert rec.sleeps == [] and rec.results == ["sent"]
    assert lines(caplog_aegisops) == []


def test_429_honours_retry_after(
    slack: SlackReceiver, rec: Recorder, caplog_aegisops: pytest.LogCaptureFixture
) -> None:
    slack.script(429, retry_after=2, times=2)
    assert notifier(slack.url, rec).send(PAYLOAD) is True
    assert [r.status for r in slack.received()] == [429, 429, 200]
    assert slack.messages() == [PAYLOAD]
    assert rec.sleeps == [2.0, 2.0]
    assert rec.results == ["sent"]
    assert lines(caplog_aegisops) == [
        ("WARNING", "Slack answered HTTP 429 rate_limited; retrying in 2 s (attempt 2 of 4)"),
        ("WARNING", "Slack answered HTTP 429 rate_limited; retrying in 2 s (attempt 3 of 4)"),
    ]
    assert_url_hidden(caplog_aegisops, slack.url)


def test_5xx_backs_off_exponentially_then_gives_up(
    slack: SlackReceiver, rec: Recorder, caplog_aegisops: pytest.LogCaptureFixture
) -> None:
    slack.script(500, times=4)
    assert notifier(slack.url, rec).send(PAYLOAD) is False
    assert [r.status for r in slack.received()] == [500, 500, 500, 500]
    assert rec.sleeps == [1.0, 2.0, 4.0]
    assert rec.results == ["failed"]
    assert lines(caplog_aegisops)[-1] == (
        "ERROR",
        "Slack answered HTTP 500 rollup_error; the message is dropped after 4 attempts",
    )
    assert_url_hidden(caplog_aegisops, slack.url)


def test_total_wait_is_bounded(
    slack: SlackReceiver, rec: Recorder, caplog_aegisops: pytest.LogCaptureFixture
) -> None:
    slack.script(429, retry_after=20, times=3)
    assert notifier(slack.url, rec, max_retry_wait_seconds=30).send(PAYLOAD) is False
    assert [r.status for r in slack.received()] == [429, 429]
    assert rec.sleeps == [20.0]
    assert lines(caplog_aegisops)[-1] == (
        "ERROR",
        "Slack answered HTTP 429 rate_limited; the message is dropped: waiting 20 s more "
        "would exceed the 30 s retry budget",
    )


@pytest.mark.parametrize(
    ("status", "text"),
    [
        (400, "invalid_payload"),
        (403, "action_prohibited"),
        (404, "channel_not_found"),
        (410, "channel_is_archived"),
    ],
)
def test_permanent_errors_are_logged_once_and_not_retried(
    slack: SlackReceiver,
    rec: Recorder,
    caplog_aegisops: pytest.LogCaptureFixture,
    status: int,
    text: str,
) -> None:
    slack.script(status, times=2)
    assert notifier(slack.url, rec).send(PAYLOAD) is False
    assert [r.status for r in slack.received()] == [status]
    assert rec.sleeps == [] and rec.results == ["failed"]
    assert lines(caplog_aegisops) == [
        ("ERROR", f"Slack answered HTTP {status} {text}; the message is dropped (not retried)")
    ]
    assert_url_hidden(caplog_aegisops, slack.url)


def test_a_payload_that_is_not_json_is_dropped_without_posting(
    slack: SlackReceiver, rec: Recorder, caplog_aegisops: pytest.LogCaptureFixture
) -> None:
    assert notifier(slack.url, rec).send({"text": "score", "score": float("nan")}) is False
    assert slack.received() == [] and rec.results == ["failed"]
    assert lines(caplog_aegisops) == [
        (
            "ERROR",
            "Slack message dropped: the payload is not valid JSON "
            "(NaN, Infinity or a type JSON cannot hold)",
        )
    ]


def test_no_retries_when_max_retries_is_zero(slack: SlackReceiver, rec: Recorder) -> None:
    slack.script(500, times=1)
    assert notifier(slack.url, rec, max_retries=0).send(PAYLOAD) is False
    assert len(slack.received()) == 1 and rec.sleeps == []


def test_network_errors_are_retried_and_never_show_the_url(
    rec: Recorder, caplog_aegisops: pytest.LogCaptureFixture
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}{WEBHOOK_PATH}"
    assert notifier(url, rec, max_retries=1).send(PAYLOAD) is False
    assert rec.sleeps == [1.0]
    assert lines(caplog_aegisops) == [
        (
            "WARNING",
            "cannot reach Slack (ConnectionError); retrying in 1 s (attempt 2 of 2)",
        ),
        ("ERROR", "cannot reach Slack (ConnectionError); the message is dropped after 2 attempts"),
    ]
    assert_url_hidden(caplog_aegisops, url)
    assert str(port) not in caplog_aegisops.text


def test_an_unusable_url_is_dropped_once_by_type_and_never_raises(
    rec: Recorder, caplog_aegisops: pytest.LogCaptureFixture
) -> None:
    # a mistyped host passes nothing on the wire: urllib3 raises LocationParseError
    url = f"https://hooks..slack.com{WEBHOOK_PATH}"
    assert notifier(url, rec).send(PAYLOAD) is False
    assert rec.sleeps == [] and rec.results == ["failed"]
    assert lines(caplog_aegisops) == [
        ("ERROR", "cannot post to Slack (LocationParseError); the message is dropped (not retried)")
    ]
    assert_url_hidden(caplog_aegisops, url)


def test_the_whole_send_is_bounded_by_the_deadline(
    slack: SlackReceiver, caplog_aegisops: pytest.LogCaptureFixture
) -> None:
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    slack.script(500, times=5)
    sender = SlackNotifier(
        config=slack_config(max_retries=5, timeout_seconds=2.0),
        webhook=Secret(slack.url),
        sleep=sleep,
        clock=lambda: now[0],
        deadline_seconds=4.0,
    )
    assert sender.send(PAYLOAD) is False
    # attempt 1, wait 1 s, attempt 2; a 2 s wait plus a 2 s attempt would end past 4 s
    assert sleeps == [1.0]
    assert [r.status for r in slack.received()] == [500, 500]
    level, message = lines(caplog_aegisops)[-1]
    assert level == "ERROR"
    assert message.endswith(
        "; the message is dropped: another attempt would exceed the 4 s deadline"
    )


def test_a_silent_server_times_out(
    rec: Recorder, caplog_aegisops: pytest.LogCaptureFixture
) -> None:
    # The kernel completes the connection; nobody ever answers.
    with socket.create_server(("127.0.0.1", 0)) as sock:
        url = f"http://127.0.0.1:{sock.getsockname()[1]}{WEBHOOK_PATH}"
        sent = notifier(url, rec, max_retries=0, timeout_seconds=0.2).send(PAYLOAD)
    assert sent is False
    assert lines(caplog_aegisops) == [
        ("ERROR", "Slack did not answer within 0.2 s; the message is dropped after 1 attempt")
    ]
    assert_url_hidden(caplog_aegisops, url)


def test_without_a_webhook_slack_is_off_and_says_so_once(
    rec: Recorder, caplog_aegisops: pytest.LogCaptureFixture
) -> None:
    off = SlackNotifier(
        config=slack_config(), webhook=None, sleep=rec.sleeps.append, on_result=rec.results.append
    )
    assert off.enabled is False
    assert off.send(PAYLOAD) is False
    assert off.send(PAYLOAD) is False
    assert rec.results == ["disabled", "disabled"]
    assert lines(caplog_aegisops) == [
        ("WARNING", "Slack is off: SLACK_WEBHOOK_URL is not set; alerts go to the log only")
    ]


def test_one_attempt_says_what_happened(slack: SlackReceiver, rec: Recorder) -> None:
    sender = notifier(slack.url, rec)
    body = encode(PAYLOAD)
    assert body is not None
    slack.script(429, retry_after=7)
    slack.script(500)
    slack.script(410)
    assert [sender.attempt(body) for _ in range(4)] == [
        Attempt("retryable", "Slack answered HTTP 429 rate_limited", 7.0),
        Attempt("retryable", "Slack answered HTTP 500 rollup_error"),
        Attempt("permanent", "Slack answered HTTP 410 channel_is_archived"),
        Attempt("sent"),
    ]
    assert slack.messages() == [PAYLOAD]
    assert rec.results == []  # attempt reports nothing: its caller decides


def test_backoff_doubles_unless_slack_says_when() -> None:
    assert [Attempt("retryable").wait(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert Attempt("retryable", retry_after=30.0).wait(3) == 30.0


def test_built_messages_are_accepted_by_the_receiver(slack: SlackReceiver, rec: Recorder) -> None:
    sender = notifier(slack.url, rec)
    metrics = (MetricLine(metric="rps", value=42.0, baseline=10.0, direction="up"),)
    built = [
        anomaly_message(workload="a/b", score=0.9, threshold=0.5, metrics=metrics, dry_run=True),
        resolved_message(
            workload="a/b", duration_seconds=None, replicas=None, metrics=(), dry_run=False
        ),
        alert_message(kind="prometheus_down", workload=None, reason="3 passes failed"),
    ]
    assert [sender.send(m) for m in built] == [True, True, True]
    assert slack.messages() == built
