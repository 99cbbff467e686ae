"""A real HTTP server on 127.0.0.1 that serves feed fixtures to the tests.

It speaks the parts of HTTP that feed fetching depends on: strong ETags and
Last-Modified with 304 answers, gzip (or brotli, or deflate) when asked,
redirects, any status and header, and a per-route delay. Every request is logged
so tests can assert what a client sent (conditional headers, User-Agent) and how
often it came, and `max_active` tells how many requests it was serving at once.

For misbehaving servers a route can also drip its body (or a whole raw response,
status line and headers included) a byte at a time, send an endless body, hang
without answering, close the connection without answering, or write a raw
response verbatim. Pass `tls=(certfile, keyfile)` to serve https.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import ssl
import threading
import time
import zlib
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

import brotli  # type: ignore[import-untyped]

ENDLESS_CHUNK = b"\0" * 65536
# How soon stop() returns: serve_forever checks for shutdown this often.
POLL_SECONDS = 0.02


@dataclass
class Route:
    body: bytes = b""
    content_type: str = "application/rss+xml; charset=utf-8"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    conditional: bool = True
    delay_seconds: float = 0.0
    last_modified: float = field(default_factory=time.time)
    # How a 200 body is compressed when the client accepts it: gzip, br, deflate or identity.
    compress: str = "gzip"
    # Send the body (or the raw response, headers and all) one byte at a time, this long apart.
    drip_seconds: float = 0.0
    # Send a chunked body of zeros that never ends (until the client goes away).
    endless: bool = False
    # Read the request and never answer (until the server stops).
    hang: bool = False
    # Read the request and close the connection without a word.
    close_without_answer: bool = False
    # Written verbatim as the whole response (status line, headers, body).
    raw: bytes | None = None


@dataclass(frozen=True)
class LoggedRequest:
    path: str
    headers: dict[str, str]
    status: int
    at: float = field(default_factory=time.monotonic)


class _BackloggedServer(ThreadingHTTPServer):
    # The default backlog of 5 makes the 6th of many simultaneous clients wait a second (SYN retry).
    request_queue_size = 128


class FeedServer:
    """Serve `Route`s by path; use as a context manager or call start/stop."""

    def __init__(self, tls: tuple[str, str] | None = None) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[LoggedRequest] = []
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd = _BackloggedServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
            self._scheme = "https"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(POLL_SECONDS,), daemon=True)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def url(self, path: str) -> str:
        return f"{self._scheme}://127.0.0.1:{self.port}{path}"

    def add(self, path: str, body: bytes | str = b"", **options: object) -> str:
        """Serve `body` at `path` (replacing what was there); returns the full URL."""
        data = body.encode("utf-8") if isinstance(body, str) else body
        self.routes[path] = Route(body=data, **options)  # type: ignore[arg-type]
        return self.url(path)

    def redirect(self, path: str, target: str, status: int = 301) -> str:
        return self.add(path, b"", status=status, headers={"Location": target}, conditional=False)

    def hits(self, path: str) -> list[LoggedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def start(self) -> FeedServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FeedServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _log(self, path: str, headers: dict[str, str], status: int) -> None:
        with self._lock:
            self.requests.append(LoggedRequest(path, headers, status))

    def _begin(self) -> None:
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)

    def _end(self) -> None:
        with self._lock:
            self.active -= 1

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def handle(self) -> None:
                # The client may go away mid-answer: the tests make it do so on purpose.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError, ssl.SSLError):
                    super().handle()

            def do_GET(self) -> None:
                # A request counts as active from its arrival until its answer starts, a
                # window that lies inside the client's, so max_active never overcounts.
                server._begin()
                self._active = True
                try:
                    self._serve()
                finally:
                    self._finish()

            def _finish(self) -> None:
                if self._active:
                    self._active = False
                    server._end()

            def _serve(self) -> None:
                path = self.path
                headers = {k.lower(): v for k, v in self.headers.items()}
                route = server.routes.get(path)
                if route is None:
                    self._send(404, b"not found", {"Content-Type": "text/plain"}, headers)
                    return
                if route.delay_seconds:
                    server._stopping.wait(route.delay_seconds)
                if self._misbehave(route, headers):
                    return
                extra = dict(route.headers)
                if route.status != 200:
                    self._send(route.status, route.body, {"Content-Type": route.content_type, **extra}, headers)
                    return
                etag = '"' + hashlib.sha1(route.body).hexdigest()[:16] + '"'
                last_modified = formatdate(route.last_modified, usegmt=True)
                if route.conditional:
                    extra.update({"ETag": etag, "Last-Modified": last_modified})
                    if headers.get("if-none-match") == etag or (
                        "if-none-match" not in headers and headers.get("if-modified-since") == last_modified
                    ):
                        self._send(304, b"", extra, headers)
                        return
                body = route.body
                accepted = headers.get("accept-encoding", "")
                if route.compress != "identity" and route.compress in accepted:
                    body = _compress(body, route.compress)
                    extra["Content-Encoding"] = route.compress
                self._send(200, body, {"Content-Type": route.content_type, **extra}, headers, route.drip_seconds)

            def _misbehave(self, route: Route, seen: dict[str, str]) -> bool:
                """Serve the routes that break the rules; False for an ordinary route."""
                if route.hang:
                    server._log(self.path, seen, 0)
                    self._finish()
                    server._stopping.wait()
                    self.close_connection = True
                elif route.close_without_answer:
                    server._log(self.path, seen, 0)
                    self.close_connection = True
                elif route.raw is not None:
                    server._log(self.path, seen, 0)
                    self._finish()
                    self._write(route.raw, route.drip_seconds)
                    self.close_connection = True
                elif route.endless:
                    self._send_endless(route, seen)
                else:
                    return False
                return True

            def _send_endless(self, route: Route, seen: dict[str, str]) -> None:
                server._log(self.path, seen, 200)
                self._finish()
                self.send_response(200)
                self.send_header("Content-Type", route.content_type)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                chunk = b"%x\r\n%s\r\n" % (len(ENDLESS_CHUNK), ENDLESS_CHUNK)
                while not server._stopping.is_set():
                    self.wfile.write(chunk)
                self.close_connection = True

            def _send(
                self, status: int, body: bytes, out: dict[str, str], seen: dict[str, str], drip: float = 0.0
            ) -> None:
                server._log(self.path, seen, status)
                self._finish()
                self.send_response(status)
                for name, value in out.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if status != 304:
                    self._write(body, drip)

            def _write(self, data: bytes, drip: float = 0.0) -> None:
                """Write `data` at once, or one byte every `drip` seconds until the server stops."""
                if not drip:
                    self.wfile.write(data)
                    return
                for index in range(len(data)):
                    if server._stopping.is_set():
                        self.close_connection = True
                        return
                    self.wfile.write(data[index : index + 1])
                    self.wfile.flush()
                    server._stopping.wait(drip)

        return Handler


def _compress(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.compress(body)
    if encoding == "br":
        return bytes(brotli.compress(body))
    if encoding == "deflate":
        return zlib.compress(body)
    raise ValueError(f"unknown encoding {encoding!r}")
