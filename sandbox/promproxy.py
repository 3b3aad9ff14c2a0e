"""A fault proxy in front of the real Prometheus, switchable at runtime.

    with PromProxy(prometheus.url) as proxy:
        proxy.url                          # http://127.0.0.1:PORT: give this to the engine
        proxy.set_mode("down")             # 503 + Prometheus's JSON error body
        proxy.set_mode("slow", seconds=3)  # wait, then forward
        proxy.set_mode("nan")              # query / query_range sample values all "NaN"
        proxy.set_mode("partial", deployment="aegisops-app")  # drop that deployment's series
        proxy.set_mode("partial", deployment="web", label="app")  # ... named by another label
        proxy.set_mode("ok")               # forward unchanged
        proxy.request_count                # requests received, whatever the mode

Every GET and POST (any path: /api/v1/*, /-/ready, ...) is forwarded with its query
string and body; the answer comes back with its status, Content-Type and body. `nan` and
`partial` rewrite only successful `/api/v1/query` and `/api/v1/query_range` answers
(vector, matrix and scalar results); other endpoints pass through. `down` answers every
path itself. Upstream unreachable: 502 with the same error shape.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

from sandbox.procs import Managed

MODES = ("ok", "down", "slow", "nan", "partial")
REWRITTEN = ("/api/v1/query", "/api/v1/query_range")
DOWN_BODY = {
    "status": "error",
    "errorType": "unavailable",
    "error": "sandbox PromProxy: Prometheus is down (mode 'down')",
}


@dataclass(frozen=True)
class Mode:
    """The proxy's behaviour: a name from MODES and its parameter, if any."""

    name: str = "ok"
    seconds: float = 0.0
    deployment: str = ""
    label: str = "deployment"  # the series label `partial` matches `deployment` against


def make_mode(name: str, **params: Any) -> Mode:
    """Validate `set_mode` arguments: slow needs `seconds`, partial needs `deployment`
    (and may name the `label` that holds it, by default `deployment`)."""
    needs = {"slow": {"seconds"}, "partial": {"deployment"}}.get(name, set())
    optional = {"partial": {"label"}}.get(name, set())
    if name not in MODES:
        raise ValueError(f"unknown mode {name!r}; one of {', '.join(MODES)}")
    if not needs <= set(params) <= needs | optional:
        wanted = ", ".join(sorted(needs)) or "no parameters"
        if optional:
            wanted += f" (optional: {', '.join(sorted(optional))})"
        raise ValueError(f"mode {name!r} takes {wanted}, got {sorted(params)}")
    if "label" in params and not params["label"]:
        raise ValueError(f"mode {name!r}: label must not be empty")
    return Mode(name=name, **params)


def rewrite(body: dict[str, Any], mode: Mode) -> dict[str, Any]:
    """A query answer as the mode makes it: every value "NaN", or the series whose
    `mode.label` is `mode.deployment` dropped."""
    data = body.get("data")
    if body.get("status") != "success" or not isinstance(data, dict):
        return body
    result: Any = data.get("result")
    if mode.name == "nan":
        if data.get("resultType") in ("scalar", "string"):
            result = [result[0], "NaN"]
        else:
            result = [_nan_series(series) for series in result]
    elif mode.name == "partial":
        result = [s for s in result if s.get("metric", {}).get(mode.label) != mode.deployment]
    return {**body, "data": {**data, "result": result}}


def _nan_series(series: dict[str, Any]) -> dict[str, Any]:
    if "value" in series:
        return {**series, "value": [series["value"][0], "NaN"]}
    return {**series, "values": [[t, "NaN"] for t, _ in series.get("values", [])]}


class PromProxy(Managed):
    """A threaded HTTP server on 127.0.0.1 forwarding to `upstream_url` per the mode."""

    def __init__(self, upstream_url: str, *, timeout: float = 30.0) -> None:
        self.upstream_url = upstream_url.rstrip("/")
        self.timeout = timeout
        self._mode = Mode()
        self._count = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("PromProxy is not running")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def request_count(self) -> int:
        with self._lock:
            return self._count

    def set_mode(self, mode: str, **params: Any) -> None:
        """Switch behaviour now: ok | down | slow (seconds=) | nan |
        partial (deployment=, label="deployment")."""
        self._mode = make_mode(mode, **params)

    def start(self) -> PromProxy:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="promproxy", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # ends any `slow` waits
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server, self._thread = None, None

    # -- one request ---------------------------------------------------------------------

    def answer(
        self, *, method: str, path: str, body: bytes, content_type: str = ""
    ) -> tuple[int, str, bytes]:
        """(status, content type, body) for one request under the current mode."""
        mode = self._mode
        with self._lock:
            self._count += 1
        if mode.name == "down":
            return 503, "application/json", json.dumps(DOWN_BODY).encode()
        if mode.name == "slow" and self._stopping.wait(mode.seconds):
            return 503, "application/json", json.dumps(DOWN_BODY).encode()
        try:
            upstream = requests.request(
                method,
                f"{self.upstream_url}{path}",
                data=body or None,
                headers={"Content-Type": content_type} if content_type else None,
                timeout=self.timeout,
            )
        except requests.RequestException as err:
            error = {"status": "error", "errorType": "unavailable", "error": f"upstream: {err}"}
            return 502, "application/json", json.dumps(error).encode()
        content_type = upstream.headers.get("Content-Type", "application/octet-stream")
        if mode.name in ("nan", "partial") and path.split("?", 1)[0] in REWRITTEN:
            try:
                rewritten = rewrite(upstream.json(), mode)
            except ValueError:
                return upstream.status_code, content_type, upstream.content
            return upstream.status_code, content_type, json.dumps(rewritten).encode()
        return upstream.status_code, content_type, upstream.content


def _handler(proxy: PromProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self._forward()

        def do_POST(self) -> None:
            self._forward()

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            status, content_type, payload = proxy.answer(
                method=self.command,
                path=self.path,
                body=body,
                content_type=self.headers.get("Content-Type", ""),
            )
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: tests read request_count

    return Handler
