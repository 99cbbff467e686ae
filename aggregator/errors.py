"""The one exception tree of aggregator.

Each error carries a stable `code` (for logs, JSON output and the `last_error`
column) and a message an operator understands, because that message is what
`aggregator feeds` shows. This module imports nothing of ours.
"""

from __future__ import annotations


class AggregatorError(Exception):
    """Base of every error we raise on purpose."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(AggregatorError):
    """feeds.yaml (or a command-line option) is wrong; nothing has run yet."""

    code = "config"

    def __init__(self, file: str, key: str, problem: str, fix: str = "") -> None:
        self.file = file
        self.key = key
        self.problem = problem
        self.fix = fix
        where = f"{file}: {key}: " if key else f"{file}: "
        super().__init__(where + problem + (f" ({fix})" if fix else ""))


class StoreError(AggregatorError):
    """The database cannot be opened, read or written."""

    code = "store"


class SearchQueryError(AggregatorError):
    """A search query that SQLite's full-text syntax cannot read; a usage error, not a failure."""

    code = "search_query"


class FetchError(AggregatorError):
    """A feed could not be fetched; the message becomes the feed's last_error."""

    code = "fetch"


class InvalidURLError(FetchError):
    code = "fetch.invalid_url"


class ConnectError(FetchError):
    code = "fetch.connect"


class FetchTimeoutError(FetchError):
    code = "fetch.timeout"


class TooLargeError(FetchError):
    code = "fetch.too_large"


class TooManyRedirectsError(FetchError):
    code = "fetch.too_many_redirects"


class HTTPStatusError(FetchError):
    """The server answered with a status that is not 200 or 304."""

    code = "fetch.http_status"

    def __init__(self, message: str, status: int, retry_after_seconds: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_seconds = retry_after_seconds


class GoneError(HTTPStatusError):
    """410 Gone: the feed is disabled until someone changes its URL."""

    code = "fetch.gone"


class RateLimitedError(HTTPStatusError):
    """429 or 503: come back later, after Retry-After when the server gave one."""

    code = "fetch.rate_limited"


class ParseError(AggregatorError):
    """The body is not a feed we can read (HTML page, empty body, garbage)."""

    code = "parse"


class NotAFeedError(ParseError):
    """An HTML page (or other document) where a feed was expected."""

    code = "parse.not_a_feed"

    def __init__(self, message: str, feed_links: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.feed_links = feed_links


class EmptyBodyError(ParseError):
    code = "parse.empty"


class DaemonError(AggregatorError):
    """The daemon cannot start or be reached (another one holds the lock, none is running)."""

    code = "daemon"


class ServeError(AggregatorError):
    """The web server cannot listen on the requested address."""

    code = "serve"
