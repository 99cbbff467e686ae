"""Connections kept open between fetches (aggregator.fetch_pool), seen from a loopback server.

The server counts the TCP connections it accepts: a 304, a redirect or a short error
page leaves its connection open for the next feed, anything else closes it, the
number of open connections stays within the Fetcher's limit, and a connection the
server dropped while it was idle is never used again. A proxy or a CA bundle named in
the environment is still honoured, as httpx's own transport does.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import pytest
import trustme

from aggregator.errors import HTTPStatusError
from aggregator.fetch import Fetcher
from aggregator.models import FetchLimits, FetchResult, Validators
from tests.feedserver import FeedServer

RSS = b'<?xml version="1.0"?><rss version="2.0"><channel><title>Pool</title></channel></rss>'
ETAG = '"pool-v1"'
NO_VALIDATORS = Validators()
LIMITS = FetchLimits(timeout_seconds=10.0)
T = TypeVar("T")


@dataclass
class Answer:
    status: int = 200
    body: bytes = RSS
    headers: dict[str, str] = field(default_factory=dict)
    # Declare a short body, then send none of it (until the server stops).
    stall: bool = False
    # Close the connection after answering, without a "Connection: close" to say so.
    hang_up: bool = False


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64


class CountingServer:
    """Serves fixed answers by path on 127.0.0.1 and counts the connections it accepts."""

    def __init__(self, answers: dict[str, Answer]) -> None:
        self.answers = answers
        self.connections = 0
        self.hung_up = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), self._handler_class())
        self._httpd.verify_request = self._count  # type: ignore[method-assign]
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}{path}"

    def __enter__(self) -> CountingServer:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def _count(self, request: object, client_address: object) -> bool:
        with self._lock:
            self.connections += 1
        return True

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:
                answer = server.answers[self.path]
                conditional = answer.status == 200 and self.headers.get("If-None-Match") == ETAG
                status = 304 if conditional else answer.status
                self.send_response(status)
                for name, value in {"ETag": ETAG, **answer.headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                if answer.stall:
                    server._stopping.wait()
                elif status != 304:
                    self.wfile.write(answer.body)
                self.close_connection = answer.stall or answer.hang_up

            def finish(self) -> None:
                super().finish()
                if self.close_connection and server.answers[self.path].hang_up:
                    self.connection.close()
                    server.hung_up.set()

        return Handler


@pytest.fixture
def server() -> Iterator[CountingServer]:
    answers = {
        "/feed.xml": Answer(),
        "/old.xml": Answer(301, b"moved to /feed.xml", {"Location": "/feed.xml"}),
        "/missing.xml": Answer(404, b"<html><body>no such feed</body></html>"),
        "/broken.xml": Answer(500, b"<p>an error page longer than we care to read</p>" * 20_000),
        "/stalled.xml": Answer(301, b"x" * 100, {"Location": "/feed.xml"}, stall=True),
        "/bye.xml": Answer(hang_up=True),
    }
    with CountingServer(answers) as counting:
        yield counting


def in_one_fetcher(fetcher: Fetcher, work: Callable[[Fetcher], Awaitable[T]]) -> T:
    async def run() -> T:
        async with fetcher as opened:
            return await work(opened)

    return asyncio.run(run())


def test_a_feed_its_304_a_redirect_and_a_short_error_page_share_one_connection(server: CountingServer) -> None:
    async def work(fetcher: Fetcher) -> list[FetchResult | Exception]:
        first = await fetcher.fetch(server.url("/feed.xml"), NO_VALIDATORS, LIMITS)
        unchanged = await fetcher.fetch(server.url("/feed.xml"), first.validators, LIMITS)
        moved = await fetcher.fetch(server.url("/old.xml"), NO_VALIDATORS, LIMITS)
        try:
            await fetcher.fetch(server.url("/missing.xml"), NO_VALIDATORS, LIMITS)
        except HTTPStatusError as error:
            return [first, unchanged, moved, error]
        raise AssertionError("a 404 must be an error")

    first, unchanged, moved, missing = in_one_fetcher(Fetcher(), work)

    assert isinstance(first, FetchResult) and first.content == RSS
    assert isinstance(unchanged, FetchResult) and unchanged.not_modified
    assert isinstance(moved, FetchResult) and moved.content == RSS and moved.final_url == server.url("/feed.xml")
    assert str(missing) == "HTTP 404 Not Found"
    assert server.connections == 1


def test_a_long_error_page_is_left_unread_and_its_connection_closed(server: CountingServer) -> None:
    async def work(fetcher: Fetcher) -> tuple[str, FetchResult]:
        with pytest.raises(HTTPStatusError) as caught:
            await fetcher.fetch(server.url("/broken.xml"), NO_VALIDATORS, LIMITS)
        return str(caught.value), await fetcher.fetch(server.url("/feed.xml"), NO_VALIDATORS, LIMITS)

    error, after = in_one_fetcher(Fetcher(), work)

    assert error == "HTTP 500 Internal Server Error"
    assert after.content == RSS
    assert server.connections == 2


def test_a_redirect_whose_body_never_comes_is_still_followed(server: CountingServer) -> None:
    # Waiting for the body would run into the deadline and fail the fetch.
    limits = FetchLimits(timeout_seconds=4.0)

    result = in_one_fetcher(Fetcher(), lambda fetcher: fetcher.fetch(server.url("/stalled.xml"), NO_VALIDATORS, limits))

    assert result.content == RSS
    assert result.final_url == server.url("/feed.xml")


def test_a_connection_the_server_dropped_while_idle_is_not_used_again(server: CountingServer) -> None:
    async def work(fetcher: Fetcher) -> tuple[FetchResult, FetchResult]:
        first = await fetcher.fetch(server.url("/bye.xml"), NO_VALIDATORS, LIMITS)
        assert await asyncio.to_thread(server.hung_up.wait, 5.0), "the server never hung up"
        return first, await fetcher.fetch(server.url("/feed.xml"), NO_VALIDATORS, LIMITS)

    first, second = in_one_fetcher(Fetcher(), work)

    assert first.content == second.content == RSS
    assert server.connections == 2


def test_simultaneous_fetches_reuse_connections_within_the_limit(server: CountingServer) -> None:
    async def work(fetcher: Fetcher) -> list[FetchResult]:
        fetches = [fetcher.fetch(server.url(path), NO_VALIDATORS, LIMITS) for path in ["/feed.xml", "/old.xml"] * 12]
        return await asyncio.gather(*fetches)

    results = in_one_fetcher(Fetcher(max_concurrency=3, per_host=3), work)

    assert all(result.content == RSS for result in results)
    assert server.connections <= 3


def test_the_longest_idle_connection_is_closed_to_stay_within_the_limit() -> None:
    servers = [CountingServer({"/feed.xml": Answer()}) for _ in range(3)]
    with servers[0] as first, servers[1] as second, servers[2] as third:

        async def work(fetcher: Fetcher) -> None:
            for server in (first, second, third, first):
                await fetcher.fetch(server.url("/feed.xml"), NO_VALIDATORS, LIMITS)

        in_one_fetcher(Fetcher(max_concurrency=2, per_host=2), work)

    # Two connections at most: the third server's took the place of the first's.
    assert (first.connections, second.connections, third.connections) == (2, 1, 1)


def test_a_proxy_named_in_the_environment_is_still_used(monkeypatch: pytest.MonkeyPatch) -> None:
    with CountingServer({"http://feeds.example/feed.xml": Answer()}) as proxy:
        for name in ("http_proxy", "HTTP_PROXY"):
            monkeypatch.setenv(name, proxy.url(""))
        for name in ("no_proxy", "NO_PROXY"):
            monkeypatch.delenv(name, raising=False)

        result = in_one_fetcher(
            Fetcher(), lambda fetcher: fetcher.fetch("http://feeds.example/feed.xml", NO_VALIDATORS, LIMITS)
        )

    assert result.content == RSS


def test_https_with_a_trusted_certificate_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    authority = trustme.CA()
    issued = authority.issue_cert("127.0.0.1")
    cert, key, trusted = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    authority.cert_pem.write_to_path(str(trusted))
    monkeypatch.setenv("SSL_CERT_FILE", str(trusted))

    with FeedServer(tls=(str(cert), str(key))) as server:
        url = server.add("/feed.xml", RSS)

        async def work(fetcher: Fetcher) -> tuple[FetchResult, FetchResult]:
            first = await fetcher.fetch(url, NO_VALIDATORS, LIMITS)
            return first, await fetcher.fetch(url, first.validators, LIMITS)

        first, second = in_one_fetcher(Fetcher(), work)

    assert url.startswith("https://")
    assert first.content == RSS
    assert second.not_modified
