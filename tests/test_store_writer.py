"""Storing a poll happens beside the event loop (`store_writer`), so fetching goes on meanwhile.

Another process holding the database's write lock makes every save wait: the update must keep
its event loop turning all that time, then store every feed once the lock is gone, in one
transaction per feed as before.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aggregator.config import load_settings
from aggregator.store import Store
from aggregator.update import update_feeds_async
from tests.e2e.cli import write_config
from tests.feedgen import rss
from tests.feedserver import FeedServer

FEEDS = 3
ITEMS = 4
LOCK_SECONDS = 1.5
TICK_SECONDS = 0.01


def test_the_event_loop_turns_while_a_save_waits_for_the_database(tmp_path: Path, feed_server: FeedServer) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    feeds = {
        f"outlet{n}": feed_server.add(
            f"/outlet{n}.xml",
            rss(f"Outlet {n}", [(f"o{n}-{i}", f"Outlet {n} item {i}", now - timedelta(hours=i)) for i in range(ITEMS)]),
        )
        for n in range(FEEDS)
    }
    settings = load_settings(write_config(tmp_path, feeds))
    with Store(settings.database) as store:
        store.sync_feeds(settings.feeds)
        locked = threading.Event()
        lock_span: list[float] = []

        def hold_the_write_lock() -> None:
            other = sqlite3.connect(settings.database, isolation_level=None)
            other.execute("BEGIN IMMEDIATE")
            lock_span.append(time.monotonic())
            locked.set()
            time.sleep(LOCK_SECONDS)
            lock_span.append(time.monotonic())
            other.execute("COMMIT")
            other.close()

        async def update_while_locked() -> tuple[int, list[float]]:
            ticks: list[float] = []
            holder = threading.Thread(target=hold_the_write_lock)
            holder.start()
            await asyncio.to_thread(locked.wait)
            polls = asyncio.ensure_future(update_feeds_async(settings, store))
            while not polls.done():
                ticks.append(time.monotonic())
                await asyncio.sleep(TICK_SECONDS)
            summary = await polls
            await asyncio.to_thread(holder.join)
            return summary.new, ticks

        new, ticks = asyncio.run(update_while_locked())
        assert new == FEEDS * ITEMS
        start, end = lock_span
        waiting = [tick for tick in ticks if start + 0.3 < tick < end - 0.1]
        # On the loop, each save would block it until the lock is gone: no tick at all meanwhile.
        assert len(waiting) >= 10, f"the event loop stood still while saves waited ({len(waiting)} ticks)"
        per_feed = dict(
            store.conn.execute(
                "SELECT f.name, count(e.id) FROM feeds f JOIN entries e ON e.feed_id = f.id GROUP BY f.id"
            ).fetchall()
        )
        assert per_feed == {name: ITEMS for name in feeds}
        assert all(store.feed_state(name).last_fetched is not None for name in feeds)
