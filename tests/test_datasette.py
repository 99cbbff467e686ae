"""The database as Datasette shows it: the readable views answer with the right rows, and the
shipped metadata (descriptions, sorts, facets, labels) names only tables and columns that exist."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from aggregator.models import EntryData, FeedConfig, PollOutcome, TaggedEntry
from aggregator.store import Store
from aggregator.store_schema import VIEWS

datasette_app = pytest.importorskip("datasette.app", reason="datasette is not installed (pip install -e '.[test]')")

METADATA = Path(__file__).resolve().parent.parent / "datasette-metadata.yml"
NOW = datetime.now(UTC).replace(microsecond=0)
SEC_HEADLINE = "SEC sues a crypto exchange over unregistered securities"


def stored(key: str, title: str, published: datetime, summary: str = "") -> EntryData:
    return EntryData(
        key=key,
        title=title,
        link=f"https://news.example/{key}",
        author="Desk, News",
        summary=summary,
        text=summary,
        published=published,
        content_hash=key,
    )


def polled(feed: str, *entries: TaggedEntry, **fields: Any) -> PollOutcome:
    values: dict[str, Any] = {
        "feed": feed,
        "status": "ok",
        "fetched_at": NOW,
        "next_fetch": NOW + timedelta(minutes=15),
        "entries": entries,
    }
    values.update(fields)
    return PollOutcome(**values)


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three feeds (one failing), three entries, one story reported by two outlets."""
    path = tmp_path_factory.mktemp("datasette") / "aggregator.db"
    with Store(path) as store:
        store.sync_feeds(
            [
                FeedConfig(name="alpha", url="https://alpha.example/feed", title="Alpha News"),
                FeedConfig(name="beta", url="https://beta.example/rss"),
                FeedConfig(name="gamma", url="https://gamma.example/atom"),
            ]
        )
        sec, regulation = frozenset({"Regulation", "Regulation/SEC"}), frozenset({"Regulation"})
        store.save_poll(
            polled(
                "alpha",
                TaggedEntry(stored("a1", SEC_HEADLINE, NOW - timedelta(hours=3), "The regulator, in court."), sec),
                TaggedEntry(stored("a2", "A month-old mining report", NOW - timedelta(days=30))),
            )
        )
        store.save_poll(
            polled(
                "beta",
                TaggedEntry(stored("b1", "Exchange sued by the SEC", NOW - timedelta(hours=1)), regulation),
                feed_title="Beta Daily",
            )
        )
        store.save_poll(polled("gamma", status="error", error="HTTP 500 Internal Server Error", error_code="http"))
        ids = dict(store.conn.execute("SELECT key, id FROM entries").fetchall())
        store.save_story_assignments([(ids["a1"], ids["a1"]), (ids["b1"], ids["a1"]), (ids["a2"], ids["a2"])], NOW)
    return path


def get_json(database: Path, path: str, metadata: dict[str, Any] | None = None) -> Any:
    """Ask a real Datasette instance, through its own test client, for one JSON page."""

    async def fetch() -> Any:
        datasette = datasette_app.Datasette([str(database)], metadata=metadata)
        await datasette.invoke_startup()
        response = await datasette.client.get(path)
        assert response.status_code == 200, response.text
        return response.json() if path.split("?")[0].endswith(".json") else response.text

    return asyncio.run(fetch())


def test_entries_with_tags_joins_feed_tags_and_story(database: Path) -> None:
    rows = get_json(database, "/aggregator/entries_with_tags.json?_shape=array&_sort_desc=published")
    assert [row["title"] for row in rows] == ["Exchange sued by the SEC", SEC_HEADLINE, "A month-old mining report"]
    beta, alpha, old = rows
    assert (beta["feed"], beta["feed_title"], beta["tags"]) == ("beta", "Beta Daily", "Regulation")
    assert (alpha["feed"], alpha["feed_title"], alpha["tags"]) == ("alpha", "Alpha News", "Regulation, Regulation/SEC")
    assert alpha["story_id"] == beta["story_id"] != old["story_id"]
    assert (alpha["story_headline"], alpha["story_outlets"]) == (SEC_HEADLINE, 2)
    assert alpha["summary"] == "The regulator, in court."
    assert alpha["author"] == "Desk, News" and alpha["link"] == "https://news.example/a1"
    assert alpha["published"] == (NOW - timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert old["tags"] is None and old["story_outlets"] == 1


def test_stories_with_outlets_lists_each_story_once(database: Path) -> None:
    rows = get_json(database, "/aggregator/stories_with_outlets.json?_shape=array&_sort_desc=first_seen")
    assert [row["headline"] for row in rows] == [SEC_HEADLINE, "A month-old mining report"]
    sec = rows[0]
    assert sec["outlets"] == "alpha, beta"  # first reporter first
    assert (sec["outlet_count"], sec["size"]) == (2, 2)
    assert sec["tags"] == "Regulation, Regulation/SEC"
    assert sec["link"] == "https://news.example/a1"
    assert sec["first_seen"] == (NOW - timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert sec["last_seen"] == (NOW - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert sec["uid"].startswith("urn:uuid:")


def test_feed_health_shows_status_errors_and_volume(database: Path) -> None:
    rows = {row["name"]: row for row in get_json(database, "/aggregator/feed_health.json?_shape=array")}
    assert set(rows) == {"alpha", "beta", "gamma"}
    alpha, gamma = rows["alpha"], rows["gamma"]
    assert (alpha["title"], alpha["status"], alpha["entries"]) == ("Alpha News", "ok", 2)
    assert alpha["entries_last_7_days"] == 1, "the month-old entry is not counted"
    assert alpha["latest_entry"] == (NOW - timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert alpha["errors_in_a_row"] == 0 and alpha["in_config"] == 1
    assert (gamma["status"], gamma["last_error"], gamma["errors_in_a_row"]) == (
        "error",
        "HTTP 500 Internal Server Error",
        1,
    )
    assert gamma["entries"] == 0 and gamma["latest_entry"] is None and gamma["last_ok"] is None


def test_the_shipped_metadata_sorts_facets_and_labels(database: Path) -> None:
    metadata = yaml.safe_load(METADATA.read_text(encoding="utf-8"))
    page = get_json(database, "/aggregator/entries_with_tags.json", metadata)
    titles = [row[page["columns"].index("title")] for row in page["rows"]]
    assert titles[0] == "Exchange sued by the SEC"  # sort_desc: published
    feed_facet = {item["value"]: item["count"] for item in page["facet_results"]["feed"]["results"]}
    assert feed_facet == {"alpha": 2, "beta": 1}
    labelled = get_json(database, "/aggregator/entries.json?_shape=array&_labels=on&_sort=id", metadata)
    assert labelled[0]["feed_id"]["label"] == "alpha"
    assert labelled[0]["story_id"]["label"] == SEC_HEADLINE
    found = get_json(database, "/aggregator/entries_with_tags.json?_shape=array&_search=court", metadata)
    assert [row["title"] for row in found] == [SEC_HEADLINE], "search finds words of the summary too"
    html = get_json(database, "/aggregator/feed_health", metadata)
    assert "fetch status, last error and how much it publishes" in html


def test_the_metadata_names_only_tables_and_columns_that_exist(database: Path) -> None:
    metadata = yaml.safe_load(METADATA.read_text(encoding="utf-8"))
    tables = metadata["databases"][database.stem]["tables"]
    conn = sqlite3.connect(database)
    try:
        for table, settings in tables.items():
            columns = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
            assert columns, f"{table} is not a table or view"
            named = set(settings.get("columns", {})) | set(settings.get("facets", []))
            named |= {settings[key] for key in ("sort", "sort_desc", "label_column", "fts_pk") if key in settings}
            assert named <= columns, f"{table}: {sorted(named - columns)} do not exist"
    finally:
        conn.close()
    assert set(VIEWS) <= set(tables), "every view is described"
