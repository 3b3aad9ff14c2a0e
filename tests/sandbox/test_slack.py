"""The Slack receiver answers over real HTTP like Slack's incoming webhooks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from sandbox.procs import stop_process, wait_until
from sandbox.slack import SlackReceiver

ROOT = Path(__file__).resolve().parents[2]


def test_ok_records_path_headers_and_body(slack: SlackReceiver) -> None:
    assert slack.url == f"http://127.0.0.1:{slack.port}/services/T000/B000/XXXX"
    payload = {"text": "scaled aegisops/aegisops-app 1->2", "blocks": [{"type": "divider"}]}
    response = requests.post(slack.url, json=payload, timeout=5)
    assert (response.status_code, response.text) == (200, "ok")
    [record] = slack.received()
    assert record.path == "/services/T000/B000/XXXX"
    assert record.headers["content-type"] == "application/json"
    assert record.json == payload
    assert json.loads(record.body) == payload
    assert (record.status, record.reply) == (200, "ok")
    assert slack.messages() == [payload]


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, "invalid_payload"),
        (403, "action_prohibited"),
        (404, "channel_not_found"),
        (410, "channel_is_archived"),
        (500, "rollup_error"),
    ],
)
def test_scripted_errors_then_ok(slack: SlackReceiver, status: int, body: str) -> None:
    slack.script(status)
    first = requests.post(slack.url, json={"text": "a"}, timeout=5)
    second = requests.post(slack.url, json={"text": "b"}, timeout=5)
    assert (first.status_code, first.text, first.headers.get("Retry-After")) == (status, body, None)
    assert (second.status_code, second.text) == (200, "ok")
    assert [(r.json, r.status) for r in slack.received()] == [
        ({"text": "a"}, status),
        ({"text": "b"}, 200),
    ]
    assert slack.messages() == [{"text": "b"}]


def test_rate_limit_carries_retry_after(slack: SlackReceiver) -> None:
    slack.script(429, retry_after=3, times=2)
    answers = [requests.post(slack.url, json={"text": str(i)}, timeout=5) for i in range(3)]
    assert [(a.status_code, a.text, a.headers.get("Retry-After")) for a in answers] == [
        (429, "rate_limited", "3"),
        (429, "rate_limited", "3"),
        (200, "ok", None),
    ]


def test_payload_validation_like_slack(slack: SlackReceiver) -> None:
    bad_json = requests.post(
        slack.url, data=b"{not json", headers={"Content-Type": "application/json"}, timeout=5
    )
    no_text = requests.post(slack.url, json={"username": "aegisops"}, timeout=5)
    not_object = requests.post(slack.url, json=["text"], timeout=5)
    form = requests.post(slack.url, data={"payload": json.dumps({"text": "form"})}, timeout=5)
    wrong_path = requests.post(
        f"http://127.0.0.1:{slack.port}/hooks", json={"text": "x"}, timeout=5
    )
    assert [(r.status_code, r.text) for r in (bad_json, no_text, not_object, form, wrong_path)] == [
        (400, "invalid_payload"),
        (400, "no_text"),
        (400, "invalid_payload"),
        (200, "ok"),
        (404, "no_service"),
    ]
    assert slack.messages() == [{"text": "form"}]


def test_scripted_reply_is_not_spent_on_invalid_payload(slack: SlackReceiver) -> None:
    slack.script(500)
    requests.post(slack.url, json={}, timeout=5)
    answer = requests.post(slack.url, json={"text": "x"}, timeout=5)
    assert (answer.status_code, answer.text) == (500, "rollup_error")


def test_script_rejects_unknown_status(slack: SlackReceiver) -> None:
    with pytest.raises(ValueError, match=r"status 418: scriptable statuses are \[400, 403"):
        slack.script(418)
    with pytest.raises(ValueError, match="retry_after only goes with status 429"):
        slack.script(500, retry_after=2)


def test_stop_releases_the_port() -> None:
    receiver = SlackReceiver().start()
    port = receiver.port
    receiver.stop()
    with pytest.raises(requests.ConnectionError):
        requests.post(f"http://127.0.0.1:{port}/services/T/B/X", json={"text": "x"}, timeout=2)


def test_standalone_prints_received_messages(tmp_path: Path) -> None:
    log = tmp_path / "slack.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sandbox.slack", "--port", "0"],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    try:
        url = wait_until(
            lambda: next(
                (line.split(": ", 1)[1] for line in log.read_text().splitlines() if "URL" in line),
                None,
            ),
            timeout=10,
            message="the webhook URL line",
        )
        answer = requests.post(url, json={"text": "hello"}, timeout=5)
        assert (answer.status_code, answer.text) == (200, "ok")
        wait_until(lambda: '"text": "hello"' in log.read_text(), timeout=5, message="printed body")
    finally:
        assert stop_process(proc) == 0
    assert log.read_text().splitlines()[1:] == [
        "POST /services/T000/B000/XXXX -> 200 ok",
        "{",
        '  "text": "hello"',
        "}",
    ]


def test_standalone_port_in_use_is_a_clear_error(slack: SlackReceiver) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sandbox.slack", "--port", str(slack.port)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=20,
    )
    assert done.returncode == 1
    assert (
        done.stderr == f"error: cannot listen on 127.0.0.1:{slack.port}: Address already in use\n"
    )
