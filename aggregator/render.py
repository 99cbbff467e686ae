"""Write the reader's outputs: the browsable site and the output feeds, from store queries.

render reads stories, entries and outlets through `EntrySource` (the store satisfies it),
turns them into view values (`digest`, `site_views`, `syndication`), fills the Jinja2
templates and writes each file atomically, so a reader or a web server never sees half a
page. It is the only module that imports jinja2. It knows nothing of SQL, HTTP or feed
parsing, and never renders stored HTML unescaped in a page: pages show plain text, feeds
carry the (already sanitized) HTML escaped.

Outputs under `site.output_dir`:
- pages: `index.html`, `digest/YYYY-MM-DD.html`, `archive.html` (every day), `tags.html`
  and `tags/<path>.html`, `outlets.html` and `outlets/<name>.html` (each outlet's health);
- feeds, each as Atom 1.0, RSS 2.0 and JSON Feed 1.1 with the same items and ids:
  `feed.atom|rss|json` and `tags/<path in lower case>.atom|rss|json`.
The feeds carry one item per story by default (`site.feed_per`): when an outlet joins a
story, its item's `updated` changes and its id does not. Files whose bytes would not
change are left alone. Many day pages (a first or a full render) are written by helper
processes too, one per core (`render_share`), each reading the database on its own.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import jinja2

from aggregator import PROJECT_URL, __version__
from aggregator.digest import (
    FEED_FORMATS,
    FEED_SUFFIXES,
    capped_sections,
    day_bounds,
    outlet_page_path,
    plain_summary,
    section_for,
    tag_feed_path,
    tag_output_path,
    tag_page_path,
    view,
    xml_text,
)
from aggregator.models import ChangeMarker, Entry, SiteConfig, Story
from aggregator.render_files import OutputWriter, RenderState, site_fingerprint, write_atomic
from aggregator.render_share import Share, default_helpers
from aggregator.site_views import (
    OUTLET_RECENT_ENTRIES,
    archive_months,
    health_days,
    outlet_view,
    tag_rows,
)
from aggregator.store_queries import DaySpan, OutletHealth
from aggregator.syndication import FeedDocument, entries_document, json_feed, stories_document

__all__ = [
    "EntrySource",
    "RenderReport",
    "atom_feed",
    "digest_html",
    "digest_path",
    "entries_document",
    "feed_files",
    "index_html",
    "plain_summary",
    "render_all",
    "section_for",
    "stories_document",
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
ARCHIVE_TEMPLATE = "archive.html"
TAGS_TEMPLATE = "tags.html"
OUTLETS_TEMPLATE = "outlets.html"
OUTLET_TEMPLATE = "outlet.html"
ATOM_TEMPLATE = "feed.atom"
RSS_TEMPLATE = "feed.rss"
FEED_STEM = "feed"
FEED_FILE = "feed.atom"
INDEX_FILE = "index.html"
ARCHIVE_FILE = "archive.html"
TAGS_FILE = "tags.html"
OUTLETS_FILE = "outlets.html"
OPML_FILE = "opml.xml"
DIGEST_DIR = "digest"
PER_STORY = "story"
PER_ENTRY = "entry"
FEED_TYPES = {"atom": "application/atom+xml", "rss": "application/rss+xml", "json": "application/feed+json"}
#: A render with at least this many day pages to write shares them with helper processes (one per
#: other core, see `render_share`); fewer are done sooner than a helper starts (about 0.3 s).
SHARED_DAY_PAGES = 24
#: Neighbouring day pages are read and written in runs of up to this many: one read for a run
#: reads each stored page about once (see `Queries.stories_of_days`), a read a day some 3 times
#: (1,000,000 entries: a day's reads take 20 ms alone, 15 in runs of 4, 14 of 8 but 12 MB more).
DAYS_PER_READ = 4
#: Up to this many changed outlets are counted one query each (reading only their entries);
#: more, and one pass over the last days' entries of every outlet is cheaper.
FEW_OUTLETS = 20


class EntrySource(Protocol):
    """The queries render needs; the store implements them (all dates UTC-aware)."""

    def stories_between(self, start: datetime, end: datetime) -> list[Story]:
        """Stories first seen in [start, end) (an entry in no story yet counts as a story of one)."""
        ...

    def stories_of_days(self, days: Sequence[DaySpan]) -> Iterable[list[Story]]:
        """`stories_between` each of `days` (ascending, apart), read at once."""
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

    def entries_for_feed(self, feed: str, limit: int) -> list[Entry]:
        """The `limit` newest entries of one feed, newest first."""
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

    def feeds_changed_since(self, marker: ChangeMarker) -> set[str]:
        """Names of the feeds with entries added or rewritten after `marker`."""
        ...

    def entry_days(self, tz: ZoneInfo) -> list[date]:
        """The days (in `tz`) that have entries, ascending."""
        ...

    def outlets(self) -> list[OutletHealth]:
        """Every feed the database knows, with its poll state, by name."""
        ...

    def entry_counts_by_day(
        self, days: Sequence[DaySpan], feeds: Collection[str] | None = None
    ) -> dict[str, dict[date, int]]:
        """Entries published in each of `days`, per feed name (every feed, or the named ones)."""
        ...


@dataclass(frozen=True)
class RenderReport:
    """What one `render_all` did: files (re)written, files left as they were, pages, tags, outlets."""

    files_written: int
    files_unchanged: int
    days: int
    tags: int
    outlets: int = 0


@dataclass(frozen=True)
class DayPage:
    """A day page to write, with the days its navigation links to."""

    day: date
    previous_day: date | None
    next_day: date | None


@dataclass(frozen=True)
class DayResult:
    """A day page written (or found as it was): its stories and reports, for the archive."""

    day: date
    stories: int
    reports: int
    written: bool


# ------------------------------------------------------------------ public API


def render_all(
    source: EntrySource,
    site: SiteConfig,
    now: datetime,
    full: bool = False,
    opml: bytes | None = None,
    helpers: int | None = None,
) -> RenderReport:
    """Write the site (digest pages, archive, tag and outlet pages) and every output feed.

    Incremental unless `full` (or the site settings or templates changed since the last
    render): only the days, tags and outlets that changed since then are written again,
    plus the pages next to a new day (their navigation changes) and any output missing on
    disk; the index, the archive, the outlets index and the merged feeds always (their
    bytes decide whether the file is replaced). Outputs of tags no longer in use stay.
    `opml`, the sources as an OPML document, is written as `opml.xml` when given.

    Many day pages (a first or a full render) are shared with `helpers` processes (default:
    one per other core) when `source` is a `Store`: each reads the database on a read-only
    connection of its own and writes the pages it takes (see `render_share`).
    """
    tz = ZoneInfo(site.timezone)
    out = Path(site.output_dir)
    env = template_environment(site.templates_dir)
    writer = OutputWriter()
    marker = source.change_marker()  # first: whatever arrives during the render is caught next time
    days = source.entry_days(tz)
    today = now.astimezone(tz).date()
    fingerprint = site_fingerprint(site, (site.templates_dir, str(shipped_templates_dir())))
    previous = None if full else RenderState.load(out, fingerprint)
    if previous is None:
        day_set, tags = set(days), {tag for tag, _count in source.tags_in_use()}
        known_tags = set(tags)
        day_counts: dict[date, tuple[int, int]] = {}
    else:
        day_set = _days_to_render(source, previous, days, tz, out)
        tags = source.tags_changed_since(previous.marker)
        tags |= {tag for tag in previous.tags if _missing_tag_output(out, tag)}
        known_tags = set(previous.tags) | tags
        current_days = set(days)
        day_counts = {day: counts for day, counts in previous.day_counts.items() if day in current_days}

    shown = _index_day(days, today) if days else None
    pages = [page for page in _day_pages(days) if page.day in day_set]
    runs = _day_runs(pages, alone=shown)
    helper_count = default_helpers() if helpers is None else helpers
    share: Share[tuple[DayPage, ...], list[DayResult]] = Share.start(
        runs, _page_helper(source, site, len(pages)), helper_count
    )
    try:
        shown_stories = source.stories_between(*day_bounds(shown, tz)) if shown else []
        # This process's own share first, while the helpers (if any) write day pages.
        writer.publish(out / INDEX_FILE, _index_page(site, today, days, shown_stories, env))
        _publish_feeds(writer, out, _merged_feed(source, site, now, tag=None), env, FEED_STEM)
        for tag in sorted(tags):
            stem = tag_page_path(tag)[: -len(".html")]
            stories = source.recent_stories(site.tag_feed_entries, tag=tag)  # for the page and the feed
            _publish_feeds(writer, out, _merged_feed(source, site, now, tag=tag, stories=stories), env, stem)
            writer.publish(out / tag_page_path(tag), _tag_page(site, tag, stories, env))
        writer.publish(out / TAGS_FILE, tags_html(site, sorted(known_tags), env=env))
        outlet_marks, outlets_written = _render_outlets(source, site, now, previous, out, writer, env)
        if opml is not None:  # the configured feed list (aggregator.opml), which the store does not know
            writer.publish(out / OPML_FILE, opml)
        known = {shown: shown_stories} if shown else {}
        page_writer = OutputWriter()  # counted from the results, which include the helpers'
        results = share.run(lambda run: _write_day_pages(source, site, run, out, page_writer, env, known))
    finally:
        share.stop()
    for result in (result for run_results in results for result in run_results):
        day_counts[result.day] = (result.stories, result.reports)
        writer.count(result.written)
    writer.publish(out / ARCHIVE_FILE, archive_html(site, day_counts, env=env))

    RenderState(
        fingerprint=fingerprint,
        marker=marker,
        days=frozenset(days),
        tags=frozenset(known_tags),
        day_counts=day_counts,
        today=today,
        outlets=outlet_marks,
    ).save(out)
    report = RenderReport(
        files_written=writer.written,
        files_unchanged=writer.unchanged,
        days=len(day_set),
        tags=len(tags),
        outlets=outlets_written,
    )
    log.info(
        "rendered %d day pages, %d tags and %d outlets into %s (%d files written, %d unchanged)",
        report.days,
        report.tags,
        report.outlets,
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
    stories = source.stories_between(*day_bounds(day, ZoneInfo(site.timezone)))
    page, _counts = _digest_page(
        site,
        day,
        stories,
        previous_day=previous_day,
        next_day=next_day,
        at_index=at_index,
        notice=notice,
        env=env or template_environment(site.templates_dir),
    )
    return page


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
    stories = source.stories_between(*day_bounds(_index_day(days, today), tz)) if days else []
    return _index_page(site, today, days, stories, env)


def _index_page(
    site: SiteConfig, today: date, days: Sequence[date], stories: Sequence[Story], env: jinja2.Environment
) -> bytes:
    """`index.html` from the stories of the day it shows (`_index_day`), read once for it and its day page."""
    if not days:
        return _render_page(
            env,
            DIGEST_TEMPLATE,
            site,
            root="",
            current="today",
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
    page, _counts = _digest_page(
        site,
        shown,
        stories,
        previous_day=days[position - 1] if position > 0 else None,
        next_day=days[position + 1] if position + 1 < len(days) else None,
        at_index=True,
        notice=notice,
        env=env,
    )
    return page


def tag_html(source: EntrySource, site: SiteConfig, tag: str, *, env: jinja2.Environment | None = None) -> bytes:
    """A tag's page: its most recent stories, newest first, with links to the tag's feeds."""
    stories = source.recent_stories(site.tag_feed_entries, tag=tag)
    return _tag_page(site, tag, stories, env or template_environment(site.templates_dir))


def _tag_page(site: SiteConfig, tag: str, stories: Sequence[Story], env: jinja2.Environment) -> bytes:
    """A tag's page from its `site.tag_feed_entries` most recent stories (which its story feed also carries)."""
    tz = ZoneInfo(site.timezone)
    path = tag_page_path(tag)
    root = "../" * path.count("/")
    views = [view(story, tz, root) for story in stories]
    parent = tag.rsplit("/", 1)[0] if "/" in tag else None
    return _render_page(
        env,
        TAG_TEMPLATE,
        site,
        root=root,
        current="tags",
        alternates=_alternates(root + path[: -len(".html")], f"{site.title}: {tag}"),
        tag=xml_text(tag),
        tag_feeds=[(label, f"{root}{path[: -len('.html')]}.{suffix}") for suffix, label in FEED_FORMATS],
        parent=xml_text(parent) if parent else None,
        parent_href=root + tag_page_path(parent) if parent else None,
        stories=views,
        days=[(day, [v for v in views if v.first_seen[:10] == day]) for day in _distinct_days(views)],
    )


def archive_html(
    site: SiteConfig, day_counts: dict[date, tuple[int, int]], *, env: jinja2.Environment | None = None
) -> bytes:
    """`archive.html`: every day with news, newest first, by month, with its stories and reports."""
    months = archive_months(day_counts, root="")
    return _render_page(
        env or template_environment(site.templates_dir),
        ARCHIVE_TEMPLATE,
        site,
        root="",
        current="archive",
        months=months,
        day_total=len(day_counts),
    )


def tags_html(site: SiteConfig, tags: Sequence[str], *, env: jinja2.Environment | None = None) -> bytes:
    """`tags.html`: every tag in use as a tree, each with its page and feeds."""
    return _render_page(
        env or template_environment(site.templates_dir),
        TAGS_TEMPLATE,
        site,
        root="",
        current="tags",
        tags=tag_rows(tags, root=""),
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
    document = entries_document(entries, site=site, title=title, self_path=self_path, now=now)
    return _xml_feed(document, ATOM_TEMPLATE, env or template_environment(site.templates_dir))


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
    document = stories_document(stories, site=site, title=title, self_path=self_path, now=now)
    return _xml_feed(document, ATOM_TEMPLATE, env or template_environment(site.templates_dir))


def feed_files(document: FeedDocument, *, templates_dir: str | None = None) -> dict[str, bytes]:
    """The document in every output format, by file suffix: `atom`, `rss`, `json`."""
    return _feed_files(document, template_environment(templates_dir))


def digest_path(day: date) -> str:
    """Where a day's digest page lives under the output directory."""
    return f"{DIGEST_DIR}/{day.isoformat()}.html"


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


# ------------------------------------------------------------------ outlets


def _render_outlets(
    source: EntrySource,
    site: SiteConfig,
    now: datetime,
    previous: RenderState | None,
    out: Path,
    writer: OutputWriter,
    env: jinja2.Environment,
) -> tuple[dict[str, tuple[str, int]], int]:
    """Each changed outlet's page, and `outlets.html` (always); returns each outlet's (mark, 14-day total).

    An outlet's page is written again when its entries or its state (status, error, ...)
    changed since the last render, when it is missing, and on a new day (its "entries per
    day" moved on); the index is cheap (one small query) and always shows the latest polls.
    """
    tz = ZoneInfo(site.timezone)
    today = now.astimezone(tz).date()
    outlets = source.outlets()
    marks = {outlet.name: _outlet_mark(outlet) for outlet in outlets}
    if previous is None or previous.today != today:
        changed = set(marks)
    else:
        changed = source.feeds_changed_since(previous.marker) & set(marks)
        changed |= {name for name, mark in marks.items() if previous.outlets.get(name, ("", 0))[0] != mark}
        changed |= {name for name in marks if not (out / outlet_page_path(name)).exists()}
    spans = health_days(today, tz)
    few = sorted(changed) if len(changed) <= FEW_OUTLETS else None
    counts = source.entry_counts_by_day(spans, few) if changed else {}
    totals: dict[str, tuple[str, int]] = {}
    rows = []
    for outlet in outlets:
        if outlet.name in changed:
            shown = outlet_view(
                outlet,
                tz,
                root="../",
                days=spans,
                counts=counts.get(outlet.name, {}),
                entries=source.entries_for_feed(outlet.name, OUTLET_RECENT_ENTRIES),
            )
            page = _render_page(env, OUTLET_TEMPLATE, site, root="../", current="outlets", outlet=shown)
            writer.publish(out / outlet_page_path(outlet.name), page)
            total = shown.recent_total
        else:
            total = previous.outlets[outlet.name][1] if previous else 0
        totals[outlet.name] = (marks[outlet.name], total)
        rows.append((outlet_view(outlet, tz, root=""), total))
    page = _render_page(env, OUTLETS_TEMPLATE, site, root="", current="outlets", outlets=rows, days=len(spans))
    writer.publish(out / OUTLETS_FILE, page)
    return totals, len(changed)


def _outlet_mark(outlet: OutletHealth) -> str:
    """What an outlet's page shows of its state, besides the poll times: a change means a rewrite."""
    status = "ok" if outlet.status == "not_modified" else outlet.status  # a 304 is no change of health
    state = (outlet.title, outlet.url, outlet.site_link, status, outlet.last_error, outlet.error_count)
    return hashlib.sha1(repr((state, outlet.disabled, outlet.active)).encode("utf-8", "surrogatepass")).hexdigest()[:16]


# ------------------------------------------------------------------ day pages


def _day_pages(days: Sequence[date]) -> list[DayPage]:
    """Every day's page with its neighbours, from the days with entries (ascending)."""
    return [
        DayPage(day, days[index - 1] if index > 0 else None, days[index + 1] if index + 1 < len(days) else None)
        for index, day in enumerate(days)
    ]


def _day_runs(pages: Sequence[DayPage], alone: date | None) -> list[tuple[DayPage, ...]]:
    """The pages in runs of neighbours (each the next day with news after the one before), up to
    DAYS_PER_READ long; the page of day `alone` (whose stories are known already) in a run of its own."""
    runs: list[list[DayPage]] = []
    for page in pages:
        last = runs[-1][-1] if runs else None
        if last and last.next_day == page.day and len(runs[-1]) < DAYS_PER_READ and alone not in (last.day, page.day):
            runs[-1].append(page)
        else:
            runs.append([page])
    return [tuple(run) for run in runs]


def _write_day_pages(
    source: EntrySource,
    site: SiteConfig,
    run: Sequence[DayPage],
    out: Path,
    writer: OutputWriter,
    env: jinja2.Environment,
    known: dict[date, list[Story]],
) -> list[DayResult]:
    """Write the pages of a run of days (`_day_runs`), from their stories in `known`, else read at once."""
    tz = ZoneInfo(site.timezone)
    stories: Iterable[list[Story]]
    if all(page.day in known for page in run):
        stories = [known[page.day] for page in run]
    else:
        stories = source.stories_of_days([DaySpan(page.day, *day_bounds(page.day, tz)) for page in run])
    return [
        _write_day_page(site, page, day_stories, out, writer, env)
        for page, day_stories in zip(run, stories, strict=True)
    ]


def _page_helper(source: EntrySource, site: SiteConfig, pages: int) -> Callable[[], _HelperPageWriter] | None:
    """How a helper process makes its page writer, when `pages` are enough to share and the source is
    a database that a helper can open itself; else None (this process writes them all)."""
    from aggregator.store import Store

    if pages < SHARED_DAY_PAGES or not isinstance(source, Store):
        return None
    return functools.partial(_HelperPageWriter, str(source.path), site)


class _HelperPageWriter:
    """Writes day pages in a render helper, from a read-only connection of its own to the database."""

    def __init__(self, database: str, site: SiteConfig) -> None:
        from aggregator.store import Store

        self.source = Store(database, readonly=True)
        self.site = site
        self.out = Path(site.output_dir)
        self.writer = OutputWriter()
        self.env = template_environment(site.templates_dir)

    def __call__(self, run: Sequence[DayPage]) -> list[DayResult]:
        return _write_day_pages(self.source, self.site, run, self.out, self.writer, self.env, {})

    def close(self) -> None:
        self.source.close()


# ------------------------------------------------------------------ incremental renders


def _days_to_render(source: EntrySource, previous: RenderState, days: list[date], tz: ZoneInfo, out: Path) -> set[date]:
    """Changed days, new days and their neighbours (whose next/previous links change), missing pages."""
    wanted = source.days_changed_since(previous.marker, tz)
    for index, day in enumerate(days):
        if day not in previous.days:
            wanted.update(days[max(index - 1, 0) : index + 2])
        elif day not in previous.day_counts or not (out / digest_path(day)).exists():
            wanted.add(day)
    return wanted & set(days)


def _missing_tag_output(out: Path, tag: str) -> bool:
    return any(not (out / tag_output_path(tag, suffix)).exists() for suffix in (*FEED_SUFFIXES, "html"))


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
            enabled_extensions=("html", "htm", "xml", "atom", "rss"),
            default_for_string=True,
            default=True,
        ),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _write_day_page(
    site: SiteConfig, page: DayPage, stories: Sequence[Story], out: Path, writer: OutputWriter, env: jinja2.Environment
) -> DayResult:
    """Write `digest/<day>.html` from the day's stories."""
    data, (story_count, entry_count) = _digest_page(
        site,
        page.day,
        stories,
        previous_day=page.previous_day,
        next_day=page.next_day,
        at_index=False,
        notice=None,
        env=env,
    )
    written = writer.publish(out / digest_path(page.day), data)
    return DayResult(page.day, story_count, entry_count, written)


def _digest_page(
    site: SiteConfig,
    day: date,
    stories: Sequence[Story],
    *,
    previous_day: date | None,
    next_day: date | None,
    at_index: bool,
    notice: str | None,
    env: jinja2.Environment,
) -> tuple[bytes, tuple[int, int]]:
    """A day's digest page and its (stories, reports), which the archive lists."""
    tz = ZoneInfo(site.timezone)
    root = "" if at_index else "../"
    sections, more = capped_sections(stories, tz, site.digest_max_stories, root=root)
    entry_count = sum(len(story.entries) for story in stories)
    page = _render_page(
        env,
        DIGEST_TEMPLATE,
        site,
        root=root,
        current="today" if at_index else "archive",
        day=day.isoformat(),
        day_long=f"{day:%A}, {day.day} {day:%B %Y}",
        sections=sections,
        story_count=len(stories),
        more=more,
        entry_count=entry_count,
        previous_href=_day_href(previous_day, at_index),
        next_href=_day_href(next_day, at_index),
        notice=notice,
    )
    return page, (len(stories), entry_count)


def _merged_feed(
    source: EntrySource, site: SiteConfig, now: datetime, *, tag: str | None, stories: Sequence[Story] | None = None
) -> FeedDocument:
    """`feed.*` (no tag) or a tag's feed, one item per story or per entry as configured; `stories`
    are the tag's most recent ones, when the caller has them already."""
    title = site.title if tag is None else f"{site.title}: {tag}"
    path = FEED_FILE if tag is None else tag_feed_path(tag)
    limit = site.feed_entries if tag is None else site.tag_feed_entries
    if site.feed_per == PER_ENTRY:
        entries = source.recent_entries(limit) if tag is None else source.entries_for_tag(tag, limit)
        return entries_document(entries, site=site, title=title, self_path=path, now=now, tag=tag)
    if stories is None:
        stories = source.recent_stories(limit, tag=tag)
    return stories_document(stories, site=site, title=title, self_path=path, now=now, tag=tag)


def _publish_feeds(writer: OutputWriter, out: Path, document: FeedDocument, env: jinja2.Environment, stem: str) -> None:
    for suffix, data in _feed_files(document, env).items():
        writer.publish(out / f"{stem}.{suffix}", data)


def _feed_files(document: FeedDocument, env: jinja2.Environment) -> dict[str, bytes]:
    return {
        "atom": _xml_feed(document, ATOM_TEMPLATE, env),
        "rss": _xml_feed(document, RSS_TEMPLATE, env),
        "json": json_feed(document),
    }


def _xml_feed(document: FeedDocument, template: str, env: jinja2.Environment) -> bytes:
    suffix = template.rsplit(".", 1)[-1]
    text = env.get_template(template).render(
        feed=document,
        self_href=f"{document.url_stem}.{suffix}",
        generator_uri=PROJECT_URL,
        generator_version=__version__,
        items=document.items,
    )
    return text.encode("utf-8")


def _render_page(env: jinja2.Environment, template: str, site: SiteConfig, *, root: str, **values: Any) -> bytes:
    values.setdefault("alternates", _alternates(root + FEED_STEM, site.title))
    text = env.get_template(template).render(
        site_title=xml_text(site.title),
        root=root,
        feed_href=root + FEED_FILE,
        index_href=root + INDEX_FILE,
        **values,
    )
    return text.encode("utf-8")


def _alternates(stem: str, title: str) -> list[tuple[str, str, str]]:
    """`<link rel="alternate">` of a page: (type, title, href) of each format of its feed."""
    return [(FEED_TYPES[suffix], f"{xml_text(title)} ({label})", f"{stem}.{suffix}") for suffix, label in FEED_FORMATS]


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
