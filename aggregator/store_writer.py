"""The writes of polling, on a thread of their own, so that storing never holds up the event loop.

Storing a poll is mostly SQLite's work (inserting and indexing entries, committing), which runs
with the GIL released. Done on the event loop, it stopped every fetch in flight for as long as
it took: a first update of many feeds spent a third of its main process there, and under load a
daemon's fetches could reach their deadline while the loop was busy storing. On this thread the
loop goes on fetching and handing bodies to the parse workers while SQLite writes.

One thread with its own connection (sqlite3 connections stay in the thread that made them), so
writes happen one at a time, in the order they were asked for, each in its own transaction as
before. Reads stay on the caller's connection: in WAL mode they see every committed write.

What it does not do: decide what to store (that is `store`), or retry.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TypeVar

from aggregator.models import PollOutcome, StoreCounts
from aggregator.store import Store

T = TypeVar("T")


class StoreWriter:
    """Writes to `store`'s database on one thread, under its limits; `close` waits for every write."""

    def __init__(self, store: Store) -> None:
        self.path = store.path
        self._limits = store.write_limits()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")
        self._store: Store | None = None

    async def save_poll(self, outcome: PollOutcome) -> StoreCounts:
        """`Store.save_poll` on the writer thread."""
        return await self._run(lambda store: store.save_poll(outcome))

    async def save_story_assignments(
        self, assignments: Sequence[tuple[int, int]], now: datetime, profiles: Mapping[int, str] | None = None
    ) -> None:
        """`Store.save_story_assignments` on the writer thread."""
        await self._run(lambda store: store.save_story_assignments(assignments, now, profiles))

    def close(self) -> None:
        """Finish every write asked for (a cancelled caller's too: each is atomic) and close the connection."""
        self._thread.submit(self._close)
        self._thread.shutdown(wait=True)

    async def _run(self, write: Callable[[Store], T]) -> T:
        # A caller cancelled before its write starts cancels the write; once started, it completes.
        return await asyncio.wrap_future(self._thread.submit(self._on_thread, write))

    def _on_thread(self, write: Callable[[Store], T]) -> T:
        if self._store is None:
            store = Store(self.path)  # a StoreError here reaches the caller like any write's
            for pragma in self._limits:
                store.conn.execute(pragma)
            self._store = store
        return write(self._store)

    def _close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
