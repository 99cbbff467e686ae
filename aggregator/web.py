"""Serve the rendered output directory over HTTP: `aggregator serve` and the daemon's web server.

It serves what render wrote under `output_dir`, read-only, with the headers that
let browsers and feed readers revalidate cheaply (ETag, Last-Modified, 304) and
fetch text compressed (gzip). It is deliberately not a general web server: GET
and HEAD only, no directory listings, no dotfiles (render's half-written
temporary files are named `.<name>.*.tmp`), and no path can leave the root. Every
refusal is the same 404, so a client cannot probe what exists outside the root.

Given a database, it also answers `GET /search?q=...` with the results page that
`search_page` renders (read-only, one connection per request); without one, /search
is a file like any other. Apart from that it knows nothing of the store or the
templates: the caller passes the directory (and the database).
"""

from __future__ import annotations

import email.utils
import gzip
import html
import logging
import mimetypes
import os
import socket
import socketserver
import stat
import sys
import threading
import urllib.parse
from collections import OrderedDict
from collections.abc import Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import BinaryIO

from aggregator import __version__
from aggregator.errors import ServeError
from aggregator.models import SiteConfig
from aggregator.search_page import search_page

log = logging.getLogger(__name__)

#: How often the serving loop checks for shutdown(), in seconds: bounds how long shutdown() takes.
POLL_INTERVAL = 0.1
#: Seconds an idle or stalled client connection may hold its thread.
CLIENT_TIMEOUT = 30.0
#: Smaller text files are sent as they are: gzip would save a few bytes at best.
MIN_GZIP_BYTES = 1024
#: Larger files are sent uncompressed rather than read whole into memory.
MAX_GZIP_SOURCE_BYTES = 16 * 1024 * 1024
#: Compressed bodies up to this size are kept, so repeated requests do not recompress.
MAX_CACHED_GZIP_BYTES = 512 * 1024
#: Bound on the total size of that cache.
GZIP_CACHE_BYTES = 16 * 1024 * 1024

ALLOWED_METHODS = "GET, HEAD"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".atom": "application/atom+xml",
    ".rss": "application/rss+xml",
    ".json": "application/json",
    ".xml": "application/xml",
    ".opml": "text/x-opml",
    ".css": "text/css",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
}
JSON_FEED_NAME = "feed.json"
TAGS_FOLDER = "tags"
JSON_FEED_TYPE = "application/feed+json"
DEFAULT_TYPE = "application/octet-stream"
_COMPRESSIBLE = {"application/atom+xml", "application/rss+xml", "application/json", JSON_FEED_TYPE, "application/xml"}
# Sent on every response, error pages included. The pages have no JavaScript, so the
# policy forbids scripts outright; on feeds and other files it is harmless.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src https: http: data:; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
}
#: Where the search page answers when the server has a database.
SEARCH_PATH = "/search"
ERROR_PAGE = '<!doctype html>\n<html lang="en"><meta charset="utf-8"><title>{0}</title><h1>{0}</h1></html>\n'


class OutputServer:
    """A static file server for the output directory; binds on creation, serves on start()."""

    def __init__(
        self,
        root: Path,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        database: Path | None = None,
        site: SiteConfig | None = None,
    ) -> None:
        """Bind to (host, port) for `root`; with `database`, /search answers too (titled as `site`)."""
        try:
            self._httpd = _Server((host, port), os.path.realpath(root), database, site)
        except OSError as exc:
            reason = (exc.strerror or str(exc)).lower()
            raise ServeError(f"cannot listen on {_host_port(host, port)}: {reason}") from exc
        self._lock = threading.Lock()
        self._serving_thread: threading.Thread | None = None
        self._background: threading.Thread | None = None
        self._closed = False

    @property
    def url(self) -> str:
        """The base URL clients use, e.g. "http://127.0.0.1:8080/"."""
        host, port = self._httpd.server_address[:2]
        return f"http://{_host_port(str(host), int(port))}/"

    def start(self) -> None:
        """Serve in a daemon thread (the daemon's built-in server) and return at once."""
        thread = threading.Thread(target=self._run, name="aggregator-web", daemon=True)
        if not self._claim(thread):
            raise ServeError("the web server was shut down")
        self._background = thread
        thread.start()

    def serve_forever(self) -> None:
        """Serve in the calling thread until shutdown() (`aggregator serve`); closes the socket on exit."""
        if self._claim(threading.current_thread()):
            self._run()

    def _claim(self, thread: threading.Thread) -> bool:
        """Record the serving thread; False if shutdown() came first (e.g. an early SIGTERM)."""
        with self._lock:
            if self._serving_thread is not None:
                raise ServeError("the web server is already serving")
            self._serving_thread = thread
            return not self._closed

    def _run(self) -> None:
        log.info("serving %s at %s", self._httpd.root, self.url)
        try:
            self._httpd.serve_forever(poll_interval=POLL_INTERVAL)
        finally:
            self._httpd.server_close()

    def shutdown(self) -> None:
        """Stop serving within about POLL_INTERVAL and close the socket; safe to call twice.

        Safe from a signal handler running in the serving thread too: there the wait
        would deadlock, so the stop is requested from a helper thread instead.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            serving = self._serving_thread
        if serving is threading.current_thread():
            threading.Thread(target=self._httpd.shutdown, daemon=True).start()
            return
        if serving is not None:
            self._httpd.shutdown()  # returns once the serving loop has stopped
        if serving is not None and serving is self._background:
            # Wait for the thread's own close: a socket last released by a thread that
            # then exits is freed by the kernel later, and would still accept for a moment.
            serving.join(timeout=1.0)
        self._httpd.server_close()


class _Server(ThreadingHTTPServer):
    """The listening socket and what every request thread shares: the root and the gzip cache."""

    daemon_threads = True
    # socketserver's default backlog of 5 makes the 6th simultaneous client wait a second for a SYN retry.
    request_queue_size = 128

    def __init__(
        self, address: tuple[str, int], root: str, database: Path | None = None, site: SiteConfig | None = None
    ) -> None:
        self.root = root
        self.database = database
        self.site = site
        self.gzip_cache = _GzipCache(GZIP_CACHE_BYTES)
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's FQDN, a reverse DNS query that can
        # stall start-up for seconds and that nothing here uses.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that disconnects or stalls is routine: one DEBUG line, no traceback."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError | TimeoutError):
            log.debug("%s: connection dropped: %s", client_address, error)
        else:
            log.exception("error while serving %s", client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive: a reader fetching many tag feeds reuses one connection
    timeout = CLIENT_TIMEOUT

    def version_string(self) -> str:
        return f"aggregator/{__version__}"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        log.debug("%s %s", self.address_string(), format % args)

    def end_headers(self) -> None:
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        super().end_headers()

    def parse_request(self) -> bool:
        """Refuse every method but GET and HEAD with 405 before it reaches a do_* method."""
        if not super().parse_request():
            return False
        if self.command in ("GET", "HEAD"):
            return True
        self.close_connection = True  # its body, if any, was not read
        self.send_error(HTTPStatus.METHOD_NOT_ALLOWED)
        return False

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Every error is the same small HTML page, without the details the base class adds."""
        status = HTTPStatus(code)
        body = ERROR_PAGE.format(html.escape(f"{status.value} {status.phrase}")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache")
        if status is HTTPStatus.METHOD_NOT_ALLOWED:
            self.send_header("Allow", ALLOWED_METHODS)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        """GET and HEAD differ only in whether the body is written (see _send_file)."""
        url_path = self.path.split("?", 1)[0].split("#", 1)[0]  # query strings mean nothing to static files
        if url_path.lower().startswith(("http://", "https://")):  # absolute-form, which HTTP/1.1 allows
            url_path = urllib.parse.urlsplit(url_path).path
        if url_path == SEARCH_PATH and self.server.database is not None:
            self._send_search(self.path.split("?", 1)[1].split("#", 1)[0] if "?" in self.path else "")
            return
        segments = _safe_segments(url_path)
        found = None if segments is None else _locate(self.server.root, segments)
        if segments is None or found is None:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        file_path, is_directory = found
        if is_directory and not url_path.endswith("/"):
            # Relative links in a directory's index.html only work under the trailing slash.
            location = urllib.parse.quote("/" + "/".join(segments) + "/")
            self.send_response(HTTPStatus.MOVED_PERMANENTLY)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        try:
            file = open(file_path, "rb")  # noqa: SIM115 (closed below; served from this one handle)
        except OSError:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        with file:
            self._send_file(file, file_path, is_json_feed=_is_json_feed(segments))

    do_HEAD = do_GET  # noqa: N815 (the name http.server dispatches to)

    def _send_file(self, file: BinaryIO, file_path: str, is_json_feed: bool = False) -> None:
        """Send one open file: the handle pins this version even if render renames a new one in."""
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        content_type = JSON_FEED_TYPE if is_json_feed else _content_type(file_path)
        compress = (
            _is_text(content_type)
            and MIN_GZIP_BYTES < info.st_size <= MAX_GZIP_SOURCE_BYTES
            and _accepts_gzip(self.headers.get_all("Accept-Encoding") or [])
        )
        validator = f"{info.st_size:x}-{info.st_mtime_ns:x}"
        etag = f'"{validator}-gzip"' if compress else f'"{validator}"'
        modified = email.utils.formatdate(info.st_mtime, usegmt=True)
        not_modified = self._not_modified(validator, info.st_mtime)
        body = None
        if compress and not not_modified:
            key = (file_path, info.st_mtime_ns, info.st_size)
            body = self.server.gzip_cache.get(key)
            if body is None:
                body = gzip.compress(file.read(), compresslevel=6, mtime=0)
                self.server.gzip_cache.put(key, body)
        self.send_response(HTTPStatus.NOT_MODIFIED if not_modified else HTTPStatus.OK)
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", modified)
        self.send_header("Cache-Control", "no-cache")  # render rewrites these files: always revalidate
        self.send_header("Vary", "Accept-Encoding")
        if not_modified:
            self.end_headers()
            return
        self.send_header("Content-Type", content_type)
        if compress:
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(info.st_size if body is None else len(body)))
        self.end_headers()
        if self.command == "HEAD":
            return
        if body is not None:
            self.wfile.write(body)
        else:
            # Exactly the size announced, even if the file grew in place after fstat.
            remaining = info.st_size
            while remaining > 0 and (chunk := file.read(min(remaining, 64 * 1024))):
                self.wfile.write(chunk)
                remaining -= len(chunk)

    def _send_search(self, query_string: str) -> None:
        """The search page, generated per request: no validators, compressed when it pays."""
        assert self.server.database is not None
        try:
            page = search_page(self.server.database, query_string, self.server.site)
        except Exception:
            log.exception("search page failed for %r", query_string)
            self.send_error(HTTPStatus.INTERNAL_SERVER_ERROR)
            return
        body = page.body
        compress = len(body) > MIN_GZIP_BYTES and _accepts_gzip(self.headers.get_all("Accept-Encoding") or [])
        if compress:
            body = gzip.compress(body, compresslevel=6, mtime=0)
        self.send_response(page.status)
        self.send_header("Content-Type", CONTENT_TYPES[".html"])
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Vary", "Accept-Encoding")
        if compress:
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _not_modified(self, validator: str, mtime: float) -> bool:
        """If-None-Match (weak comparison, any representation) wins; else If-Modified-Since."""
        if_none_match = self.headers.get("If-None-Match")
        if if_none_match is not None:
            tags = {tag.strip().removeprefix("W/").strip('"') for tag in if_none_match.split(",")}
            return "*" in tags or validator in tags or f"{validator}-gzip" in tags
        if_modified_since = self.headers.get("If-Modified-Since")
        if if_modified_since is None:
            return False
        try:
            since = email.utils.parsedate_to_datetime(if_modified_since)
        except (TypeError, ValueError):
            return False
        # HTTP dates have whole seconds; the file's sub-second part must not make it "newer".
        return since.tzinfo is not None and int(mtime) <= since.timestamp()


class _GzipCache:
    """Compressed bodies keyed by (path, mtime_ns, size), least recently used evicted first."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._bytes = 0
        self._items: OrderedDict[tuple[str, int, int], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int, int]) -> bytes | None:
        with self._lock:
            body = self._items.get(key)
            if body is not None:
                self._items.move_to_end(key)
            return body

    def put(self, key: tuple[str, int, int], body: bytes) -> None:
        if len(body) > MAX_CACHED_GZIP_BYTES:
            return
        with self._lock:
            if key in self._items:
                return
            self._items[key] = body
            self._bytes += len(body)
            while self._bytes > self._max_bytes:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= len(evicted)


def _safe_segments(url_path: str) -> list[str] | None:
    """The decoded path segments, or None for anything that could name a file outside the root.

    Decodes once: a double-encoded `%252e%252e` becomes the literal name `%2e%2e`,
    which matches no file. Refuses `..`, dotfiles, backslashes and NUL after decoding.
    """
    if not url_path.startswith("/"):
        return None
    try:
        decoded = urllib.parse.unquote(url_path, errors="strict")
    except UnicodeDecodeError:
        return None
    if "\\" in decoded or "\x00" in decoded:
        return None
    segments = [segment for segment in decoded.split("/") if segment]
    if any(segment.startswith(".") for segment in segments):
        return None
    return segments


def _locate(root: str, segments: list[str]) -> tuple[str, bool] | None:
    """The real path of the file to send and whether the URL named a directory, or None.

    Resolves symlinks and requires the result inside the (real) root, so a link
    pointing outside is refused like a missing file.
    """
    target = os.path.realpath(os.path.join(root, *segments))
    is_directory = os.path.isdir(target)
    if is_directory:
        target = os.path.realpath(os.path.join(target, "index.html"))
    if not target.startswith(root.rstrip(os.sep) + os.sep) or not os.path.isfile(target):
        return None
    return target, is_directory


def _is_json_feed(segments: Sequence[str]) -> bool:
    """The merged JSON Feed and the tags' (`tags/<path>.json`), not any other .json file put there."""
    if not segments or not segments[-1].endswith(".json"):
        return False
    return list(segments) == [JSON_FEED_NAME] or (len(segments) > 1 and segments[0] == TAGS_FOLDER)


def _content_type(file_path: str) -> str:
    name = os.path.basename(file_path)
    known = CONTENT_TYPES.get(os.path.splitext(name)[1].lower())
    return known or mimetypes.guess_type(name)[0] or DEFAULT_TYPE


def _is_text(content_type: str) -> bool:
    return content_type.startswith("text/") or content_type in _COMPRESSIBLE


def _accepts_gzip(accept_encoding: list[str]) -> bool:
    """Whether Accept-Encoding allows gzip: named (or `*`) with a q-value above zero."""
    weights: dict[str, float] = {}
    for item in ",".join(accept_encoding).lower().split(","):
        coding, *params = (part.strip() for part in item.split(";"))
        quality = next((param[2:] for param in params if param.startswith("q=")), "1")
        try:
            weights[coding] = float(quality)
        except ValueError:
            weights[coding] = 0.0
    return next((weights[coding] > 0 for coding in ("gzip", "x-gzip", "*") if coding in weights), False)


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
