"""The store's read side: entries, stories, tags and full-text search for render, export and the CLI.

Part of the store, the only place with SQL: `Store` inherits these queries, and a
read-only `Store` (``serve``'s search page, `render` in the daemon) needs nothing else.
Nothing here writes.
"""

from __future__ import annotations

import bisect
import sqlite3
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aggregator.errors import SearchQueryError, StoreError
from aggregator.models import ChangeMarker, Entry, SearchHit, Story, StoryItem
from aggregator.store_fts import (
    COLUMN_WEIGHTS,
    DOCUMENT_COUNT_LIMIT,
    MATCH_END,
    MATCH_START,
    IndexTotals,
    SearchQuery,
    bm25,
    document_count,
    entry_size,
    idf,
    index_totals,
    parse_query,
    phrase_frequencies,
)

# What `_entry` reads, in this order: these, then the story's uid and the tag list; a story's
# rows (`_story_rows`) add its headline, first_seen and updated.
_PUBLISHED, _STORY_ID, _STORY_UID, _HEADLINE, _FIRST_SEEN, _UPDATED = 11, 14, 16, 18, 19, 20
_ENTRY_FIELDS = """
    e.id, e.uid, f.name AS feed, COALESCE(f.title, f.feed_title, f.name) AS feed_title,
    f.site_link AS feed_link, e.key, e.title, e.link, e.author, e.summary, e.content,
    e.published, e.updated, e.first_seen, e.story_id, e.summary_text"""
_ENTRY_COLUMNS = f"""{_ENTRY_FIELDS}, st.uid AS story_uid,
    (SELECT group_concat(t.path, char(31)) FROM entry_tags et JOIN tags t ON t.id = et.tag_id
     WHERE et.entry_id = e.id) AS tag_list
"""
_TAG_LIST = (
    "SELECT group_concat(t.path, char(31)) FROM entry_tags et JOIN tags t ON t.id = et.tag_id WHERE et.entry_id = e.id"
)
# What story grouping reads of an entry (see `_story_item`), in this order.
_STORY_ITEM_COLUMNS = f"e.id, f.name, e.title, e.summary_text, e.published, ({_TAG_LIST})"
# The same for an entry in a story: with its stored words, the text and tags are not needed.
_STORED_STORY_ITEM_COLUMNS = (
    "e.id, f.name, e.title, CASE WHEN e.story_profile IS NULL THEN e.summary_text END, e.published, "
    f"CASE WHEN e.story_profile IS NULL THEN ({_TAG_LIST}) END, e.story_profile"
)
# How many of a tag's newest entries are read per story a tag feed needs (see `_stories_of_newest_tagged`).
TAGGED_CANDIDATES_PER_STORY = 8
_TAGGED_ENTRY_IDS = "SELECT et.entry_id FROM entry_tags et JOIN tags t ON t.id = et.tag_id WHERE t.path = ?"
_ENTRY_HAS_TAG = "SELECT 1 FROM entry_tags et JOIN tags t ON t.id = et.tag_id WHERE et.entry_id = e.id AND t.path = ?"
# The ids of the entries each search filter keeps.
_SINCE_IDS = "SELECT id FROM entries WHERE published >= ?"
_FEED_IDS = "SELECT fe.id FROM entries fe JOIN feeds ff ON ff.id = fe.feed_id WHERE ff.name = ?"
_TAGGED_IDS = "SELECT et.entry_id AS id FROM entry_tags et JOIN tags t ON t.id = et.tag_id WHERE t.path = ?"
# A search match's tag, checked without reading its entry row (three times faster).
_MATCH_HAS_TAG = (
    "SELECT 1 FROM entry_tags et WHERE et.entry_id = entries_fts.rowid "
    "AND et.tag_id = (SELECT id FROM tags WHERE path = ?)"
)
_STORY_COLUMNS = "s.id, s.uid, s.headline, s.first_seen, s.updated"
SNIPPET_TOKENS = 24
# Search ranks (by bm25) at most this many of the newest matching entries.
SEARCH_CANDIDATES = 500
# A search filter (feed, tag, since) that keeps at most this many entries is checked against a
# list of their ids (about 1.5 ms to make per 20,000) rather than on each match's entry row.
SELECTIVE_FILTER = 20_000
# Where FTS5 keeps its totals (rows, tokens per column) in its data table.
_FTS_AVERAGES_ID = 1
_BM25_WEIGHTS = ", ".join(str(weight) for weight in COLUMN_WEIGHTS)


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
        """Days (in `tz`) that have entries, ascending.

        One look at the published index per day: the first entry at or after a local midnight
        names the next day with entries (reading every entry's hour took 0.3 s on 1,000,000).
        """
        days: list[date] = []
        since = ""
        while True:
            first = self.conn.execute("SELECT min(published) FROM entries WHERE published >= ?", (since,)).fetchone()[0]
            moment = from_iso(first)
            if moment is None:
                return days
            day = moment.astimezone(tz).date()
            if not days or days[-1] != day:
                days.append(day)
            next_midnight = datetime.combine(day + timedelta(days=1), time(), tzinfo=tz)
            since = max(iso(next_midnight), first + " ")  # and always past this entry, so the walk ends

    def change_marker(self) -> ChangeMarker:
        """Where entries and stories stand now; `days_changed_since` and `tags_changed_since` compare to it."""
        # Each max() on its own, so that SQLite reads it off the end of an index rather than every row.
        row = self.conn.execute(
            "SELECT coalesce((SELECT max(id) FROM entries), 0) AS last_id, "
            "coalesce((SELECT max(rewritten_at) FROM entries), '') AS last_rewrite, "
            "coalesce((SELECT max(updated) FROM stories), '') AS last_story"
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
        return [_entry(row) for row in self._plain_rows(sql, params)]

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
        stories = _stories_of_rows(self._story_rows(start, end))
        return stories + [_story_of_one(entry) for entry in self._unassigned_between(start, end)]

    def stories_of_days(self, days: Sequence[DaySpan]) -> Iterator[list[Story]]:
        """The stories of each of `days` (ascending, apart), as `stories_between` gives each day's.

        Their rows are read at once: for a run of neighbouring days, that reads each stored page
        about once (an outlet's entries of a few days share one) rather than once a day. Each
        day's stories are made as they are asked for, so that only one day's are in memory.
        """
        if not days:
            return
        starts = [iso(span.start) for span in days]
        ends = [iso(span.end) for span in days]
        rows: list[list[tuple[Any, ...]]] = [[] for _ in days]
        for row in self._story_rows(days[0].start, days[-1].end):
            index = bisect.bisect_right(starts, row[_FIRST_SEEN]) - 1
            if index >= 0 and row[_FIRST_SEEN] < ends[index]:
                rows[index].append(row)
        unassigned: list[list[Entry]] = [[] for _ in days]
        for entry in self._unassigned_between(days[0].start, days[-1].end):
            index = bisect.bisect_right(starts, iso(entry.published)) - 1
            if index >= 0 and iso(entry.published) < ends[index]:
                unassigned[index].append(entry)
        for day_rows, day_unassigned in zip(rows, unassigned, strict=True):
            yield _stories_of_rows(day_rows) + [_story_of_one(entry) for entry in day_unassigned]

    def _story_rows(self, start: datetime, end: datetime) -> list[tuple[Any, ...]]:
        """The entries of the stories first seen in [start, end), each with its story (see `_stories_of_rows`).

        The entries' ids come from two indexes first, then their rows are read in the order they
        are stored: an outlet's entries of a few days share pages, each read once, not once a story.
        """
        return self._plain_rows(
            f"""SELECT {_ENTRY_FIELDS}, s.uid, ({_TAG_LIST}), s.headline, s.first_seen, s.updated
                FROM entries e JOIN stories s ON s.id = e.story_id JOIN feeds f ON f.id = e.feed_id
                WHERE e.id IN (SELECT member.id FROM stories started JOIN entries member
                                 ON member.story_id = started.id
                               WHERE started.first_seen >= ? AND started.first_seen < ?)""",
            (iso(start), iso(end)),
        )

    def _unassigned_between(self, start: datetime, end: datetime) -> list[Entry]:
        """Entries published in [start, end) that are in no story yet, newest first."""
        if not self._has_unassigned_entries():
            return []
        # `+` keeps SQLite on the range of the published index: with the story_id index it would
        # walk every unassigned entry, a whole archive's right after an upgrade.
        return self._entries(
            "WHERE +e.story_id IS NULL AND e.published >= ? AND e.published < ?", (iso(start), iso(end))
        )

    def _has_unassigned_entries(self) -> bool:
        """Whether any entry waits for a story: one look at the story_id index, which spares a day
        page the walk over its entries when none does."""
        return bool(self.conn.execute("SELECT EXISTS (SELECT 1 FROM entries WHERE story_id IS NULL)").fetchone()[0])

    def recent_stories(self, limit: int, tag: str | None = None) -> list[Story]:
        """The `limit` stories most recently started or joined (with an entry tagged `tag`), newest first."""
        # Entries in no story are looked for only if there are any: the look lists every entry
        # with the tag (0.15 s for a common tag on 1,000,000 entries) or walks every entry.
        loose: list[Entry] = []
        if tag is None:
            stories = self._stories("", (), limit)
            if self._has_unassigned_entries():
                loose = self._entries("WHERE e.story_id IS NULL", (), limit)
        else:
            ids = self._stories_of_newest_tagged(tag, limit)
            stories = self._stories(f"WHERE s.id IN ({','.join('?' * len(ids))})", ids, limit) if ids else []
            if self._has_unassigned_entries():
                loose = self._entries(f"WHERE e.story_id IS NULL AND e.id IN ({_TAGGED_ENTRY_IDS})", (tag,), limit)
        merged = stories + [_story_of_one(entry) for entry in loose]
        merged.sort(key=lambda story: (story.updated, story.id), reverse=True)
        return merged[:limit]

    def _stories_of_newest_tagged(self, tag: str, limit: int) -> list[int]:
        """The stories of the newest entries tagged `tag`: enough of them that `limit` stories are among them.

        Walking the tag's own index from its newest entry keeps a rare tag cheap on a large
        archive (walking every story newest first and testing each for the tag took seconds).
        Candidates come from the newest `TAGGED_CANDIDATES_PER_STORY` x `limit` tagged entries,
        widened until they hold `limit` stories or the tag has no more entries; a story's last
        join is close to its tagged entries (the grouping window is 48 h), so it is among them.
        """
        row = self.conn.execute("SELECT id FROM tags WHERE path = ?", (tag,)).fetchone()
        if row is None:
            return []
        window = limit * TAGGED_CANDIDATES_PER_STORY
        while True:
            rows = self.conn.execute(
                "SELECT e.story_id FROM entry_tags et JOIN entries e ON e.id = et.entry_id "
                "WHERE et.tag_id = ? ORDER BY et.entry_id DESC LIMIT ?",
                (row["id"], window),
            ).fetchall()
            stories = list(dict.fromkeys(int(found[0]) for found in rows if found[0] is not None))
            if len(stories) >= limit or len(rows) < window:
                return stories
            window *= 4

    def story_items_since(
        self, since: datetime, before: datetime | None = None, below_id: int | None = None
    ) -> list[tuple[StoryItem, int]]:
        """Entries published since `since` (and before `before`) that are in a story, with their story,
        in the order they joined; only those with an id below `below_id`, if given."""
        bounds = ["e.published >= ?"]
        params: list[object] = [iso(since)]
        if before is not None:
            # iso() drops fractions of a second, so `<=` keeps every entry before `before` (and a few
            # at its second, dropped below); dates are stored in one fixed-width form, which sorts as time.
            bounds.append("e.published <= ?")
            params.append(iso(before))
        if below_id is not None:
            bounds.append("e.id < ?")
            params.append(below_id)
        rows = self._plain_rows(
            f"""SELECT {_STORED_STORY_ITEM_COLUMNS}, e.story_id
                FROM entries e JOIN feeds f ON f.id = e.feed_id
                WHERE {" AND ".join(bounds)} AND e.story_id IS NOT NULL ORDER BY e.id""",
            params,
        )
        pairs = [(_story_item(row[:-1]), int(row[-1])) for row in rows]
        if before is None:
            return pairs
        return [pair for pair in pairs if pair[0].published < before]

    def unassigned_items(self, limit: int) -> list[StoryItem]:
        """Entries not yet in a story, oldest first."""
        rows = self._plain_rows(
            f"""SELECT {_STORY_ITEM_COLUMNS}
                FROM entries e INDEXED BY idx_entries_story_id JOIN feeds f ON f.id = e.feed_id
                WHERE e.story_id IS NULL ORDER BY e.id LIMIT ?""",
            [limit],
        )
        return [_story_item(row) for row in rows]

    def _plain_rows(self, sql: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
        """Rows as plain tuples: a few thousand story items are read at once, and a `sqlite3.Row`
        looked up by column name costs more than the rest of making the item."""
        cursor = self.conn.cursor()
        cursor.row_factory = None
        rows: list[tuple[Any, ...]] = cursor.execute(sql, tuple(params)).fetchall()
        return rows

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
        parsed = parse_query(query)
        try:
            filters = self._search_filters(tag, since, feed)
            if filters is None:
                return []
            where = " AND ".join(["entries_fts MATCH ?", *filters[0]])
            params = [parsed.match, *filters[1]]
            if parsed.words is None:
                candidates = self._ranked_by_fts5(where, params)
            else:
                candidates = self._ranked_here(parsed, where, params)
            # Best rank first, the later published first among equals (two stable sorts).
            candidates.sort(key=lambda ranked: ranked[2], reverse=True)
            best = sorted(candidates, key=lambda ranked: ranked[1])[: int(limit)]
            rank_of = {entry_id: rank for entry_id, rank, _published in best}
            rows = self._hit_rows(parsed.match, list(rank_of), unfiltered=not filters[0]) if rank_of else []
        except sqlite3.OperationalError as error:
            raise _search_error(query, error) from None
        hits = [SearchHit(_entry(row), rank_of[int(row["id"])], row["snip"] or "") for row in rows]
        order = {entry_id: position for position, entry_id in enumerate(rank_of)}
        return sorted(hits, key=lambda hit: order[hit.entry.id])

    def _hit_rows(self, match: str, ids: Sequence[int], unfiltered: bool) -> list[sqlite3.Row]:
        """The entries `ids` (matches of `match`) with their snippets.

        FTS5 looks each id of an IN list up on its own, in every segment of its index (0.3 ms
        an id on a large archive); walking the range between the lowest and the highest id is
        cheaper when few matches lie in it: always without filters (the candidates are the
        newest matches), else when the range is short.
        """
        marks = ",".join("?" * len(ids))
        if unfiltered or max(ids) - min(ids) <= SELECTIVE_FILTER:
            where, params = (
                f"entries_fts.rowid BETWEEN ? AND ? AND +entries_fts.rowid IN ({marks})",
                [min(ids), max(ids)],
            )
        else:
            where, params = f"entries_fts.rowid IN ({marks})", []
        return self.conn.execute(
            f"""SELECT {_ENTRY_COLUMNS},
                       snippet(entries_fts, -1, '{MATCH_START}', '{MATCH_END}', '…', {SNIPPET_TOKENS}) AS snip
                FROM entries_fts JOIN entries e ON e.id = entries_fts.rowid JOIN feeds f ON f.id = e.feed_id
                LEFT JOIN stories st ON st.id = e.story_id
                WHERE entries_fts MATCH ? AND {where}""",
            (match, *params, *ids),
        ).fetchall()

    def _search_filters(
        self, tag: str | None, since: datetime | None, feed: str | None
    ) -> tuple[list[str], list[Any]] | None:
        """SQL conditions (and their parameters) for search's filters; None when a filter keeps no entry.

        FTS5 walks a word's matches newest first, and a filter is checked on each match, reading
        its entry: a rare feed or tag, or a recent `since`, with a common word read most of the
        archive (0.4 to 1 s on 1,000,000 entries). A filter that keeps at most SELECTIVE_FILTER
        entries is instead checked against the list of their ids, made once, and the oldest of
        them tells FTS5 where to stop walking.
        """
        where: list[str] = []
        params: list[Any] = []
        oldest = 0
        for value, kept_ids, per_row in (
            (iso(since) if since else None, _SINCE_IDS, "e.published >= ?"),
            (feed, _FEED_IDS, "f.name = ?"),
            (tag, _TAGGED_IDS, f"EXISTS ({_MATCH_HAS_TAG})"),
        ):
            if value is None:
                continue
            kept, first = self.conn.execute(
                f"SELECT count(*), min(id) FROM ({kept_ids} LIMIT {SELECTIVE_FILTER + 1})", (value,)
            ).fetchone()
            if kept == 0:
                return None
            if kept <= SELECTIVE_FILTER:
                oldest = max(oldest, int(first))
                # `+`: SQLite makes the list once; FTS5 would look each id up on its own.
                where.append(f"+entries_fts.rowid IN ({kept_ids})")
            else:
                where.append(per_row)
            params.append(value)
        if oldest:
            where.append("entries_fts.rowid >= ?")
            params.append(oldest)
        return where, params

    def _candidates(self, columns: str, where: str, params: Sequence[Any]) -> list[sqlite3.Row]:
        """id, published and `columns` of the newest SEARCH_CANDIDATES matches (FTS5 walks newest first)."""
        return self.conn.execute(
            f"""SELECT entries_fts.rowid AS id, e.published, {columns}
                FROM entries_fts JOIN entries e ON e.id = entries_fts.rowid JOIN feeds f ON f.id = e.feed_id
                WHERE {where} ORDER BY entries_fts.rowid DESC LIMIT {SEARCH_CANDIDATES}""",
            params,
        ).fetchall()

    def _ranked_by_fts5(self, where: str, params: Sequence[Any]) -> list[tuple[int, float, str]]:
        """(id, bm25 rank, published) of the candidates, ranked by FTS5's bm25(): for queries in FTS5 syntax.

        bm25() first counts the entries holding each of the query's phrases, a walk of each
        phrase's whole list, so a common word costs tens of milliseconds on a large archive.
        """
        rows = self._candidates(f"bm25(entries_fts, {_BM25_WEIGHTS}) AS rank", where, params)
        return [(int(row["id"]), float(row["rank"]), row["published"]) for row in rows]

    def _ranked_here(self, query: SearchQuery, where: str, params: Sequence[Any]) -> list[tuple[int, float, str]]:
        """(id, bm25 rank, published) of the candidates for plain words, ranked as FTS5's bm25() ranks.

        From FTS5's highlight() marks, docsize and averages records, and a count of the entries
        holding each word that stops at DOCUMENT_COUNT_LIMIT (see store_fts): the same ranks
        as bm25() unless a word is that common, when its count is an estimate.
        """
        assert query.words is not None
        rows = self._candidates(
            f"""highlight(entries_fts, 0, '{MATCH_START}', '{MATCH_END}') AS title_marked,
                highlight(entries_fts, 1, '{MATCH_START}', '{MATCH_END}') AS summary_marked,
                (SELECT sz FROM entries_fts_docsize WHERE id = entries_fts.rowid) AS docsize""",
            where,
            params,
        )
        if not rows:
            return []
        averages = self.conn.execute("SELECT block FROM entries_fts_data WHERE id = ?", (_FTS_AVERAGES_ID,))
        totals = index_totals(averages.fetchone()["block"])
        newest_id = int(self.conn.execute("SELECT max(id) FROM entries").fetchone()[0])
        counted: dict[str, float] = {}  # a word typed twice is counted once
        for word in query.words:
            if word.match not in counted:
                counted[word.match] = self._document_count(word.match, newest_id, totals)
        idfs = [idf(counted[word.match], totals) for word in query.words]
        phrases = [word.tokens for word in query.words]
        return [
            (
                int(row["id"]),
                bm25(
                    phrase_frequencies((row["title_marked"], row["summary_marked"]), phrases),
                    idfs,
                    entry_size(row["docsize"]),
                    totals.average_size,
                ),
                row["published"],
            )
            for row in rows
        ]

    def _document_count(self, phrase: str, newest_id: int, totals: IndexTotals) -> float:
        """Entries holding `phrase` (a MATCH expression): walks at most DOCUMENT_COUNT_LIMIT + 1 of them."""
        row = self.conn.execute(
            f"""SELECT count(*) AS found, min(rowid) AS oldest FROM (
                  SELECT rowid FROM entries_fts WHERE entries_fts MATCH ?
                  ORDER BY rowid DESC LIMIT {DOCUMENT_COUNT_LIMIT + 1})""",
            (phrase,),
        ).fetchone()
        return document_count(int(row["found"]), int(row["oldest"] or 0), newest_id, totals, DOCUMENT_COUNT_LIMIT)


def _search_error(query: str, error: sqlite3.OperationalError) -> StoreError | SearchQueryError:
    """What a failed search query means: an old database, a database that cannot be read, or a bad query."""
    if "no such table" in str(error):
        return StoreError(
            f"the database has no search index yet (it was made by an older version): "
            f"run `aggregator update` once to upgrade it ({error})"
        )
    if any(word in str(error) for word in ("locked", "busy", "disk", "readonly", "database")):
        return StoreError(f"search failed: {error}")
    # Everything else SQLite says here is about the query: a syntax error, an open quote, ...
    return SearchQueryError(f"cannot read the search query {query!r}: {error}")


def _required_date(text: str | None) -> datetime:
    moment = from_iso(text)
    assert moment is not None, "a story row without a date"
    return moment


def _story_item(row: tuple[Any, ...]) -> StoryItem:
    """A row of `_STORY_ITEM_COLUMNS` (or of `_STORED_STORY_ITEM_COLUMNS`, with its words) as a story item."""
    entry_id, feed, title, text, published, tag_list = row[:6]
    return StoryItem(
        id=int(entry_id),
        feed=feed,
        title=title,
        text=text or "",
        tags=frozenset(tag_list.split("\x1f")) if tag_list else frozenset(),
        published=_required_date(published),
        profile=row[6] if len(row) > 6 else None,
    )


def _stories_of_rows(rows: list[tuple[Any, ...]]) -> list[Story]:
    """Stories from rows of an entry (`_entry`'s columns) followed by its story's headline, first_seen
    and updated: the stories last started or joined first, each with its entries oldest first."""
    rows.sort(key=lambda row: (row[_PUBLISHED], row[0]))  # one fixed-width form of date, which sorts as time
    members: dict[int, list[Entry]] = {}
    heads: dict[int, tuple[Any, ...]] = {}
    for row in rows:
        story_id = row[_STORY_ID]
        if story_id not in members:
            members[story_id], heads[story_id] = [], row
        members[story_id].append(_entry(row))
    newest_first = sorted(heads, key=lambda story_id: (heads[story_id][_UPDATED], story_id), reverse=True)
    return [
        Story(
            id=story_id,
            uid=heads[story_id][_STORY_UID],
            headline=heads[story_id][_HEADLINE],
            first_seen=_required_date(heads[story_id][_FIRST_SEEN]),
            updated=_required_date(heads[story_id][_UPDATED]),
            entries=tuple(members[story_id]),
        )
        for story_id in newest_first
    ]


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


def _entry(row: Sequence[Any]) -> Entry:
    """An entry from a row of `_ENTRY_COLUMNS` (a tuple, or a `sqlite3.Row` with more columns after them)."""
    (entry_id, uid, feed, feed_title, feed_link, key, title, link, author, summary, content) = row[:11]
    (published_text, updated_text, first_seen_text, story_id, text, story_uid, tag_list) = row[11:18]
    published = from_iso(published_text)
    first_seen = from_iso(first_seen_text)
    assert published is not None and first_seen is not None
    return Entry(
        id=entry_id,
        uid=uid,
        feed=feed,
        feed_title=feed_title,
        feed_link=feed_link,
        key=key,
        title=title,
        link=link,
        author=author,
        summary=summary,
        content=content,
        published=published,
        updated=from_iso(updated_text) or published,
        first_seen=first_seen,
        tags=tuple(sorted(tag_list.split("\x1f"))) if tag_list else (),
        story_id=story_id,
        text=text or "",
        story=story_uid,
    )


def _days_of_hours(hours: Iterable[str], tz: ZoneInfo) -> set[date]:
    days: set[date] = set()
    for hour in hours:
        start = datetime.strptime(hour, "%Y-%m-%dT%H").replace(tzinfo=UTC)
        days.add(start.astimezone(tz).date())
        days.add((start + timedelta(minutes=59, seconds=59)).astimezone(tz).date())
    return days
