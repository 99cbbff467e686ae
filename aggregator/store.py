"""The SQLite database: schema, migrations, per-feed poll transactions and queries.

The only module that speaks SQL. It opens the database in WAL mode with a busy
timeout so that readers (``serve``, ``feeds``, Datasette) work while the daemon
writes, keeps the schema version in ``PRAGMA user_version``, and stores each
feed's poll in one transaction so a crash never leaves half a feed behind.
Dates are stored as ISO 8601 UTC text (``2024-03-05T10:00:00Z``), which sorts.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from aggregator.errors import StoreError

if TYPE_CHECKING:
    import sqlite_utils
from aggregator.models import (
    ChangeMarker,
    Entry,
    EntryData,
    FeedConfig,
    FeedHints,
    FeedState,
    FeedStatus,
    PollOutcome,
    StoreCounts,
    TaggedEntry,
    Validators,
)

SCHEMA_VERSION = 4
BUSY_TIMEOUT_MS = 10_000
# SQLite allows 32766 host parameters; stay far below for IN (...) look-ups.
LOOKUP_CHUNK = 500
# An entry whose body keeps changing (a view counter, a rotating ad) is rewritten at most this
# often; a new title or link always applies at once.
MIN_REWRITE_INTERVAL = timedelta(hours=1)
ENTRY_UID_NAMESPACE = uuid.UUID("6f1d7c8e-3b9a-4f55-9a51-0c2b1e7d4a10")

_ENTRY_COLUMNS = """
    e.id, e.uid, f.name AS feed, COALESCE(f.title, f.feed_title, f.name) AS feed_title,
    f.site_link AS feed_link, e.key, e.title, e.link, e.author, e.summary, e.content,
    e.published, e.updated, e.first_seen, e.story_id,
    (SELECT group_concat(t.path, char(31)) FROM entry_tags et JOIN tags t ON t.id = et.tag_id
     WHERE et.entry_id = e.id) AS tag_list
"""


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


def iso(moment: datetime) -> str:
    """A UTC ISO 8601 string with a Z, the form every date column uses."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def from_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def entry_uid(feed: str, key: str) -> str:
    """A stable, globally unique id for an entry: the same feed and key give the same id."""
    return "urn:uuid:" + str(uuid.uuid5(ENTRY_UID_NAMESPACE, f"{feed}\n{key}"))


class Store:
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
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.row_factory = sqlite3.Row
        return conn

    def close(self) -> None:
        self.conn.close()

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
                _MIGRATIONS[target](database)
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
        changed: list[tuple[_Stored, TaggedEntry]] = []
        new_tags: list[tuple[str, frozenset[str]]] = []
        for tagged in outcome.entries:
            entry = tagged.entry
            found = existing.get(entry.key)
            if found is None:
                inserts.append(_insert_row(feed_id, feed_name, entry, now))
                new_tags.append((entry.key, tagged.tags))
            elif found.worth_rewriting(entry, outcome.fetched_at):
                changed.append((found, tagged))
        if inserts:
            conn.executemany(
                """INSERT INTO entries (feed_id, key, uid, link, canonical_link, title, author, summary,
                       content, published, updated, first_seen, content_hash, published_known)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                inserts,
            )
            ids = self._existing(conn, feed_id, [key for key, _ in new_tags])
            self._tag_entries(conn, [(ids[key].id, tags) for key, tags in new_tags])
        for stored, tagged in changed:
            conn.execute(
                """UPDATE entries SET link = ?, canonical_link = ?, title = ?, author = ?, summary = ?,
                       content = ?, published = ?, updated = ?, content_hash = ?, published_known = ?,
                       previous_hash = ?, rewritten_at = ?
                   WHERE id = ?""",
                (*_changed_values(tagged.entry, stored.first_seen, now), stored.content_hash, now, stored.id),
            )
            conn.execute("DELETE FROM entry_tags WHERE entry_id = ?", (stored.id,))
        self._tag_entries(conn, [(stored.id, tagged.tags) for stored, tagged in changed])
        return StoreCounts(new=len(inserts), updated=len(changed))

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
        conn.executemany("INSERT OR IGNORE INTO tags (path) VALUES (?)", [(tag,) for tag in {t for _, t in pairs}])
        conn.executemany(
            "INSERT OR IGNORE INTO entry_tags (entry_id, tag_id) SELECT ?, id FROM tags WHERE path = ?",
            pairs,
        )

    # -- queries for render and export ----------------------------------------------------

    def entries_between(self, start: datetime, end: datetime) -> list[Entry]:
        return self._entries("WHERE e.published >= ? AND e.published < ?", (iso(start), iso(end)))

    def recent_entries(self, limit: int) -> list[Entry]:
        return self._entries("", (), limit)

    def entries_for_tag(self, tag: str, limit: int) -> list[Entry]:
        return self._entries(
            "WHERE e.id IN (SELECT et.entry_id FROM entry_tags et JOIN tags t ON t.id = et.tag_id WHERE t.path = ?)",
            (tag,),
            limit,
        )

    def tags_in_use(self) -> list[tuple[str, int]]:
        rows = self.conn.execute(
            "SELECT t.path, count(*) AS n FROM tags t JOIN entry_tags et ON et.tag_id = t.id "
            "GROUP BY t.id ORDER BY t.path"
        )
        return [(row["path"], row["n"]) for row in rows]

    def entry_days(self, tz: ZoneInfo) -> list[date]:
        """Days (in `tz`) that have entries, from the distinct UTC hours that do.

        Grouping by hour in SQL keeps this cheap on a large archive; an hour that
        straddles local midnight (zones with half-hour offsets) counts for both days.
        """
        rows = self.conn.execute("SELECT DISTINCT substr(published, 1, 13) AS hour FROM entries")
        return sorted(_days_of_hours((row["hour"] for row in rows), tz))

    def change_marker(self) -> ChangeMarker:
        """Where the entries stand now; `days_changed_since` and `tags_changed_since` compare to it."""
        row = self.conn.execute(
            "SELECT coalesce(max(id), 0) AS last_id, coalesce(max(rewritten_at), '') AS last_rewrite FROM entries"
        ).fetchone()
        return ChangeMarker(int(row["last_id"]), str(row["last_rewrite"]))

    def days_changed_since(self, marker: ChangeMarker, tz: ZoneInfo) -> set[date]:
        """Days (in `tz`) with entries added or rewritten after `marker`."""
        rows = self.conn.execute(
            "SELECT DISTINCT substr(published, 1, 13) AS hour FROM entries WHERE id > ? "
            "UNION SELECT DISTINCT substr(published, 1, 13) FROM entries WHERE rewritten_at > ?",
            (marker.last_id, marker.last_rewrite),
        )
        return _days_of_hours((row["hour"] for row in rows), tz)

    def tags_changed_since(self, marker: ChangeMarker) -> set[str]:
        """Tags of the entries added or rewritten after `marker`."""
        rows = self.conn.execute(
            """SELECT DISTINCT t.path FROM entry_tags et JOIN tags t ON t.id = et.tag_id
               WHERE et.entry_id > ? OR et.entry_id IN (SELECT id FROM entries WHERE rewritten_at > ?)""",
            (marker.last_id, marker.last_rewrite),
        )
        return {row["path"] for row in rows}

    def iter_entries(self, since: datetime | None = None, batch: int = 1000) -> Iterator[Entry]:
        """Every entry, oldest first, fetched in batches so memory stays flat."""
        last_id = 0
        since_text = iso(since) if since else ""
        while True:
            page = self._entries(
                "WHERE e.id > ? AND e.published >= ?",
                (last_id, since_text),
                batch,
                order="e.id ASC",
            )
            if not page:
                return
            yield from page
            last_id = page[-1].id

    def _entries(
        self,
        where: str,
        params: Sequence[Any],
        limit: int | None = None,
        order: str = "e.published DESC, e.id DESC",
    ) -> list[Entry]:
        sql = f"SELECT {_ENTRY_COLUMNS} FROM entries e JOIN feeds f ON f.id = e.feed_id {where} ORDER BY {order}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [_entry(row) for row in self.conn.execute(sql, tuple(params))]

    def meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row["value"])

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction(f"record {key}") as conn:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def duplicate_entries(self) -> int:
        """How many (feed, key) pairs are stored more than once (always 0; a safety check)."""
        row = self.conn.execute(
            "SELECT count(*) FROM (SELECT 1 FROM entries GROUP BY feed_id, key HAVING count(*) > 1)"
        ).fetchone()
        return int(row[0])

    def count_entries(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM entries").fetchone()[0])

    def integrity_ok(self) -> bool:
        return bool(self.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok")


def _days_of_hours(hours: Iterable[str], tz: ZoneInfo) -> set[date]:
    days: set[date] = set()
    for hour in hours:
        start = datetime.strptime(hour, "%Y-%m-%dT%H").replace(tzinfo=UTC)
        days.add(start.astimezone(tz).date())
        days.add((start + timedelta(minutes=59, seconds=59)).astimezone(tz).date())
    return days


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


def _insert_row(feed_id: int, feed_name: str, entry: EntryData, now: str) -> tuple[Any, ...]:
    # An article cannot have been published after we first saw it: a date ahead of the clock
    # (up to the day parse tolerates) is clamped, so no page or feed shows the future.
    published = min(iso(entry.published), now) if entry.published else now
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
    )


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
    )


def _entry(row: sqlite3.Row) -> Entry:
    published = from_iso(row["published"])
    first_seen = from_iso(row["first_seen"])
    assert published is not None and first_seen is not None
    tags = tuple(sorted(row["tag_list"].split("\x1f"))) if row["tag_list"] else ()
    return Entry(
        id=row["id"],
        uid=row["uid"],
        feed=row["feed"],
        feed_title=row["feed_title"],
        feed_link=row["feed_link"],
        key=row["key"],
        title=row["title"],
        link=row["link"],
        author=row["author"],
        summary=row["summary"],
        content=row["content"],
        published=published,
        updated=from_iso(row["updated"]) or published,
        first_seen=first_seen,
        tags=tags,
        story_id=row["story_id"],
    )


def _schema_v1(db: sqlite_utils.Database) -> None:
    db.table("feeds").create(
        {
            "id": int,
            "name": str,
            "url": str,
            "config_url": str,
            "title": str,
            "feed_title": str,
            "site_link": str,
            "etag": str,
            "last_modified": str,
            "body_hash": str,
            "status": str,
            "last_error": str,
            "error_code": str,
            "error_count": int,
            "last_fetched": str,
            "last_ok": str,
            "next_fetch": str,
            "retry_after": str,
            "hints": str,
            "disabled": int,
            "active": int,
        },
        pk="id",
        not_null={"name", "url", "config_url", "status"},
        defaults={"status": "new", "error_count": 0, "disabled": 0, "active": 1},
    )
    db.table("feeds").create_index(["name"], unique=True)
    db.table("stories").create(
        {"id": int, "headline": str, "first_entry_id": int, "first_seen": str, "updated": str},
        pk="id",
    )
    db.table("entries").create(
        {
            "id": int,
            "feed_id": int,
            "key": str,
            "uid": str,
            "link": str,
            "canonical_link": str,
            "title": str,
            "author": str,
            "summary": str,
            "content": str,
            "published": str,
            "updated": str,
            "first_seen": str,
            "published_known": int,
            "content_hash": str,
            "story_id": int,
        },
        pk="id",
        not_null={"feed_id", "key", "uid", "title", "published", "updated", "first_seen"},
        foreign_keys=[("feed_id", "feeds", "id"), ("story_id", "stories", "id")],
    )
    db.table("entries").create_index(["feed_id", "key"], unique=True)
    db.table("entries").create_index(["published"])
    db.table("entries").create_index(["canonical_link"])
    db.table("entries").create_index(["story_id"])
    db.table("tags").create({"id": int, "path": str}, pk="id", not_null={"path"})
    db.table("tags").create_index(["path"], unique=True)
    db.table("entry_tags").create(
        {"entry_id": int, "tag_id": int},
        pk=("entry_id", "tag_id"),
        foreign_keys=[("entry_id", "entries", "id"), ("tag_id", "tags", "id")],
    )
    db.table("entry_tags").create_index(["tag_id", "entry_id"])


def _schema_v2(db: sqlite_utils.Database) -> None:
    """Scheduling state: why the next poll is when it is, and small key/value facts (last digest)."""
    db.table("feeds").add_column("next_reason", str)
    db.table("meta").create({"key": str, "value": str}, pk="key")


def _schema_v3(db: sqlite_utils.Database) -> None:
    """Change tracking per entry, so a body that flaps between versions is not rewritten every poll."""
    db.table("entries").add_column("previous_hash", str)
    db.table("entries").add_column("rewritten_at", str)


def _schema_v4(db: sqlite_utils.Database) -> None:
    """Render only what changed: find rewritten entries without a full scan."""
    db.table("entries").create_index(["rewritten_at"])


_MIGRATIONS = {1: _schema_v1, 2: _schema_v2, 3: _schema_v3, 4: _schema_v4}


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
