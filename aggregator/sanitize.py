"""HTML from feeds made safe or plain: the only module that imports nh3.

`sanitize_html` keeps ordinary article formatting and makes relative URLs absolute;
`html_to_text` turns titles, authors and categories into plain text. Neither knows anything
of feeds, XML or HTTP: `parse` decides what is HTML and against which base it resolves.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from urllib.parse import urlsplit

import nh3

WEB_SCHEMES = frozenset({"http", "https"})

# The sanitizer's policy: ordinary article formatting only. Anything not listed is dropped
# (its text kept); the CLEAN_CONTENT tags are dropped together with everything inside them.
ALLOWED_TAGS = frozenset(
    {
        *("a", "abbr", "b", "blockquote", "br", "caption", "cite", "code", "col", "colgroup"),
        *("dd", "del", "details", "dfn", "div", "dl", "dt", "em", "figcaption", "figure"),
        *("h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "ins", "kbd", "li", "mark"),
        *("ol", "p", "pre", "q", "s", "samp", "small", "span", "strong", "sub", "summary"),
        *("sup", "table", "tbody", "td", "tfoot", "th", "thead", "time", "tr", "u", "ul"),
    }
)
# noscript, xmp and plaintext are raw text to an HTML parser: kept, their markup would show
# up as escaped tags (a lazy-loading <img> fallback as literal text).
CLEAN_CONTENT_TAGS = frozenset(
    {"script", "style", "template", "iframe", "object", "embed", "applet", "noembed", "noframes"}
    | {"noscript", "xmp", "plaintext", "svg", "math", "textarea", "select", "title"}
)
ALLOWED_ATTRIBUTES: Mapping[str, frozenset[str]] = {
    "a": frozenset({"href", "title", "hreflang"}),
    "img": frozenset({"src", "alt", "title", "width", "height"}),
    "abbr": frozenset({"title"}),
    "blockquote": frozenset({"cite"}),
    "q": frozenset({"cite"}),
    "del": frozenset({"cite", "datetime"}),
    "ins": frozenset({"cite", "datetime"}),
    "time": frozenset({"datetime"}),
    "ol": frozenset({"start", "reversed"}),
    "li": frozenset({"value"}),
    "td": frozenset({"colspan", "rowspan"}),
    "th": frozenset({"colspan", "rowspan", "scope"}),
    "col": frozenset({"span"}),
    "colgroup": frozenset({"span"}),
}
URL_SCHEMES = frozenset({"http", "https", "mailto"})
LINK_REL = "noopener noreferrer nofollow"
# Cleaners kept for bases whose HTML had relative URLs (one per feed or per item link).
MAX_BASE_CLEANERS = 256

_SKIP_CONTENT_RE = re.compile(r"<(script|style|template)\b.*?</\1\s*>|<!--.*?-->", re.S | re.I)
_BLOCK_TAG_RE = re.compile(
    r"</?(?:p|div|br|hr|li|ul|ol|dl|dt|dd|h[1-6]|tr|td|th|table|blockquote|pre|figure|figcaption"
    r"|section|article|header|footer)\b[^>]*>",
    re.I,
)
# Only "<" followed by a letter, "/", "!" or "?" starts a tag, so "BTC < $20k" survives.
_TAG_RE = re.compile(r"</?[A-Za-z][^>]*>|<[!?][^>]*>")
# A cite attribute in nh3's output, and the tag before it: nh3 writes every "<" of text as &lt;
# and every attribute as name="value" with any '"' in the value as &quot;.
_CITE_TAGS = "|".join(sorted(tag for tag, names in ALLOWED_ATTRIBUTES.items() if "cite" in names))
_CITE_RE = re.compile(rf'(<(?:{_CITE_TAGS})(?: [a-z-]+="[^"]*")*?) cite="([^"]*)"')
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
# What the URL standard strips from both ends of a URL, and what it drops inside.
_URL_STRIPPED = "".join(map(chr, range(0x21)))
_URL_DROPPED = str.maketrans("", "", "\t\n\r")
# XML 1.0 forbids these characters even as character references; nh3 and html.unescape can still
# produce some of them from HTML in a feed, and one of them would make an output feed unreadable.
_NOT_XML_CHARS_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_SURROGATES_RE = re.compile("[\ud800-\udfff]")
# An href or src value in nh3's output that does not start with a scheme: a relative URL, the
# only kind a base rewrites (nh3 writes every attribute as name="value"). Text that merely looks
# like one costs a second cleaning, nothing more.
_RELATIVE_URL_RE = re.compile(r'="(?:(?<=href=")|(?<=src="))(?![A-Za-z][A-Za-z0-9+.\-]*:)')
_ASCII_NOT_XML = bytes(sorted(set(range(0x20)) - {0x09, 0x0A, 0x0D}))


def sanitize_html(html_text: str, base_url: str | None) -> str:
    """Make feed HTML safe to embed in our pages, with relative URLs made absolute.

    Keeps ordinary formatting (paragraphs, links, images, lists, quotes, headings, tables,
    code); drops scripts, frames, embeds, forms, styles, event handlers and any URL whose
    scheme is not http, https or mailto. Relative href/src resolve against `base_url`;
    without a usable (absolute http/https) base they stay relative.
    """
    if not html_text:
        return ""
    # nh3 cannot take lone surrogates; like an HTML parser, read them as U+FFFD.
    if not html_text.isascii():
        html_text = _SURROGATES_RE.sub("\ufffd", html_text)
    cleaned = _clean(html_text, _usable_base(base_url)).strip()
    if ' cite="' in cleaned:
        cleaned = _CITE_RE.sub(_absolute_cite_only, cleaned)
    # Replaced, never deleted: dropping the U+0001 from "java&#1;script:" would make a live URL.
    return _NOT_XML_CHARS_RE.sub("\ufffd", cleaned) if _has_not_xml_chars(cleaned) else cleaned


def _absolute_cite_only(match: re.Match[str]) -> str:
    """A cite attribute as nh3 wrote it if it is an absolute http(s) or mailto URL; else the tag without it.

    A cite is no link to nh3: it neither checks its scheme (javascript:) nor resolves it against
    a base. No reader ever sees one, so a cite that is not plainly usable is dropped.
    """
    url = html.unescape(match.group(2)).strip(_URL_STRIPPED).translate(_URL_DROPPED)
    scheme = _SCHEME_RE.match(url)
    return match.group(0) if scheme and scheme.group(1).lower() in URL_SCHEMES else match.group(1)


def _has_not_xml_chars(text: str) -> bool:
    """Whether `text` has a character XML forbids; ASCII (most HTML) is checked without a regex."""
    if text.isascii():
        raw = text.encode("ascii")
        return len(raw.translate(None, _ASCII_NOT_XML)) != len(raw)
    return _NOT_XML_CHARS_RE.search(text) is not None


def html_to_text(html_text: str) -> str:
    """Plain text of an HTML fragment: tags dropped, entities decoded, whitespace collapsed.

    Used for titles, authors and categories, which outlets fill with markup and (often
    doubly) escaped entities; the result never contains a tag.
    """
    text = html_text
    if "<" in text:
        text = _TAG_RE.sub("", _BLOCK_TAG_RE.sub(" ", _SKIP_CONTENT_RE.sub(" ", text)))
    if "&" in text:
        text = html.unescape(text)
        if "<" in text:  # markup that was escaped twice surfaces only now
            text = _TAG_RE.sub("", text)
    if _has_not_xml_chars(text):
        text = _NOT_XML_CHARS_RE.sub(" ", text)
    return " ".join(text.split())


def _clean(html_text: str, base_url: str | None) -> str:
    """nh3's cleaning of `html_text`, with relative href and src values resolved against `base_url`.

    A base changes nothing but relative href and src values, and building a cleaner for one
    costs as much as cleaning a summary. RSS gives every item a base of its own (its link),
    while most feeds write absolute URLs only, so a fragment is cleaned without a base first,
    and again with a cleaner for its base only if the result holds a relative URL. A base that
    needed its own cleaner keeps it (a feed with relative URLs has them throughout).
    """
    if base_url is None:
        return _PASS_THROUGH.clean(html_text)
    cleaner = _base_cleaners.get(base_url)
    if cleaner is None:
        cleaned = _PASS_THROUGH.clean(html_text)
        if _RELATIVE_URL_RE.search(cleaned) is None:
            return cleaned
        cleaner = _cleaner_for(base_url)
    return cleaner.clean(html_text)


def _new_cleaner(relative: nh3.UrlRelative) -> nh3.Cleaner:
    """A cleaner with the policy above, treating relative URLs as `relative` says."""
    return nh3.Cleaner(
        tags=ALLOWED_TAGS,
        clean_content_tags=CLEAN_CONTENT_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        link_rel=LINK_REL,
        url_schemes=URL_SCHEMES,
        url_relative=relative,
    )


_PASS_THROUGH = _new_cleaner("pass_through")
_base_cleaners: dict[str, nh3.Cleaner] = {}


def _cleaner_for(base_url: str) -> nh3.Cleaner:
    """The cleaner that resolves against `base_url`, built once (all are dropped when there are too many)."""
    cleaner = _base_cleaners.get(base_url)
    if cleaner is None:
        if len(_base_cleaners) >= MAX_BASE_CLEANERS:
            _base_cleaners.clear()
        cleaner = _base_cleaners[base_url] = _new_cleaner(("rewrite_with_base", base_url))
    return cleaner


def _usable_base(base_url: str | None) -> str | None:
    """The base if it is an absolute http(s) URL nh3 can join against, else None."""
    if not base_url:
        return None
    try:
        parts = urlsplit(base_url.strip())
    except ValueError:
        return None
    if parts.scheme.lower() not in WEB_SCHEMES or not parts.netloc:
        return None
    return base_url.strip()
