"""Fetch one feed URL over HTTP, politely and safely.

This is the only module that imports httpx. `Fetcher.fetch` makes one conditional
GET and returns a `FetchResult` (a decoded body, or "not modified"), or raises one
of the `FetchError`s from `aggregator.errors` with a sentence an operator can read.

What it does: send the stored ETag/Last-Modified; follow at most `max_redirects`
redirects by hand (only http/https, loops caught, `permanent_url` only when every
hop was 301/308); enforce connect/read timeouts and a total deadline for the whole
fetch; cap the body size on the *decoded* bytes while they stream, decompressing at
most a little more than the cap so a gzip or brotli bomb never fills memory (and the
compressed bytes at twice the cap, so a stream that decodes to nothing cannot run
on); refuse a compressed body whose stream stops before its end; turn 410, 429/503
(with Retry-After) and every other failure into typed errors; keep a global and a
per-host limit on simultaneous requests. Connections are kept open between requests
(`aggregator.fetch_pool`), and the short body of a 304, a redirect or an error page is
read to its end so that its connection can serve the next feed.

What it does not do: parse the body, look at SQLite or the configuration, decide
when to poll again or how to back off (it only reports Retry-After), or retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import socket
import ssl
import sys
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from types import TracebackType

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
from aggregator.fetch_decode import BROTLI_BOUNDED, content_encodings, decoder_for
from aggregator.models import FetchLimits, FetchResult, Validators

# httpx/__init__.py imports httpx._main, its command-line client, which loads rich and
# pygments when they are installed (rich is, for our progress bar): some 45 ms on every
# start, for a client we never run. With None in sys.modules that import fails as Python
# documents (ModuleNotFoundError), which httpx takes as its [cli] extra being absent.
# Upstream, encode/httpx#3547 moves the import out of __init__.
_HTTPX_CLI = "httpx._main"
if "httpx" not in sys.modules:
    sys.modules[_HTTPX_CLI] = None  # type: ignore[assignment]
import httpx  # noqa: E402

from aggregator.fetch_pool import KeepAlivePool  # noqa: E402

if sys.modules.get(_HTTPX_CLI, httpx) is None:
    del sys.modules[_HTTPX_CLI]  # so that `import httpx._main` works again, should anyone want it

logger = logging.getLogger(__name__)

DEFAULT_MAX_CONCURRENCY = 16
DEFAULT_PER_HOST = 4
MAX_CONNECT_TIMEOUT_SECONDS = 10.0
# A server asking us to stay away longer than this is still polled weekly; it
# also keeps absurd values from overflowing the caller's datetime arithmetic.
MAX_RETRY_AFTER_SECONDS = 7 * 24 * 3600.0

ALLOWED_SCHEMES = frozenset({"http", "https"})
PERMANENT_REDIRECTS = frozenset({301, 308})
REDIRECTS = PERMANENT_REDIRECTS | {302, 303, 307}
RATE_LIMITED = frozenset({429, 503})
# Compressed data is never much bigger than what it decodes to, so a body that sends more
# than this many times the cap on the wire is refused, whatever it would decode to.
MAX_WIRE_FACTOR = 2
# A body we do not use (a 304's, a redirect's, an error page's) is still read to its end
# when it is at most this long and arrives this fast, so its connection can be reused.
MAX_UNWANTED_BODY = 64 * 1024
UNWANTED_BODY_SECONDS = 1.0
# A 206 was never asked for (we send no Range) and would be half a feed.
EMPTY_OR_PARTIAL = {204: "empty response", 205: "empty response", 206: "partial response, not asked for"}

ACCEPT_ENCODING = "gzip, deflate, br" if BROTLI_BOUNDED else "gzip, deflate"
ACCEPT = (
    "application/rss+xml, application/atom+xml, application/rdf+xml;q=0.9, "
    "application/xml;q=0.9, text/xml;q=0.9, */*;q=0.5"
)

_DELTA_SECONDS = re.compile(r"[+-]?\d+(?:\.\d+)?")


class Fetcher:
    """One shared httpx.AsyncClient with a global concurrency limit and a per-host limit.

    Use as `async with Fetcher() as fetcher:`; the client, its connection pool and
    the semaphores live for the block, so keep one Fetcher for a whole poll cycle
    (or the daemon's life) to reuse connections.
    """

    def __init__(
        self,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        per_host: int = DEFAULT_PER_HOST,
        user_agent: str = aggregator.USER_AGENT,
    ) -> None:
        if max_concurrency < 1 or per_host < 1:
            raise ValueError("max_concurrency and per_host must be at least 1")
        self.max_concurrency = max_concurrency
        self.per_host = per_host
        self.user_agent = user_agent
        self._client: httpx.AsyncClient | None = None
        self._all_hosts: asyncio.Semaphore | None = None
        self._hosts: dict[str, asyncio.Semaphore] = {}

    async def __aenter__(self) -> Fetcher:
        # Created here, not in __init__, so they belong to the running event loop.
        self._all_hosts = asyncio.Semaphore(self.max_concurrency)
        self._hosts = {}
        limits = httpx.Limits(max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency)
        self._client = httpx.AsyncClient(
            headers={"User-Agent": self.user_agent, "Accept": ACCEPT, "Accept-Encoding": ACCEPT_ENCODING},
            follow_redirects=False,
            limits=limits,
            transport=_direct_transport(limits),
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._client is not None:
            await self._client.aclose()
        self._client = None

    async def fetch(self, url: str, validators: Validators, limits: FetchLimits) -> FetchResult:
        """GET `url` conditionally within `limits`; raise a FetchError for anything but 2xx/304.

        The total deadline starts when the first request gets its concurrency slots,
        so time spent queueing behind other feeds of the same host is not held
        against this one; waiting for slots on a later redirect hop does count.
        """
        start = _checked_url(url)
        try:
            async with asyncio.timeout(None) as deadline:
                return await self._follow(url, start, validators, limits, deadline)
        except TimeoutError:
            raise FetchTimeoutError(f"timed out after {_format_seconds(limits.timeout_seconds)}") from None

    async def _follow(
        self,
        url: str,
        current: httpx.URL,
        validators: Validators,
        limits: FetchLimits,
        deadline: asyncio.Timeout,
    ) -> FetchResult:
        """Request `current`, then each redirect target, until something other than a redirect answers."""
        loop = asyncio.get_running_loop()
        started: float | None = None
        visited = {str(current)}
        all_permanent = True
        redirects = 0
        while True:
            async with self._slots(current.host):
                if started is None:
                    started = loop.time()
                    deadline.reschedule(started + limits.timeout_seconds)
                answer = await self._get(current, validators, limits)
            if answer.location is None:
                elapsed_ms = round((loop.time() - started) * 1000)
                permanent = str(current) if redirects and all_permanent else None
                return _result(url, current, answer, validators, permanent, elapsed_ms)
            redirects += 1
            if redirects > limits.max_redirects:
                raise TooManyRedirectsError(f"too many redirects (more than {limits.max_redirects})")
            all_permanent = all_permanent and answer.status in PERMANENT_REDIRECTS
            current = _redirect_target(current, answer.location)
            if str(current) in visited:
                raise TooManyRedirectsError(f"redirect loop at {current}")
            visited.add(str(current))
            logger.debug("%s: HTTP %d redirect to %s", url, answer.status, current)

    @contextlib.asynccontextmanager
    async def _slots(self, host: str) -> AsyncIterator[None]:
        """Hold a slot for `host`, then a global one, so a busy host never ties up global slots."""
        if self._all_hosts is None:
            raise RuntimeError("use the Fetcher as 'async with Fetcher() as fetcher:'")
        per_host = self._hosts.setdefault(host, asyncio.Semaphore(self.per_host))
        async with per_host, self._all_hosts:
            yield

    async def _get(self, url: httpx.URL, validators: Validators, limits: FetchLimits) -> _Answer:
        """One GET without following redirects; every httpx failure becomes a FetchError."""
        if self._client is None:
            raise RuntimeError("use the Fetcher as 'async with Fetcher() as fetcher:'")
        try:
            async with self._client.stream(
                "GET", url, headers=_conditional_headers(validators), timeout=_timeouts(limits)
            ) as response:
                return await _answer(response, limits)
        except httpx.HTTPError as exc:
            raise _translate(exc, url, limits) from exc
        except httpx.InvalidURL as exc:
            raise InvalidURLError(f"invalid URL {str(url)!r}: {exc}") from exc


def _direct_transport(limits: httpx.Limits) -> httpx.AsyncBaseTransport | None:
    """Our lighter keep-alive pool, unless the environment names a proxy (None: httpx's own transport).

    httpx reads the same variables (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY) with the same function.
    """
    if any(urllib.request.getproxies().get(scheme) for scheme in ("http", "https", "all")):
        return None
    return KeepAlivePool(httpx.create_ssl_context(), limits)


@dataclass(frozen=True)
class _Answer:
    """What one request produced: a redirect (`location` set), a 304, or a body."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    content: bytes = b""
    location: str | None = None


async def _answer(response: httpx.Response, limits: FetchLimits) -> _Answer:
    """Classify the response and, for a success, read its body within the size cap."""
    status = response.status_code
    headers = {name.lower(): value for name, value in response.headers.items()}
    if not 200 <= status < 300:
        await _finish_unwanted_body(response)
    if status in REDIRECTS:
        location = response.headers.get("location")
        if not location:
            raise HTTPStatusError(f"{_status_text(status)} without a Location header", status=status)
        return _Answer(status, headers, location=location)
    if status == 304:
        return _Answer(status, headers)
    _raise_for_status(response)
    _check_declared_length(response, limits.max_bytes)
    return _Answer(status, headers, await _read_body(response, limits.max_bytes))


async def _finish_unwanted_body(response: httpx.Response) -> None:
    """Read the short body of a 304, redirect or error to its end, so its connection can serve the next feed.

    A connection goes back to the pool only when its response was read to the end, and
    is closed otherwise: without this every 304 would cost a new TCP (and TLS)
    connection. A body that is long, of unknown length, slow or broken is left unread:
    the connection is then closed, and the answer stands.
    """
    if response.status_code != 304 and not _declared_length_at_most(response, MAX_UNWANTED_BODY):
        return
    with contextlib.suppress(httpx.HTTPError, TimeoutError):
        async with asyncio.timeout(UNWANTED_BODY_SECONDS):
            async for _ in response.aiter_raw():
                pass


def _declared_length_at_most(response: httpx.Response, limit: int) -> bool:
    declared = response.headers.get("content-length", "").strip()
    return declared.isdigit() and int(declared) <= limit


def _raise_for_status(response: httpx.Response) -> None:
    """Raise the error an operator should see for anything but a 2xx with a body."""
    status = response.status_code
    text = _status_text(status)
    if status == 410:
        raise GoneError(f"{text}: the feed was removed; it is disabled until its URL changes", status=status)
    if status in RATE_LIMITED:
        retry_after = parse_retry_after(response.headers.get("retry-after"), _server_now(response))
        if retry_after is not None:
            text += f" (retry after {_format_seconds(retry_after)})"
        raise RateLimitedError(text, status=status, retry_after_seconds=retry_after)
    if status in EMPTY_OR_PARTIAL:
        raise HTTPStatusError(f"{text}: {EMPTY_OR_PARTIAL[status]}", status=status)
    if not 200 <= status < 300:
        raise HTTPStatusError(text, status=status)


def _check_declared_length(response: httpx.Response, max_bytes: int) -> None:
    """Refuse an uncompressed body before reading it when Content-Length is already too big."""
    if content_encodings(response.headers.get("content-encoding")):
        return  # the compressed length says nothing about the decoded one
    declared = response.headers.get("content-length", "")
    if declared.strip().isdigit() and int(declared) > max_bytes:
        raise TooLargeError(f"response larger than {_format_bytes(max_bytes)}")


async def _read_body(response: httpx.Response, max_bytes: int) -> bytes:
    """Stream and decode the body, stopping as soon as the decoded size passes `max_bytes`.

    A compressed body must also be whole: a stream that stops before its end (a gzip
    member without its trailer, say) is an error, not half a feed.
    """
    decoder = decoder_for(response.headers.get("content-encoding"))
    body = bytearray()
    received = 0
    try:
        async for chunk in response.aiter_raw():
            received += len(chunk)
            if received > max_bytes * MAX_WIRE_FACTOR:
                raise TooLargeError(f"response larger than {_format_bytes(max_bytes)}")
            # Asking for one byte more than fits is how we learn that it does not.
            body += decoder.decode(chunk, max_bytes - len(body) + 1)
            _check_decoded_size(body, max_bytes)
    except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
        raise FetchError(f"the server closed the connection before the body was complete ({exc})") from exc
    # One stage of stacked encodings may still hold input back behind its output limit.
    while decoder.pending():
        body += decoder.decode(b"", max_bytes - len(body) + 1)
        _check_decoded_size(body, max_bytes)
        await asyncio.sleep(0)  # a long drain must not keep the deadline from firing
    unfinished = decoder.unfinished()
    if unfinished is not None:
        raise FetchError(f"the {unfinished} body was cut short: the compressed data stops before its end")
    return bytes(body)


def _check_decoded_size(body: bytearray, max_bytes: int) -> None:
    if len(body) > max_bytes:
        raise TooLargeError(f"response larger than {_format_bytes(max_bytes)}")


def _result(
    url: str,
    final: httpx.URL,
    answer: _Answer,
    sent: Validators,
    permanent_url: str | None,
    elapsed_ms: int,
) -> FetchResult:
    """Build the FetchResult; a 304 keeps the validators we sent unless it brought new ones."""
    etag = answer.headers.get("etag")
    last_modified = answer.headers.get("last-modified")
    if answer.status == 304:
        validators = Validators(etag=etag or sent.etag, last_modified=last_modified or sent.last_modified)
    else:
        validators = Validators(etag=etag, last_modified=last_modified)
    return FetchResult(
        url=url,
        final_url=str(final),
        status=answer.status,
        content=answer.content,
        headers=answer.headers,
        validators=validators,
        permanent_url=permanent_url,
        elapsed_ms=elapsed_ms,
    )


# --- URLs, headers, timeouts ---------------------------------------------------


def _checked_url(url: str) -> httpx.URL:
    """Parse a feed URL, refusing anything we must not fetch (ftp:, file:, no host)."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise InvalidURLError(f"invalid URL {url!r}: {exc}") from exc
    if not parsed.scheme:
        raise InvalidURLError(f"URL {url!r} has no scheme (expected http:// or https://)")
    if parsed.scheme not in ALLOWED_SCHEMES:
        raise InvalidURLError(f"unsupported URL scheme {parsed.scheme!r}")
    if not parsed.host:
        raise InvalidURLError(f"URL {url!r} has no host")
    return parsed


def _redirect_target(current: httpx.URL, location: str) -> httpx.URL:
    """Resolve a (possibly relative) Location against the URL that sent it."""
    try:
        target = current.join(location)
    except httpx.InvalidURL as exc:
        raise InvalidURLError(f"redirected to an invalid URL {location!r}: {exc}") from exc
    try:
        return _checked_url(str(target))
    except InvalidURLError as exc:
        raise InvalidURLError(f"redirected to {target}: {exc}") from exc


def _conditional_headers(validators: Validators) -> dict[str, str]:
    """If-None-Match / If-Modified-Since from what we stored, skipping values HTTP cannot carry."""
    headers = {}
    if validators.etag and _sendable(validators.etag):
        headers["If-None-Match"] = validators.etag
    if validators.last_modified and _sendable(validators.last_modified):
        headers["If-Modified-Since"] = validators.last_modified
    return headers


def _sendable(value: str) -> bool:
    # A stored value with non-ASCII or control characters would make httpx raise.
    return value.isascii() and value.isprintable()


def _timeouts(limits: FetchLimits) -> httpx.Timeout:
    total = limits.timeout_seconds
    return httpx.Timeout(total, connect=min(MAX_CONNECT_TIMEOUT_SECONDS, total))


def _host_port(url: httpx.URL) -> str:
    host = f"[{url.host}]" if ":" in url.host else url.host
    port = url.port or (443 if url.scheme == "https" else 80)
    return f"{host}:{port}"


# --- errors in words --------------------------------------------------------------


def _translate(exc: httpx.HTTPError, url: httpx.URL, limits: FetchLimits) -> FetchError:
    """Say what went wrong on the network in words an operator understands."""
    where = _host_port(url)
    if isinstance(exc, httpx.ConnectTimeout):
        connect = min(MAX_CONNECT_TIMEOUT_SECONDS, limits.timeout_seconds)
        return FetchTimeoutError(f"could not connect to {where} within {_format_seconds(connect)}")
    if isinstance(exc, httpx.TimeoutException):
        return FetchTimeoutError(f"timed out after {_format_seconds(limits.timeout_seconds)}")
    if isinstance(exc, httpx.ConnectError):
        return ConnectError(_connect_failure(exc, url))
    if isinstance(exc, httpx.RemoteProtocolError):
        if "without sending a response" in str(exc):
            return ConnectError("server closed the connection without answering")
        return FetchError(f"{where} sent an invalid HTTP response ({_reason(exc)})")
    if isinstance(exc, httpx.NetworkError):
        return ConnectError(f"connection to {where} failed: {_os_reason(exc)}")
    if isinstance(exc, httpx.UnsupportedProtocol):
        return InvalidURLError(f"unsupported URL {str(url)!r}: {_reason(exc)}")
    return FetchError(f"request to {where} failed: {_reason(exc)}")


def _connect_failure(exc: httpx.ConnectError, url: httpx.URL) -> str:
    """Find the cause of a failed connection (refused, DNS, TLS) in the exception chain."""
    where = _host_port(url)
    for cause in _causes(exc):
        if isinstance(cause, ConnectionRefusedError):
            return f"connection refused by {where}"
        if isinstance(cause, socket.gaierror):
            return f"could not resolve host {url.host!r}"
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"TLS certificate of {url.host} was not accepted: {cause.verify_message}"
        if isinstance(cause, ssl.SSLError):
            return f"TLS handshake with {where} failed: {cause.reason or _reason(cause)}"
    return f"could not connect to {where}: {_os_reason(exc)}"


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _os_reason(exc: BaseException) -> str:
    """The operating system's words for the deepest OSError (e.g. 'Connection reset by peer')."""
    for cause in _causes(exc):
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
    return _reason(exc)


def _reason(exc: BaseException) -> str:
    return str(exc).strip() or type(exc).__name__


def _status_text(status: int) -> str:
    try:
        return f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"


# --- Retry-After ---------------------------------------------------------------------


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date).

    None when the header is absent or unreadable; a date in the past gives 0; the
    result is capped at MAX_RETRY_AFTER_SECONDS. A naive `now` or date means UTC.
    """
    text = (value or "").strip()
    if not text:
        return None
    if _DELTA_SECONDS.fullmatch(text):
        seconds = float(text)
    else:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = (_as_utc(when) - _as_utc(now)).total_seconds()
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _server_now(response: httpx.Response) -> datetime:
    """The server's Date when it sent one: a Retry-After date is on the server's clock, not ours."""
    date = response.headers.get("date")
    if date:
        with contextlib.suppress(TypeError, ValueError, IndexError):
            return _as_utc(parsedate_to_datetime(date))
    return datetime.now(UTC)


# --- numbers in words -----------------------------------------------------------------


def _format_seconds(seconds: float) -> str:
    """'20 s', '0.5 s', '3600 s': whole seconds from 10 s up, two decimals at most below."""
    if seconds >= 10 or seconds == int(seconds):
        return f"{round(seconds)} s"
    return f"{seconds:.2f}".rstrip("0").rstrip(".") + " s"


def _format_bytes(count: int) -> str:
    """'15 MiB', '1.5 KiB', '512 bytes'."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= size:
            return f"{count / size:.1f}".removesuffix(".0") + f" {unit}"
    return f"{count} bytes"
