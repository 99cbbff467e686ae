"""Faults in our own house: a locked, full or read-only database, an unwritable output folder,
and bad command-line arguments. Each gives a clear error; the next run recovers with nothing lost."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from aggregator.config import load_settings
from aggregator.store import Store
from aggregator.update import update_feeds
from tests.e2e.cli import run_cli, write_config
from tests.e2e.daemon import DaemonProcess, wait_for
from tests.feedgen import numbered_feed
from tests.feedserver import FeedServer

LOCK_HOLDER = """
import select, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
select.select([sys.stdin], [], [], float(sys.argv[2]))  # until told to let go, or the time is up
conn.execute("ROLLBACK")
"""


def hold_lock(database: Path, seconds: float) -> subprocess.Popen[str]:
    """Another process that holds the database's write lock for `seconds`."""
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(database), str(seconds)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    return holder


def count(database: Path, sql: str = "SELECT count(*) FROM entries") -> int:
    conn = sqlite3.connect(database)
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


def stored(database: Path) -> int:
    try:
        return count(database) if database.exists() else 0
    except sqlite3.OperationalError:
        return 0  # the daemon is still creating the schema


def duplicates(database: Path) -> int:
    return count(database, "SELECT count(*) FROM (SELECT 1 FROM entries GROUP BY feed_id, key HAVING count(*) > 1)")


@pytest.fixture
def three_feeds(tmp_path: Path, feed_server: FeedServer) -> Path:
    feeds = {name: feed_server.add(f"/{name}.xml", numbered_feed(name, 300)) for name in ("one", "two", "three")}
    return write_config(tmp_path, feeds)


@pytest.mark.timeout(60)
def test_update_while_another_process_locks_the_database(three_feeds: Path) -> None:
    database = three_feeds.parent / "data" / "aggregator.db"
    assert run_cli("update", "--feed", "one", config=three_feeds).returncode == 0
    holder = hold_lock(database, 60)
    try:
        blocked = run_cli("update", "--feed", "two", "--feed", "three", config=three_feeds)
    finally:
        holder.communicate("release\n", timeout=30)
    assert blocked.returncode == 0, blocked.stderr
    assert "2 failed" in blocked.stdout
    assert "locked by another process" in blocked.stderr and "Traceback" not in blocked.stderr
    recovered = run_cli("update", config=three_feeds)
    assert recovered.returncode == 0, recovered.stderr
    assert count(database) == 900 and duplicates(database) == 0


@pytest.mark.timeout(90)
def test_daemon_survives_a_locked_database_and_stores_later(tmp_path: Path, feed_server: FeedServer) -> None:
    feed_server.add("/live.xml", numbered_feed("live", 5))
    config = write_config(tmp_path, {"live": feed_server.url("/live.xml")}, extra="defaults: {interval: 1s}")
    database = tmp_path / "data" / "aggregator.db"
    with DaemonProcess(config, "--no-serve") as daemon:
        wait_for(lambda: stored(database) == 5, 20, "the first poll stored")
        holder = hold_lock(database, 60)
        try:
            feed_server.add("/live.xml", numbered_feed("live", 8))
            wait_for(lambda: "locked by another process" in daemon.log, 40, "the locked-database error in the log")
        finally:
            holder.communicate("release\n", timeout=30)
        wait_for(lambda: count(database) == 8, 30, "the entries that arrived while the database was locked")
        assert daemon.process.poll() is None
        assert daemon.stop(signal.SIGTERM) == 0
    assert duplicates(database) == 0


def test_disk_full_stores_whole_feeds_or_nothing_then_recovers(three_feeds: Path) -> None:
    settings = load_settings(three_feeds)
    with Store(settings.database) as store:
        store.sync_feeds(settings.feeds)
        pages = store.conn.execute("PRAGMA page_count").fetchone()[0]
        store.conn.execute(f"PRAGMA max_page_count={pages + 30}")
        full = update_feeds(settings, store)
        errors = [result for result in full.results if result.status == "error"]
        assert errors and all("is full" in (result.error or "") for result in errors)
        per_feed = dict(
            store.conn.execute(
                "SELECT f.name, count(e.id) FROM feeds f LEFT JOIN entries e ON e.feed_id = f.id GROUP BY f.id"
            ).fetchall()
        )
        assert set(per_feed.values()) <= {0, 300}, per_feed
        store.conn.execute("PRAGMA max_page_count=1073741823")
        again = update_feeds(settings, store)
        assert again.failed == 0
        assert store.count_entries() == 900 and store.duplicate_entries() == 0 and store.integrity_ok()


def test_read_only_database_then_recovers(three_feeds: Path) -> None:
    settings = load_settings(three_feeds)
    with Store(settings.database) as store:
        store.sync_feeds(settings.feeds)
        store.conn.execute("PRAGMA query_only=ON")
        refused = update_feeds(settings, store)
        assert refused.failed == 3 and all("read-only" in (result.error or "") for result in refused.results)
        store.conn.execute("PRAGMA query_only=OFF")
        assert update_feeds(settings, store).new == 900


def test_unwritable_output_dir_is_a_clear_error(three_feeds: Path) -> None:
    blocker = three_feeds.parent / "blocker"
    blocker.write_text("a file where a folder should be", encoding="utf-8")
    text = three_feeds.read_text(encoding="utf-8").replace("feeds:", "output_dir: blocker/public\nfeeds:", 1)
    three_feeds.write_text(text, encoding="utf-8")
    assert run_cli("update", config=three_feeds).returncode == 0
    failed = run_cli("render", config=three_feeds)
    assert failed.returncode == 1
    assert "cannot write" in failed.stderr and "blocker" in failed.stderr and "Traceback" not in failed.stderr
    blocker.unlink()
    rendered = run_cli("render", config=three_feeds)
    assert rendered.returncode == 0, rendered.stderr
    assert (three_feeds.parent / "blocker" / "public" / "feed.atom").exists()


@pytest.mark.parametrize(
    "arguments",
    [
        ("frobnicate",),
        ("update", "--feed"),
        ("feeds", "--format", "xml"),
        ("export", "--format", "parquet"),
        ("export", "--since", "last tuesday"),
        ("run", "--port", "eighty"),
        ("serve", "--port", "70000"),
        ("--log-format", "yaml", "check"),
        ("update", "--no-such-option"),
    ],
)
def test_bad_arguments_exit_2_without_a_traceback(three_feeds: Path, arguments: tuple[str, ...]) -> None:
    result = run_cli(*arguments, config=three_feeds)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Error" in result.stderr or "error" in result.stderr
    assert "Traceback" not in result.stderr
