"""One day's digest as Markdown, as plain text, and as a self-contained HTML email.

The same story view as the digest page (`digest.digest_sections`: "Top stories", then
one section per topic; each story with every outlet's report, the first reporter
marked), with links made absolute against `site_url` so that the text still works
pasted into a chat or read in a mail client. Every string is made safe for its format
before a template sees it: control and bidi-override characters are dropped and
whitespace (newlines included) collapsed, so a hostile title stays one line of inert
text; Markdown's special characters are escaped; links are percent-encoded where a
Markdown link would end early. The templates (`digest.md`, `digest.txt`,
`digest_email.html`) come from render's environment, so `templates_dir` overrides them
as it overrides the pages. This module knows nothing of SQL, SMTP or files.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, fields, is_dataclass, replace
from datetime import date, datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from aggregator.digest import DigestSection, DigestStory, capped_sections, day_bounds
from aggregator.models import SiteConfig, Story
from aggregator.render import EntrySource, digest_html, digest_path, template_environment

#: The formats of `aggregator digest --format`.
FORMATS = ("html", "md", "text")
MARKDOWN_TEMPLATE = "digest.md"
TEXT_TEMPLATE = "digest.txt"
EMAIL_TEMPLATE = "digest_email.html"
#: Plain text is wrapped at this width (URLs stay whole on their own lines).
TEXT_WIDTH = 72

# C0 and C1 controls (a terminal obeys ESC and CSI) and DEL become spaces; the characters
# that reorder text on screen (bidi overrides and isolates) are dropped.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# Characters with a meaning anywhere in a line of CommonMark (and GFM, and the usual chat
# dialects: `~` strikethrough, `$` math, `@` mentions, `|` tables); escaped with a backslash.
_MARKDOWN_INLINE = re.compile(r"([\\`*_\[\]<>#|~$&@!^])")
# What makes a line a list item, quote or heading underline where it starts a line.
_MARKDOWN_LINE_START = re.compile(r"^(\d+)([.)])|^([-+=])")
# What RFC 3986 does not allow in a URI as written (browsers encode it too), and in a Markdown
# link destination also the parentheses that would end it early.
_URI_UNSAFE = re.compile(r'[\s<>"{}|\\^`]')
_MARKDOWN_URL_UNSAFE = re.compile(r'[\s<>"{}|\\^`()]')


class DaySource(Protocol):
    """The one query a day's digest needs; the store implements it."""

    def stories_between(self, start: datetime, end: datetime) -> list[Story]:
        """Stories first seen in [start, end) (an entry in no story yet counts as a story of one)."""
        ...


@dataclass(frozen=True)
class DayDigest:
    """Everything a digest template shows for one day; links are absolute."""

    site_title: str
    site_url: str
    day: str
    day_long: str
    page_url: str
    story_count: int
    entry_count: int
    sections: tuple[DigestSection, ...]
    more: tuple[DigestStory, ...]


def day_digest(source: DaySource, site: SiteConfig, day: date) -> DayDigest:
    """The stories first seen on `day` (in the site's zone): top stories, then topic sections.

    The first `site.digest_max_stories` stories are given in full, the rest in `more`,
    as on the digest page.
    """
    tz = ZoneInfo(site.timezone)
    start, end = day_bounds(day, tz)
    stories = source.stories_between(start, end)
    base = site_base(site.site_url)
    sections, more = capped_sections(stories, tz, site.digest_max_stories, root=base)
    return DayDigest(
        site_title=site.title,
        site_url=base,
        day=day.isoformat(),
        day_long=f"{day:%A}, {day.day} {day:%B %Y}",
        page_url=base + digest_path(day),
        story_count=len(stories),
        entry_count=sum(len(story.entries) for story in stories),
        sections=tuple(sections),
        more=tuple(more),
    )


def day_document(source: EntrySource, site: SiteConfig, day: date, output_format: str) -> str:
    """The day's digest in one of `FORMATS`: html (the day's page as render writes it), md or text."""
    if output_format == "html":
        days = source.entry_days(ZoneInfo(site.timezone))
        earlier = [other for other in days if other < day]
        later = [other for other in days if other > day]
        page = digest_html(
            source,
            site,
            day,
            previous_day=earlier[-1] if earlier else None,
            next_day=later[0] if later else None,
            at_index=False,
        )
        return page.decode("utf-8")
    digest = day_digest(source, site, day)
    if output_format == "md":
        return markdown(digest, site.templates_dir)
    if output_format == "text":
        return plain_text(digest, site.templates_dir)
    raise ValueError(f"unknown digest format {output_format!r} (use one of {', '.join(FORMATS)})")


def markdown(digest: DayDigest, templates_dir: str | None = None) -> str:
    """The digest as CommonMark: headings, `[outlet](url)` links, no HTML, every title escaped."""
    safe = _made_safe(digest, text=markdown_text, link=markdown_url)
    return _fill(MARKDOWN_TEMPLATE, templates_dir, d=safe)


def plain_text(digest: DayDigest, templates_dir: str | None = None, width: int = TEXT_WIDTH) -> str:
    """The digest as plain text wrapped at `width`, each link in full on a line of its own."""
    safe = _made_safe(digest, text=one_line, link=plain_url)
    return _fill(TEXT_TEMPLATE, templates_dir, d=safe, width=width)


def email_html(digest: DayDigest, subject: str, templates_dir: str | None = None) -> str:
    """The digest as one self-contained HTML document for mail clients: inline styles, absolute links."""
    safe = _made_safe(digest, text=one_line, link=plain_url)
    return _fill(EMAIL_TEMPLATE, templates_dir, d=safe, subject=one_line(subject))


def email_subject(template: str, digest: DayDigest) -> str:
    """The subject line from the configured template ({title}, {date}, {stories}), on one line."""
    return one_line(template.format(title=one_line(digest.site_title), date=digest.day, stories=digest.story_count))


def one_line(text: str) -> str:
    """Text with controls and bidi overrides removed and all whitespace collapsed to single spaces."""
    return " ".join(_CONTROL.sub(" ", _BIDI.sub("", text)).split())


def markdown_text(text: str) -> str:
    """One line of text that Markdown shows as written: no emphasis, links, HTML, headings or lists."""
    escaped = _MARKDOWN_INLINE.sub(r"\\\1", one_line(text))
    return _MARKDOWN_LINE_START.sub(_escaped_line_start, escaped, count=1)


def markdown_url(url: str) -> str:
    """A link target that cannot end a Markdown link early or smuggle in markup."""
    return _MARKDOWN_URL_UNSAFE.sub(_percent_encoded, one_line(url))


def plain_url(url: str) -> str:
    """A link as a mail client or terminal finds it in text: whole, with no `<`, `>` or quotes in it."""
    return _URI_UNSAFE.sub(_percent_encoded, one_line(url))


def site_base(site_url: str) -> str:
    return site_url if site_url.endswith("/") else site_url + "/"


def _percent_encoded(match: re.Match[str]) -> str:
    return "".join(f"%{byte:02X}" for byte in match.group().encode("utf-8"))


def _escaped_line_start(match: re.Match[str]) -> str:
    if match.group(3):
        return "\\" + match.group(3)
    return match.group(1) + "\\" + match.group(2)


def _fill(template: str, templates_dir: str | None, **values: Any) -> str:
    text = template_environment(templates_dir).get_template(template).render(**values)
    return text.rstrip("\n") + "\n"


def _made_safe(value: Any, *, text: Callable[[str], str], link: Callable[[str], str]) -> Any:
    """A copy of a view value (dataclasses, tuples, strings) with every string made safe.

    Fields named like links (`link`, `href`, `url`, `*_link`, ...) go through `link`,
    every other string through `text`, so a field added to the views later is escaped
    as text unless it is a link: safe by default.
    """
    if is_dataclass(value) and not isinstance(value, type):
        changes = {
            field.name: _safe_field(field.name, getattr(value, field.name), text, link) for field in fields(value)
        }
        return replace(value, **changes)
    return value


def _safe_field(name: str, value: Any, text: Callable[[str], str], link: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return link(value) if _is_link(name) else text(value)
    if isinstance(value, tuple):
        return tuple(_safe_field(name, item, text, link) for item in value)
    return _made_safe(value, text=text, link=link)


def _is_link(name: str) -> bool:
    return name in ("link", "href", "url") or name.endswith(("_link", "_href", "_url"))
