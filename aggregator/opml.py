"""OPML: bring the feed list over from another reader, and hand ours to them.

`import_opml` reads an OPML file (what Miniflux, FreshRSS, newsboat, Feedly and the rest export)
and appends its feeds to feeds.yaml through `feeds_file`: an outline with an ``xmlUrl`` is a feed;
the category outlines around it (joined with "/", as newsboat does) and its OPML 2.0 ``category``
attribute become its tags; a feed already in feeds.yaml (same URL, compared canonically) is skipped
and reported; names are unique slugs of the titles. A hostile file (entity declarations, a huge
file, something that is not OPML) is refused with a sentence that says why, before anything is
written.

`opml_document` writes OPML 2.0 that those readers import: one outline per feed (``type="rss"``,
``text``, ``title``, ``xmlUrl``, ``htmlUrl`` when known), feeds with tags inside a category outline
named for their first tag (the only category Miniflux and FreshRSS keep, the tag newsboat gives),
every tag in the ``category`` attribute, and the feed's name in an ``aggregator:name`` attribute so
that exporting and importing again gives the same feeds. The output is deterministic (no date), so
the renderer can rewrite ``opml.xml`` only when the feed list changes.

Uses lxml with a parser that resolves no external entity and fetches nothing. Knows nothing of
HTTP or SQLite.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from lxml import etree  # type: ignore[import-untyped]  # lxml ships no type hints

from aggregator import PROJECT_URL
from aggregator.config import load_settings
from aggregator.errors import ConfigError
from aggregator.feeds_file import add_feeds, feed_url_key, is_feed_name, name_for
from aggregator.models import FeedConfig

MAX_OPML_BYTES = 5 * 1024 * 1024
XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'
NAMESPACE = f"{PROJECT_URL}/opml"
NAME_ATTRIBUTE = f"{{{NAMESPACE}}}name"
# What Miniflux ("All") and FreshRSS ("Uncategorized") call "no category": not a tag.
DEFAULT_CATEGORIES = frozenset({"all", "uncategorized", "uncategorised"})
FEED_ROOTS = frozenset({"rss", "feed", "RDF"})
WEB_SCHEMES = frozenset({"http", "https"})
# Declarations of entities, in the encodings an XML document may come in: refused before parsing.
_ENTITY_MARKERS = tuple("<!ENTITY".encode(codec) for codec in ("utf-8", "utf-16-le", "utf-16-be"))
_POSITION_SUFFIX_RE = re.compile(r",? line \d+, column \d+$")
_NOT_XML_CHARS_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, remove_comments=True, remove_pis=True
)


@dataclass(frozen=True)
class Outline:
    """One feed outline as read from an OPML file."""

    url: str
    title: str | None = None
    tags: tuple[str, ...] = ()
    name: str | None = None  # from our own aggregator:name attribute


@dataclass(frozen=True)
class Skipped:
    """An outline that was not added, and why."""

    url: str
    title: str | None
    reason: str


@dataclass(frozen=True)
class ImportPlan:
    """What an import adds to feeds.yaml (or would, with --dry-run) and what it leaves out."""

    added: tuple[FeedConfig, ...] = ()
    skipped: tuple[Skipped, ...] = field(default=())


# -- import -----------------------------------------------------------------------------------


def import_opml(config_path: Path | None, source: str, data: bytes, dry_run: bool = False) -> ImportPlan:
    """Add the feeds of the OPML document `data` (read from `source`) to the config file; see the module."""
    settings = load_settings(config_path)  # a broken feeds.yaml is reported before anything else
    plan = plan_import(read_outlines(data, source), settings.feeds)
    if plan.added and not dry_run:
        add_feeds(settings.path, plan.added)
    return plan


def plan_import(outlines: Sequence[Outline], existing: Sequence[FeedConfig]) -> ImportPlan:
    """Which outlines become feeds (named, tagged) and which are skipped; an outline listed twice counts once."""
    known = {feed_url_key(feed.url): feed.name for feed in existing}
    taken = [feed.name for feed in existing]
    added: list[FeedConfig] = []
    skipped: list[Skipped] = []
    for outline in _merged(outlines):
        reason = _skip_reason(outline, known)
        if reason:
            skipped.append(Skipped(outline.url, outline.title, reason))
            continue
        name = (
            outline.name if outline.name and _free(outline.name, taken) else name_for(outline.title, outline.url, taken)
        )
        taken.append(name)
        title = outline.title if outline.title != name else None
        added.append(FeedConfig(name=name, url=outline.url, title=title, tags=outline.tags))
    return ImportPlan(tuple(added), tuple(skipped))


def _merged(outlines: Sequence[Outline]) -> list[Outline]:
    """One outline per feed URL, in first-seen order, with the tags of every listing of it."""
    merged: dict[str, Outline] = {}
    for outline in outlines:
        key = feed_url_key(outline.url)
        first = merged.get(key)
        if first is None:
            merged[key] = outline
        else:
            merged[key] = replace(first, tags=_unique((*first.tags, *outline.tags)))
    return list(merged.values())


def _skip_reason(outline: Outline, known: Mapping[str, str]) -> str | None:
    parts = urlsplit(outline.url)
    if parts.scheme.lower() not in WEB_SCHEMES or not parts.netloc:
        return "not an http(s) URL"
    name = known.get(feed_url_key(outline.url))
    return f"already in feeds.yaml as {name!r}" if name else None


def _free(name: str, taken: Sequence[str]) -> bool:
    return is_feed_name(name) and name.lower() not in {other.lower() for other in taken}


# -- reading OPML -----------------------------------------------------------------------------


def read_outlines(data: bytes, source: str) -> list[Outline]:
    """The feed outlines of an OPML document, in document order; a ConfigError naming `source` if it is not one."""
    root = _parsed(data, source)
    local = etree.QName(root).localname
    if local != "opml":
        hint = "it is a feed, not a list of feeds: add it with `aggregator add URL`" if local in FEED_ROOTS else ""
        raise ConfigError(source, "", f"is not an OPML file (its root element is <{local}>, not <opml>)", hint)
    body = next((child for child in root if etree.QName(child).localname == "body"), None)
    if body is None:
        raise ConfigError(source, "", "is an OPML file without a <body>, so it lists no feeds")
    outlines = [_outline(element) for element in _feed_elements(body)]
    if not outlines:
        raise ConfigError(source, "", "lists no feeds (no <outline> with an xmlUrl attribute)")
    return outlines


def _parsed(data: bytes, source: str) -> etree._Element:
    if len(data) > MAX_OPML_BYTES:
        raise ConfigError(
            source, "", f"is larger than {MAX_OPML_BYTES // (1024 * 1024)} MiB, too large for an OPML file"
        )
    refusal = "declares XML entities, which an OPML file never needs (refused: entity expansion is a known attack)"
    if any(marker in data for marker in _ENTITY_MARKERS):
        raise ConfigError(source, "", refusal)
    try:
        root = etree.fromstring(data, _PARSER)
    except etree.XMLSyntaxError as error:
        line, column = error.position
        where = f"line {line}, column {column}"
        problem = _POSITION_SUFFIX_RE.sub("", str(error.msg))
        raise ConfigError(source, where, f"is not well-formed XML: {problem}", "is it an OPML file?") from None
    dtd = root.getroottree().docinfo.internalDTD
    if dtd is not None and any(True for _ in dtd.iterentities()):
        raise ConfigError(source, "", refusal)
    return root


def _feed_elements(body: etree._Element) -> Iterator[etree._Element]:
    for element in body.iter():
        if (
            isinstance(element.tag, str)
            and etree.QName(element).localname == "outline"
            and _attribute(element, "xmlUrl")
        ):
            yield element


def _attribute(element: etree._Element, name: str) -> str:
    """An un-namespaced attribute in any letter case (xmlUrl, xmlurl, XMLURL), whitespace collapsed."""
    wanted = name.lower()
    for key, value in element.attrib.items():
        if not str(key).startswith("{") and str(key).lower() == wanted:
            return " ".join(str(value).split())
    return ""


def _outline(element: etree._Element) -> Outline:
    url = _attribute(element, "xmlUrl")
    title = _attribute(element, "text") or _attribute(element, "title")
    name = element.get(NAME_ATTRIBUTE)
    return Outline(
        url=url,
        title=title if title and title != url else None,
        tags=_unique((*_category_path(element), *_category_attribute(element))),
        name=name.strip() if name else None,
    )


def _category_path(element: etree._Element) -> tuple[str, ...]:
    """The tag made of the category outlines around a feed, outermost first ("Crypto/DeFi")."""
    segments: list[str] = []
    for ancestor in element.iterancestors():
        if etree.QName(ancestor).localname != "outline" or _attribute(ancestor, "xmlUrl"):
            continue
        label = _attribute(ancestor, "text") or _attribute(ancestor, "title")
        if label and label.lower() not in DEFAULT_CATEGORIES:
            segments.insert(0, label)
    path = _tag_path(segments)
    return (path,) if path else ()


def _category_attribute(element: etree._Element) -> tuple[str, ...]:
    """OPML 2.0's category attribute: comma-separated, slash-delimited paths ("/Crypto/DeFi,Bitcoin")."""
    paths = (_tag_path([value]) for value in _attribute(element, "category").split(","))
    return tuple(path for path in paths if path and path.lower() not in DEFAULT_CATEGORIES)


def _tag_path(labels: Sequence[str]) -> str:
    segments = (" ".join(part.split()) for label in labels for part in label.split("/"))
    return "/".join(segment for segment in segments if segment)


def _unique(values: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


# -- writing OPML -----------------------------------------------------------------------------


def opml_document(feeds: Sequence[FeedConfig], title: str, site_links: Mapping[str, str] | None = None) -> bytes:
    """OPML 2.0 of `feeds` (see the module); `site_links` maps a feed's name to its site (htmlUrl)."""
    root = etree.Element("opml", version="2.0", nsmap={"aggregator": NAMESPACE})
    head = etree.SubElement(root, "head")
    etree.SubElement(head, "title").text = _xml_text(title)
    body = etree.SubElement(root, "body")
    categories: dict[str, etree._Element] = {}
    for feed in feeds:
        parent = body
        if feed.tags:
            label = _xml_text(feed.tags[0])
            if label not in categories:
                categories[label] = etree.SubElement(body, "outline", text=label, title=label)
            parent = categories[label]
        etree.SubElement(parent, "outline", _feed_attributes(feed, (site_links or {}).get(feed.name)))
    return XML_DECLARATION + bytes(etree.tostring(root, encoding="UTF-8", pretty_print=True))


def _feed_attributes(feed: FeedConfig, site_link: str | None) -> dict[str, str]:
    label = _xml_text(feed.title or feed.name)
    attributes = {"type": "rss", "text": label, "title": label, "xmlUrl": _xml_text(feed.url)}
    if site_link:
        attributes["htmlUrl"] = _xml_text(site_link)
    # A comma inside a tag would split it in two; such a tag travels only as the category outline.
    categories = [f"/{tag}" for tag in feed.tags if "," not in tag]
    if categories:
        attributes["category"] = _xml_text(",".join(categories))
    attributes[NAME_ATTRIBUTE] = feed.name
    return attributes


def _xml_text(text: str) -> str:
    """`text` without the control characters XML 1.0 cannot carry."""
    return _NOT_XML_CHARS_RE.sub("", text)
