"""Plain values passed between the pipeline's stages.

Every value that crosses a module boundary is one of these frozen dataclasses; a
feedparser dict, an httpx response or a database row never leaves its own module.
This module imports nothing of ours.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

_WORD_EDGE = re.compile(r"^\w(?:.*\w)?$", re.DOTALL)


@dataclass(frozen=True)
class FeedConfig:
    """One feed as configured in feeds.yaml, with defaults applied."""

    name: str
    url: str
    title: str | None = None
    interval_seconds: float = 15 * 60
    timeout_seconds: float = 20.0
    max_bytes: int = 15 * 1024 * 1024
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class FetchLimits:
    """How long and how much one GET may take; see fetch for how each is enforced."""

    timeout_seconds: float = 20.0
    max_bytes: int = 15 * 1024 * 1024
    max_redirects: int = 10


@dataclass(frozen=True)
class Validators:
    """What we remember of the last response, for a conditional GET."""

    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True)
class FetchResult:
    """A successful GET: either a body (status 200) or 'not modified' (304).

    `url` is the URL that was asked for; `final_url` the one that answered after
    redirects; `permanent_url` is set only when every hop was permanent (301/308),
    so the caller may store it as the feed's new address.
    """

    url: str
    final_url: str
    status: int
    content: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    validators: Validators = field(default_factory=Validators)
    permanent_url: str | None = None
    elapsed_ms: int = 0

    @property
    def not_modified(self) -> bool:
        return self.status == 304


@dataclass(frozen=True)
class FeedHints:
    """The feed's own polling hints (RSS ttl, sy:updatePeriod, skipHours/skipDays)."""

    ttl_minutes: int | None = None
    update_period_seconds: int | None = None
    skip_hours: frozenset[int] = frozenset()
    skip_days: frozenset[str] = frozenset()
    max_age_seconds: int | None = None  # from the HTTP Cache-Control header, not the document


@dataclass(frozen=True)
class EntryData:
    """One normalized entry as parsed from a feed, before it is stored.

    `title` is plain text; `summary` and `content` are sanitized HTML with absolute
    URLs; dates are timezone-aware UTC or None (unknown, or implausibly in the future).
    """

    key: str
    title: str
    link: str | None = None
    canonical_link: str | None = None
    author: str | None = None
    summary: str = ""
    content: str = ""
    published: datetime | None = None
    updated: datetime | None = None
    categories: tuple[str, ...] = ()
    content_hash: str = ""
    # The summary (else the content) as plain text, cut to a few hundred words: what search
    # indexes, stories compare and pages show as the short summary.
    text: str = ""


@dataclass(frozen=True)
class ParsedFeed:
    """A feed document turned into values: its metadata and its entries."""

    title: str | None
    link: str | None
    entries: tuple[EntryData, ...]
    hints: FeedHints = field(default_factory=FeedHints)
    warning: str | None = None


@dataclass(frozen=True)
class Entry:
    """A stored entry, as the outputs and exports see it."""

    id: int
    uid: str
    feed: str
    feed_title: str
    feed_link: str | None
    key: str
    title: str
    link: str | None
    author: str | None
    summary: str
    content: str
    published: datetime
    updated: datetime
    first_seen: datetime
    tags: tuple[str, ...] = ()
    story_id: int | None = None
    text: str = ""
    # The story's stable id (its first entry's uid), for exports and links.
    story: str | None = None


@dataclass(frozen=True)
class FeedStatus:
    """A feed's fetch state as `aggregator feeds` shows it."""

    name: str
    url: str
    title: str | None
    status: str
    last_error: str | None
    entries: int
    last_fetched: datetime | None
    next_fetch: datetime | None
    error_count: int = 0
    disabled: bool = False
    next_reason: str | None = None


@dataclass(frozen=True)
class TagRule:
    """How one taxonomy node is recognised.

    `names` match case-insensitively as whole words; `tickers` only as written in
    capitals or with `$`; `aliases` are outlet category labels that map to this
    node; `needs_context` names (Gemini, Kraken, ...) count only when the same
    text is clearly about crypto. A `replace` rule (from feeds.yaml) takes the place
    of the built-in node with its path instead of adding to it.
    """

    path: str
    names: tuple[str, ...] = ()
    tickers: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    needs_context: bool = False
    replace: bool = False

    @classmethod
    def from_spec(
        cls,
        path: str,
        names: Sequence[str] = (),
        tickers: Sequence[str] = (),
        aliases: Sequence[str] = (),
        needs_context: bool | Sequence[str] = False,
        replace: bool = False,
    ) -> tuple[TagRule, ...]:
        """The rules of one taxonomy node as written in YAML (taxonomy.yaml or feeds.yaml `tags:`).

        A `needs_context` list splits the node in two: the listed names and tickers need
        crypto context, the others do not. Raises ValueError (naming the sub-key) for a
        name or ticker that cannot match as a whole word.
        """
        for key, words in (("names", names), ("tickers", tickers)):
            for word in words:
                if not _WORD_EDGE.match(word):
                    raise ValueError(f"{key}: {word!r} must start and end with a letter or digit")
        if isinstance(needs_context, bool):
            return (cls(path, tuple(names), tuple(tickers), tuple(aliases), needs_context, replace),)
        listed = set(needs_context)
        strangers = sorted(listed - set(names) - set(tickers))
        if strangers:
            raise ValueError(f"needs_context: {strangers[0]!r} is not one of this node's names or tickers")
        free = cls(
            path,
            tuple(name for name in names if name not in listed),
            tuple(ticker for ticker in tickers if ticker not in listed),
            tuple(aliases),
            replace=replace,
        )
        if not listed:
            return (free,)
        bound = cls(
            path,
            tuple(name for name in names if name in listed),
            tuple(ticker for ticker in tickers if ticker in listed),
            needs_context=True,
            replace=replace,
        )
        return (free, bound)


@dataclass(frozen=True)
class SiteConfig:
    """What render needs to know about the site it writes."""

    title: str
    site_url: str
    output_dir: str
    timezone: str = "UTC"
    templates_dir: str | None = None
    feed_entries: int = 100
    tag_feed_entries: int = 50
    # "story": one feed item per story, refreshed as outlets join; "entry": one per entry.
    feed_per: str = "story"
    digest_max_stories: int = 60


@dataclass(frozen=True)
class FeedState:
    """What the store remembers of a feed between polls, as fetch needs it."""

    name: str
    url: str
    validators: Validators = field(default_factory=Validators)
    body_hash: str | None = None
    error_count: int = 0
    disabled: bool = False
    hints: FeedHints = field(default_factory=FeedHints)
    last_fetched: datetime | None = None
    next_fetch: datetime | None = None


@dataclass(frozen=True)
class TaggedEntry:
    """A parsed entry with the tags it was given."""

    entry: EntryData
    tags: frozenset[str] = frozenset()


@dataclass(frozen=True)
class PollOutcome:
    """Everything one poll of one feed learned, stored in one transaction.

    `status` is "ok" (a body was parsed), "not_modified" (304 or the same body
    again) or "error" (nothing stored but the error). `new_url` is set after a
    permanent redirect.
    """

    feed: str
    status: str
    fetched_at: datetime
    next_fetch: datetime
    validators: Validators = field(default_factory=Validators)
    body_hash: str | None = None
    new_url: str | None = None
    feed_title: str | None = None
    feed_link: str | None = None
    entries: tuple[TaggedEntry, ...] = ()
    error_code: str | None = None
    error: str | None = None
    disabled: bool = False
    http_status: int | None = None
    bytes_received: int = 0
    elapsed_ms: int = 0
    next_reason: str = "interval"
    hints: FeedHints | None = None
    retry_after: datetime | None = None


@dataclass(frozen=True)
class StoreCounts:
    """How many entries one poll added and changed, and the ids of the added ones.

    `new_items` are the added entries as story assignment sees them (in id order), so they can
    be grouped into stories as soon as they are stored, without reading them back.
    """

    new: int = 0
    updated: int = 0
    new_ids: tuple[int, ...] = ()
    new_items: tuple[StoryItem, ...] = ()


@dataclass(frozen=True)
class StoryItem:
    """What story assignment knows of one entry: its words, entities and time, never its HTML."""

    id: int
    feed: str
    title: str
    text: str
    tags: frozenset[str]
    published: datetime
    # Its words as grouping last stored them (`stories.profile_text`), when they are still good.
    profile: str | None = None


@dataclass(frozen=True)
class Story:
    """One news event as reported by one or more outlets.

    `id` is the id of its first entry and never changes as entries join; `entries` are
    its members, first reporter first; `updated` is when the last outlet joined.
    """

    id: int
    uid: str
    headline: str
    first_seen: datetime
    updated: datetime
    entries: tuple[Entry, ...]

    @property
    def first(self) -> Entry:
        return self.entries[0]

    @property
    def feeds(self) -> tuple[str, ...]:
        """Each outlet once, in the order they reported."""
        return tuple(dict.fromkeys(entry.feed for entry in self.entries))

    @property
    def tags(self) -> tuple[str, ...]:
        return tuple(sorted({tag for entry in self.entries for tag in entry.tags}))


@dataclass(frozen=True)
class SearchHit:
    """One search result: the entry, its bm25 rank (lower is better) and a snippet with marks."""

    entry: Entry
    rank: float
    snippet: str


@dataclass(frozen=True)
class ChangeMarker:
    """The newest entry id and rewrite time a reader has seen, to ask the store later what changed."""

    last_id: int = 0
    last_rewrite: str = ""
    last_story: str = ""
