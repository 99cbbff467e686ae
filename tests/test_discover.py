"""Adding a feed by its site and removing one, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from aggregator.cli import cli
from aggregator.config import load_settings
from aggregator.discover import FoundFeed, find_feeds, subscribe, unsubscribe, with_scheme
from aggregator.errors import ConfigError, NotAFeedError
from aggregator.store import Store
from aggregator.update import update_feeds
from tests.feedgen import rss
from tests.feedserver import FeedServer

NOW = datetime.now(UTC).replace(microsecond=0)
HTML = "text/html; charset=utf-8"


def atom(title: str, entries: int) -> bytes:
    items = "".join(
        f"<entry><id>urn:test:{index}</id><title>Item {index} of {title}</title>"
        f"<updated>{(NOW - timedelta(hours=index)).isoformat()}</updated></entry>"
        for index in range(entries)
    )
    return (
        f'<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom"><title>{title}</title>'
        f"<id>urn:test:{title}</id><updated>{NOW.isoformat()}</updated>{items}</feed>"
    ).encode()


def page(*links: str) -> str:
    tags = "".join(
        f'<link rel="alternate" type="{kind}" href="{href}" title="a feed">' for kind, href in map(_pair, links)
    )
    return f"<!doctype html><html><head><title>Ledger Weekly</title>{tags}</head><body><p>Hello</p></body></html>"


def _pair(link: str) -> tuple[str, str]:
    kind, _, href = link.partition(" ")
    return kind, href


@pytest.fixture
def site(feed_server: FeedServer) -> FeedServer:
    """A site whose front page advertises an RSS feed, an Atom feed and a comments feed that is gone."""
    feed_server.add(
        "/",
        page(
            "application/rss+xml /news/rss.xml",
            f"application/atom+xml {feed_server.url('/atom')}",
            "application/rss+xml comments.xml",
        ),
        content_type=HTML,
    )
    feed_server.add(
        "/news/rss.xml", rss("Ledger Weekly News", [("n1", "Ledgers grow", NOW), ("n2", "Nodes sync", NOW)])
    )
    feed_server.add("/atom", atom("Ledger Weekly Notes", 3), content_type="application/atom+xml")
    return feed_server


def config(tmp_path: Path, feeds: str = "") -> Path:
    path = tmp_path / "feeds.yaml"
    path.write_text(f"# my feeds\ntitle: T\nfeeds:{feeds or ' []'}\n", encoding="utf-8")
    return path


def test_a_page_offers_the_feeds_it_advertises(site: FeedServer) -> None:
    found = find_feeds(site.url("/"))
    assert found.is_page
    assert [(feed.url, feed.title, feed.entries) for feed in found.feeds] == [
        (site.url("/news/rss.xml"), "Ledger Weekly News", 2),
        (site.url("/atom"), "Ledger Weekly Notes", 3),
    ]
    assert [(rejected.url, rejected.reason) for rejected in found.rejected] == [
        (site.url("/comments.xml"), "HTTP 404 Not Found")
    ]


def test_a_page_that_advertises_nothing_is_tried_at_the_usual_addresses(feed_server: FeedServer) -> None:
    feed_server.add("/blog/", page(), content_type=HTML)
    feed_server.add("/blog/feed/", rss("Blog", [("b1", "First post", NOW)]))
    feed_server.redirect("/blog/feed", "/blog/feed/", status=301)
    feed_server.redirect("/feed", "/blog/feed/", status=302)  # the same feed again, by a temporary redirect
    feed_server.add("/index.xml", atom("Site notes", 1), content_type="application/atom+xml")
    found = find_feeds(feed_server.url("/blog/"))
    assert found.tried_common_paths
    # The permanent redirect's target is what to subscribe to; the same feed found twice counts once.
    assert [feed.url for feed in found.feeds] == [feed_server.url("/blog/feed/"), feed_server.url("/index.xml")]
    asked = {request.path for request in feed_server.requests}
    assert asked >= {"/blog/feed", "/blog/rss", "/blog/index.xml", "/feed", "/rss", "/atom.xml"}


def test_a_feed_is_its_own_answer(site: FeedServer) -> None:
    found = find_feeds(site.url("/atom"))
    assert not found.is_page
    assert [(feed.url, feed.title) for feed in found.feeds] == [(site.url("/atom"), "Ledger Weekly Notes")]


def test_an_address_typed_without_a_scheme_means_https() -> None:
    assert with_scheme(" decrypt.example/feed ") == "https://decrypt.example/feed"
    assert with_scheme("http://decrypt.example/") == "http://decrypt.example/"


def test_subscribe_appends_the_chosen_feed_and_keeps_the_file(site: FeedServer, tmp_path: Path) -> None:
    path = config(tmp_path)
    offered: list[Sequence[FoundFeed]] = []

    def second(feeds: Sequence[FoundFeed]) -> FoundFeed:
        offered.append(feeds)
        return feeds[1]

    done = subscribe(path, site.url("/"), second, tags=("Blockchain/Bitcoin",))
    assert len(offered[0]) == 2
    assert (done.feed.name, done.feed.url) == ("ledger-weekly-notes", site.url("/atom"))
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# my feeds\ntitle: T\nfeeds:\n  - name: ledger-weekly-notes\n")
    feeds = load_settings(path).feeds
    assert [(feed.name, feed.url, feed.tags) for feed in feeds] == [
        ("ledger-weekly-notes", site.url("/atom"), ("Blockchain/Bitcoin",))
    ]


def test_a_feed_already_there_or_a_taken_name_is_refused_before_fetching(site: FeedServer, tmp_path: Path) -> None:
    http_url = site.url("/news/rss.xml")
    path = config(tmp_path, f"\n  - name: news\n    url: {http_url}#latest\n")
    before = path.read_text(encoding="utf-8")
    with pytest.raises(ConfigError, match=r"already has .* \(as 'news'\)"):
        subscribe(path, http_url, _refuse)
    with pytest.raises(ConfigError, match="already has a feed named 'news'"):
        subscribe(path, site.url("/atom"), _refuse, name="NEWS")
    with pytest.raises(ConfigError, match="is not a valid feed name"):
        subscribe(path, site.url("/atom"), _refuse, name="my feed")
    assert site.requests == []
    # Found through the page, the known feed is marked; choosing it is refused too.
    marks: list[str | None] = []

    def known(feeds: Sequence[FoundFeed]) -> FoundFeed:
        marks.extend(feed.subscribed_as for feed in feeds)
        return feeds[0]

    with pytest.raises(ConfigError, match="already has"):
        subscribe(path, site.url("/"), known)
    assert marks == ["news", None]
    assert path.read_text(encoding="utf-8") == before


def _refuse(feeds: Sequence[FoundFeed]) -> FoundFeed:
    raise AssertionError("no choice expected")


def test_a_page_without_any_feed_is_a_clear_error(feed_server: FeedServer, tmp_path: Path) -> None:
    feed_server.add("/", page(), content_type=HTML)
    path = config(tmp_path)
    with pytest.raises(NotAFeedError, match=r"advertises no feed .* none of the usual addresses \(/feed, /rss"):
        subscribe(path, feed_server.url("/"), _refuse)
    feed_server.add("/", page("application/rss+xml /gone.xml"), content_type=HTML)
    with pytest.raises(NotAFeedError, match=r"none of them can be read \(.*/gone.xml: HTTP 404 Not Found\)"):
        subscribe(path, feed_server.url("/"), _refuse)


def test_the_command_lists_the_choices_when_it_cannot_ask(site: FeedServer, tmp_path: Path) -> None:
    path = config(tmp_path)
    runner = CliRunner()
    asked = runner.invoke(cli, ["--config", str(path), "add", site.url("/")])
    assert asked.exit_code == 2
    assert "offers 2 feeds; choose one with --pick N" in asked.output
    assert f"1) Ledger Weekly News: {site.url('/news/rss.xml')} (2 entries)" in asked.output
    assert load_settings(path).feeds == ()
    picked = runner.invoke(cli, ["--config", str(path), "add", site.url("/"), "--pick", "2", "--name", "notes"])
    assert picked.exit_code == 0, picked.output
    assert f"added notes: {site.url('/atom')} ('Ledger Weekly Notes', 3 entries)" in picked.output
    assert [feed.name for feed in load_settings(path).feeds] == ["notes"]


SHARED = "Regulators fine a large exchange over weak custody controls"


def test_purge_deletes_a_feeds_entries_and_mends_its_stories(feed_server: FeedServer, tmp_path: Path) -> None:
    feed_server.add(
        "/a", rss("Alpha", [("a1", SHARED, NOW), ("a2", "Alpha alone reports a quiet validator upgrade", NOW)])
    )
    feed_server.add("/b", rss("Beta", [("b1", SHARED, NOW - timedelta(minutes=5))]))
    path = config(
        tmp_path,
        f"\n  - name: alpha\n    url: {feed_server.url('/a')}\n  - name: beta\n    url: {feed_server.url('/b')}\n",
    )
    settings = load_settings(path)
    with Store(settings.database) as store:
        update_feeds(settings, store)
        assert store.site_links() == {"alpha": "https://alpha.example/", "beta": "https://beta.example/"}
        shared = [story for story in store.recent_stories(10) if len(story.entries) == 2]
        assert len(shared) == 1
    kept = unsubscribe(path, "beta")
    assert (kept.removed is not None, kept.entries_deleted) == (True, None)
    with Store(settings.database) as store:
        assert store.count_entries() == 3  # removed from feeds.yaml, its entries stay
    done = unsubscribe(path, "alpha", purge=True)
    assert done.entries_deleted == 2
    with Store(settings.database) as store:
        assert [entry.feed for entry in store.iter_entries()] == ["beta"]
        story = next(story for story in store.recent_stories(10) if story.id == shared[0].id)
        assert ([entry.feed for entry in story.entries], story.headline) == (["beta"], SHARED)
        assert store.search("validator") == []
        assert "alpha" not in {status.name for status in store.feed_statuses(active_only=False)}
    # A feed removed earlier can still be purged; a name known nowhere is an error.
    assert unsubscribe(path, "beta", purge=True).entries_deleted == 1
    with pytest.raises(ConfigError, match="has no feed named 'gamma', and the database has no entries of it"):
        unsubscribe(path, "gamma", purge=True)
    assert load_settings(path).feeds == ()
