"""The SQLite database: connection, per-feed poll transactions and story assignments.

The store is the only place that speaks SQL; its schema lives in `store_schema` and its
read-side queries in `store_queries` (which `Store` inherits). It opens the database in WAL mode with a busy
timeout so that readers (``serve``, ``feeds``, Datasette) work while the daemon
writes, keeps the schema version in ``PRAGMA user_version``, and stores each
feed's poll in one transaction so a crash never leaves half a feed behind.
Dates are stored as ISO 8601 UTC text (``2024-03-05T10:00:00Z``), which sorts.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aggregator.errors import StoreError
from aggregator.models import (
    EntryData,
    FeedConfig,
    FeedHints,
    FeedState,
    FeedStatus,
    PollOutcome,
    StoreCounts,
    StoryItem,
    TaggedEntry,
    Validators,
)
from aggregator.store_queries import Queries, from_iso, iso
from aggregator.store_schema import MIGRATIONS, SCHEMA_VERSION

__all__ = ["SCHEMA_VERSION", "Store", "entry_uid", "from_iso", "iso"]

BUSY_TIMEOUT_MS = 10_000
# SQLite allows 32766 host parameters; stay far below for IN (...) look-ups.
LOOKUP_CHUNK = 500
# Pages of a new database, in bytes. An entry with its content takes about 5 KB: with SQLite's
# default 4 KB pages most of it, and every column stored after the content (the publication date
# among them), spills onto overflow pages that each read and write walks. 16 KB pages hold it
# whole: a first update of 200 feeds stores its polls with a quarter less CPU.
PAGE_SIZE = 16384
# The per-connection settings that limit writing (see `Store.write_limits`).
WRITE_LIMITS = ("query_only", "max_page_count")
# An entry whose body keeps changing (a view counter, a rotating ad) is rewritten at most this
# often; a new title or link always applies at once.
MIN_REWRITE_INTERVAL = timedelta(hours=1)
ENTRY_UID_NAMESPACE = uuid.UUID("6f1d7c8e-3b9a-4f55-9a51-0c2b1e7d4a10")


def explain_sqlite_error(error: sqlite3.Error, path: Path) -> str:
    """SQLite's terse messages in the words an operator needs."""
    text = str(error)
    if "locked" in text or "busy" in text:
        return f"the database {path} is locked by another process (waited {BUSY_TIMEOUT_MS // 1000} s); will retry"
    if "disk is full" in text or "database or disk is full" in text:
        return f"the disk holding {path} is full (or the database reached its size limit)"
    if "readonly" in text or "read-only" in text:
        return f"the database {path} is read-only"
    if "malformed" in text or "not a database" in text:
        return f"the database {path} is damaged or not a SQLite file ({text})"
    return text


def entry_uid(feed: str, key: str) -> str:
    """A stable, globally unique id for an entry: the same feed and key give the same id."""
    return "urn:uuid:" + str(uuid.uuid5(ENTRY_UID_NAMESPACE, f"{feed}\n{key}"))


class Store(Queries):
    """One connection to the database; not shared between threads."""

    def __init__(self, path: Path | str, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        try:
            self.conn = self._connect()
            if not readonly:
                self._migrate()
        except sqlite3.Error as error:
            raise StoreError(
                f"cannot open the database {self.path}: {explain_sqlite_error(error, self.path)}"
            ) from None

    def _connect(self) -> sqlite3.Connection:
        if self.readonly:
            if not self.path.exists():
                raise StoreError(f"the database {self.path} does not exist yet (run `aggregator update` first)")
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            conn.execute(f"PRAGMA page_size={PAGE_SIZE}")  # only a new database takes it
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.row_factory = sqlite3.Row
        return conn

    def close(self) -> None:
        self.conn.close()

    def write_limits(self) -> tuple[str, ...]:
        """This connection's limits on writing, as PRAGMA statements for another connection to keep.

        A second connection to the database (`store_writer`'s) writes under the same limits: none
        if the database is opened read-only or query-only, and no more pages than allowed.
        """
        return tuple(f"PRAGMA {name}={int(self.conn.execute(f'PRAGMA {name}').fetchone()[0])}" for name in WRITE_LIMITS)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self, action: str = "write to the database") -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any error; SQLite errors become StoreErrors."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                if self.conn.in_transaction:  # SQLite rolls back by itself on some errors (a full disk)
                    self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")
        except sqlite3.Error as error:
            raise StoreError(f"could not {action}: {explain_sqlite_error(error, self.path)}") from error

    # -- schema ---------------------------------------------------------------------------

    def _migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the database {self.path} has schema version {version}, newer than this program "
                f"understands ({SCHEMA_VERSION}); upgrade aggregator"
            )
        if version == SCHEMA_VERSION:
            return
        import sqlite_utils  # only migrations need it; keeps short commands quick to start

        database = sqlite_utils.Database(self.conn)
        for target in range(version + 1, SCHEMA_VERSION + 1):
            with self.transaction(f"upgrade the database to schema version {target}"):
                MIGRATIONS[target](database)
                self.conn.execute(f"PRAGMA user_version={target}")

    @property
    def schema_version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    # -- feeds ----------------------------------------------------------------------------

    def sync_feeds(self, feeds: Sequence[FeedConfig]) -> None:
        """Make the feeds table match the config: add new feeds, follow URL and title changes.

        A feed removed from the config keeps its row and entries but is marked inactive.
        A changed configured URL resets the stored URL (and its validators), even after a
        permanent redirect had moved it.
        """
        rows = {
            row["name"]: (row["config_url"], row["title"], row["active"])
            for row in self.conn.execute("SELECT name, config_url, title, active FROM feeds")
        }
        configured = {feed.name for feed in feeds}
        changed = [feed for feed in feeds if rows.get(feed.name) != (feed.url, feed.title, 1)]
        removed = [name for name, (_url, _title, active) in rows.items() if active and name not in configured]
        if not changed and not removed:
            return  # nothing to write: a read-only or busy database is no obstacle
        with self.transaction("record the configured feeds") as conn:
            for feed in changed:
                row = rows.get(feed.name)
                if row is None:
                    conn.execute(
                        "INSERT INTO feeds (name, url, config_url, title, status, active) "
                        "VALUES (?, ?, ?, ?, 'new', 1)",
                        (feed.name, feed.url, feed.url, feed.title),
                    )
                elif row[0] != feed.url:
                    conn.execute(
                        "UPDATE feeds SET url = ?, config_url = ?, title = ?, etag = NULL, last_modified = NULL, "
                        "body_hash = NULL, disabled = 0, error_count = 0, active = 1 WHERE name = ?",
                        (feed.url, feed.url, feed.title, feed.name),
                    )
                else:
                    conn.execute("UPDATE feeds SET title = ?, active = 1 WHERE name = ?", (feed.title, feed.name))
            conn.executemany("UPDATE feeds SET active = 0 WHERE name = ?", [(name,) for name in removed])

    def feed_state(self, name: str) -> FeedState:
        row = self.conn.execute(
            "SELECT name, url, etag, last_modified, body_hash, error_count, disabled, hints, last_fetched, next_fetch "
            "FROM feeds WHERE name = ?",
            (name,),
        ).fetchone()
        if row is None:
            raise StoreError(f"no feed named {name!r} in the database")
        return FeedState(
            name=row["name"],
            url=row["url"],
            validators=Validators(etag=row["etag"], last_modified=row["last_modified"]),
            body_hash=row["body_hash"],
            error_count=row["error_count"],
            disabled=bool(row["disabled"]),
            hints=_hints_from_json(row["hints"]),
            last_fetched=from_iso(row["last_fetched"]),
            next_fetch=from_iso(row["next_fetch"]),
        )

    def feed_statuses(self, active_only: bool = True) -> list[FeedStatus]:
        where = "WHERE f.active = 1" if active_only else ""
        rows = self.conn.execute(
            f"""SELECT f.name, f.url, COALESCE(f.title, f.feed_title) AS title, f.status, f.last_error,
                       f.error_count, f.disabled, f.last_fetched, f.next_fetch, f.next_reason,
                       (SELECT count(*) FROM entries e WHERE e.feed_id = f.id) AS entries
                FROM feeds f {where} ORDER BY f.name"""
        ).fetchall()
        return [
            FeedStatus(
                name=row["name"],
                url=row["url"],
                title=row["title"],
                status="disabled" if row["disabled"] else row["status"],
                last_error=row["last_error"],
                entries=row["entries"],
                last_fetched=from_iso(row["last_fetched"]),
                next_fetch=from_iso(row["next_fetch"]),
                error_count=row["error_count"],
                disabled=bool(row["disabled"]),
                next_reason=row["next_reason"],
            )
            for row in rows
        ]

    def site_links(self) -> dict[str, str]:
        """Each feed's web site (the link its document gives), by feed name, where one is known."""
        rows = self.conn.execute("SELECT name, site_link FROM feeds WHERE site_link IS NOT NULL AND site_link != ''")
        return {row["name"]: row["site_link"] for row in rows}

    def delete_feed(self, name: str) -> int:
        """Delete a feed, its entries, their tags and search index rows, in one transaction; how many entries.

        A story that loses entries gets its headline, first and last time and counts again from the
        entries it keeps (its id and uid stay, as ids never change); a story left empty is deleted.
        """
        with self.transaction(f"delete feed {name}") as conn:
            row = conn.execute("SELECT id FROM feeds WHERE name = ?", (name,)).fetchone()
            if row is None:
                return 0
            feed_id = int(row["id"])
            stories = [
                int(story[0])
                for story in conn.execute(
                    "SELECT DISTINCT story_id FROM entries WHERE feed_id = ? AND story_id IS NOT NULL", (feed_id,)
                )
            ]
            conn.execute(
                "DELETE FROM entry_tags WHERE entry_id IN (SELECT id FROM entries WHERE feed_id = ?)", (feed_id,)
            )
            deleted = conn.execute("DELETE FROM entries WHERE feed_id = ?", (feed_id,)).rowcount
            conn.execute("DELETE FROM feeds WHERE id = ?", (feed_id,))
            for start in range(0, len(stories), LOOKUP_CHUNK):
                chunk = stories[start : start + LOOKUP_CHUNK]
                marks = ",".join("?" * len(chunk))
                conn.execute(
                    f"DELETE FROM stories WHERE id IN ({marks}) "
                    "AND NOT EXISTS (SELECT 1 FROM entries WHERE story_id = stories.id)",
                    chunk,
                )
                conn.execute(
                    f"""UPDATE stories SET
                          headline = (SELECT title FROM entries WHERE story_id = stories.id
                                      ORDER BY published, id LIMIT 1),
                          first_seen = (SELECT min(published) FROM entries WHERE story_id = stories.id),
                          last_seen = (SELECT max(published) FROM entries WHERE story_id = stories.id),
                          feeds = (SELECT count(DISTINCT feed_id) FROM entries WHERE story_id = stories.id),
                          size = (SELECT count(*) FROM entries WHERE story_id = stories.id)
                        WHERE id IN ({marks})""",
                    chunk,
                )
        return int(deleted)

    # -- one poll -------------------------------------------------------------------------

    def save_poll(self, outcome: PollOutcome) -> StoreCounts:
        """Store one feed's poll (state, entries, tags) in one transaction."""
        with self.transaction(f"store feed {outcome.feed}") as conn:
            feed_id = self._feed_id(conn, outcome.feed)
            counts = self._store_entries(conn, feed_id, outcome) if outcome.entries else StoreCounts()
            self._record_fetch(conn, feed_id, outcome)
        return counts

    def _feed_id(self, conn: sqlite3.Connection, name: str) -> int:
        row = conn.execute("SELECT id FROM feeds WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise StoreError(f"no feed named {name!r} in the database")
        return int(row["id"])

    def _record_fetch(self, conn: sqlite3.Connection, feed_id: int, outcome: PollOutcome) -> None:
        failed = outcome.status == "error"
        conn.execute(
            """UPDATE feeds SET
                 status = ?, last_error = ?, error_code = ?,
                 error_count = CASE WHEN ? THEN error_count + 1 ELSE 0 END,
                 last_fetched = ?, next_fetch = ?, disabled = ?,
                 last_ok = CASE WHEN ? THEN last_ok ELSE ? END,
                 url = COALESCE(?, url),
                 etag = CASE WHEN ? THEN etag ELSE ? END,
                 last_modified = CASE WHEN ? THEN last_modified ELSE ? END,
                 body_hash = COALESCE(?, body_hash),
                 feed_title = COALESCE(?, feed_title),
                 site_link = COALESCE(?, site_link),
                 next_reason = ?, retry_after = ?,
                 hints = COALESCE(?, hints)
               WHERE id = ?""",
            (
                outcome.status,
                outcome.error,
                outcome.error_code,
                failed,
                iso(outcome.fetched_at),
                iso(outcome.next_fetch),
                outcome.disabled,
                failed,
                iso(outcome.fetched_at),
                outcome.new_url,
                failed,
                outcome.validators.etag,
                failed,
                outcome.validators.last_modified,
                outcome.body_hash,
                outcome.feed_title,
                outcome.feed_link,
                outcome.next_reason,
                iso(outcome.retry_after) if outcome.retry_after else None,
                _hints_to_json(outcome.hints) if outcome.hints is not None else None,
                feed_id,
            ),
        )

    def _store_entries(self, conn: sqlite3.Connection, feed_id: int, outcome: PollOutcome) -> StoreCounts:
        feed_name = outcome.feed
        now = iso(outcome.fetched_at)
        existing = self._existing(conn, feed_id, [tagged.entry.key for tagged in outcome.entries])
        inserts: list[tuple[Any, ...]] = []
        added: list[tuple[TaggedEntry, str]] = []  # with its stored publication time
        changed: list[tuple[_Stored, TaggedEntry]] = []
        for tagged in outcome.entries:
            entry = tagged.entry
            found = existing.get(entry.key)
            if found is None:
                published = _stored_published(entry, now)
                inserts.append(_insert_row(feed_id, feed_name, entry, now, published))
                added.append((tagged, published))
            elif found.worth_rewriting(entry, outcome.fetched_at):
                changed.append((found, tagged))
        new_items: list[StoryItem] = []
        if inserts:
            _insert_entries(conn, inserts)
            ids = self._ids(conn, feed_id, [tagged.entry.key for tagged, _ in added])
            new_items = sorted(
                (_story_item(ids[tagged.entry.key], feed_name, tagged, published) for tagged, published in added),
                key=lambda item: item.id,
            )
            self._tag_entries(conn, [(item.id, item.tags) for item in new_items])
        for stored, tagged in changed:
            conn.execute(
                """UPDATE entries SET link = ?, canonical_link = ?, title = ?, author = ?, summary = ?,
                       content = ?, published = ?, updated = ?, content_hash = ?, published_known = ?,
                       summary_text = ?, previous_hash = ?, rewritten_at = ?, story_profile = NULL
                   WHERE id = ?""",
                (*_changed_values(tagged.entry, stored.first_seen, now), stored.content_hash, now, stored.id),
            )
            conn.execute("DELETE FROM entry_tags WHERE entry_id = ?", (stored.id,))
        self._tag_entries(conn, [(stored.id, tagged.tags) for stored, tagged in changed])
        return StoreCounts(
            new=len(inserts),
            updated=len(changed),
            new_ids=tuple(item.id for item in new_items),
            new_items=tuple(new_items),
        )

    def _ids(self, conn: sqlite3.Connection, feed_id: int, keys: Sequence[str]) -> dict[str, int]:
        """The ids of this feed's entries with these keys."""
        found: dict[str, int] = {}
        for start in range(0, len(keys), LOOKUP_CHUNK):
            chunk = keys[start : start + LOOKUP_CHUNK]
            rows = conn.execute(
                f"SELECT id, key FROM entries WHERE feed_id = ? AND key IN ({','.join('?' * len(chunk))})",
                (feed_id, *chunk),
            )
            found.update((row[1], int(row[0])) for row in rows)
        return found

    def _existing(self, conn: sqlite3.Connection, feed_id: int, keys: Sequence[str]) -> dict[str, _Stored]:
        found: dict[str, _Stored] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), LOOKUP_CHUNK):
            chunk = unique[start : start + LOOKUP_CHUNK]
            rows = conn.execute(
                f"SELECT id, key, content_hash, previous_hash, first_seen, rewritten_at, title, link "
                f"FROM entries WHERE feed_id = ? "
                f"AND key IN ({','.join('?' * len(chunk))})",
                (feed_id, *chunk),
            )
            for row in rows:
                found[row["key"]] = _Stored(
                    id=row["id"],
                    content_hash=row["content_hash"],
                    previous_hash=row["previous_hash"],
                    first_seen=row["first_seen"],
                    rewritten_at=from_iso(row["rewritten_at"] or row["first_seen"]),
                    title=row["title"],
                    link=row["link"],
                )
        return found

    def _tag_entries(self, conn: sqlite3.Connection, tagged: Iterable[tuple[int, frozenset[str]]]) -> None:
        pairs = [(entry_id, tag) for entry_id, tags in tagged for tag in sorted(tags)]
        if not pairs:
            return
        paths = sorted({tag for _, tag in pairs})
        conn.executemany("INSERT OR IGNORE INTO tags (path) VALUES (?)", [(path,) for path in paths])
        # The tags' ids in one look-up rather than a sub-select per row: a first poll tags thousands.
        tag_ids: dict[str, int] = {}
        for start in range(0, len(paths), LOOKUP_CHUNK):
            chunk = paths[start : start + LOOKUP_CHUNK]
            rows = conn.execute(f"SELECT path, id FROM tags WHERE path IN ({','.join('?' * len(chunk))})", chunk)
            tag_ids.update((row[0], int(row[1])) for row in rows)
        conn.executemany(
            "INSERT OR IGNORE INTO entry_tags (entry_id, tag_id) VALUES (?, ?)",
            [(entry_id, tag_ids[tag]) for entry_id, tag in pairs],
        )

    # -- stories ------------------------------------------------------------------------------

    def save_story_assignments(
        self, assignments: Sequence[tuple[int, int]], now: datetime, profiles: Mapping[int, str] | None = None
    ) -> None:
        """Put each (entry id, story id) in its story, in one transaction, and refresh those stories.

        `profiles` are the words grouping found in the entries (`stories.profile_text`), kept with
        them for the next update's grouping to read.

        A story's id is its first stored entry's id; its headline is its first reporter's (the
        earliest published) title. An entry already in a story stays where it is,
        so assignments are idempotent. A story that gained an entry is `updated` now.
        """
        if not assignments:
            return
        with self.transaction("save story assignments") as conn:
            waiting: set[int] = set()
            ids = [entry for entry, _ in assignments]
            for start in range(0, len(ids), LOOKUP_CHUNK):
                chunk = ids[start : start + LOOKUP_CHUNK]
                rows = conn.execute(
                    f"SELECT id FROM entries WHERE story_id IS NULL AND id IN ({','.join('?' * len(chunk))})", chunk
                )
                waiting.update(int(row[0]) for row in rows)
            assignments = [(entry, story) for entry, story in assignments if entry in waiting]
            if not assignments:
                return
            updated = iso(now)
            conn.executemany(
                "INSERT OR IGNORE INTO stories (id, first_entry_id, updated) VALUES (?, ?, ?)",
                [(story, story, updated) for story in {story for _, story in assignments}],
            )
            found = profiles or {}
            conn.executemany(
                "UPDATE entries SET story_id = ?, story_profile = ? WHERE id = ?",
                [(story, found.get(entry), entry) for entry, story in assignments],
            )
            touched = sorted({story for _, story in assignments})
            for start in range(0, len(touched), LOOKUP_CHUNK):
                chunk = touched[start : start + LOOKUP_CHUNK]
                conn.execute(
                    f"""UPDATE stories SET
                          uid = (SELECT uid FROM entries WHERE id = stories.first_entry_id),
                          headline = (SELECT title FROM entries WHERE story_id = stories.id
                                      ORDER BY published, id LIMIT 1),
                          (first_seen, last_seen, feeds, size) = (
                            SELECT min(published), max(published), count(DISTINCT feed_id), count(*)
                            FROM entries WHERE story_id = stories.id),
                          updated = ?
                        WHERE id IN ({",".join("?" * len(chunk))})""",
                    (updated, *chunk),
                )

    def set_entry_texts(self, texts: Sequence[tuple[int, str]]) -> None:
        """Fill the plain summary text (and so the search index) of entries stored before it existed."""
        with self.transaction("fill in entry texts") as conn:
            conn.executemany(
                "UPDATE entries SET summary_text = ?, story_profile = NULL WHERE id = ?",
                [(text, id_) for id_, text in texts],
            )

    def entries_missing_text(self, limit: int) -> list[tuple[int, str, str]]:
        """(id, summary HTML, content HTML) of entries stored before the plain text was kept."""
        rows = self.conn.execute(
            "SELECT id, summary, content FROM entries WHERE summary_text IS NULL ORDER BY id LIMIT ?", (limit,)
        )
        return [(int(row["id"]), row["summary"] or "", row["content"] or "") for row in rows]

    # -- small facts --------------------------------------------------------------------------

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction(f"record {key}") as conn:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )


@dataclass(frozen=True)
class _Stored:
    """What the store needs of an existing entry to decide whether a new version is worth writing."""

    id: int
    content_hash: str
    previous_hash: str | None
    first_seen: str
    rewritten_at: datetime | None
    title: str
    link: str | None

    def worth_rewriting(self, entry: EntryData, now: datetime) -> bool:
        """A real edit is written; a body that flips between versions or changes on every poll is not.

        A new title or link applies at once. Any other change is written unless it merely
        returns to the version before (A -> B -> A), and at most once per MIN_REWRITE_INTERVAL.
        """
        if entry.content_hash == self.content_hash:
            return False
        if entry.title != self.title or entry.link != self.link:
            return True
        if entry.content_hash == self.previous_hash:
            return False
        return self.rewritten_at is None or now - self.rewritten_at >= MIN_REWRITE_INTERVAL


_INSERT_ENTRIES = """INSERT INTO entries (feed_id, key, uid, link, canonical_link, title, author, summary,
                       content, published, updated, first_seen, content_hash, published_known, summary_text)
                     VALUES """
_ENTRY_VALUES = "(" + ", ".join("?" * 15) + ")"
# New entries are inserted this many per statement, not one per statement: the search index's
# trigger costs SQLite a savepoint per statement, more than the indexing itself. (64 rows of 15
# values stay under 999 parameters, the limit of older SQLite builds.)
INSERT_ROWS = 64


def _insert_entries(conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    for start in range(0, len(rows), INSERT_ROWS):
        chunk = rows[start : start + INSERT_ROWS]
        conn.execute(
            _INSERT_ENTRIES + ", ".join([_ENTRY_VALUES] * len(chunk)), [value for row in chunk for value in row]
        )


def _stored_published(entry: EntryData, now: str) -> str:
    # An article cannot have been published after we first saw it: a date ahead of the clock
    # (up to the day parse tolerates) is clamped, so no page or feed shows the future.
    return min(iso(entry.published), now) if entry.published else now


def _insert_row(feed_id: int, feed_name: str, entry: EntryData, now: str, published: str) -> tuple[Any, ...]:
    updated = max(min(iso(entry.updated), now), published) if entry.updated else published
    return (
        feed_id,
        entry.key,
        entry_uid(feed_name, entry.key),
        entry.link,
        entry.canonical_link,
        entry.title,
        entry.author,
        entry.summary,
        entry.content,
        published,
        updated,
        now,
        entry.content_hash,
        entry.published is not None,
        entry.text,
    )


def _story_item(entry_id: int, feed: str, tagged: TaggedEntry, published: str) -> StoryItem:
    """A just-stored entry as `unassigned_items` would read it back."""
    return StoryItem(
        id=entry_id,
        feed=feed,
        title=tagged.entry.title,
        text=tagged.entry.text,
        tags=frozenset(tagged.tags),
        published=_stored_moment(published),
    )


def _stored_moment(text: str) -> datetime:
    """`from_iso` for a date `iso` just wrote, without strptime (a first poll stores thousands)."""
    return datetime.fromisoformat(text).astimezone(UTC)


def _changed_values(entry: EntryData, first_seen: str, now: str) -> tuple[Any, ...]:
    # An entry that never had a date keeps its first-seen time; an edit is dated now.
    published = min(iso(entry.published), first_seen) if entry.published else first_seen
    updated = min(iso(entry.updated), now) if entry.updated and iso(entry.updated) > published else now
    return (
        entry.link,
        entry.canonical_link,
        entry.title,
        entry.author,
        entry.summary,
        entry.content,
        published,
        updated,
        entry.content_hash,
        entry.published is not None,
        entry.text,
    )


def _hints_to_json(hints: FeedHints) -> str:
    return json.dumps(
        {
            "ttl_minutes": hints.ttl_minutes,
            "update_period_seconds": hints.update_period_seconds,
            "skip_hours": sorted(hints.skip_hours),
            "skip_days": sorted(hints.skip_days),
            "max_age_seconds": hints.max_age_seconds,
        }
    )


def _hints_from_json(text: str | None) -> FeedHints:
    if not text:
        return FeedHints()
    data = json.loads(text)
    return FeedHints(
        ttl_minutes=data.get("ttl_minutes"),
        update_period_seconds=data.get("update_period_seconds"),
        skip_hours=frozenset(data.get("skip_hours", ())),
        skip_days=frozenset(data.get("skip_days", ())),
        max_age_seconds=data.get("max_age_seconds"),
    )
