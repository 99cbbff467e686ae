"""The output feeds in every format: Atom 1.0, RSS 2.0 and JSON Feed 1.1, merged and per tag.

Each format carries the same items with the same ids; every file passes the shared
validator (../shared/tools/validate_feed, skipped where absent) and is read back by
feedparser, an independent reader of all three. No maintained validator of Atom or RSS is
published on PyPI (the W3C feed validator is not packaged), and the one JSON Feed validator
there (jsonfeedvalidator 0.0.3, 2017) knows only JSON Feed 1.0 and rejects 1.1's `authors`,
so the JSON Feed 1.1 rules are also checked here, field by field, from the specification.
"""

from __future__ import annotations

import email.utils
import json
import re
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import feedparser
import lxml.etree
import lxml.html
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator.models import Entry, SiteConfig
from aggregator.render import entries_document, feed_files, render_all, stories_document
from tests.conftest import VALIDATOR
from tests.feedserver import FeedServer
from tests.hostile.test_content import (
    TEXT_TITLE_SHOWN,
    WILD_TEXT,
    Site,
    audit,
    entries_strategy,
    hostile_atom,
    hostile_rss,
)
from tests.test_render import (
    IMG_TITLE,
    NOW,
    SCRIPT_TITLE,
    ListSource,
    make_entry,
    sample_entries,
    site_for,
    story_entries,
)

ATOM = "{http://www.w3.org/2005/Atom}"
RSS_NAMESPACES = {
    "atom": "http://www.w3.org/2005/Atom",
    "content": "http://purl.org/rss/1.0/modules/content/",
    "dc": "http://purl.org/dc/elements/1.1/",
}
RSS_CHANNEL = {
    "title",
    "link",
    "description",
    "lastBuildDate",
    "generator",
    "docs",
    "item",
    f"{{{RSS_NAMESPACES['atom']}}}link",
}
RSS_ITEM = {"title", "link", "guid", "pubDate", "description", "category"} | {
    f"{{{RSS_NAMESPACES['content']}}}encoded",
    f"{{{RSS_NAMESPACES['dc']}}}creator",
}
JSON_FEED_1_1 = "https://jsonfeed.org/version/1.1"
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)\Z")
LATER = datetime(2024, 6, 5, 12, 0, tzinfo=UTC)
FORMATS = ("atom", "rss", "json")


def validate(*paths: Path) -> None:
    """The shared validator, strict: warnings fail too."""
    if not VALIDATOR.is_file():
        pytest.skip("../shared/tools/validate_feed is not present beside the checkout")
    result = subprocess.run(
        [sys.executable, str(VALIDATOR), "--strict", *map(str, paths)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def json_feed_problems(data: Any) -> list[str]:
    """What breaks JSON Feed 1.1 (https://jsonfeed.org/version/1.1) in a parsed document."""
    problems = []

    def check_url(where: str, value: Any) -> None:
        if not isinstance(value, str) or urlsplit(value).scheme not in ("http", "https"):
            problems.append(f"{where} is not an absolute http(s) URL: {value!r}")

    def check_authors(where: str, authors: Any) -> None:
        if not isinstance(authors, list) or not authors:
            problems.append(f"{where}.authors is not a non-empty array")
            return
        for author in authors:
            if not isinstance(author, dict) or not isinstance(author.get("name"), str) or not author["name"]:
                problems.append(f"{where}.authors has an author without a name: {author!r}")
            if isinstance(author, dict) and "url" in author:
                check_url(f"{where}.authors[].url", author["url"])

    if data.get("version") != JSON_FEED_1_1:
        problems.append(f"version is {data.get('version')!r}")
    if not isinstance(data.get("title"), str) or not data["title"]:
        problems.append("no title")
    for key in ("home_page_url", "feed_url"):
        check_url(key, data.get(key))
    check_authors("feed", data.get("authors"))
    known = {"version", "title", "home_page_url", "feed_url", "description", "authors", "items"}
    problems += [f"unknown top-level key {key!r}" for key in set(data) - known if not key.startswith("_")]
    items = data.get("items")
    if not isinstance(items, list):
        return [*problems, "items is not an array"]
    ids = [item.get("id") for item in items]
    if len(set(ids)) != len(ids):
        problems.append("item ids are not unique")
    item_keys = {"id", "url", "title", "content_html", "content_text", "summary", "date_published"}
    item_keys |= {"date_modified", "authors", "tags"}
    for item in items:
        where = f"item {item.get('id')!r}"
        if not isinstance(item.get("id"), str) or not item["id"]:
            problems.append(f"{where}: id is not a non-empty string")
        if "content_html" not in item and "content_text" not in item:
            problems.append(f"{where}: neither content_html nor content_text")
        for key in ("title", "content_html", "content_text", "summary"):
            if key in item and not isinstance(item[key], str):
                problems.append(f"{where}: {key} is not a string")
        if "url" in item:
            check_url(f"{where}.url", item["url"])
        for key in ("date_published", "date_modified"):
            if key in item and not RFC3339.match(item[key]):
                problems.append(f"{where}: {key} is not RFC 3339: {item[key]!r}")
        if "tags" in item and not all(isinstance(tag, str) for tag in item["tags"]):
            problems.append(f"{where}: tags are not strings")
        if "authors" in item:
            check_authors(where, item["authors"])
        problems += [f"{where}: unknown key {key!r}" for key in set(item) - item_keys if not key.startswith("_")]
    return problems


def rss_structure_problems(root: lxml.etree._Element) -> list[str]:
    """Markup smuggled into an RSS document as elements, and non-web links."""
    problems = []
    channel = root.find("channel")
    if root.tag != "rss" or root.get("version") != "2.0" or channel is None:
        return ["not an RSS 2.0 document"]
    problems += [f"channel element {child.tag!r}" for child in channel if child.tag not in RSS_CHANNEL]
    for item in channel.iter("item"):
        problems += [f"item element {child.tag!r}" for child in item if child.tag not in RSS_ITEM]
        for child in item:
            if len(child):
                problems.append(f"{child.tag} has child elements")
        guid = item.find("guid")
        if guid is None or guid.get("isPermaLink") != "false" or not (guid.text or "").strip():
            problems.append("an item without a stable guid (isPermaLink=false)")
        link = item.findtext("link")
        if link is not None and urlsplit(link).scheme not in ("http", "https"):
            problems.append(f"item link {link!r}")
    return problems


def parsed(suffix: str, document: bytes) -> Any:
    """A document read back: by feedparser (Atom, RSS), or as JSON (feedparser 6 reads no JSON Feed)."""
    if suffix == "json":
        return json.loads(document)
    result = feedparser.parse(document)
    assert not result.bozo, (suffix, result.get("bozo_exception"))
    return result


def item_ids(suffix: str, document: Any) -> list[str]:
    if suffix == "json":
        return [item["id"] for item in document["items"]]
    return [entry.id for entry in document.entries]


def outputs(out: Path, stem: str) -> dict[str, bytes]:
    return {suffix: (out / f"{stem}.{suffix}").read_bytes() for suffix in FORMATS}


def alternate_link(entry: Any) -> str | None:
    """The item's own link (feedparser offers an Atom entry's id as its link when it has none)."""
    return next((link.href for link in entry.get("links", []) if link.get("rel") == "alternate"), None)


def item_keys(documents: dict[str, bytes]) -> dict[str, list[tuple[str, str, str | None]]]:
    """(id, title, link) of every item, in order, read back from each format."""
    keys = {}
    for suffix, document in documents.items():
        read = parsed(suffix, document)
        if suffix == "json":
            keys[suffix] = [(item["id"], item["title"], item.get("url")) for item in read["items"]]
        else:
            keys[suffix] = [(entry.id, entry.title, alternate_link(entry)) for entry in read.entries]
    return keys


@pytest.fixture
def site_out(tmp_path: Path) -> tuple[SiteConfig, Path]:
    site = site_for(tmp_path)
    render_all(ListSource(sample_entries() + story_entries()), site, LATER)
    return site, Path(site.output_dir)


# ------------------------------------------------------------------ valid, and the same items


def test_every_output_feed_is_valid_in_all_three_formats(site_out: tuple[SiteConfig, Path]) -> None:
    _site, out = site_out
    feeds = sorted(path for suffix in FORMATS for path in out.rglob(f"*.{suffix}") if not path.name.startswith("."))
    assert len(feeds) == 3 * (1 + 10)  # the merged feed and 10 tags
    validate(*feeds)
    for path in feeds:
        if path.suffix == ".json":
            data = json.loads(path.read_bytes())
            assert not json_feed_problems(data), (path, json_feed_problems(data))
        elif path.suffix == ".rss":
            root = lxml.etree.fromstring(path.read_bytes())
            assert not rss_structure_problems(root), (path, rss_structure_problems(root))


@pytest.mark.parametrize("stem", ["feed", "tags/blockchain", "tags/security"])
def test_each_format_carries_the_same_items_with_the_same_ids(site_out: tuple[SiteConfig, Path], stem: str) -> None:
    _site, out = site_out
    keys = item_keys(outputs(out, stem))
    assert keys["atom"], "an empty feed proves nothing"
    assert keys["rss"] == keys["atom"]
    assert keys["json"] == keys["atom"]


def test_feeds_name_themselves_and_their_page(site_out: tuple[SiteConfig, Path]) -> None:
    _site, out = site_out
    rss = lxml.etree.fromstring((out / "tags" / "blockchain.rss").read_bytes())
    self_link = rss.find("channel/{http://www.w3.org/2005/Atom}link")
    assert self_link is not None and self_link.get("href") == "https://news.example/tags/blockchain.rss"
    assert rss.findtext("channel/link") == "https://news.example/tags/blockchain.html"
    data = json.loads((out / "tags" / "blockchain.json").read_bytes())
    assert data["feed_url"] == "https://news.example/tags/blockchain.json"
    assert data["home_page_url"] == "https://news.example/tags/blockchain.html"
    atom = lxml.etree.fromstring((out / "feed.atom").read_bytes())
    assert atom.findtext(f"{ATOM}id") == "https://news.example/feed.atom"


def test_a_story_item_keeps_its_id_and_shows_an_outlet_joining(tmp_path: Path) -> None:
    site = site_for(tmp_path)
    out = Path(site.output_dir)
    entries = story_entries()
    render_all(ListSource(entries), site, LATER)
    before = {suffix: parsed(suffix, document) for suffix, document in outputs(out, "feed").items()}
    joining = make_entry(
        13,
        datetime(2024, 6, 5, 9, 0, tzinfo=UTC),
        "A fourth outlet on the halted withdrawals",
        feed="delta",
        feed_title="Delta Wire",
        story_id=10,
    )
    render_all(ListSource([*entries, joining]), site, LATER)
    after = {suffix: parsed(suffix, document) for suffix, document in outputs(out, "feed").items()}

    story_id = make_entry(10, NOW).uid
    for suffix in FORMATS:
        ids = item_ids(suffix, after[suffix])
        assert ids.count(story_id) == 1, suffix
        assert len(ids) == len(item_ids(suffix, before[suffix])), "an outlet joining adds no item"
        assert ids[0] == story_id, "the story that changed comes first"
    atom_updated = [entry.updated for entry in after["atom"].entries if entry.id == story_id]
    assert [e.updated for e in before["atom"].entries if e.id == story_id] == ["2024-06-05T02:00:00Z"]
    assert atom_updated == ["2024-06-05T09:00:00Z"]
    data = json.loads((out / "feed.json").read_bytes())
    item = next(item for item in data["items"] if item["id"] == story_id)
    assert item["date_modified"] == "2024-06-05T09:00:00Z"
    assert item["date_published"] == "2024-06-04T22:00:00Z"
    assert "Delta Wire" in item["content_html"]
    rss = lxml.etree.fromstring((out / "feed.rss").read_bytes())
    rss_item = next(element for element in rss.iter("item") if element.findtext("guid") == story_id)
    assert rss_item.find("guid").get("isPermaLink") == "false"  # type: ignore[union-attr]
    assert "Delta Wire" in (rss_item.findtext("description") or "")
    assert rss_item.findtext("pubDate") == "Tue, 04 Jun 2024 22:00:00 GMT", "the story's date stays its first report's"
    validate(*(out / f"feed.{suffix}" for suffix in FORMATS))


def test_output_per_entry_gives_one_item_per_entry_in_every_format(tmp_path: Path) -> None:
    site = site_for(tmp_path, feed_per="entry")
    render_all(ListSource(story_entries()), site, LATER)
    out = Path(site.output_dir)
    keys = item_keys(outputs(out, "feed"))
    assert len(keys["atom"]) == len(story_entries())
    assert keys["rss"] == keys["atom"] and keys["json"] == keys["atom"]
    assert {key[0] for key in keys["atom"]} == {entry.uid for entry in story_entries()}
    validate(*(out / f"feed.{suffix}" for suffix in FORMATS))


def test_an_entry_without_title_link_or_text_still_makes_a_valid_item(tmp_path: Path) -> None:
    bare = make_entry(1, NOW, title=" \x01 ", link=None, summary="", content="", uid="\x02")
    document = entries_document([bare], site=site_for(tmp_path), title="Bare", self_path="feed.atom", now=NOW)
    files = feed_files(document)
    for suffix, data in files.items():
        path = tmp_path / f"bare.{suffix}"
        path.write_bytes(data)
        validate(path)
    item = json.loads(files["json"])["items"][0]
    assert item["title"] == "(untitled)"
    assert item["id"].startswith("https://news.example/#feed-cryptonews/")
    assert "content_text" in item


# ------------------------------------------------------------------ hostile text


def test_hostile_titles_are_text_in_rss_and_json(site_out: tuple[SiteConfig, Path]) -> None:
    _site, out = site_out
    for suffix in ("rss", "json"):
        raw = (out / f"feed.{suffix}").read_text(encoding="utf-8")
        assert "<script" not in raw and "<img" not in raw, suffix
    rss = lxml.etree.fromstring((out / "feed.rss").read_bytes())
    titles = [element.text for element in rss.iter("title")]
    assert SCRIPT_TITLE in titles and IMG_TITLE in titles
    assert not [element for element in rss.iter() if lxml.etree.QName(element).localname in ("script", "img")]
    data = json.loads((out / "feed.json").read_bytes())
    assert {SCRIPT_TITLE, IMG_TITLE} <= {item["title"] for item in data["items"]}


def test_stored_html_reaches_rss_and_json_as_it_was_sanitized(tmp_path: Path) -> None:
    sanitized = '<p>Funds <a href="https://x.example/">moved</a> &lt;b&gt; fast</p>'
    entry = make_entry(1, NOW, summary=sanitized, content="<p>All of it</p>")
    document = entries_document([entry], site=site_for(tmp_path), title="T", self_path="feed.atom", now=NOW)
    files = feed_files(document)
    rss_item = lxml.etree.fromstring(files["rss"]).find("channel/item")
    assert rss_item is not None
    assert rss_item.findtext("description") == sanitized
    assert rss_item.findtext("{http://purl.org/rss/1.0/modules/content/}encoded") == "<p>All of it</p>"
    item = json.loads(files["json"])["items"][0]
    assert item["content_html"] == "<p>All of it</p>"
    assert item["summary"] == "Funds moved <b> fast"
    assert not audit(item["content_html"]) and not audit(rss_item.findtext("description") or "")


@pytest.mark.timeout(60)
def test_hostile_feeds_through_the_cli_reach_no_rss_or_json_feed(tmp_path: Path, feed_server: FeedServer) -> None:
    site = Site(tmp_path, feed_server)
    site.serve("herald", hostile_rss())
    site.serve("assault", hostile_atom(), content_type="application/atom+xml")
    site.update()
    site.render()
    rss_files = sorted(site.output_dir.rglob("*.rss"))
    json_files = sorted(path for path in site.output_dir.rglob("*.json") if not path.name.startswith("."))
    assert rss_files and len(json_files) == len(rss_files)
    validate(*rss_files, *json_files)
    for path in rss_files:
        root = lxml.etree.fromstring(path.read_bytes())
        assert not rss_structure_problems(root), (path, rss_structure_problems(root))
        for element in root.iter("description", "{http://purl.org/rss/1.0/modules/content/}encoded"):
            assert not audit(element.text or ""), (path, audit(element.text or ""))
    for path in json_files:
        raw = path.read_text(encoding="utf-8")
        assert "<" not in raw and "&" not in raw, path
        data = json.loads(raw)
        assert not json_feed_problems(data), (path, json_feed_problems(data))
        for item in data["items"]:
            assert not audit(item.get("content_html", "")), (path, audit(item.get("content_html", "")))
            assert "alert(" not in item["title"], item["title"]
    titles = [
        element.text for element in lxml.etree.fromstring((site.output_dir / "feed.rss").read_bytes()).iter("title")
    ]
    assert TEXT_TITLE_SHOWN in titles
    assert TEXT_TITLE_SHOWN in {
        item["title"] for item in json.loads((site.output_dir / "feed.json").read_bytes())["items"]
    }


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(entries=entries_strategy(), title=WILD_TEXT, per_story=st.booleans())
def test_rss_and_json_are_always_well_formed_whatever_the_entries(
    entries: list[Entry], title: str, per_story: bool
) -> None:
    site = SiteConfig(title=title, site_url="https://news.example/", output_dir="/nonexistent", timezone="UTC")
    if per_story:
        stories = ListSource(entries).recent_stories(10)
        document = stories_document(stories, site=site, title=title, self_path="feed.atom", now=NOW)
        count = len(stories)
    else:
        document = entries_document(entries, site=site, title=title, self_path="feed.atom", now=NOW)
        count = len(entries)
    files = feed_files(document)
    rss = lxml.etree.fromstring(files["rss"])  # raises on anything ill-formed
    assert len(rss.findall("channel/item")) == count
    assert not rss_structure_problems(rss)
    latest = NOW.replace(microsecond=0)
    for stamp in rss.iter("pubDate", "lastBuildDate"):
        assert rfc822_date(stamp.text or "") <= latest
    raw = files["json"].decode("utf-8")  # strict: no lone surrogate
    assert "<" not in raw and "&" not in raw
    data = json.loads(raw)
    assert len(data["items"]) == count
    problems = [problem for problem in json_feed_problems(data) if "not unique" not in problem]
    assert not problems, problems  # random entries may repeat an id; the store never does
    for item in data["items"]:
        assert datetime.fromisoformat(item["date_modified"]) <= latest
        assert datetime.fromisoformat(item["date_published"]) <= datetime.fromisoformat(item["date_modified"])


def rfc822_date(text: str) -> datetime:
    parsed = email.utils.parsedate_to_datetime(text)
    assert parsed.tzinfo is not None, text
    return parsed


# ------------------------------------------------------------------ pages link their feeds


def test_every_page_links_its_feeds_in_all_three_formats(site_out: tuple[SiteConfig, Path]) -> None:
    _site, out = site_out
    pages = sorted(out.rglob("*.html"))
    assert len(pages) > 10
    expected_types = ["application/atom+xml", "application/rss+xml", "application/feed+json"]
    for path in pages:
        links = lxml.html.fromstring(path.read_bytes()).xpath("//head/link[@rel='alternate']")
        assert [link.get("type") for link in links] == expected_types, path
        targets = [(path.parent / link.get("href")).resolve() for link in links]
        assert all(target.is_file() for target in targets), (path, targets)
        relative = path.relative_to(out).as_posix()
        if relative.startswith("tags/"):
            stem = relative.removesuffix(".html")
            assert [target.relative_to(out).as_posix() for target in targets] == [
                f"{stem}.{suffix}" for suffix in FORMATS
            ], "a tag page offers its own tag's feeds"
        else:
            assert [target.name for target in targets] == [f"feed.{suffix}" for suffix in FORMATS], path


# ------------------------------------------------------------------ incremental renders


def test_an_incremental_render_rewrites_and_restores_the_new_formats(tmp_path: Path) -> None:
    site = site_for(tmp_path)
    out = Path(site.output_dir)
    entries = sample_entries()
    render_all(ListSource(entries), site, LATER)
    (out / "feed.json").unlink()
    (out / "tags" / "markets.rss").unlink()
    (out / "tags" / "etf.json").unlink()
    again = render_all(ListSource(entries), site, LATER)
    assert (again.days, again.tags) == (0, 2), "only the tags missing a file are written again"
    for path in ("feed.json", "tags/markets.rss", "tags/etf.json"):
        assert (out / path).is_file(), path

    before = outputs(out, "tags/blockchain/solana")
    newer = make_entry(
        7, LATER - timedelta(hours=1), "Solana validators upgrade", tags=("Blockchain", "Blockchain/Solana")
    )
    third = render_all(ListSource([*entries, newer]), site, LATER)
    assert third.tags == 2
    after = outputs(out, "tags/blockchain/solana")
    for suffix in FORMATS:
        assert after[suffix] != before[suffix], suffix
        assert b"Solana validators upgrade" in after[suffix], suffix
    untouched = replace(site)  # the same settings: a fourth render writes nothing
    assert render_all(ListSource([*entries, newer]), untouched, LATER).files_written == 0
