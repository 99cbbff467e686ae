"""The browsable site's other pages as values: outlet health, the outlets index, the archive, the tag index.

Pure, like `digest`: stored values in, small view values out (plain text, local times,
safe links, hrefs relative to the page), for `render` to put into templates. It knows
nothing of SQL, Jinja2 or files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from aggregator.digest import FEED_FORMATS, as_utc, day_bounds, outlet_page_path, tag_page_path, web_link, xml_text
from aggregator.models import Entry
from aggregator.store_queries import DaySpan, OutletHealth

#: How many days of "entries per day" an outlet's page and the outlets index show.
HEALTH_DAYS = 14
#: How many of an outlet's newest entries its page lists.
OUTLET_RECENT_ENTRIES = 30


@dataclass(frozen=True)
class HealthDay:
    """One bar of an outlet's "entries per day"."""

    day: str
    label: str
    count: int


@dataclass(frozen=True)
class OutletEntry:
    title: str
    link: str | None
    published: str
    time: str
    tags: tuple[tuple[str, str], ...]  # (path, href)


@dataclass(frozen=True)
class OutletView:
    """An outlet as its page and the outlets index show it: plain text, local times."""

    name: str
    title: str
    href: str
    url: str | None
    site_link: str | None
    state: str  # ok, new, error, off: a CSS class and a word for the eye
    status: str  # the status in words
    error: str | None
    last_poll: str | None
    last_poll_iso: str | None
    last_ok: str | None
    next_poll: str | None
    days: tuple[HealthDay, ...]
    recent_total: int
    busiest: int
    entries: tuple[OutletEntry, ...]


@dataclass(frozen=True)
class ArchiveDay:
    day: str
    label: str
    href: str
    stories: int
    reports: int


@dataclass(frozen=True)
class ArchiveMonth:
    name: str
    anchor: str
    days: tuple[ArchiveDay, ...]
    stories: int
    reports: int


@dataclass(frozen=True)
class TagRow:
    path: str
    name: str
    depth: int
    href: str
    feeds: tuple[tuple[str, str], ...]  # (format label, href)


def health_days(today: date, tz: ZoneInfo, count: int = HEALTH_DAYS) -> list[DaySpan]:
    """The `count` days up to and including `today`, in `tz`, as UTC spans (DST-correct)."""
    first = today - timedelta(days=count - 1)
    return [DaySpan(day, *day_bounds(day, tz)) for day in (first + timedelta(days=offset) for offset in range(count))]


def outlet_view(
    outlet: OutletHealth,
    tz: ZoneInfo,
    *,
    root: str,
    days: Sequence[DaySpan] = (),
    counts: Mapping[date, int] | None = None,
    entries: Sequence[Entry] = (),
) -> OutletView:
    """An outlet's health in words: status, last poll, its error, entries per day, its newest entries."""
    counts = counts or {}
    bars = tuple(
        HealthDay(span.day.isoformat(), f"{span.day:%a} {span.day.day}", counts.get(span.day, 0)) for span in days
    )
    state, status = _status_words(outlet)
    return OutletView(
        name=xml_text(outlet.name),
        title=xml_text(outlet.title or outlet.name),
        href=root + outlet_page_path(outlet.name),
        url=web_link(outlet.url),
        site_link=web_link(outlet.site_link),
        state=state,
        status=status,
        error=_shown_error(outlet),
        last_poll=_local(outlet.last_fetched, tz),
        last_poll_iso=as_utc(outlet.last_fetched).isoformat() if outlet.last_fetched else None,
        last_ok=_local(outlet.last_ok, tz),
        next_poll=_local(outlet.next_fetch, tz) if outlet.active and not outlet.disabled else None,
        days=bars,
        recent_total=sum(bar.count for bar in bars),
        busiest=max((bar.count for bar in bars), default=0),
        entries=tuple(_outlet_entry(entry, tz, root) for entry in entries),
    )


def archive_months(day_counts: Mapping[date, tuple[int, int]], *, root: str) -> list[ArchiveMonth]:
    """Every day with news, newest first, grouped by month, with its stories and reports."""
    months: dict[tuple[int, int], list[ArchiveDay]] = {}
    for day in sorted(day_counts, reverse=True):
        stories, reports = day_counts[day]
        months.setdefault((day.year, day.month), []).append(
            ArchiveDay(day.isoformat(), f"{day:%a} {day.day}", f"{root}digest/{day.isoformat()}.html", stories, reports)
        )
    return [
        ArchiveMonth(
            name=f"{date(year, month, 1):%B %Y}",
            anchor=f"{year:04d}-{month:02d}",
            days=tuple(days),
            stories=sum(day.stories for day in days),
            reports=sum(day.reports for day in days),
        )
        for (year, month), days in months.items()
    ]


def tag_rows(tags: Sequence[str], *, root: str) -> list[TagRow]:
    """Every tag as a tree (parents before children, by path), with its page and feeds."""
    rows = []
    for tag in sorted(set(tags), key=lambda path: path.casefold()):
        page = tag_page_path(tag)
        stem = page.removesuffix(".html")
        rows.append(
            TagRow(
                path=xml_text(tag),
                name=xml_text(tag.rsplit("/", 1)[-1]),
                depth=tag.count("/"),
                href=root + page,
                feeds=tuple((label, f"{root}{stem}.{suffix}") for suffix, label in FEED_FORMATS),
            )
        )
    return rows


def _status_words(outlet: OutletHealth) -> tuple[str, str]:
    if not outlet.active:
        return "off", "Removed from feeds.yaml: no longer polled"
    if outlet.disabled:
        return "off", "Disabled: no longer polled"
    if outlet.status == "new":
        return "new", "Not polled yet"
    if outlet.status == "error":
        times = "once" if outlet.error_count <= 1 else f"{outlet.error_count} times in a row"
        return "error", f"Failing ({times})"
    return "ok", "OK"  # "ok" or "not_modified": the last poll worked either way


def _shown_error(outlet: OutletHealth) -> str | None:
    """The last error, while it is why the outlet fails or was disabled (an old one is history)."""
    if not outlet.last_error or not (outlet.status == "error" or outlet.disabled):
        return None
    return xml_text(outlet.last_error)


def _local(moment: datetime | None, tz: ZoneInfo) -> str | None:
    if moment is None:
        return None
    return f"{as_utc(moment).astimezone(tz):%Y-%m-%d %H:%M}"


def _outlet_entry(entry: Entry, tz: ZoneInfo, root: str) -> OutletEntry:
    local = as_utc(entry.published).astimezone(tz)
    return OutletEntry(
        title=xml_text(entry.title).strip() or "(untitled)",
        link=web_link(entry.link),
        published=local.isoformat(timespec="minutes"),
        time=f"{local:%Y-%m-%d %H:%M}",
        tags=tuple(
            (xml_text(tag), root + tag_page_path(tag))
            for tag in entry.tags
            if not any(other.startswith(tag + "/") for other in entry.tags)
        ),
    )
