"""Keep-alive HTTP/1.1 connections for `fetch`: an httpx transport in place of httpx's own pool.

httpx sends each request through httpcore's `AsyncConnectionPool`, which, whenever a
request starts or ends, walks all its connections (polling each socket, and counting
the idle ones once per idle connection), and can hand one idle connection to two
requests that arrive together, one of which then fails over and walks them again
(encode/httpcore#1035, #1110). With sixteen feeds in flight that bookkeeping cost more
CPU than the HTTP itself.

`KeepAlivePool` drives the same httpcore connections (`httpcore.AsyncHTTPConnection`:
the same HTTP/1.1, TLS, timeouts and errors) but looks for one idle connection to the
request's origin and gives each connection to one request at a time. It raises the
httpx exceptions that httpx's own transport raises, keeps idle connections up to
`Limits.max_keepalive_connections` for `Limits.keepalive_expiry` seconds, and closes
an idle one to make room when `Limits.max_connections` are open.

What it does not do: queue requests (the Fetcher's global and per-host limits bound
how many run at once), proxies (`fetch` keeps httpx's own transport when the
environment names one), HTTP/2 or retries.
"""

from __future__ import annotations

import contextlib
import ssl
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterator

import httpcore
import httpx

# Idle connections are checked for expiry (or a close by the server) at most this often,
# besides when one is taken for a request.
SWEEP_SECONDS = 1.0

# httpcore's exceptions mirror httpx's; each is raised as the httpx one of the same name.
_HTTPX_ERRORS: dict[type[Exception], type[httpx.HTTPError]] = {
    httpcore.TimeoutException: httpx.TimeoutException,
    httpcore.ConnectTimeout: httpx.ConnectTimeout,
    httpcore.ReadTimeout: httpx.ReadTimeout,
    httpcore.WriteTimeout: httpx.WriteTimeout,
    httpcore.PoolTimeout: httpx.PoolTimeout,
    httpcore.NetworkError: httpx.NetworkError,
    httpcore.ConnectError: httpx.ConnectError,
    httpcore.ReadError: httpx.ReadError,
    httpcore.WriteError: httpx.WriteError,
    httpcore.ProxyError: httpx.ProxyError,
    httpcore.UnsupportedProtocol: httpx.UnsupportedProtocol,
    httpcore.ProtocolError: httpx.ProtocolError,
    httpcore.LocalProtocolError: httpx.LocalProtocolError,
    httpcore.RemoteProtocolError: httpx.RemoteProtocolError,
}


class KeepAlivePool(httpx.AsyncBaseTransport):
    """HTTP/1.1 connections kept open per origin, one request on each at a time."""

    def __init__(self, ssl_context: ssl.SSLContext, limits: httpx.Limits) -> None:
        self._ssl_context = ssl_context
        self._max_open = limits.max_connections
        self._max_idle = limits.max_keepalive_connections
        self._keepalive_seconds = limits.keepalive_expiry
        self._backend = httpcore.AnyIOBackend()
        self._idle: list[httpcore.AsyncHTTPConnection] = []  # the longest idle first
        self._busy: set[httpcore.AsyncHTTPConnection] = set()
        self._next_sweep = 0.0

    @property
    def open_connections(self) -> int:
        return len(self._idle) + len(self._busy)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {request.url.scheme!r}", request=request)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        connection = await self._connection_for(core_request.url.origin)
        try:
            with _as_httpx_errors():
                response = await connection.handle_async_request(core_request)
        except BaseException:
            await self._release(connection)
            raise
        assert isinstance(response.stream, AsyncIterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_Body(response.stream, self, connection),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        connections = [*self._idle, *self._busy]
        self._idle.clear()
        self._busy.clear()
        await _close(connections)

    async def _connection_for(self, origin: httpcore.Origin) -> httpcore.AsyncHTTPConnection:
        """The most recently used idle connection to `origin` that is still good, or a new one."""
        stale = self._expired_idle()
        connection = None
        for index in range(len(self._idle) - 1, -1, -1):
            candidate = self._idle[index]
            if candidate.can_handle_request(origin):
                del self._idle[index]
                if candidate.is_available() and not candidate.has_expired():
                    connection = candidate
                    break
                stale.append(candidate)
        if connection is None:
            if self._idle and self._max_open is not None and self.open_connections >= self._max_open:
                stale.append(self._idle.pop(0))
            connection = httpcore.AsyncHTTPConnection(
                origin=origin,
                ssl_context=self._ssl_context,
                keepalive_expiry=self._keepalive_seconds,
                network_backend=self._backend,
            )
        self._busy.add(connection)
        await _close(stale)
        return connection

    async def _release(self, connection: httpcore.AsyncHTTPConnection) -> None:
        """Keep a connection whose response was read to its end; close any other."""
        self._busy.discard(connection)
        if connection.is_closed():
            return
        if not connection.is_idle():
            await _close([connection])
            return
        self._idle.append(connection)
        surplus = []
        while self._idle and self._over_limits():
            surplus.append(self._idle.pop(0))
        await _close(surplus)

    def _over_limits(self) -> bool:
        too_many_idle = self._max_idle is not None and len(self._idle) > self._max_idle
        too_many_open = self._max_open is not None and self.open_connections > self._max_open
        return too_many_idle or too_many_open

    def _expired_idle(self) -> list[httpcore.AsyncHTTPConnection]:
        """Take out the idle connections past their keep-alive or closed by the server (now and then)."""
        now = time.monotonic()
        if now < self._next_sweep or not self._idle:
            return []
        self._next_sweep = now + SWEEP_SECONDS
        expired = [connection for connection in self._idle if connection.has_expired()]
        if expired:
            self._idle = [connection for connection in self._idle if connection not in expired]
        return expired


class _Body(httpx.AsyncByteStream):
    """A response body that gives its connection back to the pool when it is closed."""

    def __init__(
        self, stream: AsyncIterable[bytes], pool: KeepAlivePool, connection: httpcore.AsyncHTTPConnection
    ) -> None:
        self._stream = stream
        self._pool = pool
        self._connection = connection
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx_errors():
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            close = getattr(self._stream, "aclose", None)
            if close is not None:
                with _as_httpx_errors():
                    await close()
        finally:
            await self._pool._release(self._connection)


async def _close(connections: list[httpcore.AsyncHTTPConnection]) -> None:
    for connection in connections:
        await connection.aclose()


@contextlib.contextmanager
def _as_httpx_errors() -> Iterator[None]:
    """Raise an httpcore error as the httpx error of the same name, as httpx's own transport does."""
    try:
        yield
    except Exception as exc:
        mapped = next((_HTTPX_ERRORS[kind] for kind in type(exc).__mro__ if kind in _HTTPX_ERRORS), None)
        if mapped is None:
            raise
        raise mapped(str(exc)) from exc
