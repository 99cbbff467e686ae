"""Add a feed by its site (find the feeds a page offers, check the chosen one, append it), or remove one.

`find_feeds` fetches a URL with the project's `Fetcher`. A feed is its own answer. An HTML page
is asked for the feeds it advertises with ``<link rel="alternate">`` (`parse` finds and resolves
them); a page that advertises none is tried at the usual addresses (/feed, /rss, /feed.xml,
/rss.xml, /atom.xml, /index.xml) under its own folder and the site's root. Every candidate is
fetched and parsed as a poll would, so the feeds offered are only those the aggregator can read,
each with its title and entry count, and each failure keeps its reason.

`subscribe` runs that, lets the caller choose when a site offers several feeds, and appends the
chosen one through `feeds_file` (name: a slug of its title unless given; the address a permanent
redirect leads to). A feed already in feeds.yaml, or a name already taken, is refused before
anything is written. Nothing here prompts or prints: the CLI supplies the `choose` function.

`unsubscribe` takes a feed out of feeds.yaml and, when asked, deletes its entries through the store.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from aggregator.config import Settings, load_settings
from aggregator.errors import ConfigError, FetchError, NotAFeedError, ParseError
from aggregator.feeds_file import add_feeds, feed_url_key, is_feed_name, name_for, remove_feed
from aggregator.fetch import Fetcher
from aggregator.models import FeedConfig, FetchLimits, FetchResult, ParsedFeed, Validators
from aggregator.parse import parse_feed
from aggregator.store import Store

COMMON_PATHS = ("feed", "rss", "feed.xml", "rss.xml", "atom.xml", "index.xml")
MAX_CANDIDATES = 12
DISCOVERY_LIMITS = FetchLimits(timeout_seconds=20.0, max_bytes=15 * 1024 * 1024)
# One site is asked for a dozen addresses at most; two at a time is polite enough.
DISCOVERY_CONCURRENCY = 4
DISCOVERY_PER_HOST = 2


@dataclass(frozen=True)
class FoundFeed:
    """A feed found for a URL, fetched and parsed."""

    url: str  # what to subscribe to: the address asked for, or where its permanent redirects lead
    title: str | None
    entries: int
    site_link: str | None = None
    warning: str | None = None
    subscribed_as: str | None = None  # the name it already has in feeds.yaml


@dataclass(frozen=True)
class Rejected:
    """A candidate address that is not a feed we can read, and why."""

    url: str
    reason: str


@dataclass(frozen=True)
class Discovery:
    """What a URL led to: the readable feeds (best first) and the candidates that failed."""

    url: str
    feeds: tuple[FoundFeed, ...]
    rejected: tuple[Rejected, ...] = ()
    is_page: bool = False
    tried_common_paths: bool = False


@dataclass(frozen=True)
class Subscribed:
    """The feed appended to feeds.yaml, and what it was chosen from."""

    feed: FeedConfig
    found: FoundFeed
    discovery: Discovery


@dataclass(frozen=True)
class Unsubscribed:
    """What `unsubscribe` did: the feed taken out of feeds.yaml (None if it was not there) and entries deleted."""

    name: str
    removed: FeedConfig | None
    entries_deleted: int | None  # None: not asked to purge


Chooser = Callable[[Sequence[FoundFeed]], FoundFeed]


def subscribe(
    config_path: Path | None,
    url: str,
    choose: Chooser,
    name: str | None = None,
    tags: Sequence[str] = (),
) -> Subscribed:
    """Find the feed(s) at `url`, let `choose` pick one when there are several, and append it to feeds.yaml."""
    settings = load_settings(config_path)
    url = with_scheme(url)
    known = {feed_url_key(feed.url): feed.name for feed in settings.feeds}
    _refuse_known(settings, url, known.get(feed_url_key(url)))
    if name is not None:
        _check_name(settings, name)
    discovery = find_feeds(url)
    offered = tuple(replace(found, subscribed_as=known.get(feed_url_key(found.url))) for found in discovery.feeds)
    if not offered:
        raise _nothing_found(discovery)
    chosen = offered[0] if len(offered) == 1 else choose(offered)
    _refuse_known(settings, chosen.url, chosen.subscribed_as)
    feed_name = name or name_for(chosen.title, chosen.url, [feed.name for feed in settings.feeds])
    feed = FeedConfig(name=feed_name, url=chosen.url, tags=tuple(tags))
    add_feeds(settings.path, [feed])
    return Subscribed(feed, chosen, discovery)


def unsubscribe(config_path: Path | None, name: str, purge: bool = False) -> Unsubscribed:
    """Remove the feed `name` from feeds.yaml; with `purge`, also delete its entries (and its row) from the database.

    Purging also works for a feed already removed from feeds.yaml whose entries are still stored.
    """
    settings = load_settings(config_path)
    removed = next((feed for feed in settings.feeds if feed.name == name), None)
    if removed is not None or not purge:
        remove_feed(settings.path, name)  # for an unknown name: the error, with the names it may have meant
    if not purge:
        return Unsubscribed(name, removed, None)
    deleted = 0
    if settings.database.exists():
        with Store(settings.database) as store:
            deleted = store.delete_feed(name)
    if removed is None and not deleted:
        raise ConfigError(
            str(settings.path), "feeds", f"has no feed named {name!r}, and the database has no entries of it"
        )
    return Unsubscribed(name, removed, deleted)


def with_scheme(url: str) -> str:
    """`url` as typed, with https:// in front when no scheme was given ("decrypt.co")."""
    url = url.strip()
    return url if "://" in url else f"https://{url}"


def _refuse_known(settings: Settings, url: str, existing_name: str | None) -> None:
    if existing_name:
        raise ConfigError(str(settings.path), "feeds", f"already has {url} (as {existing_name!r})")


def _check_name(settings: Settings, name: str) -> None:
    if not is_feed_name(name):
        raise ConfigError(
            "--name",
            "",
            f"{name!r} is not a valid feed name",
            "use letters, digits, '.', '_' and '-', starting with a letter or digit",
        )
    taken = next((feed.name for feed in settings.feeds if feed.name.lower() == name.lower()), None)
    if taken:
        raise ConfigError(str(settings.path), "feeds", f"already has a feed named {taken!r}", "choose another --name")


def _nothing_found(discovery: Discovery) -> ParseError:
    if discovery.tried_common_paths:
        paths = ", ".join(f"/{path}" for path in COMMON_PATHS)
        return NotAFeedError(
            f'{discovery.url} is a web page that advertises no feed (no <link rel="alternate">), and none of '
            f"the usual addresses ({paths}) answered with a feed; pass the feed's own URL"
        )
    reasons = "; ".join(f"{rejected.url}: {rejected.reason}" for rejected in discovery.rejected)
    return NotAFeedError(f"{discovery.url} advertises feeds, but none of them can be read ({reasons})")


# -- discovery --------------------------------------------------------------------------------


def find_feeds(url: str, now: datetime | None = None) -> Discovery:
    """The readable feeds at `url` (the URL itself, or those its page leads to); see the module."""
    return asyncio.run(_find_feeds(url, now or datetime.now(UTC)))


async def _find_feeds(url: str, now: datetime) -> Discovery:
    async with Fetcher(max_concurrency=DISCOVERY_CONCURRENCY, per_host=DISCOVERY_PER_HOST) as fetcher:
        try:
            first = await fetcher.fetch(url, Validators(), DISCOVERY_LIMITS)
        except FetchError as error:
            raise FetchError(f"cannot fetch {url}: {error}") from error
        try:
            parsed = parse_feed(first.content, first.final_url, first.headers, now)
        except NotAFeedError as error:
            advertised = error.feed_links
        except ParseError as error:
            raise ParseError(f"{url} is neither a feed nor a web page: {error}") from error
        else:
            return Discovery(url, (_found(url, first, parsed),))
        candidates = list(advertised) or _common_addresses(first.final_url)
        checked = await asyncio.gather(*(_check(fetcher, candidate, now) for candidate in candidates[:MAX_CANDIDATES]))
    found = _distinct([item for item in checked if isinstance(item, _Checked)])
    rejected = tuple(item for item in checked if isinstance(item, Rejected))
    return Discovery(url, found, rejected, is_page=True, tried_common_paths=not advertised)


@dataclass(frozen=True)
class _Checked:
    """A candidate that is a feed, with where its body came from and a hash of it (to spot the same feed twice)."""

    found: FoundFeed
    place: str
    body_hash: str


async def _check(fetcher: Fetcher, url: str, now: datetime) -> _Checked | Rejected:
    """The feed at `url`, or why it is not one."""
    try:
        result = await fetcher.fetch(url, Validators(), DISCOVERY_LIMITS)
        parsed = parse_feed(result.content, result.final_url, result.headers, now)
    except (FetchError, ParseError) as error:
        return Rejected(url, str(error))
    found = _found(url, result, parsed)
    return _Checked(found, feed_url_key(result.final_url), hashlib.sha256(result.content).hexdigest())


def _found(url: str, result: FetchResult, parsed: ParsedFeed) -> FoundFeed:
    return FoundFeed(
        url=result.permanent_url or url,
        title=parsed.title,
        entries=len(parsed.entries),
        site_link=parsed.link,
        warning=parsed.warning,
    )


def _distinct(checked: Sequence[_Checked]) -> tuple[FoundFeed, ...]:
    """One of each feed: addresses that redirect to the same place, or serve the same bytes, count once."""
    seen_places: set[str] = set()
    seen_bodies: set[str] = set()
    feeds: list[FoundFeed] = []
    for item in checked:
        places = {item.place, feed_url_key(item.found.url)}
        if places & seen_places or item.body_hash in seen_bodies:
            continue
        seen_places.update(places)
        seen_bodies.add(item.body_hash)
        feeds.append(item.found)
    return tuple(feeds)


def _common_addresses(page_url: str) -> list[str]:
    """The usual feed addresses under the page's folder, then under the site's root."""
    parts = urlsplit(page_url)
    root = f"{parts.scheme}://{parts.netloc}/"
    folder = urljoin(page_url, "./")
    bases = [folder, root] if folder != root else [root]
    return list(dict.fromkeys(urljoin(base, path) for base in bases for path in COMMON_PATHS))
