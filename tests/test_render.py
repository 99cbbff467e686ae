"""render: digest pages and Atom feeds written from an in-memory entry source.

The real store is tested in test_store.py; here a list of `Entry` values stands in
for it, so each test says exactly which entries exist. Output feeds are checked with
the shared validator and read back with feedparser, pages with lxml's HTML parser.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import feedparser
import lxml.etree
import lxml.html
import pytest

from aggregator.digest import as_utc, digest_sections, leaf_tags
from aggregator.models import ChangeMarker, Entry, SiteConfig, Story
from aggregator.render import (
    RenderReport,
    plain_summary,
    render_all,
    section_for,
    tag_feed_path,
    write_atomic,
)
from aggregator.store_queries import DaySpan, OutletHealth
from tests.conftest import VALIDATOR

ATOM_NS = "{http://www.w3.org/2005/Atom}"
NOW = datetime(2024, 6, 5, 12, 0, tzinfo=UTC)
SCRIPT_TITLE = "<script>alert(1)</script> Binance sued"
IMG_TITLE = '<img src=x onerror="alert(2)"> Bitcoin & "ETFs"'


class ListSource:
    """An EntrySource over a list of entries, answering as the store promises to (a naive date is UTC).

    Its outlets are the given ones, else one healthy outlet per feed the entries come from.
    """

    def __init__(self, entries: list[Entry], outlets: list[OutletHealth] | None = None) -> None:
        self.entries = sorted(entries, key=lambda entry: as_utc(entry.published), reverse=True)
        self._outlets = outlets

    def outlets(self) -> list[OutletHealth]:
        if self._outlets is not None:
            return sorted(self._outlets, key=lambda outlet: outlet.name)
        names = sorted({entry.feed for entry in self.entries})
        return [healthy_outlet(name, [entry for entry in self.entries if entry.feed == name]) for name in names]

    def entries_for_feed(self, feed: str, limit: int) -> list[Entry]:
        return [entry for entry in self.entries if entry.feed == feed][:limit]

    def feeds_changed_since(self, marker: ChangeMarker) -> set[str]:
        return {entry.feed for entry in self.entries if entry.id > marker.last_id}

    def entry_counts_by_day(
        self, days: Sequence[DaySpan], feeds: Collection[str] | None = None
    ) -> dict[str, dict[date, int]]:
        counts: dict[str, dict[date, int]] = {}
        for entry in self.entries:
            for span in days:
                if (feeds is None or entry.feed in feeds) and span.start <= as_utc(entry.published) < span.end:
                    per_day = counts.setdefault(entry.feed, {})
                    per_day[span.day] = per_day.get(span.day, 0) + 1
        return counts

    def entries_between(self, start: datetime, end: datetime) -> list[Entry]:
        return [entry for entry in self.entries if start <= as_utc(entry.published) < end]

    def stories(self) -> list[Story]:
        """Entries grouped by story_id (an entry without one is a story of its own), as the store does."""
        groups: dict[int, list[Entry]] = {}
        for entry in sorted(self.entries, key=lambda entry: (as_utc(entry.published), entry.id)):
            groups.setdefault(entry.story_id or entry.id, []).append(entry)
        stories = [
            Story(
                id=story_id,
                uid=members[0].uid,
                headline=members[0].title,
                first_seen=members[0].published,
                updated=max(as_utc(member.first_seen) for member in members),
                entries=tuple(members),
            )
            for story_id, members in groups.items()
        ]
        return sorted(stories, key=lambda story: (story.updated, story.id), reverse=True)

    def stories_between(self, start: datetime, end: datetime) -> list[Story]:
        return [story for story in self.stories() if start <= as_utc(story.first_seen) < end]

    def stories_of_days(self, days: Sequence[DaySpan]) -> list[list[Story]]:
        return [self.stories_between(span.start, span.end) for span in days]

    def recent_stories(self, limit: int, tag: str | None = None) -> list[Story]:
        return [story for story in self.stories() if tag is None or tag in story.tags][:limit]

    def recent_entries(self, limit: int) -> list[Entry]:
        return self.entries[:limit]

    def entries_for_tag(self, tag: str, limit: int) -> list[Entry]:
        return [entry for entry in self.entries if tag in entry.tags][:limit]

    def tags_in_use(self) -> list[tuple[str, int]]:
        counts = Counter(tag for entry in self.entries for tag in entry.tags)
        return sorted(counts.items())

    def entry_days(self, tz: ZoneInfo) -> list[date]:
        return sorted({as_utc(entry.published).astimezone(tz).date() for entry in self.entries})

    def change_marker(self) -> ChangeMarker:
        return ChangeMarker(max((entry.id for entry in self.entries), default=0), "")

    def days_changed_since(self, marker: ChangeMarker, tz: ZoneInfo) -> set[date]:
        return {
            as_utc(story.first_seen).astimezone(tz).date()
            for story in self.stories()
            if any(entry.id > marker.last_id for entry in story.entries)
        }

    def tags_changed_since(self, marker: ChangeMarker) -> set[str]:
        return {
            tag
            for story in self.stories()
            if any(entry.id > marker.last_id for entry in story.entries)
            for tag in story.tags
        }


def healthy_outlet(name: str, entries: Sequence[Entry] = (), **changes: object) -> OutletHealth:
    polled = max((as_utc(entry.first_seen) for entry in entries), default=None)
    outlet = OutletHealth(
        name=name,
        title=entries[0].feed_title if entries else name,
        url=f"https://{name}.example/feed/",
        site_link=entries[0].feed_link if entries else None,
        status="ok",
        last_error=None,
        error_count=0,
        disabled=False,
        active=True,
        last_fetched=polled,
        last_ok=polled,
        next_fetch=None,
        next_reason=None,
    )
    return replace(outlet, **changes)  # type: ignore[arg-type]


def make_entry(number: int, published: datetime, title: str = "", **changes: object) -> Entry:
    entry = Entry(
        id=number,
        uid=f"urn:uuid:00000000-0000-4000-8000-{number:012d}",
        feed="cryptonews",
        feed_title="Cryptonews",
        feed_link="https://cryptonews.example/",
        key=f"key-{number}",
        title=title or f"Headline number {number}",
        link=f"https://cryptonews.example/news/{number}",
        author=None,
        summary=f"<p>Summary of story {number}, with <b>bold</b> words &amp; more.</p>",
        content="",
        published=published,
        updated=published,
        first_seen=published,
        tags=(),
    )
    return replace(entry, **changes)  # type: ignore[arg-type]


def site_for(tmp_path: Path, **changes: object) -> SiteConfig:
    site = SiteConfig(
        title="Crypto News Digest",
        site_url="https://news.example/",
        output_dir=str(tmp_path / "public"),
        timezone="UTC",
    )
    return replace(site, **changes)  # type: ignore[arg-type]


def sample_entries() -> list[Entry]:
    """Three days of news; June 4 has hostile titles and an entry with several top-level tags."""
    return [
        make_entry(1, datetime(2024, 6, 3, 9, 15, tzinfo=UTC), tags=("Markets",)),
        make_entry(
            2,
            datetime(2024, 6, 4, 8, 0, tzinfo=UTC),
            SCRIPT_TITLE,
            tags=("Blockchain", "Blockchain/Binance", "Regulation", "Regulation/SEC"),
            author="Jane Reporter",
            content="<p>Full <em>article</em> text.</p>",
        ),
        make_entry(3, datetime(2024, 6, 4, 10, 30, tzinfo=UTC), IMG_TITLE, tags=("Blockchain", "ETF")),
        make_entry(4, datetime(2024, 6, 4, 11, 0, tzinfo=UTC), tags=("Blockchain", "Blockchain/Bitcoin")),
        make_entry(5, datetime(2024, 6, 4, 12, 0, tzinfo=UTC), link=None, feed_link=None),
        make_entry(6, datetime(2024, 6, 5, 7, 45, tzinfo=UTC), tags=("Blockchain", "Blockchain/Solana")),
    ]


# What a full render of sample_entries() writes: 3 day pages, the index, the merged feed in 3 formats,
# 8 tags' page and 3 feeds each, the archive, the tag index, the outlets index and 1 outlet page.
EVERY_FILE = 3 + 1 + 3 + 8 * 4 + 3 + 1


@pytest.fixture
def rendered(tmp_path: Path) -> tuple[Path, RenderReport]:
    site = site_for(tmp_path)
    report = render_all(ListSource(sample_entries()), site, NOW)
    return Path(site.output_dir), report


def page(path: Path) -> lxml.html.HtmlElement:
    return lxml.html.fromstring(path.read_bytes())


def validate(path: Path) -> None:
    if not VALIDATOR.is_file():
        pytest.skip("../shared/tools/validate_feed is not present beside the checkout")
    result = subprocess.run(
        [sys.executable, str(VALIDATOR), "--strict", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------ files


def test_render_all_writes_every_output(rendered: tuple[Path, RenderReport]) -> None:
    out, report = rendered
    expected = [
        "index.html",
        "feed.atom",
        "digest/2024-06-03.html",
        "digest/2024-06-04.html",
        "digest/2024-06-05.html",
        "tags/blockchain.atom",
        "tags/blockchain/binance.atom",
        "tags/regulation/sec.atom",
        "tags/etf.atom",
        "tags/markets.atom",
        "feed.rss",
        "feed.json",
        "tags/blockchain/binance.rss",
        "tags/blockchain/binance.json",
        "tags/blockchain/binance.html",
        "archive.html",
        "tags.html",
        "outlets.html",
        "outlets/cryptonews.html",
    ]
    for name in expected:
        assert (out / name).is_file(), name
    assert report.days == 3
    assert report.tags == 8
    assert report.outlets == 1
    # day pages, index, the merged feed in 3 formats, each tag's page and 3 feeds, archive, tags, outlets, 1 outlet
    assert report.files_written == EVERY_FILE
    assert not list(out.rglob(".*.tmp")), "temporary files left behind"


def test_rendering_again_rewrites_nothing(tmp_path: Path) -> None:
    site = site_for(tmp_path)
    render_all(ListSource(sample_entries()), site, NOW)
    again = render_all(ListSource(sample_entries()), site, NOW + timedelta(minutes=5))
    assert again.files_written == 0
    # Nothing changed: only the index, the merged feeds, the archive and the tag and outlet indexes are looked at.
    assert again.files_unchanged == 1 + 3 + 3
    everything = render_all(ListSource(sample_entries()), site, NOW + timedelta(minutes=5), full=True)
    assert (everything.files_written, everything.files_unchanged) == (0, EVERY_FILE)


def test_empty_source_gives_a_friendly_index_and_a_valid_feed(tmp_path: Path) -> None:
    site = site_for(tmp_path)
    report = render_all(ListSource([]), site, NOW)
    out = Path(site.output_dir)
    assert report == RenderReport(files_written=1 + 3 + 3, files_unchanged=0, days=0, tags=0)
    assert "No news yet" in (out / "index.html").read_text()
    validate(out / "feed.atom")
    parsed = feedparser.parse(str(out / "feed.atom"))
    assert parsed.bozo == 0
    assert parsed.entries == []


def test_a_user_template_overrides_only_its_own_file(tmp_path: Path) -> None:
    custom = tmp_path / "custom"
    custom.mkdir()
    (custom / "digest.html").write_text("<p>{{ site_title }} has {{ entry_count }} entries</p>\n")
    site = site_for(tmp_path, templates_dir=str(custom))
    render_all(ListSource(sample_entries()), site, NOW)
    out = Path(site.output_dir)
    assert (out / "digest" / "2024-06-04.html").read_text() == "<p>Crypto News Digest has 4 entries</p>\n"
    validate(out / "feed.atom")


def test_write_atomic_creates_parents_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "file.html"
    write_atomic(target, b"one")
    write_atomic(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["file.html"]
    assert target.stat().st_mode & 0o777 == 0o644


# ------------------------------------------------------------------ feeds


def test_merged_feed_is_valid_atom(rendered: tuple[Path, RenderReport]) -> None:
    out, _ = rendered
    validate(out / "feed.atom")
    parsed = feedparser.parse(str(out / "feed.atom"))
    assert parsed.bozo == 0
    assert parsed.feed.title == "Crypto News Digest"
    assert parsed.feed.id == "https://news.example/feed.atom"
    links = {link.rel: link.href for link in parsed.feed.links}
    assert links == {"self": "https://news.example/feed.atom", "alternate": "https://news.example/"}
    assert [entry.id for entry in parsed.entries] == [
        f"urn:uuid:00000000-0000-4000-8000-{n:012d}" for n in (6, 5, 4, 3, 2, 1)
    ]
    assert parsed.feed.updated == "2024-06-05T07:45:00Z"


def test_feed_entry_fields(rendered: tuple[Path, RenderReport]) -> None:
    out, _ = rendered
    parsed = feedparser.parse(str(out / "feed.atom"))
    by_id = {entry.id[-1]: entry for entry in parsed.entries}
    sued = by_id["2"]
    assert sued.title == SCRIPT_TITLE
    assert sued.link == "https://cryptonews.example/news/2"
    assert sued.author == "Jane Reporter"
    assert sued.published == "2024-06-04T08:00:00Z"
    assert {tag.term for tag in sued.tags} == {
        "Blockchain",
        "Blockchain/Binance",
        "Regulation",
        "Regulation/SEC",
    }
    assert sued.content[0].value == "<p>Full <em>article</em> text.</p>"
    assert sued.source.title == "Cryptonews"
    assert by_id["1"].author == "Cryptonews", "the outlet stands in for a missing author"
    assert not [link for link in by_id["5"].get("links", []) if link.rel == "alternate"]
    assert by_id["5"].content[0].value.startswith("<p>Summary of story 5"), "no link: summary as content"


def test_tag_feed_is_valid_and_holds_only_its_tag(rendered: tuple[Path, RenderReport]) -> None:
    out, _ = rendered
    path = out / "tags" / "blockchain.atom"
    validate(path)
    parsed = feedparser.parse(str(path))
    assert parsed.bozo == 0
    assert parsed.feed.title == "Crypto News Digest: Blockchain"
    links = {link.rel: link.href for link in parsed.feed.links}
    assert links["self"] == "https://news.example/tags/blockchain.atom"
    assert [entry.id[-1] for entry in parsed.entries] == ["6", "4", "3", "2"]


def test_feed_dates_never_lie_in_the_future(tmp_path: Path) -> None:
    site = site_for(tmp_path)
    ahead = NOW + timedelta(hours=6)
    entries = [make_entry(1, ahead, updated=ahead + timedelta(hours=1))]
    render_all(ListSource(entries), site, NOW)
    root = lxml.etree.parse(str(Path(site.output_dir) / "feed.atom")).getroot()
    stamps = [el.text for el in root.iter(f"{ATOM_NS}updated", f"{ATOM_NS}published")]
    assert stamps and all(stamp == "2024-06-05T12:00:00Z" for stamp in stamps)


def test_feed_limits_entries_and_survives_control_characters(tmp_path: Path) -> None:
    site = site_for(tmp_path, feed_entries=2)
    entries = [make_entry(n, datetime(2024, 6, 4, n, tzinfo=UTC), f"Bell\x07 and form\x0c feed {n}") for n in (1, 2, 3)]
    render_all(ListSource(entries), site, NOW)
    path = Path(site.output_dir) / "feed.atom"
    validate(path)
    parsed = feedparser.parse(str(path))
    assert parsed.bozo == 0
    assert [entry.title for entry in parsed.entries] == ["Bell and form feed 3", "Bell and form feed 2"]


def test_characters_xml_forbids_never_break_outputs_or_revive_a_url(tmp_path: Path) -> None:
    # HTML stored by an older version may hold "java\x01script:", which the U+0001 keeps inert: a
    # browser reads no scheme in it. Dropping the U+0001 would hand readers a live javascript: URL.
    entry = make_entry(
        1,
        datetime(2024, 6, 5, 9, 0, tzinfo=UTC),
        "Tit\x0ble with a lone \ud800 surrogate",
        summary='<a href="java\x01script:alert(1)">x</a>',
        content="<p>nul\x00here</p>",
        link="https://cryptonews.example/a\x01b c",
        uid="urn:uuid:\x02ab",
        tags=("Blockchain/Bad\ud800Tag",),
    )
    site = site_for(tmp_path)
    render_all(ListSource([entry]), site, NOW)
    out = Path(site.output_dir)
    validate(out / "feed.atom")
    feed = lxml.etree.fromstring((out / "feed.atom").read_bytes())
    atom_entry = feed.find(f"{ATOM_NS}entry")
    assert atom_entry is not None
    summary = atom_entry.findtext(f"{ATOM_NS}summary") or ""
    assert "javascript" not in summary and "java\ufffdscript:" in summary
    assert atom_entry.findtext(f"{ATOM_NS}content") == "<p>nul\ufffdhere</p>"
    assert atom_entry.findtext(f"{ATOM_NS}title") == "Title with a lone  surrogate"
    assert atom_entry.findtext(f"{ATOM_NS}id") == "urn:uuid:ab"
    links = atom_entry.findall(f"{ATOM_NS}link")
    assert [link.get("href") for link in links] == ["https://cryptonews.example/a%01b%20c"]
    page = (out / "index.html").read_bytes().decode("utf-8")  # strict: no lone surrogate got through
    assert "Title with a lone  surrogate" in page
    assert 'href="https://cryptonews.example/a%01b%20c"' in page
    assert not re.search("[\x00-\x08\x0b\x0c\x0e-\x1f]", page)


# ------------------------------------------------------------------ escaping


def test_hostile_titles_are_escaped_in_pages(rendered: tuple[Path, RenderReport]) -> None:
    out, _ = rendered
    path = out / "digest" / "2024-06-04.html"
    raw = path.read_text()
    assert "<script>alert" not in raw
    assert "<img src=x" not in raw
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in raw
    tree = page(path)
    assert not tree.xpath("//script | //img | //*[@onerror]")
    headlines = [el.text_content() for el in tree.xpath("//*[@class='headline']")]
    assert SCRIPT_TITLE in headlines
    assert IMG_TITLE in headlines


def test_hostile_titles_are_text_in_feeds(rendered: tuple[Path, RenderReport]) -> None:
    out, _ = rendered
    raw = (out / "feed.atom").read_text()
    assert "<script>" not in raw
    assert "<img" not in raw
    root = lxml.etree.parse(str(out / "feed.atom")).getroot()
    titles = [el.text for el in root.iter(f"{ATOM_NS}title")]
    assert SCRIPT_TITLE in titles
    assert IMG_TITLE in titles
    assert not [el for el in root.iter() if "script" in str(el.tag) or "img" in str(el.tag)]


def test_digest_shows_stored_html_as_plain_text_and_skips_unsafe_links(tmp_path: Path) -> None:
    site = site_for(tmp_path)
    entry = make_entry(
        1,
        datetime(2024, 6, 5, 9, 0, tzinfo=UTC),
        summary=('<p>Funds <a href="https://x.example/">moved</a> &lt;b&gt;fast&lt;/b&gt;</p><script>bad()</script>'),
        link="javascript:alert(1)",
    )
    render_all(ListSource([entry]), site, NOW)
    tree = page(Path(site.output_dir) / "index.html")
    assert tree.xpath("string(//p[@class='summary'])") == "Funds moved <b>fast</b>"
    assert not tree.xpath("//a[starts-with(@href, 'javascript')]")
    assert not tree.xpath("//main//b | //script")


def test_plain_summary_is_short_and_falls_back_to_content() -> None:
    def entry(summary: str, content: str = "", text: str = "") -> Entry:
        return make_entry(1, NOW, summary=summary, content=content, text=text)

    summary = plain_summary(entry("<p>" + "word " * 200 + "</p>"))
    assert len(summary) <= 280
    assert summary.endswith("…")
    assert plain_summary(entry("", "<div>From <i>content</i></div>")) == "From content"
    assert plain_summary(entry("<p>cut mid <a hre")) == "cut mid"
    assert plain_summary(entry("<p>ignored</p>", text="The stored plain text wins")) == "The stored plain text wins"


# ------------------------------------------------------------------ digest pages


def test_an_entry_appears_once_on_its_day(rendered: tuple[Path, RenderReport]) -> None:
    out, _ = rendered
    tree = page(out / "digest" / "2024-06-04.html")
    links = tree.xpath("//*[@class='headline']/a/@href")
    assert sorted(links) == [f"https://cryptonews.example/news/{n}" for n in (2, 3, 4)]
    headlines = tree.xpath("//*[@class='headline']")
    assert len(headlines) == 4, "entry 5 has no link but is listed"
    sections = [" ".join(h.text_content().split()[:1]) for h in tree.xpath("//h2")]
    # One entry each: Regulation beats Blockchain for entry 2, ETF for entry 3; ties go by priority.
    assert sections == ["Regulation", "ETF", "Blockchain", "Other"]
    sued = tree.xpath("//li[.//a[@href='https://cryptonews.example/news/2']]")[0]
    assert sued.xpath("string(.//time)") == "08:00"
    assert sorted(sued.xpath(".//ul[@class='tags']/li/@title")) == ["Blockchain/Binance", "Regulation/SEC"]
    assert "Cryptonews" in sued.text_content()


def test_section_choice_prefers_topics_over_blockchain() -> None:
    assert section_for(()) == "Other"
    assert section_for(("Blockchain", "Blockchain/FTX", "Security")) == "Security"
    assert section_for(("Markets", "Regulation")) == "Regulation"
    assert section_for(("Blockchain", "AI")) == "AI"
    assert section_for(("Blockchain/Bitcoin",)) == "Blockchain"


def test_day_navigation(rendered: tuple[Path, RenderReport]) -> None:
    out, _ = rendered
    middle = page(out / "digest" / "2024-06-04.html")
    assert middle.xpath("//a[@rel='prev']/@href")[0] == "2024-06-03.html"
    assert middle.xpath("//a[@rel='next']/@href")[0] == "2024-06-05.html"
    assert "../index.html" in middle.xpath("//a/@href")
    assert middle.xpath("//link[@rel='alternate']/@href") == ["../feed.atom", "../feed.rss", "../feed.json"]
    assert middle.xpath("//meta[@name='viewport']")
    first = page(out / "digest" / "2024-06-03.html")
    assert not first.xpath("//a[@rel='prev']")
    index = page(out / "index.html")
    assert index.xpath("//link[@rel='alternate']/@href") == ["feed.atom", "feed.rss", "feed.json"]
    assert index.xpath("//a[@rel='prev']/@href")[0] == "digest/2024-06-04.html"
    for href in middle.xpath("//a[@class='feed']/@href"):
        assert (out / "digest" / href).resolve().is_file(), href


def test_index_is_today_when_today_has_news(rendered: tuple[Path, RenderReport]) -> None:
    out, _ = rendered
    index = page(out / "index.html")
    assert index.xpath("string(//time[@datetime='2024-06-05'])")
    assert index.xpath("//*[@class='headline']/a/@href") == ["https://cryptonews.example/news/6"]
    assert not index.xpath("//*[@class='notice']")


def test_index_is_the_latest_day_when_today_is_quiet(tmp_path: Path) -> None:
    site = site_for(tmp_path)
    render_all(ListSource(sample_entries()), site, NOW + timedelta(days=3))
    index = page(Path(site.output_dir) / "index.html")
    assert index.xpath("//time[@datetime='2024-06-05']")
    assert "2024-06-08" in index.xpath("string(//*[@class='notice'])")


def test_days_follow_the_site_timezone(tmp_path: Path) -> None:
    site = site_for(tmp_path, timezone="Europe/Berlin")
    late = make_entry(1, datetime(2024, 6, 3, 23, 30, tzinfo=UTC))
    render_all(ListSource([late]), site, NOW)
    out = Path(site.output_dir)
    assert (out / "digest" / "2024-06-04.html").is_file()
    assert not (out / "digest" / "2024-06-03.html").exists()
    tree = page(out / "digest" / "2024-06-04.html")
    assert tree.xpath("string(//li//time)") == "01:30"


# ------------------------------------------------------------------ tag paths


@pytest.mark.parametrize(
    ("tag", "path"),
    [
        ("Blockchain/Binance", "tags/blockchain/binance.atom"),
        ("Blockchain", "tags/blockchain.atom"),
        ("Blockchain/Crypto.com", "tags/blockchain/crypto.com.atom"),
        ("Big News/Société Générale", "tags/big-news/societe-generale.atom"),
        ("Etc/../Passwd", "tags/etc/_9d891e731f/passwd.atom"),
        ("A//B", "tags/a/b.atom"),
    ],
)
def test_tag_feed_path(tag: str, path: str) -> None:
    assert tag_feed_path(tag) == path


@pytest.mark.parametrize("tag", ["..", "../..", "/", "", "Ünïcödé?/..", ". ./..x", "💰/🚀"])
def test_tag_feed_path_is_always_safe(tag: str) -> None:
    path = tag_feed_path(tag)
    segments = path.split("/")
    assert segments[0] == "tags"
    assert path == path.lower()
    assert path.endswith(".atom")
    for segment in segments[1:]:
        assert segment
        assert not segment.startswith(".")
        assert set(segment) <= set("abcdefghijklmnopqrstuvwxyz0123456789._-")


def test_a_second_render_writes_only_what_changed(tmp_path: Path) -> None:
    site = site_for(tmp_path)
    entries = [make_entry(n, NOW - timedelta(days=n), tags=("Blockchain", "Blockchain/Bitcoin")) for n in range(1, 6)]
    first = render_all(ListSource(entries), site, NOW)
    assert first.days == 5 and first.tags == 2
    again = render_all(ListSource(entries), site, NOW)
    assert (again.days, again.tags) == (0, 0)
    newest = make_entry(9, NOW - timedelta(hours=1), title="A new story today", tags=("Security",))
    third = render_all(ListSource([*entries, newest]), site, NOW)
    assert third.days == 2 and third.tags == 1  # the new day and the day before it (its "next" link)
    out = Path(site.output_dir)
    assert "A new story today" in (out / "index.html").read_text(encoding="utf-8")
    yesterday = (NOW - timedelta(days=1)).date()
    assert NOW.date().isoformat() in (out / "digest" / f"{yesterday.isoformat()}.html").read_text(encoding="utf-8")
    assert (out / "tags" / "security.atom").exists()
    (out / "digest" / f"{(NOW - timedelta(days=3)).date().isoformat()}.html").unlink()
    assert render_all(ListSource([*entries, newest]), site, NOW).days == 1  # a missing page is written again
    assert render_all(ListSource([*entries, newest]), site, NOW, full=True).days == 6


def test_changed_site_settings_render_everything(tmp_path: Path) -> None:
    entries = [make_entry(n, NOW - timedelta(days=n)) for n in range(1, 4)]
    render_all(ListSource(entries), site_for(tmp_path), NOW)
    assert render_all(ListSource(entries), site_for(tmp_path, title="Another Title"), NOW).days == 3


# ------------------------------------------------------------------ stories


def story_entries() -> list[Entry]:
    """June 4: a story of three outlets spanning midnight, one of two outlets, and two single reports."""
    day = datetime(2024, 6, 4, tzinfo=UTC)
    return [
        make_entry(10, day + timedelta(hours=22), "Exchange halts withdrawals", tags=("Security",), story_id=10),
        make_entry(11, day + timedelta(hours=23), "Withdrawals halted at exchange", feed="beta", story_id=10),
        make_entry(12, day + timedelta(hours=26), "Exchange pauses withdrawals", feed="gamma", story_id=10),
        make_entry(20, day + timedelta(hours=9), "Court approves a settlement", tags=("Regulation",), story_id=20),
        make_entry(21, day + timedelta(hours=10), "Settlement approved by court", feed="beta", story_id=20),
        make_entry(30, day + timedelta(hours=12), "A token lists on a new venue", tags=("Markets",)),
        make_entry(31, day + timedelta(hours=13), "A miner buys new machines", tags=("Mining",)),
    ]


def test_digest_lists_top_stories_by_outlets_then_the_rest_by_topic(tmp_path: Path) -> None:
    site = site_for(tmp_path)
    render_all(ListSource(story_entries()), site, datetime(2024, 6, 5, 12, tzinfo=UTC))
    day = page(Path(site.output_dir) / "digest" / "2024-06-04.html")
    sections = [h2.get("id") for h2 in day.xpath("//section/h2")]
    assert sections[0] == "top"
    top = day.xpath("//section[h2[@id='top']]//div[@class='headline']")
    assert [h.text_content().strip() for h in top] == ["Exchange halts withdrawals", "Court approves a settlement"]
    first = day.xpath("//section[h2[@id='top']]/ol/li[1]//ul[@class='reports']/li")
    assert len(first) == 3
    assert "first" in first[0].text_content() and "first" not in first[1].text_content()
    assert set(sections[1:]) == {"markets", "mining"}
    assert day.text_content().count("Exchange halts withdrawals") == 1


def test_a_story_spanning_midnight_belongs_to_its_first_day(tmp_path: Path) -> None:
    site = site_for(tmp_path)
    render_all(ListSource(story_entries()), site, datetime(2024, 6, 5, 12, tzinfo=UTC))
    june_5 = Path(site.output_dir) / "digest" / "2024-06-05.html"
    assert "Exchange pauses withdrawals" not in (june_5.read_text() if june_5.exists() else "")
    assert "Exchange pauses withdrawals" in (Path(site.output_dir) / "digest" / "2024-06-04.html").read_text()


def test_story_feed_has_one_item_per_story_listing_every_outlet(tmp_path: Path) -> None:
    site = site_for(tmp_path)
    render_all(ListSource(story_entries()), site, datetime(2024, 6, 5, 12, tzinfo=UTC))
    out = Path(site.output_dir)
    validate(out / "feed.atom")
    feed = lxml.etree.fromstring((out / "feed.atom").read_bytes())
    ids = [entry.findtext(f"{ATOM_NS}id") for entry in feed.iter(f"{ATOM_NS}entry")]
    assert len(ids) == 4 and len(set(ids)) == 4
    story = next(
        e for e in feed.iter(f"{ATOM_NS}entry") if e.findtext(f"{ATOM_NS}title") == "Exchange halts withdrawals"
    )
    assert story.findtext(f"{ATOM_NS}id") == make_entry(10, NOW).uid, "a story's id is its first entry's"
    content = story.findtext(f"{ATOM_NS}content") or ""
    for number in (10, 11, 12):
        assert f"https://cryptonews.example/news/{number}" in content
    security = lxml.etree.fromstring((out / "tags" / "security.atom").read_bytes())
    assert [e.findtext(f"{ATOM_NS}title") for e in security.iter(f"{ATOM_NS}entry")] == ["Exchange halts withdrawals"]


def test_digest_shows_the_best_stories_in_full_and_lists_the_rest(tmp_path: Path) -> None:
    site = site_for(tmp_path, digest_max_stories=2)
    render_all(ListSource(story_entries()), site, datetime(2024, 6, 5, 12, tzinfo=UTC))
    day = page(Path(site.output_dir) / "digest" / "2024-06-04.html")
    assert len(day.xpath("//li[contains(@class, 'story')]")) == 2
    more = [li.text_content() for li in day.xpath("//section[h2[@id='more']]//li")]
    assert len(more) == 2 and any("A miner buys new machines" in text for text in more)


def test_leaf_tags_drop_only_real_parents() -> None:
    tags = ["Blockchain", "Blockchain/Binance", "Blockchain-Weekly", "Regulation", "Regulation/SEC/Enforcement"]
    assert leaf_tags(tags) == ("Blockchain-Weekly", "Blockchain/Binance", "Regulation/SEC/Enforcement")


def test_only_the_stories_shown_in_full_get_a_full_view() -> None:
    stories = ListSource(sample_entries()).stories()
    full = digest_sections(stories, ZoneInfo("UTC"))
    capped = digest_sections(stories, ZoneInfo("UTC"), in_full=2)
    in_order = [story for section in capped for story in section.stories]
    assert [story.id for story in in_order] == [story.id for section in full for story in section.stories]
    assert in_order[:2] == [story for section in full for story in section.stories][:2]
    for brief in in_order[2:]:
        assert brief.summary == "" and brief.tags == () and len(brief.reports) == 1 and brief.reports[0].first
