"""HTTP(S) plumbing: the threaded server, authentication, fault injection, RBAC gate,
body parsing, discovery routes, JSON and chunked watch responses, the request log."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import yaml

from sandbox.kubeapi import errors, resources
from sandbox.kubeapi.faults import Fault, FaultSet, RequestEntry, RequestLog
from sandbox.kubeapi.handlers import Handlers, Request, Response
from sandbox.kubeapi.rbac import Attributes, Authorizer, user_groups
from sandbox.kubeapi.routing import RequestInfo, parse

ANONYMOUS = "system:anonymous"
_PUBLIC_PATHS = ("/healthz", "/readyz", "/livez", "/version")
_BODY_VERBS = ("POST", "PUT", "PATCH")


def parse_body(raw: bytes, content_type: str) -> tuple[Any, errors.ApiError | None]:
    """(parsed body, error to answer with if unusable)."""
    if not raw:
        return None, None
    if "protobuf" in content_type:
        return raw, errors.ApiError(
            code=415,
            message=(
                "the body of the request was in an unknown format - accepted media types"
                " include: application/json, application/yaml (the AegisOps emulator does"
                " not speak protobuf)"
            ),
        )
    text = raw.decode("utf-8", errors="replace")
    try:
        if "yaml" in content_type:
            return yaml.safe_load(text), None
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return text, errors.bad_request(f"couldn't get version/kind; json parse error: {exc}")
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())
        return text, errors.bad_request(f"error converting YAML to JSON: yaml: {detail}")


class App:
    """Everything behind the socket; one instance per KubeAPIServer."""

    def __init__(
        self,
        *,
        handlers: Handlers,
        tokens: Callable[[], dict[str, str]],
        authorizer: Authorizer | None,
        faults: FaultSet,
        log: RequestLog,
    ) -> None:
        self.handlers = handlers
        self.tokens = tokens
        self.authorizer = authorizer
        self.faults = faults
        self.log = log

    def authenticate(self, header: str | None) -> str | None:
        """The user for a bearer token; no credentials at all -> system:anonymous (like
        kube's default --anonymous-auth; kubectl sends no token over plain HTTP); a
        wrong token or scheme -> None (401)."""
        if not header:
            return ANONYMOUS
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            return None
        return self.tokens().get(token.strip())

    def serve(self, h: _Handler) -> None:
        info = parse(h.command, h.path)
        content_type = (h.headers.get("Content-Type") or "").split(";")[0].strip()
        raw = h.read_body()
        body, body_error = parse_body(raw, content_type)
        user = self.authenticate(h.headers.get("Authorization"))
        entry = RequestEntry(
            seq=self.log.next_seq(),
            verb=info.verb if info.is_resource else "",
            method=h.command,
            path=info.path,
            query=dict(info.query),
            group=info.group,
            version=info.version,
            resource=info.plural,
            subresource=info.subresource,
            namespace=info.namespace,
            name=info.name,
            user=user,
            content_type=content_type or None,
            body=body,
        )
        self.log.append(entry)
        try:
            response = self._respond(h, info, entry, user, body, body_error, content_type)
        except errors.ApiError as exc:
            response = Response(exc.code, exc.status(), exc.headers)
        except Exception as exc:  # a bug in the emulator: answer like kube, keep serving
            message = f"Internal error occurred: {type(exc).__name__}: {exc}"
            response = Response(500, errors.ApiError(code=500, message=message).status())
        if response.code == -1:  # dropped connection
            entry.code = -1
            h.drop()
            return
        entry.code = response.code
        h.send(response)

    def _respond(
        self,
        h: _Handler,
        info: RequestInfo,
        entry: RequestEntry,
        user: str | None,
        body: Any,
        body_error: errors.ApiError | None,
        content_type: str,
    ) -> Response:
        if user is None and info.path not in _PUBLIC_PATHS:
            raise errors.unauthorized()
        fault = self.faults.take(verb=entry.verb or info.verb, path=info.path, user=user or "")
        if fault is not None:
            entry.fault = True
            answer = self._fault(fault, info, user or "")
            if answer is not None:
                return answer
            entry.fault = False  # latency only: served normally
        if not info.is_resource:
            return self._non_resource(info)
        if info.rt is None:
            raise errors.resource_not_found()
        self._authorize(info, entry, user or "")
        if body_error is not None:
            raise body_error
        if h.command in _BODY_VERBS and body is None:
            raise errors.bad_request("the request body is empty")
        req = Request(
            info=info,
            user=user or "",
            body=body,
            content_type=content_type,
            accept=h.headers.get("Accept") or "",
        )
        return self.handlers.handle(req)

    def _authorize(self, info: RequestInfo, entry: RequestEntry, user: str) -> None:
        if self.authorizer is None:
            return
        namespace = info.namespace or ""
        if info.rt is not None and not info.rt.namespaced and info.plural != "namespaces":
            namespace = ""
        if (
            info.rt is not None
            and info.rt.kind == "SelfSubjectAccessReview"
            and "system:authenticated" in user_groups(user)
        ):
            return  # every authenticated user may ask about itself (system:basic-user)
        attrs = Attributes(
            user=user,
            groups=user_groups(user),
            verb=info.verb,
            group=info.group or "",
            resource=info.rbac_resource,
            namespace=namespace,
            name=info.name or "",
        )
        decision = self.authorizer.decide(attrs)
        if not decision.allowed:
            raise errors.forbidden(
                rt=info.rt,
                resource=info.rbac_resource,
                name=info.name,
                user=user,
                verb=info.verb,
                namespace=namespace or None,
            )
        entry.rule = decision.rule

    def _fault(self, fault: Fault, info: RequestInfo, user: str) -> Response | None:
        if fault.latency:
            time.sleep(fault.latency)  # the injected delay itself
        if fault.drop:
            return Response(-1, None)
        if fault.status is None:
            return None
        error = _fault_error(fault, info, user)
        return Response(error.code, error.status(), error.headers)

    def _non_resource(self, info: RequestInfo) -> Response:
        doc = _discovery(info.path)
        if doc is None:
            raise errors.resource_not_found()
        return Response(200, doc)


def _fault_error(fault: Fault, info: RequestInfo, user: str) -> errors.ApiError:
    error = _fault_status(fault.status or 500, info, user)
    if fault.retry_after is not None:
        error.headers["Retry-After"] = str(fault.retry_after)
        error.details = {**(error.details or {}), "retryAfterSeconds": fault.retry_after}
    return error


def _fault_status(status: int, info: RequestInfo, user: str) -> errors.ApiError:
    rt = info.rt
    if status == 403:
        return errors.forbidden(
            rt=rt,
            resource=info.rbac_resource,
            name=info.name,
            user=user,
            verb=info.verb,
            namespace=info.namespace,
        )
    if status == 409 and rt is not None:
        return errors.conflict(rt, info.name or "")
    if status == 404 and rt is not None:
        return errors.not_found(rt, info.name or "")
    messages = {
        429: "Too many requests, please try again later.",
        500: "Internal error occurred: injected fault",
        503: "the server is currently unable to handle the request",
    }
    return errors.ApiError(code=status, message=messages.get(status, f"injected fault {status}"))


def _discovery(path: str) -> Any:
    parts = [p for p in path.split("/") if p]
    if path == "/api":
        return resources.api_versions()
    if path == "/apis":
        return resources.api_group_list()
    if path == "/version":
        return resources.SERVER_VERSION
    if path in ("/healthz", "/readyz", "/livez"):
        return "ok"
    if len(parts) == 2 and parts[0] == "api":
        return resources.api_resource_list(group="", version=parts[1])
    if len(parts) == 2 and parts[0] == "apis":
        return resources.api_group(parts[1])
    if len(parts) == 3 and parts[0] == "apis":
        return resources.api_resource_list(group=parts[1], version=parts[2])
    if path == "/openapi/v3":
        return resources.openapi_v3_root()
    if parts[:2] == ["openapi", "v3"] and len(parts) in (4, 5):
        group, version = ("", parts[3]) if parts[2] == "api" else (parts[3], parts[4])
        return resources.openapi_v3_gv(group=group, version=version)
    return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server: KubeHTTPServer

    def _any(self) -> None:
        self.server.app.serve(self)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _any

    def log_message(self, format: str, *args: Any) -> None:
        return  # the request log replaces stderr lines

    def read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            parts = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                parts.append(self.rfile.read(size))
                self.rfile.readline()  # the CRLF after each chunk
            while self.rfile.readline().strip():
                pass  # trailers, up to the empty line
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def send(self, response: Response) -> None:
        if response.stream is not None:
            self._stream(response)
            return
        if isinstance(response.body, str):
            payload, ctype = response.body.encode(), "text/plain; charset=utf-8"
        else:
            payload, ctype = json.dumps(response.body).encode(), "application/json"
        self.send_response(response.code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        for key, value in response.headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _stream(self, response: Response) -> None:
        assert response.stream is not None
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for event in response.stream:
                line = json.dumps(event).encode() + b"\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            self.close_connection = True


class KubeHTTPServer(ThreadingHTTPServer):
    """Threads per connection; closing the server shuts every open connection and joins."""

    daemon_threads = False
    block_on_close = True

    def __init__(self, app: App, ssl_context: ssl.SSLContext | None, *, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.app = app
        self.ssl_context = ssl_context
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()

    def finish_request(self, request: Any, client_address: Any) -> None:
        raw, conn = request, request
        with self._conns_lock:
            self._conns.add(raw)
        try:
            if self.ssl_context is not None:
                try:
                    raw.settimeout(10)
                    conn = self.ssl_context.wrap_socket(raw, server_side=True)
                    conn.settimeout(None)
                except (ssl.SSLError, OSError):
                    return
                with self._conns_lock:  # the raw socket's descriptor now belongs to conn
                    self._conns.discard(raw)
                    self._conns.add(conn)
            _Handler(conn, client_address, self)
        finally:
            with self._conns_lock:
                self._conns.discard(raw)
                self._conns.discard(conn)
            if conn is not raw:
                with contextlib.suppress(OSError):
                    conn.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        return  # client went away mid-request; nothing to report

    def close_all(self) -> None:
        self.shutdown()
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self.server_close()
