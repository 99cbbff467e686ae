"""Write the reader's outputs: daily digest pages and Atom feeds, from store queries.

render reads entries through `EntrySource` (the store satisfies it), turns them into
small view values, fills the Jinja2 templates and writes each file atomically, so a
reader or a web server never sees half a page. It is the only module that imports
jinja2. It knows nothing of SQL, HTTP or feed parsing, and never renders stored HTML
unescaped in a page: the digest shows plain text, the feeds carry the (already
sanitized) HTML escaped as Atom `type="html"` text.

Outputs under `site.output_dir`: `index.html`, `digest/YYYY-MM-DD.html`, `feed.atom`
and `tags/<path in lower case>.atom`. Files whose bytes would not change are left
alone (no rewrite, no fsync), which keeps a full render cheap.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import html
import json
import logging
import os
import re
import tempfile
import unicodedata
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo

import jinja2

from aggregator import PROJECT_URL, __version__
from aggregator.models import ChangeMarker, Entry, SiteConfig

log = logging.getLogger(__name__)

#: Length, in characters, of the plain-text summary shown under each digest headline.
SUMMARY_CHARS = 280
#: How much of an entry's HTML is looked at to derive that summary (content can be huge).
SUMMARY_SOURCE_CHARS = 4000
#: Section an entry lands in when it has no tags.
OTHER_SECTION = "Other"
#: Which top-level tag an entry is listed under when it has several: what happened
#: (a hack, a lawsuit, an ETF) says more than which coin or company it was about, so
#: the topics come first in this order, then any other top-level tag (alphabetically),
#: and `Blockchain` (coins, networks, companies) last.
SECTION_PRIORITY: tuple[str, ...] = (
    "Security",
    "Regulation",
    "ETF",
    "CBDC",
    "DeFi",
    "NFT",
    "Mining",
    "Markets",
)
CATCH_ALL_SECTION = "Blockchain"

DIGEST_TEMPLATE = "digest.html"
ATOM_TEMPLATE = "feed.atom"
FEED_FILE = "feed.atom"
INDEX_FILE = "index.html"
RENDER_STATE_FILE = ".render-state.json"
DIGEST_DIR = "digest"
TAGS_DIR = "tags"

# Characters XML 1.0 forbids; a stray control character from a feed would make the
# whole output feed unreadable.
_XML_INVALID = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# What may not stand in a link as written: spaces and controls are percent-encoded.
_URL_UNSAFE = re.compile("[\x00-\x20\x7f]|" + _XML_INVALID.pattern)
_SCRIPT_OR_STYLE = re.compile(r"<(script|style)\b.*?</\1\s*>", re.I | re.S)
_TAG = re.compile(r"<[^>]*>")
_TRAILING_PARTIAL_TAG = re.compile(r"<[^>]*$")
_WHITESPACE = re.compile(r"\s+")
_UNSAFE_SEGMENT_CHARS = re.compile(r"[^a-z0-9._-]")


class EntrySource(Protocol):
    """The queries render needs; the store implements them (all dates UTC-aware)."""

    def entries_between(self, start: datetime, end: datetime) -> list[Entry]:
        """Entries published in [start, end), newest first."""
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
        """Where the entries stand now, to ask later what changed since."""
        ...

    def days_changed_since(self, marker: ChangeMarker, tz: ZoneInfo) -> set[date]:
        """Days (in `tz`) with entries added or rewritten after `marker`."""
        ...

    def tags_changed_since(self, marker: ChangeMarker) -> set[str]:
        """Tags of the entries added or rewritten after `marker`."""
        ...

    def entry_days(self, tz: ZoneInfo) -> list[date]:
        """The days (in `tz`) that have entries, ascending."""
        ...


@dataclass(frozen=True)
class RenderReport:
    """What one `render_all` did: files (re)written, files left as they were, pages, tag feeds."""

    files_written: int
    files_unchanged: int
    days: int
    tags: int


# ------------------------------------------------------------------ view values


@dataclass(frozen=True)
class DigestEntry:
    """One entry as a digest page shows it: plain text only, times in the site's zone."""

    title: str
    link: str | None
    outlet: str
    outlet_link: str | None
    time: str
    published: str
    tags: tuple[str, ...]
    summary: str


@dataclass(frozen=True)
class DigestSection:
    """A top-level tag and the entries listed under it on one page."""

    name: str
    feed_href: str | None
    entries: tuple[DigestEntry, ...]


@dataclass(frozen=True)
class AtomEntry:
    """One entry as an output feed carries it; dates are RFC 3339 UTC strings."""

    id: str
    title: str
    link: str | None
    author: str
    updated: str
    published: str
    categories: tuple[str, ...]
    summary_html: str
    content_html: str
    source_id: str
    source_title: str
    source_link: str | None


# ------------------------------------------------------------------ public API


def render_all(source: EntrySource, site: SiteConfig, now: datetime, full: bool = False) -> RenderReport:
    """Write the digest pages, `index.html`, `feed.atom` and the feed of each tag.

    Incremental unless `full` (or the site settings or templates changed since the last
    render): only the days and tags whose entries were added or rewritten since then are
    written again, plus the pages next to a new day (their navigation changes) and any page
    missing on disk; the index and the merged feed always. Tag feeds of tags no longer in
    use are left on disk as they were.
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

    writer.publish(
        out / FEED_FILE,
        atom_feed(
            source.recent_entries(site.feed_entries),
            site=site,
            title=site.title,
            self_path=FEED_FILE,
            now=now,
            env=env,
        ),
    )

    for tag in tags:
        path = tag_feed_path(tag)
        feed = atom_feed(
            source.entries_for_tag(tag, site.tag_feed_entries),
            site=site,
            title=f"{site.title}: {tag}",
            self_path=path,
            now=now,
            env=env,
        )
        writer.publish(out / path, feed)

    _RenderState(fingerprint, marker, frozenset(days)).save(out)
    report = RenderReport(
        files_written=writer.written, files_unchanged=writer.unchanged, days=len(day_set), tags=len(tags)
    )
    log.info(
        "rendered %d day pages and %d tag feeds into %s (%d files written, %d unchanged)",
        report.days,
        report.tags,
        out,
        report.files_written,
        report.files_unchanged,
    )
    return report


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
                marker=ChangeMarker(int(data["last_id"]), str(data["last_rewrite"])),
                days=frozenset(date.fromisoformat(day) for day in data["days"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None  # no state, or one we cannot trust: render everything

    def save(self, out: Path) -> None:
        data = {
            "fingerprint": self.fingerprint,
            "last_id": self.marker.last_id,
            "last_rewrite": self.marker.last_rewrite,
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
    """One day's digest page: that day's entries (in the site's zone), grouped by top-level tag.

    `at_index` says where the page will live (`index.html` or `digest/`), which decides
    its relative links. Only this day's entries are queried, so a caller can re-render
    just the days that changed (and their neighbours, whose navigation may change).
    """
    tz = ZoneInfo(site.timezone)
    start = datetime.combine(day, time(), tzinfo=tz).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(), tzinfo=tz).astimezone(UTC)
    entries = source.entries_between(start, end)
    root = "" if at_index else "../"
    return _render_page(
        env or template_environment(site.templates_dir),
        site,
        root=root,
        day=day,
        sections=group_sections(entries, tz, root=root),
        entry_count=len(entries),
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
    """`index.html`: today's digest, else the latest day with entries, else an empty page.

    `days` is `source.entry_days(tz)` (ascending), passed in so it is queried once.
    """
    env = env or template_environment(site.templates_dir)
    tz = ZoneInfo(site.timezone)
    today = now.astimezone(tz).date()
    if not days:
        return _render_page(
            env,
            site,
            root="",
            day=None,
            sections=[],
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


def atom_feed(
    entries: Sequence[Entry],
    *,
    site: SiteConfig,
    title: str,
    self_path: str,
    now: datetime,
    env: jinja2.Environment | None = None,
) -> bytes:
    """An Atom 1.0 (RFC 4287) document of `entries`, in the order given.

    `self_path` is the feed's path under the output directory (`feed.atom`,
    `tags/blockchain.atom`); with `site.site_url` it makes the feed's id and
    rel=self link. No date in the document lies after `now`.
    """
    base = _site_base(site.site_url)
    now_utc = _as_utc(now)
    items = [_atom_entry(entry, base, now_utc) for entry in entries]
    updated = max((item.updated for item in items), default=_rfc3339(now_utc))
    template = (env or template_environment(site.templates_dir)).get_template(ATOM_TEMPLATE)
    text = template.render(
        feed_id=base + self_path,
        title=_xml_text(title),
        updated=updated,
        self_href=base + self_path,
        site_href=base,
        author=_xml_text(site.title),
        generator_uri=PROJECT_URL,
        generator_version=__version__,
        entries=items,
    )
    return text.encode("utf-8")


def tag_feed_path(tag: str) -> str:
    """Where a tag's feed lives under the output directory.

    `Blockchain/Binance` -> `tags/blockchain/binance.atom`.

    Each segment is lower-cased and reduced to `[a-z0-9._-]` (spaces become `-`,
    accents are dropped); it never starts with a dot, so `..` and hidden files cannot
    occur, and a segment left empty becomes `_` plus a short hash of the original.
    Two tags differing only in case or punctuation share a file.
    """
    segments = [segment for segment in tag.split("/") if segment.strip()] or [tag]
    return TAGS_DIR + "/" + "/".join(_safe_segment(segment) for segment in segments) + ".atom"


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


# ------------------------------------------------------------------ digest grouping


def group_sections(entries: Sequence[Entry], tz: ZoneInfo, *, root: str = "") -> list[DigestSection]:
    """Group a day's entries into sections, each entry exactly once, newest first in each.

    An entry goes under its top-level tag of highest `SECTION_PRIORITY`; untagged
    entries under "Other". Sections are ordered by size, then by priority, "Other" last.
    `root` is the page's way back to the output directory (`""` or `"../"`).
    """
    by_section: dict[str, list[Entry]] = {}
    for entry in entries:
        by_section.setdefault(section_for(entry.tags), []).append(entry)

    def order(name: str) -> tuple[int, int, tuple[int, str]]:
        return (name == OTHER_SECTION, -len(by_section[name]), _section_rank(name))

    sections = []
    for name in sorted(by_section, key=order):
        members = sorted(by_section[name], key=lambda entry: _as_utc(entry.published), reverse=True)
        feed_href = None if name == OTHER_SECTION else root + tag_feed_path(name)
        sections.append(
            DigestSection(
                name=_xml_text(name),
                feed_href=feed_href,
                entries=tuple(_digest_entry(entry, tz) for entry in members),
            )
        )
    return sections


def section_for(tags: Sequence[str]) -> str:
    """The one section (top-level tag) an entry with these tags is listed under."""
    tops = {tag.split("/", 1)[0] for tag in tags if tag.split("/", 1)[0]}
    if not tops:
        return OTHER_SECTION
    return min(tops, key=_section_rank)


def plain_summary(summary_html: str, content_html: str, limit: int = SUMMARY_CHARS) -> str:
    """A short plain-text summary of an entry, from its summary HTML, else its content HTML."""
    text = _html_to_text(summary_html) or _html_to_text(content_html)
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:.-–—") + "…"


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


def _render_page(
    env: jinja2.Environment,
    site: SiteConfig,
    *,
    root: str,
    day: date | None,
    sections: list[DigestSection],
    entry_count: int,
    previous_href: str | None,
    next_href: str | None,
    notice: str | None,
) -> bytes:
    text = env.get_template(DIGEST_TEMPLATE).render(
        site_title=_xml_text(site.title),
        root=root,
        feed_href=root + FEED_FILE,
        index_href=root + INDEX_FILE,
        day=day.isoformat() if day else None,
        day_long=f"{day:%A}, {day.day} {day:%B %Y}" if day else None,
        sections=sections,
        entry_count=entry_count,
        previous_href=previous_href,
        next_href=next_href,
        notice=notice,
    )
    return text.encode("utf-8")


def _day_href(day: date | None, at_index: bool) -> str | None:
    if day is None:
        return None
    return digest_path(day) if at_index else f"{day.isoformat()}.html"


def _index_day(days: Sequence[date], today: date) -> date:
    """Today if it has entries, else the latest day not after today, else the earliest day."""
    past = [day for day in days if day <= today]
    return past[-1] if past else days[0]


def _section_rank(name: str) -> tuple[int, str]:
    if name in SECTION_PRIORITY:
        return (SECTION_PRIORITY.index(name), "")
    if name == CATCH_ALL_SECTION:
        return (len(SECTION_PRIORITY) + 1, name)
    return (len(SECTION_PRIORITY), name.casefold())


def _digest_entry(entry: Entry, tz: ZoneInfo) -> DigestEntry:
    local = _as_utc(entry.published).astimezone(tz)
    return DigestEntry(
        title=_xml_text(entry.title).strip() or "(untitled)",
        link=_web_link(entry.link),
        outlet=_xml_text(entry.feed_title or entry.feed),
        outlet_link=_web_link(entry.feed_link),
        time=f"{local:%H:%M}",
        published=local.isoformat(timespec="minutes"),
        tags=tuple(_xml_text(tag) for tag in _leaf_tags(entry.tags)),
        summary=_xml_text(plain_summary(entry.summary, entry.content)),
    )


def _leaf_tags(tags: Sequence[str]) -> tuple[str, ...]:
    """The most specific tags: `Blockchain` is dropped when `Blockchain/Binance` is there."""
    unique = sorted(set(tags))
    return tuple(tag for tag in unique if not any(other.startswith(tag + "/") for other in unique))


def _html_to_text(fragment: str) -> str:
    if not fragment:
        return ""
    text = fragment[:SUMMARY_SOURCE_CHARS]
    text = _SCRIPT_OR_STYLE.sub(" ", text)
    text = _TAG.sub(" ", text)
    text = _TRAILING_PARTIAL_TAG.sub(" ", text)
    text = html.unescape(text)
    return _WHITESPACE.sub(" ", text).strip()


def _web_link(url: str | None) -> str | None:
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


def _percent_encoded(match: re.Match[str]) -> str:
    """One matched character as %XX escapes of its UTF-8 bytes."""
    return "".join(f"%{byte:02X}" for byte in match.group().encode("utf-8", "surrogatepass"))


def _atom_entry(entry: Entry, base: str, now: datetime) -> AtomEntry:
    published = min(_as_utc(entry.published), now)
    updated = min(max(_as_utc(entry.updated), published), now)
    outlet = _xml_text(entry.feed_title or entry.feed)
    link = _web_link(entry.link)
    content = _xml_html(entry.content)
    summary = _xml_html(entry.summary)
    if not content and link is None:
        # RFC 4287 4.1.2: an entry without a link rel=alternate must have content.
        content, summary = summary, ""
    return AtomEntry(
        id=_xml_text(entry.uid),
        title=_xml_text(entry.title),
        link=link,
        author=_xml_text(entry.author or "") or outlet,
        updated=_rfc3339(updated),
        published=_rfc3339(published),
        categories=tuple(_xml_text(tag) for tag in entry.tags),
        summary_html=summary,
        content_html=content,
        # We do not know the outlet's own feed id, so mint a stable one in our site's name.
        source_id=f"{base}#feed-{urllib.parse.quote(entry.feed, safe='', errors='surrogatepass')}",
        source_title=outlet,
        source_link=_web_link(entry.feed_link),
    )


def _site_base(site_url: str) -> str:
    return site_url if site_url.endswith("/") else site_url + "/"


def _as_utc(moment: datetime) -> datetime:
    """Stored dates are UTC; a naive one is taken to be UTC too."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _rfc3339(moment: datetime) -> str:
    # isoformat, not strftime: it writes years before 1000 with four digits.
    return _as_utc(moment).replace(tzinfo=None, microsecond=0).isoformat() + "Z"


def _xml_text(text: str) -> str:
    """Plain text with the characters XML forbids dropped."""
    return _XML_INVALID.sub("", text)


def _xml_html(text: str) -> str:
    """HTML with the characters XML forbids replaced by U+FFFD.

    Never dropped: the U+0001 of "java&#1;script:" keeps that URL dead; without it, it is live.
    """
    return _XML_INVALID.sub("\ufffd", text)


def _safe_segment(segment: str) -> str:
    folded = unicodedata.normalize("NFKD", segment.strip().lower())
    ascii_only = folded.encode("ascii", "ignore").decode("ascii")
    cleaned = _UNSAFE_SEGMENT_CHARS.sub("", _WHITESPACE.sub("-", ascii_only)).lstrip(".")
    if cleaned:
        return cleaned
    return "_" + hashlib.sha1(segment.encode("utf-8", "surrogatepass")).hexdigest()[:10]
