"""The store's read side: entries, stories, tags and full-text search for render, export and the CLI.

Part of the store, the only place with SQL: `Store` inherits these queries, and a
read-only `Store` (``serve``'s search page, `render` in the daemon) needs nothing else.
Nothing here writes.
"""

from __future__ import annotations

import bisect
import re
import sqlite3
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aggregator.errors import SearchQueryError, StoreError
from aggregator.models import ChangeMarker, Entry, SearchHit, Story, StoryItem

_ENTRY_COLUMNS = """
    e.id, e.uid, f.name AS feed, COALESCE(f.title, f.feed_title, f.name) AS feed_title,
    f.site_link AS feed_link, e.key, e.title, e.link, e.author, e.summary, e.content,
    e.published, e.updated, e.first_seen, e.story_id, e.summary_text, st.uid AS story_uid,
    (SELECT group_concat(t.path, char(31)) FROM entry_tags et JOIN tags t ON t.id = et.tag_id
     WHERE et.entry_id = e.id) AS tag_list
"""
_TAG_LIST = (
    "SELECT group_concat(t.path, char(31)) FROM entry_tags et JOIN tags t ON t.id = et.tag_id WHERE et.entry_id = e.id"
)
_TAGGED_ENTRY_IDS = "SELECT et.entry_id FROM entry_tags et JOIN tags t ON t.id = et.tag_id WHERE t.path = ?"
_ENTRY_HAS_TAG = "SELECT 1 FROM entry_tags et JOIN tags t ON t.id = et.tag_id WHERE et.entry_id = e.id AND t.path = ?"
_STORY_COLUMNS = "s.id, s.uid, s.headline, s.first_seen, s.updated"
# Search snippets mark matches with these (never found in stored text); callers escape, then mark.
MATCH_START = "\x02"
MATCH_END = "\x03"
SNIPPET_TOKENS = 24
# Search ranks (by bm25) at most this many of the newest matching entries.
SEARCH_CANDIDATES = 500
# Words that make a query FTS5 syntax rather than plain words to look for.
_FTS_SYNTAX_RE = re.compile(r'["()*^:{}]|\b(?:AND|OR|NOT|NEAR)\b')
_COMPOUND_WORD_RE = re.compile(r"(?<![\w\"])\w+(?:[.'’-]\w+)+(?![\w*])")
_WORD_RE = re.compile(r"\w+(?:[.'’-]\w+)*")


def iso(moment: datetime) -> str:
    """A UTC ISO 8601 string with a Z, the form every date column uses."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def from_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    # fromisoformat reads the trailing Z (Python 3.11+) and is some ten times faster than strptime,
    # which counts when a day page reads a thousand entries.
    return datetime.fromisoformat(text)


@dataclass(frozen=True)
class OutletHealth:
    """One outlet (a feed) as its page shows it: what it is and how its polls went (dates UTC)."""

    name: str
    title: str
    url: str
    site_link: str | None
    status: str  # new, ok, not_modified or error
    last_error: str | None
    error_count: int
    disabled: bool
    active: bool  # False once the feed is no longer in feeds.yaml
    last_fetched: datetime | None
    last_ok: datetime | None
    next_fetch: datetime | None
    next_reason: str | None


@dataclass(frozen=True)
class DaySpan:
    """A day of the site's time zone as the UTC instants [start, end) it covers."""

    day: date
    start: datetime
    end: datetime


class Queries:
    """The read-only queries; `Store` supplies `conn`."""

    conn: sqlite3.Connection

    # -- entries ----------------------------------------------------------------------------

    def entries_between(self, start: datetime, end: datetime) -> list[Entry]:
        return self._entries("WHERE e.published >= ? AND e.published < ?", (iso(start), iso(end)))

    def recent_entries(self, limit: int) -> list[Entry]:
        return self._entries("", (), limit)

    def entries_for_tag(self, tag: str, limit: int) -> list[Entry]:
        return self._entries(f"WHERE e.id IN ({_TAGGED_ENTRY_IDS})", (tag,), limit)

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
        """Where entries and stories stand now; `days_changed_since` and `tags_changed_since` compare to it."""
        row = self.conn.execute(
            "SELECT coalesce(max(id), 0) AS last_id, coalesce(max(rewritten_at), '') AS last_rewrite, "
            "(SELECT coalesce(max(updated), '') FROM stories) AS last_story FROM entries"
        ).fetchone()
        return ChangeMarker(int(row["last_id"]), str(row["last_rewrite"]), str(row["last_story"]))

    def days_changed_since(self, marker: ChangeMarker, tz: ZoneInfo) -> set[date]:
        """Days (in `tz`) with entries added or rewritten, or stories joined, after `marker`.

        A story belongs to the day it was first seen, so an outlet joining it later changes that day.
        """
        rows = self.conn.execute(
            "SELECT DISTINCT substr(published, 1, 13) AS hour FROM entries WHERE id > ? "
            "UNION SELECT DISTINCT substr(published, 1, 13) FROM entries WHERE rewritten_at > ? "
            "UNION SELECT DISTINCT substr(first_seen, 1, 13) FROM stories WHERE updated > ?",
            (marker.last_id, marker.last_rewrite, marker.last_story),
        )
        return _days_of_hours((row["hour"] for row in rows if row["hour"]), tz)

    def tags_changed_since(self, marker: ChangeMarker) -> set[str]:
        """Tags of the entries added or rewritten, and of the stories joined, after `marker`."""
        rows = self.conn.execute(
            """SELECT DISTINCT t.path FROM entry_tags et JOIN tags t ON t.id = et.tag_id
               WHERE et.entry_id > ? OR et.entry_id IN (SELECT id FROM entries WHERE rewritten_at > ?)
               OR et.entry_id IN (SELECT e.id FROM entries e JOIN stories s ON s.id = e.story_id
                                  WHERE s.updated > ?)""",
            (marker.last_id, marker.last_rewrite, marker.last_story),
        )
        return {row["path"] for row in rows}

    def iter_entries(self, since: datetime | None = None, tag: str | None = None, batch: int = 1000) -> Iterator[Entry]:
        """Every entry (published since `since`, tagged `tag`), oldest first, in batches so memory stays flat."""
        last_id = 0
        since_text = iso(since) if since else ""
        where = "WHERE e.id > ? AND e.published >= ?"
        if tag is not None:
            # EXISTS, not IN: each page checks its own rows instead of listing every tagged entry again.
            where += f" AND EXISTS ({_ENTRY_HAS_TAG})"
        while True:
            page = self._entries(
                where,
                (last_id, since_text) if tag is None else (last_id, since_text, tag),
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
        sql = (
            f"SELECT {_ENTRY_COLUMNS} FROM entries e JOIN feeds f ON f.id = e.feed_id "
            f"LEFT JOIN stories st ON st.id = e.story_id {where} ORDER BY {order}"
        )
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [_entry(row) for row in self.conn.execute(sql, tuple(params))]

    def meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row["value"])

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

    # -- outlets ------------------------------------------------------------------------------

    def outlets(self) -> list[OutletHealth]:
        """Every feed the database knows (removed ones too: their entries are still shown), by name."""
        rows = self.conn.execute(
            """SELECT name, url, COALESCE(title, feed_title, name) AS title, site_link, status, last_error,
                      error_count, disabled, active, last_fetched, last_ok, next_fetch, next_reason
               FROM feeds ORDER BY name"""
        )
        return [
            OutletHealth(
                name=row["name"],
                title=row["title"],
                url=row["url"],
                site_link=row["site_link"],
                status=row["status"],
                last_error=row["last_error"],
                error_count=int(row["error_count"] or 0),
                disabled=bool(row["disabled"]),
                active=bool(row["active"]),
                last_fetched=from_iso(row["last_fetched"]),
                last_ok=from_iso(row["last_ok"]),
                next_fetch=from_iso(row["next_fetch"]),
                next_reason=row["next_reason"],
            )
            for row in rows
        ]

    def feeds_changed_since(self, marker: ChangeMarker) -> set[str]:
        """Names of the feeds with entries added or rewritten after `marker` (two index look-ups, no scan)."""
        rows = self.conn.execute(
            "SELECT f.name FROM feeds f WHERE f.id IN (SELECT feed_id FROM entries WHERE id > ? "
            "UNION SELECT feed_id FROM entries WHERE rewritten_at > ?)",
            (marker.last_id, marker.last_rewrite),
        )
        return {row["name"] for row in rows}

    def entries_for_feed(self, feed: str, limit: int) -> list[Entry]:
        """The `limit` newest entries of one feed, newest first."""
        return self._entries("WHERE f.name = ?", (feed,), limit)

    def entry_counts_by_day(
        self, days: Sequence[DaySpan], feeds: Collection[str] | None = None
    ) -> dict[str, dict[date, int]]:
        """Entries published in each of `days` (contiguous, ascending), per feed name.

        For every feed (None) one pass over the span's range of the published index; for a
        few named feeds one query each, which reads only that feed's entries.
        """
        if not days:
            return {}
        bounds = [iso(span.start) for span in days] + [iso(days[-1].end)]
        select = (
            "SELECT f.name AS feed, e.published FROM entries e JOIN feeds f ON f.id = e.feed_id "
            "WHERE e.published >= ? AND e.published < ?"
        )
        if feeds is None:
            batches = [self.conn.execute(select, (bounds[0], bounds[-1]))]
        else:
            batches = [self.conn.execute(select + " AND f.name = ?", (bounds[0], bounds[-1], name)) for name in feeds]
        counts: dict[str, dict[date, int]] = {}
        for rows in batches:
            for row in rows:
                index = bisect.bisect_right(bounds, row["published"]) - 1
                per_day = counts.setdefault(row["feed"], {})
                per_day[days[index].day] = per_day.get(days[index].day, 0) + 1
        return counts

    # -- stories ------------------------------------------------------------------------------

    def stories_between(self, start: datetime, end: datetime) -> list[Story]:
        """Stories first seen in [start, end), and entries not yet in a story as stories of one."""
        stories = self._stories("WHERE s.first_seen >= ? AND s.first_seen < ?", (iso(start), iso(end)))
        # `+` keeps SQLite on the day's range of the published index: with the story_id index it
        # would walk every unassigned entry, a whole archive's right after an upgrade.
        loose = self._entries(
            "WHERE +e.story_id IS NULL AND e.published >= ? AND e.published < ?", (iso(start), iso(end))
        )
        return stories + [_story_of_one(entry) for entry in loose]

    def recent_stories(self, limit: int, tag: str | None = None) -> list[Story]:
        """The `limit` stories most recently started or joined (with an entry tagged `tag`), newest first."""
        if tag is None:
            stories = self._stories("", (), limit)
            loose = self._entries("WHERE e.story_id IS NULL", (), limit)
        else:
            stories = self._stories(
                "WHERE EXISTS (SELECT 1 FROM entries m JOIN entry_tags et ON et.entry_id = m.id "
                "JOIN tags t ON t.id = et.tag_id WHERE m.story_id = s.id AND t.path = ?)",
                (tag,),
                limit,
            )
            loose = self._entries(f"WHERE e.story_id IS NULL AND e.id IN ({_TAGGED_ENTRY_IDS})", (tag,), limit)
        merged = stories + [_story_of_one(entry) for entry in loose]
        merged.sort(key=lambda story: (story.updated, story.id), reverse=True)
        return merged[:limit]

    def story_items_since(self, since: datetime) -> list[tuple[StoryItem, int]]:
        """Entries published since `since` that are in a story, with their story, in the order they joined."""
        rows = self.conn.execute(
            f"""SELECT e.id, f.name AS feed, e.title, e.summary_text, e.published, e.story_id,
                       ({_TAG_LIST}) AS tag_list
                FROM entries e JOIN feeds f ON f.id = e.feed_id
                WHERE e.published >= ? AND e.story_id IS NOT NULL ORDER BY e.id""",
            (iso(since),),
        )
        return [(_story_item(row), int(row["story_id"])) for row in rows]

    def unassigned_items(self, limit: int) -> list[StoryItem]:
        """Entries not yet in a story, oldest first."""
        rows = self.conn.execute(
            f"""SELECT e.id, f.name AS feed, e.title, e.summary_text, e.published, ({_TAG_LIST}) AS tag_list
                FROM entries e JOIN feeds f ON f.id = e.feed_id
                WHERE e.story_id IS NULL ORDER BY e.id LIMIT ?""",
            (limit,),
        )
        return [_story_item(row) for row in rows]

    def _stories(self, where: str, params: Sequence[Any], limit: int | None = None) -> list[Story]:
        sql = f"SELECT {_STORY_COLUMNS} FROM stories s {where} ORDER BY s.updated DESC, s.id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        heads = self.conn.execute(sql, tuple(params)).fetchall()
        members: dict[int, list[Entry]] = {int(row["id"]): [] for row in heads}
        ids = list(members)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for entry in self._entries(f"WHERE e.story_id IN ({marks})", chunk, order="e.published, e.id"):
                assert entry.story_id is not None
                members[entry.story_id].append(entry)
        return [
            Story(
                id=int(row["id"]),
                uid=row["uid"],
                headline=row["headline"],
                first_seen=_required_date(row["first_seen"]),
                updated=_required_date(row["updated"]),
                entries=tuple(members[int(row["id"])]),
            )
            for row in heads
            if members[int(row["id"])]
        ]

    # -- search -------------------------------------------------------------------------------

    def search(
        self,
        query: str,
        *,
        tag: str | None = None,
        since: datetime | None = None,
        feed: str | None = None,
        limit: int = 20,
    ) -> list[SearchHit]:
        """Entries matching `query` (plain words, or FTS5 syntax), best first by bm25, with snippets.

        Plain words must all appear (in any order); a title match weighs more than one in the
        summary. Raises SearchQueryError for a query FTS5 cannot read.
        """
        match = fts_query(query)
        where = ["entries_fts MATCH ?"]
        params: list[Any] = [match]
        if since is not None:
            where.append("e.published >= ?")
            params.append(iso(since))
        if feed is not None:
            where.append("f.name = ?")
            params.append(feed)
        if tag is not None:
            where.append(f"EXISTS ({_ENTRY_HAS_TAG})")
            params.append(tag)
        # Rank the newest SEARCH_CANDIDATES matches only: FTS5 walks its index newest first and stops
        # there, so a word in half the archive costs as much as a rare one.
        ranked = f"""SELECT entries_fts.rowid AS id, bm25(entries_fts, 5.0, 1.0) AS rank, e.published
                     FROM entries_fts JOIN entries e ON e.id = entries_fts.rowid JOIN feeds f ON f.id = e.feed_id
                     WHERE {" AND ".join(where)} ORDER BY entries_fts.rowid DESC LIMIT {SEARCH_CANDIDATES}"""
        try:
            candidates = self.conn.execute(ranked, params).fetchall()
            best = sorted(candidates, key=lambda row: (row["rank"], _descending(row["published"])))[: int(limit)]
            rank_of = {int(row["id"]): float(row["rank"]) for row in best}
            marks = ",".join("?" * len(rank_of))
            rows = self.conn.execute(
                f"""SELECT {_ENTRY_COLUMNS},
                           snippet(entries_fts, -1, '{MATCH_START}', '{MATCH_END}', '…', {SNIPPET_TOKENS}) AS snip
                    FROM entries_fts JOIN entries e ON e.id = entries_fts.rowid JOIN feeds f ON f.id = e.feed_id
                    LEFT JOIN stories st ON st.id = e.story_id
                    WHERE entries_fts MATCH ? AND entries_fts.rowid IN ({marks})""",
                (match, *rank_of),
            ).fetchall()
        except sqlite3.OperationalError as error:
            if "no such table" in str(error):
                raise StoreError(
                    f"the database has no search index yet (it was made by an older version): "
                    f"run `aggregator update` once to upgrade it ({error})"
                ) from None
            if any(word in str(error) for word in ("locked", "busy", "disk", "readonly", "database")):
                raise StoreError(f"search failed: {error}") from None
            # Everything else SQLite says here is about the query: a syntax error, an open quote, ...
            raise SearchQueryError(f"cannot read the search query {query!r}: {error}") from None
        hits = [SearchHit(_entry(row), rank_of[int(row["id"])], row["snip"] or "") for row in rows]
        order = {entry_id: position for position, entry_id in enumerate(rank_of)}
        return sorted(hits, key=lambda hit: order[hit.entry.id])


def fts_query(query: str) -> str:
    """The FTS5 MATCH expression for what a person typed.

    Plain words become quoted terms that must all appear ("Crypto.com" and "Binance's"
    are words, not syntax); a query that already uses FTS5 syntax (quotes, AND/OR/NOT,
    NEAR, a prefix *, a column:) is passed on as written, except that its words with a dot,
    apostrophe or hyphen are quoted (`Crypto.com OR Gemini`), which FTS5 would reject.
    """
    text = query.strip()
    if not text:
        raise SearchQueryError("the search query is empty; give one or more words")
    if _FTS_SYNTAX_RE.search(text):
        # Outside quoted phrases (the odd-numbered parts are inside), quote compound words.
        parts = text.split('"')
        for index in range(0, len(parts), 2):
            parts[index] = _COMPOUND_WORD_RE.sub(lambda match: f'"{match.group()}"', parts[index])
        return '"'.join(parts)
    words = _WORD_RE.findall(text)
    if not words:
        raise SearchQueryError(f"the search query {query!r} has no words to look for")
    return " ".join(f'"{word}"' for word in words)


def _descending(text: str) -> tuple[int, ...]:
    """A sort key that puts later ISO dates first."""
    return tuple(-ord(char) for char in text)


def _required_date(text: str | None) -> datetime:
    moment = from_iso(text)
    assert moment is not None, "a story row without a date"
    return moment


def _story_item(row: sqlite3.Row) -> StoryItem:
    return StoryItem(
        id=int(row["id"]),
        feed=row["feed"],
        title=row["title"],
        text=row["summary_text"] or "",
        tags=frozenset(row["tag_list"].split("\x1f")) if row["tag_list"] else frozenset(),
        published=_required_date(row["published"]),
    )


def _story_of_one(entry: Entry) -> Story:
    """An entry that is not (yet) in a story, shown as a story of its own."""
    return Story(
        id=entry.id,
        uid=entry.uid,
        headline=entry.title,
        first_seen=entry.published,
        updated=entry.updated,
        entries=(entry,),
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
        text=row["summary_text"] or "",
        story=row["story_uid"],
    )


def _days_of_hours(hours: Iterable[str], tz: ZoneInfo) -> set[date]:
    days: set[date] = set()
    for hour in hours:
        start = datetime.strptime(hour, "%Y-%m-%dT%H").replace(tzinfo=UTC)
        days.add(start.astimezone(tz).date())
        days.add((start + timedelta(minutes=59, seconds=59)).astimezone(tz).date())
    return days
