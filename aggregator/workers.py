"""The worker processes of an update: parsing bodies, and grouping new entries into stories.

`update` polls on one event loop; what costs CPU runs beside it in processes of its own, so that
an update of many feeds uses every core: a `ParsePool` parses and tags the bodies that changed,
and a `StoryWorker` groups the new entries into stories while the polls go on. Both start their
processes without holding up the event loop, and both leave the results to the main process
to store. This module is what a worker process imports, so it stays light (no HTTP client, no
config).

What it does not do: fetch, decide what to store or when to poll again (that is `update`).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from datetime import datetime
from functools import lru_cache
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import TYPE_CHECKING

from aggregator.errors import StoreError
from aggregator.models import ParsedFeed, StoryItem, TagRule

if TYPE_CHECKING:
    from aggregator.tagging import Taxonomy

log = logging.getLogger(__name__)

# Parsing is CPU work: with more than this many feeds in one run, it goes to worker processes.
PARALLEL_PARSE_MIN_FEEDS = 8
# ... but the first this many bodies (unless every feed is new) are parsed in place: starting the
# workers takes longer than parsing a few changed feeds, the usual update of an archive.
PARSE_IN_PLACE_FIRST = 24
MAX_PARSE_WORKERS = 4
# New entries go to the story worker in lots of about this many: one lot per poll would be
# hundreds of small messages on a first update, and fewer new entries are grouped at the end
# as quickly as a process starts.
STORY_LOT = 256

ParseArguments = tuple[bytes, str, dict[str, str], datetime, tuple[str, ...], tuple[TagRule, ...]]
ParseResult = tuple[ParsedFeed, tuple[frozenset[str], ...]]


def parse_and_tag(
    body: bytes,
    url: str,
    headers: dict[str, str],
    now: datetime,
    feed_tags: tuple[str, ...],
    tag_rules: tuple[TagRule, ...],
) -> ParseResult:
    """Parse one feed body and tag its entries: pure CPU work, run in a worker process when many feeds changed."""
    from aggregator.parse import parse_feed

    parsed = parse_feed(body, url, headers, now)
    taxonomy = _taxonomy(tag_rules)
    tags = tuple(taxonomy.tags_for(entry.title, entry.summary, entry.categories, feed_tags) for entry in parsed.entries)
    return parsed, tags


@lru_cache(maxsize=4)
def _taxonomy(tag_rules: tuple[TagRule, ...]) -> Taxonomy:
    from aggregator.tagging import Taxonomy

    return Taxonomy.load(tag_rules)


def warm_up(tag_rules: tuple[TagRule, ...]) -> None:
    """Set up a parse worker: load the parser and build the taxonomy for `tag_rules` now, so that
    the first body waits for neither."""
    import aggregator.parse  # noqa: F401  (and with it feedparser, lxml and nh3)

    _exit_with_parent()
    _taxonomy(tag_rules)


def start_story_worker(database: str) -> None:
    """Set up the story worker (`stories.start_worker`)."""
    from aggregator.stories import start_worker

    _exit_with_parent()
    start_worker(database)


def _exit_with_parent() -> None:
    """End this worker process as soon as the process that started it is gone.

    A pool's workers otherwise wait for work forever once their parent is killed (`kill -9`,
    the OOM killer): the parent's end of their task queue is also held by themselves.
    """
    parent = multiprocessing.parent_process()
    if parent is None or parent.sentinel is None:
        return

    def wait_for_the_parent() -> None:
        from multiprocessing.connection import wait

        wait([parent.sentinel])
        os._exit(0)

    threading.Thread(target=wait_for_the_parent, name="exit-with-parent", daemon=True).start()


def _nothing() -> None:
    """A task that makes a process pool start one more worker."""


def _worker_context() -> BaseContext:
    """How worker processes start: from a clean process with the pipeline preloaded.

    forkserver, not fork: a worker must not start as a copy of the main process with its
    threads, sockets and open database. The server imports the modules and builds the
    built-in taxonomy (`worker_preload`) once for every worker.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["aggregator.worker_preload"])
    return context


def parallel_workers(feed_count: int) -> int:
    """How many parse workers an update of `feed_count` feeds uses; 0 when it parses in place."""
    workers = min(os.cpu_count() or 1, MAX_PARSE_WORKERS)
    return workers if workers >= 2 and feed_count >= PARALLEL_PARSE_MIN_FEEDS else 0


def start_fork_server(feed_count: int) -> None:
    """Start the fork server now if an update of `feed_count` feeds will use worker processes.

    It takes a few tenths of a second to import the pipeline; started first thing, it does so
    while the main process imports its own modules, and the first bodies find workers ready.
    Only for an update that will parse many bodies: otherwise it would cost that time for nothing.
    """
    if parallel_workers(feed_count):
        from multiprocessing import forkserver

        _worker_context()
        forkserver.ensure_running()


class ParsePool:
    """Processes that parse and tag feed bodies, one per core (up to MAX_PARSE_WORKERS)."""

    def __init__(self, workers: int, tag_rules: tuple[TagRule, ...]) -> None:
        self.workers = workers
        self._pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=_worker_context(),
            initializer=warm_up,
            initargs=(tag_rules,),
        )
        self._submitted = 0  # submissions that have returned
        self._starting: threading.Thread | None = None
        self._in_place = PARSE_IN_PLACE_FIRST  # bodies still to parse here before the workers start

    @classmethod
    def for_feeds(cls, feed_count: int, tag_rules: tuple[TagRule, ...]) -> ParsePool | None:
        """A pool when there are cores to use and enough feeds to share, else None (parse in place)."""
        workers = parallel_workers(feed_count)
        return cls(workers, tag_rules) if workers else None

    def start_now(self) -> None:
        """Start every worker now rather than with the first bodies, for when every feed will need parsing.

        Starting them takes a moment (the fork server imports the pipeline first), so a thread
        waits for it, not the event loop.
        """
        self._in_place = 0
        self._starting = threading.Thread(
            target=lambda: [self._pool.submit(_nothing) for _ in range(self.workers)], daemon=True
        )
        self._starting.start()

    async def parse(self, arguments: ParseArguments) -> ParseResult:
        """`parse_and_tag(*arguments)` in a worker (or here, for the first few bodies)."""
        if self._in_place > 0:  # none submitted yet: `start_now` and the last of them set it to 0
            self._in_place -= 1
            return parse_and_tag(*arguments)
        if self._started():
            submitted = self._submit(arguments)
        else:  # handing a body over may wait while a worker starts: a thread waits, not the event loop
            submitted = await asyncio.to_thread(self._submit, arguments)
        return await asyncio.wrap_future(submitted)

    def _started(self) -> bool:
        """Whether every worker has started (or `start_now` is done), so a submission cannot wait."""
        if self._starting is not None:
            return not self._starting.is_alive()
        return self._submitted >= self.workers

    def _submit(self, arguments: ParseArguments) -> Future[ParseResult]:
        submitted = self._pool.submit(parse_and_tag, *arguments)
        self._submitted += 1
        return submitted

    def shutdown(self) -> None:
        if self._starting is not None:
            self._starting.join()
        self._pool.shutdown(wait=True, cancel_futures=True)


class StoryWorker:
    """Groups the new entries of an update into stories in a worker process while the polls go on.

    Each poll's new entries are handed over as soon as they are stored (so in store order), in
    lots, and the worker's `StoryAssigner` gives the stories that `assign_pending` would give
    after the polls. Each lot's stories are saved as soon as they are known, in the order of the
    lots; `finish` waits for the last. The process starts once a lot of new entries is stored,
    so an update that finds little new starts none. If the worker or a save fails, nothing is
    lost: that lot's entries and all later ones stay in no story, for the usual grouping.
    """

    def __init__(
        self,
        database: Path,
        save: Callable[[Sequence[tuple[int, int]], datetime, Mapping[int, str]], Awaitable[None]],
        clock: Callable[[], datetime],
    ) -> None:
        self.database = database
        self.save = save  # `Store.save_story_assignments`, made awaitable (see `store_writer`)
        self.clock = clock
        self.failed = False
        self.grouped = 0  # entries whose stories are saved
        self._pool: ProcessPoolExecutor | None = None
        self._lot: list[StoryItem] = []
        self._last_save: asyncio.Task[None] | None = None

    def add(self, items: Sequence[StoryItem]) -> None:
        """Entries just stored (committed), after every entry handed over before."""
        if self.failed:
            return
        self._lot.extend(items)
        if len(self._lot) >= STORY_LOT:
            self._hand_over()

    async def finish(self) -> None:
        """Hand over the last entries (if the worker was started) and wait until every lot is saved."""
        if self._pool is not None:
            self._hand_over()
        if self._last_save is not None:
            await self._last_save
        self.close()
        if self.grouped:
            log.debug("grouped %d new entries into stories while polling", self.grouped)

    def close(self) -> None:
        if self._last_save is not None and not self._last_save.done():
            self._last_save.cancel()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _hand_over(self) -> None:
        if self.failed or not self._lot:
            return
        from aggregator.stories import assign_in_worker

        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=1,  # one process, so the lots are assigned in the order they came
                mp_context=_worker_context(),
                initializer=start_story_worker,
                initargs=(str(self.database),),
            )
        try:
            lot = self._pool.submit(assign_in_worker, self._lot)
        except Exception as error:  # the worker is gone already (it failed to start)
            self._fail(error)
            return
        finally:
            self._lot = []
        self._last_save = asyncio.ensure_future(self._save_in_turn(lot, self._last_save))

    async def _save_in_turn(
        self, lot: Future[tuple[list[tuple[int, int]], dict[int, str]]], before: asyncio.Task[None] | None
    ) -> None:
        """Save one lot's stories once the lots before it are saved; stop at the first failure."""
        error: BaseException | None = None
        assignments: list[tuple[int, int]] = []
        profiles: dict[int, str] = {}
        try:
            assignments, profiles = await asyncio.wrap_future(lot)
        except Exception as exception:  # whatever broke the worker, the usual grouping takes over
            error = exception
        if before is not None:
            await before
        if self.failed:
            return
        if error is not None:
            self._fail(error)
            return
        try:
            await self.save(assignments, self.clock(), profiles)
        except StoreError as store_error:
            self.failed = True
            log.error("could not save the stories of new entries (will group them again): %s", store_error)
            return
        self.grouped += len(assignments)

    def _fail(self, error: BaseException) -> None:
        if not self.failed:
            log.error("the story worker failed (the main process groups its entries instead): %r", error)
        self.failed = True
