"""A fast reader for the common feed: well-formed UTF-8 RSS 2.0 or Atom 1.0, read with lxml.

`read_simple_feed` returns the same values feedparser would for the fields `parse` reads (a
plain dict of feedparser's shape), or None whenever the document is anything but simple, so
that feedparser reads it. It is about ten times faster than feedparser on a typical feed and
must never disagree with it: every rule here mirrors one of feedparser's (6.0), and whatever
we have not checked against feedparser (an unknown element, a DOCTYPE, an encoding other than
UTF-8, xhtml content, a repeated element) means None rather than a guess. It knows nothing
of HTTP beyond the content type, nor of sanitizing or normalizing: `parse` does that.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import urljoin, urlsplit

from lxml import etree  # type: ignore[import-untyped]  # lxml ships no type hints

# feedparser's date parser, passed in by `parse` (feedparser lives there), so dates are identical.
DateParser = Callable[[str], Any]

_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, recover=False, huge_tree=False, remove_comments=True, remove_pis=True
)

ATOM_NS = "http://www.w3.org/2005/Atom"
_ATOM_FEED = "{" + ATOM_NS + "}feed"
_XML_NS = "{http://www.w3.org/XML/1998/namespace}"
_XML_BASE = _XML_NS + "base"
_XML_LANG = _XML_NS + "lang"

# Content types feedparser reads as UTF-8 without a complaint `parse` would show (text/html and
# text/plain give "declared as us-ascii", which `parse` leaves out); others leave a warning to report.
_QUIET_CONTENT_TYPES = frozenset(
    {"application/xml", "text/xml", "application/rss+xml", "application/atom+xml", "application/x-rss+xml"}
    | {"text/html", "text/plain"}
)
_CHARSET_RE = re.compile(r"""charset\s*=\s*["']?([A-Za-z0-9._-]+)""", re.I)
_XML_DECLARATION_RE = re.compile(rb"""\A(?:\xef\xbb\xbf)?<\?xml[^>]{0,200}?\?>""")
_ENCODING_RE = re.compile(rb"""encoding\s*=\s*["']([A-Za-z0-9._-]+)""")

# feedparser's own table of namespaces: elements in those mapped to "" are read as RSS/Atom
# elements, the others under feedparser's standard prefix (whatever prefix the document uses).
_NAMESPACE_PREFIXES = {
    **dict.fromkeys(
        (
            "http://backend.userland.com/rss",
            "http://blogs.law.harvard.edu/tech/rss",
            "http://purl.org/rss/1.0/",
            "http://my.netscape.com/rdf/simple/0.9/",
            "http://example.com/newformat#",
            "http://example.com/necho",
            "http://purl.org/echo/",
            "uri/of/echo/namespace#",
            "http://purl.org/pie/",
            "http://purl.org/atom/ns#",
            "http://www.w3.org/2005/atom",
            "http://purl.org/rss/1.0/modules/rss091#",
        ),
        "",
    ),
    "http://purl.org/rss/1.0/modules/content/": "content",
    "http://purl.org/dc/elements/1.1/": "dc",
    "http://purl.org/dc/terms/": "dcterms",
    "http://search.yahoo.com/mrss/": "media",
    "http://search.yahoo.com/mrss": "media",
    "http://wellformedweb.org/commentapi/": "wfw",
    "http://purl.org/rss/1.0/modules/slash/": "slash",
    "http://purl.org/rss/1.0/modules/syndication/": "sy",
    "http://rssnamespace.org/feedburner/ext/1.0": "feedburner",
    "http://www.itunes.com/dtds/podcast-1.0.dtd": "itunes",
    "http://www.georss.org/georss": "georss",
    "http://www.w3.org/1999/xhtml": "xhtml",
}
# Standard prefixes of the other namespaces feedparser knows: an element in one of those, or in an
# unknown namespace under one of these prefixes, may have a handler, so it is not simple.
_KNOWN_PREFIXES = frozenset(
    {"admin", "ag", "annotate", "audio", "blogchannel", "cc", "co", "content", "cp", "creativecommons", "dc"}
    | {"dcterms", "email", "ev", "feedburner", "fm", "foaf", "geo", "georss", "gml", "icbm", "image", "itunes"}
    | {"l", "media", "pingback", "prism", "psc", "rdf", "rdfs", "ref", "reqv", "search", "slash", "soap", "ss"}
    | {"str", "sub", "sy", "szf", "taxo", "thr", "ti", "trackback", "wfw", "wiki", "xhtml", "xlink", "xml"}
)
# Root namespaces that would make feedparser call the document something else.
_VERSION_NAMESPACES = frozenset({"http://purl.org/rss/1.0/", "http://my.netscape.com/rdf/simple/0.9/"})

# Leaf elements whose values feedparser stores where `parse` never looks.
_FEED_IGNORED = frozenset(
    {"description", "language", "copyright", "managingeditor", "webmaster", "pubdate", "lastbuilddate"}
    | {"category", "generator", "docs", "subtitle", "rights", "icon", "logo", "updated", "published"}
    | {"dc_language", "dc_rights", "dc_date", "feedburner_info", "feedburner_browserfriendly", "sy_updatebase"}
)
# Elements feedparser has no handler for, whose text it stores under their own name.
_FEED_PLAIN = frozenset({"ttl", "sy_updateperiod", "sy_updatefrequency"})
_ENTRY_IGNORED = frozenset(
    {"comments", "enclosure", "wfw_commentrss", "wfw_comment", "slash_comments", "feedburner_origlink"}
    | {"media_content", "rights"}
)
_PERSON_CHILDREN = frozenset({"name", "email", "uri"})
_IMAGE_CHILDREN = frozenset({"url", "title", "link", "width", "height", "description"})
_TEXT_TYPES = {"text": "text/plain", "plain": "text/plain", "html": "text/html", "xhtml": "application/xhtml+xml"}
_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_PUBLISHED = frozenset({"pubdate", "published", "issued"})
_UPDATED = frozenset({"updated", "modified", "lastbuilddate", "dc_date"})
_AUTHORS = frozenset({"author", "dc_creator"})

_URI_FIXER_RE = re.compile("^([A-Za-z][A-Za-z0-9+-.]*://)(/*)(.*?)")
# What urljoin changes in an absolute URL it rebuilds (see `join_url`).
_REBUILT_URL_RE = re.compile(r"[\t\n\r#;]")  # and a "?" at the end
_LINK_ENTITY_RE = re.compile("&([A-Za-z0-9_]+);")
_UNDEFINED_CP1252 = frozenset({0x81, 0x8D, 0x8F, 0x90, 0x9D})
# feedparser maps C1 controls to the characters windows-1252 has in their place.
_CP1252 = {code: bytes([code]).decode("windows-1252") for code in range(0x80, 0xA0) if code not in _UNDEFINED_CP1252}


class _NotSimpleError(Exception):
    """The document has something only feedparser knows how to read."""


def read_simple_feed(body: bytes, headers: Mapping[str, str], *, parse_date: DateParser) -> dict[str, Any] | None:
    """The feedparser-shaped result for a simple document, or None to let feedparser read it.

    `headers` are the lower-cased response headers; `parse_date` is feedparser's date parser.
    Simple means: UTF-8 (declared so or not at all, here and in the content type), no DOCTYPE
    or entity declaration, well-formed, <rss version="2.0"> or an Atom 1.0 <feed>, and only
    elements whose handling by feedparser is mirrored here.
    """
    if not _is_quiet_utf8(body, headers) or "content-location" in headers:
        return None
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        return None
    try:
        root = etree.fromstring(body, _PARSER)
    except etree.XMLSyntaxError:
        return None
    # xml:base is always written so: the prefix xml cannot be bound to another namespace, nor
    # another prefix to it. Without it, every base stays empty and need not be tracked.
    reader = _Reader(parse_date, track_bases=b"xml:base" in body)
    try:
        if root.tag == "rss" and root.get("version") == "2.0":
            return reader.rss(root)
        if root.tag == _ATOM_FEED:
            return reader.atom(root)
    except _NotSimpleError:
        return None
    return None


def _is_quiet_utf8(body: bytes, headers: Mapping[str, str]) -> bool:
    """Whether feedparser would read `body` as UTF-8 without a warning `parse` reports."""
    content_type = headers.get("content-type")
    if content_type is not None:
        media_type = content_type.split(";", 1)[0].strip().lower()
        charset = _CHARSET_RE.search(content_type)
        if media_type not in _QUIET_CONTENT_TYPES or (charset and charset.group(1).lower() != "utf-8"):
            return False
    declaration = _XML_DECLARATION_RE.match(body)
    if declaration:
        encoding = _ENCODING_RE.search(declaration.group(0))
        return encoding is None or encoding.group(1).lower() == b"utf-8"
    return body.lstrip()[:1] == b"<" and not body.startswith(b"\xef\xbb\xbf")


def join_url(base: str, url: str) -> str:
    """urllib's urljoin(base, url), with a quick answer for the commonest case: an absolute link.

    urljoin returns an http(s) URL with a host as it is, or rebuilt from its parts, which
    changes only an empty query or fragment, path parameters, or the tabs and line breaks
    urlsplit drops; a link without those is returned without joining. Raises ValueError
    where urljoin would.
    """
    if base and url.startswith(("https://", "http://")) and not url.endswith("?") and not _REBUILT_URL_RE.search(url):
        urlsplit(base)  # for its ValueError (urlsplit remembers its recent answers)
        if urlsplit(url).netloc:
            return url
    return urljoin(base, url)


@lru_cache(maxsize=1024)
def _urljoin(base: str, uri: str) -> str:
    """feedparser's URL join: extra slashes after "scheme://" dropped, "" when unjoinable."""
    if ":///" in uri:
        uri = _URI_FIXER_RE.sub(r"\1\3", uri)
    try:
        return join_url(base, uri)
    except ValueError:
        return ""


def _value(text: str | None) -> str:
    """An element's text as feedparser stores it (after `_resolved` for URL elements)."""
    value = (text or "").strip()
    return value if value.isascii() else _repaired(value)


def _repaired(value: str) -> str:
    """feedparser's repairs: UTF-8 read as latin-1 is undone, C1 controls become windows-1252."""
    try:
        return value.encode("iso-8859-1").decode("utf-8").translate(_CP1252)
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value.translate(_CP1252)


class _Reader:
    """One document's walk, tracking xml:base the way feedparser does (quirks included)."""

    def __init__(self, parse_date: DateParser, *, track_bases: bool) -> None:
        self.parse_date = parse_date
        self.track_bases = track_bases
        self.base = ""
        self.bases: list[str] = []

    # --- structure ---------------------------------------------------------------------

    def rss(self, root: Any) -> dict[str, Any]:
        if _VERSION_NAMESPACES & set(root.nsmap.values()):
            raise _NotSimpleError
        self.enter(root)
        channels = list(root)
        if len(channels) != 1 or channels[0].tag != "channel":
            raise _NotSimpleError
        feed, entries = self.feed(channels[0], "item")
        self.leave()
        return {"version": "rss20", "feed": feed, "entries": entries}

    def atom(self, root: Any) -> dict[str, Any]:
        if _VERSION_NAMESPACES & set(root.nsmap.values()):
            raise _NotSimpleError
        feed, entries = self.feed(root, "entry")
        return {"version": "atom10", "feed": feed, "entries": entries}

    def feed(self, container: Any, entry_key: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The channel (or Atom feed) and its entries."""
        self.enter(container)
        feed: dict[str, Any] = {}
        entries: list[dict[str, Any]] = []
        seen: set[str] = set()
        for element in container:
            key = self.key(element)
            if key == entry_key:
                entries.append(self.entry(element))
            elif key == "image":
                self.image(element)
            elif key in ("author", "contributor") and len(element):
                self.person(element)
            else:
                self.feed_element(element, key, feed, seen)
        self.leave()
        return feed, entries

    def feed_element(self, element: Any, key: str | None, feed: dict[str, Any], seen: set[str]) -> None:
        attrs = self.enter(element)
        if len(element):
            raise _NotSimpleError
        if key == "link" and ("href" in attrs or attrs.get("url") or attrs.get("uri")):
            self.link(element, attrs, feed, in_entry=False)
        elif key in ("title", "link", "id", "guid") or key in _FEED_PLAIN:
            key = "id" if key == "guid" else key
            if key in seen:
                raise _NotSimpleError
            seen.add(key)
            if key == "title":
                self.text_construct(attrs)
                feed["title"] = _value(element.text)
            elif key == "link":
                self.link(element, attrs, feed, in_entry=False)
            elif key == "id":
                self.guid(element, attrs, feed)
            elif attrs:  # feedparser stores the attributes of an unknown element instead of its text
                raise _NotSimpleError
            else:
                feed[key] = _value(element.text)
        elif key is not None and key not in _FEED_IGNORED:
            raise _NotSimpleError
        self.leave()

    def entry(self, item: Any) -> dict[str, Any]:
        self.enter(item)
        entry: dict[str, Any] = {}
        seen: set[str] = set()
        has_content = False
        for element in item:
            key = self.key(element)
            if key == "category":
                self.category(element, entry)
                continue
            if key == "author" and len(element):
                if "author" in seen:
                    raise _NotSimpleError
                seen.add("author")
                entry["author"] = self.person(element)
                continue
            attrs = self.enter(element)
            if len(element):
                raise _NotSimpleError
            if key is None:  # an element of a namespace feedparser does not know: stored aside
                self.leave()
                continue
            if key == "link" and ("href" in attrs or attrs.get("url") or attrs.get("uri")):
                self.link(element, attrs, entry, in_entry=True)
                self.leave()
                continue
            # One of each: a repeat (or an author and a dc:creator) is feedparser's to resolve.
            slot = "author" if key in _AUTHORS else "id" if key == "guid" else key
            if slot in seen:
                raise _NotSimpleError
            seen.add(slot)
            if key == "title":
                self.text_construct(attrs)
                entry["title"] = _value(element.text)
            elif key == "link":
                self.link(element, attrs, entry, in_entry=True)
            elif key in ("id", "guid"):
                self.guid(element, attrs, entry)
            elif key in ("description", "summary"):
                if "summary" in entry and not has_content:
                    raise _NotSimpleError  # feedparser would read it as content
                content_type = self.text_construct(attrs, "text/html" if key == "description" else "text/plain")
                value = _value(element.text)
                entry["summary"] = value
                entry["summary_detail"] = {"type": content_type, "value": value, "base": self.base}
            elif key in ("content_encoded", "content"):
                has_content = True
                content_type = self.text_construct(attrs, "text/html" if key == "content_encoded" else "text/plain")
                value = _value(element.text)
                entry.setdefault("content", []).append({"type": content_type, "value": value, "base": self.base})
                entry.setdefault("summary", value)
            elif key in _PUBLISHED:
                entry["published_parsed"] = self.parse_date(_value(element.text))
            elif key in _UPDATED:
                entry["updated_parsed"] = self.parse_date(_value(element.text))
            elif key in _AUTHORS:
                entry["author"] = _value(element.text)
            elif key == "media_thumbnail":
                if (element.text or "").strip():
                    raise _NotSimpleError
            elif key not in _ENTRY_IGNORED:
                raise _NotSimpleError
            self.leave()
        self.leave()
        return entry

    def image(self, image: Any) -> None:
        """The channel's <image>: checked to hold only what feedparser keeps inside it."""
        self.enter(image)
        for element in image:
            if element.tag not in _IMAGE_CHILDREN or len(element):
                raise _NotSimpleError
            self.enter(element)
            self.leave()
        self.leave()

    def person(self, person: Any) -> str:
        """An Atom author as feedparser writes it: "Name (email)", the name, the email or ""."""
        self.enter(person)
        if (person.text or "").strip():
            raise _NotSimpleError
        values: dict[str, str] = {}
        for element in person:
            key = self.key(element)
            if key not in _PERSON_CHILDREN or key in values or len(element) or (element.tail or "").strip():
                raise _NotSimpleError
            self.enter(element)
            values[key] = _value(element.text)
            self.leave()
        self.leave()
        name, email = values.get("name"), values.get("email")
        if name and email:
            return f"{name} ({email})"
        return name or email or ""

    # --- fields ------------------------------------------------------------------------

    def link(self, element: Any, attrs: dict[str, str], context: dict[str, Any], *, in_entry: bool) -> None:
        """<link>text</link> (RSS) or <link href rel type/> (Atom), as feedparser sets "link"."""
        href = attrs.get("url", attrs.get("uri", attrs.get("href")))
        if href:
            attrs["href"] = href
        if "href" in attrs:
            rel = attrs.get("rel", "alternate")
            content_type = attrs.get("type", "application/atom+xml" if rel == "self" else "text/html")
            if rel == "alternate" and _TEXT_TYPES.get(content_type, content_type) in _HTML_TYPES:
                context["link"] = self.resolved(attrs["href"])
            return
        value = (element.text or "").strip()
        value = _value(self.resolved(value))
        if in_entry:
            value = value.replace("&amp;", "&")
        context["link"] = _LINK_ENTITY_RE.sub(r"&\g<1>", value)

    def guid(self, element: Any, attrs: dict[str, str], context: dict[str, Any]) -> None:
        """RSS <guid> or Atom <id>; a permalink (the default) is also the link when there is none."""
        is_link = attrs.get("ispermalink", "true") == "true"
        value = (element.text or "").strip()
        if is_link and value:
            value = _urljoin(self.base, value)
        value = _value(value)
        context["id"] = value
        if is_link:
            context.setdefault("link", value)

    def category(self, element: Any, context: dict[str, Any]) -> None:
        """feedparser's _start_category/_end_category: attributes first, then the text."""
        attrs = self.enter(element)
        if len(element):
            raise _NotSimpleError
        tags = context.setdefault("tags", [])
        _add_tag(tags, attrs.get("term"), attrs.get("scheme", attrs.get("domain")), attrs.get("label"))
        value = _value(element.text)
        if value:
            if tags and not tags[-1]["term"]:
                tags[-1]["term"] = value
            else:
                _add_tag(tags, value, None, None)
        self.leave()

    def text_construct(self, attrs: dict[str, str], default: str = "text/plain") -> str:
        """The content type feedparser gives a title, summary or content; only text and HTML are simple."""
        if set(attrs) - {"type", "xml:lang", "xml:base"}:
            raise _NotSimpleError
        content_type = attrs.get("type", default)
        content_type = _TEXT_TYPES.get(content_type, content_type)
        if content_type not in ("text/plain", "text/html") or ("type" in attrs and default == "text/html"):
            raise _NotSimpleError  # xhtml, base64 and friends; RSS with a type attribute is guessed at
        return content_type

    def resolved(self, uri: str) -> str:
        """A link or permalink guid resolved as feedparser does, against the current xml:base."""
        return _urljoin(self.base, uri) if uri else uri

    # --- names, attributes and xml:base ------------------------------------------------

    @staticmethod
    def key(element: Any) -> str | None:
        """feedparser's name for an element ("pubdate", "content_encoded"); None if unknown to it."""
        tag = element.tag
        if not isinstance(tag, str):
            raise _NotSimpleError
        if tag[0] != "{":
            return tag.lower()
        namespace, _, local = tag[1:].partition("}")
        prefix = _NAMESPACE_PREFIXES.get(namespace.lower())
        if prefix is not None:
            return f"{prefix}_{local.lower()}" if prefix else local.lower()
        given = element.prefix
        if not given or given.lower() in _KNOWN_PREFIXES or "backend.userland.com/rss" in namespace.lower():
            raise _NotSimpleError
        return None if len(element) == 0 else "?"

    def enter(self, element: Any) -> dict[str, str]:
        """An element's attributes as feedparser sees them, and its xml:base applied."""
        attrs: dict[str, str] = {}
        for name, value in element.items():
            if name[0] == "{":
                if name == _XML_BASE:
                    attrs["xml:base"] = value
                elif name == _XML_LANG:
                    attrs["xml:lang"] = value
                else:
                    raise _NotSimpleError
                continue
            lower = name.lower()
            if lower == "base" or lower in attrs:
                raise _NotSimpleError
            attrs[lower] = value.lower() if lower in ("rel", "type") else value
        if self.track_bases:
            self.push_base(attrs.get("xml:base"))
        return attrs

    def push_base(self, declared: str | None) -> None:
        """feedparser's unknown_starttag: the base is joined to every element's (or kept)."""
        candidate = declared or self.base
        if self.base:
            joined = _urljoin(self.base, candidate)
            if joined.strip().split(":", 1)[0] not in ("http", "https"):
                raise _NotSimpleError  # feedparser's list of acceptable schemes is longer than ours
            self.base = joined
        else:
            self.base = _urljoin("", candidate)
        self.bases.append(self.base)

    def leave(self) -> None:
        """feedparser's unknown_endtag: the parent's base comes back only if it was not empty."""
        if self.track_bases:
            self.bases.pop()
            if self.bases and self.bases[-1]:
                self.base = self.bases[-1]


def _add_tag(tags: list[dict[str, str | None]], term: str | None, scheme: str | None, label: str | None) -> None:
    """feedparser's _add_tag: a category unless it is empty or already listed."""
    if not term and not scheme and not label:
        return
    tag = {"term": term, "scheme": scheme, "label": label}
    if tag not in tags:
        tags.append(tag)
