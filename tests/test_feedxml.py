"""aggregator.feedxml: the lxml fast path must read every document exactly as feedparser does.

Each document (the real corpus, the golden cases, generated benchmark feeds) is parsed twice,
with and without the fast path, and the two `ParsedFeed`s must be equal field by field. The
fast path must also actually be taken where it is meant to be, and give way to feedparser on
everything that is not simple.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urljoin

import pytest
from feedparser.datetimes import _parse_date
from hypothesis import example, given
from hypothesis import strategies as st

from aggregator.errors import ParseError
from aggregator.feedxml import join_url, read_simple_feed
from aggregator.models import ParsedFeed
from aggregator.parse import parse_feed
from tests.conftest import CORPUS, DATA, SHARED

URL = "https://cryptowire.example/feed/"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
XML_HEADERS = {"content-type": "application/xml"}
GEN_CORPUS = SHARED / "bench" / "gen_corpus.py"
GENERATED_FEEDS = 20
CASES = DATA / "parse"
REAL_DOCUMENTS = sorted(CORPUS.glob("*/*.xml")) if CORPUS.is_dir() else []
# Crypto outlets some of whose documents the fast path leaves to feedparser, and why; the
# general-* documents (other encodings, RSS 0.91/1.0, xhtml, podcasts) mostly fall back by design.
REAL_FALLBACKS = {
    "bitcoin-com": "<bitcoin:post-thumbnail> (an unknown namespace) with child elements",
    "bitcoinmagazine": "<media:content> holding <media:title> or <media:description>",
    "coindesk": "<media:content> with children; dc:description (another summary)",
    "ethworldnews": "<media:content> holding <media:title> or <media:description>",
    "newsbtc": "an <image> child feedparser would take out of the image",
}
MIN_FAST_SHARE = 0.75


def read(body: bytes, headers: dict[str, str]) -> dict[str, object] | None:
    return read_simple_feed(body, headers, parse_date=_parse_date)


def both_ways(body: bytes, headers: dict[str, str]) -> tuple[ParsedFeed | str, ParsedFeed | str]:
    """parse_feed with and without the fast path (an error counts as its message)."""
    results: list[ParsedFeed | str] = []
    for fast in (True, False):
        try:
            results.append(parse_feed(body, URL, headers, NOW, fast=fast))
        except ParseError as error:
            results.append(f"{type(error).__name__}: {error.message}")
    return results[0], results[1]


def assert_same(fast: ParsedFeed | str, slow: ParsedFeed | str) -> None:
    """Equal, or a readable list of the fields that differ."""
    if fast == slow:
        return
    if isinstance(fast, str) or isinstance(slow, str):
        pytest.fail(f"fast path: {fast!r}\nfeedparser: {slow!r}")
    differences = [
        f"feed.{field.name}: {getattr(fast, field.name)!r} != {getattr(slow, field.name)!r}"
        for field in dataclasses.fields(fast)
        if field.name != "entries" and getattr(fast, field.name) != getattr(slow, field.name)
    ]
    if len(fast.entries) != len(slow.entries):
        differences.append(f"{len(fast.entries)} entries != {len(slow.entries)}")
    for index, (mine, theirs) in enumerate(zip(fast.entries, slow.entries, strict=False)):
        differences += [
            f"entries[{index}].{field.name}: {getattr(mine, field.name)!r:.200} != {getattr(theirs, field.name)!r:.200}"
            for field in dataclasses.fields(mine)
            if getattr(mine, field.name) != getattr(theirs, field.name)
        ]
    pytest.fail("fast path != feedparser:\n" + "\n".join(differences))


# --- the same result both ways ---------------------------------------------------------------


@pytest.mark.parametrize("path", REAL_DOCUMENTS, ids=[f"{p.parent.name}/{p.name}" for p in REAL_DOCUMENTS])
def test_real_document_reads_the_same(path: Path) -> None:
    assert_same(*both_ways(path.read_bytes(), XML_HEADERS))


def test_most_real_rss2_and_atom1_documents_take_the_fast_path(corpus_dir: Path) -> None:
    crypto = [path for path in sorted(corpus_dir.glob("*/*.xml")) if not path.parent.name.startswith("general-")]
    fell_back = [path for path in crypto if read(path.read_bytes(), XML_HEADERS) is None]
    unexpected = sorted({path.parent.name for path in fell_back} - set(REAL_FALLBACKS))
    assert not unexpected, f"documents of {unexpected} fell back to feedparser"
    assert len(fell_back) <= (1 - MIN_FAST_SHARE) * len(crypto), [f"{p.parent.name}/{p.name}" for p in fell_back]


@pytest.mark.parametrize("case", sorted(path.stem for path in CASES.glob("*.xml")))
def test_golden_case_reads_the_same(case: str) -> None:
    expected = json.loads((CASES / f"{case}.json").read_text(encoding="utf-8"))
    assert_same(*both_ways((CASES / f"{case}.xml").read_bytes(), expected.get("headers", {})))


@pytest.fixture(scope="module")
def generated_feeds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Path]]:
    if not GEN_CORPUS.is_file():
        pytest.skip("../shared/bench/gen_corpus.py is not present beside the checkout")
    out = tmp_path_factory.mktemp("bench-corpus")
    command = [sys.executable, str(GEN_CORPUS), "--out", str(out), "--n", str(GENERATED_FEEDS), "--quiet"]
    subprocess.run(command, check=True, timeout=120)
    yield sorted((out / "round-0").glob("*.xml"))
    shutil.rmtree(out, ignore_errors=True)


def test_generated_feeds_take_the_fast_path_and_read_the_same(generated_feeds: list[Path]) -> None:
    assert len(generated_feeds) == GENERATED_FEEDS
    for path in generated_feeds:
        body = path.read_bytes()
        assert read(body, XML_HEADERS) is not None, path.name
        assert_same(*both_ways(body, XML_HEADERS))


# --- what is left to feedparser --------------------------------------------------------------

RSS = b"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Wire</title><link>https://wire.example/</link>
<item><title>One</title><link>https://wire.example/1</link><guid>https://wire.example/1</guid>
<description>&lt;p&gt;Body&lt;/p&gt;</description><pubDate>Mon, 03 Mar 2025 12:00:00 GMT</pubDate></item>
</channel></rss>"""
ATOM = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>Wire</title>
<link rel="alternate" href="https://wire.example/"/><id>tag:wire.example,2025:feed</id>
<entry><title type="html">One</title><link href="https://wire.example/1"/><id>tag:wire.example,2025:1</id>
<updated>2025-03-03T12:00:00Z</updated><author><name>Ann</name><email>ann@wire.example</email></author>
<content type="html">&lt;p&gt;Body&lt;/p&gt;</content></entry></feed>"""


def test_xml_base_is_followed_as_feedparser_does() -> None:
    """feedparser keeps the first xml:base for every later element once its parent had none."""
    body = ATOM.replace(b'<content type="html"', b'<content type="html" xml:base="https://cdn.example/a/"', 1)
    body = body.replace(b"</feed>", b"<entry><id>2</id><link href='x/2'/><summary>S</summary></entry></feed>")
    assert read(body, {}) is not None
    assert_same(*both_ways(body, {}))


def test_simple_documents_are_read() -> None:
    rss = read(RSS, XML_HEADERS)
    atom = read(ATOM, {})
    assert rss is not None and rss["version"] == "rss20"
    assert atom is not None and atom["version"] == "atom10"
    assert_same(*both_ways(RSS, XML_HEADERS))
    assert_same(*both_ways(ATOM, {}))


@pytest.mark.parametrize(
    ("name", "body", "headers"),
    [
        ("doctype", RSS.replace(b"<rss", b'<!DOCTYPE rss SYSTEM "x.dtd">\n<rss', 1), XML_HEADERS),
        ("entity", RSS.replace(b"<rss", b'<!DOCTYPE rss [<!ENTITY a "b">]>\n<rss', 1), XML_HEADERS),
        ("malformed", RSS.replace(b"</item>", b"", 1), XML_HEADERS),
        ("undefined entity", RSS.replace(b"One", b"One&nbsp;", 1), XML_HEADERS),
        ("declared latin-1", RSS.replace(b"utf-8", b"iso-8859-1", 1), XML_HEADERS),
        ("charset latin-1", RSS, {"content-type": "application/xml; charset=iso-8859-1"}),
        ("not an XML type", RSS, {"content-type": "application/octet-stream"}),
        ("content-location", RSS, {"content-type": "application/xml", "content-location": "https://a.example/"}),
        ("utf-16", RSS.replace(b"utf-8", b"utf-16", 1).decode("ascii").encode("utf-16"), XML_HEADERS),
        ("rss 0.92", RSS.replace(b'version="2.0"', b'version="0.92"', 1), XML_HEADERS),
        ("rdf", b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"/>', XML_HEADERS),
        ("xml:base not http", RSS.replace(b"<item>", b'<item xml:base="ftp://other.example/">', 1), XML_HEADERS),
        ("base attribute", ATOM.replace(b"<entry>", b'<entry base="https://other.example/">', 1), XML_HEADERS),
        ("xhtml content", ATOM.replace(b'type="html">&lt;p&gt;Body&lt;/p&gt;', b'type="xhtml"><div/>', 1), {}),
        ("xhtml title", ATOM.replace(b'type="html">One', b'type="xhtml">One', 1), {}),
        ("base64 content", ATOM.replace(b'type="html"', b'type="application/octet-stream"', 1), {}),
        (
            "author and dc:creator",
            RSS.replace(
                b"<item>",
                b'<item><author>a@b.example (A)</author><dc:creator xmlns:dc="http://purl.org/dc/elements/1.1/">B</dc:creator>',
                1,
            ),
            XML_HEADERS,
        ),
        ("skipHours", RSS.replace(b"<item>", b"<skipHours><hour>3</hour></skipHours><item>", 1), XML_HEADERS),
        ("two titles", RSS.replace(b"<title>One</title>", b"<title>One</title><title>Two</title>", 1), XML_HEADERS),
        ("unknown element", RSS.replace(b"<item>", b"<item><foo>x</foo>", 1), XML_HEADERS),
        (
            "media:title",
            RSS.replace(
                b"<item>", b'<item><media:title xmlns:media="http://search.yahoo.com/mrss/">M</media:title>', 1
            ),
            XML_HEADERS,
        ),
    ],
)
def test_not_simple_is_left_to_feedparser(name: str, body: bytes, headers: dict[str, str]) -> None:
    assert read(body, headers) is None, name
    assert_same(*both_ways(body, headers))


# Pieces of URLs, some of which make urljoin rebuild or refuse a URL (an empty "?" or "#", ";"
# parameters, a tab, an unbalanced bracket, a host that is not one).
URL_PIECES = st.sampled_from(
    (
        *("host.example", "Host.Example:8080", "[::1]", "[", "]", "/", "//", "a", "é", ":", "@", "?", "#", ";"),
        *("&", "=", "\t", "\n", " ", "%2F", "..", "x=1", "\u2100", "\uff0f"),
    )
)
URL_TEXT = st.lists(URL_PIECES, max_size=10).map("".join)
SCHEMES = st.sampled_from(["https://", "http://", "HTTP://", "ftp://", "https:", "//", ""])


@given(
    base=st.one_of(st.builds("{}{}".format, SCHEMES, URL_TEXT), st.just("")),
    url=st.builds("{}{}".format, SCHEMES, URL_TEXT),
)
@example(base="https://[news.example/feed", url="https://host.example/a")  # a base urljoin refuses
@example(base="https://news.example/feed", url="https:///a")  # no host: joined to the base's
@example(base="https://news.example/feed", url="https://host.example/a?")  # the empty query goes
@example(base="https://news.example/feed", url="https://host.example/a;")  # the empty parameters go
@example(base="https://news.example/feed", url="https://host.example/a\tb#")
def test_join_url_answers_as_urljoin_does(base: str, url: str) -> None:
    try:
        expected = urljoin(base, url)
    except ValueError:
        with pytest.raises(ValueError):
            join_url(base, url)
        return
    assert join_url(base, url) == expected
