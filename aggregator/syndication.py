"""Output feeds as values: the items of `feed.atom`, `feed.rss` and `feed.json`, built once.

Pure: stories or entries in, `FeedItem`s out, with every string already safe for XML
(characters XML forbids replaced or dropped) and every link a web link or None. The
three formats carry the same items with the same ids: Atom and RSS 2.0 are written by
`render`'s Jinja2 templates, JSON Feed 1.1 here with the standard library's `json`
(a JSON document needs no template, and `json` does all of its escaping). It knows
nothing of files, SQL or Jinja2.

An item is one story (by default) or one entry. A story's item keeps its id (the
story's) as outlets join, while its `updated` (Atom), `date_modified` (JSON Feed) and
content change; RSS has no update date, so its guid (isPermaLink="false") stays and
the description, which lists every outlet, changes.
"""

from __future__ import annotations

import email.utils
import html
import json
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from aggregator.digest import XML_INVALID, DigestStory, as_utc, plain_summary, tag_page_path, view, web_link, xml_text
from aggregator.models import Entry, SiteConfig, Story

JSON_FEED_VERSION = "https://jsonfeed.org/version/1.1"
_HTML_SIGNIFICANT = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})
#: Shown where a feed gives an item no title: RSS needs a title or a description, and
#: a feed reader's list needs something to show.
UNTITLED = "(untitled)"
#: An item's author when neither the entry nor its outlet names one (Atom and JSON Feed need a name).
UNKNOWN_AUTHOR = "unknown"


@dataclass(frozen=True)
class FeedItem:
    """One item of an output feed (a story or an entry); dates are UTC and never after the render."""

    id: str
    title: str
    link: str | None
    author: str
    published: datetime
    updated: datetime
    categories: tuple[str, ...]
    summary_html: str
    content_html: str
    summary_text: str
    source_id: str | None = None
    source_title: str = ""
    source_link: str | None = None

    @property
    def published_rfc3339(self) -> str:
        return rfc3339(self.published)

    @property
    def updated_rfc3339(self) -> str:
        return rfc3339(self.updated)

    @property
    def published_rfc822(self) -> str:
        return rfc822(self.published)

    @property
    def description_html(self) -> str:
        """RSS `description`: the summary, else the content (`content:encoded` then carries nothing new)."""
        return self.summary_html or self.content_html

    @property
    def encoded_html(self) -> str:
        """RSS `content:encoded`: the full content when the description is only its summary."""
        return self.content_html if self.summary_html else ""


@dataclass(frozen=True)
class FeedDocument:
    """One output feed: where it lives and what it holds, newest first."""

    title: str
    description: str
    url_stem: str  # the feed's URL without its suffix: `https://news.example/feed` + `.atom`
    home_url: str
    author: str
    updated: datetime
    items: tuple[FeedItem, ...]

    @property
    def updated_rfc3339(self) -> str:
        return rfc3339(self.updated)

    @property
    def updated_rfc822(self) -> str:
        return rfc822(self.updated)


def entries_document(
    entries: Sequence[Entry], *, site: SiteConfig, title: str, self_path: str, now: datetime, tag: str | None = None
) -> FeedDocument:
    """A feed of one item per entry, in the order given.

    `self_path` is its Atom file's path under the output directory (`feed.atom`,
    `tags/blockchain.atom`): the other formats sit beside it. No date in it lies after `now`.
    """
    base = site_base(site.site_url)
    items = [entry_item(entry, base, now) for entry in entries]
    return _site_document(items, site, title, self_path, now, tag, "one item per report")


def stories_document(
    stories: Sequence[Story], *, site: SiteConfig, title: str, self_path: str, now: datetime, tag: str | None = None
) -> FeedDocument:
    """A feed of one item per story, the most recently joined first (see `entries_document`)."""
    base = site_base(site.site_url)
    tz = ZoneInfo(site.timezone)
    items = [story_item(story, base, tz, now) for story in stories]
    items.sort(key=lambda item: item.updated, reverse=True)
    return _site_document(items, site, title, self_path, now, tag, "one item per story, with every outlet in it")


def feed_document(
    items: Sequence[FeedItem], *, title: str, description: str, url_stem: str, home_url: str, author: str, now: datetime
) -> FeedDocument:
    """A feed of `items` (in the order given); its date is its newest item's, or `now` when empty."""
    updated = max((item.updated for item in items), default=as_utc(now).replace(microsecond=0))
    return FeedDocument(
        title=_title(title),
        description=xml_text(description),
        url_stem=url_stem,
        home_url=home_url,
        author=xml_text(author).strip() or "aggregator",
        updated=updated,
        items=tuple(items),
    )


def entry_item(entry: Entry, base: str, now: datetime) -> FeedItem:
    """An entry as an item: its own title, link, author (else its outlet), summary and content."""
    published = min_utc(entry.published, now)
    updated = min(max(as_utc(entry.updated), published), as_utc(now))
    outlet = xml_text(entry.feed_title or entry.feed).strip() or UNKNOWN_AUTHOR
    link = web_link(entry.link)
    content = xml_html(entry.content)
    summary = xml_html(entry.summary)
    if not content and link is None:
        # RFC 4287 4.1.2: an entry without a link rel=alternate must have content.
        content, summary = summary, ""
    return FeedItem(
        id=xml_text(entry.uid).strip() or _minted_id(base, entry.feed, entry.key),
        title=_title(entry.title),
        link=link,
        author=xml_text(entry.author or "").strip() or outlet,
        published=published,
        updated=updated,
        categories=tuple(xml_text(tag) for tag in entry.tags),
        summary_html=summary,
        content_html=content,
        summary_text=xml_text(plain_summary(entry)),
        # We do not know the outlet's own feed id, so mint a stable one in our site's name.
        source_id=source_id(base, entry.feed),
        source_title=outlet,
        source_link=web_link(entry.feed_link),
    )


def story_item(story: Story, base: str, tz: ZoneInfo, now: datetime) -> FeedItem:
    """A story as one item: the first report's headline and link, every outlet's report in its content."""
    first = story.entries[0]
    if len(story.entries) == 1:
        return entry_item(first, base, now)
    published = min_utc(story.first_seen, now)
    updated = min(max(as_utc(story.updated), published), as_utc(now))
    shown = view(story, tz, base)
    return FeedItem(
        id=xml_text(story.uid or first.uid).strip() or _minted_id(base, first.feed, first.key),
        title=_title(story.headline or first.title),
        link=web_link(first.link),
        author=", ".join(dict.fromkeys(report.outlet for report in shown.reports if report.outlet.strip()))
        or UNKNOWN_AUTHOR,
        published=published,
        updated=updated,
        categories=tuple(xml_text(tag) for tag in story.tags),
        summary_html="",
        content_html=story_content(shown),
        summary_text=shown.summary,
    )


def story_content(shown: DigestStory) -> str:
    """A story's item body as HTML (the feed escapes it): the summary, then each outlet's report."""
    parts = [f"<p>{html.escape(shown.summary)}</p>"] if shown.summary else []
    parts.append(f"<p>Reported by {shown.outlets} outlets:</p><ul>")
    for report in shown.reports:
        title = html.escape(report.title)
        headline = f'<a href="{html.escape(report.link)}">{title}</a>' if report.link else title
        first = " (first)" if report.first else ""
        parts.append(f"<li>{html.escape(report.outlet)}{first}, {html.escape(report.published)}: {headline}</li>")
    parts.append("</ul>")
    if shown.tags:
        parts.append("<p>Tags: " + ", ".join(html.escape(tag.path) for tag in shown.tags) + "</p>")
    return xml_html("".join(parts))


def json_feed(document: FeedDocument) -> bytes:
    """The document as JSON Feed 1.1 (https://jsonfeed.org/version/1.1), UTF-8."""
    data: dict[str, Any] = {
        "version": JSON_FEED_VERSION,
        "title": document.title,
        "home_page_url": document.home_url,
        "feed_url": document.url_stem + ".json",
        "description": document.description,
        "authors": [{"name": document.author, "url": document.home_url}],
        "items": [_json_item(item) for item in document.items],
    }
    text = json.dumps(data, ensure_ascii=False, indent=1)
    # As JSON escapes, which every reader decodes: no "<script" or "&" appears in the file as
    # such, so a browser that is handed it as HTML, or a page that embeds it, runs nothing.
    return (text.translate(_HTML_SIGNIFICANT) + "\n").encode("utf-8")


def _json_item(item: FeedItem) -> dict[str, Any]:
    data: dict[str, Any] = {"id": item.id}
    if item.link:
        data["url"] = item.link
    data["title"] = item.title
    # One of content_html and content_text is required; the HTML is the sanitized stored HTML.
    content = item.content_html or item.summary_html
    if content:
        data["content_html"] = content
    else:
        data["content_text"] = item.summary_text or item.title
    if item.summary_text:
        data["summary"] = item.summary_text
    data["date_published"] = item.published_rfc3339
    data["date_modified"] = item.updated_rfc3339
    data["authors"] = [{"name": item.author}]
    if item.categories:
        data["tags"] = list(dict.fromkeys(item.categories))
    return data


def site_base(site_url: str) -> str:
    """The site's URL with a trailing slash: the base of every absolute link and id."""
    return site_url if site_url.endswith("/") else site_url + "/"


def source_id(base: str, feed: str) -> str:
    """A stable id for an outlet in our site's name (for Atom's `source`)."""
    return f"{base}#feed-{urllib.parse.quote(feed, safe='', errors='surrogatepass')}"


def rfc3339(moment: datetime) -> str:
    """`2024-06-05T07:45:00Z`: the form Atom and JSON Feed use."""
    # isoformat, not strftime: it writes years before 1000 with four digits.
    return as_utc(moment).replace(tzinfo=None, microsecond=0).isoformat() + "Z"


def rfc822(moment: datetime) -> str:
    """`Wed, 05 Jun 2024 07:45:00 GMT`: the form RSS 2.0 uses."""
    return email.utils.format_datetime(as_utc(moment).replace(microsecond=0), usegmt=True)


def min_utc(moment: datetime, now: datetime) -> datetime:
    """`moment` in UTC, but never after `now`: an output feed does not date anything in the future."""
    return min(as_utc(moment), as_utc(now)).replace(microsecond=0)


def xml_html(text: str) -> str:
    """HTML with the characters XML forbids replaced by U+FFFD.

    Never dropped: the U+0001 of "java&#1;script:" keeps that URL dead; without it, it is live.
    """
    return XML_INVALID.sub("\ufffd", text)


def _site_document(
    items: Sequence[FeedItem], site: SiteConfig, title: str, atom_path: str, now: datetime, tag: str | None, per: str
) -> FeedDocument:
    base = site_base(site.site_url)
    topic = "crypto news" if tag is None else f"crypto news tagged {tag}"
    return feed_document(
        items,
        title=title,
        description=f"{site.title}: {topic}, {per}.",
        url_stem=base + atom_path.removesuffix(".atom"),
        home_url=base if tag is None else base + tag_page_path(tag),
        author=site.title,
        now=now,
    )


def _title(text: str) -> str:
    return xml_text(text).strip() or UNTITLED


def _minted_id(base: str, feed: str, key: str) -> str:
    """An id for an item whose stored id held nothing XML allows (never the case for ids we mint)."""
    return f"{source_id(base, feed)}/{urllib.parse.quote(key, safe='', errors='surrogatepass')}"
