"""Write the reader's outputs: daily digest pages, tag pages and Atom feeds, from store queries.

render reads stories and entries through `EntrySource` (the store satisfies it), turns
them into view values (`digest`), fills the Jinja2 templates and writes each file
atomically, so a reader or a web server never sees half a page. It is the only module
that imports jinja2. It knows nothing of SQL, HTTP or feed parsing, and never renders
stored HTML unescaped in a page: pages show plain text, feeds carry the (already
sanitized) HTML escaped as Atom `type="html"` text.

Outputs under `site.output_dir`: `index.html`, `digest/YYYY-MM-DD.html`, `feed.atom`, and
per tag `tags/<path in lower case>.html` and `.atom`. The merged and tag feeds carry one
item per story by default (`site.feed_per`): when an outlet joins a story, its item's
`updated` changes and its id does not. Files whose bytes would not change are left alone.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import html
import json
import logging
import os
import tempfile
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import jinja2

from aggregator import PROJECT_URL, __version__
from aggregator.digest import (
    XML_INVALID,
    DigestSection,
    as_utc,
    digest_sections,
    plain_summary,
    section_for,
    tag_feed_path,
    tag_page_path,
    view,
    web_link,
    xml_text,
)
from aggregator.models import ChangeMarker, Entry, SiteConfig, Story

__all__ = [
    "AtomEntry",
    "EntrySource",
    "RenderReport",
    "atom_feed",
    "digest_html",
    "digest_path",
    "index_html",
    "plain_summary",
    "render_all",
    "section_for",
    "story_feed",
    "tag_feed_path",
    "tag_html",
    "tag_page_path",
    "template_environment",
    "write_atomic",
]

log = logging.getLogger(__name__)

DIGEST_TEMPLATE = "digest.html"
TAG_TEMPLATE = "tag.html"
ATOM_TEMPLATE = "feed.atom"
FEED_FILE = "feed.atom"
INDEX_FILE = "index.html"
RENDER_STATE_FILE = ".render-state.json"
DIGEST_DIR = "digest"
PER_STORY = "story"
PER_ENTRY = "entry"


class EntrySource(Protocol):
    """The queries render needs; the store implements them (all dates UTC-aware)."""

    def stories_between(self, start: datetime, end: datetime) -> list[Story]:
        """Stories first seen in [start, end) (an entry in no story yet counts as a story of one)."""
        ...

    def recent_stories(self, limit: int, tag: str | None = None) -> list[Story]:
        """The `limit` stories most recently started or joined (with an entry tagged `tag`), newest first."""
        ...

    def recent_entries(self, limit: int) -> list[Entry]:
        """The `limit` newest entries by published, newest first."""
        ...

    def entries_for_tag(self, tag: str, limit: int) -> list[Entry]:
        """The `limit` newest entries carrying `tag` (tags already rolled up), newest first."""
        ...

    def tags_in_use(self) -> list[tuple[str, int]]:
        """Every tag that has entries, with its entry count, sorted by path."""
        ...

    def change_marker(self) -> ChangeMarker:
        """Where entries and stories stand now, to ask later what changed since."""
        ...

    def days_changed_since(self, marker: ChangeMarker, tz: ZoneInfo) -> set[date]:
        """Days (in `tz`) whose stories gained or changed entries after `marker`."""
        ...

    def tags_changed_since(self, marker: ChangeMarker) -> set[str]:
        """Tags of the entries and stories added, rewritten or joined after `marker`."""
        ...

    def entry_days(self, tz: ZoneInfo) -> list[date]:
        """The days (in `tz`) that have entries, ascending."""
        ...


@dataclass(frozen=True)
class RenderReport:
    """What one `render_all` did: files (re)written, files left as they were, pages, tags."""

    files_written: int
    files_unchanged: int
    days: int
    tags: int


@dataclass(frozen=True)
class AtomEntry:
    """One item of an output feed (an entry or a story); dates are RFC 3339 UTC strings."""

    id: str
    title: str
    link: str | None
    author: str
    updated: str
    published: str
    categories: tuple[str, ...]
    summary_html: str
    content_html: str
    source_id: str | None
    source_title: str
    source_link: str | None


# ------------------------------------------------------------------ public API


def render_all(source: EntrySource, site: SiteConfig, now: datetime, full: bool = False) -> RenderReport:
    """Write the digest pages, `index.html`, `feed.atom` and each tag's page and feed.

    Incremental unless `full` (or the site settings or templates changed since the last
    render): only the days and tags whose stories changed since then are written again,
    plus the pages next to a new day (their navigation changes) and any page missing on
    disk; the index and the merged feed always. Outputs of tags no longer in use stay.
    """
    tz = ZoneInfo(site.timezone)
    out = Path(site.output_dir)
    env = template_environment(site.templates_dir)
    writer = _Writer()
    marker = source.change_marker()  # first: whatever arrives during the render is caught next time
    days = source.entry_days(tz)
    fingerprint = _site_fingerprint(site)
    previous = None if full else _RenderState.load(out, fingerprint)
    if previous is None:
        day_set, tags = set(days), [tag for tag, _count in source.tags_in_use()]
    else:
        day_set = _days_to_render(source, previous, days, tz, out)
        tags = sorted(source.tags_changed_since(previous.marker))

    for index, day in enumerate(days):
        if day not in day_set:
            continue
        previous_day = days[index - 1] if index > 0 else None
        next_day = days[index + 1] if index + 1 < len(days) else None
        page = digest_html(source, site, day, previous_day=previous_day, next_day=next_day, at_index=False, env=env)
        writer.publish(out / digest_path(day), page)

    writer.publish(out / INDEX_FILE, index_html(source, site, now, days, env=env))
    writer.publish(out / FEED_FILE, _merged_feed(source, site, now, env, tag=None))
    for tag in tags:
        writer.publish(out / tag_feed_path(tag), _merged_feed(source, site, now, env, tag=tag))
        writer.publish(out / tag_page_path(tag), tag_html(source, site, tag, env=env))

    _RenderState(fingerprint, marker, frozenset(days)).save(out)
    report = RenderReport(
        files_written=writer.written, files_unchanged=writer.unchanged, days=len(day_set), tags=len(tags)
    )
    log.info(
        "rendered %d day pages and %d tags into %s (%d files written, %d unchanged)",
        report.days,
        report.tags,
        out,
        report.files_written,
        report.files_unchanged,
    )
    return report


def digest_html(
    source: EntrySource,
    site: SiteConfig,
    day: date,
    *,
    previous_day: date | None,
    next_day: date | None,
    at_index: bool,
    notice: str | None = None,
    env: jinja2.Environment | None = None,
) -> bytes:
    """One day's digest: its stories (first seen that day, in the site's zone), top stories first.

    `at_index` says where the page will live (`index.html` or `digest/`), which decides
    its relative links. Only this day's stories are queried, so a caller can re-render
    just the days that changed (and their neighbours, whose navigation may change).
    """
    tz = ZoneInfo(site.timezone)
    start = datetime.combine(day, time(), tzinfo=tz).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(), tzinfo=tz).astimezone(UTC)
    stories = source.stories_between(start, end)
    root = "" if at_index else "../"
    sections, more = _cap(digest_sections(stories, tz, root=root), site.digest_max_stories)
    return _render_page(
        env or template_environment(site.templates_dir),
        DIGEST_TEMPLATE,
        site,
        root=root,
        day=day.isoformat(),
        day_long=f"{day:%A}, {day.day} {day:%B %Y}",
        sections=sections,
        story_count=len(stories),
        more=more,
        entry_count=sum(len(story.entries) for story in stories),
        previous_href=_day_href(previous_day, at_index),
        next_href=_day_href(next_day, at_index),
        notice=notice,
    )


def index_html(
    source: EntrySource,
    site: SiteConfig,
    now: datetime,
    days: Sequence[date],
    *,
    env: jinja2.Environment | None = None,
) -> bytes:
    """`index.html`: today's digest, else the latest day with news, else an empty page.

    `days` is `source.entry_days(tz)` (ascending), passed in so it is queried once.
    """
    env = env or template_environment(site.templates_dir)
    tz = ZoneInfo(site.timezone)
    today = now.astimezone(tz).date()
    if not days:
        return _render_page(
            env,
            DIGEST_TEMPLATE,
            site,
            root="",
            day=None,
            day_long=None,
            sections=[],
            story_count=0,
            more=[],
            entry_count=0,
            previous_href=None,
            next_href=None,
            notice=None,
        )
    shown = _index_day(days, today)
    position = days.index(shown)
    notice = None
    if shown != today:
        notice = f"Nothing yet for today ({today.isoformat()}); this is the latest day with news."
    return digest_html(
        source,
        site,
        shown,
        previous_day=days[position - 1] if position > 0 else None,
        next_day=days[position + 1] if position + 1 < len(days) else None,
        at_index=True,
        notice=notice,
        env=env,
    )


def tag_html(source: EntrySource, site: SiteConfig, tag: str, *, env: jinja2.Environment | None = None) -> bytes:
    """A tag's page: its most recent stories, newest first, with a link to the tag's feed."""
    tz = ZoneInfo(site.timezone)
    path = tag_page_path(tag)
    root = "../" * path.count("/")
    stories = source.recent_stories(site.tag_feed_entries, tag=tag)
    views = [view(story, tz, root) for story in stories]
    parent = tag.rsplit("/", 1)[0] if "/" in tag else None
    return _render_page(
        env or template_environment(site.templates_dir),
        TAG_TEMPLATE,
        site,
        root=root,
        tag=xml_text(tag),
        tag_feed_href=root + tag_feed_path(tag),
        parent=xml_text(parent) if parent else None,
        parent_href=root + tag_page_path(parent) if parent else None,
        stories=views,
        days=[(day, [v for v in views if v.first_seen[:10] == day]) for day in _distinct_days(views)],
    )


def atom_feed(
    entries: Sequence[Entry],
    *,
    site: SiteConfig,
    title: str,
    self_path: str,
    now: datetime,
    env: jinja2.Environment | None = None,
) -> bytes:
    """An Atom 1.0 (RFC 4287) document with one item per entry, in the order given.

    `self_path` is the feed's path under the output directory (`feed.atom`,
    `tags/blockchain.atom`); with `site.site_url` it makes the feed's id and
    rel=self link. No date in the document lies after `now`.
    """
    base = _site_base(site.site_url)
    now_utc = as_utc(now)
    return _atom_document([_atom_entry(entry, base, now_utc) for entry in entries], site, title, self_path, now, env)


def story_feed(
    stories: Sequence[Story],
    *,
    site: SiteConfig,
    title: str,
    self_path: str,
    now: datetime,
    env: jinja2.Environment | None = None,
) -> bytes:
    """An Atom 1.0 document with one item per story: its id is the story's (stable as outlets
    join), its `updated` the time the last outlet joined, its content every outlet's report."""
    now_utc = as_utc(now)
    items = [_atom_story(story, site, now_utc) for story in stories]
    items.sort(key=lambda item: item.updated, reverse=True)
    return _atom_document(items, site, title, self_path, now, env)


def digest_path(day: date) -> str:
    """Where a day's digest page lives under the output directory."""
    return f"{DIGEST_DIR}/{day.isoformat()}.html"


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that readers see the old file or the new one, never half.

    Writes a temporary file in the same directory, fsyncs it and renames it over
    `path`; creates missing parent directories. Keeps an existing file's permission
    bits, else uses 0644 so a web server running as another user can read it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o644
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def template_environment(templates_dir: str | None = None) -> jinja2.Environment:
    """The Jinja2 environment for a templates override (or none); built once per process.

    A user's `templates_dir` is searched first, so overriding one template is enough;
    the shipped templates fill in the rest. Autoescape is on for every template.
    """
    return _environment(templates_dir, str(shipped_templates_dir()))


def shipped_templates_dir() -> Path:
    """The templates that ship with aggregator: inside the package when installed, else the repo's."""
    packaged = Path(__file__).resolve().parent / "templates"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "templates"


# ------------------------------------------------------------------ incremental renders


def _days_to_render(
    source: EntrySource, previous: _RenderState, days: list[date], tz: ZoneInfo, out: Path
) -> set[date]:
    """Changed days, new days and their neighbours (whose next/previous links change), missing pages."""
    wanted = source.days_changed_since(previous.marker, tz)
    for index, day in enumerate(days):
        if day not in previous.days:
            wanted.update(days[max(index - 1, 0) : index + 2])
        elif not (out / digest_path(day)).exists():
            wanted.add(day)
    return wanted & set(days)


@dataclass(frozen=True)
class _RenderState:
    """What the last render covered, kept beside the outputs (a dotfile: `serve` never shows it)."""

    fingerprint: str
    marker: ChangeMarker
    days: frozenset[date]

    @classmethod
    def load(cls, out: Path, fingerprint: str) -> _RenderState | None:
        try:
            data = json.loads((out / RENDER_STATE_FILE).read_text(encoding="utf-8"))
            if data.get("fingerprint") != fingerprint:
                return None
            return cls(
                fingerprint=fingerprint,
                marker=ChangeMarker(int(data["last_id"]), str(data["last_rewrite"]), str(data["last_story"])),
                days=frozenset(date.fromisoformat(day) for day in data["days"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None  # no state, or one we cannot trust: render everything

    def save(self, out: Path) -> None:
        data = {
            "fingerprint": self.fingerprint,
            "last_id": self.marker.last_id,
            "last_rewrite": self.marker.last_rewrite,
            "last_story": self.marker.last_story,
            "days": sorted(day.isoformat() for day in self.days),
        }
        write_atomic(out / RENDER_STATE_FILE, json.dumps(data).encode("utf-8"))


def _site_fingerprint(site: SiteConfig) -> str:
    """Changes when anything that shapes every page does: the settings, the templates, this program."""
    digest = hashlib.sha256(repr((site, __version__)).encode("utf-8"))
    for directory in (site.templates_dir, str(shipped_templates_dir())):
        for template in sorted(Path(directory).glob("*")) if directory else ():
            stat = template.stat()
            digest.update(f"{template}:{stat.st_mtime_ns}:{stat.st_size}".encode())
    return digest.hexdigest()


# ------------------------------------------------------------------ private helpers


@functools.lru_cache(maxsize=8)
def _environment(templates_dir: str | None, shipped: str) -> jinja2.Environment:
    loaders: list[jinja2.BaseLoader] = []
    if templates_dir:
        loaders.append(jinja2.FileSystemLoader(templates_dir))
    loaders.append(jinja2.FileSystemLoader(shipped))
    return jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html", "htm", "xml", "atom"),
            default_for_string=True,
            default=True,
        ),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


class _Writer:
    """Writes output files atomically, skipping those whose bytes are already on disk."""

    def __init__(self) -> None:
        self.written = 0
        self.unchanged = 0

    def publish(self, path: Path, data: bytes) -> None:
        if _same_bytes(path, data):
            self.unchanged += 1
            return
        write_atomic(path, data)
        self.written += 1


def _same_bytes(path: Path, data: bytes) -> bool:
    try:
        if path.stat().st_size != len(data):
            return False
        return path.read_bytes() == data
    except OSError:
        return False


def _merged_feed(
    source: EntrySource, site: SiteConfig, now: datetime, env: jinja2.Environment, *, tag: str | None
) -> bytes:
    """`feed.atom` (no tag) or a tag's feed, one item per story or per entry as configured."""
    title = site.title if tag is None else f"{site.title}: {tag}"
    path = FEED_FILE if tag is None else tag_feed_path(tag)
    limit = site.feed_entries if tag is None else site.tag_feed_entries
    if site.feed_per == PER_ENTRY:
        entries = source.recent_entries(limit) if tag is None else source.entries_for_tag(tag, limit)
        return atom_feed(entries, site=site, title=title, self_path=path, now=now, env=env)
    stories = source.recent_stories(limit, tag=tag)
    return story_feed(stories, site=site, title=title, self_path=path, now=now, env=env)


def _atom_document(
    items: list[AtomEntry],
    site: SiteConfig,
    title: str,
    self_path: str,
    now: datetime,
    env: jinja2.Environment | None,
) -> bytes:
    base = _site_base(site.site_url)
    updated = max((item.updated for item in items), default=_rfc3339(as_utc(now)))
    template = (env or template_environment(site.templates_dir)).get_template(ATOM_TEMPLATE)
    text = template.render(
        feed_id=base + self_path,
        title=xml_text(title),
        updated=updated,
        self_href=base + self_path,
        site_href=base,
        author=xml_text(site.title),
        generator_uri=PROJECT_URL,
        generator_version=__version__,
        entries=items,
    )
    return text.encode("utf-8")


def _cap(sections: list[DigestSection], max_stories: int) -> tuple[list[DigestSection], list[Any]]:
    """The first `max_stories` stories in full (top stories, then sections in order), the rest listed briefly."""
    kept: list[DigestSection] = []
    more: list[Any] = []
    room = max_stories
    for section in sections:
        shown, rest = section.stories[: max(room, 0)], section.stories[max(room, 0) :]
        if shown:
            kept.append(DigestSection(section.name, section.anchor, section.tag_href, section.feed_href, shown))
        more.extend(rest)
        room -= len(shown)
    return kept, more


def _render_page(env: jinja2.Environment, template: str, site: SiteConfig, *, root: str, **values: Any) -> bytes:
    text = env.get_template(template).render(
        site_title=xml_text(site.title),
        root=root,
        feed_href=root + FEED_FILE,
        index_href=root + INDEX_FILE,
        **values,
    )
    return text.encode("utf-8")


def _distinct_days(views: Sequence[Any]) -> list[str]:
    return list(dict.fromkeys(v.first_seen[:10] for v in views))


def _day_href(day: date | None, at_index: bool) -> str | None:
    if day is None:
        return None
    return digest_path(day) if at_index else f"{day.isoformat()}.html"


def _index_day(days: Sequence[date], today: date) -> date:
    """Today if it has entries, else the latest day not after today, else the earliest day."""
    past = [day for day in days if day <= today]
    return past[-1] if past else days[0]


def _atom_entry(entry: Entry, base: str, now: datetime) -> AtomEntry:
    published = min(as_utc(entry.published), now)
    updated = min(max(as_utc(entry.updated), published), now)
    outlet = xml_text(entry.feed_title or entry.feed)
    link = web_link(entry.link)
    content = _xml_html(entry.content)
    summary = _xml_html(entry.summary)
    if not content and link is None:
        # RFC 4287 4.1.2: an entry without a link rel=alternate must have content.
        content, summary = summary, ""
    return AtomEntry(
        id=xml_text(entry.uid),
        title=xml_text(entry.title),
        link=link,
        author=xml_text(entry.author or "") or outlet,
        updated=_rfc3339(updated),
        published=_rfc3339(published),
        categories=tuple(xml_text(tag) for tag in entry.tags),
        summary_html=summary,
        content_html=content,
        # We do not know the outlet's own feed id, so mint a stable one in our site's name.
        source_id=_source_id(base, entry.feed),
        source_title=outlet,
        source_link=web_link(entry.feed_link),
    )


def _atom_story(story: Story, site: SiteConfig, now: datetime) -> AtomEntry:
    """A story as one feed item: the first report's headline and link, every outlet in its content."""
    base = _site_base(site.site_url)
    first = story.entries[0]
    if len(story.entries) == 1:
        return _atom_entry(first, base, now)
    published = min(as_utc(story.first_seen), now)
    updated = min(max(as_utc(story.updated), published), now)
    tz = ZoneInfo(site.timezone)
    shown = view(story, tz, base)
    outlets = ", ".join(dict.fromkeys(report.outlet for report in shown.reports))
    return AtomEntry(
        id=xml_text(story.uid or first.uid),
        title=xml_text(story.headline or first.title),
        link=web_link(first.link),
        author=outlets,
        updated=_rfc3339(updated),
        published=_rfc3339(published),
        categories=tuple(xml_text(tag) for tag in story.tags),
        summary_html="",
        content_html=_story_content(shown),
        source_id=None,
        source_title="",
        source_link=None,
    )


def _story_content(shown: Any) -> str:
    """A story's item body as HTML (escaped by the template): the summary, then each outlet's report."""
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
    return _xml_html("".join(parts))


def _source_id(base: str, feed: str) -> str:
    return f"{base}#feed-{urllib.parse.quote(feed, safe='', errors='surrogatepass')}"


def _site_base(site_url: str) -> str:
    return site_url if site_url.endswith("/") else site_url + "/"


def _rfc3339(moment: datetime) -> str:
    # isoformat, not strftime: it writes years before 1000 with four digits.
    return as_utc(moment).replace(tzinfo=None, microsecond=0).isoformat() + "Z"


def _xml_html(text: str) -> str:
    """HTML with the characters XML forbids replaced by U+FFFD.

    Never dropped: the U+0001 of "java&#1;script:" keeps that URL dead; without it, it is live.
    """
    return XML_INVALID.sub("\ufffd", text)
