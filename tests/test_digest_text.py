"""The day's digest as Markdown, plain text and an HTML email: the same stories, every link, nothing live.

Markdown is checked by reading it with a real CommonMark parser (markdown-it-py), the
email's HTML with lxml: a hostile title must come out as the same words, never as markup.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import lxml.html
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from aggregator.digest import xml_text
from aggregator.digest_text import (
    DayDigest,
    day_digest,
    day_document,
    email_html,
    email_subject,
    markdown,
    markdown_text,
    markdown_url,
    one_line,
    plain_text,
)
from aggregator.models import Entry, SiteConfig
from tests.test_render import ListSource, make_entry, site_for

DAY = date(2024, 5, 2)
SITE_URL = "https://news.example/"
# CommonMark plus the GFM extensions chats and note apps add (tables, strikethrough).
MARKDOWN = MarkdownIt("commonmark").enable(["table", "strikethrough"])
HOSTILE_TITLES = (
    "<script>alert(1)</script> Binance <b>bold</b> &amp; <img src=x onerror=alert(2)>",
    "[click me](javascript:alert(1)) and ![img](https://evil.example/x.png) <https://evil.example/>",
    "# Not a heading\n- not a list\n> not a quote\n\n---\n```\ncode\n```",
    "1. Bitcoin $BTC to the moon *now* _really_ ~~no~~ `rm -rf` | a | b | @everyone \\",
    "Escape \x1b[31mred\x1b[0m, C1 \x9b2J, bidi \u202egnp.exe\u202c, tab\tand CR\r\nline",
)


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(DAY.year, DAY.month, DAY.day, hour, minute, tzinfo=UTC)


def day_entries(hostile: str = "A quiet day for the markets") -> list[Entry]:
    """A story from two outlets, a topic story with a hostile title, and one without tags or link."""
    return [
        make_entry(1, at(9, 15), "SEC sues Binance over unregistered securities", story_id=1,
                   tags=("Regulation", "Regulation/SEC", "Blockchain", "Blockchain/Binance")),
        make_entry(2, at(10, 2), "SEC takes Binance to court", story_id=1, feed="ledger", feed_title="The Ledger",
                   feed_link="https://ledger.example/", link="https://ledger.example/sec-binance?a=(1)&b=<2>"),
        make_entry(3, at(11), hostile, tags=("Markets",)),
        make_entry(4, at(12), "An unlinked note", link=None, feed_link=None),
    ]  # fmt: skip


def site(tmp_path: Path, **changes: object) -> SiteConfig:
    return site_for(tmp_path, site_url=SITE_URL, **changes)


def digest_of(tmp_path: Path, entries: list[Entry], **changes: object) -> DayDigest:
    return day_digest(ListSource(entries), site(tmp_path, **changes), DAY)


def html_of_markdown(text: str) -> lxml.html.HtmlElement:
    tokens = MARKDOWN.parse(text)
    kinds = {token.type for token in tokens} | {child.type for token in tokens for child in token.children or ()}
    assert not kinds & {"html_inline", "html_block"}, "raw HTML reached the Markdown"
    return lxml.html.fromstring(f"<div>{MARKDOWN.render(text)}</div>")


def test_markdown_lists_top_stories_then_topics_with_every_outlet(tmp_path: Path) -> None:
    text = markdown(digest_of(tmp_path, day_entries()))
    page = html_of_markdown(text)
    assert page.xpath("//h1")[0].text_content() == "Crypto News Digest: Thursday, 2 May 2024"
    assert [h2.text_content() for h2 in page.xpath("//h2")] == ["Top stories", "Markets", "Other"]
    top = page.xpath("//h3")[0]
    assert top.text_content() == "SEC sues Binance over unregistered securities"
    assert top.xpath(".//a/@href") == ["https://cryptonews.example/news/1"]
    reports = top.xpath("following-sibling::ul[1]/li")
    assert [li.text_content() for li in reports] == [
        "Cryptonews (first) · 09:15",
        "The Ledger · 10:02 · SEC takes Binance to court",
    ]
    # The link's parentheses and angle brackets are encoded, so the link stays whole.
    assert reports[1].xpath(".//a/@href") == ["https://ledger.example/sec-binance?a=%281%29&b=%3C2%3E"]
    assert "09:15 · 2 outlets · Binance, SEC" in text
    assert "Summary of story 1, with bold words \\& more." in text
    assert "[on the web](https://news.example/digest/2024-05-02.html)" in text
    assert "### An unlinked note" in text
    assert "<" not in text.replace("\\<", "")


def test_plain_text_is_wrapped_and_every_link_is_whole(tmp_path: Path) -> None:
    long_title = "A very long headline about a stablecoin attestation " * 4
    digest = digest_of(tmp_path, day_entries(long_title))
    text = plain_text(digest, width=60)
    lines = text.splitlines()
    assert lines[:3] == ["Crypto News Digest: Thursday, 2 May 2024", "3 stories from 4 reports", digest.page_url]
    assert "TOP STORIES" in lines and "MARKETS" in lines
    for url in (
        "https://cryptonews.example/news/1",
        "https://ledger.example/sec-binance?a=(1)&b=%3C2%3E",
        "https://cryptonews.example/news/3",
    ):
        assert f"    {url}" in lines, url
    assert all(len(line) <= 60 for line in lines if "://" not in line), [line for line in lines if len(line) > 60]
    assert "  - Cryptonews (first), 09:15" in lines
    assert "  - The Ledger, 10:02: SEC takes Binance to court" in lines
    assert "<" not in text and "](" not in text


def test_email_html_is_self_contained_with_absolute_links(tmp_path: Path) -> None:
    digest = digest_of(tmp_path, day_entries(HOSTILE_TITLES[0]))
    document = email_html(digest, "Crypto News Digest: 2024-05-02")
    page = lxml.html.fromstring(document)
    assert not page.xpath("//script | //link | //style | //iframe | //img | //*[@onerror]")
    hrefs = page.xpath("//a/@href")
    assert hrefs and all(href.startswith(("https://", "http://")) for href in hrefs)
    assert f"{SITE_URL}tags/regulation/sec.html" in hrefs and f"{SITE_URL}digest/2024-05-02.html" in hrefs
    assert "https://ledger.example/sec-binance?a=(1)&b=%3C2%3E" in hrefs
    assert page.xpath("//div[@style]") and "<style" not in document
    headlines = [element.text_content() for element in page.xpath("//div[@style='font-weight:600;']")]
    assert one_line(HOSTILE_TITLES[0]) in headlines


@pytest.mark.parametrize("title", HOSTILE_TITLES)
def test_hostile_titles_come_out_as_their_own_words(tmp_path: Path, title: str) -> None:
    digest = digest_of(tmp_path, day_entries(title))
    expected = one_line(xml_text(title))
    page = html_of_markdown(markdown(digest))
    assert expected in [h3.text_content() for h3 in page.xpath("//h3")]
    assert set(page.xpath("//a/@href")) <= {
        "https://cryptonews.example/news/1",
        "https://cryptonews.example/news/3",
        "https://ledger.example/sec-binance?a=%281%29&b=%3C2%3E",
        "https://news.example/digest/2024-05-02.html",
    }
    assert not page.xpath("//img | //code | //pre | //blockquote | //hr | //em | //strong | //del | //table")
    text = plain_text(digest)
    assert expected in " ".join(text.split())
    assert not re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]", text)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(title=st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=60))
def test_any_title_is_inert_markdown(tmp_path: Path, title: str) -> None:
    expected = one_line(xml_text(title))
    assume(expected)
    entry = make_entry(7, at(8), title)
    page = html_of_markdown(markdown(digest_of(tmp_path, [entry])))
    (heading,) = page.xpath("//h3")
    assert heading.text_content() == expected
    assert page.xpath("//a/@href") == [
        "https://news.example/digest/2024-05-02.html",  # the day's page
        "https://cryptonews.example/news/7",  # the headline
        "https://cryptonews.example/news/7",  # the outlet's report
    ]


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("- item", "\\- item"),
        ("+ item", "\\+ item"),
        ("2024. A year", "2024\\. A year"),
        ("3) three", "3\\) three"),
        ("a - b + c. 4) d", "a - b + c. 4) d"),
        ("*x* _y_ `z` [a](b) <c> #d |e| ~f~ $g @h &i !j ^k \\", None),
    ],
)
def test_markdown_text_escapes_what_markdown_would_read(text: str, escaped: str | None) -> None:
    result = markdown_text(text)
    if escaped is not None:
        assert result == escaped
    assert lxml.html.fromstring(MARKDOWN.render(result)).text_content().strip() == text


def test_markdown_url_cannot_end_a_link_early() -> None:
    assert markdown_url("https://x.example/a b(c)<d>\\e") == "https://x.example/a%20b%28c%29%3Cd%3E%5Ce"


def test_stories_beyond_max_stories_are_listed_briefly(tmp_path: Path) -> None:
    digest = digest_of(tmp_path, day_entries(), digest_max_stories=1)
    assert [story.headline for section in digest.sections for story in section.stories] == [
        "SEC sues Binance over unregistered securities"
    ]
    assert len(digest.more) == 2
    text = markdown(digest)
    assert "## More stories" in text
    assert "- [A quiet day for the markets](https://cryptonews.example/news/3) · Cryptonews · 11:00" in text
    assert "MORE STORIES" in plain_text(digest)


def test_an_empty_day_says_so(tmp_path: Path) -> None:
    digest = digest_of(tmp_path, [])
    assert digest.story_count == 0
    assert "No stories on this day." in markdown(digest)
    assert "No stories on this day." in plain_text(digest)
    assert "No stories on this day." in email_html(digest, "subject")


def test_days_follow_the_site_timezone(tmp_path: Path) -> None:
    # 23:30 UTC on May 1 is already May 2 in Berlin.
    entries = [make_entry(1, datetime(2024, 5, 1, 23, 30, tzinfo=UTC), "Late news")]
    berlin = day_digest(ListSource(entries), site(tmp_path, timezone="Europe/Berlin"), DAY)
    assert [story.time for section in berlin.sections for story in section.stories] == ["01:30"]
    assert digest_of(tmp_path, entries).story_count == 0


def test_html_format_is_the_day_page(tmp_path: Path) -> None:
    entries = [*day_entries(), make_entry(9, datetime(2024, 5, 3, 8, tzinfo=UTC), "The next day")]
    page = lxml.html.fromstring(day_document(ListSource(entries), site(tmp_path), DAY, "html"))
    assert set(page.xpath("//a[@rel='next']/@href")) == {"2024-05-03.html"}
    assert "SEC sues Binance over unregistered securities" in page.text_content()
    with pytest.raises(ValueError, match="unknown digest format"):
        day_document(ListSource(entries), site(tmp_path), DAY, "pdf")


def test_subject_fills_its_placeholders_on_one_line(tmp_path: Path) -> None:
    digest = replace(digest_of(tmp_path, day_entries()), site_title="Crypto\nNews")
    assert email_subject("{title}: {date} ({stories} stories)", digest) == "Crypto News: 2024-05-02 (3 stories)"


def test_a_user_template_replaces_the_markdown_one(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "digest.md").write_text(
        "{% autoescape false %}{{ d.day }}: {{ d.story_count }} stories{% endautoescape %}\n", encoding="utf-8"
    )
    digest = digest_of(tmp_path, day_entries())
    assert markdown(digest, str(templates)) == "2024-05-02: 3 stories\n"
    assert plain_text(digest, str(templates)).startswith("Crypto News Digest")
