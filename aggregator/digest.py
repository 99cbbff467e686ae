"""The daily digest as values: stories ranked, grouped into "Top stories" and topic sections.

Pure: stories in, small view values out (plain text, local times, safe links), for
`render` to put into templates. It knows nothing of SQL, Jinja2 or files.

A day's digest lists each story once. Stories reported by two or more outlets are the
"Top stories", ranked by number of outlets, then by how recently they were reported;
every other story goes under its topic section (the top-level tag that says most about
what happened: a hack, a lawsuit, an ETF before the coin it concerned).
"""

from __future__ import annotations

import functools
import hashlib
import html
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from aggregator.models import Entry, Story

#: Length, in characters, of the plain-text summary shown under each headline.
SUMMARY_CHARS = 280
#: Section a story lands in when it has no tags.
OTHER_SECTION = "Other"
TOP_SECTION = "Top stories"
#: Stories reported by at least this many outlets are top stories.
TOP_MIN_OUTLETS = 2
#: Which top-level tag a story is listed under when it has several: what happened says
#: more than which coin or company it was about, so topics come first in this order, then
#: any other top-level tag (alphabetically), and `Blockchain` (coins, companies) last.
SECTION_PRIORITY: tuple[str, ...] = ("Security", "Regulation", "ETF", "CBDC", "DeFi", "NFT", "Mining", "Markets")
CATCH_ALL_SECTION = "Blockchain"
TAGS_DIR = "tags"
OUTLETS_DIR = "outlets"
#: The output feed formats, by file suffix: every feed is written in each.
# Every feed is written in each of these formats: (file suffix, name shown to readers).
FEED_FORMATS = (("atom", "Atom"), ("rss", "RSS"), ("json", "JSON Feed"))
FEED_SUFFIXES = tuple(suffix for suffix, _label in FEED_FORMATS)

# Characters XML 1.0 forbids: a stray control character from a feed would break a page or feed.
XML_INVALID = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# What may not stand in a link as written: spaces and controls are percent-encoded.
_URL_UNSAFE = re.compile("[\x00-\x20\x7f]|" + XML_INVALID.pattern)
_TAG = re.compile(r"<[^>]*>")
_SCRIPT_OR_STYLE = re.compile(r"<(script|style)\b.*?</\1\s*>", re.I | re.S)
_TRAILING_PARTIAL_TAG = re.compile(r"<[^>]*$")
_WHITESPACE = re.compile(r"\s+")
_UNSAFE_SEGMENT_CHARS = re.compile(r"[^a-z0-9._-]")
_SUMMARY_SOURCE_CHARS = 4000


@dataclass(frozen=True)
class Report:
    """One outlet's report of a story: its own headline, link and time."""

    outlet: str
    outlet_link: str | None
    title: str
    link: str | None
    time: str
    published: str
    first: bool


@dataclass(frozen=True)
class TagLink:
    name: str
    path: str
    href: str


@dataclass(frozen=True)
class DigestStory:
    """One story as a page shows it: plain text only, times in the site's zone."""

    id: int
    headline: str
    link: str | None
    summary: str
    time: str
    first_seen: str
    reports: tuple[Report, ...]
    outlets: int
    tags: tuple[TagLink, ...]


@dataclass(frozen=True)
class DigestSection:
    """A heading and its stories; `tag_href` links the section's tag page, when it has one."""

    name: str
    anchor: str
    tag_href: str | None
    feed_href: str | None
    stories: tuple[DigestStory, ...]


def rank_key(story: Story) -> tuple[int, float, int]:
    """Most outlets first, then the most recently reported (ties by id, so the order is stable)."""
    return _rank_key(story, len(story.feeds))


def _rank_key(story: Story, outlets: int) -> tuple[int, float, int]:
    if len(story.entries) == 1:  # most stories: a day page ranks a thousand of them
        return (-outlets, -as_utc(story.entries[0].published).timestamp(), -story.id)
    latest = max(as_utc(entry.published) for entry in story.entries)
    return (-outlets, -latest.timestamp(), -story.id)


def digest_sections(
    stories: Sequence[Story], tz: ZoneInfo, *, root: str = "", in_full: int | None = None
) -> list[DigestSection]:
    """A day's stories as "Top stories" (2+ outlets), then one section per topic, each story once.

    Sections after the top stories are ordered by size, then by `SECTION_PRIORITY`,
    "Other" last; `root` is the page's way back to the output directory. Only the first
    `in_full` stories (in that order) get a full view; the rest, which a page lists one
    line each, get `brief_view`, so a day of thousands of stories stays cheap.
    """
    # Each story's outlets are counted once: a day page ranks and lists thousands of stories.
    counted = [
        (story, len({entry.feed for entry in story.entries}) if len(story.entries) > 1 else 1) for story in stories
    ]
    ranked = sorted(counted, key=lambda pair: _rank_key(*pair))
    top = [pair for pair in ranked if pair[1] >= TOP_MIN_OUTLETS]
    rest: dict[str, list[tuple[Story, int]]] = {}
    for story, outlets in ranked:
        if outlets < TOP_MIN_OUTLETS:
            # A story of one entry has that entry's tags (`Story.tags` would sort them again).
            tags = story.entries[0].tags if len(story.entries) == 1 else story.tags
            rest.setdefault(_section_of_tags(tuple(tags)), []).append((story, outlets))
    room = len(ranked) if in_full is None else in_full

    def views(members: list[tuple[Story, int]]) -> tuple[DigestStory, ...]:
        nonlocal room
        shown = [
            view(story, tz, root) if index < room else _brief_view(story, tz, outlets)
            for index, (story, outlets) in enumerate(members)
        ]
        room = max(room - len(members), 0)
        return tuple(shown)

    sections = []
    if top:
        sections.append(DigestSection(TOP_SECTION, "top", None, None, views(top)))

    def order(name: str) -> tuple[bool, int, tuple[int, str]]:
        return (name == OTHER_SECTION, -len(rest[name]), section_rank(name))

    for name in sorted(rest, key=order):
        tagged = name != OTHER_SECTION
        sections.append(
            DigestSection(
                name=xml_text(name),
                anchor=safe_segment(name),
                tag_href=root + tag_page_path(name) if tagged else None,
                feed_href=root + tag_feed_path(name) if tagged else None,
                stories=views(rest[name]),
            )
        )
    return sections


def day_bounds(day: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """The day's start and end (exclusive) in UTC, for a day in the zone `tz` (DST-correct)."""
    start = datetime.combine(day, time(), tzinfo=tz).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(), tzinfo=tz).astimezone(UTC)
    return start, end


def capped_sections(
    stories: Sequence[Story], tz: ZoneInfo, max_stories: int, *, root: str = ""
) -> tuple[list[DigestSection], list[DigestStory]]:
    """The day's sections with their first `max_stories` stories in full, and the rest apart, in order."""
    kept: list[DigestSection] = []
    more: list[DigestStory] = []
    room = max_stories
    for section in digest_sections(stories, tz, root=root, in_full=max_stories):
        shown, rest = section.stories[: max(room, 0)], section.stories[max(room, 0) :]
        if shown:
            kept.append(DigestSection(section.name, section.anchor, section.tag_href, section.feed_href, shown))
        more.extend(rest)
        room -= len(shown)
    return kept, more


def view(story: Story, tz: ZoneInfo, root: str = "") -> DigestStory:
    """A story's view: the first report's headline and link, a summary, every report with its outlet."""
    first = story.entries[0]
    reports = [_report(entry, tz, first=entry is first) for entry in story.entries]
    local = as_utc(story.first_seen).astimezone(tz)
    return DigestStory(
        id=story.id,
        headline=xml_text(story.headline or first.title).strip() or "(untitled)",
        link=web_link(first.link),
        summary=xml_text(_story_summary(story)),
        time=f"{local:%H:%M}",
        first_seen=local.isoformat(timespec="minutes"),
        reports=tuple(reports),
        outlets=len(story.feeds),
        tags=tuple(
            TagLink(xml_text(tag.rsplit("/", 1)[-1]), xml_text(tag), root + tag_page_path(tag))
            for tag in leaf_tags(story.tags)
        ),
    )


def brief_view(story: Story, tz: ZoneInfo) -> DigestStory:
    """A story as a one-line listing needs it: headline, link, first report, outlets, time; no summary or tags."""
    return _brief_view(story, tz, len(story.feeds))


def _brief_view(story: Story, tz: ZoneInfo, outlets: int) -> DigestStory:
    first = story.entries[0]
    report = _report(first, tz, first=True)
    # A story is first seen when its first report was published: that report's times are the story's.
    first_seen = report.published if story.first_seen == first.published else _local_minutes(story.first_seen, tz)
    return DigestStory(
        id=story.id,
        headline=xml_text(story.headline or first.title).strip() or "(untitled)",
        link=report.link,
        summary="",
        time=first_seen[11:16],
        first_seen=first_seen,
        reports=(report,),
        outlets=outlets,
        tags=(),
    )


def section_for(tags: Sequence[str]) -> str:
    """The one section (top-level tag) a story with these tags is listed under."""
    return _section_of_tags(tuple(tags))


@functools.lru_cache(maxsize=4096)  # a day's thousands of stories share a few hundred sets of tags
def _section_of_tags(tags: tuple[str, ...]) -> str:
    tops = {tag.split("/", 1)[0] for tag in tags if tag.split("/", 1)[0]}
    if not tops:
        return OTHER_SECTION
    return min(tops, key=section_rank)


def section_rank(name: str) -> tuple[int, str]:
    if name in SECTION_PRIORITY:
        return (SECTION_PRIORITY.index(name), "")
    if name == CATCH_ALL_SECTION:
        return (len(SECTION_PRIORITY) + 1, name)
    return (len(SECTION_PRIORITY), name.casefold())


def leaf_tags(tags: Sequence[str]) -> tuple[str, ...]:
    """The most specific tags: `Blockchain` is dropped when `Blockchain/Binance` is there."""
    unique = sorted(set(tags))
    parents = {tag[:cut] for tag in unique for cut in range(len(tag)) if tag[cut] == "/"}
    return tuple(tag for tag in unique if tag not in parents)


def plain_summary(entry: Entry, limit: int = SUMMARY_CHARS) -> str:
    """A short plain-text summary of an entry: its stored plain text, else its summary or content HTML."""
    text = entry.text or html_to_text(entry.summary) or html_to_text(entry.content)
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:.-–—…") + "…"


def tag_feed_path(tag: str) -> str:
    """Where a tag's Atom feed lives: `Blockchain/Binance` -> `tags/blockchain/binance.atom`.

    Each segment is lower-cased and reduced to `[a-z0-9._-]` (spaces become `-`, accents
    are dropped); it never starts with a dot, so `..` and hidden files cannot occur, and a
    segment left empty becomes `_` plus a short hash. Tags differing only in case share a file.
    """
    return _tag_path(tag) + ".atom"


def tag_page_path(tag: str) -> str:
    """Where a tag's page lives: `Blockchain/Binance` -> `tags/blockchain/binance.html`."""
    return _tag_path(tag) + ".html"


def tag_output_path(tag: str, suffix: str) -> str:
    """Where a tag's feed in one format lives: (`Blockchain`, `rss`) -> `tags/blockchain.rss`."""
    return f"{_tag_path(tag)}.{suffix}"


def outlet_page_path(name: str) -> str:
    """Where an outlet's page lives: `outlets/<name>.html`.

    Feed names are slugs (letters, digits, `.`, `_`, `-`); one that is not exactly its
    lower-case safe form gets a short hash, so `CoinDesk` and `coindesk` never share a file.
    """
    segment = safe_segment(name)
    if segment != name:
        segment += "-" + hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{OUTLETS_DIR}/{segment}.html"


def web_link(url: str | None) -> str | None:
    """The URL if a reader can safely follow it (http or https), else None.

    Spaces, controls and characters XML forbids are percent-encoded (as UTF-8, lone
    surrogates included), as a browser would, so the link is always well-formed.
    """
    if not url:
        return None
    url = url.strip()
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme not in ("http", "https"):
        return None
    return _URL_UNSAFE.sub(_percent_encoded, url)


def xml_text(text: str) -> str:
    """Plain text with the characters XML forbids dropped."""
    return XML_INVALID.sub("", text)


def html_to_text(fragment: str) -> str:
    if not fragment:
        return ""
    text = fragment[:_SUMMARY_SOURCE_CHARS]
    text = _SCRIPT_OR_STYLE.sub(" ", text)
    text = _TAG.sub(" ", text)
    text = _TRAILING_PARTIAL_TAG.sub(" ", text)
    text = html.unescape(text)
    return _WHITESPACE.sub(" ", text).strip()


def safe_segment(segment: str) -> str:
    folded = unicodedata.normalize("NFKD", segment.strip().lower())
    ascii_only = folded.encode("ascii", "ignore").decode("ascii")
    cleaned = _UNSAFE_SEGMENT_CHARS.sub("", _WHITESPACE.sub("-", ascii_only)).lstrip(".")
    if cleaned:
        return cleaned
    return "_" + hashlib.sha1(segment.encode("utf-8", "surrogatepass")).hexdigest()[:10]


@functools.lru_cache(maxsize=4096)  # a day page asks for the same few dozen tags thousands of times
def _tag_path(tag: str) -> str:
    segments = [segment for segment in tag.split("/") if segment.strip()] or [tag]
    return TAGS_DIR + "/" + "/".join(safe_segment(segment) for segment in segments)


def _story_summary(story: Story) -> str:
    """The first report's summary, or the first one any outlet gave."""
    for entry in story.entries:
        text = plain_summary(entry)
        if text:
            return text
    return ""


def _report(entry: Entry, tz: ZoneInfo, *, first: bool) -> Report:
    outlet, outlet_link = _outlet_words(entry.feed_title or entry.feed, entry.feed_link)
    published = _local_minutes(entry.published, tz)
    return Report(
        outlet=outlet,
        outlet_link=outlet_link,
        title=xml_text(entry.title).strip() or "(untitled)",
        link=web_link(entry.link),
        time=published[11:16],
        published=published,
        first=first,
    )


@functools.lru_cache(maxsize=4096)  # a day page names the same outlets a thousand times
def _outlet_words(name: str, link: str | None) -> tuple[str, str | None]:
    return xml_text(name), web_link(link)


def _local_minutes(moment: datetime, tz: ZoneInfo) -> str:
    """A stored (UTC) time in the zone `tz`, ISO 8601 to the minute: `2024-06-05T14:30+02:00`.

    Its characters 11 to 16 are the time of day (`14:30`), as `%H:%M` would give it.
    """
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(tz).isoformat(timespec="minutes")


def _percent_encoded(match: re.Match[str]) -> str:
    """One matched character as %XX escapes of its UTF-8 bytes."""
    return "".join(f"%{byte:02X}" for byte in match.group().encode("utf-8", "surrogatepass"))


def as_utc(moment: datetime) -> datetime:
    """Stored dates are UTC; a naive one is taken to be UTC too."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
