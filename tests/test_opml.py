"""OPML: the lists other readers export, hostile files, and what our export gives other readers.

Each `tests/data/opml/<case>.opml` (written in the format Miniflux, FreshRSS or newsboat exports,
or with the quirks of hand-made lists) sits beside `<case>.json`, the feeds an import adds and
the outlines it skips; adding a case is adding two files.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from aggregator.cli import cli
from aggregator.config import load_settings
from aggregator.errors import ConfigError
from aggregator.models import FeedConfig
from aggregator.opml import MAX_OPML_BYTES, import_opml, opml_document, plan_import, read_outlines

DATA = Path(__file__).resolve().parent / "data" / "opml"
CASES = sorted(DATA.glob("*.opml"))


def record(feed: FeedConfig) -> dict[str, Any]:
    return {"name": feed.name, "url": feed.url, "title": feed.title, "tags": list(feed.tags)}


@pytest.mark.parametrize("path", CASES, ids=[path.stem for path in CASES])
def test_lists_exported_by_other_readers(path: Path) -> None:
    expected = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    plan = plan_import(read_outlines(path.read_bytes(), path.name), [])
    assert [record(feed) for feed in plan.added] == expected["added"]
    assert [{"url": skipped.url, "reason": skipped.reason} for skipped in plan.skipped] == expected["skipped"]


def test_feeds_already_configured_are_skipped_and_new_names_stay_unique() -> None:
    existing = [
        FeedConfig(name="pools", url="http://PoolWatch.example/rss.xml#top"),
        FeedConfig(name="Candle-Wick", url="https://elsewhere.example/feed"),
    ]
    plan = plan_import(read_outlines((DATA / "miniflux.opml").read_bytes(), "miniflux.opml"), existing)
    assert [skipped.reason for skipped in plan.skipped] == ["already in feeds.yaml as 'pools'"]
    assert [feed.name for feed in plan.added] == ["block-ledger-daily", "yield-notes", "candle-wick-2"]


ENTITIES = '<!DOCTYPE opml [<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
HOSTILE = {
    "external entity (XXE)": (
        b'<?xml version="1.0"?><!DOCTYPE opml [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b'<opml version="2.0"><body><outline text="&x;" xmlUrl="https://a.example/"/></body></opml>',
        "declares XML entities",
    ),
    "entity expansion (billion laughs)": (
        f'<?xml version="1.0"?>{ENTITIES}<opml><body><outline text="&b;" xmlUrl="https://a.example/"/></body></opml>'.encode(),
        "declares XML entities",
    ),
    "entity expansion in UTF-16": (
        f'<?xml version="1.0" encoding="UTF-16"?>{ENTITIES}<opml><body><outline text="&b;" xmlUrl="https://a.example/"/>'
        "</body></opml>".encode("utf-16"),
        "declares XML entities",
    ),
    "a feed instead of a list": (
        b'<?xml version="1.0"?><rss version="2.0"><channel><title>News</title></channel></rss>',
        "is not an OPML file (its root element is <rss>, not <opml>) (it is a feed, not a list of feeds",
    ),
    "an HTML page": (b"<!DOCTYPE html><html><body><p>Coins & tokens</p></body></html>", "is not well-formed XML"),
    "cut short": (
        b'<opml version="2.0"><body>\n<outline text="a" xmlUrl="https://a.example/"',
        "line 2, column 46: is not well-formed XML",
    ),
    "empty": (b"", "is not well-formed XML: Document is empty"),
    "no body": (b'<opml version="2.0"><head><title>x</title></head></opml>', "without a <body>"),
    "only folders": (b'<opml version="2.0"><body><outline text="Empty folder"/></body></opml>', "lists no feeds"),
    "too large": (b"<opml>" + b" " * MAX_OPML_BYTES + b"</opml>", "is larger than 5 MiB"),
}


@pytest.mark.parametrize(("data", "phrase"), HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_or_wrong_files_are_refused_with_the_reason(data: bytes, phrase: str) -> None:
    with pytest.raises(ConfigError) as caught:
        read_outlines(data, "list.opml")
    assert str(caught.value).startswith("list.opml: ")
    assert phrase in str(caught.value)


FEEDS_YAML = """\
title: Round trip
feeds:
  - name: bitcoin.com
    url: https://news.bitcoin.example/feed/
    title: Bitcoin.com News
    tags: [Blockchain/Bitcoin, Markets]
  - name: the_block
    url: https://theblock.example/rss.xml
    interval: 5m
  - name: defiant
    url: https://thedefiant.example/api/feed
    title: "The Defiant: DeFi & <more> \\"news\\""
    tags: [DeFi]
  - name: pravo
    url: https://pravo.example/rss/?lang=ru&format=rss
    title: Крипто Право
    tags: [Regulation/SEC, DeFi]
  - name: "2024"
    url: http://yes.example/feed
    title: "no"
"""


def test_export_then_import_into_an_empty_file_gives_the_same_feeds(tmp_path: Path) -> None:
    source = tmp_path / "feeds.yaml"
    source.write_text(FEEDS_YAML, encoding="utf-8")
    original = load_settings(source).feeds
    document = opml_document(original, "Round trip")
    target = tmp_path / "new" / "feeds.yaml"
    target.parent.mkdir()
    target.write_text("title: Empty\n", encoding="utf-8")
    plan = import_opml(target, "export.opml", document)
    assert not plan.skipped
    imported = load_settings(target).feeds
    assert sorted(map(record, imported), key=str) == sorted(map(record, original), key=str)


def miniflux_reads(document: bytes) -> dict[str, tuple[str, str | None]]:
    """Miniflux's import: a feed is an outline with xmlUrl; its category is its parent outline's title or text."""
    root = ElementTree.fromstring(document)
    parents = {child: parent for parent in root.iter() for child in parent}
    feeds = {}
    for outline in root.iter("outline"):
        if outline.get("xmlUrl"):
            parent = parents[outline]
            category = (parent.get("title") or parent.get("text")) if parent.tag == "outline" else None
            feeds[outline.get("xmlUrl", "")] = (outline.get("title") or outline.get("text") or "", category)
    return feeds


def freshrss_reads(document: bytes) -> dict[str, tuple[str, str | None]]:
    """FreshRSS's import: body outlines with text are categories (deeper ones flattened into them); name = text."""
    body = ElementTree.fromstring(document).find("body")
    assert body is not None
    feeds = {}
    for top in body:
        if top.get("xmlUrl"):
            feeds[top.get("xmlUrl", "")] = (top.get("text", ""), None)
        elif top.get("text"):
            for outline in top.iter("outline"):
                if outline.get("xmlUrl"):
                    feeds[outline.get("xmlUrl", "")] = (outline.get("text", ""), top.get("text"))
    return feeds


def newsboat_reads(document: bytes) -> dict[str, tuple[str, str | None]]:
    """newsboat's import: outlines with xmlUrl are feeds; the texts of the outlines around them, joined by /, a tag."""
    feeds = {}

    def walk(element: ElementTree.Element, tag: str) -> None:
        for outline in element.findall("outline"):
            if outline.get("xmlUrl"):
                assert outline.get("type") == "rss"  # its url-reader mode keeps only type="rss" outlines
                feeds[outline.get("xmlUrl", "")] = (outline.get("title", ""), tag or None)
            else:
                label = outline.get("text") or outline.get("title") or ""
                walk(outline, f"{tag}/{label}" if tag else label)

    body = ElementTree.fromstring(document).find("body")
    assert body is not None
    walk(body, "")
    return feeds


@pytest.mark.parametrize("reader", [miniflux_reads, freshrss_reads, newsboat_reads])
def test_other_readers_get_every_feed_once_with_its_first_tag_as_category(reader: Any, tmp_path: Path) -> None:
    source = tmp_path / "feeds.yaml"
    source.write_text(FEEDS_YAML, encoding="utf-8")
    feeds = load_settings(source).feeds
    document = opml_document(feeds, "Round trip", {"bitcoin.com": "https://news.bitcoin.example/"})
    root = ElementTree.fromstring(document)
    assert (root.tag, root.get("version"), root.findtext("head/title")) == ("opml", "2.0", "Round trip")
    assert len([outline for outline in root.iter("outline") if outline.get("xmlUrl")]) == len(feeds)
    expected = {feed.url: (feed.title or feed.name, feed.tags[0] if feed.tags else None) for feed in feeds}
    assert reader(document) == expected
    first = next(outline for outline in root.iter("outline") if outline.get("xmlUrl") == feeds[0].url)
    assert first.get("htmlUrl") == "https://news.bitcoin.example/"
    assert first.get("category") == "/Blockchain/Bitcoin,/Markets"


def test_export_is_deterministic_and_drops_what_xml_cannot_carry() -> None:
    feeds = [FeedConfig(name="bell", url="https://bell.example/feed", title="Ding\x07 dong", tags=("A, B",))]
    document = opml_document(feeds, "Title\x1b")
    assert document == opml_document(feeds, "Title\x1b")
    assert document.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<opml')
    outline = ElementTree.fromstring(document).find("body/outline/outline")
    assert outline is not None
    assert (outline.get("text"), outline.get("category")) == ("Ding dong", None)  # a comma would split the tag


def test_dry_run_changes_nothing_and_import_keeps_the_file_around_it(tmp_path: Path) -> None:
    config = tmp_path / "feeds.yaml"
    before = (
        "# my list\ntitle: Mine  # the title\nfeeds:\n  - name: pools\n    url: https://poolwatch.example/rss.xml\n"
    )
    config.write_text(before, encoding="utf-8")
    runner = CliRunner()
    arguments = ["--config", str(config), "opml", "import", str(DATA / "miniflux.opml")]
    dry = runner.invoke(cli, [*arguments, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would add 3 feeds" in dry.output
    assert "https://poolwatch.example/rss.xml: already in feeds.yaml as 'pools'" in dry.output
    assert config.read_text(encoding="utf-8") == before
    done = runner.invoke(cli, arguments)
    assert done.exit_code == 0, done.output
    after = config.read_text(encoding="utf-8")
    assert after.startswith(before)
    assert "  - name: candle-wick\n    url: https://candlewick.example/atom.xml\n    title: Candle & Wick\n" in after
    assert [feed.name for feed in load_settings(config).feeds] == [
        "pools",
        "block-ledger-daily",
        "yield-notes",
        "candle-wick",
    ]
