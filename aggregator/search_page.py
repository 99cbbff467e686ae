"""Search for people: the page `aggregator serve` answers at /search, and what the
`search`, `tags` and `export` commands share with it.

`Store.search` does the finding (FTS5, bm25, snippets marked with MATCH_START and
MATCH_END). This module turns what a person typed into its arguments (a tag or feed
name written loosely), splits marked text into plain and matched parts so that every
caller escapes the text before it marks it (`<mark>` on the page, bold or «» in a
terminal), orders the tag tree, and renders the results page through render's Jinja2
environment (autoescape on). It speaks no SQL and no HTTP: web hands it the query
string and sends back the status and body it returns.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from aggregator.errors import SearchQueryError, StoreError
from aggregator.models import SearchHit, SiteConfig
from aggregator.render import template_environment
from aggregator.store import Store
from aggregator.store_fts import MATCH_END, MATCH_START

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 20
#: The most results one page shows; a larger `limit` in the URL is cut to this.
MAX_LIMIT = 100
#: Longer queries are refused (400) rather than handed to FTS5.
MAX_QUERY_CHARS = 500
#: At most this many query-string fields are read; more is a 400.
MAX_QUERY_FIELDS = 20
#: Length of the summary excerpt shown when the match was in the title only.
EXCERPT_CHARS = 240
SEARCH_TEMPLATE = "search.html"
#: The page is served at /search, so these relative links reach the site's root.
INDEX_HREF = "./"
FEED_HREF = "feed.atom"
SEARCH_HREF = "search"
#: Shown instead of the store's own message, which names server paths.
UNAVAILABLE = "Search is not available right now: the database cannot be read. Try again later."

_MARKS = re.compile(f"([{MATCH_START}{MATCH_END}])")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_WHITESPACE = re.compile(r"\s+")
_URL_UNSAFE = re.compile("[\x00-\x20\x7f-\x9f]")

#: A piece of marked text: the text and whether it is a match.
Part = tuple[str, bool]


class FilterError(ValueError):
    """A tag or feed filter that names nothing in the database; a usage error."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class SearchResults:
    """The hits of one search, and the tag and feed they were filtered by, as resolved."""

    hits: tuple[SearchHit, ...]
    tag: str | None = None
    feed: str | None = None


@dataclass(frozen=True)
class TagCount:
    """One node of the tag tree: its path and how many entries carry it."""

    path: str
    count: int

    @property
    def depth(self) -> int:
        return self.path.count("/")

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class HitText:
    """What to show of a hit: its title and a snippet, each as plain and matched parts."""

    title: tuple[Part, ...]
    snippet: tuple[Part, ...]


@dataclass(frozen=True)
class HitView:
    """One result as the page template shows it; every string is plain text for autoescape."""

    title: tuple[Part, ...]
    link: str | None
    feed: str
    feed_href: str
    published: str
    published_text: str
    tags: tuple[tuple[str, str, str], ...]  # (path, leaf name, filter href)
    snippet: tuple[Part, ...]


@dataclass(frozen=True)
class SearchResponse:
    """The page web sends: an HTTP status and the HTML."""

    status: int
    body: bytes


# ------------------------------------------------------------------ finding


def find(
    store: Store,
    query: str,
    *,
    tag: str | None = None,
    feed: str | None = None,
    since: datetime | None = None,
    limit: int = DEFAULT_LIMIT,
) -> SearchResults:
    """Search, reading `tag` and `feed` loosely ("binance" is `Blockchain/Binance`).

    The filters are checked only when nothing matched, so the common case costs one
    query. Raises SearchQueryError for a query FTS5 cannot read, FilterError for a tag
    or feed that no entry has.
    """
    hits = store.search(query, tag=tag, feed=feed, since=since, limit=limit)
    if hits or (tag is None and feed is None):
        return SearchResults(tuple(hits), tag, feed)
    resolved_feed = feed
    if feed is not None:
        names = [status.name for status in store.feed_statuses(active_only=False)]
        resolved_feed = _resolve(feed, names, "feed", f"no feed named {feed!r} in the database")
    resolved_tag = tag
    if tag is not None:
        resolved_tag = resolve_tag(tag, (path for path, _count in store.tags_in_use()))
    if (resolved_tag, resolved_feed) != (tag, feed):
        hits = store.search(query, tag=resolved_tag, feed=resolved_feed, since=since, limit=limit)
    return SearchResults(tuple(hits), resolved_tag, resolved_feed)


def resolve_tag(tag: str, in_use: Iterable[str]) -> str:
    """The tag path meant by `tag`: the path itself, in any case, or a unique last segment.

    Raises FilterError when no tag in use (or more than one) fits.
    """
    return _resolve(tag, in_use, "tag", f"no entry is tagged {tag!r} (`aggregator tags` lists the tags in use)")


def _resolve(given: str, known: Iterable[str], option: str, missing: str) -> str:
    names = list(known)
    if given in names:
        return given
    wanted = given.strip().strip("/").casefold()
    for candidates in (
        [name for name in names if name.casefold() == wanted],
        [name for name in names if name.rsplit("/", 1)[-1].casefold() == wanted],
    ):
        if len(candidates) == 1:
            return candidates[0]
        if len(candidates) > 1:
            raise FilterError(option, f"{given!r} could be {', '.join(sorted(candidates))}; give the full {option}")
    raise FilterError(option, missing)


def tag_tree(counts: Iterable[tuple[str, int]]) -> list[TagCount]:
    """The tags in tree order: each parent before its children, siblings by count, then name.

    A parent no entry carries (rollup normally adds it) appears with a count of 0.
    """
    count_of = dict(counts)
    nodes = set(count_of)
    for path in count_of:
        parts = path.split("/")
        nodes.update("/".join(parts[:end]) for end in range(1, len(parts)))
    children: dict[str, list[str]] = defaultdict(list)
    for node in nodes:
        children[node.rpartition("/")[0]].append(node)

    def order(path: str) -> tuple[int, str, str]:
        return (-count_of.get(path, 0), path.rsplit("/", 1)[-1].casefold(), path)

    tree: list[TagCount] = []
    pending = sorted(children[""], key=order, reverse=True)
    while pending:
        path = pending.pop()
        tree.append(TagCount(path, count_of.get(path, 0)))
        pending.extend(sorted(children[path], key=order, reverse=True))
    return tree


# ------------------------------------------------------------------ marked text


def marked_parts(text: str) -> tuple[Part, ...]:
    """Split text with MATCH_START/MATCH_END marks into (text, is_match) parts, marks removed.

    Control characters become spaces, so neither a page nor a terminal can be fooled.
    """
    parts: list[Part] = []
    matching = False
    for piece in _MARKS.split(text):
        if piece in (MATCH_START, MATCH_END):
            matching = piece == MATCH_START
        elif piece:
            parts.append((_CONTROL.sub(" ", piece), matching))
    return tuple(parts)


def plain(parts: Sequence[Part]) -> str:
    return "".join(text for text, _match in parts)


def hit_text(hit: SearchHit) -> HitText:
    """The title and snippet to show for a hit.

    FTS5 takes the snippet from the column that matched best; when that was the title,
    the title is shown with its matches marked and the summary's start stands in for
    the snippet, rather than the title twice.
    """
    title = _CONTROL.sub(" ", hit.entry.title)
    snippet = marked_parts(_WHITESPACE.sub(" ", hit.snippet))
    core = plain(snippet).strip().strip("…").strip()
    text = _WHITESPACE.sub(" ", hit.entry.text).strip()
    if core and core in title and core not in text:
        excerpt = _excerpt(text, EXCERPT_CHARS)
        return HitText(snippet, ((excerpt, False),) if excerpt else ())
    return HitText(((title, False),), snippet)


def _excerpt(text: str, limit: int) -> str:
    text = _CONTROL.sub(" ", text)
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0] or text[:limit]
    return cut.rstrip(" ,;:.") + "…"


# ------------------------------------------------------------------ the page


def search_page(database: Path, query_string: str, site: SiteConfig | None = None) -> SearchResponse:
    """Answer GET /search?q=...&tag=...&feed=...&limit=...: the results page and its status.

    200 with results (or the empty form when there is no query), 400 with the reason
    on the page for a query or filter that cannot be used, 503 when the database
    cannot be read. Opens the database read-only for this request only.
    """
    site = site or SiteConfig(title="Search", site_url="/", output_dir=".")
    try:
        fields = urllib.parse.parse_qs(
            query_string, keep_blank_values=True, max_num_fields=MAX_QUERY_FIELDS, errors="replace"
        )
    except ValueError:
        return _page(site, 400, error="The address has too many fields.")
    form = {name: values[0].strip() for name, values in fields.items() if values}
    query = form.get("q", "")
    tag = form.get("tag") or None
    feed = form.get("feed") or None
    limit_text = form.get("limit") or str(DEFAULT_LIMIT)
    if not limit_text.isdigit() or int(limit_text) < 1:
        return _page(site, 400, query, tag, feed, error=f"limit must be a whole number from 1 to {MAX_LIMIT}.")
    limit = min(int(limit_text), MAX_LIMIT)
    if len(query) > MAX_QUERY_CHARS:
        return _page(site, 400, query[:MAX_QUERY_CHARS], tag, feed, limit, error="The query is too long.")
    if not query:
        return _page(site, 200, "", tag, feed, limit)
    try:
        with Store(database, readonly=True) as store:
            results = find(store, query, tag=tag, feed=feed, limit=limit)
    except (SearchQueryError, FilterError) as error:
        return _page(site, 400, query, tag, feed, limit, error=str(error))
    except StoreError as error:
        log.warning("search page: %s", error)
        return _page(site, 503, query, tag, feed, limit, error=UNAVAILABLE)
    return _page(site, 200, query, results.tag, results.feed, limit, results=results)


def search_html(
    site: SiteConfig,
    *,
    query: str = "",
    tag: str | None = None,
    feed: str | None = None,
    limit: int = DEFAULT_LIMIT,
    results: SearchResults | None = None,
    error: str | None = None,
) -> bytes:
    """The results page (or the bare form) as UTF-8 HTML; pure, for tests and web alike."""
    tz = ZoneInfo(site.timezone)
    hits = results.hits if results else ()
    env = template_environment(site.templates_dir)
    text = env.get_template(SEARCH_TEMPLATE).render(
        site_title=_CONTROL.sub(" ", site.title),
        root="",
        feed_href=FEED_HREF,
        index_href=INDEX_HREF,
        search_href=SEARCH_HREF,
        query=_CONTROL.sub(" ", query),
        tag=tag or "",
        feed=feed or "",
        limit=limit,
        default_limit=DEFAULT_LIMIT,
        error=error,
        searched=results is not None,
        hits=[_view(hit, query, limit, tz) for hit in hits],
        count=len(hits),
        more=len(hits) >= limit,
    )
    return text.encode("utf-8")


def _page(
    site: SiteConfig,
    status: int,
    query: str = "",
    tag: str | None = None,
    feed: str | None = None,
    limit: int = DEFAULT_LIMIT,
    *,
    results: SearchResults | None = None,
    error: str | None = None,
) -> SearchResponse:
    body = search_html(site, query=query, tag=tag, feed=feed, limit=limit, results=results, error=error)
    return SearchResponse(status, body)


def _view(hit: SearchHit, query: str, limit: int, tz: ZoneInfo) -> HitView:
    entry = hit.entry
    shown = hit_text(hit)
    return HitView(
        title=shown.title,
        link=_web_link(entry.link),
        feed=_CONTROL.sub(" ", entry.feed_title or entry.feed),
        feed_href=_search_href(query, limit, feed=entry.feed),
        published=entry.published.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        published_text=entry.published.astimezone(tz).strftime("%Y-%m-%d %H:%M"),
        tags=tuple((path, path.rsplit("/", 1)[-1], _search_href(query, limit, tag=path)) for path in entry.tags),
        snippet=shown.snippet,
    )


def _search_href(query: str, limit: int, **filters: str) -> str:
    fields = {"q": query, **filters}
    if limit != DEFAULT_LIMIT:
        fields["limit"] = str(limit)
    return SEARCH_HREF + "?" + urllib.parse.urlencode(fields)


def _web_link(url: str | None) -> str | None:
    """The URL if a reader may follow it from our page: http or https only, no controls."""
    if not url:
        return None
    url = url.strip()
    scheme, colon, _rest = url.partition(":")
    if not colon or scheme.lower() not in ("http", "https") or _URL_UNSAFE.search(url):
        return None
    return url
