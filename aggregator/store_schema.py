"""The database schema as a list of forward migrations, one per schema version.

Part of the store (the only place with SQL): `Store` runs each missing migration in
one transaction and records the version in ``PRAGMA user_version``. A migration never
changes once released; a new need is a new version.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import sqlite_utils


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


def _schema_v5(db: sqlite_utils.Database) -> None:
    """Search and stories: an FTS5 index over title and plain summary, and what a story knows of itself."""
    db.table("entries").add_column("summary_text", str)
    for column, kind in (("uid", str), ("last_seen", str), ("feeds", int), ("size", int)):
        db.table("stories").add_column(column, kind)
    db.table("stories").create_index(["first_seen"])
    db.table("stories").create_index(["updated"])
    db.execute(
        "CREATE VIRTUAL TABLE entries_fts USING fts5(title, summary_text, content='entries', "
        "content_rowid='id', tokenize='unicode61 remove_diacritics 2')"
    )
    # External content: the index holds no copy of the text, and triggers keep it in step.
    db.execute(
        """CREATE TRIGGER entries_fts_insert AFTER INSERT ON entries BEGIN
             INSERT INTO entries_fts (rowid, title, summary_text) VALUES (new.id, new.title, new.summary_text);
           END"""
    )
    db.execute(
        """CREATE TRIGGER entries_fts_delete AFTER DELETE ON entries BEGIN
             INSERT INTO entries_fts (entries_fts, rowid, title, summary_text)
             VALUES ('delete', old.id, old.title, old.summary_text);
           END"""
    )
    db.execute(
        """CREATE TRIGGER entries_fts_update AFTER UPDATE OF title, summary_text ON entries BEGIN
             INSERT INTO entries_fts (entries_fts, rowid, title, summary_text)
             VALUES ('delete', old.id, old.title, old.summary_text);
             INSERT INTO entries_fts (rowid, title, summary_text) VALUES (new.id, new.title, new.summary_text);
           END"""
    )
    db.execute("INSERT INTO entries_fts (entries_fts) VALUES ('rebuild')")


# Views for people reading the database with Datasette or the sqlite3 shell: the entries with
# their feed, tags and story in one row, the stories with their outlets, each feed's health.
# Dates stay ISO 8601 UTC text (they sort); lists are joined with ", " in a stable order.
# Like a migration, these texts never change once released: a better view is a new version.
# SQLite checks views when a table is renamed, so a later migration that rebuilds a table
# (sqlite-utils' transform) drops these views first and creates them again after.
_ENTRIES_WITH_TAGS = """
SELECT
  e.id AS id,
  e.published AS published,
  f.name AS feed,
  COALESCE(f.title, f.feed_title, f.name) AS feed_title,
  e.title AS title,
  e.link AS link,
  e.author AS author,
  (SELECT group_concat(path, ', ') FROM (
     SELECT t.path AS path FROM entry_tags et JOIN tags t ON t.id = et.tag_id
     WHERE et.entry_id = e.id ORDER BY t.path)) AS tags,
  e.story_id AS story_id,
  s.headline AS story_headline,
  s.feeds AS story_outlets,
  e.summary_text AS summary,
  e.first_seen AS first_seen,
  e.uid AS uid
FROM entries e
LEFT JOIN feeds f ON f.id = e.feed_id  -- LEFT (feed_id is never NULL) lets count(*) skip the join
LEFT JOIN stories s ON s.id = e.story_id
"""

_STORIES_WITH_OUTLETS = """
SELECT
  s.id AS id,
  s.headline AS headline,
  s.first_seen AS first_seen,
  s.last_seen AS last_seen,
  s.feeds AS outlet_count,
  s.size AS size,
  (SELECT group_concat(name, ', ') FROM (
     SELECT f.name AS name FROM entries e JOIN feeds f ON f.id = e.feed_id
     WHERE e.story_id = s.id GROUP BY f.id ORDER BY min(e.published), f.name)) AS outlets,
  (SELECT group_concat(path, ', ') FROM (
     SELECT DISTINCT t.path AS path FROM entries e
     JOIN entry_tags et ON et.entry_id = e.id JOIN tags t ON t.id = et.tag_id
     WHERE e.story_id = s.id ORDER BY t.path)) AS tags,
  (SELECT e.link FROM entries e WHERE e.story_id = s.id ORDER BY e.published, e.id LIMIT 1) AS link,
  s.uid AS uid
FROM stories s
"""

_FEED_HEALTH = """
SELECT
  f.name AS name,
  COALESCE(f.title, f.feed_title, f.name) AS title,
  f.url AS url,
  CASE WHEN f.disabled THEN 'disabled' ELSE f.status END AS status,
  f.last_error AS last_error,
  f.error_count AS errors_in_a_row,
  f.last_fetched AS last_fetched,
  f.last_ok AS last_ok,
  f.next_fetch AS next_fetch,
  f.next_reason AS next_fetch_reason,
  (SELECT count(*) FROM entries e WHERE e.feed_id = f.id) AS entries,
  (SELECT count(*) FROM entries e WHERE e.feed_id = f.id
     AND e.published >= strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '-7 days')) AS entries_last_7_days,
  (SELECT max(e.published) FROM entries e WHERE e.feed_id = f.id) AS latest_entry,
  f.active AS in_config
FROM feeds f
"""

VIEWS = {
    "entries_with_tags": _ENTRIES_WITH_TAGS,
    "stories_with_outlets": _STORIES_WITH_OUTLETS,
    "feed_health": _FEED_HEALTH,
}


def _schema_v6(db: sqlite_utils.Database) -> None:
    """Readable views for Datasette and the sqlite3 shell; an index so a feed's newest entry is one look-up.

    Safe to run again: each view is replaced, the index kept.
    """
    db.table("entries").create_index(["feed_id", "published"], if_not_exists=True)
    for name, sql in VIEWS.items():
        db.create_view(name, sql.strip(), replace=True)


def _schema_v7(db: sqlite_utils.Database) -> None:
    """Each grouped entry keeps the words grouping found in it, so a later update reads them
    instead of finding them again in every entry of the last two days; a story's dates and
    outlets are read from an index of its members instead of from their rows (a story that
    gains entries has them counted again, and big stories made that a growing share of storing).
    """
    db.execute("ALTER TABLE entries ADD COLUMN story_profile TEXT")
    db.table("entries").create_index(["story_id", "published", "feed_id"], if_not_exists=True)


MIGRATIONS: dict[int, Callable[[sqlite_utils.Database], None]] = {
    1: _schema_v1,
    2: _schema_v2,
    3: _schema_v3,
    4: _schema_v4,
    5: _schema_v5,
    6: _schema_v6,
    7: _schema_v7,
}
SCHEMA_VERSION = max(MIGRATIONS)
