"""A local stand-in for Slack incoming webhooks: records every POST, answers like Slack.

    with SlackReceiver() as slack:
        slack.url                      # http://127.0.0.1:PORT/services/T000/B000/XXXX
        slack.script(429, retry_after=1, times=2)   # next two POSTs answer 429
        ... engine posts ...
        slack.messages()               # JSON bodies answered 200 ok

Answers (body is plain text, as Slack's): 200 `ok`; 400 `invalid_payload` (unparsable body),
400 `no_text` (neither `text` nor `blocks`); scripted: 400 `invalid_payload`, 403
`action_prohibited`, 404 `channel_not_found`, 410 `channel_is_archived`, 429 `rate_limited`
with `Retry-After`, 500 `rollup_error`. Only POST to /services/... is served; other paths 404
`no_service`. Standalone: `python -m sandbox.slack --port 8099` prints what it receives.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from sandbox.procs import Managed

WEBHOOK_PATH = "/services/T000/B000/XXXX"
ERROR_BODIES = {
    400: "invalid_payload",
    403: "action_prohibited",
    404: "channel_not_found",
    410: "channel_is_archived",
    429: "rate_limited",
    500: "rollup_error",
}


@dataclass(frozen=True)
class Reply:
    """One scripted answer."""

    status: int
    body: str
    retry_after: int | None = None


@dataclass(frozen=True)
class Received:
    """One POST as it arrived, with the answer it got."""

    path: str
    headers: dict[str, str]
    body: bytes
    json: Any
    status: int
    reply: str


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    script: deque[Reply] = field(default_factory=deque)
    received: list[Received] = field(default_factory=list)
    on_receive: Callable[[Received], None] | None = None


def _parse(body: bytes, content_type: str) -> tuple[Any, str | None]:
    """(payload, error) like Slack: JSON body, or form-encoded `payload=<json>`."""
    try:
        text = body.decode("utf-8")
        if content_type.startswith("application/x-www-form-urlencoded"):
            text = parse_qs(text).get("payload", [""])[0]
        payload = json.loads(text)
    except (UnicodeDecodeError, ValueError):
        return None, "invalid_payload"
    if not isinstance(payload, dict):
        return payload, "invalid_payload"
    if not payload.get("text") and not payload.get("blocks"):
        return payload, "no_text"
    return payload, None


def _handler(state: _State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            payload, error = _parse(body, self.headers.get("Content-Type", ""))
            with state.lock:
                reply = self._answer(error, state)
                record = Received(
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                    json=payload,
                    status=reply.status,
                    reply=reply.body,
                )
                state.received.append(record)
            self._send(reply)
            if state.on_receive is not None:
                state.on_receive(record)

        def do_GET(self) -> None:
            on_webhook = self.path.startswith("/services/")
            self._send(Reply(400, "invalid_payload") if on_webhook else Reply(404, "no_service"))

        def _answer(self, error: str | None, state: _State) -> Reply:
            if not self.path.startswith("/services/"):
                return Reply(404, "no_service")
            if error is not None:
                return Reply(400, error)
            if state.script:
                return state.script.popleft()
            return Reply(200, "ok")

        def _send(self, reply: Reply) -> None:
            data = reply.body.encode()
            self.send_response(reply.status)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(data)))
            if reply.retry_after is not None:
                self.send_header("Retry-After", str(reply.retry_after))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


class SlackReceiver(Managed):
    """Threaded HTTP server on 127.0.0.1 that records webhook POSTs and plays scripted answers."""

    def __init__(
        self, *, port: int = 0, on_receive: Callable[[Received], None] | None = None
    ) -> None:
        self._state = _State(on_receive=on_receive)
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler(self._state))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None
        self.port = int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{WEBHOOK_PATH}"

    def start(self) -> SlackReceiver:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="slack-receiver",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def script(self, status: int, *, times: int = 1, retry_after: int | None = None) -> None:
        """Answer the next `times` valid POSTs with `status` and Slack's body for it."""
        if status not in ERROR_BODIES:
            raise ValueError(f"status {status}: scriptable statuses are {sorted(ERROR_BODIES)}")
        if retry_after is not None and status != 429:
            raise ValueError("retry_after only goes with status 429")
        if status == 429 and retry_after is None:
            retry_after = 1
        reply = Reply(status, ERROR_BODIES[status], retry_after)
        with self._state.lock:
            self._state.script.extend([reply] * times)

    def received(self) -> list[Received]:
        """Every POST so far, in arrival order."""
        with self._state.lock:
            return list(self._state.received)

    def messages(self) -> list[Any]:
        """The JSON payloads that were answered 200 ok (what a channel would show)."""
        return [r.json for r in self.received() if r.status == 200]

    def clear(self) -> None:
        with self._state.lock:
            self._state.received.clear()
            self._state.script.clear()


def _print_message(record: Received) -> None:
    if record.json is not None:
        payload = json.dumps(record.json, indent=2)
    else:
        payload = record.body.decode(errors="replace")
    print(f"POST {record.path} -> {record.status} {record.reply}\n{payload}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.slack",
        description="Local Slack incoming-webhook receiver: prints every message it gets.",
    )
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free)")
    args = parser.parse_args(argv)
    try:
        receiver = SlackReceiver(port=args.port, on_receive=_print_message)
    except OSError as err:
        print(f"error: cannot listen on 127.0.0.1:{args.port}: {err.strerror}", file=sys.stderr)
        return 1
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with receiver:
        print(f"webhook URL: {receiver.url}", flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
