"""Log lines people can tail and machines can parse; HTTP paths (the webhook secret) kept out."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Iterator

import pytest

from aegisops.config import Secret, SlackConfig
from aegisops.logs import JsonFormatter, TextFormatter, setup_logging
from aegisops.notify import SlackNotifier
from sandbox.slack import WEBHOOK_PATH, SlackReceiver

CREATED = 1795687200.25  # 2026-11-26T10:00:00.25Z


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    quiet = {name: logging.getLogger(name).level for name in ("urllib3", "requests", "kubernetes")}
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    for name, old in quiet.items():
        logging.getLogger(name).setLevel(old)


def record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("aegisops.loop", logging.INFO, __file__, 1, msg, args, None)
    rec.created = CREATED
    rec.__dict__.update(extra)
    return rec


def test_text_line_names_the_workload() -> None:
    line = TextFormatter().format(
        record("scale_up %d->%d (rps up)", 1, 2, workload="aegisops/aegisops-app", score=0.9)
    )
    assert line == (
        "2026-11-26T10:00:00Z INFO aegisops.loop aegisops/aegisops-app: scale_up 1->2 (rps up)"
    )


def test_text_line_without_workload() -> None:
    assert TextFormatter().format(record("pass done: 3 workloads")) == (
        "2026-11-26T10:00:00Z INFO aegisops.loop: pass done: 3 workloads"
    )


def test_json_line_carries_the_extra_fields() -> None:
    line = JsonFormatter().format(
        record(
            "scale_up 1->2",
            workload="aegisops/aegisops-app",
            action="scale_up",
            score=0.91,
            dry_run=True,
            webhook=Secret("https://hooks.slack.com/services/T/B/SECRET"),
        )
    )
    assert json.loads(line) == {
        "ts": "2026-11-26T10:00:00Z",
        "level": "INFO",
        "logger": "aegisops.loop",
        "msg": "scale_up 1->2",
        "workload": "aegisops/aegisops-app",
        "action": "scale_up",
        "score": 0.91,
        "dry_run": True,
        "webhook": "***",
    }
    assert "\n" not in line


def test_json_line_with_an_exception() -> None:
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        rec = logging.LogRecord(
            "aegisops.loop",
            logging.ERROR,
            __file__,
            1,
            "pass failed",
            (),
            sys.exc_info(),
        )
    entry = json.loads(JsonFormatter().format(rec))
    assert entry["msg"] == "pass failed" and entry["level"] == "ERROR"
    assert entry["exc"].startswith("Traceback (most recent call last):")
    assert entry["exc"].endswith("ZeroDivisionError: division by zero")


@pytest.mark.usefixtures("restore_logging")
def test_setup_logging_installs_one_handler_and_writes_lines() -> None:
    first, out = io.StringIO(), io.StringIO()
    setup_logging(format="text", level="info", stream=first)
    setup_logging(format="json", level="INFO", stream=out)
    ours = [h for h in logging.getLogger().handlers if getattr(h, "aegisops", False)]
    assert len(ours) == 1
    log = logging.getLogger("aegisops.loop")
    log.debug("not shown")
    log.info("scored %s", "aegisops/app", extra={"workload": "aegisops/app", "score": 0.5})
    assert first.getvalue() == ""
    [line] = out.getvalue().splitlines()
    entry = json.loads(line)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", entry.pop("ts"))
    assert entry == {
        "level": "INFO",
        "logger": "aegisops.loop",
        "msg": "scored aegisops/app",
        "workload": "aegisops/app",
        "score": 0.5,
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"format": "xml"}, "log format: expected one of 'text', 'json', got 'xml'"),
        (
            {"level": "verbose"},
            "log level: expected one of 'debug', 'info', 'warning', 'error', got 'verbose'",
        ),
    ],
)
def test_setup_logging_rejects_bad_settings(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError) as info:
        setup_logging(**kwargs)
    assert str(info.value) == message


@pytest.mark.usefixtures("restore_logging")
def test_debug_logging_never_shows_the_webhook_path(slack: SlackReceiver) -> None:
    out = io.StringIO()
    setup_logging(format="text", level="debug", stream=out)
    assert logging.getLogger("urllib3").getEffectiveLevel() == logging.WARNING
    config = SlackConfig(
        webhook_env="SLACK_WEBHOOK_URL",
        timeout_seconds=2,
        max_retries=1,
        max_retry_wait_seconds=5,
        webhook=None,
    )
    slack.script(500, times=1)
    sender = SlackNotifier(config=config, webhook=Secret(slack.url), sleep=lambda s: None)
    assert sender.send({"text": "hi"}) is True
    text = out.getvalue()
    assert "Slack answered HTTP 500 rollup_error; retrying in 1 s (attempt 2 of 2)" in text
    assert WEBHOOK_PATH not in text and str(slack.port) not in text
