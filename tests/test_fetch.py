"""aggregator.fetch against a real loopback HTTP server (tests/feedserver.py).

Each rule of "Fetching: polite and safe" in DESIGN.md has a test here that a
misbehaving server breaks on purpose: redirects, bombs, drips, hangs, refusals.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import shutil
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import brotli  # type: ignore[import-untyped]
import pytest

import aggregator
from aggregator.errors import (
    ConnectError,
    FetchError,
    FetchTimeoutError,
    GoneError,
    HTTPStatusError,
    InvalidURLError,
    RateLimitedError,
    TooLargeError,
    TooManyRedirectsError,
)
from aggregator.fetch import MAX_RETRY_AFTER_SECONDS, Fetcher, parse_retry_after
from aggregator.models import FetchLimits, FetchResult, Validators
from tests.feedserver import FeedServer

RSS = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>Coins</title>
<item><title>Bitcoin moves</title><link>https://example.com/1</link></item></channel></rss>"""
MiB = 1024 * 1024
NO_VALIDATORS = Validators()
DEFAULT_LIMITS = FetchLimits()


def fetch(
    url: str,
    validators: Validators = NO_VALIDATORS,
    limits: FetchLimits = DEFAULT_LIMITS,
    fetcher: Fetcher | None = None,
) -> FetchResult:
    """One fetch, as a synchronous call; a Fetcher only opens its client when entered."""

    async def run() -> FetchResult:
        async with fetcher or Fetcher() as opened:
            return await opened.fetch(url, validators, limits)

    return asyncio.run(run())


def fetch_many(urls: list[str], fetcher: Fetcher, limits: FetchLimits = DEFAULT_LIMITS) -> list[FetchResult]:
    async def run() -> list[FetchResult]:
        async with fetcher as opened:
            return await asyncio.gather(*(opened.fetch(url, NO_VALIDATORS, limits) for url in urls))

    return asyncio.run(run())


def fetch_error(url: str, limits: FetchLimits = DEFAULT_LIMITS, validators: Validators = NO_VALIDATORS) -> FetchError:
    with pytest.raises(FetchError) as caught:
        fetch(url, validators, limits)
    return caught.value


# --- a plain GET and the conditional GET ------------------------------------------


def test_first_fetch_returns_body_headers_and_validators(feed_server: FeedServer) -> None:
    url = feed_server.add("/feed.xml", RSS)

    result = fetch(url)

    assert result.status == 200
    assert not result.not_modified
    assert result.content == RSS
    assert result.url == result.final_url == url
    assert result.permanent_url is None
    assert result.headers["content-type"] == "application/rss+xml; charset=utf-8"
    assert result.validators.etag and result.validators.etag.startswith('"')
    assert result.validators.last_modified and result.validators.last_modified.endswith("GMT")


def test_etag_round_trip_gives_304_and_keeps_validators(feed_server: FeedServer) -> None:
    url = feed_server.add("/feed.xml", RSS)
    first = fetch(url)

    second = fetch(url, first.validators)

    assert second.status == 304 and second.not_modified
    assert second.content == b""
    assert second.validators == first.validators
    sent = feed_server.hits("/feed.xml")[1].headers
    assert sent["if-none-match"] == first.validators.etag
    assert sent["if-modified-since"] == first.validators.last_modified


def test_last_modified_alone_gives_304(feed_server: FeedServer) -> None:
    url = feed_server.add("/feed.xml", RSS)
    last_modified = fetch(url).validators.last_modified

    result = fetch(url, Validators(last_modified=last_modified))

    assert result.not_modified
    assert result.validators.last_modified == last_modified
    sent = feed_server.hits("/feed.xml")[1].headers
    assert "if-none-match" not in sent
    assert sent["if-modified-since"] == last_modified


def test_304_without_validators_keeps_the_ones_sent(feed_server: FeedServer) -> None:
    url = feed_server.add("/feed.xml", status=304)
    sent = Validators(etag='"v1"', last_modified="Mon, 01 Jan 2024 00:00:00 GMT")

    assert fetch(url, sent).validators == sent


def test_changed_feed_gives_200_with_new_validators(feed_server: FeedServer) -> None:
    url = feed_server.add("/feed.xml", RSS)
    old = fetch(url).validators
    feed_server.add("/feed.xml", RSS + b"<!-- changed -->")

    result = fetch(url, old)

    assert result.status == 200
    assert result.validators.etag != old.etag


def test_unsendable_validators_are_left_out(feed_server: FeedServer) -> None:
    url = feed_server.add("/feed.xml", RSS)

    result = fetch(url, Validators(etag="“curly”", last_modified="Mon\r\nX-Evil: 1"))

    assert result.status == 200
    sent = feed_server.hits("/feed.xml")[0].headers
    assert "if-none-match" not in sent and "if-modified-since" not in sent and "x-evil" not in sent


def test_request_names_the_project_and_prefers_feeds(feed_server: FeedServer) -> None:
    url = feed_server.add("/feed.xml", RSS)

    fetch(url)

    sent = feed_server.hits("/feed.xml")[0].headers
    assert sent["user-agent"] == aggregator.USER_AGENT
    assert sent["accept"].startswith("application/rss+xml, application/atom+xml")
    assert sent["accept-encoding"] == "gzip, deflate, br"


def test_user_agent_can_be_chosen(feed_server: FeedServer) -> None:
    url = feed_server.add("/feed.xml", RSS)

    fetch(url, fetcher=Fetcher(user_agent="custom/1.0"))

    assert feed_server.hits("/feed.xml")[0].headers["user-agent"] == "custom/1.0"


def test_other_2xx_with_a_body_is_a_success(feed_server: FeedServer) -> None:
    url = feed_server.add("/feed.xml", RSS, status=203)

    result = fetch(url)

    assert (result.status, result.content) == (203, RSS)


# --- compressed bodies --------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["gzip", "br", "deflate"])
def test_negotiated_compression_is_decoded(feed_server: FeedServer, encoding: str) -> None:
    url = feed_server.add("/feed.xml", RSS, compress=encoding)

    result = fetch(url)

    assert result.headers["content-encoding"] == encoding
    assert result.content == RSS


def _raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


@pytest.mark.parametrize(
    ("content_encoding", "wire"),
    [
        ("gzip", gzip.compress(RSS)),
        ("x-gzip", gzip.compress(RSS)),
        ("gzip", gzip.compress(RSS[:50]) + gzip.compress(RSS[50:])),
        ("deflate", zlib.compress(RSS)),
        ("deflate", _raw_deflate(RSS)),
        ("br", brotli.compress(RSS)),
        ("gzip, br", brotli.compress(gzip.compress(RSS))),
        ("identity", RSS),
    ],
    ids=["gzip", "x-gzip", "gzip-two-members", "deflate-zlib", "deflate-raw", "br", "gzip-then-br", "identity"],
)
def test_every_content_encoding_is_decoded(feed_server: FeedServer, content_encoding: str, wire: bytes) -> None:
    url = feed_server.add("/feed.xml", wire, compress="identity", headers={"Content-Encoding": content_encoding})

    assert fetch(url).content == RSS


def test_unknown_content_encoding_is_refused(feed_server: FeedServer) -> None:
    url = feed_server.add("/feed.xml", RSS, compress="identity", headers={"Content-Encoding": "zstd"})

    assert str(fetch_error(url)) == "the server sent the body in an encoding we cannot read ('zstd')"


def test_corrupt_gzip_is_a_readable_error(feed_server: FeedServer) -> None:
    url = feed_server.add("/feed.xml", b"not gzip at all", compress="identity", headers={"Content-Encoding": "gzip"})

    assert str(fetch_error(url)).startswith("could not decompress the gzip body: ")


# --- redirects ------------------------------------------------------------------------


def _chain(server: FeedServer, statuses: list[int]) -> str:
    """/hop0 -> /hop1 -> ... -> /feed.xml with the given statuses; returns the first URL."""
    server.add("/feed.xml", RSS)
    paths = [f"/hop{index}" for index in range(len(statuses))] + ["/feed.xml"]
    for here, there, status in zip(paths, paths[1:], statuses, strict=False):
        server.redirect(here, server.url(there), status)
    return server.url(paths[0])


@pytest.mark.parametrize("statuses", [[301], [308], [301, 308, 301]])
def test_permanent_redirects_give_a_permanent_url(feed_server: FeedServer, statuses: list[int]) -> None:
    url = _chain(feed_server, statuses)

    result = fetch(url)

    assert result.content == RSS
    assert result.url == url
    assert result.final_url == result.permanent_url == feed_server.url("/feed.xml")


@pytest.mark.parametrize("statuses", [[302], [303], [307], [301, 302], [302, 301]])
def test_a_temporary_hop_gives_no_permanent_url(feed_server: FeedServer, statuses: list[int]) -> None:
    result = fetch(_chain(feed_server, statuses))

    assert result.final_url == feed_server.url("/feed.xml")
    assert result.permanent_url is None


def test_relative_location_is_resolved(feed_server: FeedServer) -> None:
    feed_server.add("/new/feed.xml", RSS)
    url = feed_server.redirect("/old/feed.xml", "../new/feed.xml")

    result = fetch(url)

    assert result.final_url == feed_server.url("/new/feed.xml")


def test_conditional_get_through_a_redirect(feed_server: FeedServer) -> None:
    url = _chain(feed_server, [301])
    first = fetch(url)

    second = fetch(url, first.validators)

    assert second.not_modified
    assert second.permanent_url == feed_server.url("/feed.xml")


def test_ten_redirects_are_followed(feed_server: FeedServer) -> None:
    assert fetch(_chain(feed_server, [302] * 10)).content == RSS


def test_eleven_redirects_are_too_many(feed_server: FeedServer) -> None:
    error = fetch_error(_chain(feed_server, [302] * 11))

    assert isinstance(error, TooManyRedirectsError)
    assert str(error) == "too many redirects (more than 10)"
    assert not feed_server.hits("/feed.xml")


def test_redirect_limit_comes_from_the_limits(feed_server: FeedServer) -> None:
    error = fetch_error(_chain(feed_server, [301] * 3), FetchLimits(max_redirects=2))

    assert str(error) == "too many redirects (more than 2)"


def test_redirect_loop_is_named(feed_server: FeedServer) -> None:
    feed_server.redirect("/a", feed_server.url("/b"), 302)
    url = feed_server.redirect("/b", "/a", 302)

    error = fetch_error(url)

    assert isinstance(error, TooManyRedirectsError)
    assert str(error) == f"redirect loop at {url}"


def test_redirect_to_ftp_is_refused(feed_server: FeedServer) -> None:
    url = feed_server.redirect("/feed.xml", "ftp://files.example.com/feed.xml")

    error = fetch_error(url)

    assert isinstance(error, InvalidURLError)
    assert str(error) == "redirected to ftp://files.example.com/feed.xml: unsupported URL scheme 'ftp'"


def test_redirect_without_location_is_an_error(feed_server: FeedServer) -> None:
    error = fetch_error(feed_server.add("/feed.xml", status=302))

    assert isinstance(error, HTTPStatusError)
    assert str(error) == "HTTP 302 Found without a Location header"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/feed.xml", "unsupported URL scheme 'ftp'"),
        ("file:///etc/passwd", "unsupported URL scheme 'file'"),
        ("example.com/feed.xml", "URL 'example.com/feed.xml' has no scheme (expected http:// or https://)"),
        ("http:///feed.xml", "URL 'http:///feed.xml' has no host"),
    ],
)
def test_only_http_and_https_urls_are_fetched(url: str, message: str) -> None:
    error = fetch_error(url)

    assert isinstance(error, InvalidURLError)
    assert str(error) == message


# --- statuses ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (404, "HTTP 404 Not Found"),
        (500, "HTTP 500 Internal Server Error"),
        (403, "HTTP 403 Forbidden"),
        (204, "HTTP 204 No Content: empty response"),
        (599, "HTTP 599"),
    ],
)
def test_failure_statuses_are_plain_sentences(feed_server: FeedServer, status: int, message: str) -> None:
    error = fetch_error(feed_server.add("/feed.xml", b"oops", status=status))

    assert type(error) is HTTPStatusError
    assert (str(error), error.status, error.code) == (message, status, "fetch.http_status")


def test_410_gone_disables_the_feed(feed_server: FeedServer) -> None:
    error = fetch_error(feed_server.add("/feed.xml", status=410))

    assert isinstance(error, GoneError)
    assert error.status == 410
    assert str(error) == "HTTP 410 Gone: the feed was removed; it is disabled until its URL changes"


def test_429_with_retry_after_seconds(feed_server: FeedServer) -> None:
    error = fetch_error(feed_server.add("/feed.xml", status=429, headers={"Retry-After": "3600"}))

    assert isinstance(error, RateLimitedError)
    assert error.retry_after_seconds == 3600
    assert str(error) == "HTTP 429 Too Many Requests (retry after 3600 s)"


def test_503_with_retry_after_date(feed_server: FeedServer) -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)

    error = fetch_error(feed_server.add("/feed.xml", status=503, headers={"Retry-After": later}))

    assert isinstance(error, RateLimitedError)
    assert error.retry_after_seconds is not None and 100 <= error.retry_after_seconds <= 121
    assert str(error).startswith("HTTP 503 Service Unavailable (retry after 1")


def test_429_without_retry_after(feed_server: FeedServer) -> None:
    error = fetch_error(feed_server.add("/feed.xml", status=429))

    assert isinstance(error, RateLimitedError)
    assert error.retry_after_seconds is None
    assert str(error) == "HTTP 429 Too Many Requests"


NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 0 ", 0.0),
        ("1.5", 1.5),
        ("-30", 0.0),
        ("Wed, 01 May 2024 13:00:00 GMT", 3600.0),
        ("Wed, 01 May 2024 11:00:00 GMT", 0.0),
        ("Wednesday, 01-May-24 12:00:30 GMT", 30.0),
        ("99999999999999", MAX_RETRY_AFTER_SECONDS),
        (None, None),
        ("", None),
        ("soon", None),
        ("nan", None),
        ("Wed, 99 Foo 2024 13:00:00 GMT", None),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, NOW) == seconds


def test_parse_retry_after_takes_a_naive_now_as_utc() -> None:
    assert parse_retry_after("Wed, 01 May 2024 12:01:00 GMT", NOW.replace(tzinfo=None)) == 60.0


# --- network failures -------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_refused_connection() -> None:
    port = _closed_port()

    error = fetch_error(f"http://127.0.0.1:{port}/feed.xml")

    assert isinstance(error, ConnectError)
    assert str(error) == f"connection refused by 127.0.0.1:{port}"


def test_unknown_host() -> None:
    error = fetch_error("http://nonexistent.invalid/feed.xml")

    assert isinstance(error, ConnectError)
    assert str(error) == "could not resolve host 'nonexistent.invalid'"


def test_server_closing_without_answer(feed_server: FeedServer) -> None:
    error = fetch_error(feed_server.add("/feed.xml", close_without_answer=True))

    assert isinstance(error, ConnectError)
    assert str(error) == "server closed the connection without answering"


def test_garbage_instead_of_http(feed_server: FeedServer) -> None:
    error = fetch_error(feed_server.add("/feed.xml", raw=b"garbage\r\n\r\n"))

    assert type(error) is FetchError
    assert str(error).startswith(f"127.0.0.1:{feed_server.port} sent an invalid HTTP response (")


def test_body_cut_short(feed_server: FeedServer) -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\nContent-Length: 1000\r\n\r\n<rss>"

    error = fetch_error(feed_server.add("/feed.xml", raw=raw))

    assert str(error).startswith("the server closed the connection before the body was complete")


def test_https_to_a_plain_http_server_is_a_tls_error(feed_server: FeedServer) -> None:
    url = feed_server.add("/feed.xml", RSS).replace("http://", "https://")

    error = fetch_error(url)

    assert isinstance(error, ConnectError)
    assert str(error).startswith(f"TLS handshake with 127.0.0.1:{feed_server.port} failed: ")


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a self-signed certificate")
    folder: Path = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    command = [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    command += ["-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1"]
    subprocess.run(command, check=True, capture_output=True, timeout=30)
    return str(cert), str(key)


@pytest.fixture
def tls_server(self_signed: tuple[str, str]) -> Iterator[FeedServer]:
    with FeedServer(tls=self_signed) as server:
        yield server


def test_untrusted_certificate_is_named(tls_server: FeedServer) -> None:
    error = fetch_error(tls_server.add("/feed.xml", RSS))

    assert isinstance(error, ConnectError)
    # OpenSSL 3 says "self-signed certificate", 1.1 "self signed certificate".
    assert str(error).startswith("TLS certificate of 127.0.0.1 was not accepted: self")
    assert str(error).endswith("signed certificate")


# --- size cap ---------------------------------------------------------------------------


@functools.cache
def _gzip_bomb() -> bytes:
    return gzip.compress(bytes(50 * MiB))


@functools.cache
def _brotli_bomb() -> bytes:
    return bytes(brotli.compress(bytes(50 * MiB), quality=5))


def test_declared_length_over_the_cap_is_refused(feed_server: FeedServer) -> None:
    url = feed_server.add("/feed.xml", bytes(2 * MiB), compress="identity")

    error = fetch_error(url, FetchLimits(max_bytes=MiB))

    assert isinstance(error, TooLargeError)
    assert str(error) == "response larger than 1 MiB"


def test_endless_body_is_cut_off(feed_server: FeedServer) -> None:
    error = fetch_error(feed_server.add("/feed.xml", endless=True), FetchLimits(max_bytes=MiB))

    assert isinstance(error, TooLargeError)


def test_cap_counts_decoded_bytes(feed_server: FeedServer) -> None:
    """1.5 MiB of text gzips to a few KiB, but it is the decoded size that counts."""
    url = feed_server.add("/feed.xml", b"<rss>" + b" " * (3 * MiB // 2) + b"</rss>")

    error = fetch_error(url, FetchLimits(max_bytes=MiB))

    assert str(error) == "response larger than 1 MiB"


@pytest.mark.parametrize("size", [1000, 1024])
def test_body_up_to_the_cap_is_accepted(feed_server: FeedServer, size: int) -> None:
    url = feed_server.add("/feed.xml", bytes(size))

    assert len(fetch(url, limits=FetchLimits(max_bytes=1024)).content) == size


def test_one_byte_over_the_cap_is_refused(feed_server: FeedServer) -> None:
    error = fetch_error(feed_server.add("/feed.xml", bytes(1025)), FetchLimits(max_bytes=1024))

    assert str(error) == "response larger than 1 KiB"


@pytest.mark.parametrize(("encoding", "bomb"), [("gzip", _gzip_bomb), ("br", _brotli_bomb)])
def test_compression_bomb_is_stopped_early(feed_server: FeedServer, encoding: str, bomb: object) -> None:
    assert callable(bomb)
    url = feed_server.add("/bomb.xml", bomb(), compress="identity", headers={"Content-Encoding": encoding})
    started = time.monotonic()

    error = fetch_error(url, FetchLimits(max_bytes=MiB))

    assert isinstance(error, TooLargeError)
    assert str(error) == "response larger than 1 MiB"
    assert time.monotonic() - started < 5  # generous: decoding all 50 MB would still be quick, memory is the point


# --- time -------------------------------------------------------------------------------


def test_dripping_server_hits_the_total_deadline(feed_server: FeedServer) -> None:
    url = feed_server.add("/feed.xml", RSS, compress="identity", drip_seconds=0.1)
    started = time.monotonic()

    error = fetch_error(url, FetchLimits(timeout_seconds=1))

    assert isinstance(error, FetchTimeoutError)
    assert str(error) == "timed out after 1 s"
    assert time.monotonic() - started < 5
    assert len(feed_server.hits("/feed.xml")) == 1


def test_silent_server_times_out(feed_server: FeedServer) -> None:
    error = fetch_error(feed_server.add("/feed.xml", hang=True), FetchLimits(timeout_seconds=0.5))

    assert isinstance(error, FetchTimeoutError)
    assert str(error) == "timed out after 0.5 s"


def test_deadline_covers_the_redirects(feed_server: FeedServer) -> None:
    feed_server.add("/feed.xml", RSS, delay_seconds=0.4)
    feed_server.add("/hop", b"", status=302, headers={"Location": "/feed.xml"}, delay_seconds=0.4)

    error = fetch_error(feed_server.url("/hop"), FetchLimits(timeout_seconds=0.6))

    assert str(error) == "timed out after 0.6 s"


def test_elapsed_ms_is_measured(feed_server: FeedServer) -> None:
    result = fetch(feed_server.add("/feed.xml", RSS, delay_seconds=0.1))

    assert result.elapsed_ms >= 100


def test_time_queued_behind_the_same_host_does_not_count(feed_server: FeedServer) -> None:
    """Three slow answers in a row take longer than the timeout, but each one alone does not."""
    urls = [feed_server.add(f"/feed{index}.xml", RSS, delay_seconds=0.4) for index in range(3)]

    results = fetch_many(urls, Fetcher(per_host=1), FetchLimits(timeout_seconds=1))

    assert [result.content for result in results] == [RSS] * 3


# --- concurrency ------------------------------------------------------------------------


def test_per_host_limit_holds_at_the_server(feed_server: FeedServer) -> None:
    urls = [feed_server.add(f"/feed{index}.xml", RSS, delay_seconds=0.1) for index in range(12)]

    results = fetch_many(urls, Fetcher(per_host=3))

    assert all(result.content == RSS for result in results)
    assert 1 < feed_server.max_active <= 3


def test_global_limit_holds_at_the_server(feed_server: FeedServer) -> None:
    urls = [feed_server.add(f"/feed{index}.xml", RSS, delay_seconds=0.1) for index in range(8)]

    fetch_many(urls, Fetcher(max_concurrency=2, per_host=4))

    assert 1 < feed_server.max_active <= 2


def test_fetcher_must_be_entered() -> None:
    with pytest.raises(RuntimeError):
        asyncio.run(Fetcher().fetch("http://127.0.0.1:1/", NO_VALIDATORS, DEFAULT_LIMITS))


@pytest.mark.parametrize(("max_concurrency", "per_host"), [(0, 1), (1, 0)])
def test_limits_must_be_positive(max_concurrency: int, per_host: int) -> None:
    with pytest.raises(ValueError):
        Fetcher(max_concurrency=max_concurrency, per_host=per_host)


def test_importing_fetch_leaves_out_the_httpx_command_line_client() -> None:
    # httpx's own CLI loads rich and pygments: time every `aggregator update` would pay for nothing.
    code = (
        "import sys, aggregator.fetch\n"
        "loaded = [name for name in ('httpx._main', 'rich', 'pygments') if name in sys.modules]\n"
        "import httpx._main  # still there for whoever asks\n"
        "print(loaded)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"
