"""The SQLite store on a real file: schema, per-feed transactions, updates in place, queries."""

from __future__ import annotations

import sqlite3
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from aggregator.errors import StoreError
from aggregator.models import EntryData, FeedConfig, PollOutcome, TaggedEntry, Validators
from aggregator.store import PAGE_SIZE, SCHEMA_VERSION, Store, entry_uid

NOW = datetime(2024, 3, 5, 12, 0, tzinfo=UTC)


def entry(key: str, title: str = "A title", published: datetime | None = NOW, digest: str = "h1") -> EntryData:
    return EntryData(key=key, title=title, link=f"https://news.example/{key}", published=published, content_hash=digest)


def poll(feed: str, *entries: EntryData, tags: frozenset[str] = frozenset(), **fields: object) -> PollOutcome:
    values: dict[str, object] = {
        "feed": feed,
        "status": "ok",
        "fetched_at": NOW,
        "next_fetch": NOW + timedelta(minutes=15),
        "entries": tuple(TaggedEntry(item, tags) for item in entries),
    }
    values.update(fields)
    return PollOutcome(**values)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    opened = Store(tmp_path / "data" / "aggregator.db")
    opened.sync_feeds(
        [
            FeedConfig(name="alpha", url="https://alpha.example/feed"),
            FeedConfig(name="beta", url="https://beta.example/rss"),
        ]
    )
    return opened


def test_schema_version_and_wal(store: Store) -> None:
    assert store.schema_version == SCHEMA_VERSION
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_new_unchanged_and_changed_entries(store: Store) -> None:
    assert store.save_poll(poll("alpha", entry("a"), entry("b"))).new == 2
    again = store.save_poll(poll("alpha", entry("a"), entry("b")))
    assert (again.new, again.updated) == (0, 0)
    changed = store.save_poll(poll("alpha", entry("a", title="A better title", digest="h2"), entry("b")))
    assert (changed.new, changed.updated) == (0, 1)
    titles = sorted(item.title for item in store.recent_entries(10))
    assert titles == ["A better title", "A title"]
    assert store.count_entries() == 2


def test_same_key_in_two_feeds_is_two_entries(store: Store) -> None:
    store.save_poll(poll("alpha", entry("shared")))
    store.save_poll(poll("beta", entry("shared")))
    uids = {item.uid for item in store.recent_entries(10)}
    assert uids == {entry_uid("alpha", "shared"), entry_uid("beta", "shared")}


def test_missing_date_falls_back_to_first_seen_and_stays(store: Store) -> None:
    store.save_poll(poll("alpha", entry("undated", published=None)))
    later = NOW + timedelta(hours=5)
    store.save_poll(poll("alpha", entry("undated", published=None, digest="h2"), fetched_at=later))
    (stored,) = store.recent_entries(1)
    assert stored.published == NOW
    assert stored.first_seen == NOW


def test_tags_are_stored_and_queried(store: Store) -> None:
    store.save_poll(poll("alpha", entry("a"), tags=frozenset({"Blockchain", "Blockchain/Binance"})))
    store.save_poll(poll("beta", entry("b"), tags=frozenset({"Security"})))
    assert store.tags_in_use() == [("Blockchain", 1), ("Blockchain/Binance", 1), ("Security", 1)]
    (tagged,) = store.entries_for_tag("Blockchain/Binance", 10)
    assert tagged.tags == ("Blockchain", "Blockchain/Binance")


def test_a_failing_poll_stores_nothing_of_that_feed(store: Store) -> None:
    store.save_poll(poll("alpha", entry("a"), validators=Validators(etag='"v1"')))
    broken = poll("alpha", entry("b"), EntryData(key="c", title=None, content_hash="x"))  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="could not store feed alpha"):
        store.save_poll(broken)
    assert [item.key for item in store.recent_entries(10)] == ["a"]
    assert store.feed_state("alpha").validators.etag == '"v1"'


def test_errors_keep_validators_and_count_up(store: Store) -> None:
    store.save_poll(poll("alpha", entry("a"), validators=Validators(etag='"v1"', last_modified="Tue, 05 Mar 2024")))
    for _ in range(3):
        store.save_poll(
            poll(
                "alpha",
                status="error",
                error="HTTP 500 Internal Server Error",
                error_code="fetch.http_status",
            )
        )
    state = store.feed_state("alpha")
    assert state.validators == Validators(etag='"v1"', last_modified="Tue, 05 Mar 2024")
    assert state.error_count == 3
    (status,) = [item for item in store.feed_statuses() if item.name == "alpha"]
    assert (status.status, status.last_error, status.entries) == (
        "error",
        "HTTP 500 Internal Server Error",
        1,
    )
    store.save_poll(poll("alpha", status="not_modified"))
    assert store.feed_state("alpha").error_count == 0


def test_permanent_redirect_moves_url_until_config_changes(store: Store) -> None:
    store.save_poll(poll("alpha", new_url="https://alpha.example/new-feed"))
    assert store.feed_state("alpha").url == "https://alpha.example/new-feed"
    store.sync_feeds([FeedConfig(name="alpha", url="https://alpha.example/feed")])
    assert store.feed_state("alpha").url == "https://alpha.example/new-feed"
    store.sync_feeds([FeedConfig(name="alpha", url="https://other.example/feed")])
    assert store.feed_state("alpha").url == "https://other.example/feed"


def test_removed_feed_keeps_entries_but_is_inactive(store: Store) -> None:
    store.save_poll(poll("beta", entry("b")))
    store.sync_feeds([FeedConfig(name="alpha", url="https://alpha.example/feed")])
    assert [status.name for status in store.feed_statuses()] == ["alpha"]
    assert store.count_entries() == 1


def test_entry_days_follow_the_time_zone(store: Store) -> None:
    late = datetime(2024, 3, 5, 23, 30, tzinfo=UTC)
    store.save_poll(poll("alpha", entry("late", published=late), fetched_at=late + timedelta(minutes=5)))
    assert store.entry_days(ZoneInfo("UTC")) == [date(2024, 3, 5)]
    assert store.entry_days(ZoneInfo("Europe/Berlin")) == [date(2024, 3, 6)]


def test_entries_between_and_iter_entries(store: Store) -> None:
    items = [entry(f"e{i}", published=NOW - timedelta(hours=i)) for i in range(2500)]
    store.save_poll(poll("alpha", *items))
    window = store.entries_between(NOW - timedelta(hours=10), NOW + timedelta(hours=1))
    assert [item.key for item in window] == [f"e{i}" for i in range(11)]
    streamed = list(store.iter_entries(batch=300))
    assert len(streamed) == 2500 and len({item.id for item in streamed}) == 2500
    since = list(store.iter_entries(since=NOW - timedelta(hours=99)))
    assert len(since) == 100


def test_readonly_needs_an_existing_database(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist yet"):
        Store(tmp_path / "missing.db", readonly=True)


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    Store(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this program"):
        Store(path)


def test_integrity(store: Store) -> None:
    store.save_poll(poll("alpha", entry("a")))
    assert store.integrity_ok()


def test_a_body_that_keeps_changing_is_not_rewritten_every_poll(store: Store) -> None:
    store.save_poll(poll("alpha", entry("a", digest="v1")))
    soon = NOW + timedelta(minutes=10)
    assert store.save_poll(poll("alpha", entry("a", digest="v2"), fetched_at=soon)).updated == 0
    later = NOW + timedelta(hours=2)
    assert store.save_poll(poll("alpha", entry("a", digest="v2"), fetched_at=later)).updated == 1
    flip_back = later + timedelta(hours=2)
    assert store.save_poll(poll("alpha", entry("a", digest="v1"), fetched_at=flip_back)).updated == 0
    assert (
        store.save_poll(poll("alpha", entry("a", title="Corrected title", digest="v3"), fetched_at=soon)).updated == 1
    )


def test_dates_ahead_of_the_clock_are_clamped_to_first_seen(store: Store) -> None:
    ahead = NOW + timedelta(hours=20)
    item = EntryData(key="early", title="Early", published=ahead, updated=ahead, content_hash="h")
    store.save_poll(poll("alpha", item))
    (stored,) = store.recent_entries(1)
    assert stored.published == NOW and stored.updated == NOW


# --- stories, search and the schema upgrade -----------------------------------------------------


def test_story_assignments_make_stable_stories(store: Store) -> None:
    first = store.save_poll(poll("alpha", entry("a", "Exchange halts withdrawals", NOW - timedelta(hours=2))))
    second = store.save_poll(poll("beta", entry("b", "Withdrawals halted", NOW - timedelta(hours=1))))
    (a_id,), (b_id,) = first.new_ids, second.new_ids
    assert [item.id for item in store.unassigned_items(10)] == [a_id, b_id]
    store.save_story_assignments([(a_id, a_id)], NOW)
    store.save_story_assignments([(b_id, a_id)], NOW + timedelta(minutes=5))
    store.save_story_assignments([(b_id, b_id)], NOW + timedelta(minutes=9))  # already placed: ignored
    assert store.unassigned_items(10) == []
    (story,) = store.stories_between(NOW - timedelta(days=1), NOW + timedelta(days=1))
    assert story.id == a_id and story.headline == "Exchange halts withdrawals"
    assert story.uid == entry_uid("alpha", "a")
    assert [member.feed for member in story.entries] == ["alpha", "beta"]
    assert story.first_seen == NOW - timedelta(hours=2)
    assert story.updated == NOW + timedelta(minutes=5), "a story changes only when an entry joins it"
    assert store.conn.execute("SELECT count(*) FROM stories").fetchone()[0] == 1
    assert {member.story for member in store.recent_entries(10)} == {entry_uid("alpha", "a")}
    window = store.story_items_since(NOW - timedelta(days=1))
    assert [(item.id, story_id) for item, story_id in window] == [(a_id, a_id), (b_id, a_id)]


def test_entries_in_no_story_yet_show_as_stories_of_one(store: Store) -> None:
    store.save_poll(poll("alpha", entry("a", published=NOW - timedelta(hours=1))))
    (story,) = store.stories_between(NOW - timedelta(days=1), NOW + timedelta(days=1))
    assert len(story.entries) == 1 and story.id == story.entries[0].id
    assert [s.id for s in store.recent_stories(5)] == [story.id]


def test_a_poll_hands_over_its_new_entries_as_story_grouping_reads_them_back(store: Store) -> None:
    tags = frozenset({"Security", "Blockchain", "Blockchain/Kraken"})
    undated = EntryData(key="b", title="Undated", content_hash="h", text="A plain summary of the halt")
    first = store.save_poll(
        poll("alpha", entry("a", "Kraken halts withdrawals", NOW - timedelta(hours=2)), undated, tags=tags)
    )
    ahead = entry("c", "Dated ahead of the clock", NOW + timedelta(hours=3))  # stored as published now
    second = store.save_poll(poll("beta", ahead))
    again = store.save_poll(poll("beta", ahead))
    assert again.new_items == () and again.new_ids == ()
    handed_over = [*first.new_items, *second.new_items]
    assert [item.id for item in handed_over] == [*first.new_ids, *second.new_ids]
    assert handed_over == store.unassigned_items(10)
    assert [item.published for item in handed_over] == [NOW - timedelta(hours=2), NOW, NOW]


def test_a_joining_entry_marks_its_story_day_and_tags_as_changed(store: Store) -> None:
    tz = ZoneInfo("UTC")
    yesterday = NOW - timedelta(days=1)
    a_id = store.save_poll(poll("alpha", entry("a", published=yesterday), tags=frozenset({"Security"}))).new_ids[0]
    store.save_story_assignments([(a_id, a_id)], NOW)
    marker = store.change_marker()
    b_id = store.save_poll(poll("beta", entry("b", published=NOW))).new_ids[0]
    store.save_story_assignments([(b_id, a_id)], NOW + timedelta(minutes=1))
    assert yesterday.date() in store.days_changed_since(marker, tz)
    assert "Security" in store.tags_changed_since(marker)


def test_search_ranks_title_matches_first_and_filters(store: Store) -> None:
    store.save_poll(
        poll(
            "alpha",
            EntryData(key="t", title="Kraken wins a licence", text="The exchange got approval.", published=NOW),
            EntryData(key="s", title="Weekly roundup", text="Also this week Kraken hired staff.", published=NOW),
        )
    )
    store.save_poll(poll("beta", EntryData(key="c", title="Crypto.com and Binance's plans", published=NOW)))
    hits = store.search("kraken")
    assert [hit.entry.key for hit in hits] == ["t", "s"]
    assert "\x02Kraken\x03" in hits[1].snippet
    assert [hit.entry.key for hit in store.search("Crypto.com")] == ["c"]
    assert [hit.entry.key for hit in store.search("Binance's")] == ["c"]
    assert [hit.entry.key for hit in store.search("kraken", feed="beta")] == []
    assert [hit.entry.key for hit in store.search("kraken", limit=1)] == ["t"]


@pytest.mark.parametrize("query", ['"unbalanced', "AND OR", "   ", "title:"])
def test_a_malformed_search_is_a_clear_error(store: Store, query: str) -> None:
    from aggregator.errors import SearchQueryError

    with pytest.raises(SearchQueryError, match="search query"):
        store.search(query)


def test_an_edited_entry_is_found_by_its_new_words_only(store: Store) -> None:
    store.save_poll(poll("alpha", EntryData(key="e", title="Old headline", content_hash="1", published=NOW)))
    store.save_poll(poll("alpha", EntryData(key="e", title="Fresh headline", content_hash="2", published=NOW)))
    assert store.search("old") == []
    assert len(store.search("fresh")) == 1


def test_upgrading_a_version_4_database_indexes_old_entries(tmp_path: Path) -> None:
    from aggregator.store_schema import MIGRATIONS
    from aggregator.update import fill_missing_texts

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    import sqlite_utils

    database = sqlite_utils.Database(conn)
    for version in range(1, 5):
        MIGRATIONS[version](database)
    conn.execute("PRAGMA user_version=4")
    conn.execute("INSERT INTO feeds (name, url, config_url, status) VALUES ('old', 'https://o.example/', 'x', 'ok')")
    conn.execute(
        "INSERT INTO entries (feed_id, key, uid, title, summary, published, updated, first_seen) "
        "VALUES (1, 'k', 'urn:x', 'An archived headline', '<p>About <b>mining</b> rigs</p>', "
        "'2020-01-01T00:00:00Z', '2020-01-01T00:00:00Z', '2020-01-01T00:00:00Z')"
    )
    conn.commit()
    conn.close()
    with Store(path) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert len(store.search("archived")) == 1
        assert store.search("rigs") == []
        assert fill_missing_texts(store, limit=1) == 1  # as the daemon does, a slice at a time
        assert fill_missing_texts(store) == 0
        (hit,) = store.search("rigs")
        assert hit.entry.text == "About mining rigs"
        # Once every entry has its text, later runs skip the look-up (a scan of every entry).
        store.conn.execute("UPDATE entries SET summary_text = NULL")
        assert fill_missing_texts(store) == 0


def test_upgrading_a_version_5_database_adds_the_readable_views(tmp_path: Path) -> None:
    import sqlite_utils

    from aggregator.store_schema import MIGRATIONS, VIEWS

    path = tmp_path / "v5.db"
    conn = sqlite3.connect(path)
    for version in range(1, 6):
        MIGRATIONS[version](sqlite_utils.Database(conn))
    conn.execute("PRAGMA user_version=5")
    conn.execute(
        "INSERT INTO feeds (id, name, url, config_url, status) VALUES (1, 'old', 'https://o.example/', 'x', 'ok')"
    )
    conn.execute(
        "INSERT INTO stories (id, headline, first_entry_id, first_seen, feeds, size) "
        "VALUES (7, 'An archived headline', 7, '2020-01-01T00:00:00Z', 1, 1)"
    )
    conn.execute(
        "INSERT INTO entries (id, feed_id, key, uid, title, summary_text, published, updated, first_seen, story_id) "
        "VALUES (7, 1, 'k', 'urn:x', 'An archived headline', 'About rigs', "
        "'2020-01-01T00:00:00Z', '2020-01-01T00:00:00Z', '2020-01-01T00:00:00Z', 7)"
    )
    conn.execute("INSERT INTO tags (id, path) VALUES (1, 'Mining'), (2, 'Markets')")
    conn.execute("INSERT INTO entry_tags (entry_id, tag_id) VALUES (7, 1), (7, 2)")
    conn.commit()
    conn.close()
    with Store(path) as store:
        assert store.schema_version == SCHEMA_VERSION
        row = store.conn.execute("SELECT feed, title, tags, story_headline, summary FROM entries_with_tags").fetchone()
        assert tuple(row) == ("old", "An archived headline", "Markets, Mining", "An archived headline", "About rigs")
        story = store.conn.execute("SELECT headline, outlets, tags FROM stories_with_outlets").fetchone()
        assert tuple(story) == ("An archived headline", "old", "Markets, Mining")
        health = store.conn.execute("SELECT name, status, entries, latest_entry FROM feed_health").fetchone()
        assert tuple(health) == ("old", "ok", 1, "2020-01-01T00:00:00Z")
        schema_before = store.conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
        with store.transaction():
            MIGRATIONS[6](sqlite_utils.Database(store.conn))  # idempotent: running it again changes nothing
        assert store.conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall() == schema_before
        assert {name for (name,) in store.conn.execute("SELECT name FROM sqlite_master WHERE type = 'view'")} == set(
            VIEWS
        )


def test_a_story_headline_is_its_first_reporters_even_when_stored_later(store: Store) -> None:
    late = store.save_poll(poll("alpha", entry("late", "Second report", NOW - timedelta(hours=1)))).new_ids[0]
    early = store.save_poll(poll("beta", entry("early", "First report", NOW - timedelta(hours=3)))).new_ids[0]
    store.save_story_assignments([(late, late), (early, late)], NOW)
    (story,) = store.stories_between(NOW - timedelta(days=1), NOW + timedelta(days=1))
    assert story.id == late, "the id stays the first stored entry's"
    assert story.headline == "First report"
    assert [member.title for member in story.entries] == ["First report", "Second report"]
    assert story.first_seen == NOW - timedelta(hours=3)


def test_fts_syntax_queries_may_hold_words_with_dots_and_hyphens(store: Store) -> None:
    store.save_poll(
        poll(
            "alpha",
            EntryData(key="c", title="Crypto.com adds a layer-2 network", published=NOW),
            EntryData(key="g", title="Gemini lists a token", published=NOW),
        )
    )
    assert {hit.entry.key for hit in store.search("Crypto.com OR Gemini")} == {"c", "g"}
    assert {hit.entry.key for hit in store.search("layer-2 NOT Gemini")} == {"c"}
    assert {hit.entry.key for hit in store.search('"lists a token" OR Crypto.com')} == {"c", "g"}


def test_a_tags_recent_stories_come_from_its_own_entries_however_rare(store: Store) -> None:
    # One old story about a rare tag, then many newer stories with another tag: the rare tag's
    # story is still found, and each tag's list holds only its own stories, newest first.
    old = store.save_poll(
        poll("alpha", entry("old", "A rare event", NOW - timedelta(days=30)), tags=frozenset({"Rare"}))
    )
    store.save_story_assignments([(old.new_ids[0], old.new_ids[0])], NOW - timedelta(days=30))
    common = []
    for number in range(60):
        saved = store.save_poll(
            poll(
                "beta",
                entry(f"c{number}", f"Common {number}", NOW - timedelta(hours=60 - number)),
                tags=frozenset({"Common"}),
            )
        )
        (entry_id,) = saved.new_ids
        store.save_story_assignments([(entry_id, entry_id)], NOW - timedelta(hours=60 - number))
        common.append(entry_id)
    assert [story.id for story in store.recent_stories(5, "Rare")] == [old.new_ids[0]]
    assert [story.id for story in store.recent_stories(5, "Common")] == common[::-1][:5]
    assert len(store.recent_stories(50, "Common")) == 50
    assert store.recent_stories(5, "Unknown") == []


def test_a_new_database_has_large_pages_and_an_older_one_keeps_its_own(tmp_path: Path) -> None:
    with Store(tmp_path / "new.db") as fresh:
        assert fresh.conn.execute("PRAGMA page_size").fetchone()[0] == PAGE_SIZE
    older = tmp_path / "older.db"
    with sqlite3.connect(older) as conn:
        conn.execute("PRAGMA page_size=4096")
        conn.execute("CREATE TABLE early (x)")
    with Store(older) as upgraded:
        upgraded.sync_feeds([FeedConfig(name="alpha", url="https://alpha.example/feed")])
        upgraded.save_poll(poll("alpha", entry("a")))
        assert upgraded.conn.execute("PRAGMA page_size").fetchone()[0] == 4096
        assert upgraded.count_entries() == 1 and upgraded.integrity_ok()
