"""One poll cycle: fetch -> parse -> tag -> store -> stories, for many feeds at once.

Fetching is asynchronous and concurrent (global and per-host limits live in
`fetch`); each feed's outcome is stored in its own transaction as soon as it is
known. Errors are values here: an expected failure (network, HTTP, not a feed)
becomes that feed's `status: error` and `last_error`, and the batch goes on.
With many feeds, parsing and story grouping run beside the event loop in the
worker processes of `workers`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from aggregator.config import Settings
from aggregator.errors import AggregatorError, FetchError, GoneError, HTTPStatusError, ParseError, StoreError
from aggregator.fetch import Fetcher
from aggregator.models import FeedConfig, FeedState, FetchResult, PollOutcome, StoreCounts, TaggedEntry
from aggregator.schedule import max_age_from, next_poll
from aggregator.store import Store
from aggregator.store_writer import StoreWriter
from aggregator.stories import StoryIndex, assign_pending
from aggregator.workers import ParseArguments, ParsePool, ParseResult, StoryWorker, parse_and_tag

log = logging.getLogger(__name__)

INTERNAL_ERROR_CODE = "internal"


@dataclass(frozen=True)
class FeedResult:
    """What one feed's poll did, for the summary line, the progress bar and the log."""

    feed: str
    status: str
    new: int = 0
    updated: int = 0
    error: str | None = None
    error_code: str | None = None
    http_status: int | None = None
    bytes_received: int = 0
    elapsed_ms: int = 0
    next_fetch: datetime | None = None
    next_reason: str = "interval"

    @property
    def internal_error(self) -> bool:
        return self.error_code == INTERNAL_ERROR_CODE


@dataclass(frozen=True)
class UpdateSummary:
    results: tuple[FeedResult, ...]

    def _count(self, status: str) -> int:
        return sum(1 for result in self.results if result.status == status)

    @property
    def ok(self) -> int:
        return self._count("ok")

    @property
    def not_modified(self) -> int:
        return self._count("not_modified")

    @property
    def failed(self) -> int:
        return self._count("error")

    @property
    def skipped(self) -> int:
        return self._count("disabled")

    @property
    def new(self) -> int:
        return sum(result.new for result in self.results)

    @property
    def updated(self) -> int:
        return sum(result.updated for result in self.results)

    @property
    def changed(self) -> bool:
        return self.new + self.updated > 0

    def line(self) -> str:
        text = (
            f"{len(self.results)} feeds: {self.ok} ok, {self.not_modified} not modified, {self.failed} failed"
            f"{f', {self.skipped} disabled' if self.skipped else ''}; "
            f"entries: {self.new} new, {self.updated} updated"
        )
        return text


def utc_now() -> datetime:
    return datetime.now(UTC)


def update_feeds(
    settings: Settings,
    store: Store,
    names: Sequence[str] = (),
    on_result: Callable[[FeedResult], None] | None = None,
    clock: Callable[[], datetime] = utc_now,
    on_grouping: Callable[[], None] | None = None,
) -> UpdateSummary:
    """Poll the named feeds (all active ones when none are named) now, ignoring the schedule.

    `on_result` hears of each feed as it finishes; `on_grouping` once every feed is done and the
    last new entries are being grouped into stories (with many feeds, most are grouped while
    polling, in a worker process).
    """
    return asyncio.run(update_feeds_async(settings, store, names, on_result, clock, on_grouping))


async def update_feeds_async(
    settings: Settings,
    store: Store,
    names: Sequence[str] = (),
    on_result: Callable[[FeedResult], None] | None = None,
    clock: Callable[[], datetime] = utc_now,
    on_grouping: Callable[[], None] | None = None,
) -> UpdateSummary:
    store.sync_feeds(settings.feeds)
    feeds = [settings.feed(name) for name in names] if names else list(settings.feeds)
    explicit = bool(names)
    results: list[FeedResult] = []
    async with polling(settings, store, clock, feed_count=len(feeds), group_while_polling=True) as poller:
        tasks = [asyncio.ensure_future(poller.poll(feed, explicit)) for feed in feeds]
        for next_done in asyncio.as_completed(tasks):
            result = await next_done
            results.append(result)
            if on_result is not None:
                on_result(result)
        if on_grouping is not None:
            on_grouping()
        await poller.save_grouped()
        poller.assign_stories()
    order = {feed.name: index for index, feed in enumerate(feeds)}
    return UpdateSummary(tuple(sorted(results, key=lambda result: order[result.feed])))


@asynccontextmanager
async def polling(
    settings: Settings,
    store: Store,
    clock: Callable[[], datetime] = utc_now,
    feed_count: int = 1,
    group_while_polling: bool = False,
) -> AsyncIterator[Poller]:
    """A Poller with its HTTP client (and, for many feeds, its worker processes) open for the block.

    With `group_while_polling` (one update of many feeds, not the daemon) new entries are grouped
    into stories by a `StoryWorker` as they are stored; `Poller.save_grouped` waits for its work.
    That needs every entry stored before to be in a story already (else the usual grouping,
    which takes the waiting ones first, keeps the order).
    """
    pool = ParsePool.for_feeds(feed_count, settings.tag_rules)
    if pool is not None and group_while_polling and _empty(store):
        pool.start_now()  # a first update parses every feed
    grouping = pool is not None and group_while_polling and _all_grouped(store)
    writer = StoreWriter(store)
    story_worker = StoryWorker(store.path, writer.save_story_assignments, clock) if grouping else None
    try:
        async with Fetcher(max_concurrency=settings.concurrency, per_host=settings.per_host) as fetcher:
            yield Poller(settings, store, writer, fetcher, clock, pool, story_worker)
    finally:
        if story_worker is not None:
            story_worker.close()
        if pool is not None:
            pool.shutdown()
        writer.close()


def _empty(store: Store) -> bool:
    """Whether the database holds no entry yet."""
    return not store.recent_entries(1)


def _all_grouped(store: Store) -> bool:
    """Whether every stored entry is in a story."""
    return not store.unassigned_items(1)


class Poller:
    """Polls one feed at a time, for `update` and for the daemon; shares the fetcher, store and taxonomy.

    It reads through `store` and stores polls with entries through `writer`, beside the event loop.
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        writer: StoreWriter,
        fetcher: Fetcher,
        clock: Callable[[], datetime],
        pool: ParsePool | None = None,
        story_worker: StoryWorker | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.writer = writer
        self.fetcher = fetcher
        self.clock = clock
        self.pool = pool
        self.story_worker = story_worker
        self.stories = StoryIndex()
        self._texts_checked = False
        self._polls = asyncio.Semaphore(settings.concurrency)

    def assign_stories(self, limit: int | None = None) -> int:
        """Put the entries stored since the last call into cross-outlet stories; returns how many.

        With a `limit` (the daemon's, so one call never holds its event loop for long) at most
        that many entries are handled; the rest wait for the next call. A database error is
        logged and left for the next call: the entries simply wait in no story.
        """
        try:
            if not self._texts_checked:
                filled = fill_missing_texts(self.store, limit=limit)
                self._texts_checked = limit is None or filled < limit
                if not self._texts_checked:
                    return filled  # stories wait until every entry has its text
            return assign_pending(self.store, self.stories, self.clock(), limit=limit)
        except StoreError as error:
            log.error("could not group entries into stories (will retry): %s", error)
            return 0

    async def save_grouped(self) -> None:
        """Wait until the story worker (if there is one) has grouped and saved every new entry."""
        if self.story_worker is not None:
            await self.story_worker.finish()

    def reconfigure(self, settings: Settings) -> None:
        """Use a re-read config (and its tags) from the next poll on; the fetcher's limits stay."""
        self.settings = settings

    async def _parse(self, feed: FeedConfig, fetched: FetchResult, now: datetime) -> ParseResult:
        arguments: ParseArguments = (
            fetched.content,
            fetched.final_url,
            dict(fetched.headers),
            now,
            feed.tags,
            self.settings.tag_rules,
        )
        if self.pool is None:
            return parse_and_tag(*arguments)
        return await self.pool.parse(arguments)

    async def poll(self, feed: FeedConfig, explicit: bool) -> FeedResult:
        # A poll holds its feed's parsed entries until they are stored: as many polls run at once
        # as fetches may, so a writer that falls behind holds up fetching instead of piling up
        # bodies in memory.
        async with self._polls:
            return await self._poll(feed, explicit)

    async def _poll(self, feed: FeedConfig, explicit: bool) -> FeedResult:
        try:
            state = self.store.feed_state(feed.name)
        except StoreError as error:
            return self._unstored(feed, error)
        if state.disabled and not explicit:
            return FeedResult(feed.name, "disabled", error="disabled after HTTP 410 Gone; change its URL to retry")
        try:
            outcome = await self._poll_outcome(feed, state)
        except Exception as error:  # a bug on one feed must not stop the others
            log.exception("internal error while polling feed %s", feed.name)
            outcome = self._error_outcome(feed, state, self.clock(), error, code=INTERNAL_ERROR_CODE)
        try:
            counts = await self._save(outcome)
        except StoreError as error:
            return self._unstored(feed, error)
        if self.story_worker is not None:
            self.story_worker.add(counts.new_items)
        result = FeedResult(
            feed=feed.name,
            status=outcome.status,
            new=counts.new,
            updated=counts.updated,
            error=outcome.error,
            error_code=outcome.error_code,
            http_status=outcome.http_status,
            bytes_received=outcome.bytes_received,
            elapsed_ms=outcome.elapsed_ms,
            next_fetch=outcome.next_fetch,
            next_reason=outcome.next_reason,
        )
        _log_result(result)
        return result

    async def _save(self, outcome: PollOutcome) -> StoreCounts:
        """Store a poll: with entries on the writer thread, so the event loop goes on meanwhile.

        A poll without entries (not modified, failed) is one small UPDATE: handing it to the
        thread would cost more than doing it, and an update where every feed answers 304 is
        made of little else.
        """
        if outcome.entries:
            return await self.writer.save_poll(outcome)
        return self.store.save_poll(outcome)

    def _unstored(self, feed: FeedConfig, error: StoreError) -> FeedResult:
        """The database refused this poll (locked, full, read-only): nothing was stored, so the
        next poll fetches again without validators and loses nothing."""
        log.error("feed %s: %s", feed.name, error)
        return FeedResult(
            feed.name,
            "error",
            error=str(error),
            error_code=error.code,
            next_fetch=self.clock() + timedelta(seconds=feed.interval_seconds),
        )

    async def _poll_outcome(self, feed: FeedConfig, state: FeedState) -> PollOutcome:
        try:
            fetched = await self.fetcher.fetch(state.url, state.validators, self.settings.limits_for(feed))
        except FetchError as error:
            return self._error_outcome(feed, state, self.clock(), error)
        now = self.clock()
        if fetched.not_modified:
            return self._unchanged_outcome(feed, state, fetched, now, state.body_hash)
        body_hash = hashlib.sha256(fetched.content).hexdigest()
        if body_hash == state.body_hash:
            return self._unchanged_outcome(feed, state, fetched, now, body_hash)
        try:
            parsed, tags = await self._parse(feed, fetched, now)
        except ParseError as error:
            return self._error_outcome(feed, state, now, error, fetched)
        entries = tuple(TaggedEntry(entry, entry_tags) for entry, entry_tags in zip(parsed.entries, tags, strict=True))
        if parsed.warning:
            log.debug("feed %s is malformed but readable: %s", feed.name, parsed.warning)
        hints = replace(parsed.hints, max_age_seconds=max_age_from(fetched.headers))
        upcoming = next_poll(feed.interval_seconds, now, hints=hints)
        return PollOutcome(
            feed=feed.name,
            status="ok",
            fetched_at=now,
            next_fetch=upcoming.at,
            next_reason=upcoming.reason,
            hints=hints,
            validators=fetched.validators,
            body_hash=body_hash,
            new_url=fetched.permanent_url,
            feed_title=parsed.title,
            feed_link=parsed.link,
            entries=entries,
            http_status=fetched.status,
            bytes_received=len(fetched.content),
            elapsed_ms=fetched.elapsed_ms,
        )

    def _unchanged_outcome(
        self, feed: FeedConfig, state: FeedState, fetched: FetchResult, now: datetime, body_hash: str | None
    ) -> PollOutcome:
        hints = replace(state.hints, max_age_seconds=max_age_from(fetched.headers))
        upcoming = next_poll(feed.interval_seconds, now, hints=hints)
        return PollOutcome(
            feed=feed.name,
            status="not_modified",
            fetched_at=now,
            next_fetch=upcoming.at,
            next_reason=upcoming.reason,
            hints=hints,
            validators=fetched.validators,
            body_hash=body_hash,
            new_url=fetched.permanent_url,
            http_status=fetched.status,
            bytes_received=len(fetched.content),
            elapsed_ms=fetched.elapsed_ms,
        )

    def _error_outcome(
        self,
        feed: FeedConfig,
        state: FeedState,
        now: datetime,
        error: Exception,
        fetched: FetchResult | None = None,
        code: str | None = None,
    ) -> PollOutcome:
        retry_after = error.retry_after_seconds if isinstance(error, HTTPStatusError) else None
        message = error.message if isinstance(error, AggregatorError) else f"internal error: {error!r}"
        upcoming = next_poll(feed.interval_seconds, now, state.error_count + 1, retry_after, state.hints)
        return PollOutcome(
            feed=feed.name,
            status="error",
            fetched_at=now,
            next_fetch=upcoming.at,
            next_reason=upcoming.reason,
            retry_after=now + timedelta(seconds=retry_after) if retry_after is not None else None,
            error_code=code or (error.code if isinstance(error, AggregatorError) else INTERNAL_ERROR_CODE),
            error=message,
            disabled=isinstance(error, GoneError),
            http_status=error.status if isinstance(error, HTTPStatusError) else (fetched.status if fetched else None),
            bytes_received=len(fetched.content) if fetched else 0,
            elapsed_ms=fetched.elapsed_ms if fetched else 0,
        )


# Recorded in the meta table once no entry lacks its plain text (every entry stored since has it),
# so later runs skip the look-up, a scan of the whole entries table.
TEXTS_FILLED_KEY = "entry_texts_filled"


def fill_missing_texts(store: Store, batch: int = 1000, limit: int | None = None) -> int:
    """Give entries stored by an older version their plain text, so search and stories see them.

    Handles at most `limit` entries (all when None); returns how many it handled.
    """
    if store.meta(TEXTS_FILLED_KEY):
        return 0
    from aggregator.parse import plain_text

    done = 0
    while (limit is None or done < limit) and (rows := store.entries_missing_text(batch)):
        store.set_entry_texts([(entry_id, plain_text(summary, content)) for entry_id, summary, content in rows])
        done += len(rows)
    if done:
        log.info("indexed the text of %d entries stored by an older version", done)
    if limit is None or done < limit:
        try:
            store.set_meta(TEXTS_FILLED_KEY, "yes")
        except StoreError as error:  # a read-only or busy database: the next run looks again
            log.debug("could not record that every entry has its text: %s", error)
    return done


def _log_result(result: FeedResult) -> None:
    if result.status == "error":
        log.warning("feed %s failed: %s", result.feed, result.error)
        return
    log.info(
        "feed %s: HTTP %s, %d new, %d updated, %d bytes, %d ms",
        result.feed,
        result.http_status,
        result.new,
        result.updated,
        result.bytes_received,
        result.elapsed_ms,
    )
