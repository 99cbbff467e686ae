"""Feed bytes in, normalized values out: the only module that imports feedparser.

`parse_feed` turns one fetched document (RSS 0.9x/1.0/2.0, Atom 0.3/1.0, in any encoding
feedparser can detect) into a `ParsedFeed`: plain-text titles, sanitized HTML with absolute
URLs, UTC dates that are plausible, stable entry keys, canonical links for comparison and a
content hash so the store can tell "unchanged" from "changed". It knows nothing of HTTP,
SQLite or tags: the caller passes the body, the URL it came from, the response headers and
the clock.

feedparser runs with its own sanitizer and HTML URI resolution switched off (2-4x faster);
`sanitize` (nh3) cleans instead and makes relative URLs absolute (see `_Bases` for against
what). Well-formed UTF-8 RSS 2.0 and Atom 1.0 documents take a faster road: `feedxml` reads
them with lxml into the same shape feedparser would return, and feedparser reads the rest.

Hostile XML is defused where feedparser has decoded the document to UTF-8 and before either of
its parsers reads it (`_defused`), so no encoding can smuggle anything past: entity declarations
are refused (entity-expansion bombs; external entities are never fetched anyway), and character
references and bytes that XML forbids are dropped or replaced instead of crashing the parser.
"""

from __future__ import annotations

import codecs
import hashlib
import html
import io
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from xml.sax import SAXParseException

import feedparser
import feedparser.api
from feedparser.datetimes import _parse_date

from aggregator.errors import EmptyBodyError, NotAFeedError, ParseError
from aggregator.feedxml import join_url, read_simple_feed
from aggregator.models import EntryData, FeedHints, ParsedFeed

# ALLOWED_*: the sanitizer's policy, re-exported for the hostile-content tests that check our output.
from aggregator.sanitize import ALLOWED_ATTRIBUTES as ALLOWED_ATTRIBUTES
from aggregator.sanitize import ALLOWED_TAGS as ALLOWED_TAGS
from aggregator.sanitize import WEB_SCHEMES, html_to_text, sanitize_html

# Dates outside this window are treated as unknown; the store then uses first-seen time.
EARLIEST_DATE = datetime(1995, 1, 1, tzinfo=UTC)
MAX_FUTURE = timedelta(days=1)

UNTITLED = "(untitled)"
TITLE_FROM_SUMMARY_CHARS = 80
# How much of a summary is read to invent a title; bounds the work for huge bodies.
SNIPPET_SOURCE_CHARS = 4000
# The plain-text excerpt of an entry (EntryData.text) that search indexes and stories compare.
TEXT_CHARS = 1000
WARNING_CHARS = 200

# An HTML page is recognised from its first bytes; its <head> is searched for feed links.
HTML_SNIFF_BYTES = 2048
HTML_HEAD_BYTES = 256 * 1024
# skipHours/skipDays blocks are short; the bound keeps a broken document from costing much.
SKIP_BLOCK_CHARS = 4096

DEFAULT_PORTS = {"http": 80, "https": 443}
FEED_LINK_TYPES = frozenset({"application/rss+xml", "application/atom+xml", "application/feed+json"})

# Query parameters that only identify a campaign or a click, never the page itself.
TRACKING_PARAMS = frozenset(
    {
        *("fbclid", "gclid", "dclid", "gbraid", "wbraid", "msclkid", "yclid", "mc_cid", "mc_eid"),
        *("igshid", "_hsenc", "_hsmi", "ref_src", "ref_url", "mkt_tok", "_ga", "_gl"),
    }
)
TRACKING_PREFIXES = ("utm_", "pk_", "mtm_", "__hs")

DAY = 86400
UPDATE_PERIOD_SECONDS = {"hourly": 3600, "daily": DAY, "weekly": 7 * DAY, "monthly": 30 * DAY, "yearly": 365 * DAY}
DAY_NAMES = frozenset({"monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"})

_PARTIAL_TAG_AT_END_RE = re.compile(r"<[^>]*\Z")
_EMAIL = r"(?:mailto:)?[^\s@()<>]+@[^\s@()<>]+"
_EMAIL_THEN_NAME_RE = re.compile(_EMAIL + r"\s*\((?P<name>[^()]+)\)")
_NAME_THEN_EMAIL_RE = re.compile(r"(?P<name>[^()<>@]+?)\s*(?:\(\s*" + _EMAIL + r"\s*\)|<\s*" + _EMAIL + r"\s*>)")
_HTML_SNIFF_RE = re.compile(rb"<!doctype\s+html|<html[\s>]|<head[\s>]|<body[\s>]", re.I)
_SKIP_HOURS_RE = re.compile(rb"<skipHours\b[^>]*>(.{0,%d}?)</skipHours\s*>" % SKIP_BLOCK_CHARS, re.S)
_SKIP_DAYS_RE = re.compile(rb"<skipDays\b[^>]*>(.{0,%d}?)</skipDays\s*>" % SKIP_BLOCK_CHARS, re.S)
_HOUR_RE = re.compile(rb"<hour\b[^>]*>\s*(\d{1,2})\s*</hour\s*>")
_DAY_RE = re.compile(rb"<day\b[^>]*>\s*([A-Za-z]{3,12})\s*</day\s*>")


def parse_feed(body: bytes, url: str, headers: Mapping[str, str], now: datetime, *, fast: bool = True) -> ParsedFeed:
    """Turn one fetched feed document into a `ParsedFeed`.

    `headers` are the lower-cased response headers (content-type drives encoding detection);
    `url` is where the body came from (`_Bases` says how relative URLs resolve); `now` bounds
    plausible dates. Raises EmptyBodyError, NotAFeedError (an HTML page) or ParseError
    (anything else that is not a feed). A malformed document that feedparser can still read
    is kept, with `warning` saying what was wrong. `fast=False` skips `feedxml`'s reader,
    so that feedparser reads every document (the tests compare the two).
    """
    if not body or body.isspace():
        raise EmptyBodyError("empty response body")
    simple = read_simple_feed(body, headers, parse_date=_parse_date_cached) if fast else None
    parsed, repair_warning = (simple, None) if simple is not None else _feedparser_result(body, url, headers)
    now = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
    feed: Mapping[str, Any] = parsed.get("feed") or {}
    site_link = _web_url(url, _text(feed, "link"))
    bases = _Bases.of(url, site_link, str(parsed.get("version") or ""))
    return ParsedFeed(
        title=html_to_text(_text(feed, "title")) or None,
        link=site_link,
        entries=_unique_entries(parsed.get("entries") or (), bases, now),
        hints=_hints(feed, body),
        warning=_warning(parsed.get("bozo_exception"), headers, body) or repair_warning,
    )


# feedparser's date parser for `feedxml`, remembering recent answers (immutable tuples): an Atom
# entry's published and updated dates are mostly the same text, and a feed's entries share times.
_parse_date_cached = lru_cache(maxsize=1024)(_parse_date)


def _feedparser_result(body: bytes, url: str, headers: Mapping[str, str]) -> tuple[Mapping[str, Any], str | None]:
    """feedparser's reading of any document (defused and repaired), and a warning if it was repaired.

    Raises NotAFeedError or ParseError for a body in which feedparser finds no feed.
    """
    readable = _with_stray_bytes_repaired(body, headers)
    # A BytesIO, never the bytes themselves: feedparser treats a bytes argument that happens
    # to name a local file as a path and reads that file.
    try:
        parsed = feedparser.parse(
            io.BytesIO(readable),
            response_headers=dict(headers),
            sanitize_html=False,
            resolve_relative_uris=False,
        )
    except (LookupError, UnicodeError) as exc:
        # feedparser's lenient parser raises these on some garbage (a stray </link> before
        # any channel); for us that is "not a feed".
        raise _not_a_feed_error(body, url, headers, exc) from exc
    if not parsed.get("version") and not parsed.get("entries"):
        raise _not_a_feed_error(body, url, headers, parsed.get("bozo_exception"))
    return parsed, STRAY_BYTES_WARNING if readable is not body else None


def canonical_link(url: str) -> str:
    """The form of a link used to tell whether two entries point at the same page.

    Scheme and host lower-cased, default port and fragment dropped, tracking parameters
    (utm_*, fbclid, gclid, ...) removed, the rest of the query kept in order and spelling.
    Anything that is not an http(s) URL comes back stripped but otherwise unchanged.
    """
    url = url.strip()
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return url
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in WEB_SCHEMES or not host:
        return url
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != DEFAULT_PORTS[scheme]:
        netloc = f"{netloc}:{port}"
    userinfo, at, _ = parts.netloc.rpartition("@")
    if at:
        netloc = f"{userinfo}@{netloc}"
    return urlunsplit((scheme, netloc, parts.path or "/", _without_tracking(parts.query), ""))


def _without_tracking(query: str) -> str:
    """The query string minus tracking parameters, kept as written (no re-encoding)."""
    if not query:
        return ""
    kept = [pair for pair in query.split("&") if pair and not _is_tracking(pair.partition("=")[0])]
    return "&".join(kept)


def _is_tracking(name: str) -> bool:
    """Whether a query parameter name is one of the known click or campaign trackers."""
    name = name.lower()
    return name in TRACKING_PARAMS or name.startswith(TRACKING_PREFIXES)


def _web_url(base: str, link: str) -> str | None:
    """`link` resolved against `base`, or None unless the result is an http(s) URL.

    A javascript: or data: link would become a live link in our pages, so it is dropped.
    """
    link = link.strip()
    if not link:
        return None
    try:
        absolute = join_url(base, link)
        parts = urlsplit(absolute)
    except ValueError:
        return None
    if parts.scheme.lower() not in WEB_SCHEMES or not parts.netloc:
        return None
    return absolute


def _field(mapping: Mapping[str, Any], key: str) -> object:
    """A field of a feedparser dict as stored, or None.

    dict.get skips FeedParserDict's key aliases, which are slower and warn (asking for a
    missing updated_parsed silently returns published_parsed with a DeprecationWarning).
    """
    return dict.get(mapping, key) if isinstance(mapping, dict) else mapping.get(key)


def _text(mapping: Mapping[str, Any], key: str) -> str:
    """A string field of a feedparser dict, or "" when absent or not a string."""
    value = _field(mapping, key)
    return value if isinstance(value, str) else ""


# --- defusing and repairing the document ---------------------------------------------------

# Every entity declaration is refused. XML, expat and feedparser are case-sensitive, so
# "<!entity" declares nothing. The lenient parser still knows HTML's names (&nbsp;, &eacute;).
ENTITY_DECLARATION = b"<!ENTITY"
REFUSED_ENTITY = b"<!REFUSED-ENTITY"
_C0_CONTROLS = bytes(sorted(set(range(0x20)) - {0x09, 0x0A, 0x0D}))
# Also without the semicolon: feedparser's lenient parser reads "&#1" so in attribute values.
_CHAR_REF_RE = re.compile(rb"&#([xX][0-9A-Fa-f]+|[0-9]+);?")
MAX_CHAR_REF_DIGITS = 8


def _defused(data: bytes) -> bytes:
    """A decoded (UTF-8) document that neither of feedparser's parsers can be attacked with.

    feedparser re-declares the entities it deems safe (any value without "&") and its lenient
    parser expands them without limit: 200 KB declaring one 100 KB entity and using it 30,000
    times takes 3 GB. So entity declarations are made inert, and the lenient parser leaves
    "&name;" as text. Control bytes and references to characters XML forbids are dropped or
    become U+FFFD: the lenient parser raises on "&#x110000;" and gives up the whole document
    on "&#xD800;".
    """
    data = data.replace(ENTITY_DECLARATION, REFUSED_ENTITY)
    data = data.translate(None, _C0_CONTROLS)
    if b"&#" in data:
        data = _CHAR_REF_RE.sub(_xml_char_ref, data)
    return data


def _xml_char_ref(match: re.Match[bytes]) -> bytes:
    """A character reference as XML allows it: as written, dropped (a control) or U+FFFD."""
    reference = match.group(1)
    hexadecimal = reference[:1] in (b"x", b"X")
    digits = (reference[1:] if hexadecimal else reference).lstrip(b"0") or b"0"
    if len(digits) > MAX_CHAR_REF_DIGITS:
        return b"&#xFFFD;"
    code = int(digits, 16 if hexadecimal else 10)
    if code in (0x9, 0xA, 0xD) or 0x20 <= code <= 0xD7FF or 0xE000 <= code <= 0xFFFD or 0x10000 <= code <= 0x10FFFF:
        # Thousands of leading zeros would trip Python's limit on int() digits in feedparser.
        return match.group(0) if len(reference) <= MAX_CHAR_REF_DIGITS else b"&#x%X;" % code
    return b"" if code < 0x20 else b"&#xFFFD;"


STRAY_BYTES_ERRORS = "aggregator-windows-1252"
STRAY_BYTES_WARNING = "bytes that are not UTF-8 in a UTF-8 document were read as windows-1252"
UTF8_NAMES = frozenset({"utf-8", "utf8"})
_CHARSET_RE = re.compile(r"""charset\s*=\s*["']?([A-Za-z0-9._-]+)""", re.I)
_XML_ENCODING_RE = re.compile(rb"""(?:\xef\xbb\xbf)?\s*<\?xml[^>]{0,200}?encoding\s*=\s*["']([A-Za-z0-9._-]+)""")
# One multi-byte UTF-8 sequence shows that the document was meant to be UTF-8.
_UTF8_SEQUENCE_RE = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}")


def _with_stray_bytes_repaired(body: bytes, headers: Mapping[str, str]) -> bytes:
    """A UTF-8 body with a few windows-1252 bytes in it, as UTF-8 throughout; else `body` itself.

    Outlets paste text from elsewhere into UTF-8 feeds. feedparser would then read the whole
    document as windows-1252 and garble every character that was written correctly. Only a
    body that is declared as UTF-8 (or not declared at all) and written mostly in it is
    repaired; plain windows-1252 mislabelled as UTF-8 is left to feedparser, which reads it right.
    """
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        return body
    charset = _CHARSET_RE.search(headers.get("content-type", ""))
    declaration = _XML_ENCODING_RE.match(body)
    declared = {charset.group(1).lower()} if charset else set()
    if declaration:
        declared.add(declaration.group(1).decode("ascii").lower())
    # UTF-16, UTF-32 and EBCDIC documents do not start with an ASCII "<" (EBCDIC letters can
    # look like UTF-8 sequences).
    ascii_markup = body.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"<"
    if not declared <= UTF8_NAMES or not ascii_markup or not _UTF8_SEQUENCE_RE.search(body):
        return body
    return body.decode("utf-8", STRAY_BYTES_ERRORS).encode("utf-8")


def _windows_1252_instead(error: UnicodeError) -> tuple[str, int]:
    """A codecs error handler: bytes that are not UTF-8, read as windows-1252."""
    if not isinstance(error, UnicodeDecodeError):
        raise error
    return error.object[error.start : error.end].decode("windows-1252", "replace"), error.end


codecs.register_error(STRAY_BYTES_ERRORS, _windows_1252_instead)

_feedparser_convert_to_utf8 = feedparser.api.convert_to_utf8


def _convert_to_utf8_defused(http_headers: Mapping[str, str], data: bytes, result: dict[str, Any]) -> bytes:
    """feedparser's own decoding to UTF-8, then `_defused`; feedparser calls it (see below)."""
    return _defused(_feedparser_convert_to_utf8(http_headers, data, result))


# feedparser.parse looks this name up in its module on every call and reads the DTD only after
# it, so `_defused` sees every document in UTF-8, whatever its encoding (UTF-16, UTF-7, EBCDIC).
feedparser.api.convert_to_utf8 = _convert_to_utf8_defused


# --- entries -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Bases:
    """Where relative URLs of one document resolve.

    Atom follows RFC 4287: xml:base, else the document's own URL. RSS defines no base, so
    relative URLs resolve the way the outlet's pages would: item links against the
    channel's <link> (a feed served from a feed host or a proxy still links to the site),
    an item's HTML against the item's link, and the feed URL only as a last resort. An
    explicit xml:base wins in both (feedparser reports it; the feed URL is not passed to
    it, so an empty base means there was none).
    """

    document: str
    atom: bool

    @classmethod
    def of(cls, url: str, site_link: str | None, version: str) -> _Bases:
        """The bases for a document fetched from `url`, of feedparser's `version`."""
        atom = version.startswith("atom")
        return cls(document=url if atom or not site_link else site_link, atom=atom)

    def for_html(self, xml_base: str, link: str | None) -> str:
        """The base for one summary or content, given its xml:base and its entry's link."""
        if xml_base:
            return _web_url(self.document, xml_base) or self.document
        return self.document if self.atom else link or self.document


def _unique_entries(raw_entries: Iterable[Mapping[str, Any]], bases: _Bases, now: datetime) -> tuple[EntryData, ...]:
    """Every entry normalized; of two entries with the same key only the first is kept."""
    seen: set[str] = set()
    entries: list[EntryData] = []
    for raw in raw_entries:
        link = _web_url(bases.document, _text(raw, "link"))
        key = _entry_key(raw, link)
        if key in seen:
            continue
        seen.add(key)
        entries.append(_entry(raw, key, link, bases, now))
    return tuple(entries)


def _entry_key(raw: Mapping[str, Any], link: str | None) -> str:
    """guid/id, else the canonical link, else a hash of title and summary.

    The guid is used as written: the feed URL is deliberately not passed to feedparser,
    which would otherwise resolve opaque guids ("12345") against it, so every key would
    change when the feed moves to a new address.
    """
    guid = _text(raw, "id").strip()
    if guid:
        return guid
    if link:
        # Canonical, so a tracking parameter that changes between polls is not a new entry.
        return canonical_link(link)
    # feedparser fills "summary" from the content when there is no description.
    basis = _text(raw, "title") + "\n" + _text(raw, "summary")
    return "sha1:" + hashlib.sha1(basis.encode("utf-8", "surrogatepass")).hexdigest()


def _entry(raw: Mapping[str, Any], key: str, link: str | None, bases: _Bases, now: datetime) -> EntryData:
    """One feedparser entry as an `EntryData`."""
    summary_detail = _field(raw, "summary_detail")
    # Without a summary_detail the "summary" is feedparser's copy of the content: leave it
    # empty rather than storing the full article twice.
    summary = _html_of(summary_detail, bases, link) if isinstance(summary_detail, Mapping) else ""
    content = _best_content(_field(raw, "content"), bases, link)
    published = _date(_field(raw, "published_parsed") or _field(raw, "updated_parsed"), now)
    updated = _date(_field(raw, "updated_parsed"), now) or published
    author = _author(raw)
    categories = _categories(_field(raw, "tags"))
    title = html_to_text(_text(raw, "title")) or _snippet(summary or content) or UNTITLED
    return EntryData(
        key=key,
        title=title,
        link=link,
        canonical_link=canonical_link(link) if link else None,
        author=author,
        summary=summary,
        content=content,
        published=published,
        updated=updated,
        categories=categories,
        content_hash=_content_hash(title, link, author, summary, content, published, categories),
        text=plain_text(summary, content),
    )


def _html_of(detail: Mapping[str, Any], bases: _Bases, link: str | None) -> str:
    """A summary or content as sanitized HTML with absolute URLs (see `_Bases`).

    Plain-text constructs (Atom type="text") are escaped, not parsed: "<b>" there is text.
    """
    value = _text(detail, "value")
    if not value:
        return ""
    if _text(detail, "type") == "text/plain":
        return html.escape(value).strip()
    return sanitize_html(value, bases.for_html(_text(detail, "base"), link))


def _best_content(contents: object, bases: _Bases, link: str | None) -> str:
    """The first HTML content (content:encoded, Atom html/xhtml), else the first of any type."""
    if not isinstance(contents, list) or not contents:
        return ""
    details = [detail for detail in contents if isinstance(detail, Mapping)]
    for detail in details:
        if _text(detail, "type") in ("text/html", "application/xhtml+xml"):
            return _html_of(detail, bases, link)
    return _html_of(details[0], bases, link) if details else ""


def _author(raw: Mapping[str, Any]) -> str | None:
    """The author's name as plain text (dc:creator lands here too), or None.

    RSS writes "desk@example.com (Name)"; Atom's name and email arrive as "Name (email)".
    feedparser's own split (author_detail) mangles addresses whose top-level domain is
    longer than four letters, so the name is taken from the text here.
    """
    text = html_to_text(_text(raw, "author"))
    if "@" not in text:  # both forms hold an address
        return text or None
    for pattern in (_EMAIL_THEN_NAME_RE, _NAME_THEN_EMAIL_RE):
        match = pattern.fullmatch(text)
        if match:
            return match.group("name").strip() or None
    return text or None


def _categories(tags: object) -> tuple[str, ...]:
    """Category terms as plain text, in document order, without repeats (ignoring case)."""
    if not isinstance(tags, list):
        return ()
    seen: set[str] = set()
    terms: list[str] = []
    for tag in tags:
        if not isinstance(tag, Mapping):
            continue
        term = html_to_text(_text(tag, "term") or _text(tag, "label"))
        if term and term.casefold() not in seen:
            seen.add(term.casefold())
            terms.append(term)
    return tuple(terms)


def _date(value: object, now: datetime) -> datetime | None:
    """feedparser's UTC struct_time as an aware datetime, or None when implausible."""
    if not isinstance(value, tuple) or len(value) < 6:
        return None
    try:
        year, month, day, hour, minute, second = map(int, value[:6])
        moment = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except (TypeError, ValueError, OverflowError):
        return None
    if moment < EARLIEST_DATE or moment > now + MAX_FUTURE:
        return None
    return moment


def plain_text(summary_html: str, content_html: str) -> str:
    """An entry's plain-text excerpt (EntryData.text): its summary, else the start of its content."""
    return _excerpt(summary_html, TEXT_CHARS) or _excerpt(content_html, TEXT_CHARS)


def _snippet(html_text: str) -> str:
    """About the first TITLE_FROM_SUMMARY_CHARS characters of an HTML fragment as text."""
    return _excerpt(html_text, TITLE_FROM_SUMMARY_CHARS)


def _excerpt(html_text: str, limit: int) -> str:
    """About the first `limit` characters of an HTML fragment as text, cut at a word."""
    if not html_text:
        return ""
    source = html_text[: max(SNIPPET_SOURCE_CHARS, limit * 4)]
    if source.rfind("<") > source.rfind(">"):  # a tag cut off at the end: the regex scans it all
        source = _PARTIAL_TAG_AT_END_RE.sub("", source)
    text = html_to_text(source)
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit)
    return text[: cut if cut > 0 else limit].rstrip() + "…"


def _content_hash(
    title: str,
    link: str | None,
    author: str | None,
    summary: str,
    content: str,
    published: datetime | None,
    categories: tuple[str, ...],
) -> str:
    """A digest of everything a reader sees, so the store can skip unchanged entries.

    It is the SHA-256 of the UTF-8 of json.dumps([title, link, author, summary, content,
    published, [categories...]], ensure_ascii=False), written out piece by piece (see
    `_json_string`): stored hashes must never change.
    """
    digest = hashlib.sha256(b"[")
    for field in (title, link, author, summary, content, published.isoformat() if published else None):
        digest.update(b"null, " if field is None else _json_string(field) + b", ")
    digest.update(b"[" + b", ".join([_json_string(category) for category in categories]) + b"]]")
    return digest.hexdigest()


# Control characters JSON writes as \u00XX; "\t", "\n" and "\r" are escaped by `_json_string` itself.
_JSON_CONTROLS = bytes(sorted(set(range(0x20)) - {0x09, 0x0A, 0x0D}))


def _json_string(text: str) -> bytes:
    """The UTF-8 of json.dumps(text, ensure_ascii=False), 2.5 times as fast for the usual text.

    The C encoder escapes text one character at a time; what feeds hold (long HTML full of
    quotes, no control characters but tabs and line breaks) is escaped here by a few bytes
    replacements. UTF-8 sequences have no byte below 0x80, so escaping the bytes is escaping
    the text. Lone surrogates pass through, as json.dumps leaves them.
    """
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw.translate(None, _JSON_CONTROLS)) != len(raw):
        return json.dumps(text, ensure_ascii=False).encode("utf-8", "surrogatepass")
    escaped = raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
    return b'"' + escaped.replace(b"\n", b"\\n").replace(b"\r", b"\\r").replace(b"\t", b"\\t") + b'"'


# --- feed-level values -----------------------------------------------------------------------


def _hints(feed: Mapping[str, Any], body: bytes) -> FeedHints:
    """The feed's own polling hints: ttl, sy:updatePeriod/Frequency, skipHours, skipDays."""
    return FeedHints(
        ttl_minutes=_positive_int(_text(feed, "ttl")),
        update_period_seconds=_update_period_seconds(feed),
        skip_hours=_skip_hours(body) if "skiphours" in feed else frozenset(),
        skip_days=_skip_days(body) if "skipdays" in feed else frozenset(),
    )


def _positive_int(text: str) -> int | None:
    """A hint's number, or None for anything that is not a sane positive integer."""
    text = text.strip()
    if not text.isdigit() or len(text) > 9:
        return None
    number = int(text)
    return number if number > 0 else None


def _update_period_seconds(feed: Mapping[str, Any]) -> int | None:
    """sy:updatePeriod divided by sy:updateFrequency, in seconds (RSS 1.0 syndication module)."""
    period_name = _text(feed, "sy_updateperiod").strip().lower()
    frequency_text = _text(feed, "sy_updatefrequency")
    if not period_name and not frequency_text:
        return None
    period = UPDATE_PERIOD_SECONDS.get(period_name or "daily")
    if period is None:
        return None
    frequency = _positive_int(frequency_text) or 1
    return max(1, period // frequency)


def _skip_hours(body: bytes) -> frozenset[int]:
    """Hours (0-23, UTC) from <skipHours>; feedparser keeps only the last <hour>, so we look.

    Called only when feedparser saw the element, so a feed without it costs nothing; 24,
    which some feeds use for midnight, counts as 0.
    """
    block = _SKIP_HOURS_RE.search(body)
    if block is None:
        return frozenset()
    hours = {int(match) for match in _HOUR_RE.findall(block.group(1))}
    return frozenset(hour % 24 for hour in hours if 0 <= hour <= 24)


def _skip_days(body: bytes) -> frozenset[str]:
    """Lower-case day names from <skipDays>, for the same reason as `_skip_hours`."""
    block = _SKIP_DAYS_RE.search(body)
    if block is None:
        return frozenset()
    days = {match.decode("ascii").lower() for match in _DAY_RE.findall(block.group(1))}
    return frozenset(days & DAY_NAMES)


def _warning(exception: object, headers: Mapping[str, str], body: bytes) -> str | None:
    """A short sentence for a feed that was read despite a problem, or None.

    Two of feedparser's complaints are left out because they are noise for an operator: a
    missing Content-Type, and RFC 3023's rule that text/xml without a charset is us-ascii.
    """
    if exception is None:
        return None
    if isinstance(exception, SAXParseException) and ENTITY_DECLARATION in body:
        text = "XML entity declarations refused for safety (references left as text); read with the lenient parser"
    elif isinstance(exception, SAXParseException):
        text = (
            f"malformed XML ({exception.getMessage()} at line {exception.getLineNumber()}); "
            "read with the lenient parser"
        )
    else:
        text = str(exception)
        if type(exception).__name__ == "NonXMLContentType" and "content-type" not in headers:
            return None
        if "declared as us-ascii" in text:
            return None
    return text[:WARNING_CHARS] or type(exception).__name__


# --- not a feed ----------------------------------------------------------------------------


def _not_a_feed_error(body: bytes, url: str, headers: Mapping[str, str], exception: object) -> ParseError:
    """The error for a body in which feedparser found neither a feed version nor entries."""
    head = body[:HTML_SNIFF_BYTES]
    content_type = headers.get("content-type", "").lower()
    if _HTML_SNIFF_RE.search(head) or content_type.startswith("text/html"):
        links = _feed_links(body[:HTML_HEAD_BYTES], url)
        message = "not a feed: the server sent an HTML page"
        if links:
            message += "; it links to these feeds: " + ", ".join(links)
        return NotAFeedError(message, feed_links=links)
    return ParseError("not a feed: " + _reason(head, exception))


def _reason(head: bytes, exception: object) -> str:
    """Why a non-HTML body is not a feed, in a few words."""
    if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith((b"{", b"[")):
        return "the body is JSON, not RSS or Atom"
    if isinstance(exception, SAXParseException):
        return (
            f"no RSS or Atom elements found, and the XML is malformed "
            f"({exception.getMessage()} at line {exception.getLineNumber()})"
        )
    if isinstance(exception, (LookupError, UnicodeError)):
        return "the document is too malformed to read"
    return "no RSS or Atom elements found"


def _feed_links(html_head: bytes, url: str) -> tuple[str, ...]:
    """Absolute URLs of the feeds an HTML page advertises with <link rel="alternate">."""
    finder = _FeedLinkFinder()
    finder.feed(html_head.decode("utf-8", "replace"))
    finder.close()
    links: list[str] = []
    for href in finder.hrefs:
        link = _web_url(url, href)
        if link and link not in links:
            links.append(link)
    return tuple(links)


class _FeedLinkFinder(HTMLParser):
    """Collects the href of every <link rel="alternate"> with a feed media type."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "link":
            return
        values = {name: value or "" for name, value in attrs}
        rels = values.get("rel", "").lower().split()
        media_type = values.get("type", "").split(";")[0].strip().lower()
        if "alternate" in rels and media_type in FEED_LINK_TYPES and values.get("href"):
            self.hrefs.append(values["href"])
