"""aggregator.parse: golden feed documents, the real corpus, and sanitizer properties.

Golden cases live in tests/data/parse as <case>.xml (the body, byte for byte) beside
<case>.json (what parse_feed must return); see tests/data/parse/README.md. Adding a case is
adding those two files.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import nh3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator.errors import EmptyBodyError, NotAFeedError, ParseError
from aggregator.models import EntryData, FeedHints, ParsedFeed
from aggregator.parse import _content_hash, canonical_link, parse_feed
from aggregator.sanitize import (
    ALLOWED_ATTRIBUTES,
    ALLOWED_TAGS,
    CLEAN_CONTENT_TAGS,
    LINK_REL,
    URL_SCHEMES,
    html_to_text,
    sanitize_html,
)
from tests.conftest import DATA

CASES = DATA / "parse"
DEFAULT_URL = "https://cryptowire.example/feed/"
DEFAULT_NOW = "2024-06-01T12:00:00+00:00"
CASE_NAMES = sorted(path.stem for path in CASES.glob("*.xml"))
ERRORS: dict[str, type[ParseError]] = {
    "ParseError": ParseError,
    "NotAFeedError": NotAFeedError,
    "EmptyBodyError": EmptyBodyError,
}


# --- golden cases ----------------------------------------------------------------------------


def test_every_golden_document_has_its_expectations() -> None:
    documents = {path.stem for path in CASES.glob("*.xml")}
    expectations = {path.stem for path in CASES.glob("*.json")}
    assert documents == expectations
    assert len(documents) >= 20


@pytest.mark.parametrize("case", CASE_NAMES)
def test_golden_case(case: str) -> None:
    expected = json.loads((CASES / f"{case}.json").read_text(encoding="utf-8"))
    body = (CASES / f"{case}.xml").read_bytes()
    url = expected.get("url", DEFAULT_URL)
    headers = expected.get("headers", {})
    now = datetime.fromisoformat(expected.get("now", DEFAULT_NOW))

    if "error" in expected:
        _check_error(expected["error"], lambda: parse_feed(body, url, headers, now))
        return
    parsed = parse_feed(body, url, headers, now)
    _check_feed(expected["feed"], parsed)
    assert len(parsed.entries) == len(expected["entries"]), [entry.key for entry in parsed.entries]
    for want, got in zip(expected["entries"], parsed.entries, strict=True):
        _check_entry(want, got)


def _check_error(want: dict[str, Any], call: Any) -> None:
    with pytest.raises(ParseError) as caught:
        call()
    error = caught.value
    assert type(error) is ERRORS[want["type"]]
    if "message" in want:
        assert error.message == want["message"]
    if "message_contains" in want:
        assert want["message_contains"] in error.message
    if "feed_links" in want:
        assert isinstance(error, NotAFeedError)
        assert list(error.feed_links) == want["feed_links"]


def _check_feed(want: dict[str, Any], got: ParsedFeed) -> None:
    assert got.title == want["title"]
    assert got.link == want["link"]
    if "warning_contains" in want:
        assert got.warning is not None and want["warning_contains"] in got.warning
    else:
        assert got.warning is None
    hints = want.get("hints", {})
    assert got.hints == FeedHints(
        ttl_minutes=hints.get("ttl_minutes"),
        update_period_seconds=hints.get("update_period_seconds"),
        skip_hours=frozenset(hints.get("skip_hours", ())),
        skip_days=frozenset(hints.get("skip_days", ())),
    )


def _check_entry(want: dict[str, Any], got: EntryData) -> None:
    actual = {
        "key": got.key,
        "title": got.title,
        "link": got.link,
        "canonical_link": got.canonical_link,
        "author": got.author,
        "published": got.published.isoformat() if got.published else None,
        "updated": got.updated.isoformat() if got.updated else None,
        "categories": list(got.categories),
        "summary": got.summary,
        "content": got.content,
    }
    for field, value in actual.items():
        if field in want:
            assert value == want[field], f"{got.key}: {field}"
    for field in ("summary", "content"):
        text = actual[field]
        assert isinstance(text, str)
        for fragment in want.get(f"{field}_contains", ()):
            assert fragment in text, f"{got.key}: {field} lacks {fragment!r}"
        for fragment in want.get(f"{field}_excludes", ()):
            assert fragment.lower() not in text.lower(), f"{got.key}: {field} has {fragment!r}"
    assert re.fullmatch(r"[0-9a-f]{64}", got.content_hash)
    for moment in (got.published, got.updated):
        assert moment is None or moment.utcoffset() is not None


# --- behaviour beyond one document ----------------------------------------------------------


def _feed_with(title: str, summary: str = "Same summary.") -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>T</title>'
        f"<item><guid>g1</guid><title>{title}</title><description>{summary}</description></item>"
        "<item><guid>g2</guid><title>Unchanged neighbour</title></item>"
        "</channel></rss>"
    ).encode()


def test_content_hash_changes_with_the_entry_and_only_with_it() -> None:
    now = datetime(2024, 6, 1, tzinfo=UTC)
    first = parse_feed(_feed_with("Bitcoin steady"), DEFAULT_URL, {}, now).entries
    again = parse_feed(_feed_with("Bitcoin steady"), DEFAULT_URL, {}, now).entries
    edited = parse_feed(_feed_with("Bitcoin steady, update"), DEFAULT_URL, {}, now).entries
    reworded = parse_feed(_feed_with("Bitcoin steady", "New summary."), DEFAULT_URL, {}, now).entries
    assert [entry.content_hash for entry in first] == [entry.content_hash for entry in again]
    assert edited[0].content_hash != first[0].content_hash
    assert reworded[0].content_hash != first[0].content_hash
    assert edited[1].content_hash == first[1].content_hash


# Quotes, backslashes, a tab, line breaks and characters beyond ASCII in every field JSON escapes.
HASHED_FEED = """<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/">
<channel><title>Hash Desk</title><link>https://hashdesk.example/</link>
<item><title>Ether "merge" day: 5 \\ 6 \u2014 caf\u00e9 \u2615</title>
<link>https://hashdesk.example/news/merge?id=1&amp;utm_source=x</link>
<guid isPermaLink="false">hash-1</guid>
<pubDate>Mon, 06 May 2024 09:15:00 GMT</pubDate>
<author>desk@hashdesk.example (Ana D\u00edaz)</author>
<category>Ethereum</category><category>"Tech" \\ Desk</category>
<description>&lt;p&gt;Line one\twith a tab
and a "quote", a \\ backslash &amp;#1; and &#xD;&lt;/p&gt;</description>
<content:encoded><![CDATA[<p class="x">Body "text" with <a href="/rel">a link</a> and C:\\path</p>
<p>\u00dcn\u00efc\u00f6d\u00e9 \U0001f600</p>]]></content:encoded>
</item></channel></rss>
""".encode()
# What parse_feed has always given HASHED_FEED: the store compares stored hashes with new ones,
# so a change in how the hash is computed would make every stored entry look edited.
HASHED_FEED_HASH = "a633f67212feaf723739152250e6bc56e3a5e3e75b81be522471641bc89b8cc4"


def test_content_hash_stays_what_it_was() -> None:
    (entry,) = parse_feed(HASHED_FEED, "https://hashdesk.example/feed/", {}, datetime(2024, 6, 1, tzinfo=UTC)).entries
    assert entry.content_hash == HASHED_FEED_HASH


JSON_TRICKY_TEXT = st.text(
    st.one_of(st.sampled_from('"\\\n\r\t\x00\x01\x1f\x7f/\u2028\u00e9\U0001f600\ud800\udfff'), st.characters()),
    max_size=40,
)


@given(
    title=JSON_TRICKY_TEXT,
    link=st.none() | JSON_TRICKY_TEXT,
    author=st.none() | JSON_TRICKY_TEXT,
    summary=JSON_TRICKY_TEXT,
    content=JSON_TRICKY_TEXT,
    published=st.none() | st.datetimes(timezones=st.just(UTC)),
    categories=st.lists(JSON_TRICKY_TEXT, max_size=3).map(tuple),
)
def test_content_hash_is_the_sha256_of_the_fields_as_json(
    title: str,
    link: str | None,
    author: str | None,
    summary: str,
    content: str,
    published: datetime | None,
    categories: tuple[str, ...],
) -> None:
    fields = [title, link, author, summary, content, published.isoformat() if published else None, list(categories)]
    as_json = json.dumps(fields, ensure_ascii=False).encode("utf-8", "surrogatepass")
    got = _content_hash(title, link, author, summary, content, published, categories)
    assert got == hashlib.sha256(as_json).hexdigest()


def test_a_body_that_names_a_local_file_is_not_read_as_that_file(tmp_path: Path) -> None:
    # feedparser opens a bytes argument as a path when such a file exists; parse_feed must not.
    secret = tmp_path / "feed.xml"
    secret.write_bytes(_feed_with("Read from disk"))
    with pytest.raises(ParseError):
        parse_feed(str(secret).encode(), DEFAULT_URL, {}, datetime(2024, 6, 1, tzinfo=UTC))


def test_a_naive_clock_is_taken_as_utc() -> None:
    body = _feed_with("Dated").replace(b"<guid>g1</guid>", b"<pubDate>Sat, 01 Jun 2024 10:00:00 GMT</pubDate>")
    parsed = parse_feed(body, DEFAULT_URL, {}, datetime(2024, 6, 1, 12, 0))
    assert parsed.entries[0].published == datetime(2024, 6, 1, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("url", "canonical"),
    [
        ("HTTPS://News.Example/a?utm_source=x&b=1#top", "https://news.example/a?b=1"),
        ("http://news.example:80", "http://news.example/"),
        ("https://news.example:443/a/", "https://news.example/a/"),
        ("https://news.example:8443/a", "https://news.example:8443/a"),
        ("https://news.example/a?UTM_Medium=x&fbclid=1&gclid=2&dclid=3&keep=1", "https://news.example/a?keep=1"),
        ("https://news.example/a?z=1&a=2&z=3", "https://news.example/a?z=1&a=2&z=3"),
        ("https://news.example/a?q=a+b&pk_campaign=c", "https://news.example/a?q=a+b"),
        ("https://news.example/a?", "https://news.example/a"),
        ("https://user@News.example/a", "https://user@news.example/a"),
        ("https://[2001:DB8::1]:443/a", "https://[2001:db8::1]/a"),
        ("  https://news.example/a  ", "https://news.example/a"),
        ("mailto:Desk@News.example", "mailto:Desk@News.example"),
        ("/relative/only", "/relative/only"),
        ("https://news.example:99999/a", "https://news.example:99999/a"),
    ],
)
def test_canonical_link(url: str, canonical: str) -> None:
    assert canonical_link(url) == canonical


@pytest.mark.parametrize(
    ("html", "text"),
    [
        ("<b>Bold</b> &amp; <i>brave</i>", "Bold & brave"),
        ("<p>One</p><p>Two</p>", "One Two"),
        ("B<b>TC</b>", "BTC"),
        ("line<br>break", "line break"),
        ("BTC < $60k > ETH", "BTC < $60k > ETH"),
        ("&lt;em&gt;escaped&lt;/em&gt; markup", "escaped markup"),
        ("<script>alert(1)</script>Safe<style>p{}</style>", "Safe"),
        ("<!-- note -->Visible", "Visible"),
        ("non&nbsp;breaking\u00a0space", "non breaking space"),
        ("  \n\t  ", ""),
        ("&#8220;quoted&#8221;", "\u201cquoted\u201d"),
    ],
)
def test_html_to_text(html: str, text: str) -> None:
    assert html_to_text(html) == text


def test_sanitize_html_resolves_relative_urls_only_against_a_usable_base() -> None:
    fragment = '<a href="a/b">x</a><img src="/i.png">'
    resolved = sanitize_html(fragment, "https://news.example/feed/")
    assert 'href="https://news.example/feed/a/b"' in resolved
    assert 'src="https://news.example/i.png"' in resolved
    for base in (None, "", "not a url", "javascript:alert(1)//", "ftp://news.example/"):
        kept = sanitize_html(fragment, base)
        assert 'href="a/b"' in kept and 'src="/i.png"' in kept


@pytest.mark.parametrize(
    ("cite", "kept"),
    [
        ("https://source.example/report", True),
        (" HTTP://Source.Example/", True),
        ("mailto:desk@news.example", True),
        ("", False),
        ("0", False),  # relative: nh3 resolves no cite against a base
        ("/report", False),
        ("javascript:alert(1)", False),  # nh3 checks no cite's scheme
        ("java&#x73;cript:alert(1)", False),
        ("java\tscript:alert(1)", False),
        ("data:text/html,x", False),
    ],
)
def test_sanitize_html_keeps_a_cite_only_when_it_is_an_absolute_web_url(cite: str, kept: bool) -> None:
    for tag in ("blockquote", "q", "del", "ins"):
        markup = f'<{tag} datetime="2024-05-06>x" cite="{cite}">quoted</{tag}>'
        for base in (None, "https://news.example/feed/"):
            output = sanitize_html(markup, base)
            assert ("cite=" in output) is kept, output
            assert "quoted" in output


# Every form of URL value that resolves differently (or not at all) against a base.
URL_VALUES = st.sampled_from(
    [
        *("", "a/b", "/x.png", "../up?q=1", "?q=2", "#top", "//cdn.example/x", "\\\\back.example/x"),
        *(" /spaced", "\t//tab.example/", "&#47;encoded", "./", "http:same-scheme", "https:other"),
        *("https://ok.example/x", "HTTP://Up.Example/Y", "mailto:desk@news.example", "javascript:alert(1)"),
    ]
)
# Text that looks like an attribute to a quick search of the output, but is not one.
URL_TEXT = st.sampled_from(["", "Read more", 'see href="rel" here', 'src="x"'])


URL_ELEMENTS = st.sampled_from([("a", "href"), ("img", "src")])


@given(
    links=st.lists(st.tuples(URL_ELEMENTS, URL_VALUES, URL_TEXT), min_size=1, max_size=4),
    scheme=st.sampled_from(["http", "https"]),
    item=st.one_of(st.integers(0, 3), st.integers(4, 10**9)),
)
def test_sanitize_html_resolves_urls_as_a_cleaner_built_for_the_base_does(
    links: list[tuple[tuple[str, str], str, str]], scheme: str, item: int
) -> None:
    # RSS gives each item its own base; sanitize_html avoids building a cleaner for every one,
    # and must still write every URL as such a cleaner would.
    base = f"{scheme}://news.example/{item}/item"
    markup = "".join(f'<{tag} {attribute}="{value}">{text}' for (tag, attribute), value, text in links)
    for_the_base = nh3.Cleaner(
        tags=ALLOWED_TAGS,
        clean_content_tags=CLEAN_CONTENT_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        link_rel=LINK_REL,
        url_schemes=URL_SCHEMES,
        url_relative=("rewrite_with_base", base),
    )
    assert sanitize_html(markup, base) == for_the_base.clean(markup).strip()


# --- the real corpus -------------------------------------------------------------------------


def test_real_corpus_parses_into_keyed_titled_entries(corpus_dir: Path) -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    files = sorted(corpus_dir.rglob("*.xml"))
    assert files
    problems: list[str] = []
    for path in files:
        name = str(path.relative_to(corpus_dir))
        parsed = parse_feed(path.read_bytes(), "https://corpus.example/feed/", {}, now)
        keys = [entry.key for entry in parsed.entries]
        if len(keys) != len(set(keys)):
            problems.append(f"{name}: duplicate keys")
        for entry in parsed.entries:
            if not entry.key.strip() or not entry.title.strip():
                problems.append(f"{name}: empty key or title in {entry!r:.120}")
            if entry.link is not None and not entry.link.startswith(("http://", "https://")):
                problems.append(f"{name}: {entry.link!r} is not a web link")
            for html in (entry.summary, entry.content):
                if re.search(r"<(script|iframe|style)\b|\son[a-z]+=", html, re.I):
                    problems.append(f"{name}: unsafe markup left in {entry.key}")
    assert not problems, "\n".join(problems[:20])


# --- properties ------------------------------------------------------------------------------

DANGEROUS_TAGS = ("<script", "<iframe", "<object", "<embed", "<style", "<base", "<meta", "<form", "<svg")
URL_ATTRIBUTES = frozenset({"href", "src", "cite"})
SAFE_SCHEMES = ("http:", "https:", "mailto:")


class _MarkupAudit(HTMLParser):
    """Reads sanitizer output the way a browser would and lists anything unsafe in it."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name.startswith("on") or name in ("style", "srcdoc", "formaction", "action"):
                self.problems.append(f"<{tag} {name}>")
            if name in URL_ATTRIBUTES and value is not None:
                squeezed = re.sub(r"[\x00-\x20]", "", value).lower()
                scheme = re.match(r"[a-z][a-z0-9+.-]*:", squeezed)
                if scheme and not squeezed.startswith(SAFE_SCHEMES):
                    self.problems.append(f"<{tag} {name}={value!r}>")


def _assert_safe(output: str) -> None:
    lowered = output.lower()
    for tag in DANGEROUS_TAGS:
        assert tag not in lowered, output
    assert not re.search(r"<[^>]*\son[a-z]+\s*=", output, re.I), output
    audit = _MarkupAudit()
    audit.feed(output)
    audit.close()
    assert not audit.problems, (audit.problems, output)


BASES = st.sampled_from([None, "https://news.example/feed/", "http://news.example/a/b"])
# No value holds ">", so a value can never close a tag or comment early and spill into the
# text; every dangerous string stays in an attribute position, where the sanitizer must act.
SAFE_TEXT = st.text(alphabet="abcdefghij XYZ.,!?0123456789", max_size=20)
# Non-empty and without spaces, so an unquoted value never swallows the next attribute.
ATTRIBUTE_TEXT = st.text(alphabet="abcdefghij0123456789", min_size=1, max_size=12)
HOSTILE_URLS = st.sampled_from(
    [
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        " javascript:alert(1)",
        "java\tscript:alert(1)",
        "java&#x09;script:alert(1)",
        "&#106;avascript:alert(1)",
        "javascript&colon;alert(1)",
        "vbscript:msgbox(1)",
        "data:text/html;base64,PHNjcmlwdD4=",
        "DATA:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+",
        "  data:image/png;base64,AAAA",
        "https://ok.example/x",
        "/relative",
        "//cdn.example/x.png",
    ]
)
HOSTILE_TAGS = st.sampled_from(
    [
        *("script", "iframe", "img", "a", "svg", "style", "object", "embed", "base", "meta", "form"),
        *("math", "p", "div", "input", "button", "video", "link", "table", "noscript", "template"),
        *("xmp", "textarea"),
    ]
)
HOSTILE_ATTRIBUTES = st.one_of(
    st.tuples(st.sampled_from(["href", "src", "action", "formaction", "xlink:href", "cite"]), HOSTILE_URLS),
    st.tuples(st.sampled_from(["onerror", "onclick", "onload", "ONMOUSEOVER", "onfocus"]), ATTRIBUTE_TEXT),
    st.tuples(st.sampled_from(["style", "srcdoc", "title", "alt", "class"]), ATTRIBUTE_TEXT),
)


def _quoted(value: str, quote: str) -> str:
    """The attribute value in the given quotes; unquoted only where HTML allows it, so the
    value stays an attribute instead of spilling into the text."""
    if not quote and re.search(r"[\s\"'<>=`]", value):
        quote = '"'
    return f"{quote}{value}{quote}"


@st.composite
def hostile_markup(draw: st.DrawFn) -> str:
    """Tags, attributes and URL tricks combined into (often malformed) HTML."""
    pieces: list[str] = []
    for _ in range(draw(st.integers(1, 8))):
        tag = draw(HOSTILE_TAGS)
        attributes = draw(st.lists(HOSTILE_ATTRIBUTES, max_size=3))
        quote = draw(st.sampled_from(['"', "'", ""]))
        rendered = "".join(f" {name}={_quoted(value, quote)}" for name, value in attributes)
        pieces.append(f"<{tag}{rendered}>")
        pieces.append(draw(SAFE_TEXT))
        pieces.append(draw(st.sampled_from(["", f"</{tag}>", "<!--", "-->", "<![CDATA[", "]]>", "<scr"])))
    return "".join(pieces)


@given(text=st.text(max_size=300), base=BASES)
def test_sanitized_arbitrary_text_is_safe(text: str, base: str | None) -> None:
    _assert_safe(sanitize_html(text, base))


@given(markup=hostile_markup(), base=BASES)
@settings(max_examples=300, deadline=None)
def test_sanitized_hostile_markup_is_safe(markup: str, base: str | None) -> None:
    output = sanitize_html(markup, base)
    _assert_safe(output)
    # The strategy only puts these in attribute positions, so none may survive at all.
    for needle in ("javascript:", "vbscript:", "data:", "alert("):
        assert needle not in output.lower(), output


FEED_PIECES = st.sampled_from(
    [
        b'<?xml version="1.0" encoding="utf-8"?>',
        b'<?xml version="1.0" encoding="bogus"?>',
        b'<rss version="2.0">',
        b"<channel>",
        b"<item>",
        b"<title>",
        b"</title>",
        b"<link>",
        b"</link>",
        b"<guid>",
        b"</guid>",
        b"</item>",
        b"</channel>",
        b"</rss>",
        b'<feed xmlns="http://www.w3.org/2005/Atom">',
        b"<entry>",
        b"</entry>",
        b"<category>",
        b"</category>",
        b'<content type="xhtml">',
        b"</content>",
        b"<pubDate>Mon, 99 Foo 99999 99:99:99 +9999</pubDate>",
        b"<skipHours><hour>99</hour></skipHours>",
        b"&amp;",
        b"&#xD800;",
        b"&#0;",
        b"<![CDATA[",
        b"]]>",
        b"\xef\xbb\xbf",
        b"\xff\xfe",
        b"\x00",
        b"x",
    ]
)


@given(body=st.one_of(st.binary(max_size=400), st.lists(FEED_PIECES, max_size=30).map(b"".join)))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_body_gives_a_feed_or_a_parse_error(body: bytes) -> None:
    try:
        parsed = parse_feed(body, DEFAULT_URL, {}, datetime(2024, 6, 1, tzinfo=UTC))
    except ParseError:
        return
    keys = [entry.key for entry in parsed.entries]
    assert len(keys) == len(set(keys))
    assert all(key and entry.title for key, entry in zip(keys, parsed.entries, strict=True))


URL_PARTS = st.builds(
    "{}://{}{}/{}?{}#{}".format,
    st.sampled_from(["http", "HTTPS", "https"]),
    st.sampled_from(["News.Example", "news.example", "a.b.example"]),
    st.sampled_from(["", ":80", ":443", ":8080"]),
    st.text(alphabet="abc/-_", max_size=10),
    st.lists(
        st.sampled_from(["utm_source=x", "id=1", "fbclid=2", "q=a%20b", "UTM_TERM=t", "x", "gclid=3"]),
        max_size=5,
    ).map("&".join),
    st.text(alphabet="abc", max_size=3),
)


@given(url=URL_PARTS)
def test_canonical_link_is_idempotent_and_drops_trackers(url: str) -> None:
    canonical = canonical_link(url)
    assert canonical_link(canonical) == canonical
    assert "#" not in canonical
    assert not re.search(r"[?&](utm_|fbclid|gclid)", canonical, re.I)
    assert canonical == canonical.strip()
