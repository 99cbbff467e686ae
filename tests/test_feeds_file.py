"""Editing feeds.yaml in place: every byte outside the change stays, and a bad change never lands."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from aggregator.config import load_settings
from aggregator.errors import ConfigError
from aggregator.feeds_file import add_feeds, feed_url_key, name_for, remove_feed
from aggregator.models import FeedConfig

REPO_FEEDS = Path(__file__).resolve().parent.parent / "feeds.yaml"
NEW = FeedConfig(name="ledger", url="https://ledger.example/feed?a=1&b=2", title="Ledger: the # record", tags=("DeFi",))
NEW_BLOCK = (
    "  - name: ledger\n"
    "    url: https://ledger.example/feed?a=1&b=2\n"
    "    title: 'Ledger: the # record'\n"
    "    tags: [DeFi]\n"
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "feeds.yaml"
    path.write_bytes(text.encode("utf-8"))
    return path


def test_appending_to_the_repositorys_feeds_yaml_changes_nothing_else(tmp_path: Path) -> None:
    before = REPO_FEEDS.read_text(encoding="utf-8")
    path = write(tmp_path, before)
    add_feeds(path, [NEW])
    after = path.read_text(encoding="utf-8")
    at = after.index(NEW_BLOCK)
    # Byte for byte: the old text is exactly what is left once the block is taken out again,
    # and the block went after the last feed, not after the comment that leads to `tags:`.
    assert after[:at] + after[at + len(NEW_BLOCK) :] == before
    assert after[at + len(NEW_BLOCK) :].startswith('\n# Extend the built-in taxonomy (see README: "Tags").\ntags:')
    feeds = load_settings(path).feeds
    assert (feeds[-1].name, feeds[-1].url, feeds[-1].title, feeds[-1].tags) == (NEW.name, NEW.url, NEW.title, NEW.tags)
    remove_feed(path, "ledger")
    assert path.read_text(encoding="utf-8") == before


LAYOUTS = {
    "dashes at the key's column": "title: T\nfeeds:\n- name: a\n  url: https://a.example/\n# about tags\ntags: {}\n",
    "feeds last, no final newline": "feeds:\n  - name: a\n    url: https://a.example/\n    # tags: [B]\n  # - name: x",
    "dash alone on its line": "feeds:\n  -\n    name: a\n    url: https://a.example/feed\n\n\ntitle: T\n",
    "wide item indentation": "feeds:\n    -   name: a\n        url: https://a.example/feed\ntitle: T  # trailing\n",
    "Windows line endings": "title: T\r\nfeeds:\r\n  - name: a\r\n    url: https://a.example/feed\r\n# end\r\n",
}


@pytest.mark.parametrize("text", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_appending_keeps_any_block_layout_and_removing_restores_it(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    add_feeds(path, [NEW, FeedConfig(name="no", url="https://on.example/", title="yes", tags=("off", "A/B"))])
    feeds = load_settings(path).feeds
    assert [(feed.name, feed.title, feed.tags) for feed in feeds] == [
        ("a", None, ()),
        ("ledger", NEW.title, ("DeFi",)),
        ("no", "yes", ("off", "A/B")),  # written quoted: YAML 1.1 would read them as booleans
    ]
    remove_feed(path, "no")
    remove_feed(path, "ledger")
    assert path.read_bytes() == text.encode("utf-8")


EMPTY_LISTS = {
    "no feeds key": ("title: T  # mine\n", "title: T  # mine\nfeeds:\n" + NEW_BLOCK),
    "no final newline": ("title: T", "title: T\nfeeds:\n" + NEW_BLOCK),
    "empty file": ("", "feeds:\n" + NEW_BLOCK),
    "an empty flow list": ("feeds: []  # none yet\ntitle: T\n", "feeds:  # none yet\n" + NEW_BLOCK + "title: T\n"),
    "null": ("title: T\nfeeds:\n\n# later\ntags: {}\n", "title: T\nfeeds:\n" + NEW_BLOCK + "\n# later\ntags: {}\n"),
}


@pytest.mark.parametrize(("before", "after"), EMPTY_LISTS.values(), ids=EMPTY_LISTS.keys())
def test_a_file_without_feeds_gets_a_list(tmp_path: Path, before: str, after: str) -> None:
    path = write(tmp_path, before)
    add_feeds(path, [NEW])
    assert path.read_text(encoding="utf-8") == after
    assert [feed.name for feed in load_settings(path).feeds] == ["ledger"]


def test_removing_keeps_the_comments_around_the_feed(tmp_path: Path) -> None:
    text = (
        "feeds:\n"
        "  # exchanges\n"
        "  - name: a\n"
        "    url: https://a.example/feed\n"
        "    # a is slow on Mondays\n"
        "\n"
        "  # newsletters\n"
        "  - name: b\n"
        "    url: https://b.example/feed\n"
    )
    path = write(tmp_path, text)
    remove_feed(path, "a")
    assert path.read_text(encoding="utf-8") == (
        "feeds:\n  # exchanges\n\n  # newsletters\n  - name: b\n    url: https://b.example/feed\n"
    )
    remove_feed(path, "b")
    assert path.read_text(encoding="utf-8") == "feeds: []\n  # exchanges\n\n  # newsletters\n"
    assert load_settings(path).feeds == ()


def test_an_unknown_name_is_an_error_that_suggests_the_near_ones(tmp_path: Path) -> None:
    path = write(tmp_path, REPO_FEEDS.read_text(encoding="utf-8"))
    with pytest.raises(ConfigError, match=r"has no feed named 'coindsk' \(did you mean 'coindesk'"):
        remove_feed(path, "coindsk")


REFUSED = {
    "an invalid tag": (
        "feeds:\n  - name: a\n    url: https://a.example/\n",
        FeedConfig("b", "https://b.example/", tags=("a//b",)),
        "is not a tag path",
    ),
    "a duplicate name": (
        "feeds:\n  - name: a\n    url: https://a.example/\n",
        FeedConfig("a", "https://b.example/"),
        "duplicate feed name",
    ),
    "a flow list": (
        "feeds: [{name: a, url: 'https://a.example/'}]\n",
        FeedConfig("b", "https://b.example/"),
        "not written as a block list",
    ),
}


@pytest.mark.parametrize(("text", "feed", "problem"), REFUSED.values(), ids=REFUSED.keys())
def test_a_change_the_config_would_refuse_leaves_the_file_untouched(
    tmp_path: Path, text: str, feed: FeedConfig, problem: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=problem) as caught:
        add_feeds(path, [feed])
    assert str(caught.value).startswith(str(path))
    assert path.read_text(encoding="utf-8") == text
    assert [entry.name for entry in tmp_path.iterdir()] == ["feeds.yaml"]  # no temporary file left behind


def test_the_file_keeps_its_permissions_and_a_symlink_stays_a_symlink(tmp_path: Path) -> None:
    real = write(tmp_path, "feeds:\n  - name: a\n    url: https://a.example/\n")
    os.chmod(real, 0o600)
    link = tmp_path / "link.yaml"
    link.symlink_to(real)
    add_feeds(link, [NEW])
    assert link.is_symlink()
    assert stat.S_IMODE(real.stat().st_mode) == 0o600
    assert [feed.name for feed in load_settings(link).feeds] == ["a", "ledger"]


def test_names_are_slugs_of_titles_unique_in_any_case() -> None:
    assert name_for("Bitcoin.com News", "https://x.example/", []) == "bitcoin-com-news"
    assert name_for("Форклог", "https://x.example/", []) == "forklog"
    assert name_for("CoinDesk", "https://x.example/", ["coindesk", "CoinDesk-2"]) == "coindesk-3"
    assert name_for(None, "https://www.the-block.example/rss", []) == "the-block"
    assert name_for("!!!", "https://127.0.0.1:8080/feed", []) == "127-0-0"
    assert len(name_for("A title far too long to be a comfortable name for a feed", "https://x.example/", [])) <= 40


def test_feed_urls_compare_canonically() -> None:
    same = [
        "https://News.Example.com/feed",
        "http://news.example.com/feed",
        "https://news.example.com:443/feed#latest",
        "https://news.example.com/feed?utm_source=opml",
    ]
    assert len({feed_url_key(url) for url in same}) == 1
    assert feed_url_key("https://news.example.com/feed/") != feed_url_key("https://news.example.com/feed")
    assert feed_url_key("https://news.example.com/feed?page=2") != feed_url_key("https://news.example.com/feed")
