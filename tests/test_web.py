"""web: the output directory served by a real OutputServer on 127.0.0.1 (port 0).

Requests go through http.client, which sends the path exactly as written, so
traversal attempts reach the server unnormalized. A secret `feeds.yaml` sits beside
(outside) the served root; every response body is recorded and checked not to
contain it.
"""

from __future__ import annotations

import gzip
import http.client
import logging
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path

import pytest

from aggregator.errors import AggregatorError
from aggregator.web import OutputServer

SECRET = b"secret: do-not-serve-5f1c2a"
INDEX = b"<!doctype html><title>Today</title><p>Crypto News Digest</p>\n"
ATOM = (
    b'<?xml version="1.0" encoding="utf-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom">\n'
    + (b"  <entry><title>SEC sues Binance</title></entry>\n" * 80)
    + b"</feed>\n"
)
JSON_FEED = b'{"version": "https://jsonfeed.org/version/1.1", "title": "Crypto News Digest", "items": []}\n'


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


@dataclass
class Client:
    """Talks to one server and keeps every body it received, for the secret check."""

    port: int
    bodies: list[bytes] = field(default_factory=list)

    def request(self, path: str, method: str = "GET", headers: dict[str, str] | None = None) -> Response:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.putrequest(method, path, skip_host=False, skip_accept_encoding=True)
            for name, value in (headers or {}).items():
                connection.putheader(name, value)
            connection.endheaders()
            answer = connection.getresponse()
            body = answer.read()
        finally:
            connection.close()
        self.bodies.append(body)
        return Response(answer.status, answer.headers, body)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "feeds.yaml").write_bytes(SECRET)
    public = tmp_path / "public"
    (public / "digest").mkdir(parents=True)
    (public / "tags" / "blockchain").mkdir(parents=True)
    (public / "index.html").write_bytes(INDEX)
    (public / "digest" / "index.html").write_bytes(INDEX)
    (public / "digest" / "2024-06-05.html").write_bytes(INDEX)
    (public / "feed.atom").write_bytes(ATOM)
    (public / "feed.json").write_bytes(JSON_FEED)
    (public / "tags" / "blockchain" / "binance.atom").write_bytes(ATOM)
    (public / "tags" / "blockchain" / "binance.json").write_bytes(b"{}")
    (public / ".feed.atom.x1y2.tmp").write_bytes(b"half a feed")
    (public / "leak.yaml").symlink_to(tmp_path / "feeds.yaml")
    (public / "outside").symlink_to(tmp_path)
    return public


@pytest.fixture
def server(root: Path) -> Iterator[OutputServer]:
    output_server = OutputServer(root, port=0)
    output_server.start()
    yield output_server
    output_server.shutdown()


@pytest.fixture
def client(server: OutputServer) -> Iterator[Client]:
    port = int(server.url.rsplit(":", 1)[1].rstrip("/"))
    recording = Client(port)
    yield recording
    assert all(SECRET not in body for body in recording.bodies)


def test_url_names_the_bound_port(server: OutputServer, client: Client) -> None:
    assert server.url == f"http://127.0.0.1:{client.port}/"
    with urllib.request.urlopen(server.url, timeout=10) as answer:
        assert answer.read() == INDEX


def test_200_has_validators_and_etag_revalidates_to_304(client: Client) -> None:
    first = client.request("/feed.atom")
    assert first.status == 200
    assert first.body == ATOM
    etag = first.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"')
    assert first.headers["Last-Modified"].endswith("GMT")
    assert first.headers["Cache-Control"] == "no-cache"
    assert first.headers["Vary"] == "Accept-Encoding"
    assert first.headers["Content-Length"] == str(len(ATOM))

    again = client.request("/feed.atom", headers={"If-None-Match": etag})
    assert (again.status, again.body) == (304, b"")
    assert again.headers["ETag"] == etag
    listed = client.request("/feed.atom", headers={"If-None-Match": f'"other", W/{etag}'})
    assert listed.status == 304
    stale = client.request("/feed.atom", headers={"If-None-Match": '"other"'})
    assert (stale.status, stale.body) == (200, ATOM)


def test_etag_changes_when_the_file_is_replaced(root: Path, client: Client) -> None:
    etag = client.request("/feed.json").headers["ETag"]
    (root / "feed.json").write_bytes(JSON_FEED + b" ")
    changed = client.request("/feed.json", headers={"If-None-Match": etag})
    assert changed.status == 200
    assert changed.headers["ETag"] != etag


def test_if_modified_since(root: Path, client: Client) -> None:
    mtime = (root / "feed.atom").stat().st_mtime
    at_mtime = client.request("/feed.atom", headers={"If-Modified-Since": formatdate(mtime, usegmt=True)})
    assert (at_mtime.status, at_mtime.body) == (304, b"")
    older = client.request("/feed.atom", headers={"If-Modified-Since": formatdate(mtime - 60, usegmt=True)})
    assert older.status == 200
    garbage = client.request("/feed.atom", headers={"If-Modified-Since": "yesterday"})
    assert garbage.status == 200


def test_gzip_when_asked(client: Client) -> None:
    packed = client.request("/feed.atom", headers={"Accept-Encoding": "br;q=1.0, gzip;q=0.8"})
    assert packed.headers["Content-Encoding"] == "gzip"
    assert packed.headers["Content-Length"] == str(len(packed.body))
    assert len(packed.body) < len(ATOM)
    assert gzip.decompress(packed.body) == ATOM
    assert client.request("/feed.atom", headers={"Accept-Encoding": "gzip"}).body == packed.body

    etag = packed.headers["ETag"]
    assert etag != client.request("/feed.atom").headers["ETag"]
    revalidated = client.request("/feed.atom", headers={"Accept-Encoding": "gzip", "If-None-Match": etag})
    assert revalidated.status == 304


@pytest.mark.parametrize("accept_encoding", [None, "identity", "gzip;q=0", "br", "*;q=0", "gzip;q=0, *"])
def test_no_gzip_when_not_asked(client: Client, accept_encoding: str | None) -> None:
    headers = {} if accept_encoding is None else {"Accept-Encoding": accept_encoding}
    answer = client.request("/feed.atom", headers=headers)
    assert "Content-Encoding" not in answer.headers
    assert answer.body == ATOM


def test_small_files_are_not_gzipped(client: Client) -> None:
    answer = client.request("/index.html", headers={"Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in answer.headers
    assert answer.body == INDEX


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/feed.atom", "application/atom+xml"),
        ("/tags/blockchain/binance.atom", "application/atom+xml"),
        ("/index.html", "text/html; charset=utf-8"),
        ("/digest/2024-06-05.html", "text/html; charset=utf-8"),
        ("/feed.json", "application/feed+json"),
        ("/tags/blockchain/binance.json", "application/feed+json"),
    ],
)
def test_content_types(client: Client, path: str, content_type: str) -> None:
    answer = client.request(path)
    assert answer.status == 200
    assert answer.headers["Content-Type"] == content_type


def test_other_types(root: Path, client: Client) -> None:
    for name in ("export.json", "opml.xml", "feed.rss", "feeds.opml", "notes.txt", "blob"):
        (root / name).write_bytes(b"x")
    assert client.request("/feed.rss").headers["Content-Type"] == "application/rss+xml"
    assert client.request("/feeds.opml").headers["Content-Type"] == "text/x-opml"
    assert client.request("/export.json").headers["Content-Type"] == "application/json"
    assert client.request("/opml.xml").headers["Content-Type"] == "application/xml"
    assert client.request("/notes.txt").headers["Content-Type"] == "text/plain; charset=utf-8"
    assert client.request("/blob").headers["Content-Type"] == "application/octet-stream"


def test_security_headers(client: Client) -> None:
    for path in ("/", "/feed.atom", "/missing.html"):
        headers = client.request(path).headers
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "no-referrer"
        assert "default-src 'none'" in headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]


def test_root_and_directories_serve_their_index(client: Client) -> None:
    assert client.request("/").body == INDEX
    assert client.request("/?utm_source=reader").body == INDEX
    assert client.request("/digest/").body == INDEX
    moved = client.request("/digest?x=1")
    assert moved.status == 301
    assert moved.headers["Location"] == "/digest/"


def test_directory_without_index_is_404_not_a_listing(client: Client) -> None:
    for path in ("/tags/", "/tags", "/tags/blockchain/"):
        answer = client.request(path)
        assert answer.status == 404
        assert b"binance" not in answer.body


def test_missing_file_is_a_small_html_404(client: Client) -> None:
    answer = client.request("/digest/1999-01-01.html")
    assert answer.status == 404
    assert answer.headers["Content-Type"] == "text/html; charset=utf-8"
    assert b"404 Not Found" in answer.body
    assert answer.headers["Content-Length"] == str(len(answer.body))


def test_query_string_is_ignored(client: Client) -> None:
    assert client.request("/feed.atom?since=2024-06-01#top").body == ATOM


def test_absolute_form_request_target(client: Client) -> None:
    assert client.request(f"http://127.0.0.1:{client.port}/feed.atom?x=1").body == ATOM


def test_without_a_database_search_is_a_file_like_any_other(root: Path, client: Client) -> None:
    # The search page itself is tested in test_search.py; a server given no database has none.
    assert client.request("/search?q=binance").status == 404
    (root / "search").write_bytes(b"a file named search")
    assert client.request("/search?q=binance").body == b"a file named search"


@pytest.mark.parametrize(
    "path",
    [
        "/../feeds.yaml",
        "/digest/../../feeds.yaml",
        "/%2e%2e/feeds.yaml",
        "/%2E%2E%2Ffeeds.yaml",
        "/..%2ffeeds.yaml",
        "/digest/..%2f..%2ffeeds.yaml",
        "/%252e%252e/feeds.yaml",
        "/%252e%252e%252ffeeds.yaml",
        "/..\\feeds.yaml",
        "/%5c..%5cfeeds.yaml",
        "/..%5cfeeds.yaml",
        "/feed.atom%00.html",
        "/%00",
        "/%ff%fe",
        "//feeds.yaml",
        "http://127.0.0.1/../feeds.yaml",
        "http://127.0.0.1/%2e%2e/feeds.yaml",
        "feeds.yaml",
        "/leak.yaml",
        "/outside/feeds.yaml",
        "/.feed.atom.x1y2.tmp",
    ],
)
def test_nothing_outside_the_root_or_hidden_is_served(client: Client, path: str) -> None:
    answer = client.request(path)
    assert answer.status == 404
    assert SECRET not in answer.body


def test_symlink_inside_the_root_is_followed(root: Path, client: Client) -> None:
    (root / "latest.html").symlink_to(root / "digest" / "2024-06-05.html")
    assert client.request("/latest.html").body == INDEX


def test_head_has_headers_but_no_body(client: Client) -> None:
    for accept_encoding in ("identity", "gzip"):
        get = client.request("/feed.atom", headers={"Accept-Encoding": accept_encoding})
        head = client.request("/feed.atom", method="HEAD", headers={"Accept-Encoding": accept_encoding})
        assert head.status == 200
        assert head.body == b""
        for name in ("Content-Length", "Content-Type", "ETag", "Last-Modified"):
            assert head.headers[name] == get.headers[name]


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PROPFIND"])
def test_other_methods_are_405(client: Client, method: str) -> None:
    answer = client.request("/feed.atom", method=method)
    assert answer.status == 405
    assert answer.headers["Allow"] == "GET, HEAD"


def test_keep_alive_serves_several_requests_on_one_connection(client: Client) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", client.port, timeout=10)
    try:
        for path, body in [("/feed.atom", ATOM), ("/missing", None), ("/", INDEX)]:
            connection.request("GET", path)
            answer = connection.getresponse()
            data = answer.read()
            assert body is None or data == body
    finally:
        connection.close()


def test_a_reader_never_sees_half_a_file_while_render_replaces_it(root: Path, client: Client) -> None:
    versions = {b"A" * 200_000, b"B" * 300_000}
    for version in versions:
        (root / "big.txt").write_bytes(version)
    stop = threading.Event()

    def rewrite() -> None:
        while not stop.is_set():
            for version in versions:
                (root / ".big.txt.tmp").write_bytes(version)
                os.replace(root / ".big.txt.tmp", root / "big.txt")

    writer = threading.Thread(target=rewrite, daemon=True)
    writer.start()
    try:
        for _ in range(40):
            assert client.request("/big.txt", headers={"Accept-Encoding": "gzip"}).status == 200
            answer = client.request("/big.txt")
            assert answer.body in versions
    finally:
        stop.set()
        writer.join(timeout=5)


def test_client_that_disconnects_gets_no_traceback(
    root: Path, client: Client, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG, logger="aggregator.web")
    (root / "large.bin").write_bytes(b"\0" * (8 * 1024 * 1024))
    with socket.create_connection(("127.0.0.1", client.port), timeout=10) as raw:
        raw.sendall(b"GET /large.bin HTTP/1.1\r\nHost: localhost\r\n\r\n")
        raw.recv(1024)
    deadline = time.monotonic() + 10
    while not any("connection dropped" in record.getMessage() for record in caplog.records):
        assert time.monotonic() < deadline, "the server never noticed the client leaving"
        time.sleep(0.02)
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert "Traceback" not in capfd.readouterr().err


def test_requests_are_logged_at_debug_not_printed(
    client: Client, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG, logger="aggregator.web")
    client.request("/feed.atom")
    client.request("/missing")
    messages = [record.getMessage() for record in caplog.records if record.name == "aggregator.web"]
    assert any("/feed.atom" in message and "200" in message for message in messages)
    assert any("/missing" in message and "404" in message for message in messages)
    assert capfd.readouterr().err == ""


def test_second_server_on_the_same_port_is_a_clear_error(root: Path, client: Client) -> None:
    with pytest.raises(AggregatorError, match=rf"cannot listen on 127\.0\.0\.1:{client.port}: address already in use"):
        OutputServer(root, port=client.port)


def test_shutdown_is_quick_and_closes_the_socket(root: Path) -> None:
    output_server = OutputServer(root, port=0)
    output_server.start()
    with urllib.request.urlopen(output_server.url, timeout=10) as answer:
        assert answer.status == 200
    started = time.monotonic()
    output_server.shutdown()
    assert time.monotonic() - started < 1.0
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(output_server.url, timeout=2)
    output_server.shutdown()


def test_serve_forever_returns_after_shutdown_from_another_thread(root: Path) -> None:
    output_server = OutputServer(root, port=0)
    stopper = threading.Timer(0.1, output_server.shutdown)
    stopper.start()
    started = time.monotonic()
    output_server.serve_forever()
    assert time.monotonic() - started < 2.0
    stopper.join()


def test_shutdown_before_start_releases_the_port(root: Path) -> None:
    output_server = OutputServer(root, port=0)
    port = int(output_server.url.rsplit(":", 1)[1].rstrip("/"))
    output_server.shutdown()
    OutputServer(root, port=port).shutdown()
